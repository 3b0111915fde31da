"""A character trigram language model over a tokenizer's characters, used to rescore decoding.

The encoder scores every position from the whole input at once; adding ``weight * log P(c|a b)``
in the beam search makes neighbouring choices agree with how characters follow each other in
the training corpus. Counting takes seconds (numpy over the tokenized corpus) and costs no
training time. Smoothing is interpolated absolute discounting, trigram over bigram over unigram:

    P(c | b)   = max(n(b c) - D, 0) / n(b)   + D * types(b) / n(b)     * P(c)
    P(c | a b) = max(n(a b c) - D, 0) / n(a b) + D * types(a b) / n(a b) * P(c | b)

N-grams seen fewer than ``min_count`` times are not stored and fall back to the second term; a
context never stored backs off whole. Saved as ``ngram.npz`` beside the model; the converter
uses it when the file is there.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pinzi.hub import damaged

NGRAM_FILE = "ngram.npz"
# N-grams seen fewer times are not stored: at 3 the tables of the shipped model (52M training
# characters) take 10.5 MB instead of 15.8 at 2, which keeps the model folder under the
# project's 30 MB, for 0.3 points of dev char accuracy.
MIN_COUNT = 3
DISCOUNT = 0.75


def _counts(keys: np.ndarray, base: int) -> tuple[np.ndarray, ...]:
    """Unique n-gram keys, their counts, and per context (key // base) total and types."""
    keys, counts = np.unique(keys, return_counts=True)
    contexts, where = np.unique(keys // base, return_inverse=True)
    totals = np.bincount(where, weights=counts)
    types = np.bincount(where)
    return keys, counts, contexts, where, totals, types


class CharNgram:
    """Log-probabilities of a character given the two before it (``bos`` before a line)."""

    def __init__(self, unigram: np.ndarray, bigram_keys: np.ndarray, bigram_logprobs: np.ndarray,
                 bigram_backoff: np.ndarray, trigram_keys: np.ndarray,
                 trigram_logprobs: np.ndarray, context_keys: np.ndarray,
                 context_backoff: np.ndarray):
        self.unigram = unigram  # (C,) log P(c)
        self.bos = len(unigram)  # the "character" before a line or pass-through text
        self.base = self.bos + 1
        self.bigram_keys, self.bigram_logprobs = bigram_keys, bigram_logprobs  # b * base + c
        self.bigram_backoff = bigram_backoff  # (C + 1,) log D * types(b) / n(b)
        self.trigram_keys, self.trigram_logprobs = trigram_keys, trigram_logprobs  # (a b) c
        self.context_keys, self.context_backoff = context_keys, context_backoff  # a * base + b

    @classmethod
    def build(cls, chars: np.ndarray, offsets: np.ndarray, char_offset: int, n_chars: int,
              min_count: int = MIN_COUNT) -> CharNgram:
        """Count over a tokenized corpus (token ids, line offsets) of a tokenizer's layout."""
        base = n_chars + 1
        index = chars.astype(np.int64) - char_offset
        index[(index < 0) | (index >= n_chars)] = n_chars  # not a character: a fresh start
        starts = offsets[:-1][offsets[:-1] < len(index)]
        prev1 = np.roll(index, 1)
        prev1[starts] = n_chars
        prev2 = np.roll(prev1, 1)
        prev2[starts] = n_chars
        prev2[np.minimum(starts + 1, len(index) - 1)] = n_chars
        prev2[prev1 == n_chars] = n_chars  # after a break, the older history is gone too
        real = index < n_chars

        unigram = np.bincount(index[real], minlength=n_chars).astype(np.float64) + 0.1
        unigram /= unigram.sum()

        keys, counts, contexts, where, totals, types = _counts(prev1[real] * base + index[real],
                                                               base)
        weight1 = np.ones(base)
        weight1[contexts] = DISCOUNT * types / totals
        p2 = (counts - DISCOUNT) / totals[where] + weight1[contexts[where]] * unigram[keys % base]
        keep2 = counts >= min_count
        bigram_keys, bigram_p = keys[keep2], p2[keep2]

        def p_bigram(b: np.ndarray, c: np.ndarray) -> np.ndarray:
            query = b * base + c
            found = np.minimum(np.searchsorted(bigram_keys, query), len(bigram_keys) - 1)
            hit = bigram_keys[found] == query
            return np.where(hit, bigram_p[found], weight1[b] * unigram[c])

        keys, counts, contexts, where, totals, types = _counts(
            (prev2[real] * base + prev1[real]) * base + index[real], base)
        weight2 = DISCOUNT * types / totals
        lower = p_bigram(contexts[where] % base, keys % base)
        p3 = (counts - DISCOUNT) / totals[where] + weight2[where] * lower
        keep3 = counts >= min_count
        kept_contexts = np.unique(keys[keep3] // base)
        return cls(np.log(unigram).astype(np.float32), bigram_keys,
                   np.log(bigram_p).astype(np.float16), np.log(weight1).astype(np.float32),
                   keys[keep3], np.log(p3[keep3]).astype(np.float16), kept_contexts,
                   np.log(weight2[np.searchsorted(contexts, kept_contexts)]).astype(np.float16))

    def score(self, before2: np.ndarray, before1: np.ndarray, current: np.ndarray) -> np.ndarray:
        """log P(current | before2 before1), element by element; the arrays broadcast together.

        ``before2``/``before1`` may be ``bos``. Decoding scores a beam's (H, 1) histories
        against a position's (1, K) candidates in one call.
        """
        a, b, c = (np.asarray(x, dtype=np.int64) for x in (before2, before1, current))
        bigram = _lookup(self.bigram_keys, self.bigram_logprobs, b * self.base + c,
                         self.bigram_backoff[b] + self.unigram[c])
        context = _lookup(self.context_keys, self.context_backoff, a * self.base + b,
                          np.zeros(b.shape, dtype=np.float32))
        return _lookup(self.trigram_keys, self.trigram_logprobs,
                       (a * self.base + b) * self.base + c, context + bigram)

    def history(self, ids: Sequence[int]) -> tuple[int, int]:
        """The two characters before what follows a text ending in characters ``ids``
        (their indices; a negative one is no character the tables know, and starts afresh
        as ``bos`` does)."""
        before2, before1 = ([-1, -1] + list(ids))[-2:]
        if before1 < 0:
            return self.bos, self.bos
        return (before2 if before2 >= 0 else self.bos), before1

    def save(self, directory: str | Path) -> None:
        """``ngram.npz``; sorted keys are stored as their differences, which compress to a
        fraction of the keys themselves."""
        arrays = {name: getattr(self, name) for name in _FIELDS}
        for name in _KEYS:
            arrays[name + _DELTA] = np.diff(arrays.pop(name), prepend=0)
        np.savez_compressed(Path(directory) / NGRAM_FILE, **arrays)

    @classmethod
    def load(cls, directory: str | Path, n_chars: int | None = None) -> CharNgram | None:
        """The model folder's n-gram tables, or None when it has none.

        :func:`pinzi.hub.damaged` when the file cannot be read (truncated, empty, from an
        older pinzi) or its tables do not fit together, or a vocabulary of ``n_chars``.
        """
        path = Path(directory) / NGRAM_FILE
        if not path.exists():
            return None
        if not zipfile.is_zipfile(path):  # numpy would take it for a pickle and say so
            raise damaged(directory, f"{NGRAM_FILE} is not an .npz archive (truncated?)")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in _FIELDS if name not in _KEYS}
                arrays.update({name: np.cumsum(data[name + _DELTA]) for name in _KEYS})
            _check(arrays, n_chars)
        except (OSError, EOFError, ValueError, TypeError, KeyError, zipfile.BadZipFile,
                zlib.error) as err:
            raise damaged(directory, f"{NGRAM_FILE} cannot be used: {err}") from err
        return cls(**arrays)


def _check(arrays: dict[str, np.ndarray], n_chars: int | None) -> None:
    """ValueError unless the loaded tables are what :meth:`CharNgram.score` indexes safely:
    one-dimensional, float values and integer keys, as many values as keys, keys sorted and
    within the layout of ``len(unigram)`` characters (``n_chars`` when given)."""
    for name, array in arrays.items():
        kind = "iu" if name in _KEYS else "f"
        if array.ndim != 1 or array.dtype.kind not in kind or (
                kind == "f" and not np.isfinite(array).all()):
            raise ValueError(f"{name} is not a one-dimensional array of "
                             f"{'whole' if name in _KEYS else 'finite'} numbers")
    size = len(arrays["unigram"])
    if n_chars is not None and size != n_chars:
        raise ValueError(f"it has {size} characters, the vocabulary {n_chars}")
    base = size + 1
    if len(arrays["bigram_backoff"]) != base:
        raise ValueError(f"bigram_backoff has {len(arrays['bigram_backoff'])} values, not "
                         f"{base}")
    for keys, values, order in (("bigram_keys", "bigram_logprobs", 2),
                                ("trigram_keys", "trigram_logprobs", 3),
                                ("context_keys", "context_backoff", 2)):
        found = arrays[keys]
        if len(found) != len(arrays[values]):
            raise ValueError(f"{keys} and {values} differ in length")
        if len(found) and (found[0] < 0 or found[-1] >= base ** order
                           or not (np.diff(found) > 0).all()):
            raise ValueError(f"{keys} are not sorted keys of {size} characters")


_FIELDS = ("unigram", "bigram_keys", "bigram_logprobs", "bigram_backoff", "trigram_keys",
           "trigram_logprobs", "context_keys", "context_backoff")
_KEYS = ("bigram_keys", "trigram_keys", "context_keys")
_DELTA = "_deltas"


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray,
            fallback: np.ndarray) -> np.ndarray:
    """values[keys == query] where stored, else the fallback (broadcast together)."""
    if len(keys) == 0:
        return np.broadcast_to(fallback, np.broadcast_shapes(queries.shape, fallback.shape))
    found = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[found] == queries, values[found].astype(np.float32), fallback)
