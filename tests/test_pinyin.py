"""Tests for pinzi.pinyin: every example documented in docs/pinyin.md, the syllable
inventory against pypinyin, parser invariants (hypothesis), long inputs, and annotation
alignment."""

from __future__ import annotations

import doctest
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinzi import pinyin, readings
from pinzi.pinyin import (
    FUZZY_PAIRS,
    INITIALS,
    SYLLABLES,
    Piece,
    fuzzy_variants,
    initial_of,
    normalize_input,
    normalize_syllable,
    parse,
    scored_segmentations,
    segmentations,
    to_chinese_punct,
)
from pinzi.readings import annotate

DOC = Path(__file__).resolve().parents[1] / "docs" / "pinyin.md"
SPECIAL_INPUTS = {"(empty)": "", "(blank)": " \t\u3000 "}


def doc_table(first_header: str) -> list[list[str]]:
    """Cells of the docs/pinyin.md table whose first column is headed `first_header`."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(next(x for x in lines if x.startswith(f"| {first_header} |")))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    assert rows, first_header
    return rows


def code(cell: str) -> str:
    """The text inside a cell's backticks, or the text a placeholder such as (empty) means."""
    if cell in SPECIAL_INPUTS:
        return SPECIAL_INPUTS[cell]
    match = re.fullmatch(r"`(.*)`", cell)
    assert match, f"expected `code` in table cell {cell!r}"
    return match.group(1)


def piece_matches(piece: Piece, note: str) -> bool:
    """Does a piece match the docs notation: xian, lue=lve, b*, zhon+, {iPhone}, {,→，}?"""
    if note.startswith("{"):
        text, _, output = note[1:-1].partition("→")
        return (piece.kind, piece.text, piece.output) == ("other", text, output or text)
    text, mark, syllables = re.fullmatch(r"([^*+=]+)([*+]?)(?:=(.+))?", note).groups()
    kind = {"": "syllable", "*": "initial", "+": "prefix"}[mark]
    if (piece.kind, piece.text) != (kind, text):
        return False
    if syllables is not None:
        return piece.syllables == tuple(syllables.split("|"))
    return kind != "syllable" or piece.syllables == (text,)


def reading_matches(reading: list[Piece], notation: str) -> bool:
    notes = [] if notation == "(nothing)" else notation.split()
    return len(notes) == len(reading) and all(map(piece_matches, reading, notes))


def show(reading: list[Piece]) -> str:
    marks = {"syllable": "", "initial": "*", "prefix": "+"}
    return " ".join(
        f"{{{p.text}→{p.output}}}" if p.kind == "other" else p.text + marks[p.kind] for p in reading
    )


def options(cell: str) -> dict:
    words = cell.split()
    if not words:
        return {}
    if words == ["punct"]:
        return {"chinese_punct": True}
    assert words[0] == "fuzzy", cell
    return {"fuzzy": frozenset(words[1:])}


# ------------------------------------------------------------------ documented examples


@pytest.mark.parametrize("row", doc_table("Input"), ids=lambda row: f"{row[0]} {row[1]}")
def test_documented_reading(row: list[str]) -> None:
    text, opts, best, also = code(row[0]), options(row[1]), code(row[2]), row[3]
    found = segmentations(text, **opts)
    shown = [show(r) for r in found]
    assert reading_matches(found[0], best), shown
    for alternative in re.findall(r"`([^`]*)`", also):
        assert any(reading_matches(r, alternative) for r in found[:4]), (alternative, shown)
    assert parse(text, **opts) == found[0]


@pytest.mark.parametrize("row", doc_table("Typed"), ids=lambda row: row[0])
def test_documented_spelling(row: list[str]) -> None:
    expected = None if row[1] == "none" else code(row[1])
    assert normalize_syllable(code(row[0])) == expected


@pytest.mark.parametrize("row", doc_table("Text"), ids=lambda row: row[0])
def test_documented_annotation(row: list[str]) -> None:
    expected = ["" if s == "_" else s for s in code(row[1]).split()]
    assert annotate(code(row[0])) == expected


def test_docstring_examples() -> None:
    assert doctest.testmod(pinyin).failed == 0
    assert doctest.testmod(readings).failed == 0


# -------------------------------------------------------------------- syllable inventory


def test_syllables_cover_everything_pypinyin_emits() -> None:
    from pypinyin import Style
    from pypinyin.phrases_dict import phrases_dict
    from pypinyin.pinyin_dict import pinyin_dict
    from pypinyin.style import convert

    raw = {r for readings in pinyin_dict.values() for r in readings.split(",")}
    raw |= {r for phrase in phrases_dict.values() for item in phrase for r in item}
    emitted = {convert(r, Style.NORMAL, strict=True) for r in raw}
    assert emitted <= set(SYLLABLES), sorted(emitted - set(SYLLABLES))
    assert {"ng", "hm", "hng", "m", "n", "ê", "biang", "din", "len", "lve", "nve"} <= emitted


def test_syllable_tables() -> None:
    assert list(SYLLABLES) == sorted(set(SYLLABLES))
    assert "lue" not in SYLLABLES and "jv" not in SYLLABLES
    assert set(INITIALS) == set("bpmfdtnlgkhjqxrzcsyw") | {"zh", "ch", "sh"}
    assert len(INITIALS) == 23
    assert set(FUZZY_PAIRS) == {
        "z=zh", "c=ch", "s=sh", "n=l", "f=h", "r=l",
        "an=ang", "en=eng", "in=ing", "ian=iang", "uan=uang",
    }  # fmt: skip
    assert FUZZY_PAIRS["ian=iang"] == ("ian", "iang")


def test_initial_of() -> None:
    cases = {"zhong": "zh", "zi": "z", "shi": "sh", "yan": "y", "wo": "w", "lv": "l",
             "an": None, "e": None, "er": None, "ou": None, "ê": None,
             "m": "m", "n": "n", "ng": "n", "hm": "h", "hng": "h", "xyz": None}  # fmt: skip
    assert {s: initial_of(s) for s in cases} == cases


@pytest.mark.parametrize("syllable", SYLLABLES)
def test_every_syllable_reads_as_itself(syllable: str) -> None:
    assert normalize_syllable(syllable) == syllable
    (piece,) = parse(syllable)
    if syllable in INITIALS:  # m and n: read as the initial, which includes the syllable
        assert piece.kind == "initial" and syllable in piece.syllables
    else:
        assert (piece.kind, piece.syllables) == ("syllable", (syllable,))


# ------------------------------------------------------------------------- the parser


def test_initial_piece_syllables() -> None:
    (z,) = parse("z")
    (zh,) = parse("zh")
    # z alone abbreviates zh too (srkl: 生日快乐), as input methods' abbreviations do; zh is zh.
    assert z.syllables == tuple(s for s in SYLLABLES if initial_of(s) in ("z", "zh"))
    assert {"zi", "zhi"} <= set(z.syllables)
    assert "zhi" in zh.syllables and "zi" not in zh.syllables
    (b,) = parse("b")
    assert b.syllables == tuple(s for s in SYLLABLES if initial_of(s) == "b")
    (zhf,) = parse("zh", fuzzy=frozenset({"z=zh"}))
    assert {"zi", "zhi"} <= set(zhf.syllables)


def test_fuzzy_variants_are_real_syllables() -> None:
    every = frozenset(FUZZY_PAIRS)
    assert fuzzy_variants("lv", every) == ["lv", "nv"]
    assert fuzzy_variants("jian", every) == ["jian", "jiang"]
    assert fuzzy_variants("xue", every) == ["xue"]
    for syllable in SYLLABLES:
        variants = fuzzy_variants(syllable, every)
        assert variants[0] == syllable and set(variants) <= set(SYLLABLES)


def test_prefix_only_as_last_piece() -> None:
    assert [p.kind for p in parse("zhonguo")] != ["prefix", "syllable"]
    assert parse("zhon ni")[0].kind != "prefix"
    assert parse("ni zhon")[-1].kind == "prefix"


def test_chinese_punct_only_when_asked_and_not_in_numbers_or_urls() -> None:
    plain = parse("hao!")
    assert plain[-1].output == "!"
    asked = parse("hao! 3.5 www.a.com/x?y", chinese_punct=True)
    assert [p.output for p in asked] == ["hao", "！", "3.5", "www.a.com/x?y"]
    assert to_chinese_punct(",") == "，" and to_chinese_punct("x") == "x"


def test_unknown_fuzzy_option_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown fuzzy"):
        segmentations("zi", fuzzy=frozenset({"zz=z"}))


def test_limit() -> None:
    assert len(segmentations("xianxianxian", limit=3)) == 3
    assert segmentations("xian", limit=0) == []
    assert len(segmentations("woaibeijingtiananmen")) == 8


def test_readings_cost_per_piece_initial_and_split_at_a_vowel() -> None:
    found = [(cost, [p.text for p in r]) for cost, r in scored_segmentations("xian", limit=3)]
    assert found == [(10, ["xian"]), (21, ["xi", "an"]), (30, ["xia", "n"])]
    assert [(c, [p.text for p in r]) for c, r in scored_segmentations("beij", limit=1)] == [
        (30, ["bei", "j"])]
    costs = [cost for cost, _ in scored_segmentations("woaibeijingtiananmen")]
    assert costs == sorted(costs)
    assert [r for _, r in scored_segmentations("fangan")] == segmentations("fangan")


def test_spaced_syllables_and_initials_are_read_as_typed() -> None:
    # Typed apart, a token that is one syllable or one initial has a single reading...
    assert [[p.text for p in r] for r in segmentations("xian zai")] == [["xian", "zai"]]
    assert [[p.text for p in r] for r in segmentations("bei jing zh g")] == [
        ["bei", "jing", "zh", "g"]]
    # ...while run together it may be cut anew, and a spaced multi-syllable run still is.
    assert len(segmentations("xianzai")) > 1
    readings = [[p.text for p in r] for r in segmentations("xianzai xian")]
    assert ["xi", "an", "zai", "xian"] in readings
    assert all(r[-1] == "xian" for r in readings)


def test_continuous_input_reads_as_syllables() -> None:
    text = "woaibeijingtiananmentiananmenshangtaiyan"  # 40 letters
    assert len(text) == 40
    pinyin._read_run.cache_clear()  # the real work, not the cache
    found = segmentations(text)
    assert len(found) == 8
    assert " ".join(p.text for p in found[0]) == (
        "wo ai bei jing tian an men tian an men shang tai yan")
    assert all("".join(p.text for p in reading) == text for reading in found)
    assert segmentations(text) == found  # and the cached answer is the same


def test_long_input_is_read_whole() -> None:
    text = "nihao3a.b@" * 300 + "q" * 2000
    found = segmentations(text)
    assert 1 <= len(found) <= 8
    target = normalize_input(text).lower()
    assert all("".join(p.text for p in reading).lower() == target for reading in found)
    # the long letter run is read as 2000 abbreviations, and as one pass-through word too
    assert [(p.text, p.kind) for p in found[0][-2000:]] == [("q", "initial")] * 2000
    assert any(reading[-1] == Piece("q" * 2000, "other") for reading in found)


PINYINISH = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzAZ êüǚ:'’ 0123456789,.!?\"@/-中", max_size=40
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), PINYINISH))
def test_readings_rejoin_to_normalised_input(text: str) -> None:
    found = segmentations(text, chinese_punct=True, fuzzy=frozenset({"z=zh", "an=ang"}))
    target = normalize_input(text).lower()
    assert 1 <= len(found) <= 8
    assert found == segmentations(text, chinese_punct=True, fuzzy=frozenset({"z=zh", "an=ang"}))
    for reading in found:
        assert "".join(p.text for p in reading).lower() == target
        for i, piece in enumerate(reading):
            if piece.kind == "other":
                assert piece.syllables == () and piece.text
            else:
                assert piece.syllables and set(piece.syllables) <= set(SYLLABLES)
                assert piece.text == piece.text.lower()
            assert piece.kind != "prefix" or i == len(reading) - 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_normalize_syllable_never_raises(text: str) -> None:
    result = normalize_syllable(text)
    assert result is None or result in SYLLABLES


# ------------------------------------------------------------------------- annotation

HANZI_MIX = st.text(alphabet="银行走重要长大的了还是绿 ,.aB1。🙂𠀀〇\n", max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), HANZI_MIX))
def test_annotation_has_one_entry_per_character(text: str) -> None:
    result = annotate(text)
    assert len(result) == len(text)
    for ch, syllable in zip(text, result, strict=True):
        assert syllable == "" or syllable in SYLLABLES
        # Not Cn: a character this Python's Unicode tables do not know yet (CJK extension H,
        # U+32003) may have a reading pypinyin knows.
        category = unicodedata.category(ch)
        if ch.isascii() or (category[0] in "PZSC" and category != "Cn"):
            assert syllable == "", ch


def test_annotation_resolves_polyphones_in_context() -> None:
    text = "他在银行门口行走，重新看了看重要的长城。"
    expected = "ta zai yin hang men kou xing zou _ chong xin kan le kan zhong yao de chang cheng _"
    assert annotate(text) == ["" if s == "_" else s for s in expected.split()]


@pytest.mark.parametrize(("typed", "pieces"), [
    ("hellonihao", "hello ni hao"), ("wifimimashishenme", "wifi mi ma shi shen me"),
    ("jintianqukfcchifan", "jin tian qu kfc chi fan"),
    ("wo xihuan python biancheng", "wo xi huan python bian cheng"), ("iPhone", "iPhone"),
])
def test_english_words_pass_through(typed, pieces):
    best = segmentations(typed)[0]
    assert " ".join(p.text for p in best) == pieces
    english = [p for p in best if p.kind == "other"]
    assert english and all(p.output == p.text for p in english)


@pytest.mark.parametrize("typed", ["xian", "dang", "fang", "men", "change", "hahaha", "banana",
                                   "nihao", "tiananmen", "wzdl", "bjdx"])
def test_pinyin_that_spells_english_stays_pinyin(typed):
    assert all(p.kind != "other" for p in segmentations(typed)[0])
