"""Next-word prediction from the n-gram and the word list."""

from __future__ import annotations

import pytest

from pinzi.converter import Converter
from pinzi.corpus import load_prepared
from pinzi.decode import UserDict
from pinzi.ngram import CharNgram
from pinzi.predict import Predictor
from pinzi.text import is_hanzi
from pinzi.words import WordModel


@pytest.fixture(scope="module")
def converter(tiny_model, tiny_corpus) -> Converter:
    """The tiny model with an n-gram of everything seen (the shipped cut, 3 times, leaves
    twenty sentences with characters alone)."""
    plain = Converter.from_pretrained(tiny_model, backend="torch")
    text = load_prepared(tiny_corpus)["train"].tokenized(plain.tokenizer)
    ngram = CharNgram.build(text.chars, text.offsets, plain.tokenizer.char_offset,
                            plain.tokenizer.n_chars, min_count=1)
    return Converter(plain.scorer, plain.tokenizer, ngram=ngram)


def test_the_ngram_predicts_the_next_character_of_a_known_sentence(converter):
    found = converter.predict("我爱北京天安", k=5)
    assert found[0].hanzi == "门"
    assert len(found) == 5 and all(is_hanzi(c) for p in found for c in p.hanzi)
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)


def test_words_and_the_length_bonus_make_whole_words_win(converter):
    words = WordModel({"天安门": -3.0, "天气": -3.0, "北京": -3.0},
                      {"天安门": "tian'an'men", "天气": "tian'qi", "北京": "bei'jing"})
    chars = converter.tokenizer.chars
    plain = Predictor(converter.ngram, chars, words)
    bonus = Predictor(converter.ngram, chars, words, length_bonus=3.0, word_weight=0.5)
    assert plain.predict("我爱北京", 1)[0].hanzi == "天"  # a chain only loses as it grows
    assert bonus.predict("我爱北京", 1)[0].hanzi == "天安门"


def test_prediction_options_and_edges(converter, tiny_model):
    assert len(converter.predict("", k=3)) == 3  # the start of a text
    assert converter.predict("我爱北京天安", k=1, traditional=True)[0].hanzi == "門"
    assert converter.predict("我爱", k=0) == []
    assert converter.predict("ascii only, 😀", k=2)  # unknown characters: a fresh start
    no_ngram = Converter.from_pretrained(tiny_model, backend="torch", ngram=None)
    assert no_ngram.predict("我爱北京") == []


def test_learned_phrases_lead_with_the_word_that_follows_the_context(converter):
    words = WordModel({"北京": -3.0, "看看": -3.0, "上海": -3.0},
                      {"北京": "bei'jing", "看看": "kan'kan", "上海": "shang'hai"})
    predictor = Predictor(converter.ngram, converter.tokenizer.chars, words)
    learned = UserDict({"我想去北京看看": 5.0, "我们去北京玩": 1.0, "去上海": 9.0})
    # the longest tail of the context found in a phrase first: 我们去北京 -> 玩
    found = [p.hanzi for p in predictor.predict("昨天我们去北京", 5, learned)]
    assert found[:2] == ["玩", "看看"] and len(found) == 5 and len(set(found)) == 5
    assert [p.hanzi for p in predictor.continuations("我想", learned)] == ["去"]
    assert predictor.continuations("北京看看", learned) == []  # nothing follows it
    assert predictor.continuations("京", learned) == []  # one character says too little


def test_what_the_converter_learns_is_predicted(converter):
    converter.learn("tamenzhengzaikaihui", "他们正在开会")
    assert converter.predict("我们正在", 1)[0].hanzi == "开"  # no word list here: characters
    converter.forget()
    assert converter.predict("我们正在", 1)[0].score < 0
