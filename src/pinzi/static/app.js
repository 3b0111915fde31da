// The pinzi input-method page: a pinyin buffer, a candidate bar fed by POST v1/candidates
// (a page at a time), next-word predictions from POST v1/predict after a commit, and the
// committed text. Served by `pinzi serve`; see src/pinzi/serve.py for the API.
"use strict";

const DEBOUNCE_MS = 80;    // one request per pause in typing, not one per key
const CONTEXT_CHARS = 32;  // the committed tail sent as context (the model reads no more)
const PAGE_SIZE = 9;       // candidates per page of the bar: the digits 1-9 pick them
const LONGEST_LEARNED = 32;  // characters of a pick /v1/learn takes
// What pinyin separates syllables with (pinzi.pinyin's _SEPARATED); none is worth learning
// at either end of a pick, nor keeping at the start of the rest of the buffer.
const SEPARATORS_AT_START = /^[\s'’]+/;
const SEPARATORS_AT_ENDS = /^[\s'’]+|[\s'’]+$/g;

const $ = (id) => document.getElementById(id);
const input = $("pinyin");
const bar = $("candidates");
const barLabel = $("bar-label");  // "联想" while the bar holds predictions
const pager = $("pager");
const committed = $("committed");
const status = $("status");
const punct = $("punct");
const scheme = $("scheme");  // how the keys are typed: full pinyin or a shuangpin scheme
const traditional = $("traditional");  // the page's choice, sent with every request
const adapter = $("adapter");  // shown when the server has LoRA adapters (pinzi serve --adapter)

// What the bar shows: candidates for `pinyin` from `offset` on, predictions, or nothing.
let view = { mode: "empty", pinyin: "", offset: 0, more: false, items: [] };
let offset = 0;  // the page of candidates wanted for the buffer: reset by typing
// The picks that have composed the buffer so far (partial commits): learned as one word when
// the last pick empties the buffer, so that a name typed syllable by syllable is learned whole.
let composition = { pinyin: "", hanzi: "", picks: 0 };
let learning = false;  // the server keeps what is picked (pinzi serve --user-dir): /healthz says
let timer = null;
let latest = 0;  // ticket of the newest request for the bar: older answers are dropped
let apiKey = sessionStorage.getItem("pinzi-api-key") || "";

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 401) {
    const key = window.prompt("This server wants an API key:");
    if (key) {
      apiKey = key;
      sessionStorage.setItem("pinzi-api-key", key);
      return post(path, body);
    }
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail || `${response.status} ${response.statusText}`);
  return answer;
}

const context = () => Array.from(committed.value).slice(-CONTEXT_CHARS).join("");

function showStatus(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function barItem(number, text, className, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  const label = document.createElement("span");
  label.className = "number";
  label.textContent = number;
  button.append(label, text);
  button.addEventListener("mousedown", (event) => event.preventDefault());  // keep focus
  button.addEventListener("click", onClick);
  const item = document.createElement("li");
  item.className = className;
  item.append(button);
  return item;
}

function render(next) {
  view = next;
  const items = next.items.map((item, i) => {
    const entry = barItem(String(i + 1), item.hanzi, next.mode === "predictions" ? "prediction"
      : "candidate", () => pick(i));
    entry.firstChild.title = `score ${item.score}`;
    return entry;
  });
  if (next.mode === "candidates") {  // the letters as typed, for English: Enter commits them
    items.push(barItem("⏎", next.pinyin, "raw", () => commitLetters()));
  }
  bar.replaceChildren(...items);
  barLabel.hidden = next.mode !== "predictions";
  pager.hidden = next.mode !== "candidates" || (next.offset === 0 && !next.more);
  $("page-number").textContent = String(next.offset / PAGE_SIZE + 1);
  $("previous-page").disabled = next.offset === 0;
  $("next-page").disabled = !next.more;
}

function clearBar() {
  latest++;  // answers still in flight are for a bar that is gone
  render({ mode: "empty", pinyin: "", offset: 0, more: false, items: [] });
}

async function refresh() {
  clearTimeout(timer);
  const pinyin = input.value;
  const ticket = ++latest;
  if (!pinyin.trim()) {
    render({ mode: "empty", pinyin, offset: 0, more: false, items: [] });
    return;
  }
  const wanted = offset;
  const started = performance.now();
  try {
    const answer = await post("v1/candidates", {
      pinyin, k: PAGE_SIZE, offset: wanted, punct: punct.checked,
      traditional: traditional.checked, adapter: adapter.value || null,
      scheme: scheme.value || null, context: context(),
    });
    if (ticket !== latest) return;  // a newer keystroke owns the bar
    render({ mode: "candidates", pinyin, offset: wanted, more: answer.more,
             items: answer.candidates });
    showStatus(`${Math.round(performance.now() - started)} ms`);
  } catch (error) {
    if (ticket !== latest) return;
    render({ mode: "candidates", pinyin, offset: wanted, more: false, items: [] });
    showStatus(error.message, true);
  }
}

// The candidates for the buffer and page as they are now: a pick made before the debounce
// fired waits for them.
async function current() {
  const fresh = () => view.mode === "candidates" && view.pinyin === input.value
    && view.offset === offset;
  if (!fresh()) await refresh();
  return fresh() ? view.items : [];
}

async function turnPage(direction) {
  await current();
  if (direction > 0 ? !view.more : offset === 0) return;
  offset = Math.max(0, offset + direction * PAGE_SIZE);
  await refresh();
}

async function predict() {
  const ticket = ++latest;
  try {
    const answer = await post("v1/predict", {
      context: context(), k: PAGE_SIZE, traditional: traditional.checked,
      adapter: adapter.value || null,
    });
    if (ticket !== latest || input.value) return;  // typing has taken the bar over
    render({ mode: "predictions", pinyin: "", offset: 0, more: false,
             items: answer.predictions });
  } catch (error) {
    if (ticket === latest) showStatus(`predict: ${error.message}`, true);
  }
}

// Tells the server what was picked, when it learns; typing never waits for it nor stops on
// its failure.
function learn(pinyin, hanzi) {
  // Only hanzi are learned: a pick with punctuation or letters in it is no word, and one
  // longer than the server learns (pinzi.converter.MAX_LEARNED_CHARS) is pasted text.
  if (!learning || Array.from(hanzi).length > LONGEST_LEARNED
      || !/^\p{Script=Han}+$/u.test(hanzi)) return;
  post("v1/learn", { pinyin: pinyin.replace(SEPARATORS_AT_ENDS, ""), hanzi,
                     scheme: scheme.value || null })
    .catch((error) => showStatus(`learn: ${error.message}`, true));
}

function append(text) {
  committed.value += text;
  committed.scrollTop = committed.scrollHeight;
  input.focus();
}

function setBuffer(text) {
  input.value = text;
  offset = 0;
  if (!text) composition = { pinyin: "", hanzi: "", picks: 0 };
}

// Commits a candidate's hanzi and keeps the pinyin it did not consume in the buffer,
// converted anew after the committed text; once the buffer is empty, predicts the next word.
function commitCandidate(candidate) {
  const piece = view.pinyin.slice(0, candidate.consumed);
  let rest = view.pinyin.slice(candidate.consumed);
  const separators = rest.match(SEPARATORS_AT_START)?.[0] || "";
  rest = rest.slice(separators.length);
  composition.pinyin += piece + separators;
  composition.hanzi += candidate.hanzi;
  composition.picks += 1;
  learn(piece, candidate.hanzi);
  if (!rest && composition.picks > 1) learn(composition.pinyin, composition.hanzi);
  append(candidate.hanzi);
  setBuffer(rest);
  if (rest) {
    refresh();  // a pick meanwhile waits for it: the bar is for the old buffer
  } else {
    clearBar();
    predict();
  }
}

function commitLetters() {
  const letters = input.value;
  append(letters);
  setBuffer("");
  clearBar();
  predict();
}

function commitPrediction(prediction) {
  append(prediction.hanzi);
  clearBar();  // a second digit before the next predictions arrive picks nothing stale
  predict();
}

async function pick(index) {
  if (!input.value) {
    const prediction = view.mode === "predictions" ? view.items[index] : undefined;
    if (prediction) commitPrediction(prediction);
    return;
  }
  const candidate = (await current())[index];
  if (candidate) commitCandidate(candidate);
}

input.addEventListener("input", () => {
  offset = 0;
  if (!input.value) setBuffer("");  // emptied by hand: the picks so far make no word
  if (view.mode === "predictions") clearBar();  // typing replaces the predictions
  clearTimeout(timer);
  timer = setTimeout(refresh, DEBOUNCE_MS);
});

const PAGE_KEYS = { "-": -1, "=": 1, PageUp: -1, PageDown: 1 };

input.addEventListener("keydown", (event) => {
  if (event.isComposing || event.ctrlKey || event.metaKey || event.altKey) return;
  const buffer = input.value;
  const predicting = !buffer && view.mode === "predictions";
  if ((buffer || predicting) && /^[1-9]$/.test(event.key)) {
    event.preventDefault();
    pick(Number(event.key) - 1);
  } else if (buffer && Object.hasOwn(PAGE_KEYS, event.key)) {
    event.preventDefault();
    turnPage(PAGE_KEYS[event.key]);
  } else if (event.key === " ") {
    event.preventDefault();
    if (buffer) {
      pick(0);
    } else {
      clearBar();
      append(" ");
    }
  } else if (event.key === "Enter") {
    event.preventDefault();
    if (buffer) {
      commitLetters();
    } else {
      clearBar();
      append("\n");
    }
  } else if (event.key === "Escape") {
    setBuffer("");
    clearBar();
  } else if (event.key === "Backspace" && !buffer) {
    event.preventDefault();
    clearBar();
    committed.value = Array.from(committed.value).slice(0, -1).join("");  // whole characters
  }
});

$("previous-page").addEventListener("click", () => { turnPage(-1); input.focus(); });
$("next-page").addEventListener("click", () => { turnPage(1); input.focus(); });
for (const pageButton of pager.querySelectorAll("button")) {
  pageButton.addEventListener("mousedown", (event) => event.preventDefault());  // keep focus
}

function optionChanged() {
  offset = 0;
  if (input.value) refresh(); else clearBar();
  input.focus();
}

for (const option of [punct, scheme, traditional, adapter]) {
  option.addEventListener("change", optionChanged);
}

fetch("healthz").then((response) => response.json()).then((health) => {
  learning = health.learning === true;
  if (!health.adapters || !health.adapters.length) return;
  adapter.append(...health.adapters.map((name) => new Option(name, name)));
  $("adapter-choice").hidden = false;
}).catch(() => {});  // no health: the base model answers, nothing is learned

$("copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(committed.value);
  } catch {
    committed.select();  // no clipboard API (plain http on another host): the old way
    document.execCommand("copy");
  }
  showStatus("copied");
  input.focus();
});

$("clear").addEventListener("click", () => {
  committed.value = "";
  clearBar();
  input.focus();
});
