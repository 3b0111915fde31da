"""Word knowledge for decoding: word probabilities, and a text's most probable segmentation.

The converter's network and character n-gram know characters; a word list built from
big-corpus statistics (``scripts/build_words.py``: jieba, wordfreq, Wiktionary) knows that
多穿点衣服 is made of words and 多穿点一幅 is not. :meth:`WordModel.score` is the log-probability
of a text's best segmentation into listed words (a unigram model, searched by dynamic
programming as jieba does); a character no listed word covers costs :attr:`WordModel.unknown`.
Decoding adds ``word_weight`` times that score to each of its n-best conversions and ranks
them again (:class:`pinzi.decoding_config.DecodingConfig`).

:meth:`WordModel.fitting` finds the listed words whose reading fits a stretch of typed pinyin
pieces (full syllables, initials or an unfinished syllable: ``bj`` fits 北京), so that decoding
can keep them in its beam even where the network ranks their characters low.

Stored beside the model as ``words.tsv.gz``: ``word<TAB>log10 probability<TAB>reading`` lines
(the reading's syllables joined by ``'``), most probable first, after ``#`` comment lines.
"""

from __future__ import annotations

import gc
import gzip
import heapq
import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property, lru_cache
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from pinzi.hub import damaged
from pinzi.pinyin import SYLLABLES, initial_of
from pinzi.text import is_hanzi

WORDS_FILE = "words.tsv.gz"
UNKNOWN_FACTOR = 10.0  # a character no word covers: ten times rarer than the rarest word
MAX_FITTING = 16  # words kept per start position of the typed pieces, the most probable first
INDEXED = 150_000  # the most probable words that can fit typed pieces (all of the shipped list)


# What an initial piece shows of a syllable: its initial (the syllable when it has none).
_KEYS = {syllable: initial_of(syllable) or syllable for syllable in SYLLABLES}
_SYLLABLE_ID = {syllable: i for i, syllable in enumerate(SYLLABLES)}
_KEY_ID = {key: i for i, key in enumerate(sorted(set(_KEYS.values())))}
# A syllable's number -> the number of its key (what an initial piece shows of it).
_INITIAL_OF_ID = np.array([_KEY_ID[_KEYS[syllable]] for syllable in SYLLABLES], dtype=np.int64)


@contextmanager
def _bulk() -> Iterator[None]:
    """Building hundreds of thousands of small objects at once (the list, its index): without
    the cyclic collector, whose passes over the whole heap made it 6 times slower. Nothing
    built here forms a cycle, and the collector's state is restored after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Buckets:
    """Word ranks grouped by (first, second, length in syllables), each group in rank order:
    one sorted array and the span of each group in it. ``ids`` numbers the firsts and
    seconds (syllables, or the initials that stand for them)."""

    def __init__(self, ranks: np.ndarray, lengths: np.ndarray, firsts: np.ndarray,
                 seconds: np.ndarray, ids: dict[str, int]):
        self.ids = ids
        keys = self._key(firsts, seconds, lengths)
        order = np.argsort(keys, kind="stable")  # stable: rank order within a group
        keys, self.sorted_ranks = keys[order], ranks[order]
        starts = np.flatnonzero(np.diff(keys, prepend=-1))
        ends = np.append(starts[1:], len(keys))
        self.spans = dict(zip(keys[starts].tolist(), zip(starts.tolist(), ends.tolist(),
                                                         strict=True), strict=True))

    @staticmethod
    def _key(first, second, length):
        return (first * 1024 + second) * 256 + np.minimum(length, 255)

    def ranks(self, first: str, second: str, length: int) -> list[int]:
        span = self.spans.get(int(self._key(self.ids[first], self.ids[second], length)))
        return self.sorted_ranks[span[0]:span[1]].tolist() if span else []


class WordModel:
    """Natural-log word probabilities; ``score(text)``: its best segmentation's log-probability."""

    def __init__(self, logprobs: dict[str, float], readings: dict[str, str] | None = None):
        """``readings``: word -> its syllables joined by ``'`` (words without one never fit)."""
        if not logprobs:
            raise ValueError("a word model needs at least one word")
        self.logprobs, self.readings = logprobs, readings or {}
        self.longest = max(map(len, logprobs))
        self.unknown = min(logprobs.values()) - math.log(UNKNOWN_FACTOR)
        self.score = lru_cache(maxsize=65536)(self._score)
        self._segment = lru_cache(maxsize=65536)(self._segment)  # by prefix

    @classmethod
    def load(cls, directory: str | Path) -> WordModel | None:
        """The folder's word model, or None when it has none."""
        path = Path(directory, WORDS_FILE)
        if not path.is_file():
            return None
        try:
            with _bulk(), gzip.open(path, "rt", encoding="utf-8") as f:
                return cls._parse(f.read())
        except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as err:
            raise damaged(directory, f"{WORDS_FILE}: {err}") from err

    @classmethod
    def _parse(cls, text: str) -> WordModel:
        """The model of a words.tsv.gz's text; ValueError says what is wrong with it."""
        start = 0
        while text.startswith("#", start):  # the header's comment lines
            start = text.index("\n", start) + 1
        fields = text[start:].split()  # word, value, reading, word...: split in C, fast
        if len(fields) % 3:
            raise ValueError("a line without its three fields")
        words, readings = fields[0::3], fields[2::3]
        values = np.asarray(fields[1::3], dtype=np.float64) * math.log(10)
        if not (np.isfinite(values) & (values <= 0)).all():
            raise ValueError("a value that is not a log-probability (a number <= 0)")
        # fitting() looks each syllable up, and spans as many pieces as there are
        # (map and chain iterate in C: these checks run at every start of `pinzi convert`)
        syllables = set(chain.from_iterable(map(str.split, set(readings), repeat("'"))))
        unknown = syllables - _KEYS.keys()
        if unknown:
            raise ValueError(f"a reading with {min(unknown)!r}, which is no syllable")
        if not np.array_equal(np.fromiter(map(len, words), np.int64, len(words)),
                              np.fromiter(map(str.count, readings, repeat("'")), np.int64,
                                          len(readings)) + 1):
            raise ValueError("a reading of more or fewer syllables than its word")
        return cls(dict(zip(words, values.tolist(), strict=True)),
                   dict(zip(words, readings, strict=True)))

    def fitting(self, allowed: Sequence[frozenset[str] | None],
                per_start: int = MAX_FITTING) -> list[tuple[int, str]]:
        """``(start, word)`` of listed words of two or more characters whose reading fits the
        typed pieces from ``start`` on: each syllable among the syllables its piece may be
        (``allowed[i]``; None where a piece is not pinyin). At most ``per_start`` words per
        start and length, the most probable first: a long word (生日快乐 for ``srkl``) is not
        crowded out by the many short ones that fit its first pieces."""
        by_syllables, by_initials = self._indexes
        words, readings = self._ranked
        found = []
        for start in range(len(allowed) - 1):
            first, second = allowed[start], allowed[start + 1]
            if not first or not second:
                continue
            exact = len(first) == 1 and len(second) == 1  # two syllables typed whole
            if exact:
                pairs = [(next(iter(first)), next(iter(second)))]
            else:
                pairs = [(a, b) for a in {_KEYS[s] for s in first}
                         for b in {_KEYS[s] for s in second}]
            index = by_syllables if exact else by_initials
            for length in range(2, len(allowed) - start + 1):
                buckets = [index.ranks(a, b, length) for a, b in pairs]
                fits = 0
                for rank in heapq.merge(*buckets):  # ranks: the most probable first
                    syllables = readings[rank].split("'")
                    if all(allowed[start + i] and syllable in allowed[start + i]
                           for i, syllable in enumerate(syllables[2:], 2)):
                        found.append((start, words[rank]))
                        fits += 1
                        if fits == per_start:
                            break
        return found

    @cached_property
    def _ranked(self) -> tuple[list[str], list[str]]:
        """The words with a reading, most probable first, and their readings."""
        return list(self.readings), list(self.readings.values())

    @cached_property
    def _indexes(self) -> tuple[_Buckets, _Buckets]:
        """The ranks of the INDEXED most probable words of two or more syllables, by their
        first two syllables and their length in syllables, and by the initials of those two
        and the length; each bucket in rank order. Grouped with numpy: this runs on the first
        conversion, at every start of `pinzi convert`."""
        with _bulk():
            return self._group(self._ranked[1][:INDEXED])

    @staticmethod
    def _group(readings: list[str]) -> tuple[_Buckets, _Buckets]:
        # Syllables and initials as numbers, read straight into arrays: no per-word objects
        # outlive their line (a list of split readings would cost 40 MB at its peak).
        ranks = np.array([rank for rank, reading in enumerate(readings) if "'" in reading],
                         dtype=np.int64)
        multi = [readings[rank] for rank in ranks.tolist()]
        count = len(multi)
        lengths = np.fromiter((r.count("'") + 1 for r in multi), np.int64, count)
        firsts = np.fromiter((_SYLLABLE_ID[r.partition("'")[0]] for r in multi), np.int64,
                             count)
        seconds = np.fromiter((_SYLLABLE_ID[r.partition("'")[2].partition("'")[0]]
                               for r in multi), np.int64, count)
        return (_Buckets(ranks, lengths, firsts, seconds, _SYLLABLE_ID),
                _Buckets(ranks, lengths, _INITIAL_OF_ID[firsts], _INITIAL_OF_ID[seconds],
                         _KEY_ID))

    def split(self, run: str) -> list[str]:
        """The words of the best segmentation of ``run`` (all hanzi); a character no listed
        word covers is a word of its own."""
        best = [(0.0, 0)] + [(-math.inf, 0)] * len(run)  # (log-probability, start of last word)
        for end in range(1, len(run) + 1):
            for size in range(1, min(self.longest, end) + 1):
                logprob = self._word_logprob(run[end - size:end])
                if logprob is not None and best[end - size][0] + logprob > best[end][0]:
                    best[end] = (best[end - size][0] + logprob, end - size)
        words, end = [], len(run)
        while end:
            start = best[end][1]
            words.append(run[start:end])
            end = start
        return words[::-1]

    def _score(self, text: str) -> float:
        """Log-probability of the best segmentation of each run of hanzi in ``text``."""
        total, run = 0.0, []
        for ch in text + "\n":  # the sentinel ends the last run
            if is_hanzi(ch):
                run.append(ch)
            elif run:
                total += self._segment("".join(run))
                run = []
        return total

    def _segment(self, run: str) -> float:
        """The best log-probability of ``run`` (all hanzi), from those of its prefixes: the
        conversions ranked together share most of their prefixes, so each is computed once."""
        if not run:
            return 0.0
        best = -math.inf
        for size in range(1, min(self.longest, len(run)) + 1):
            logprob = self._word_logprob(run[-size:])
            if logprob is not None:
                best = max(best, self._segment(run[:-size]) + logprob)
        return best

    def _word_logprob(self, piece: str) -> float | None:
        """A stretch's log-probability as one word of a segmentation: a listed word's, the
        unknown character's for any other single character, None for other stretches."""
        logprob = self.logprobs.get(piece)
        return self.unknown if logprob is None and len(piece) == 1 else logprob
