"""Word knowledge in decoding (pinzi.words): segmentation scores, the file, and the converter's
re-ranking of its n-best with them."""

from __future__ import annotations

import gzip
import math

import pytest

from pinzi import Converter
from pinzi.converter import FITTING_PIECES
from pinzi.decoding_config import DecodingConfig
from pinzi.errors import ModelLoadError
from pinzi.pinyin import parse
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


def test_the_file_holds_log10_probabilities_and_readings(tmp_path):
    assert WordModel.load(tmp_path) is None  # no word list: characters alone
    write_words(tmp_path, ["北京\t-2.0\tbei'jing", "天安门\t-3.5\ttian'an'men"])
    model = WordModel.load(tmp_path)
    assert model.logprobs == {"北京": pytest.approx(-2.0 * math.log(10)),
                              "天安门": pytest.approx(-3.5 * math.log(10))}
    assert model.readings == {"北京": "bei'jing", "天安门": "tian'an'men"}
    assert model.longest == 3


@pytest.mark.parametrize(("lines", "problem"), [
    (["北京"], "a line without its three fields"),
    (["北京\t-2.0"], "a line without its three fields"),
    (["北京\tmany\tbei'jing"], "could not convert"),
    (["北京\tnan\tbei'jing"], "not a log-probability"),
    (["北京\t2.0\tbei'jing"], "not a log-probability"),  # a probability over 1
    (["北京\t-2.0\tbei'jingx"], "a reading with 'jingx', which is no syllable"),
    (["北京\t-2.0\tbei"], "a reading of more or fewer syllables than its word"),
    ([], "at least one word")])
def test_a_damaged_file_says_so(tmp_path, lines, problem):
    write_words(tmp_path, lines)
    with pytest.raises(ModelLoadError, match=f"is damaged: {WORDS_FILE}: .*{problem}"):
        WordModel.load(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not gzip", "truncated"])
def test_a_file_that_is_no_gzip_says_so(tmp_path, content):
    write_words(tmp_path, [f"北京人\t-{i + 1}\tbei'jing'ren" for i in range(1000)])
    assert WordModel.load(tmp_path) is not None
    path = tmp_path / WORDS_FILE
    path.write_bytes(path.read_bytes()[:100] if content == "truncated" else content)
    with pytest.raises(ModelLoadError, match=f"model folder .* is damaged: {WORDS_FILE}"):
        WordModel.load(tmp_path)


READINGS = {"北京": "bei'jing", "背景": "bei'jing", "天安门": "tian'an'men", "北": "bei",
            "我爱": "wo'ai"}


def test_words_fitting_the_typed_pieces():
    model = WordModel({w: -float(i) for i, w in enumerate(READINGS)}, READINGS)
    bei, jing, tian, an, men = (frozenset({s}) for s in ("bei", "jing", "tian", "an", "men"))
    b = frozenset({"ba", "bei", "bu"})  # an initial piece: every syllable it may start
    assert model.fitting([bei, jing]) == [(0, "北京"), (0, "背景")]  # the most probable first
    assert model.fitting([bei, jing], per_start=1) == [(0, "北京")]
    assert model.fitting([b, frozenset({"jing", "jin"})]) == [(0, "北京"), (0, "背景")]
    assert model.fitting([tian, an, men, bei, jing]) == [(0, "天安门"), (3, "北京"), (3, "背景")]
    assert model.fitting([tian, an]) == []  # 天安门 needs a third syllable
    assert model.fitting([bei, None, jing]) == []  # pass-through text between them
    assert model.fitting([frozenset({"bei", "fei"}), jing]) == [(0, "北京"), (0, "背景")]


def test_a_long_fitting_word_is_not_crowded_out_by_short_ones():
    readings = {"生日": "sheng'ri", "私人": "si'ren", "散热": "san're",
                "生日快乐": "sheng'ri'kuai'le"}
    model = WordModel({w: -float(i) for i, w in enumerate(readings)}, readings)
    s = frozenset({"sheng", "si", "san"})  # s: its syllables, sh's too (srkl)
    r, kuai, le = frozenset({"ri", "ren", "re"}), frozenset({"kuai"}), frozenset({"le"})
    # One word per start and length: the two-syllable words compete, the long one has its own.
    assert model.fitting([s, r, kuai, le], per_start=1) == [(0, "生日"), (0, "生日快乐")]
    assert model.fitting([s, r, kuai, le], per_start=2) == [(0, "生日"), (0, "私人"),
                                                            (0, "生日快乐")]


def test_words_rerank_the_converters_nbest(tiny_model):
    plain = Converter.from_pretrained(tiny_model, backend="torch")
    assert plain.words is None  # the tiny model has no word list
    best = plain.candidates("bei jing", k=8, partial=False)
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
    assert off.candidates("bei jing", k=8, partial=False) == best


def test_from_pretrained_reads_the_folders_word_list(tiny_model, tmp_path):
    folder = tmp_path / "with-words"
    folder.mkdir()
    for item in tiny_model.iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    write_words(folder, ["北京\t-2.0\tbei'jing"])
    converter = Converter.from_pretrained(folder, backend="torch")
    assert converter.words is not None and "北京" in converter.words.logprobs


def test_fitting_words_are_looked_for_in_input_method_buffers_only():
    converter = Converter.from_pretrained()  # the shipped model: its words fit typed pieces
    assert (0, "北京") in converter._fitting_words(parse("bj"))
    # a pasted text or a hostile client: characters alone
    assert converter._fitting_words(parse("bj" * (FITTING_PIECES // 2 + 1))) == []
