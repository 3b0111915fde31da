"""Beam search over per-position candidate scores, and the user dictionary's words.

The model scores every position's candidates at once (the encoder is bidirectional); the search
turns those scores into ranked whole-line conversions. Each hypothesis is extended with the
best few candidates of the next position, plus any character that continues a word the caller
wants kept alive (a listed word that fits the typed pinyin), so such a word survives the beam
even when the model alone would not keep it.

User words (``--userdict``: names, product terms) are put in place after the search
(:func:`place_user_words`): a user word wins wherever its characters fit the typed pinyin, by
its weight over the conversion it replaces, whatever the model thinks of it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pinzi.errors import DataError
from pinzi.io import numbered_lines
from pinzi.ngram import CharNgram
from pinzi.text import is_hanzi

DEFAULT_WORD_WEIGHT = 4.0  # a user word's margin (log-score) over the conversion it replaces
# A user word typed by initials (yh: 音航) is less surely meant than one typed in full: each
# abbreviated piece takes this much off its margin, so a default-weight word typed by two
# initials is listed below the model's conversion, and a weight of 10 still wins.
ABBREVIATED_COST = 4.0


@dataclass
class UserDict:
    """Words that decoding should prefer (names, product terms), each with a weight: its
    margin, in log-score, over the conversion it replaces (negative: listed below it).

    Change it with :meth:`add` and :meth:`discard`: they keep the index by first character
    that decoding looks words up in (thousands of learned words cost no more than a few)."""

    words: dict[str, float] = field(default_factory=dict)
    # Whether a word may only replace whole words of a conversion (learned words: 几个 must
    # not turn 自己哥哥 into 自几个个), or any run of characters it fits (a user's list).
    whole_words: bool = False

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

    def add(self, word: str, weight: float = DEFAULT_WORD_WEIGHT) -> None:
        self.words[word] = weight
        self.by_first.setdefault(word[0], {})[word] = weight

    def discard(self, word: str) -> None:
        if self.words.pop(word, None) is not None:
            del self.by_first[word[0]][word]

    @cached_property
    def by_first(self) -> dict[str, dict[str, float]]:
        """The words and their weights by their first character."""
        index: dict[str, dict[str, float]] = defaultdict(dict)
        for word, weight in self.words.items():
            index[word[0]][word] = weight
        return index

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
                expand: int = 8, lm: CharNgram | None = None, lm_weight: float = 0.0,
                keep: Sequence[tuple[int, str]] = (),
                history: tuple[int, int] | None = None) -> list[tuple[str, float]]:
    """The ``k`` best conversions of a line as (text, log-score), best first.

    ``positions`` mixes :class:`Position` (to decide) and plain strings (pass-through text that
    is copied as is). Each hypothesis is extended with the ``expand`` best candidates; its score
    adds the model's log-probability and ``lm_weight`` times the n-gram log-probability given
    the previous two characters. The scores factorise without a language model, and the search
    is then exact for the top ``k`` when ``beam >= k`` and ``expand >= k``. ``keep`` lists
    words to keep alive, each with the index of the position it starts at: a hypothesis that
    has spelled a word's start there is extended with its next character even beyond
    ``expand``, and kept beyond the beam (up to ``beam`` more) while it spells the word.
    ``history``: the n-gram's two characters before the line (committed text:
    :meth:`CharNgram.history`); default, the start of a text.

    Every hypothesis has taken one candidate per position, so two extensions never spell the
    same text and the beam needs no merging: the scores of all extensions are one numpy array.
    """
    use_lm = lm is not None and lm_weight > 0
    bos = lm.bos if lm is not None else -1
    width = max(beam, k)
    spelled = _spelled_at(keep)
    texts = [""]
    scores = np.zeros(1)
    before2, before1 = (np.full(1, i, dtype=np.int64) for i in history or (bos, bos))
    for step, position in enumerate(positions):
        if isinstance(position, str):  # pass-through text: the next char starts afresh
            texts = [text + position for text in texts]
            before2 = before1 = np.full(len(texts), bos, dtype=np.int64)
            continue
        top = min(expand, len(position.chars))
        # Every hypothesis x its top candidates, plus the candidates beyond `top` that continue
        # a word being spelled; then all their scores at once.
        rows, picks = np.divmod(np.arange(len(texts) * top), top)
        spelling_here = spelled.get(step, ())
        if spelling_here:
            extra_rows, extra_picks = _spelling_candidates(position, texts, top, spelling_here)
            rows = np.concatenate([rows, extra_rows])
            picks = np.concatenate([picks, extra_picks])
        totals = scores[rows] + position.scores[picks]
        if use_lm:
            totals += lm_weight * lm.score(before2[rows], before1[rows], position.ids[picks])
        order = np.argsort(-totals, kind="stable")
        kept = order[:width]
        unfinished = {prefix + char for prefix, char, last in spelling_here if not last}
        if unfinished:  # a word still being spelled survives the beam until it completes
            inner = {spelled[-1] for spelled in unfinished}
            sizes = {len(spelled) for spelled in unfinished}
            spelling = []
            for j in order[width:].tolist():
                char = position.chars[picks[j]]
                if char in inner and any((texts[rows[j]] + char)[-size:] in unfinished
                                         for size in sizes):
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


def _spelled_at(keep: Sequence[tuple[int, str]]) -> dict[int, list[tuple[str, str, bool]]]:
    """Per position, (what a word has spelled before it, its character there, whether that
    is its last) of every kept word spelled across it."""
    spelled: dict[int, list[tuple[str, str, bool]]] = defaultdict(list)
    for start, word in keep:
        for i, char in enumerate(word):
            spelled[start + i].append((word[:i], char, i == len(word) - 1))
    return spelled


def _spelling_candidates(position: Position, texts: list[str], top: int,
                         spelling: list[tuple[str, str, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, picks) of the candidates beyond ``top`` that continue a kept word a hypothesis
    is spelling."""
    rank = {c: i for i, c in enumerate(position.chars)}
    extra = {(row, rank[char]) for prefix, char, _ in spelling
             if rank.get(char, -1) >= top
             for row, text in enumerate(texts) if text.endswith(prefix)}
    found = np.array(sorted(extra), dtype=np.int64).reshape(-1, 2)
    return found[:, 0], found[:, 1]


class Fit(NamedTuple):
    """A place a user word fits: its margin there, the position it starts at, the word, and
    whether it may only replace whole words (:attr:`UserDict.whole_words`)."""

    margin: float
    start: int
    word: str
    whole_words: bool = False


def place_user_words(found: list[tuple[str, float]], positions: Sequence[Position | str],
                     userdicts: Sequence[UserDict], abbreviated: Sequence[bool],
                     split: Callable[[str], list[str]] | None = None
                     ) -> list[tuple[str, float]]:
    """``found`` (conversions of one reading's ``positions``, as :func:`beam_search` gives
    them) with the user words put in place, best first.

    A word of ``userdicts`` fits a run of consecutive positions whose candidates include its
    characters in order. Its margin is its weight, less :data:`ABBREVIATED_COST` for each of
    those positions typed as an abbreviation (``abbreviated[i]``). Every conversion is joined
    by the same text with all fitting words of positive margin in place (the best margin first,
    never overlapping), scored its score plus their margins, and by one text per fitting word,
    scored its score plus that word's margin: a word of negative margin is listed, below. A
    word of a ``whole_words`` dictionary goes in place only where it replaces whole words of
    the conversion, as ``split`` (a run of hanzi -> its words) cuts it.
    """
    fits = user_word_fits(positions, userdicts, abbreviated)
    if not fits:
        return found
    offsets = np.cumsum([0] + [1 if isinstance(p, Position) else len(p) for p in positions])
    scored = dict(found)
    needs_edges = split is not None and any(f.whole_words for f in fits)
    for text, score in found:
        edges = _word_edges(text, split) if needs_edges else None
        usable = [f for f in fits if not f.whole_words or edges is None or (
            offsets[f.start] in edges and offsets[f.start] + len(f.word) in edges)]
        chosen: list[Fit] = []
        for fit in sorted(usable, key=lambda f: (-f.margin, -len(f.word), f.start)):
            if fit.margin > 0 and all(fit.start + len(fit.word) <= c.start
                                      or c.start + len(c.word) <= fit.start for c in chosen):
                chosen.append(fit)
        for variant in [[fit] for fit in usable] + ([chosen] if len(chosen) > 1 else []):
            placed = list(text)
            for fit in variant:
                placed[offsets[fit.start]:offsets[fit.start] + len(fit.word)] = fit.word
            new_text = "".join(placed)
            new_score = score + sum(fit.margin for fit in variant)
            if new_score > scored.get(new_text, -math.inf):
                scored[new_text] = new_score
    return sorted(scored.items(), key=lambda item: (-item[1], item[0]))


def _word_edges(text: str, split: Callable[[str], list[str]]) -> set[int]:
    """Where the words of ``text`` begin and end: between the words ``split`` cuts each run
    of hanzi into, and around every other character."""
    edges, at = {0}, 0
    for hanzi, run in groupby(text, key=is_hanzi):
        for word in split("".join(run)) if hanzi else list(run):
            at += len(word)
            edges.add(at)
    return edges


def user_word_fits(positions: Sequence[Position | str], userdicts: Sequence[UserDict],
                   abbreviated: Sequence[bool]) -> list[Fit]:
    """Every place a word of ``userdicts`` fits."""
    fits: list[Fit] = []
    if not any(userdicts):
        return fits
    candidates = [set(p.chars) if isinstance(p, Position) else set() for p in positions]
    for userdict in userdicts:
        for start, here in enumerate(candidates):
            for first in here & userdict.by_first.keys():
                # a snapshot: a learning thread may add words while this one converts
                for word, weight in tuple(userdict.by_first[first].items()):
                    span = range(start, start + len(word))
                    if span.stop <= len(positions) and all(
                            c in candidates[i] for c, i in zip(word, span, strict=True)):
                        cost = ABBREVIATED_COST * sum(abbreviated[i] for i in span)
                        fits.append(Fit(weight - cost, start, word, userdict.whole_words))
    return fits
