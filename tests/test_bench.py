"""The benchmarks in bench/ and their peer-engine plumbing (bench/peers.py), run on tiny inputs
with a fake peer engine."""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import SENTENCES

from pinzi.evaluate import clauses_from_lines
from pinzi.readings import annotate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # the benches import their plumbing as `peers`
from peers import PEER_ENGINES, PeerEngine, PeerError, peer_names, peers_installed  # noqa: E402

TEXT = "，".join(SENTENCES[:4]) + "。\n" + "；".join(SENTENCES[4:8]) + "！\n"  # 8 clauses


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fake_peers(tmp_path_factory) -> Path:
    """A peer harness whose engines obey the pipe protocol without converting anything."""
    root = tmp_path_factory.mktemp("peers")
    (root / "build").mkdir()
    (root / "bin").mkdir()
    scripts = {  # `echo` answers every line with the pinyin, spaces dropped; `dead` exits at once
        "echo": "while IFS= read -r line; do echo \"$line\" | tr -d ' '; done",
        "dead": "exit 3",
    }
    for name, body in scripts.items():
        path = root / "bin" / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return root


# ---- peer engines -------------------------------------------------------------------------------
def test_peer_engine_pipe_protocol(fake_peers):
    with PeerEngine(fake_peers, "echo") as engine:
        assert engine.startup_s > 0
        assert engine.convert("wo ai") == "woai"
        assert engine.convert_all([f"ni hao {i}" for i in range(200)]) == [
            f"nihao{i}" for i in range(200)]
        assert engine.convert("bei jing") == "beijing"  # the pipe is still in step
    with pytest.raises(PeerError, match="dead stopped answering"):
        PeerEngine(fake_peers, "dead")


def test_peer_names(fake_peers, tmp_path):
    assert peers_installed(fake_peers) and not peers_installed(tmp_path)
    assert peer_names("all", fake_peers) == list(PEER_ENGINES)
    assert peer_names("all", tmp_path) == []  # no harness: the benches run without peers
    assert peer_names("none", fake_peers) == []
    assert peer_names("echo, echo --flag", fake_peers) == ["echo", "echo --flag"]
    with pytest.raises(PeerError, match="libime"):
        peer_names("libime", tmp_path)


# ---- bench/ -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data root with two of the benchmark's test sets: text and pinyin TSV."""
    root = tmp_path_factory.mktemp("data")
    (root / "sighan2005").mkdir()
    with gzip.open(root / "sighan2005" / "pku_test.txt.gz", "wt", encoding="utf-8") as f:
        f.write(TEXT)
    (root / "thu_ime_homework").mkdir()
    with gzip.open(root / "thu_ime_homework" / "test2020.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("pinyin\thanzi\n")
        f.writelines(f"{' '.join(annotate(s))}\t{s}\n" for s in SENTENCES[8:])
    return root


def test_accuracy_bench(tiny_model, data_root, fake_peers, tmp_path):
    accuracy = load_bench("accuracy")
    out = tmp_path / "acc.md"
    results = accuracy.main(["--model", str(tiny_model), "--data-root", str(data_root),
                             "--sets", "pku,thu2020", "--limit", "3", "--peers", "echo",
                             "--peers-dir", str(fake_peers), "--out", str(out)])
    assert list(results) == ["pku", "thu2020"]
    pku = results["pku"]
    assert pku["clauses"] == 3 and pku["chars"] == sum(map(len, SENTENCES[:3]))
    assert set(pku["systems"]["pinzi"]) == {"spaced", "continuous", "abbreviated"}
    assert pku["systems"]["pinzi"]["spaced"]["char_acc"] == 1.0
    assert pku["systems"]["echo"]["spaced"]["char_acc"] == 0.0  # it answers in pinyin
    table = out.read_text(encoding="utf-8")
    assert "| pku | 3 | 20 | pinzi | 100.00 | 100.00 | 100.00 |" in table
    assert "| **mean** |  |  | echo | 0.00 | 0.00 | – | – |" in table
    saved = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert saved["results"] == json.loads(json.dumps(results))


def test_accuracy_bench_rejects_unknown_sets(data_root):
    with pytest.raises(SystemExit):
        load_bench("accuracy").main(["--data-root", str(data_root), "--sets", "nope"])


def test_speed_bench(tiny_model, data_root, fake_peers, tmp_path):
    speed = load_bench("speed")
    out = tmp_path / "speed.json"
    report = speed.main(["--model", str(tiny_model), "--lengths", "4,8", "--repeats", "3",
                         "--warmup", "1", "--clauses", "8", "--workers", "1",
                         "--data", str(data_root / "sighan2005" / "pku_test.txt.gz"),
                         "--peers", "echo", "--peers-dir", str(fake_peers), "--out", str(out),
                         "--backends", "torch,onnx"])
    assert list(report["systems"]) == ["pinzi (torch)", "pinzi (onnx)", "echo"]
    for system in report["systems"].values():
        assert set(system["latency_ms"]) == {"4", "8"}
        assert 0 < system["latency_ms"]["4"]["p50"] <= system["latency_ms"]["4"]["p99"]
        assert system["clauses_per_s"] > 0 and system["load_s"] > 0
    torch_run, onnx_run = report["systems"]["pinzi (torch)"], report["systems"]["pinzi (onnx)"]
    assert torch_run["char_acc"] == onnx_run["char_acc"] == 1.0  # it knows these sentences
    assert report["systems"]["echo"]["char_acc"] == 0.0  # it answers in pinyin
    assert torch_run["peak_rss_mb"] > 50  # a process with torch and a model
    assert json.loads(out.read_text(encoding="utf-8"))["clauses"] == 8


def test_fixed_length_inputs_wrap_around_the_text():
    speed = load_bench("speed")
    clauses = clauses_from_lines(SENTENCES[:2])  # 7 + 6 characters
    cut = speed.fixed_length(clauses, 4, 5)
    assert [c.hanzi for c in cut] == ["我爱北京", "天安门今", "天天气很", "北京天安", "门今天天"]
    assert all(len(c.syllables) == 4 for c in cut)
    assert cut[0].syllables == ("wo", "ai", "bei", "jing")


# ---- next-word prediction and simulated typing ----------------------------------------------
@pytest.fixture(scope="module")
def worded_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with a word list of the words in SENTENCES (prediction needs one)."""
    from pinzi.words import WORDS_FILE

    folder = tmp_path_factory.mktemp("worded")
    for item in tiny_model.iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
    words = ["北京", "天安门", "今天", "天气", "我们", "公园", "中国", "人民", "银行", "工作",
             "你好", "世界", "学习", "快乐", "明天", "首都", "上海", "旅游", "生日"]
    with gzip.open(folder / WORDS_FILE, "wt", encoding="utf-8") as f:
        f.writelines(f"{word}\t-2.0\t{chr(39).join(annotate(word))}\n" for word in words)
    return folder


@pytest.fixture(scope="module")
def held_out_root(tmp_path_factory) -> Path:
    """A data root with the kdconv set's test and validation files, both TEXT."""
    root = tmp_path_factory.mktemp("held-out")
    (root / "kdconv_dialog").mkdir()
    for name in ("test", "dev"):
        with gzip.open(root / "kdconv_dialog" / f"{name}.txt.gz", "wt", encoding="utf-8") as f:
            f.write(TEXT + "第2句有数字，龘\n")  # a clause with a digit is no clause
    return root


def test_held_out_clauses_are_sampled_or_consecutive(held_out_root):
    predict = load_bench("predict")
    path = held_out_root / "kdconv_dialog" / "test.txt.gz"
    every = predict.held_out_clauses(path, 0, 1)
    assert every == SENTENCES[:8] + ["龘"]
    sample = predict.held_out_clauses(path, 4, 1)
    assert sample == predict.held_out_clauses(path, 4, 1)  # seeded
    assert len(sample) == 4 and sample == sorted(sample, key=every.index)  # in file order
    run = predict.held_out_clauses(path, 3, 1, consecutive=True)
    start = every.index(run[0])
    assert run == every[start:start + 3]
    with pytest.raises(SystemExit, match="cannot read"):
        predict.held_out_clauses(held_out_root / "nope.txt.gz", 3, 1)


def test_boundaries_follow_each_word_but_the_last():
    predict = load_bench("predict")
    words = {"我爱北京天安门": ["我", "爱", "北京", "天安门"]}.get
    rng = random.Random(0)
    assert predict.boundaries("我爱北京天安门", words, 0, rng) == [
        ("我", "爱"), ("我爱", "北京"), ("我爱北京", "天安门")]
    sample = predict.boundaries("我爱北京天安门", words, 2, rng)
    assert len(sample) == 2 and sample == sorted(sample, key=lambda item: len(item[0]))


def test_the_grid_ranks_as_the_predictor_does(worded_model):
    from pinzi import Converter
    from pinzi.predict import Predictor

    predict = load_bench("predict")
    converter = Converter.from_pretrained(worded_model, backend="torch")
    items = [item for clause in SENTENCES
             for item in predict.boundaries(clause, converter.words.split, 0, random.Random(0))]
    pairs = predict.grid_hit_counts(converter, items, (0.0, 3.0), (0.0, 0.5))
    for (length_bonus, word_weight), counts in pairs.items():
        ranker = Predictor(converter.ngram, converter.tokenizer.chars, converter.words,
                           length_bonus=length_bonus, word_weight=word_weight)
        found = predict.hit_counts(
            lambda context, k, ranker=ranker: [p.hanzi for p in ranker.predict(context, k)],
            items)
        assert counts == {"top1": found["top1"], "top5": found["top5"]}
    assert pairs[0.0, 0.5]["top5"] > 0  # the tiny model has learned these sentences


def test_predict_bench(worded_model, held_out_root, capsys):
    from pinzi.words import WordModel

    predict = load_bench("predict")
    split = WordModel.load(worded_model).split
    boundaries = sum(len(split(clause)) - 1 for clause in SENTENCES[:8] + ["龘"])
    report = predict.main(["--model", str(worded_model), "--data-root", str(held_out_root),
                           "--sets", "kdconv", "--limit", "0", "--boundaries", "0"])
    assert list(report) == ["kdconv", "overall"]
    kdconv = report["kdconv"]
    assert kdconv["boundaries"] == boundaries and kdconv == report["overall"]
    assert list(kdconv["systems"]) == ["pinzi", "n-gram", "word_weight 0", "length_bonus 0"]
    for counts in kdconv["systems"].values():
        assert counts["top1"] <= counts["top5"] <= kdconv["boundaries"]
    # The n-gram predicts characters: only single-character targets can be hit.
    assert kdconv["systems"]["n-gram"]["top5"] <= kdconv["single"] < kdconv["boundaries"]
    assert kdconv["systems"]["pinzi"]["top5"] > 0
    out = capsys.readouterr().out
    assert "on the test split" in out and f"| overall | {boundaries} |" in out
    grid = predict.main(["--model", str(worded_model), "--data-root", str(held_out_root),
                         "--sets", "kdconv", "--grid", "--bonuses", "0,1", "--weights", "0"])
    assert set(grid["grid"]) == {(0.0, 0.0), (1.0, 0.0)}
    assert "validation boundaries" in capsys.readouterr().out


def test_predicting_with_learning_sees_a_repeated_text(worded_model):
    from pinzi import Converter

    predict = load_bench("predict")
    converter = Converter.from_pretrained(worded_model, backend="torch")
    text = SENTENCES[:6] * 2  # what was typed once comes again
    counts = predict.learning_hit_counts(converter, text, 0, random.Random(0))
    assert counts["boundaries"]["all"] == 2 * sum(
        len(converter.words.split(clause)) - 1 for clause in SENTENCES[:6])
    assert counts["on"]["top1"] > counts["off"]["top1"]
    assert counts["off"]["top5"] <= counts["on"]["top5"] <= counts["boundaries"]["all"]


def test_predict_bench_refuses_bad_options(tiny_model, held_out_root):
    predict = load_bench("predict")
    for argv in (["--grid", "--split", "test"], ["--sets", "nope"], ["--limit", "-1"]):
        with pytest.raises(SystemExit):
            predict.parse_args(argv)
    with pytest.raises(SystemExit, match="no word list"):  # the tiny model has none
        predict.main(["--model", str(tiny_model), "--data-root", str(held_out_root),
                      "--sets", "kdconv"])


def test_the_simulated_user_picks_the_rest_or_the_longest_right_start():
    from pinzi.converter import Candidate

    choose = load_bench("typing_sim").choose
    syllables, buffer = ["bei", "jing", "tian", "an", "men"], "beijingtiananmen"
    rest = Candidate("北京天安门", 0.0, 16)
    start = Candidate("北京", -1.0, 7)
    char = Candidate("北", -2.0, 3)
    assert choose([start, char, rest], "北京天安门", syllables, buffer) == rest
    assert choose([char, start, Candidate("背景", 0.0, 7)], "北京天安门", syllables,
                  buffer) == start
    # Right hanzi over the wrong stretch of pinyin are not picked.
    assert choose([Candidate("北", 0.0, 7), Candidate("北京天安", 0.0, 16)], "北京天安门",
                  syllables, buffer) is None
    # The separators a candidate covers are no pinyin of its own.
    spaced = Candidate("北京", 0.0, 9)
    assert choose([char, spaced], "北京天安门", syllables, "bei'jing tiananmen") == spaced


def test_typing_an_unknown_character_fails_and_is_not_learned(worded_model):
    from pinzi import Converter
    from pinzi.learning import LearnedWords

    typing_sim = load_bench("typing_sim")
    converter = Converter.from_pretrained(worded_model, backend="torch",
                                          learned=LearnedWords())
    known = typing_sim.type_clause(converter, "我爱北京", ["wo", "ai", "bei", "jing"],
                                   learn=True)
    assert (known.selections, known.first_right, known.failures) == (1, 1, 0)
    assert len(converter.learned) == 1  # the one pick
    # 龘 is no character of the tiny model: nothing on any page finishes the clause.
    unknown = typing_sim.type_clause(converter, "北京龘", ["bei", "jing", "da"], learn=True)
    assert unknown.failures == 1 and unknown.first_right == 0
    assert unknown.selections == 2  # 北京, then 龘 typed alone
    assert unknown.refused == 2  # 龘, and the clause with it


def test_typing_sim_bench(worded_model, held_out_root, capsys):
    typing_sim = load_bench("typing_sim")
    report = typing_sim.main(["--model", str(worded_model), "--data-root",
                              str(held_out_root), "--sets", "kdconv", "--limit", "0"])
    assert list(report) == ["kdconv", "overall"]
    off, on = report["kdconv"]["off"], report["kdconv"]["on"]
    assert off.clauses == on.clauses == 9  # the eight sentences and 龘
    assert off.failures == on.failures == 1 and off.refused == 0 < on.refused
    assert off.selections >= off.clauses and off.first_right <= off.clauses
    assert report["overall"] == report["kdconv"]
    assert "| kdconv | on | 9 |" in capsys.readouterr().out
