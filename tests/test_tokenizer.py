"""Tests for pinzi.tokenizer: the id layout, unknown characters, pinyin pieces to ids, the
candidate matrix, persistence, and building the char section from corpus counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pinzi.errors import ModelLoadError
from pinzi.lexicon import Lexicon
from pinzi.pinyin import INITIALS, SYLLABLES, parse
from pinzi.tokenizer import (
    CLS_ID,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    SPECIALS,
    UNK_ID,
    VOCAB_FILE,
    PinziTokenizer,
)

CHARS = ["中", "国", "钟", "重", "A"]


def small_lexicon() -> Lexicon:
    # (char, frequency, readings, per-reading counts); 果 is not in CHARS
    return Lexicon([("中", 100, ("zhong",), (100,)), ("国", 80, ("guo",), (80,)),
                    ("钟", 50, ("zhong",), (50,)), ("重", 60, ("zhong", "chong"), (40, 20)),
                    ("果", 70, ("guo",), (70,))])


@pytest.fixture()
def tok() -> PinziTokenizer:
    return PinziTokenizer(CHARS)


def test_id_layout_is_four_contiguous_sections(tok: PinziTokenizer) -> None:
    assert (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID) == (0, 1, 2, 3, 4)
    assert tok.char_offset == len(SPECIALS) == 5
    assert [tok.char_id(c) for c in CHARS] == list(range(5, 5 + len(CHARS)))
    assert tok.n_chars == len(CHARS)
    assert tok.syllable_offset == tok.char_offset + len(CHARS)
    assert [tok.syllable_id(s) for s in SYLLABLES] == list(
        range(tok.syllable_offset, tok.syllable_offset + len(SYLLABLES)))
    assert tok.initial_offset == tok.syllable_offset + len(SYLLABLES)
    assert [tok.initial_id(i) for i in INITIALS] == list(
        range(tok.initial_offset, tok.initial_offset + len(INITIALS)))
    assert tok.vocab_size == len(SPECIALS) + len(CHARS) + len(SYLLABLES) + len(INITIALS)
    every = ([*range(len(SPECIALS))] + [tok.char_id(c) for c in CHARS]
             + [tok.syllable_id(s) for s in SYLLABLES] + [tok.initial_id(i) for i in INITIALS])
    assert sorted(every) == list(range(tok.vocab_size))
    # one string, two sections, two ids
    assert tok.syllable_id("m") != tok.initial_id("m")
    assert tok.decode_chars([tok.char_id("国"), tok.char_id("A"), tok.char_id("中")]) == "国A中"


def test_unknown_characters_encode_to_unk_both_ways(tok: PinziTokenizer) -> None:
    text = "中x国🙂重 A"
    expected = [5, UNK_ID, 6, UNK_ID, 8, UNK_ID, 9]
    assert tok.encode_text(text) == expected
    assert tok.char_id("x") == UNK_ID and tok.char_id("中国") == UNK_ID
    codepoints = np.array([ord(c) for c in text], dtype=np.int64)
    assert tok.encode_codepoints(codepoints).tolist() == expected
    assert tok.encode_codepoints(np.array([0, 0x10FFFF])).tolist() == [UNK_ID, UNK_ID]


def test_multi_codepoint_chars_get_ids_but_not_codepoint_entries() -> None:
    accented = "e\u0301"  # e + combining acute: one "char" of the vocabulary, two codepoints
    tok = PinziTokenizer(["中", accented])
    assert tok.char_id(accented) == 6
    assert tok.encode_codepoints(np.array([ord("中"), ord("e"), 0x301])).tolist() == [
        5, UNK_ID, UNK_ID]


def test_piece_id_syllable_initial_and_fallbacks(tok: PinziTokenizer) -> None:
    [zhong] = parse("zhong")
    assert tok.piece_id(zhong) == tok.syllable_id("zhong")
    [lve] = parse("lue")  # typed lue, canonical lve
    assert tok.piece_id(lve) == tok.syllable_id("lve")
    bei, j = parse("beij")
    assert (bei.kind, j.kind) == ("syllable", "initial")
    assert tok.piece_id(j) == tok.initial_id("j")
    # a fuzzy syllable keeps the typed spelling (the first) as its token
    [fuzzy_zhong] = parse("zhong", fuzzy=frozenset({"z=zh"}))
    assert fuzzy_zhong.syllables == ("zhong", "zong")
    assert tok.piece_id(fuzzy_zhong) == tok.syllable_id("zhong")
    # an unfinished syllable whose syllables share one initial stands for that initial
    [zho] = parse("zho")
    assert zho.kind == "prefix" and set(zho.syllables) == {"zhong", "zhou"}
    assert tok.piece_id(zho) == tok.initial_id("zh")
    # ... and one with no single initial is just "some hanzi here"
    [mixed] = parse("zho", fuzzy=frozenset({"z=zh"}))
    assert mixed.kind == "prefix" and {"zhong", "zong"} <= set(mixed.syllables)
    assert tok.piece_id(mixed) == MASK_ID


def test_candidate_matrix_rows(tok: PinziTokenizer) -> None:
    matrix = tok.candidate_matrix(small_lexicon())
    assert matrix.shape == (tok.vocab_size, tok.n_chars) and matrix.dtype == bool

    def row(token: int) -> set[str]:
        return {CHARS[i] for i in np.flatnonzero(matrix[token])}

    assert row(tok.syllable_id("zhong")) == {"中", "钟", "重"}
    assert row(tok.syllable_id("chong")) == {"重"}
    assert row(tok.syllable_id("guo")) == {"国"}  # 果 is not in the vocabulary
    assert row(tok.initial_id("zh")) == {"中", "钟", "重"}
    assert row(tok.initial_id("ch")) == {"重"}
    assert row(tok.initial_id("g")) == {"国"}
    assert row(tok.initial_id("z")) == set()  # "z" is not "zh"
    # only those six rows hold anything; "A" has no reading
    assert int(matrix.any(axis=1).sum()) == 6
    assert not matrix[:, CHARS.index("A")].any()
    assert not matrix[: tok.syllable_offset].any()  # specials and chars are empty rows
    np.testing.assert_array_equal(tok.char_indices(["重", "果", "中"]), [3, 0])


def test_save_load_round_trip(tok: PinziTokenizer, tmp_path) -> None:
    tok.save(tmp_path)
    payload = json.loads((tmp_path / VOCAB_FILE).read_text(encoding="utf-8"))
    assert payload["chars"] == CHARS
    again = PinziTokenizer.load(tmp_path)
    assert again.chars == tok.chars
    assert again.vocab_size == tok.vocab_size
    assert again.encode_text("国A中?") == tok.encode_text("国A中?")
    assert again.syllable_id("guo") == tok.syllable_id("guo")
    assert again.initial_id("w") == tok.initial_id("w")


@pytest.mark.parametrize("field", ["syllables", "initials", "specials"])
def test_load_rejects_a_vocab_for_another_inventory(tok: PinziTokenizer, tmp_path,
                                                     field: str) -> None:
    tok.save(tmp_path)
    path = tmp_path / VOCAB_FILE
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload[field] = payload[field][:-1]  # one entry fewer: every later id would shift
    path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(Exception, match="was written for another syllable inventory"):
        PinziTokenizer.load(tmp_path)


def test_load_of_a_missing_or_foreign_file_says_so(tmp_path) -> None:
    with pytest.raises(Exception, match="is missing or is not a pinzi vocabulary"):
        PinziTokenizer.load(tmp_path)
    (tmp_path / VOCAB_FILE).write_text('{"tokens": []}', encoding="utf-8")
    with pytest.raises(Exception, match="is missing or is not a pinzi vocabulary"):
        PinziTokenizer.load(tmp_path)


@pytest.mark.parametrize(("chars", "problem"), [
    (5, "its chars are not a list of characters"),
    ("中国", "its chars are not a list of characters"),
    ([1, 2], "its chars are not a list of characters"),
    (["中", ""], "its chars are not a list of characters"),
    (["中", "国", "中"], "duplicate characters"),
])
def test_load_of_chars_of_the_wrong_type_says_the_folder_is_damaged(tok: PinziTokenizer,
                                                                    tmp_path, chars,
                                                                    problem) -> None:
    tok.save(tmp_path)
    path = tmp_path / VOCAB_FILE
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), "chars": chars}),
                    encoding="utf-8")
    with pytest.raises(ModelLoadError, match=f"model folder .* is damaged: {VOCAB_FILE}: "
                                             f"{problem}"):
        PinziTokenizer.load(tmp_path)


def test_duplicate_characters_are_rejected() -> None:
    with pytest.raises(Exception, match="duplicate"):
        PinziTokenizer(["中", "国", "中"])


def write_counts(tmp_path, rows: list[tuple[str, int]]):
    path = tmp_path / "chars.tsv"
    path.write_text("".join(f"{c}\t{n}\n" for c, n in rows), encoding="utf-8")
    return path


COUNTS = [("国", 50), ("x", 40), ("中", 30), ("z", 5), ("ab", 9), (" ", 8), ("y", 1),
          ("钟", 0)]


def test_from_counts_orders_lexicon_chars_first(tmp_path) -> None:
    counts = write_counts(tmp_path, COUNTS)
    tok = PinziTokenizer.from_counts(counts, lexicon=small_lexicon())
    # frequent lexicon chars as counted, the rest of the lexicon by frequency, then the
    # frequent others; "ab" (not one char), " " (space) and y (seen once) are left out
    assert tok.chars == ("国", "中", "果", "重", "钟", "x", "z")
    tok = PinziTokenizer.from_counts(counts, lexicon=small_lexicon(), min_count=1)
    assert tok.chars == ("国", "中", "果", "重", "钟", "x", "z", "y")


def test_from_counts_caps_the_extras_at_max_chars(tmp_path) -> None:
    counts = write_counts(tmp_path, COUNTS)
    tok = PinziTokenizer.from_counts(counts, lexicon=small_lexicon(), max_chars=6)
    assert tok.chars == ("国", "中", "果", "重", "钟", "x")
    tok = PinziTokenizer.from_counts(counts, lexicon=small_lexicon(), max_chars=5)
    assert tok.chars == ("国", "中", "果", "重", "钟")
