"""Next-word prediction (联想): the words likely to follow the committed text.

The network converts pinyin and has none to read here, so prediction comes from the two
models beside it in the folder: the character n-gram proposes the characters likely to come
next and scores each continuation character by character; the word list supplies the words
those characters start and tells words from fragments. A candidate's score is

    log P_ngram(its characters | the two before) + length_bonus * (characters - 1)
        + word_weight * log P_words(it)

where ``length_bonus`` pays for the boundary the n-gram cannot see (a chain's probability only
falls as it grows, so without it the single characters always win) and the word model's
unigram log-probability prefers words to strings that are none. What the user has committed
comes first: where a learned phrase goes on from the context's last characters, its next word
leads the predictions (我想去北京看看 learned, 看看 after …去北京). Both weights are
:class:`~pinzi.decoding_config.DecodingConfig` fields, tuned on validation text by
``bench/predict.py``, which also measures the n-gram alone (its likeliest next characters).
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import cached_property
from typing import NamedTuple

import numpy as np

from pinzi.decode import UserDict
from pinzi.ngram import CharNgram
from pinzi.text import is_hanzi
from pinzi.words import WordModel

NEXT_CHARS = 48  # the likeliest next characters whose words are considered
WORDS_PER_CHAR = 12  # listed words considered per next character, the most probable first
LONGEST_WORD = 4  # characters of a predicted word (longer words are mostly names)
LONGEST_TAIL = 8  # characters of the context a learned phrase is matched on


class Prediction(NamedTuple):
    """A word likely to follow the committed text, and its log-score (higher is better)."""

    hanzi: str
    score: float


class Predictor:
    """Predicts next words from a character n-gram and (optionally) a word list."""

    def __init__(self, lm: CharNgram, chars: tuple[str, ...], words: WordModel | None = None,
                 *, length_bonus: float = 0.0, word_weight: float = 0.0):
        """``chars``: the characters the n-gram numbers (the tokenizer's char section)."""
        self.lm, self.chars, self.words = lm, chars, words
        self.length_bonus, self.word_weight = length_bonus, word_weight
        self._ids = {char: i for i, char in enumerate(chars)}
        self._hanzi = np.array([is_hanzi(c) for c in chars], dtype=bool)

    def predict(self, context: str, k: int = 5,
                learned: UserDict | None = None) -> list[Prediction]:
        """The ``k`` likeliest next words after ``context`` (hanzi committed so far; blank:
        the start of a text), best first. ``learned``: phrases the user has committed
        (:class:`~pinzi.learning.LearnedWords`); where one goes on from the context's last
        characters, the word that follows comes first (:meth:`continuations`)."""
        found = self.continuations(context, learned) if learned else []
        return (found + [p for p in self._from_models(context, k + len(found))
                         if p.hanzi not in {f.hanzi for f in found}])[:k]

    def continuations(self, context: str, learned: UserDict) -> list[Prediction]:
        """The words that follow the context's last 2 to :data:`LONGEST_TAIL` characters in
        the learned phrases: the longest such tail first, then the most picked phrase; scored
        0 (certain). A linear scan: prediction runs once a commit, not once a keystroke."""
        found: dict[str, tuple[int, float]] = {}  # word -> (tail, phrase's weight)
        last_two = context[-2:]
        # a snapshot: a learning thread may add words while this one predicts
        for phrase, weight in tuple(learned.words.items()):
            if len(last_two) < 2 or last_two not in phrase:
                continue
            for size in range(min(len(context), LONGEST_TAIL), 1, -1):
                at = phrase.find(context[-size:])
                if at >= 0 and at + size < len(phrase):
                    rest = phrase[at + size:]
                    word = self.words.split(rest)[0] if self.words is not None else rest[0]
                    if (size, weight) > found.get(word, (0, -math.inf)):
                        found[word] = (size, weight)
                    break
        ranked = sorted(found.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
        return [Prediction(word, 0.0) for word, _ in ranked]

    def _from_models(self, context: str, k: int) -> list[Prediction]:
        """The ``k`` likeliest next words by the n-gram and the word list."""
        before = list(self.lm.history([self._ids.get(c, -1) for c in context[-2:]]))
        every = np.arange(len(self.chars))
        first = self.lm.score(np.full(len(every), before[0]), np.full(len(every), before[1]),
                              every)
        first[~self._hanzi] = -np.inf
        top = np.argsort(-first, kind="stable")[:NEXT_CHARS]
        texts = [self.chars[i] for i in top.tolist() if np.isfinite(first[i])]
        for char in list(texts):
            texts += self._words_by_first.get(char, [])
        scores = self.score(before, texts)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Prediction(texts[i], float(scores[i])) for i in order.tolist()]

    def score(self, before: list[int], texts: list[str]) -> np.ndarray:
        """Each text's score as the next word after the two characters ``before`` (ids)."""
        if not texts:
            return np.zeros(0)
        longest = max(map(len, texts))
        ids = np.full((len(texts), longest + 2), -1, dtype=np.int64)
        ids[:, :2] = before
        for row, text in enumerate(texts):
            ids[row, 2:2 + len(text)] = [self._ids[c] for c in text]
        spelled = ids[:, 2:] >= 0
        known = np.maximum(ids, 0)  # past a text's end: any id, its steps are not counted
        chain = (self.lm.score(known[:, :-2], known[:, 1:-1], known[:, 2:])
                 * spelled).sum(axis=1)
        lengths = spelled.sum(axis=1)
        total = chain + self.length_bonus * (lengths - 1)
        if self.words is not None and self.word_weight > 0:
            total += self.word_weight * np.array([self.words.score(t) for t in texts])
        return total

    @cached_property
    def _words_by_first(self) -> dict[str, list[str]]:
        """Listed words of 2 to LONGEST_WORD characters the n-gram knows, by first character,
        the most probable first (the order of the list)."""
        by_first: dict[str, list[str]] = defaultdict(list)
        if self.words is None:
            return by_first
        for word in self.words.logprobs:
            if 1 < len(word) <= LONGEST_WORD and len(by_first[word[0]]) < WORDS_PER_CHAR \
                    and all(c in self._ids for c in word):
                by_first[word[0]].append(word)
        return by_first
