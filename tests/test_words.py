"""Word knowledge in decoding (pinzi.words): segmentation scores, the file, and the converter's
re-ranking of its n-best with them."""

from __future__ import annotations

import gzip
import math

import pytest

from pinzi import Converter
from pinzi.converter import DecodingConfig
from pinzi.errors import ModelLoadError
from pinzi.words import WORDS_FILE, WordModel

WORDS = {"北京": -5.0, "天安门": -6.0, "我": -3.0, "爱": -4.0, "背景": -7.0, "北": -6.0,
         "京": -8.0}


def test_the_best_segmentation_is_scored():
    model = WordModel(WORDS)
    assert model.score("北京") == -5.0  # one word beats 北 + 京 (-14)
    assert model.score("我爱北京天安门") == -3.0 - 4.0 - 5.0 - 6.0
    assert model.score("我爱背景") == -3.0 - 4.0 - 7.0
    # A character no word covers costs ten times less than the rarest word.
    assert model.unknown == pytest.approx(-8.0 - math.log(10))
    assert model.score("北x京") == -6.0 - 8.0  # other characters end a run of hanzi
    assert model.score("") == 0.0 and model.score("hello") == 0.0


def write_words(folder, lines: list[str]) -> None:
    with gzip.open(folder / WORDS_FILE, "wt", encoding="utf-8") as f:
        f.write("# a comment\n# another\n" + "".join(line + "\n" for line in lines))


def test_the_file_holds_log10_probabilities(tmp_path):
    assert WordModel.load(tmp_path) is None  # no word list: characters alone
    write_words(tmp_path, ["北京\t-2.0", "天安门\t-3.5"])
    model = WordModel.load(tmp_path)
    assert model.logprobs == {"北京": pytest.approx(-2.0 * math.log(10)),
                              "天安门": pytest.approx(-3.5 * math.log(10))}
    assert model.longest == 3


@pytest.mark.parametrize("lines", [["北京"], ["北京\tmany"], ["北京\tnan"], []])
def test_a_damaged_file_says_so(tmp_path, lines):
    write_words(tmp_path, lines)
    with pytest.raises(ModelLoadError, match="is damaged"):
        WordModel.load(tmp_path)
    (tmp_path / WORDS_FILE).write_bytes(b"not gzip")
    with pytest.raises(ModelLoadError, match="is damaged"):
        WordModel.load(tmp_path)


def test_words_rerank_the_converters_nbest(tiny_model):
    plain = Converter.from_pretrained(tiny_model, backend="torch")
    assert plain.words is None  # the tiny model has no word list
    best = plain.candidates("bei jing", k=8)
    assert best[0][0] == "北京"
    runner_up = best[1][0]
    # A word list that knows only the runner-up makes it win with enough weight...
    words = WordModel({runner_up: -1.0})
    heavy = Converter(plain.scorer, plain.tokenizer, ngram=plain.ngram, words=words,
                      decoding=DecodingConfig(word_weight=5.0, word_nbest=8))
    assert heavy.convert("bei jing") == runner_up
    # ...and changes nothing at weight 0.
    off = Converter(plain.scorer, plain.tokenizer, ngram=plain.ngram, words=words,
                    decoding=DecodingConfig(word_weight=0.0))
    assert off.candidates("bei jing", k=8) == best


def test_from_pretrained_reads_the_folders_word_list(tiny_model, tmp_path):
    folder = tmp_path / "with-words"
    folder.mkdir()
    for item in tiny_model.iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    write_words(folder, ["北京\t-2.0"])
    converter = Converter.from_pretrained(folder, backend="torch")
    assert converter.words is not None and "北京" in converter.words.logprobs
