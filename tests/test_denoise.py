"""The pinyin-denoising objective (pinzi.denoise): noising modes and rates, candidate sets,
deterministic batching, evaluate() and save().

Run with ``.venv/bin/pytest tests/test_denoise.py``. The corpus is built here from a few
annotated sentences; every random draw comes from a fixed key, so every check is deterministic.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from pinzi.corpus import TokenizedCorpus
from pinzi.denoise import NoiseConfig, PinyinDenoisingTask, TokenTables
from pinzi.lexicon import Lexicon
from pinzi.pinyin import FUZZY_PAIRS, SYLLABLES, fuzzy_variants, initial_of
from pinzi.readings import annotate
from pinzi.tokenizer import PAD_ID, PinziTokenizer

# Punctuation, Latin, a line without hanzi, 𠀀 (left out of the vocabulary: UNK) and 龘 (read
# "da" by pypinyin but absent from the lexicon, so only the gold label puts it in its candidates).
SENTENCES = ["我爱北京天安门。", "今天天气很好，A！", "他在银行工作", "中国人民银行发布了新的政策",
             "你好世界", "学习使我快乐", "我想去上海旅游", "这本书很有意思", "请问洗手间在哪里",
             "孩子们在操场上跑步", "OK!", "𠀀龘龘", "晚上一起吃饭吧", "春天来了花开了", "行"]
LONG = ("".join(s for s in SENTENCES if re.fullmatch("[\u4e00-\u9fff]+", s)) * 2)[:100]


def corpus_of(texts: list[str], tokenizer: PinziTokenizer) -> TokenizedCorpus:
    chars, syllables = [], []
    for text in texts:
        chars += tokenizer.encode_text(text)
        syllables += [tokenizer.syllable_id(s) if s else 0 for s in annotate(text)]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in texts])]).astype(np.int64)
    return TokenizedCorpus(np.array(chars, np.int32), np.array(syllables, np.int32), offsets)


@pytest.fixture(scope="module")
def tokenizer() -> PinziTokenizer:
    return PinziTokenizer(sorted(set("".join(SENTENCES + [LONG])) - {"𠀀"}))


@pytest.fixture(scope="module")
def tables(tokenizer) -> TokenTables:
    return TokenTables(tokenizer, Lexicon.default())


def make_task(tokenizer, tables, texts=SENTENCES, valid=SENTENCES, batch_tokens=64, seed=0,
              **noise) -> PinyinDenoisingTask:
    return PinyinDenoisingTask(corpus_of(texts, tokenizer), corpus_of(valid, tokenizer),
                               tokenizer, tables, NoiseConfig(**noise),
                               batch_tokens=batch_tokens, seed=seed)


def noised(task, lines, key=(7,)):
    """The batch, its gathered chars/syllables/lengths, the selection and the hanzi mask."""
    batch = task.make_batch(lines, key)
    chars, syllables, lengths = task.train_corpus.gather(lines, task.noise.max_length)
    selected = batch["labels"].numpy() != -100
    hanzi = (syllables > 0) & (chars > 1)  # neither PAD nor UNK
    return batch, chars, syllables, lengths, selected, hanzi


def many(n: int) -> np.ndarray:
    return np.arange(n) % len(SENTENCES)


def test_all_pinyin_selects_every_hanzi_and_keeps_the_rest(tokenizer, tables):
    task = make_task(tokenizer, tables, all_pinyin=1.0, suffix=0.0)
    batch, chars, _, lengths, selected, hanzi = noised(task, many(300))
    assert hanzi.any(axis=1).sum() < len(lengths)  # the "OK!" lines are there: nothing to select
    np.testing.assert_array_equal(selected, hanzi)
    labels, ids = batch["labels"].numpy(), batch["input_ids"].numpy()
    np.testing.assert_array_equal(labels[selected], chars[selected] - tokenizer.char_offset)
    np.testing.assert_array_equal(ids[~selected], chars[~selected])  # context stays hanzi
    padding = np.arange(chars.shape[1])[None, :] >= lengths[:, None]
    assert padding.any()
    np.testing.assert_array_equal(batch["attention_mask"].numpy(), (~padding).astype(int))
    assert (ids[padding] == PAD_ID).all()


def test_suffix_mode_selects_a_nonempty_suffix_of_the_hanzi(tokenizer, tables):
    task = make_task(tokenizer, tables, all_pinyin=0.0, suffix=1.0)
    _, _, _, _, selected, hanzi = noised(task, many(600))
    partial = 0
    for sel, hz in zip(selected, hanzi, strict=True):
        if not hz.any():
            continue
        picked = sel[hz]  # over the line's hanzi, in order
        k = int(np.argmax(picked))
        assert picked.any() and picked[k:].all() and not picked[:k].any()
        partial += k > 0
    assert partial > 100  # not always the whole line


@pytest.mark.parametrize("fraction", [0.15, 0.4])
def test_span_mode_selects_one_run_of_about_span_fraction(tokenizer, tables, fraction):
    task = make_task(tokenizer, tables, texts=[LONG], all_pinyin=0.0, suffix=0.0,
                     span_fraction=fraction)
    _, _, _, lengths, selected, _ = noised(task, np.zeros(2000, np.int64))
    for sel in selected:
        run = np.flatnonzero(sel)
        assert len(run) >= 1 and run[-1] - run[0] + 1 == len(run)  # contiguous
    share = selected.sum(axis=1) / lengths
    # span = f * L * U(0.5, 1.5) from a uniform start, cut at the line's end: E = f - f^2 * 13/24
    expected = fraction - fraction**2 * 13 / 24
    assert share.mean() == pytest.approx(expected, abs=0.02)
    assert share.max() < 1.5 * fraction + 0.02


def test_mode_shares_follow_the_config(tokenizer, tables):
    # 100-hanzi lines and short spans (2..7 hanzi) tell the three modes apart by selection size
    task = make_task(tokenizer, tables, texts=[LONG], all_pinyin=0.5, suffix=0.3,
                     span_fraction=0.05)
    _, _, _, _, selected, _ = noised(task, np.zeros(4000, np.int64))
    size = selected.sum(axis=1)
    # suffix sizes are uniform over 1..100: 1% look like all_pinyin, 7% like a span
    assert (size == 100).mean() == pytest.approx(0.5 + 0.3 * 0.01, abs=0.03)
    assert (size <= 7).mean() == pytest.approx(0.2 + 0.3 * 0.07, abs=0.03)
    assert ((size > 7) & (size < 100)).mean() == pytest.approx(0.3 * 0.92, abs=0.03)


def typed_kinds(task, tokenizer, tables, n=3000):
    batch, _, syllables, _, selected, _ = noised(task, many(n))
    typed, gold = batch["input_ids"].numpy()[selected], syllables[selected]
    as_initial = typed >= tokenizer.initial_offset
    as_fuzzy = (typed < tokenizer.initial_offset) & (typed != gold)
    assert (typed >= tokenizer.syllable_offset).all()  # every selected position is pinyin
    return typed, gold, as_initial, as_fuzzy


def test_initial_and_fuzzy_rates(tokenizer, tables):
    task = make_task(tokenizer, tables, all_pinyin=1.0, suffix=0.0, initial_rate=0.3,
                     fuzzy_rate=0.2)
    typed, gold, as_initial, as_fuzzy = typed_kinds(task, tokenizer, tables)
    has_initial, has_fuzzy = tables.initial[gold] > 0, tables.n_fuzzy[gold] > 0
    assert (~has_initial).any() and (~has_fuzzy).any()  # 爱, 安... can't be abbreviated
    assert not as_initial[~has_initial].any() and not as_fuzzy[~has_fuzzy].any()
    assert as_initial[has_initial].mean() == pytest.approx(0.3, abs=0.03)
    assert as_fuzzy[has_fuzzy].mean() == pytest.approx(0.2, abs=0.03)

    def name(token):
        return SYLLABLES[token - tokenizer.syllable_offset]

    for t, g in zip(typed[as_initial], gold[as_initial], strict=True):
        assert t == tokenizer.initial_id(initial_of(name(g)))
    for t, g in zip(typed[as_fuzzy], gold[as_fuzzy], strict=True):
        variants = fuzzy_variants(name(g), frozenset(FUZZY_PAIRS))[1:]
        assert name(t) in variants, (name(g), name(t))


def test_zero_rates_type_the_gold_syllable(tokenizer, tables):
    task = make_task(tokenizer, tables, all_pinyin=1.0, suffix=0.0, initial_rate=0.0,
                     fuzzy_rate=0.0)
    typed, gold, as_initial, as_fuzzy = typed_kinds(task, tokenizer, tables, n=600)
    assert not as_initial.any() and not as_fuzzy.any()
    np.testing.assert_array_equal(typed, gold)


def test_gold_character_is_always_a_candidate(tokenizer, tables):
    task = make_task(tokenizer, tables, initial_rate=0.3, fuzzy_rate=0.3)
    rare = tokenizer.char_id("龘") - tokenizer.char_offset
    assert not tables.candidates[:, rare].any()  # 龘 is a candidate of no token
    for key in range(5):
        batch, _, syllables, _, selected, _ = noised(task, many(200), key=(key,))
        mask, labels = batch["candidate_mask"], batch["labels"][batch["labels"] != -100]
        typed = batch["input_ids"][torch.from_numpy(selected)]
        gold = torch.from_numpy(syllables[selected].astype(np.int64))
        assert mask.shape == (len(labels), tokenizer.n_chars) and mask.dtype == torch.bool
        assert mask[torch.arange(len(labels)), labels].all()
        assert (labels == rare).any()
        assert not (tables.candidates[typed] & ~mask).any()  # everything the token stands for
        assert not (tables.candidates[gold] & ~mask).any()  # and what its true syllable does
        assert (typed != gold).any()  # initials and fuzzy variants were among them


def test_make_batch_is_a_function_of_the_key(tokenizer, tables):
    task = make_task(tokenizer, tables)
    lines = many(100)
    a, b, c = (task.make_batch(lines, key) for key in [(1, 2), (1, 2), (1, 3)])
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["labels"], c["labels"])


def test_batches_are_a_pure_function_of_seed_and_epoch(tokenizer, tables):
    texts = SENTENCES * 7 + [LONG]  # LONG (100) alone is longer than batch_tokens
    task, again = (make_task(tokenizer, tables, texts=texts, seed=3) for _ in range(2))
    other = make_task(tokenizer, tables, texts=texts, seed=4)
    lengths = np.minimum(task.train_corpus.lengths, task.noise.max_length)
    for epoch in range(3):
        batches = task.batches(epoch)
        assert [b.tolist() for b in batches] == [b.tolist() for b in again.batches(epoch)]
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(texts)))
        for lines in batches:
            assert len(lines) == 1 or len(lines) * lengths[lines].max() <= task.batch_tokens
        longest = [lengths[lines].max() for lines in batches]
        assert longest != sorted(longest)  # the batches themselves are shuffled
    assert any(len(b) == 1 and lengths[b[0]] > task.batch_tokens for b in batches)
    groups = [{tuple(sorted(b.tolist())) for b in t.batches(e)}
              for t, e in [(task, 0), (task, 1), (other, 0)]]
    assert groups[0] != groups[1] and groups[0] != groups[2]  # lines meet different partners


class Oracle(nn.Module):
    """Scores the gold label (or, if ``wrong``, the next char) highest; records what it sees."""

    def __init__(self, wrong: bool = False):
        super().__init__()
        self.weight, self.wrong, self.seen = nn.Parameter(torch.zeros(1)), wrong, []

    def forward(self, input_ids, attention_mask, labels, candidate_mask):
        self.seen.append((input_ids, labels))
        gold = labels[labels != -100]
        logits = torch.zeros(candidate_mask.shape)
        logits[torch.arange(len(gold)), (gold + self.wrong) % logits.shape[1]] = 100.0
        return SimpleNamespace(logits=logits, loss=torch.tensor(0.5))


@pytest.mark.parametrize("wrong", [False, True])
def test_evaluate_scores_full_syllables_of_the_first_eval_lines(tokenizer, tables, wrong):
    valid = SENTENCES * 10  # 150 lines: three batches of 64, only eval_lines of them read
    # batches of 64 lines: as many as batch_tokens holds lines of max_length (128) tokens
    task = make_task(tokenizer, tables, valid=valid, batch_tokens=64 * 128, eval_lines=100,
                     initial_rate=0.5)
    model = Oracle(wrong)
    assert task.evaluate(model) == {"loss": 0.5, "char_acc": 0.0 if wrong else 1.0}
    assert len(model.seen) == 2
    chars, syllables, _ = task.valid_corpus.gather(np.arange(100), 128)
    hanzi = (syllables > 0) & (chars > 1)
    assert sum(int((labels != -100).sum()) for _, labels in model.seen) == hanzi.sum()
    for (ids, labels), lines in zip(model.seen, [np.arange(64), np.arange(64, 100)], strict=True):
        chars, syllables, _ = task.valid_corpus.gather(lines, 128)  # hanzi: the full syllable
        hanzi = (syllables > 0) & (chars > 1)
        np.testing.assert_array_equal(ids[labels != -100].numpy(), syllables[hanzi])


def test_evaluate_runs_a_real_model(tokenizer, tables):
    from pinzi.model import ModelSettings, PinziForPinyin

    torch.manual_seed(0)
    model = PinziForPinyin(ModelSettings(preset="tiny").config(tokenizer)).eval()
    with torch.no_grad():  # as pinzi.train calls it
        result = make_task(tokenizer, tables).evaluate(model)
    assert set(result) == {"loss", "char_acc"}
    assert np.isfinite(result["loss"]) and result["loss"] > 0
    assert 0.0 <= result["char_acc"] <= 1.0


@pytest.mark.parametrize("with_ngram", [True, False])
def test_save_writes_a_converter_folder(tokenizer, tables, tmp_path, with_ngram):
    from pinzi.model import ModelSettings, PinziForPinyin
    from pinzi.ngram import CharNgram

    task = make_task(tokenizer, tables)
    if with_ngram:
        corpus = task.train_corpus
        task.ngram = CharNgram.build(corpus.chars, corpus.offsets, tokenizer.char_offset,
                                     tokenizer.n_chars, min_count=1)
    task.save(PinziForPinyin(ModelSettings(preset="tiny").config(tokenizer)), tmp_path)
    for name in ("config.json", "model.safetensors", "vocab.json", "decoding_config.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "ngram.npz").is_file() == with_ngram
    assert PinziTokenizer.load(tmp_path).chars == tokenizer.chars
