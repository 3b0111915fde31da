"""Candidates that cover the start of the buffer, paging, and what each candidate consumes."""

from __future__ import annotations

import pytest

from pinzi.converter import Converter
from pinzi.decode import UserDict
from pinzi.decoding_config import DecodingConfig
from pinzi.partial import Candidate, page_order, typed_lengths
from pinzi.words import WordModel

# A word list for the tiny model: what it knows of words decides the starts it offers.
WORDS = {"我爱": "wo'ai", "北京": "bei'jing", "天安门": "tian'an'men", "我们": "wo'men",
         "银行": "yin'hang", "今天": "jin'tian", "天气": "tian'qi", "我": "wo", "爱": "ai"}


@pytest.fixture(scope="module")
def converter(tiny_model) -> Converter:
    plain = Converter.from_pretrained(tiny_model, backend="torch")
    words = WordModel({word: -2.0 - len(word) for word in WORDS}, WORDS)
    return Converter(plain.scorer, plain.tokenizer, ngram=plain.ngram, words=words,
                     decoding=DecodingConfig(word_weight=0.5, word_fitting=8))


def test_the_best_whole_conversion_comes_first_then_the_starts_longest_first(converter):
    found = converter.candidates("woaibeijingtiananmen", k=12)
    assert found[0] == (found[0].hanzi, found[0].score, len("woaibeijingtiananmen"))
    assert found[0].hanzi == "我爱北京天安门"
    starts = [c for c in found if c.consumed < len("woaibeijingtiananmen")]
    # The words of the best conversion that end before the buffer does, and the listed words
    # and characters the buffer starts with.
    assert [(c.hanzi, c.consumed) for c in starts[:3]] == [("我爱北京", 11), ("我爱", 4),
                                                          ("我", 2)]
    assert [c.consumed for c in starts] == sorted((c.consumed for c in starts), reverse=True)
    assert all(c.consumed == 2 for c in starts[3:])  # then the other characters read wo


@pytest.mark.parametrize(("typed", "rest"), [
    ("wo ai bei jing", "bei jing"), ("wo'ai'bei'jing", "bei'jing"),
    ("wo3ai4bei3jing1", "bei3jing1"), ("WoAiBeiJing", "BeiJing"),
])
def test_consumed_counts_what_was_typed_with_its_separators_and_tones(converter, typed, rest):
    found = {c.hanzi: c.consumed for c in converter.candidates(typed, k=20)}
    assert found["我爱北京"] == len(typed)
    assert typed[found["我爱"]:] == rest


def test_committing_a_start_and_converting_the_rest_gives_the_sentence(converter):
    typed = "jintiantianqihenhao"
    start = next(c for c in converter.candidates(typed, k=20) if c.hanzi == "今天")
    assert converter.convert(typed[start.consumed:], context=start.hanzi) == "天气很好"


def test_pages_are_stable_and_run_out(converter):
    whole_page = converter.candidates("beijing", k=12)
    assert converter.candidates("beijing", k=5) + converter.candidates("beijing", k=7,
                                                                       offset=5) == whole_page
    everything = converter.candidates("beijing", k=1000)
    assert len({(c.hanzi, c.consumed) for c in everything}) == len(everything)
    assert converter.candidates("beijing", k=5, offset=len(everything)) == []


def test_a_one_syllable_buffer_lists_all_its_characters(converter):
    found = converter.candidates("wo", k=50)
    assert len(found) > 8 and found[0].hanzi == "我"  # beyond the search's 8 per position
    assert {c.consumed for c in found} == {2}
    assert [c.score for c in found[1:]] == sorted((c.score for c in found[1:]), reverse=True)


def test_whole_conversions_only_on_request(converter):
    found = converter.candidates("woaibeijing", k=10, partial=False)
    assert found and all(c.consumed == len("woaibeijing") for c in found)
    assert converter.convert("woaibeijing") == found[0].hanzi


def test_a_user_word_is_offered_as_a_start_too(converter):
    found = converter.candidates("yinhanggongzuo", k=30, userdict=UserDict({"音航": 5.0}))
    assert found[0].hanzi == "音航工作"
    assert ("音航", len("yinhang")) in {(c.hanzi, c.consumed) for c in found}


def test_shuangpin_candidates_consume_keys(converter):
    keys = "woaibzjk"  # 小鹤: wo ai bei jing
    found = converter.candidates(keys, k=20, scheme="xiaohe")
    assert found[0] == (found[0].hanzi, found[0].score, len(keys))
    assert {c.hanzi: c.consumed for c in found}["我爱"] == 4


def test_typed_lengths_map_parsed_pinyin_back_to_keys():
    assert typed_lengths("wo ai", None, [2, 4]) == {2: 3, 4: 5}
    assert typed_lengths("ni3hao3", None, [2]) == {2: 3}
    assert typed_lengths("nihc", "xiaohe", [2, 5]) == {2: 2, 5: 4}  # ni'hao


def test_page_order_puts_close_whole_conversions_first_and_far_ones_last():
    whole = [Candidate("甲乙", -1.0, 4), Candidate("甲丙", -2.0, 4), Candidate("丁戊", -9.0, 4)]
    starts = [Candidate("丁", -3.0, 2), Candidate("甲", -0.5, 2), Candidate("甲", -0.7, 2)]
    ordered = page_order(whole, starts, whole_margin=3.0)
    assert [c.hanzi for c in ordered] == ["甲乙", "甲丙", "甲", "丁", "丁戊"]
    assert page_order([], starts, whole_margin=3.0) == []


def test_page_order_lists_whole_conversions_that_are_words_before_the_starts():
    whole = [Candidate("国际", -14.5, 5), Candidate("国籍", -26.1, 5), Candidate("过急", -30.0, 5)]
    starts = [Candidate("国", -12.0, 3)]
    ordered = page_order(whole, starts, whole_margin=3.0, words={"国际", "国籍"})
    assert [c.hanzi for c in ordered] == ["国际", "国籍", "国", "过急"]
    taught = page_order(whole, starts, whole_margin=3.0, taught={"过急"})
    assert [c.hanzi for c in taught] == ["国际", "过急", "国", "国籍"]


def test_fuzzy_pinyin_reaches_the_starts_of_the_buffer(converter):
    found = converter.candidates("zongguoren", k=30, fuzzy="z=zh")
    assert found[0].hanzi == "中国人"
    assert ("中", len("zong")) in {(c.hanzi, c.consumed) for c in found}
