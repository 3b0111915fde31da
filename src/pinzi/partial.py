"""Candidates that cover the start of the buffer, and the order of a page of candidates.

An input method does not only offer conversions of the whole buffer: after the best one it
lists the words and characters that the buffer starts with (``woaibeijing``: 我爱北京, then
我爱, then 我, 窝, 握 …), so that a user whose sentence came out wrong commits the right start
and goes on with the rest. Each candidate says how many characters of the typed buffer it
covers (:attr:`Candidate.consumed`): the client commits it and keeps the rest.

A page lists, in this order: the best whole conversion and the whole conversions scoring
within ``whole_margin`` of it; the candidates at the start of the buffer, the longest first
and each length best first (listed words whose reading fits the typed pieces, the user's
words, and at one piece every character); then the remaining whole conversions. A prefix
candidate's score is that of what it covers, from the same model scores, character n-gram
and word model as whole conversions.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Sequence
from typing import NamedTuple

import numpy as np

from pinzi.decode import Position, UserDict, user_word_fits
from pinzi.ngram import CharNgram
from pinzi.pinyin import Piece, normalize_input
from pinzi.shuangpin import to_pinyin
from pinzi.words import WordModel

MAX_PREFIX_PIECES = 8  # the longest start of the buffer offered on its own (longer: rare words)
PREFIX_WORDS = 16  # listed words per length at the start of the buffer
SINGLE_CHARS = 256  # characters offered for the first piece (a syllable has at most ~150)


class Candidate(NamedTuple):
    """One conversion on offer: its hanzi, its log-score (higher is better) and how many
    characters of the typed buffer it covers (all of them for a whole conversion)."""

    hanzi: str
    score: float
    consumed: int


class PrefixScorer:
    """Scores texts written over the first positions of a reading, as the search scores
    whole conversions: the model's log-probabilities of their characters, ``lm_weight`` times
    the character n-gram's, ``word_weight`` times the word model's."""

    def __init__(self, lm: CharNgram | None, lm_weight: float, words: WordModel | None,
                 word_weight: float):
        self.lm, self.lm_weight = lm, lm_weight
        self.words, self.word_weight = words, word_weight

    def prefixes(self, reading: Sequence[Piece], positions: Sequence[Position | str],
                 userdicts: Sequence[UserDict], best: str,
                 history: tuple[int, int] | None = None) -> list[tuple[int, str, float]]:
        """``(pieces covered, hanzi, score)`` of the candidates at the start of the reading:
        the starts of its ``best`` conversion that end a word; for each length from
        :data:`MAX_PREFIX_PIECES` down, the listed words and the user's words that fit; the
        first piece's characters. All but the characters cover less than the reading."""
        lead = 0
        while lead < len(positions) and isinstance(positions[lead], Position):
            lead += 1
        if lead == 0:
            return []
        firsts: list[Position] = list(positions[:lead])  # type: ignore[arg-type]
        shorter = min(lead, len(positions) - 1)
        longest = min(shorter, MAX_PREFIX_PIECES)
        texts: dict[str, float] = {}  # text -> margin of a user word (0 for the rest)
        if self.words is not None:
            ends = np.cumsum([len(w) for w in self.words.split(best[:lead])]).tolist()
            texts.update((best[:end], 0.0) for end in ends if end <= shorter)
            if longest > 1:
                allowed = [frozenset(p.syllables) for p in reading[:longest]]
                texts.update((word, 0.0) for start, word
                             in self.words.fitting(allowed, PREFIX_WORDS) if start == 0)
        texts.update((char, 0.0) for char in firsts[0].chars[:SINGLE_CHARS])
        # A listed word may spell a reading the lexicon does not give its character.
        spelled = [set(p.chars) for p in firsts[:max(map(len, texts))]]
        texts = {text: margin for text, margin in texts.items()
                 if all(c in spelled[i] for i, c in enumerate(text))}
        abbreviated = [p.kind in ("initial", "prefix") for p in reading[:longest]]
        for fit in user_word_fits(firsts[:longest], userdicts, abbreviated):
            if fit.start == 0:
                texts[fit.word] = max(fit.margin, texts.get(fit.word, fit.margin))
        scores = self.score(list(texts), firsts, history)
        return [(len(text), text, score + texts[text])
                for text, score in zip(texts, scores.tolist(), strict=True)]

    def score(self, texts: list[str], positions: Sequence[Position],
              history: tuple[int, int] | None = None) -> np.ndarray:
        """The score of each text written over ``positions`` from the first (each at most as
        long as they are many, and spelled from their candidates); ``history``: the n-gram's
        two characters before, as for the search."""
        if not texts:
            return np.zeros(0)
        longest = max(map(len, texts))
        lookup = [dict(zip(p.chars, zip(p.scores.tolist(), p.ids.tolist(), strict=True),
                           strict=True)) for p in positions[:longest]]
        model, ids = np.zeros(len(texts)), np.full((len(texts), longest + 2), -1, np.int64)
        for row, text in enumerate(texts):
            for i, char in enumerate(text):
                score, ids[row, i + 2] = lookup[i][char]
                model[row] += score
        total = model
        if self.lm is not None and self.lm_weight > 0:
            ids[:, :2] = history or (self.lm.bos, self.lm.bos)
            spelled = ids[:, 2:] >= 0
            steps = self.lm.score(ids[:, :-2], ids[:, 1:-1], np.maximum(ids[:, 2:], 0))
            total = total + self.lm_weight * (steps * spelled).sum(axis=1)
        if self.words is not None and self.word_weight > 0:
            total = total + self.word_weight * np.array([self.words.score(t) for t in texts])
        return total


def typed_lengths(typed: str, scheme: str | None, lengths: Iterable[int]) -> dict[int, int]:
    """For each length of the parser's text (pinyin as :func:`~pinzi.pinyin.normalize_input`
    writes it: no separators, tones or shuangpin keys), the characters of ``typed`` that
    cover it, with the separators and tone digits that follow."""
    covered: dict[int, int] = {}
    end = 0
    for length in sorted(set(lengths)):
        while end < len(typed) and _parsed_length(typed[:end], scheme) < length:
            end += 1
        while end < len(typed) and _parsed_length(typed[:end + 1], scheme) <= length:
            end += 1
        covered[length] = end
    return covered


def _parsed_length(typed: str, scheme: str | None) -> int:
    return len(normalize_input(to_pinyin(typed, scheme)))


def page_order(whole: list[Candidate], prefixes: list[Candidate], whole_margin: float,
               taught: Collection[str] = (), words: Container[str] = ()) -> list[Candidate]:
    """Whole conversions (best first) and prefix candidates in the order a page lists them:
    the best whole one; those holding a user's word (``taught``: listed whatever they score);
    the others within ``whole_margin`` of the best, and the others that are one listed word
    (``words``: 国籍 for ``guoji``, whatever the margin); the prefix ones (the most consumed
    first, then best first); the other whole ones. A prefix candidate that covers all of the
    buffer (a character of a one-syllable buffer) joins the whole ones."""
    if not whole:
        return []
    everything = whole[0].consumed
    seen = {(c.hanzi, c.consumed) for c in whole}
    ordered = []
    for candidate in sorted(prefixes, key=lambda c: (-c.consumed, -c.score, c.hanzi)):
        if (candidate.hanzi, candidate.consumed) not in seen:
            seen.add((candidate.hanzi, candidate.consumed))
            ordered.append(candidate)
    covering = [c for c in ordered if c.consumed == everything]
    rest = sorted(whole[1:] + covering, key=lambda c: (-c.score, c.hanzi))
    floor = whole[0].score - whole_margin
    first = whole[:1] + [c for c in rest if c.hanzi in taught]
    first += [c for c in rest if c.hanzi not in taught
              and (c.score >= floor or (len(c.hanzi) > 1 and c.hanzi in words))]
    listed = {c.hanzi for c in first}
    return first + ordered[len(covering):] + [c for c in rest if c.hanzi not in listed]
