"""Tests for pinzi.decode: the beam search against exhaustive enumeration (with and without the
n-gram model), kept words beyond the expanded candidates, pass-through text, user words put in
place, and the user dictionary file format."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pinzi.decode import (
    ABBREVIATED_COST,
    DEFAULT_WORD_WEIGHT,
    Position,
    UserDict,
    beam_search,
    place_user_words,
)
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
               lm_weight: float = 0.0) -> list[tuple[str, float]]:
    """Every text the positions can spell with its score, best first: the oracle."""
    decided = [p for p in positions if isinstance(p, Position)]
    combos = np.array(list(itertools.product(*(range(len(p.chars)) for p in decided))),
                      dtype=np.int64).reshape(-1, len(decided))
    texts = [""] * len(combos)
    scores = np.zeros(len(combos))
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
    order = sorted(range(len(texts)), key=lambda i: -scores[i])
    return [(texts[i], float(scores[i])) for i in order]


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


def test_a_user_word_wins_by_its_weight_over_what_it_replaces() -> None:
    positions = [position(FOUR, FOUR_SCORES), position(FOUR, FOUR_SCORES)]
    found = beam_search(positions, beam=4, expand=2, k=4)
    assert all("丁" not in text and "丙" not in text for text, _ in found)
    best_text, best_score = found[0]
    assert best_text == "甲甲"

    placed = place_user_words(found, positions, [UserDict({"丁丙": 0.5})], [False, False])
    assert placed[0] == ("丁丙", pytest.approx(best_score + 0.5))  # however bad its characters
    assert dict(placed)["甲甲"] == pytest.approx(best_score)  # the replaced text stays, below
    # A negative weight lists the word below the conversion it replaces.
    below = place_user_words(found, positions, [UserDict({"丁丙": -0.5})], [False, False])
    assert below[0][0] == "甲甲"
    assert dict(below)["丁丙"] == pytest.approx(best_score - 0.5)


def test_a_user_word_typed_by_initials_pays_for_each_abbreviated_piece() -> None:
    positions = [position(FOUR, FOUR_SCORES), position(FOUR, FOUR_SCORES)]
    found = beam_search(positions, beam=4, expand=2, k=4)
    best_score = found[0][1]
    weight = 5.0
    placed = dict(place_user_words(found, positions, [UserDict({"丁丙": weight})],
                                   [True, False]))
    assert placed["丁丙"] == pytest.approx(best_score + weight - ABBREVIATED_COST)
    both = place_user_words(found, positions, [UserDict({"丁丙": weight})], [True, True])
    assert both[0][0] == "甲甲"
    assert dict(both)["丁丙"] == pytest.approx(best_score + weight - 2 * ABBREVIATED_COST)


def test_user_words_fit_only_runs_of_positions_that_read_them() -> None:
    positions = [position("甲乙", [-0.1, -1.0]), "-", position("丙丁", [-0.1, -1.0]),
                 position("甲丁", [-0.1, -1.0])]
    found = beam_search(positions, k=2)
    assert found[0][0] == "甲-丙甲"
    userdict = UserDict({"乙丙": 9.0, "丁丁": 2.0, "戊": 9.0})
    # 乙丙 would span the pass-through text, 戊 is nobody's candidate: neither fits.
    placed = place_user_words(found, positions, [userdict], [False] * 4)
    assert placed[0] == ("甲-丁丁", pytest.approx(found[0][1] + 2.0))
    assert all("戊" not in text and "乙丙" not in text for text, _ in placed)


def test_several_user_words_go_in_place_together_without_overlapping() -> None:
    positions = [position(FOUR, FOUR_SCORES)] * 4
    found = beam_search(positions, k=1)
    assert found[0][0] == "甲甲甲甲"
    userdict = UserDict({"丁丙": 3.0, "乙丁乙": 2.0})
    placed = place_user_words(found, positions, [userdict], [False] * 4)
    # 丁丙 (the best margin) wherever it fits without overlapping itself; 乙丁乙 overlaps it.
    assert placed[0] == ("丁丙丁丙", pytest.approx(found[0][1] + 3.0 + 3.0))
    assert dict(placed)["丁丙甲甲"] == pytest.approx(found[0][1] + 3.0)
    assert dict(placed)["甲乙丁乙"] == pytest.approx(found[0][1] + 2.0)
    assert place_user_words(found, positions, [UserDict()], [False] * 4) == found


def test_userdict_add_and_truth() -> None:
    userdict = UserDict({"北京": 1.0})
    userdict.add("北京大学", 2.0)
    userdict.add("天安门")
    assert userdict.words == {"北京": 1.0, "北京大学": 2.0, "天安门": DEFAULT_WORD_WEIGHT}
    assert not UserDict() and userdict


# ---- UserDict.load -------------------------------------------------------------------------


def test_userdict_load_parses_weights_comments_and_blank_lines(tmp_path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# my words\n音航 5.0\n\n北京\n   # indented comment\n天安门\t-1.5\n"
                    "  \n西安  0\n", encoding="utf-8")
    userdict = UserDict.load(path)
    assert userdict.words == {"音航": 5.0, "北京": DEFAULT_WORD_WEIGHT, "天安门": -1.5,
                              "西安": 0.0}


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


def test_kept_words_survive_the_beam_without_a_bonus_from_where_they_start() -> None:
    positions = [position(FOUR, FOUR_SCORES)] * 4
    # beam 2, expand 1: without help only 甲 is ever expanded.
    assert beam_search(positions, beam=2, expand=1, k=4)[0][0] == "甲甲甲甲"
    found = dict(beam_search(positions, beam=2, expand=1, k=8, keep=[(0, "丁丙丁")]))
    assert found["丁丙丁甲"] == pytest.approx(-3.0 - 2.0 - 3.0 - 0.1)  # kept alive, no bonus
    # A kept word is spelled from its own start only.
    later = dict(beam_search(positions, beam=2, expand=1, k=8, keep=[(1, "丁丙丁")]))
    assert "甲丁丙丁" in later and not any(text.startswith("丁") for text in later)
    # Two words kept across the same positions, one starting inside the other: with expand 1,
    # only the kept words reach past 甲 (k is wide, so nothing spelled is lost to the beam).
    both = dict(beam_search(positions, beam=1, expand=1, k=100,
                            keep=[(0, "丙丙丙丙"), (2, "丁丁")]))
    assert {"丙丙丙丙", "甲甲丁丁"} <= set(both)
    for text in both:  # 丙 only as the start of 丙丙丙丙, 丁 only as that of 丁丁 at 2
        for i, char in enumerate(text):
            assert char == "甲" or (char == "丙" and text[:i + 1] == "丙丙丙丙"[:i + 1]) or (
                char == "丁" and i >= 2 and text[2:i + 1] == "丁丁"[:i - 1]), text


@pytest.mark.parametrize("seed", range(6))
def test_kept_words_never_lose_the_exhaustive_best_with_a_wide_beam(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    positions = random_positions(rng, (3, 4), (2, 5))
    lm = random_ngram(rng)
    keep = []
    for _ in range(3):  # words spelled from the positions' own candidates
        start = int(rng.integers(0, len(positions) - 1))
        length = int(rng.integers(2, len(positions) - start + 1))
        keep.append((start, "".join(str(rng.choice(list(p.chars)))
                                    for p in positions[start:start + length])))
    wide = int(np.prod([len(p.chars) for p in positions]))
    found = beam_search(positions, beam=wide, expand=5, k=wide, lm=lm, lm_weight=0.7, keep=keep)
    assert_same(found, exhaustive(positions, lm, 0.7))
    # Expanding only the best candidate, every kept word is still spelled where it starts.
    narrow = beam_search(positions, beam=1, expand=1, k=wide, keep=keep, lm=lm, lm_weight=0.7)
    for start, word in keep:
        assert any(text[start:start + len(word)] == word for text, _ in narrow)


def test_whole_word_user_words_replace_only_whole_words() -> None:
    positions = [position(FOUR, FOUR_SCORES)] * 4
    found = beam_search(positions, k=1)
    assert found[0][0] == "甲甲甲甲"
    learned = UserDict({"乙丙": 3.0}, whole_words=True)

    def placed(split) -> list[str]:
        return [text for text, _ in
                place_user_words(found, positions, [learned], [False] * 4, split)]

    # One word of four: 乙丙 would cut it, so it goes nowhere.
    assert placed(lambda run: [run]) == ["甲甲甲甲"]
    # 甲|甲甲|甲: only the middle word is replaced.
    assert placed(lambda run: [run[0], run[1:3], run[3]])[0] == "甲乙丙甲"
    # Without a word model, any run it fits: wherever it fits without overlapping itself.
    assert placed(None)[0] == "乙丙乙丙"
