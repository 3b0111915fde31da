"""The character n-gram model: normalisation, what it learns, persistence, and its effect on
decoding."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pinzi.decode import Position, beam_search
from pinzi.errors import ModelLoadError
from pinzi.ngram import NGRAM_FILE, CharNgram

# Token ids of a toy layout: specials 0-4, chars 5..9 (C = 5), UNK = 1 breaks a line.
LINES = [[5, 6, 7], [5, 6, 8], [5, 6, 7, 1, 9], [9, 5, 6], [8, 6, 9]]


def build(min_count: int) -> CharNgram:
    chars = np.array([t for line in LINES for t in line])
    offsets = np.cumsum([0] + [len(line) for line in LINES])
    return CharNgram.build(chars, offsets, char_offset=5, n_chars=5, min_count=min_count)


def test_distributions_sum_to_one():
    lm = build(min_count=1)
    everything = np.arange(5)
    for a in range(6):  # every history, the line start included
        for b in range(6):
            total = np.exp(lm.score(a, b, everything)).sum()
            assert total == pytest.approx(1.0, abs=1e-3), (a, b)


def test_learns_what_follows_what():
    lm = build(min_count=1)
    # after "5 6" (chars 0 1) comes 7 twice and 8 once; after "8 6" (chars 3 1) comes 9
    after_0_1 = lm.score(0, 1, np.arange(5))
    assert after_0_1.argmax() == 2 and after_0_1[2] > after_0_1[3] > after_0_1[4]
    after_3_1 = lm.score(3, 1, np.arange(5))
    assert after_3_1.argmax() == 4
    at_start = lm.score(lm.bos, lm.bos, np.arange(5))
    assert at_start[0] > at_start[2]  # lines start with token 5, never with token 7


def test_pruning_keeps_frequent_ngrams_and_backs_off(tmp_path):
    lm = build(min_count=2)
    full = build(min_count=1)
    assert len(lm.trigram_keys) < len(full.trigram_keys)
    assert len(lm.bigram_keys) < len(full.bigram_keys)
    lm.save(tmp_path)
    again = CharNgram.load(tmp_path)
    history, query = np.array([[0, 1], [5, 5], [3, 1]]), np.arange(5)[None, :]
    scores = lm.score(history[:, :1], history[:, 1:], query)
    assert scores.shape == (3, 5)
    np.testing.assert_array_equal(scores, again.score(history[:, :1], history[:, 1:], query))
    assert np.all(np.isfinite(scores))
    # element by element, the same as the grid
    assert lm.score(3, 1, 4) == scores[2, 4]
    assert CharNgram.load(tmp_path / "elsewhere") is None


def _tables(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / NGRAM_FILE) as data:
        return dict(data)


def _rewrite(directory: Path, **changed: np.ndarray | None) -> None:
    tables = {**_tables(directory), **changed}
    np.savez(directory / NGRAM_FILE, **{k: v for k, v in tables.items() if v is not None})


DAMAGES = {
    "truncated": lambda d: (d / NGRAM_FILE).write_bytes((d / NGRAM_FILE).read_bytes()[:200]),
    "empty": lambda d: (d / NGRAM_FILE).write_bytes(b""),
    "not a zip": lambda d: (d / NGRAM_FILE).write_bytes(b"not a zip"),
    "a table missing": lambda d: _rewrite(d, context_backoff=None),
    "two-dimensional": lambda d: _rewrite(d, unigram=np.zeros((2, 3), np.float32)),
    "strings": lambda d: _rewrite(d, bigram_logprobs=np.array(["x"] * 3)),
    "objects": lambda d: _rewrite(d, unigram=np.array([{}, None], dtype=object)),
    "not finite": lambda d: _rewrite(d, unigram=np.full(5, np.nan, np.float32)),
    "fewer values than keys": lambda d: _rewrite(d, trigram_logprobs=np.zeros(1, np.float16)),
    "a short unigram": lambda d: _rewrite(d, unigram=np.zeros(3, np.float32)),
    "keys out of order": lambda d: _rewrite(
        d, bigram_keys_deltas=-np.abs(_tables(d)["bigram_keys_deltas"]) - 1),
    "float keys": lambda d: _rewrite(
        d, trigram_keys_deltas=_tables(d)["trigram_keys_deltas"].astype(np.float64)),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_tables_are_refused_at_load(tmp_path, damage):
    build(min_count=1).save(tmp_path)
    DAMAGES[damage](tmp_path)
    folder = re.escape(str(tmp_path))
    with pytest.raises(ModelLoadError, match=f"model folder {folder} is damaged: ngram.npz"):
        CharNgram.load(tmp_path)


def test_tables_of_another_vocabulary_are_refused(tmp_path):
    build(min_count=1).save(tmp_path)
    assert CharNgram.load(tmp_path, n_chars=5) is not None
    with pytest.raises(ModelLoadError, match="it has 5 characters, the vocabulary 7"):
        CharNgram.load(tmp_path, n_chars=7)


def test_lm_weight_flips_a_near_tie_towards_what_the_corpus_supports():
    # chars 0-3 of a toy layout; the corpus says 京 follows 北, and 经 follows 天 only
    chars = "北京经天"
    lines = ["北京", "北京天", "北京经", "天经", "北京", "天经北京"]
    ids = np.array([chars.index(c) + 5 for line in lines for c in line])
    offsets = np.cumsum([0] + [len(line) for line in lines])
    lm = CharNgram.build(ids, offsets, char_offset=5, n_chars=4, min_count=1)
    bei, jing_capital, jing_classic = 0, 1, 2
    gap = float(lm.score(lm.bos, bei, jing_capital) - lm.score(lm.bos, bei, jing_classic))
    assert gap > 1.0  # the n-gram prefers 北京 by far more than the model prefers 北经

    # the model slightly prefers the wrong 经 after 北
    positions = [Position(["北"], np.array([bei]), np.array([0.0])),
                 Position(["经", "京"], np.array([jing_classic, jing_capital]),
                          np.array([-1.0, -1.2]))]
    assert beam_search(positions)[0][0] == "北经"
    assert beam_search(positions, lm=lm, lm_weight=0.0)[0][0] == "北经"
    text, score = beam_search(positions, lm=lm, lm_weight=0.5)[0]
    assert text == "北京"
    by_hand = -1.2 + 0.5 * float(lm.score(lm.bos, lm.bos, bei)
                                 + lm.score(lm.bos, bei, jing_capital))
    assert score == pytest.approx(by_hand, abs=1e-6)
    # with the weight, both texts are ranked by model + weight * n-gram
    ranked = beam_search(positions, lm=lm, lm_weight=0.5, k=2)
    assert [t for t, _ in ranked] == ["北京", "北经"]
    assert ranked[0][1] - ranked[1][1] == pytest.approx(0.5 * gap - 0.2, abs=1e-6)
