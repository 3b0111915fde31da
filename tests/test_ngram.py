"""The character bigram model: normalisation, what it learns, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from pinzi.ngram import CharBigram

# Token ids of a toy layout: specials 0-4, chars 5..9 (C = 5), UNK = 1 breaks a line.
LINES = [[5, 6, 7], [5, 6, 8], [5, 6, 7, 1, 9], [9, 5, 6]]


def build(min_count: int) -> CharBigram:
    chars = np.array([t for line in LINES for t in line])
    offsets = np.cumsum([0] + [len(line) for line in LINES])
    return CharBigram.build(chars, offsets, char_offset=5, n_chars=5, min_count=min_count)


def test_distributions_sum_to_one():
    lm = build(min_count=1)
    everything = np.arange(5)
    for previous in range(6):  # every char, and the line start
        total = np.exp(lm.score(np.array([previous]), everything)).sum()
        assert total == pytest.approx(1.0, abs=1e-3)


def test_learns_what_follows_what():
    lm = build(min_count=1)
    after_first = lm.score(np.array([0]), np.arange(5))[0]  # chars after char 0 (token 5)
    assert after_first.argmax() == 1  # token 6 always follows token 5
    at_start = lm.score(np.array([lm.bos]), np.arange(5))[0]
    assert at_start[0] > at_start[2]  # lines start with token 5, never with token 7


def test_pruning_keeps_frequent_bigrams_and_backs_off(tmp_path):
    lm = build(min_count=2)
    assert len(lm.keys) < len(build(min_count=1).keys)
    lm.save(tmp_path)
    again = CharBigram.load(tmp_path)
    query = np.arange(5)
    np.testing.assert_array_equal(lm.score(np.array([0, 5]), query),
                                  again.score(np.array([0, 5]), query))
    assert CharBigram.load(tmp_path / "elsewhere") is None
    (tmp_path / "ngram.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="damaged"):
        CharBigram.load(tmp_path)
