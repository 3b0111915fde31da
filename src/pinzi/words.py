"""Word knowledge for decoding: word probabilities, and a text's most probable segmentation.

The converter's network and character n-gram know characters; a word list built from
big-corpus statistics (``scripts/build_words.py``: jieba, wordfreq, Wiktionary) knows that
多穿点衣服 is made of words and 多穿点一幅 is not. :meth:`WordModel.score` is the log-probability
of a text's best segmentation into listed words (a unigram model, searched by dynamic
programming as jieba does); a character no listed word covers costs :attr:`WordModel.unknown`.
Decoding adds ``word_weight`` times that score to each of its n-best conversions and ranks
them again (:class:`pinzi.converter.DecodingConfig`).

Stored beside the model as ``words.tsv.gz``: ``word<TAB>log10 probability`` lines, most
probable first, after ``#`` comment lines.
"""

from __future__ import annotations

import gzip
import math
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from pinzi.errors import ModelLoadError
from pinzi.text import is_hanzi

WORDS_FILE = "words.tsv.gz"
UNKNOWN_FACTOR = 10.0  # a character no word covers: ten times rarer than the rarest word


class WordModel:
    """Natural-log word probabilities; ``score(text)``: its best segmentation's log-probability."""

    def __init__(self, logprobs: dict[str, float]):
        if not logprobs:
            raise ValueError("a word model needs at least one word")
        self.logprobs = logprobs
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
            with gzip.open(path, "rt", encoding="utf-8") as f:
                text = f.read()
            start = 0
            while text.startswith("#", start):  # the header's comment lines
                start = text.index("\n", start) + 1
            fields = text[start:].split()  # word, value, word...: split in C, fast
            if len(fields) % 2:
                raise ValueError("a line without its value")
            values = np.asarray(fields[1::2], dtype=np.float64) * math.log(10)
            if not np.isfinite(values).all():
                raise ValueError("a value that is not a number")
            return cls(dict(zip(fields[0::2], values.tolist(), strict=True)))
        except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as err:
            raise ModelLoadError(f"{path} is damaged: {err}") from err

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
            logprob = self.logprobs.get(run[-size:])
            if logprob is None:
                if size > 1:
                    continue
                logprob = self.unknown
            best = max(best, self._segment(run[:-size]) + logprob)
        return best
