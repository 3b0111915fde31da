"""Tests for pinzi.lexicon: GB2312 coverage, readings against pypinyin, candidate order,
lookups by syllable, initial and parsed piece, and loading from a file."""

from __future__ import annotations

import contextlib
import doctest
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pinzi import lexicon
from pinzi.lexicon import Lexicon
from pinzi.pinyin import SYLLABLES, initial_of, parse

TSV = Path(__file__).resolve().parents[1] / "src" / "pinzi" / "resources" / "lexicon.tsv"


def gb2312_chars() -> list[str]:
    chars = []
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            with contextlib.suppress(UnicodeDecodeError):  # 5 unused cells at the end of row 0xD7
                chars.append(bytes((hi, lo)).decode("gb2312"))
    return chars


@pytest.fixture(scope="module")
def lex() -> Lexicon:
    return Lexicon.default()


def test_default_is_loaded_once(lex: Lexicon) -> None:
    assert Lexicon.default() is lex


def test_docstring_examples() -> None:
    assert doctest.testmod(lexicon).failed == 0


def test_covers_all_of_gb2312(lex: Lexicon) -> None:
    chars = gb2312_chars()
    assert len(chars) == 6763
    assert [ch for ch in chars if ch not in lex] == []
    assert len(lex) == len(set(lex.chars)) >= 6763
    assert "a" not in lex and "，" not in lex


def test_every_reading_pypinyin_gives_a_gb2312_char_has_candidates(lex: Lexicon) -> None:
    from pypinyin import Style, pinyin

    used = set()
    for ch in gb2312_chars():
        readings = set(pinyin(ch, style=Style.NORMAL, heteronym=True)[0])
        assert readings <= set(lex.syllables_for(ch)), ch
        used |= readings
    assert used <= set(SYLLABLES)
    assert all(lex.chars_for(s) for s in used)


def test_polyphones_are_listed_under_every_reading(lex: Lexicon) -> None:
    assert "中" in lex.chars_for("zhong")
    assert "行" in lex.chars_for("xing") and "行" in lex.chars_for("hang")
    assert lex.syllables_for("行")[:2] == ("xing", "hang")
    assert lex.syllables_for("了")[0] == "le"
    assert lex.syllables_for("☃") == ()
    assert lex.chars_for("lve")[:1] == ("略",) and "女" in lex.chars_for("nv")
    assert lex.chars_for("xyz") == ()


def test_candidates_are_ordered_by_use_with_that_reading(lex: Lexicon) -> None:
    assert lex.chars_for("zhong")[0] == "中"
    assert lex.chars_for("hang")[0] == "行"  # 银行, 行业: the reading is common
    assert lex.chars_for("de")[0] == "的"
    zi = lex.chars_for("zi")
    assert zi.index("子") < zi.index("事")  # 事 is read "zi" almost never
    freq = {}
    for line in TSV.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            ch, count = line.split("\t")[:2]
            freq[ch] = int(count)
    ranks = [freq[ch] for ch in lex.chars]
    assert ranks == sorted(ranks, reverse=True)


def test_attested_drops_readings_no_word_uses(lex: Lexicon) -> None:
    attested = Lexicon.attested()
    assert Lexicon.attested() is attested
    assert "省" in lex.chars_for("xian") and "省" not in attested.chars_for("xian")
    assert attested.syllables_for("省") == ("sheng", "xing")
    assert attested.syllables_for("行") == lex.syllables_for("行")  # all three are used
    assert attested.chars_for("zhei") == ("这",)  # the only character of its syllable
    assert attested.chars == lex.chars
    # every character stays typeable, and every syllable keeps a character
    assert all(attested.syllables_for(ch) for ch in lex.chars)
    assert all(attested.chars_for(s) for s in SYLLABLES if lex.chars_for(s))
    assert all(set(attested.syllables_for(ch)) <= set(lex.syllables_for(ch)) for ch in lex.chars)


def test_initials_keep_z_and_zh_apart(lex: Lexicon) -> None:
    z, zh = set(lex.chars_for_initial("z")), set(lex.chars_for_initial("zh"))
    assert "在" in z and "中" not in z
    assert "中" in zh and "在" not in zh
    assert all(any(initial_of(s) == "z" for s in lex.syllables_for(ch)) for ch in z)
    assert "你" in lex.chars_for_initial("n") and "嗯" in lex.chars_for_initial("n")
    assert "我" in lex.chars_for_initial("w") and "一" in lex.chars_for_initial("y")
    assert lex.chars_for_initial("v") == ()


def test_chars_for_piece(lex: Lexicon) -> None:
    (prefix,) = parse("zhon")
    assert lex.chars_for_piece(prefix) == lex.chars_for("zhong")
    (initial,) = parse("b")
    assert set(lex.chars_for_piece(initial)) == set(lex.chars_for_initial("b"))
    (fuzzy,) = parse("zi", fuzzy=frozenset({"z=zh"}))
    union = lex.chars_for_piece(fuzzy)
    assert {"子", "知", "之"} <= set(union) and len(union) == len(set(union))
    assert union.index("之") < union.index("滓")
    assert lex.chars_for_piece(parse("iPhone")[0]) == ()


def test_reading_logprobs_are_shares_of_each_characters_uses(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tsv"
    path.write_text("乐\t10\tle yue\t3 7\n了\t20\tle liao\t0 0\n", encoding="utf-8")
    lex = Lexicon.from_file(path)
    (le,) = parse("le")
    (initial,) = parse("l")
    # One use more per reading: 乐 is read le (3 + 1) of (3 + 7 + 2) times.
    assert lex.reading_logprobs(le, ["乐", "了"]) == pytest.approx(
        [math.log(4 / 12), math.log(1 / 2)])  # 了 has no counts: its readings share evenly
    assert lex.reading_logprobs(initial, ["乐", "了"]) == pytest.approx(
        [math.log(4 / 12), 0.0])  # 了's readings all start with l
    assert lex.reading_logprobs(le, ["中"]) == [-math.inf]  # not read so, not even known


def test_a_rare_reading_is_improbable(lex: Lexicon) -> None:
    (zong,) = parse("zong")
    rare, common = lex.reading_logprobs(zong, ["从", "总"])
    assert rare < math.log(1e-4) and common == pytest.approx(0.0, abs=1e-3)


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tsv"
    path.write_text("# comment\n乐\t10\tle yue\t3 7\n了\t20\tle liao\n", encoding="utf-8")
    lex = Lexicon.from_file(path)
    assert lex.chars == ("了", "乐")
    assert lex.chars_for("le") == ("了", "乐")  # without counts a reading counts the frequency
    assert lex.chars_for("yue") == ("乐",) and lex.syllables_for("乐") == ("le", "yue")
    assert lex.chars_for_initial("l") == ("了", "乐")


def test_resource_says_it_is_generated() -> None:
    header = TSV.read_text(encoding="utf-8").splitlines()[:2]
    assert "GENERATED by scripts/gen_lexicon.py" in header[0] and "do not edit" in header[0]


def test_lexicon_does_not_import_torch() -> None:
    code = "import sys, pinzi.lexicon; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
