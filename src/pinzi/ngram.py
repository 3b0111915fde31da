"""A character bigram language model over a tokenizer's characters, used to rescore decoding.

The encoder scores every position from the whole input at once; adding ``weight * log P(c|prev)``
in the beam search makes neighbouring choices agree with how often characters follow each other
in the training corpus. Counting takes seconds (numpy over the tokenized corpus) and costs no
training time. Smoothing is interpolated absolute discounting:

    P(c | p) = max(n(p, c) - D, 0) / n(p) + D * types(p) / n(p) * P(c)

Bigrams seen fewer than ``min_count`` times are not stored and fall back to the second term.
Saved as ``ngram.npz`` beside the model; the converter uses it when the file is there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NGRAM_FILE = "ngram.npz"
DISCOUNT = 0.75


class CharBigram:
    """Log-probabilities of a character given the previous one (``bos`` at a line start)."""

    def __init__(self, keys: np.ndarray, logprobs: np.ndarray, backoff: np.ndarray,
                 unigram: np.ndarray):
        self.keys = keys  # sorted int64 prev * (C + 1) + cur, for the stored bigrams
        self.logprobs = logprobs  # their log P(cur | prev)
        self.backoff = backoff  # (C + 1,) log of D * types(p) / n(p); index C is line start
        self.unigram = unigram  # (C,) log P(c)
        self.bos = len(unigram)

    @classmethod
    def build(cls, chars: np.ndarray, offsets: np.ndarray, char_offset: int, n_chars: int,
              min_count: int = 2) -> CharBigram:
        """Count over a tokenized corpus (token ids, line offsets) of a tokenizer's layout."""
        index = chars.astype(np.int64) - char_offset
        index[(index < 0) | (index >= n_chars)] = n_chars  # not a character: like a line start
        previous = np.roll(index, 1)
        previous[offsets[:-1][offsets[:-1] < len(index)]] = n_chars
        real = index < n_chars
        unigram_counts = np.bincount(index[real], minlength=n_chars).astype(np.float64) + 0.1
        unigram = unigram_counts / unigram_counts.sum()
        keys, counts = np.unique(previous[real] * (n_chars + 1) + index[real], return_counts=True)
        prev_of_key = keys // (n_chars + 1)
        totals = np.bincount(prev_of_key, weights=counts, minlength=n_chars + 1)
        types = np.bincount(prev_of_key, minlength=n_chars + 1)
        weight = np.where(totals > 0, DISCOUNT * types / np.maximum(totals, 1), 1.0)
        probs = ((counts - DISCOUNT) / totals[prev_of_key]
                 + weight[prev_of_key] * unigram[keys % (n_chars + 1)])
        keep = counts >= min_count
        return cls(keys[keep], np.log(probs[keep]).astype(np.float16),
                   np.log(weight).astype(np.float32), np.log(unigram).astype(np.float32))

    def score(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """(H,) previous char indices (``bos`` allowed) x (K,) candidates -> (H, K) log P."""
        queries = previous[:, None].astype(np.int64) * (self.bos + 1) + current[None, :]
        found = np.minimum(np.searchsorted(self.keys, queries), len(self.keys) - 1)
        hit = self.keys[found] == queries
        fallback = self.backoff[previous][:, None] + self.unigram[current][None, :]
        return np.where(hit, self.logprobs[found].astype(np.float32), fallback)

    def save(self, directory: str | Path) -> None:
        np.savez_compressed(Path(directory) / NGRAM_FILE, keys=self.keys, logprobs=self.logprobs,
                            backoff=self.backoff, unigram=self.unigram)

    @classmethod
    def load(cls, directory: str | Path) -> CharBigram | None:
        """The model folder's bigram table, or None when it has none."""
        path = Path(directory) / NGRAM_FILE
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["keys"], data["logprobs"], data["backoff"], data["unigram"])
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path} is damaged: {err}") from err
