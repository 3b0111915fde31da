"""pinzi.evaluate (clauses, input forms, metrics, driver) and `pinzi eval`."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
from conftest import SENTENCES
from typer.testing import CliRunner

from pinzi.cli import app
from pinzi.errors import DataError
from pinzi.evaluate import (
    Clause,
    char_correct,
    clauses_from_lines,
    evaluate_lines,
    pinyin_input,
    read_clauses,
    score,
    split_clauses,
)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
TEXT = "，".join(SENTENCES[:4]) + "。\n" + "；".join(SENTENCES[4:8]) + "！\n"  # 8 clauses




@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Convert on one thread: with the cores busy (tests run beside training jobs), spinning
    torch threads make the tiny model's conversions tens of times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)




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


def test_a_byte_order_mark_costs_no_clause(tmp_path):
    for name, body in (("bom.txt", TEXT), ("bom.tsv", "pinyin\thanzi\nni hao\t你好\n"),
                       ("bom.tsv.gz", "text\n我爱北京\n")):
        path = tmp_path / name
        data = ("\ufeff" + body).encode("utf-8")
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        plain = tmp_path / f"plain-{name}"
        plain.write_bytes(gzip.compress(body.encode()) if name.endswith(".gz") else body.encode())
        assert read_clauses(path) == read_clauses(plain) != [], name
    with pytest.raises(DataError, match="cannot read"):
        read_clauses(tmp_path / "missing.txt")


# ---- the driver ---------------------------------------------------------------------------------
class Scripted:
    """A converter that answers from a table and records what it was given."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.seen = answers, []

    def candidates(self, pinyin: str, k: int = 5, *,
                   partial: bool = True) -> list[tuple[str, float]]:
        assert not partial  # accuracy is of whole conversions
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
    assert result.exit_code == 2 and "'shouted' is not one of" in result.output
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # as if it were not installed
    result = runner.invoke(app, ["eval", str(gold), "--bleu"])
    assert result.exit_code == 2 and "pinzi[bench]" in result.output
