"""Beam search over per-position candidate scores, with a user dictionary.

The model scores every position's candidates at once (the encoder is bidirectional); the search
turns those scores into ranked whole-line conversions. Each hypothesis is extended with the
best few candidates of the next position, plus any character that continues a user-dictionary
word, so a user word survives the beam even when the model alone would not keep it. A user
word earns its bonus when a hypothesis ends with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pinzi.errors import DataError
from pinzi.io import numbered_lines
from pinzi.ngram import CharNgram

DEFAULT_WORD_WEIGHT = 4.0  # log-score bonus of a user word: strong enough to beat near-ties


@dataclass
class UserDict:
    """Words that decoding should prefer (names, product terms), each with a log-score bonus."""

    words: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> UserDict:
        """One word per line, optionally followed by whitespace and a weight (default 4.0).

        Blank lines and lines starting with ``#`` are ignored; a malformed weight is an error
        that names the line.
        """
        words: dict[str, float] = {}
        for number, line in numbered_lines(Path(path)):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) > 2:
                raise DataError(f"{path}:{number}: expected 'word [weight]', got {line!r}")
            try:
                weight = float(parts[1]) if len(parts) == 2 else DEFAULT_WORD_WEIGHT
            except ValueError as err:
                raise DataError(f"{path}:{number}: weight {parts[1]!r} is not a number") \
                    from err
            if not math.isfinite(weight):
                raise DataError(f"{path}:{number}: weight must be finite")
            words[parts[0]] = weight
        return cls(words)

    def __post_init__(self) -> None:
        self._next: dict[str, set[str]] = {}  # proper prefix of a word -> chars that follow it
        self._longest = 0
        # Characters that end some word, and that end some proper prefix: most extensions of a
        # hypothesis end with neither, and are answered without looking at any suffix.
        self._last_chars: set[str] = set()
        self._inner_chars: set[str] = set()
        for word in list(self.words):
            self._index(word)

    def _index(self, word: str) -> None:
        for i in range(len(word)):
            self._next.setdefault(word[:i], set()).add(word[i])
        self._longest = max(self._longest, len(word))
        self._last_chars.add(word[-1])
        self._inner_chars.update(word[:-1])

    def add(self, word: str, weight: float = DEFAULT_WORD_WEIGHT) -> None:
        self.words[word] = weight
        self._index(word)

    def continuations(self, text: str, starts: set[str] | None = None) -> set[str]:
        """Characters that extend some suffix of ``text`` towards a word; for the empty suffix,
        the first characters of every word, or ``starts`` when given."""
        found = set(self._next.get("", ())) if starts is None else set(starts)
        for start in range(max(0, len(text) - self._longest + 1), len(text)):
            found |= self._next.get(text[start:], set())
        return found

    def in_progress(self, text: str) -> bool:
        """Whether ``text`` ends with the beginning (not the whole) of some user word."""
        if not text or text[-1] not in self._inner_chars:
            return False
        return any(text[start:] in self._next
                   for start in range(max(0, len(text) - self._longest + 1), len(text)))

    def bonus(self, text: str) -> float:
        """Bonus for the user words that ``text`` ends with."""
        if not text or text[-1] not in self._last_chars:
            return 0.0
        return sum(self.words.get(text[start:], 0.0)
                   for start in range(max(0, len(text) - self._longest), len(text)))

    def __bool__(self) -> bool:
        return bool(self.words)


@dataclass
class Position:
    """One pinyin position: its candidates (characters and their indices in the tokenizer's
    char section) and their log-probabilities, best first."""

    chars: Sequence[str]
    ids: np.ndarray
    scores: np.ndarray


def beam_search(positions: Iterable[Position | str], *, beam: int = 8, k: int = 1,
                userdict: UserDict | None = None, expand: int = 8,
                lm: CharNgram | None = None, lm_weight: float = 0.0,
                keep: UserDict | None = None,
                starts: Sequence[set[str]] | None = None) -> list[tuple[str, float]]:
    """The ``k`` best conversions of a line as (text, log-score), best first.

    ``positions`` mixes :class:`Position` (to decide) and plain strings (pass-through text that
    is copied as is). Each hypothesis is extended with the ``expand`` best candidates; its score
    adds the model's log-probability, ``lm_weight`` times the n-gram log-probability given the
    previous two characters, and user-word bonuses. With neither a language model nor a user
    dictionary the scores factorise and the search is exact for the top ``k`` when
    ``beam >= k`` and ``expand >= k``. Hypotheses in the middle of a user word are kept beyond
    the beam (up to ``beam`` more) so that the word can complete. The words of ``keep`` are
    kept alive the same way, without a bonus, each starting only where ``starts`` allows it
    (``starts[i]``: the first characters of the words that fit the input from position ``i``).

    Every hypothesis has taken one candidate per position, so two extensions never spell the
    same text and the beam needs no merging: the scores of all extensions are one numpy array.
    """
    use_lm = lm is not None and lm_weight > 0
    bos = lm.bos if lm is not None else -1
    width = max(beam, k)
    texts = [""]
    scores = np.zeros(1)
    before2 = before1 = np.full(1, bos, dtype=np.int64)  # the two characters before: none yet
    for step, position in enumerate(positions):
        if isinstance(position, str):  # pass-through text: the next char starts afresh
            texts = [text + position for text in texts]
            before2 = before1 = np.full(len(texts), bos, dtype=np.int64)
            continue
        top = min(expand, len(position.chars))
        # Every hypothesis x its top candidates, plus the candidates beyond `top` that continue
        # a word being spelled; then all their scores at once.
        rows, picks = np.divmod(np.arange(len(texts) * top), top)
        spellers = []  # (words being spelled, which of them may start here: None for any)
        if userdict:
            spellers.append((userdict, None))
        if keep:
            spellers.append((keep, starts[step] if starts is not None else None))
        if spellers:
            index = {c: i for i, c in enumerate(position.chars)}
            extra_rows, extra_picks = _user_word_candidates(index, texts, top, spellers)
            rows = np.concatenate([rows, extra_rows])
            picks = np.concatenate([picks, extra_picks])
        totals = scores[rows] + position.scores[picks]
        if use_lm:
            totals += lm_weight * lm.score(before2[rows], before1[rows], position.ids[picks])
        if userdict:
            totals += [userdict.bonus(texts[r] + position.chars[p])
                       for r, p in zip(rows, picks, strict=True)]
        order = np.argsort(-totals, kind="stable")
        kept = order[:width]
        if spellers:  # a word still being spelled survives the beam until it completes
            # Only an extension by a character inside some word can be in the middle of one.
            inner = np.zeros(len(position.chars), dtype=bool)
            inner[[index[c] for d, _ in spellers for c in d._inner_chars if c in index]] = True
            rest = order[width:]
            spelling = []
            for j in rest[inner[picks[rest]]].tolist():
                text = texts[rows[j]] + position.chars[picks[j]]
                if any(d.in_progress(text) for d, _ in spellers):
                    spelling.append(j)
                    if len(spelling) == width:
                        break
            kept = np.concatenate([kept, np.array(spelling, dtype=np.int64)])
        rows, picks = rows[kept], picks[kept]
        texts = [texts[r] + position.chars[p]
                 for r, p in zip(rows.tolist(), picks.tolist(), strict=True)]
        scores = totals[kept]
        before2, before1 = before1[rows], position.ids[picks]
    return [(text, float(score)) for text, score in zip(texts[:k], scores[:k], strict=False)]


def _user_word_candidates(index: dict[str, int], texts: list[str], top: int,
                          spellers: list[tuple[UserDict, set[str] | None]]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, picks) of the candidates beyond ``top`` (``index``: a position's candidate ->
    its rank) that continue a word being spelled."""
    extra = [(row, index[c]) for row, text in enumerate(texts)
             for c in sorted(set().union(*(d.continuations(text, starts)
                                          for d, starts in spellers)))
             if c in index and index[c] >= top]
    found = np.array(extra, dtype=np.int64).reshape(-1, 2)
    return found[:, 0], found[:, 1]
