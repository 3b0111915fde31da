"""pinzi.evaluate (clauses, input forms, metrics, driver, peer pipes), `pinzi eval`, and the
benchmarks in bench/ run on tiny inputs with a fake peer engine."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import SENTENCES
from typer.testing import CliRunner

from pinzi.cli import app
from pinzi.evaluate import (
    PEER_ENGINES,
    Clause,
    PeerEngine,
    PeerError,
    char_correct,
    clauses_from_lines,
    evaluate_lines,
    peer_names,
    peers_installed,
    pinyin_input,
    read_clauses,
    score,
    split_clauses,
)
from pinzi.pinyin import annotate

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
TEXT = "，".join(SENTENCES[:4]) + "。\n" + "；".join(SENTENCES[4:8]) + "！\n"  # 8 clauses


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Convert on one thread: with the cores busy (tests run beside training jobs), spinning
    torch threads make the tiny model's conversions tens of times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# ---- metrics ------------------------------------------------------------------------------------
def test_char_correct_counts_positions_and_zeroes_wrong_lengths():
    assert char_correct("我爱北京", "我爱背景") == 2
    assert char_correct("天安门", "天安") == 0
    assert char_correct("天安门", "天安门门") == 0
    assert char_correct("你好", "你好") == 2


def test_score_by_hand():
    golds = ["我爱北京", "你好", "天安门"]
    outputs = ["我爱背景", "你好", "天安"]
    ranked = [["我爱背景", "我爱北京"], ["你好"], ["天安", "天按"]]
    result = score(golds, outputs, ranked)
    assert result == {"clauses": 3, "chars": 9, "char_acc": 4 / 9, "exact": 1 / 3,
                      "length_errors": 1, "p_at_k": 2 / 3}
    assert "p_at_k" not in score(golds, outputs)
    with pytest.raises(ValueError):
        score(golds, outputs[:2])


# ---- clauses and input forms --------------------------------------------------------------------
def test_split_clauses_keeps_only_all_hanzi_clauses():
    line = "我爱北京，天 安门！abc你好。二〇二四年、2024年（注）"
    assert split_clauses(line) == ["我爱北京", "天安门", "二〇二四年", "注"]
    assert split_clauses("") == []


def test_input_forms_of_a_known_sentence():
    [clause] = clauses_from_lines(["我爱北京天安门。"])
    assert clause == Clause("我爱北京天安门", ("wo", "ai", "bei", "jing", "tian", "an", "men"))
    assert pinyin_input(clause, "spaced") == "wo ai bei jing tian an men"
    assert pinyin_input(clause, "continuous") == "woaibeijingtiananmen"
    # every syllable that has an initial is cut to it; zero-initial ones (ai, an) stay whole
    assert pinyin_input(clause, "abbreviated", fraction=1.0) == "w ai b j t an m"
    assert pinyin_input(clause, "abbreviated", fraction=0.0) == "wo ai bei jing tian an men"
    with pytest.raises(ValueError):
        pinyin_input(clause, "typo")


def test_abbreviation_is_seeded_and_takes_the_fraction():
    clauses = [Clause(str(i), ("zhong",) * 10) for i in range(300)]

    def typed(seed: int) -> list[str]:
        return [pinyin_input(c, "abbreviated", seed=seed) for c in clauses]

    first = typed(7)
    assert typed(7) == first  # deterministic for a seed, and per clause, whatever the order
    assert [pinyin_input(c, "abbreviated", seed=7) for c in reversed(clauses)] == first[::-1]
    assert typed(8) != first
    syllables = " ".join(first).split()
    assert 0.26 < syllables.count("zh") / len(syllables) < 0.34
    assert set(syllables) == {"zh", "zhong"}


def test_read_clauses_text_tsv_and_pinyin_tsv(tmp_path):
    text = tmp_path / "gold.txt.gz"
    with gzip.open(text, "wt", encoding="utf-8") as f:
        f.write(TEXT)
    assert [c.hanzi for c in read_clauses(text)] == SENTENCES[:8]
    assert len(read_clauses(text, limit=3)) == 3

    labelled = tmp_path / "reviews.tsv"
    labelled.write_text("label\ttext\n1\t房间很好，早餐一般。\n0\t太吵了\n", encoding="utf-8")
    assert [c.hanzi for c in read_clauses(labelled)] == ["房间很好", "早餐一般", "太吵了"]

    pairs = tmp_path / "ime.tsv"
    pairs.write_text("pinyin\thanzi\nhang zou\t行走\nwo ai\t我爱北京\n", encoding="utf-8")
    given, annotated = read_clauses(pairs)
    assert given == Clause("行走", ("hang", "zou"))  # the file's own pinyin is the input
    assert annotated == Clause("我爱北京", ("wo", "ai", "bei", "jing"))  # 2 syllables for 4 hanzi


# ---- the driver ---------------------------------------------------------------------------------
class Scripted:
    """A converter that answers from a table and records what it was given."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.seen = answers, []

    def candidates(self, pinyin: str, k: int = 5) -> list[tuple[str, float]]:
        self.seen.append((pinyin, k))
        return [(text, -float(i)) for i, text in enumerate(self.answers.get(pinyin, []))][:k]


def test_evaluate_lines_scores_top1_and_nbest():
    converter = Scripted({"nihao": ["你号", "你好"], "shijie": ["世界"]})
    result = evaluate_lines(converter, ["你好，世界！", "天安门"], form="continuous", nbest=5)
    assert converter.seen == [("nihao", 5), ("shijie", 5), ("tiananmen", 5)]
    assert result["clauses"] == 3 and result["chars"] == 7
    assert result["char_acc"] == pytest.approx(3 / 7)  # 你 + 世界; nothing for 天安门
    assert result["exact"] == pytest.approx(1 / 3)
    assert result["p_at_k"] == pytest.approx(2 / 3)
    assert result["length_errors"] == 1
    assert evaluate_lines(converter, ["你好，世界"], limit=1)["clauses"] == 1


def test_evaluate_lines_with_the_tiny_model(tiny_model):
    from pinzi.converter import Converter

    converter = Converter.from_pretrained(tiny_model)
    spaced = evaluate_lines(converter, SENTENCES, form="spaced")
    assert spaced["clauses"] == len(SENTENCES)
    assert spaced["char_acc"] == spaced["exact"] == spaced["p_at_k"] == 1.0
    abbreviated = evaluate_lines(converter, SENTENCES, form="abbreviated")
    assert abbreviated == {**evaluate_lines(converter, SENTENCES, form="abbreviated"),
                           "clauses_per_s": abbreviated["clauses_per_s"]}
    assert abbreviated["p_at_k"] >= abbreviated["exact"]


# ---- pinzi eval ---------------------------------------------------------------------------------
def test_cli_eval(tiny_model, tmp_path):
    gold = tmp_path / "gold.txt"
    gold.write_text(TEXT, encoding="utf-8")
    result = runner.invoke(app, ["eval", "-m", str(tiny_model), str(gold), "--form", "all",
                                 "--limit", "5", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["form"] for r in rows] == ["spaced", "continuous", "abbreviated"]
    assert rows[0]["clauses"] == 5 and rows[0]["char_acc"] == 1.0 and rows[0]["file"] == str(gold)

    result = runner.invoke(app, ["eval", "-m", str(tiny_model), str(gold)])
    assert result.exit_code == 0
    assert "gold.txt" in result.stdout and "spaced" in result.stdout
    assert "100.00%" in result.stdout and "continuous" not in result.stdout

    result = runner.invoke(app, ["eval", "-m", str(tiny_model), str(gold), "--backend", "onnx"])
    assert result.exit_code == 2 and "pinzi export" in result.stderr  # no model.onnx there


def test_cli_eval_bleu(tiny_model, tmp_path):
    pytest.importorskip("sacrebleu")
    gold = tmp_path / "gold.txt"
    gold.write_text(TEXT, encoding="utf-8")
    result = runner.invoke(app, ["eval", "-m", str(tiny_model), str(gold), "--bleu", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["bleu"] == pytest.approx(100.0)


def test_cli_eval_user_errors(tmp_path, monkeypatch):
    result = runner.invoke(app, ["eval", str(tmp_path / "missing.txt")])
    assert result.exit_code == 2 and "no such test file" in result.output
    gold = tmp_path / "gold.txt"
    gold.write_text(TEXT, encoding="utf-8")
    result = runner.invoke(app, ["eval", str(gold), "--form", "shouted"])
    assert result.exit_code == 2 and "unknown --form" in result.output
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # as if it were not installed
    result = runner.invoke(app, ["eval", str(gold), "--bleu"])
    assert result.exit_code == 2 and "pinzi[bench]" in result.output


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
        assert 0 <= system["char_acc"] <= 1
    torch_run, onnx_run = report["systems"]["pinzi (torch)"], report["systems"]["pinzi (onnx)"]
    assert torch_run["char_acc"] == onnx_run["char_acc"]  # the same conversions
    assert torch_run["peak_rss_mb"] > 50  # a process with torch and a model
    assert json.loads(out.read_text(encoding="utf-8"))["clauses"] == 8


def test_fixed_length_inputs_wrap_around_the_text():
    speed = load_bench("speed")
    clauses = clauses_from_lines(SENTENCES[:2])  # 7 + 6 characters
    cut = speed.fixed_length(clauses, 4, 5)
    assert [c.hanzi for c in cut] == ["我爱北京", "天安门今", "天天气很", "北京天安", "门今天天"]
    assert all(len(c.syllables) == 4 for c in cut)
    assert cut[0].syllables == ("wo", "ai", "bei", "jing")
