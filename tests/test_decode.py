"""Tests for pinzi.decode: the beam search against exhaustive enumeration (with and without the
n-gram model and the user dictionary), user words beyond the expanded candidates, pass-through
text, and the user dictionary file format."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pinzi.decode import DEFAULT_WORD_WEIGHT, Position, UserDict, beam_search
from pinzi.ngram import CharNgram

ALPHABET = "甲乙丙丁戊己庚辛"  # char index i of the toy layout is ALPHABET[i]
OFFSET = 5  # the char section starts after the five special tokens


def position(chars: str, scores: list[float]) -> Position:
    """A Position over ALPHABET characters; `scores` must be best first."""
    assert list(scores) == sorted(scores, reverse=True)
    return Position(list(chars), np.array([ALPHABET.index(c) for c in chars], dtype=np.int64),
                    np.array(scores, dtype=np.float64))


def random_positions(rng: np.random.Generator, n_positions: tuple[int, int],
                     n_candidates: tuple[int, int]) -> list[Position]:
    positions = []
    for _ in range(rng.integers(n_positions[0], n_positions[1] + 1)):
        size = int(rng.integers(n_candidates[0], n_candidates[1] + 1))
        ids = rng.choice(len(ALPHABET), size=size, replace=False)
        scores = np.sort(np.log(rng.dirichlet(np.ones(size))))[::-1].copy()
        positions.append(Position([ALPHABET[i] for i in ids], ids.astype(np.int64), scores))
    return positions


def ngram(lines: list[str], min_count: int = 1) -> CharNgram:
    """A CharNgram over ALPHABET counted from lines of ALPHABET characters."""
    ids = np.array([ALPHABET.index(c) + OFFSET for line in lines for c in line])
    offsets = np.cumsum([0] + [len(line) for line in lines])
    return CharNgram.build(ids, offsets, char_offset=OFFSET, n_chars=len(ALPHABET),
                           min_count=min_count)


def random_ngram(rng: np.random.Generator) -> CharNgram:
    # A skewed, sticky corpus, so that the trigram, bigram and unigram terms all differ.
    lines = []
    for _ in range(40):
        line = [int(rng.integers(0, 3))]
        for _ in range(int(rng.integers(2, 9))):
            line.append((line[-1] + int(rng.choice([1, 1, 1, 2, 5]))) % len(ALPHABET))
        lines.append("".join(ALPHABET[i] for i in line))
    return ngram(lines)


def exhaustive(positions: list[Position | str], lm: CharNgram | None = None,
               lm_weight: float = 0.0, userdict: UserDict | None = None
               ) -> list[tuple[str, float]]:
    """Every text the positions can spell with its score, best first: the oracle."""
    decided = [p for p in positions if isinstance(p, Position)]
    combos = np.array(list(itertools.product(*(range(len(p.chars)) for p in decided))),
                      dtype=np.int64).reshape(-1, len(decided))
    texts = [""] * len(combos)
    scores = np.zeros(len(combos))
    bonus = np.zeros(len(combos))
    bos = lm.bos if lm is not None else -1
    before2 = before1 = np.full(len(combos), bos, dtype=np.int64)
    column = 0
    for p in positions:
        if isinstance(p, str):
            texts = [text + p for text in texts]
            before2 = before1 = np.full(len(combos), bos, dtype=np.int64)
            continue
        pick = combos[:, column]
        column += 1
        scores = scores + p.scores[pick]
        if lm is not None:
            scores = scores + lm_weight * lm.score(before2, before1, p.ids[pick])
        before2, before1 = before1, p.ids[pick]
        texts = [text + p.chars[i] for text, i in zip(texts, pick.tolist(), strict=True)]
        if userdict is not None:  # every user word the text ends with, here
            bonus += [sum(w for word, w in userdict.words.items() if text.endswith(word))
                      for text in texts]
    total = scores + bonus
    order = sorted(range(len(texts)), key=lambda i: -total[i])
    return [(texts[i], float(total[i])) for i in order]


def assert_same(found: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [text for text, _ in found] == [text for text, _ in expected]
    assert [score for _, score in found] == pytest.approx([s for _, s in expected], abs=1e-6)


# ---- exactness ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_without_lm_the_k_best_are_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positions = random_positions(rng, (3, 5), (2, 6))
    everything = exhaustive(positions)
    assert len({text for text, _ in everything}) == len(everything)
    for k in (1, 2, 3, 5):
        # beam = expand = k is enough when the scores factorise
        found = beam_search(positions, beam=k, expand=k, k=k)
        assert_same(found, everything[:k])
    # the score is the sum of the chosen candidates' log-probabilities
    best_text, best_score = beam_search(positions, k=1)[0]
    by_hand = sum(p.scores[list(p.chars).index(c)] for p, c in zip(positions, best_text,
                                                                   strict=True))
    assert best_score == pytest.approx(by_hand)
    assert best_text == "".join(p.chars[0] for p in positions)


@pytest.mark.parametrize("seed", range(8))
def test_with_lm_a_wide_beam_is_exhaustive_search(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    lm = random_ngram(rng)
    positions = random_positions(rng, (3, 4), (2, 5))
    lm_weight = float(rng.uniform(0.5, 2.0))
    wide = int(np.prod([len(p.chars) for p in positions]))
    everything = exhaustive(positions, lm, lm_weight)
    found = beam_search(positions, beam=wide, expand=5, k=wide, lm=lm, lm_weight=lm_weight)
    assert_same(found, everything)
    # the n-gram term is really in there: the model-only ranking is a different one
    assert exhaustive(positions) != everything


def test_with_lm_scores_are_model_plus_weighted_lm() -> None:
    lm = ngram(["甲乙丙", "甲乙丙丁", "乙丙丁", "甲乙丁"])
    positions = [position("甲乙", [-0.5, -1.0]), position("乙丙", [-0.2, -0.4]),
                 position("丙丁", [-0.3, -0.6])]
    text, score = beam_search(positions, beam=8, lm=lm, lm_weight=1.5)[0]
    bos = lm.bos
    ids = [ALPHABET.index(c) for c in text]
    model = sum(p.scores[list(p.chars).index(c)] for p, c in zip(positions, text, strict=True))
    lm_part = (lm.score(bos, bos, ids[0]) + lm.score(bos, ids[0], ids[1])
               + lm.score(ids[0], ids[1], ids[2]))
    assert score == pytest.approx(model + 1.5 * float(lm_part), abs=1e-6)


# ---- user words ----------------------------------------------------------------------------

FOUR = "甲乙丙丁"
FOUR_SCORES = [-0.1, -1.0, -2.0, -3.0]


@pytest.mark.parametrize("beam", [1, 4])
def test_user_word_beyond_the_expanded_candidates_wins(beam: int) -> None:
    positions = [position(FOUR, FOUR_SCORES), position(FOUR, FOUR_SCORES)]
    # 丁 is 4th at position 0 and 丙 3rd at position 1: neither is among the top 2
    everything = beam_search(positions, beam=16, expand=2, k=16)
    assert all("丁" not in text and "丙" not in text for text, _ in everything)
    assert beam_search(positions, beam=beam, expand=2)[0][0] == "甲甲"

    userdict = UserDict({"丁丙": 10.0})
    text, score = beam_search(positions, beam=beam, expand=2, userdict=userdict)[0]
    assert text == "丁丙"
    assert score == pytest.approx(-3.0 - 2.0 + 10.0)
    # a bonus too small to pay for the worse characters leaves the model's choice
    small = UserDict({"丁丙": 1.0})
    assert beam_search(positions, beam=beam, expand=2, userdict=small)[0][0] == "甲甲"


def test_user_word_spelled_over_three_positions_survives_a_narrow_beam() -> None:
    positions = [position(FOUR, FOUR_SCORES)] * 3
    userdict = UserDict({"丁丙丁": 20.0})
    # beam 2, expand 1: only 甲 is ever expanded; 丁丙 is kept beyond the beam while spelled
    text, score = beam_search(positions, beam=2, expand=1, userdict=userdict)[0]
    assert text == "丁丙丁"
    assert score == pytest.approx(-3.0 - 2.0 - 3.0 + 20.0)


def test_user_word_bonus_only_when_the_hypothesis_ends_with_the_whole_word() -> None:
    three = "甲乙丙"
    positions = [position(three, [-0.5, -0.7, -1.1])] * 3
    userdict = UserDict({"乙丙": 2.0, "丙": 0.25})
    found = dict(beam_search(positions, beam=27, expand=3, k=27, userdict=userdict))
    assert len(found) == 27
    assert found["甲乙甲"] == pytest.approx(-0.5 - 0.7 - 0.5)  # 乙 alone: no bonus
    assert found["甲甲乙"] == pytest.approx(-0.5 - 0.5 - 0.7)  # ends with the word's start
    assert found["甲乙丙"] == pytest.approx(-0.5 - 0.7 - 1.1 + 2.0 + 0.25)
    assert found["乙丙甲"] == pytest.approx(-0.7 - 1.1 - 0.5 + 2.0 + 0.25)  # earned, then kept
    assert found["丙甲甲"] == pytest.approx(-1.1 - 0.5 - 0.5 + 0.25)


@pytest.mark.parametrize("seed", range(6))
def test_with_userdict_a_wide_beam_is_exhaustive_search(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    positions = random_positions(rng, (3, 4), (2, 5))
    lm = random_ngram(rng)
    words = {}
    for _ in range(3):  # words spelled from the positions' own candidates
        start = int(rng.integers(0, len(positions) - 1))
        length = int(rng.integers(1, 3))
        word = "".join(str(rng.choice(list(p.chars))) for p in positions[start:start + length])
        words[word] = float(rng.uniform(0.5, 3.0))
    userdict = UserDict(words)
    wide = int(np.prod([len(p.chars) for p in positions]))
    found = beam_search(positions, beam=wide, expand=5, k=wide, userdict=userdict, lm=lm,
                        lm_weight=0.7)
    assert_same(found, exhaustive(positions, lm, 0.7, userdict))


def test_userdict_lookups() -> None:
    userdict = UserDict({"北京": 1.0})
    userdict.add("北京大学", 2.0)
    assert userdict.continuations("我") == {"北"}  # the empty suffix starts any word
    assert userdict.continuations("我北") == {"京", "北"}
    assert userdict.continuations("北京大") == {"学", "北"}
    assert userdict.in_progress("我北京大")
    assert not userdict.in_progress("我北京大学")
    assert userdict.bonus("去北京") == 1.0
    assert userdict.bonus("北京大学") == 2.0
    assert userdict.bonus("北京大") == 0.0
    assert not UserDict() and userdict


# ---- UserDict.load -------------------------------------------------------------------------


def test_userdict_load_parses_weights_comments_and_blank_lines(tmp_path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# my words\n音航 5.0\n\n北京\n   # indented comment\n天安门\t-1.5\n"
                    "  \n西安  0\n", encoding="utf-8")
    userdict = UserDict.load(path)
    assert userdict.words == {"音航": 5.0, "北京": DEFAULT_WORD_WEIGHT, "天安门": -1.5,
                              "西安": 0.0}
    assert userdict.bonus("我去天安门") == -1.5  # loaded words are indexed too
    assert userdict.continuations("") == {"音", "北", "天", "西"}


@pytest.mark.parametrize(("lines", "message"), [
    ("北京 5\n音航 5 6\n", r"words\.txt:2: expected 'word \[weight\]'"),
    ("北京\n\n# c\n音航 lots\n", r"words\.txt:4: weight 'lots' is not a number"),
    ("音航 inf\n", r"words\.txt:1: weight must be finite"),
    ("北京\n音航 nan\n", r"words\.txt:2: weight must be finite"),
    ("北京\n北京 -inf\n", r"words\.txt:2: weight must be finite"),
])
def test_userdict_load_rejects_bad_lines_naming_them(tmp_path, lines: str, message: str) -> None:
    path = tmp_path / "words.txt"
    path.write_text(lines, encoding="utf-8")
    with pytest.raises(Exception, match=message):
        UserDict.load(path)


# ---- pass-through text and k -------------------------------------------------------------


def test_pass_through_text_resets_the_lm_context() -> None:
    # 乙 always follows 甲; lines start with 丙
    lm = ngram(["甲乙", "丙甲乙", "丙丁", "丙甲乙丁", "丙乙"])
    bos, jia, yi, bing = lm.bos, 0, 1, 2
    assert lm.score(bos, jia, yi) > lm.score(bos, jia, bing)
    assert lm.score(bos, bos, bing) > lm.score(bos, bos, yi)
    first, second = position("甲", [0.0]), position("乙丙", [-1.0, -1.0])
    assert beam_search([first, second], lm=lm, lm_weight=1.0)[0][0] == "甲乙"
    text, score = beam_search([first, "-", second], lm=lm, lm_weight=1.0)[0]
    assert text == "甲-丙"
    expected = -1.0 + float(lm.score(bos, bos, jia)) + float(lm.score(bos, bos, bing))
    assert score == pytest.approx(expected, abs=1e-6)
    # pass-through text at either end is copied as is and scores nothing
    found = beam_search(["ok ", first, "-", second, "!"], lm=lm, lm_weight=1.0)
    assert found == [("ok 甲-丙!", pytest.approx(expected, abs=1e-6))]


def test_k_larger_than_the_possible_texts_returns_all_of_them() -> None:
    positions = [position("甲乙", [-0.1, -0.9]), "x", position("丙丁戊", [-0.2, -0.3, -2.0])]
    found = beam_search(positions, k=10)
    assert_same(found, exhaustive(positions))
    assert len(found) == 6
    assert {text for text, _ in found} == {a + "x" + b for a in "甲乙" for b in "丙丁戊"}
    assert beam_search(["abc", "d"], k=3) == [("abcd", 0.0)]
    assert beam_search([], k=3) == [("", 0.0)]


def test_kept_words_survive_the_beam_without_a_bonus_and_start_where_allowed() -> None:
    positions = [position(FOUR, FOUR_SCORES)] * 3
    keep = UserDict({"丁丙丁": 0.0})
    # beam 2, expand 1: without help only 甲 is ever expanded.
    assert beam_search(positions, beam=2, expand=1, k=4)[0][0] == "甲甲甲"
    found = dict(beam_search(positions, beam=2, expand=1, k=8, keep=keep,
                             starts=[{"丁"}, set(), set()]))
    assert found["丁丙丁"] == pytest.approx(-3.0 - 2.0 - 3.0)  # kept alive, no bonus
    # A kept word may start only where `starts` allows it: here nowhere.
    nowhere = dict(beam_search(positions, beam=2, expand=1, k=8, keep=keep,
                               starts=[set(), set(), set()]))
    assert "丁丙丁" not in nowhere
