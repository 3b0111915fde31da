"""Conversion through the public API, on the tiny model trained in conftest."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pinzi import Converter
from pinzi.converter import MAX_INPUT_CHARS
from pinzi.decode import UserDict
from pinzi.decoding_config import DecodingConfig
from pinzi.errors import DataError, InputTooLong, SettingsError
from pinzi.lexicon import Lexicon
from pinzi.pinyin import parse, segmentations


@pytest.fixture(scope="module")
def shipped() -> Converter:
    return Converter.from_pretrained()


@pytest.fixture(scope="module")
def converter(tiny_model) -> Converter:
    # The model alone: an n-gram model counted from 20 sentences says little (tested separately).
    return Converter.from_pretrained(tiny_model, ngram=None)


@pytest.mark.parametrize("typed", [
    "woaibeijingtiananmen", "wo ai bei jing tian an men", "wǒ ài běi jīng tiān'ān mén",
    "wo3ai4bei3jing1tian1an1men2", "WoAiBeiJingTianAnMen",
])
def test_every_input_form_converts(converter, typed):
    assert converter.convert(typed) == "我爱北京天安门"


def test_abbreviations_and_mixtures(converter):
    assert converter.convert("zhongguorenminyinhang") == "中国人民银行"
    assert converter.convert("zhongguorenminyinh") == "中国人民银行"  # unfinished last syllable
    assert converter.convert("beij") == "北京"
    assert converter.convert("wo ai bj tiananmen") == "我爱北京天安门"
    assert converter.convert("zhongguo rm yinhang") == "中国人民银行"


@pytest.mark.parametrize("typed", ["ta zai yin hang gong zuo", "zg rm yh", "lv'xing"])
def test_output_is_readable_as_the_input(converter, typed):
    lexicon = Lexicon.default()
    readings = segmentations(typed, limit=8)
    for text, *_ in converter.candidates(typed, k=5, partial=False):  # one reading each
        assert any(len(r) == len(text) and all(c in lexicon.chars_for_piece(p)
                                               for c, p in zip(text, r, strict=True))
                   for r in readings), text


def test_only_readings_close_to_the_best_are_decoded(converter):
    rows = []

    def counting(*arrays):
        rows.append(len(arrays[0]))  # one row of the model's batch per reading decoded
        return converter.scorer(*arrays)

    Converter(counting, converter.tokenizer).candidates("fangan")
    assert rows[-1] == 2  # fan gan, fang an: not fa n gan, with an extra piece
    Converter(counting, converter.tokenizer).candidates("xian")
    assert rows[-1] == 1  # not xi an: typed so, xi'an
    Converter(counting, converter.tokenizer,
              decoding=DecodingConfig(max_cost_gap=10**6)).candidates("xian")
    assert rows[-1] == 4  # the `readings` limit


def test_syllables_no_character_reads_do_not_win_for_free(shipped):
    # The shipped vocabulary has no character read "eng" or "den": a reading with them would
    # keep those letters at no cost in the model's score ("nin eng" over "ni neng").
    for typed, best in [("nineng", "你能"), ("qudedene", "取得的呢"), ("zijinengyong", "自己能用")]:
        found = [c.hanzi for c in shipped.candidates(typed, k=5, partial=False)]
        assert found[0] == best
        assert not any(c.isascii() for text in found for c in text), found


def test_english_among_pinyin_is_kept_as_typed(shipped):
    for typed, best in [("hellonihao", "hello你好"), ("jintianqukfcchifan", "今天去kfc吃饭"),
                        ("wifimimashishenme", "wifi密码是什么")]:
        assert shipped.convert(typed) == best
    assert shipped.convert("wo xihuan python biancheng").startswith("我喜欢python")


def test_the_word_list_ranks_everyday_words_first(shipped):
    assert shipped.words is not None and shipped.decoding.word_weight > 0
    assert shipped.convert("duochuandianyifu") == "多穿点衣服"  # not 多穿点一幅
    assert shipped.convert("zhoumoyoukongma") == "周末有空吗"  # not 粥没有空吗


def test_candidates_leave_out_readings_no_word_uses(shipped):
    found = [c.hanzi for c in shipped.candidates("xian", k=20)]
    assert found[0] == "现" and "省" not in found  # 省 is read xian in no word


def test_candidates_are_ranked_and_distinct(converter):
    ranked = converter.candidates("woaibeijing", k=5, partial=False)
    texts = [c.hanzi for c in ranked]
    scores = [c.score for c in ranked]
    assert texts[0] == converter.convert("woaibeijing") == "我爱北京"
    assert len(set(texts)) == len(texts) == 5
    assert scores == sorted(scores, reverse=True)


def test_pass_through_and_empty_input(converter):
    assert converter.convert("") == ""
    assert converter.convert("   ") == ""
    assert converter.convert("12345") == "12345"
    out = converter.convert("wo ai iPhone")
    assert out.startswith("我爱") and "iPhone" in out
    assert converter.convert("nihao, shijie", punct=True) == "你好，世界"


def test_options_take_the_same_forms_as_the_cli_and_http(tiny_model):
    # fuzzy as the CLI gives it (a comma string), as HTTP does (a list of names, or ["all"]),
    # as a converter-wide default, and per call; punct likewise.
    plain = Converter.from_pretrained(tiny_model, backend="torch")
    fuzzy = Converter.from_pretrained(tiny_model, backend="torch", fuzzy="z=zh, n=l",
                                      punct=True)
    assert fuzzy.fuzzy == frozenset({"z=zh", "n=l"}) and fuzzy.punct
    for spec in ("z=zh", ["z=zh"], ["all"], "all"):
        assert plain.candidates("zongguo", k=3, fuzzy=spec) == \
            fuzzy.candidates("zongguo", k=3, fuzzy=spec)
    assert plain.convert("zongguo", fuzzy="z=zh") == fuzzy.convert("zongguo")
    assert fuzzy.convert("nihao,") == plain.convert("nihao,", punct=True)
    assert fuzzy.convert("nihao,", punct=False) == plain.convert("nihao,")
    assert plain.convert_batch(["nihao,", "zongguo"], fuzzy=["z=zh"], punct=True) == \
        [fuzzy.convert("nihao,"), fuzzy.convert("zongguo")]
    with pytest.raises(SettingsError, match="unknown fuzzy pair.*q=x.*choose from: all"):
        plain.convert("nihao", fuzzy="q=x")


def test_context_is_not_repeated_in_the_output(converter):
    assert converter.convert("tiananmen", context="我爱北京") == "天安门"


def test_user_dictionary_steers_the_choice(converter):
    plain = converter.convert("yinhang")
    assert plain == "银行"
    words = UserDict({"音航": 20.0})
    assert converter.convert("yinhang", userdict=words) == "音航"


def test_the_readme_user_word_wins_on_the_shipped_model(shipped):
    # The README's example: 音航 at weight 5 wins over 银行, in a sentence too, and shows among
    # the candidates (below the model's choices) when typed by its initials only.
    words = UserDict({"音航": 5.0})
    assert shipped.convert("yinhang", userdict=words) == "音航"
    assert shipped.convert("woquyinhangqukuan", userdict=words) == "我去音航取款"
    by_initials = [c.hanzi for c in shipped.candidates("yh", k=5, userdict=words)]
    assert "音航" in by_initials and by_initials[0] != "音航"
    assert shipped.convert("yinhang") == "银行"


def test_user_dictionary_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# names\n音航 7.5\n天安\n\n", encoding="utf-8")
    words = UserDict.load(path)
    assert words.words == {"音航": 7.5, "天安": 4.0}
    path.write_text("音航 lots\n", encoding="utf-8")
    with pytest.raises(DataError, match="words.txt:1"):
        UserDict.load(path)


def test_long_input_is_windowed_and_over_long_is_refused(converter):
    long_input = "wo ai bei jing tian an men " * 30  # 210 syllables: several windows
    out = converter.convert(long_input)
    assert len(out) == 210 and out.startswith("我爱北京天安门")
    lexicon = Lexicon.default()
    assert all(c in lexicon.chars_for_piece(p) for c, p in zip(out, parse(long_input), strict=True))
    with pytest.raises(InputTooLong):
        converter.convert("a" * (MAX_INPUT_CHARS + 1))


def test_ngram_model_keeps_conversions_right(tiny_model, tiny_corpus):
    from pinzi.corpus import load_prepared
    from pinzi.ngram import CharNgram

    plain = Converter.from_pretrained(tiny_model)
    corpus = load_prepared(tiny_corpus)["train"].tokenized(plain.tokenizer)
    ngram = CharNgram.build(corpus.chars, corpus.offsets, plain.tokenizer.char_offset,
                              plain.tokenizer.n_chars, min_count=1)
    tuned = Converter(plain.scorer, plain.tokenizer, ngram=ngram,
                      decoding=DecodingConfig(lm_weight=0.5))
    for typed, expected in [("woaibeijingtiananmen", "我爱北京天安门"),
                            ("ta zai yin hang gong zuo", "他在银行工作")]:
        assert tuned.convert(typed) == expected
        assert tuned.candidates(typed, k=3)[0][0] == expected


# ---- the model that ships in the package ------------------------------------------------------
NEWS = ["zhong guo ren min yin hang fa bu le xin de zheng ce", "jin tian tian qi hen hao",
        "wo men zai bei jing da xue kan shu", "guo wu yuan zhao kai chang wu hui yi",
        "quan guo ge di ji ji zuo hao fang xun gong zuo"]


def test_the_shipped_model_converts_on_onnxruntime_without_torch():
    code = ("import sys; from pinzi import Converter; c = Converter.from_pretrained(); "
            "print(c.scorer.name, c.convert('woaibeijingtiananmen'), 'torch' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split()
    assert found == ["onnx", "我爱北京天安门", "False"]


def test_the_shipped_int8_graph_converts_like_the_torch_weights(shipped):
    full = Converter.from_pretrained(backend="torch")
    assert shipped.scorer.name == "onnx" and full.scorer.name == "torch"
    assert [shipped.convert(line) for line in NEWS] == [full.convert(line) for line in NEWS]
