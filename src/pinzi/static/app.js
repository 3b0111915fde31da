// The pinzi input-method page: a pinyin buffer, a candidate bar fed by POST v1/candidates,
// and the committed text. Served by `pinzi serve`; see src/pinzi/serve.py for the API.
"use strict";

const DEBOUNCE_MS = 80;    // one request per pause in typing, not one per key
const CONTEXT_CHARS = 32;  // the committed tail sent as context (the model reads no more)
const SHOWN = 9;           // candidates in the bar: the digits 1-9 pick them

const $ = (id) => document.getElementById(id);
const input = $("pinyin");
const bar = $("candidates");
const committed = $("committed");
const status = $("status");
const punct = $("punct");
const scheme = $("scheme");  // how the keys are typed: full pinyin or a shuangpin scheme
const traditional = $("traditional");  // the page's choice, sent with every request
const adapter = $("adapter");  // shown when the server has LoRA adapters (pinzi serve --adapter)

let shown = { pinyin: "", candidates: [] };  // what the bar shows, and for which buffer
let timer = null;
let latest = 0;  // ticket of the newest request: older answers are dropped
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

function render(pinyin, candidates) {
  shown = { pinyin, candidates };
  bar.replaceChildren(...candidates.map((candidate, i) => {
    const button = document.createElement("button");
    button.type = "button";
    const number = document.createElement("span");
    number.className = "number";
    number.textContent = String(i + 1);
    button.append(number, candidate.hanzi);
    button.title = `score ${candidate.score}`;
    button.addEventListener("mousedown", (event) => event.preventDefault());  // keep focus
    button.addEventListener("click", () => commit(candidate.hanzi));
    const item = document.createElement("li");
    item.append(button);
    return item;
  }));
}

async function refresh() {
  clearTimeout(timer);
  const pinyin = input.value;
  const ticket = ++latest;
  if (!pinyin.trim()) {
    render(pinyin, []);
    return;
  }
  const started = performance.now();
  try {
    const answer = await post("v1/candidates", {
      pinyin, k: SHOWN, punct: punct.checked, traditional: traditional.checked,
      adapter: adapter.value || null, scheme: scheme.value || null,
      context: Array.from(committed.value).slice(-CONTEXT_CHARS).join(""),
    });
    if (ticket !== latest) return;  // a newer keystroke owns the bar
    render(pinyin, answer.candidates);
    status.textContent = `${Math.round(performance.now() - started)} ms`;
    status.classList.remove("error");
  } catch (error) {
    if (ticket !== latest) return;
    render(pinyin, []);
    status.textContent = error.message;
    status.classList.add("error");
  }
}

// The candidates for the buffer as it is now: a pick made before the debounce fired waits.
async function current() {
  if (shown.pinyin !== input.value) await refresh();
  return shown.pinyin === input.value ? shown.candidates : [];
}

function commit(text) {
  committed.value += text;
  committed.scrollTop = committed.scrollHeight;
  input.value = "";
  latest++;  // answers still in flight are for a buffer that is gone
  render("", []);
  input.focus();
}

async function pick(index) {
  const candidate = (await current())[index];
  if (candidate) commit(candidate.hanzi);
}

input.addEventListener("input", () => {
  clearTimeout(timer);
  timer = setTimeout(refresh, DEBOUNCE_MS);
});

input.addEventListener("keydown", (event) => {
  if (event.isComposing || event.ctrlKey || event.metaKey || event.altKey) return;
  const buffer = input.value;
  if (buffer && /^[1-9]$/.test(event.key)) {
    event.preventDefault();
    pick(Number(event.key) - 1);
  } else if (event.key === " ") {
    event.preventDefault();
    if (buffer) pick(0); else commit(" ");
  } else if (event.key === "Enter") {
    event.preventDefault();
    commit(buffer || "\n");
  } else if (event.key === "Escape") {
    input.value = "";
    latest++;
    render("", []);
  } else if (event.key === "Backspace" && !buffer) {
    event.preventDefault();
    committed.value = Array.from(committed.value).slice(0, -1).join("");  // whole characters
  }
});

punct.addEventListener("change", () => { refresh(); input.focus(); });
scheme.addEventListener("change", () => { refresh(); input.focus(); });
traditional.addEventListener("change", () => { refresh(); input.focus(); });
adapter.addEventListener("change", () => { refresh(); input.focus(); });

fetch("healthz").then((response) => response.json()).then((health) => {
  if (!health.adapters || !health.adapters.length) return;
  adapter.append(...health.adapters.map((name) => new Option(name, name)));
  $("adapter-choice").hidden = false;
}).catch(() => {});  // no list, no choice: the base model answers

$("copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(committed.value);
  } catch {
    committed.select();  // no clipboard API (plain http on another host): the old way
    document.execCommand("copy");
  }
  status.textContent = "copied";
  status.classList.remove("error");
  input.focus();
});

$("clear").addEventListener("click", () => {
  committed.value = "";
  input.focus();
});
