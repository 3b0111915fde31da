"""The benchmarks in bench/ and their peer-engine plumbing (bench/peers.py), run on tiny inputs
with a fake peer engine."""

from __future__ import annotations

import gzip
import importlib.util
import json
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
