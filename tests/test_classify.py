"""Text classification end to end (pinzi.classify): both kinds of base, full and LoRA training,
the settings, the data files, the CLI and the server.

Every model here is tiny and built in the test (a random pinzi encoder, a 2-layer BERT with a
15-character vocabulary), so the whole file runs in seconds and never touches the network.
The figures are tested in test_metrics.py, the training task in test_classify_task.py and the
inference pieces in test_classifier.py.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from conftest import write_tsv
from typer.testing import CliRunner

from pinzi.classifier import Prediction, TextClassifier
from pinzi.classify import train_classifier
from pinzi.classify_task import HEADS, load_base
from pinzi.cli import app
from pinzi.errors import DataError, ModelLoadError, SettingsError
from pinzi.io import read_labelled
from pinzi.learning import LearnedWords
from pinzi.lora import LoraSettings, apply_lora

torch.set_num_threads(1)
runner = CliRunner()

SUBJECTS = ["菜", "服务", "环境", "房间", "味道", "价格"]
POSITIVE, NEGATIVE = "好棒", "差烂"
# A separable task: the label is whether the sentence says 好/棒 or 差/烂.
TRAIN = [(label, f"{s}{a}{w}") for label, words in (("1", POSITIVE), ("0", NEGATIVE))
         for s in SUBJECTS for a in "很真太" for w in words]
DEV = [(label, f"{s}非常{w}") for label, words in (("1", POSITIVE), ("0", NEGATIVE))
       for s in SUBJECTS for w in words]
# Learns TRAIN to 100% dev accuracy within 10-20 steps; stops early after that.
FAST_SETTINGS = dict(eval_every=10, save_every=60, batch_tokens=256, learning_rate=3e-3,
                     warmup_steps=5, patience=3)
FAST = [arg for key, value in FAST_SETTINGS.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def trained(files, tiny_base, tmp_path_factory) -> Path:
    """`train_classifier` on the separable task, with a test file (the dev file again)."""
    out = tmp_path_factory.mktemp("classifier")
    warnings = []
    summary = train_classifier(str(tiny_base), files["train"], files["dev"], out,
                               test_file=files["dev"], settings=dict(max_steps=60,
                                                                     **FAST_SETTINGS),
                               progress=False, warn=warnings.append)
    assert summary["dev"]["accuracy"] == 1.0
    assert warnings == []
    return out


# ---- learning -----------------------------------------------------------------------------------
def test_a_tiny_pinzi_encoder_learns_the_separable_task(trained, files):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == 1.0 and metrics["test"]["macro_f1"] == 1.0
    assert metrics["dev"]["auc"] == 1.0
    assert metrics["dev"]["file"] == str(files["dev"]) and metrics["dev"]["examples"] == len(DEV)
    for name in ("config.json", "model.safetensors", "vocab.json", "classify.json",
                 "confusion_dev.png", "confusion_test.png", "curves.png", "settings.json"):
        assert (trained / name).is_file(), name
    info = json.loads((trained / "classify.json").read_text())
    assert info["labels"] == ["0", "1"] and info["kind"] == "pinzi" and info["lora"] is False
    # the settings used: the classification defaults, the learning rate of the caller
    settings = json.loads((trained / "settings.json").read_text())
    assert settings["train"]["learning_rate"] == 3e-3 and settings["train"]["max_steps"] == 60
    assert settings["classify"] == {"metric": "accuracy", "max_length": 256,
                                    "class_weights": False, "oversample": False}

    classifier = TextClassifier.load(trained)
    answers = classifier.predict(["房间真棒", "", "味道太差", "   "])
    assert [answer.label for answer in answers] == ["1", "", "0", ""]
    assert answers[1].prob == 0.0 and answers[1].probs == {}
    assert set(answers[0].probs) == {"0", "1"}
    assert answers[0].prob == answers[0].probs["1"] > answers[0].probs["0"]
    assert answers[2].prob == answers[2].probs["0"] > answers[2].probs["1"]


def test_a_saved_classifier_keeps_its_number_of_labels(tmp_path):
    from pinzi.model import PinziConfig, PinziForClassification

    config = PinziConfig.from_preset("tiny", vocab_size=50, n_chars=45, num_labels=3,
                                     label_names=["a", "b", "c"])
    PinziForClassification(config).save_pretrained(tmp_path)
    again = PinziForClassification.from_pretrained(tmp_path)
    assert again.config.num_labels == 3 and again.classifier.out_features == 3
    assert again.config.label_names == ["a", "b", "c"]


def test_lora_trains_adapters_and_saves_a_plain_merged_model(files, tiny_base, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    losses = []
    summary = train_classifier(str(tiny_base), files["train"], files["dev"], tmp_path, lora=True,
                               settings=[dict(max_steps=30, eval_every=10, batch_tokens=256,
                                              learning_rate=1e-2, warmup_steps=3, patience=2),
                                         {"lora.rank": 4}],
                               progress=False, on_step=lambda step, loss: losses.append(loss))
    assert summary["dev"]["accuracy"] == 1.0
    assert len(losses) == summary["steps"] and losses[-1] < losses[0]
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert not [k for k in saved if "lora" in k or "base_layer" in k]
    base = load_file(str(tiny_base / "model.safetensors"))
    # The embeddings are not adapted; the attention weights carry the merged update.
    assert torch.equal(saved["encoder.embed.weight"], base["encoder.embed.weight"])
    assert not torch.equal(saved["encoder.blocks.0.attn.qkv.weight"],
                           base["encoder.blocks.0.attn.qkv.weight"])
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["lora"] == {"rank": 4, "alpha": 16, "dropout": 0.1, "targets": ""}
    assert json.loads((tmp_path / "classify.json").read_text())["lora"] is True
    assert TextClassifier.load(tmp_path).predict(["服务很棒"])[0].label == "1"


def test_a_local_hugging_face_bert_loads_by_path_and_trains(files, tiny_bert, tmp_path):
    summary = train_classifier(str(tiny_bert), files["train"], files["dev"], tmp_path,
                               settings=dict(max_steps=4, eval_every=2, batch_tokens=256,
                                             class_weights=True), progress=False)
    assert summary["steps"] == 4
    assert json.loads((tmp_path / "classify.json").read_text())["kind"] == "hf"
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["train"]["learning_rate"] == 3e-5  # the default for a Hugging Face base
    assert settings["classify"]["class_weights"] is True
    classifier = TextClassifier.load(tmp_path)
    assert type(classifier.model).__name__ == "BertForSequenceClassification"
    assert classifier.labels == ["0", "1"]
    # the figures reported are those of the saved folder
    again = classifier.evaluate(read_labelled(files["dev"]))
    assert again["confusion"] == summary["dev"]["confusion"]
    assert sum(map(sum, again["confusion"])) == len(DEV)
    answers = classifier.predict(["服务很好", ""])
    assert answers[0].prob == max(answers[0].probs.values())
    assert sum(answers[0].probs.values()) == pytest.approx(1.0)
    assert answers[1] == Prediction("", 0.0, {})


def test_hugging_face_lora_keeps_the_classifier_trainable(files, tiny_bert, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    model, _ = load_base(str(tiny_bert), "hf", ["0", "1"])
    apply_lora(model, LoraSettings(), train_also=HEADS)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert not any("word_embeddings" in n for n in trainable)
    summary = train_classifier(str(tiny_bert), files["train"], files["dev"], tmp_path,
                               lora=True, settings=dict(max_steps=2, eval_every=2,
                                                        batch_tokens=256), progress=False)
    assert summary["steps"] == 2
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["train"]["learning_rate"] == 5e-4  # the default for LoRA on HF
    saved = load_file(str(tmp_path / "model.safetensors"))
    base = load_file(str(tiny_bert / "model.safetensors"))
    assert not [k for k in saved if "lora" in k or "base_layer" in k]
    layer = "encoder.layer.0.attention.self"
    # peft's targets for BERT are query and value: key stays the base's, query moved
    assert torch.equal(saved[f"bert.{layer}.key.weight"], base[f"{layer}.key.weight"])
    assert not torch.equal(saved[f"bert.{layer}.query.weight"], base[f"{layer}.query.weight"])
    answer = TextClassifier.load(tmp_path).predict(["菜很差"])[0]
    assert answer.prob == max(answer.probs.values()) and set(answer.probs) == {"0", "1"}


def test_the_load_report_is_hidden_only_where_the_head_is_meant_to_be_missing(
        tiny_base, tiny_bert, tmp_path, caplog):
    from transformers import BertConfig, BertModel

    from pinzi.classifier import load_model

    load_base(str(tiny_base), "pinzi", ["0", "1"])
    load_base(str(tiny_bert), "hf", ["0", "1"])
    assert "LOAD REPORT" not in caplog.text
    load_model(str(tiny_base), "pinzi", num_labels=2)  # a classifier without its head: shown
    assert "LOAD REPORT" in caplog.text and "classifier.weight" in caplog.text
    # a checkpoint that lacks weights of the encoder itself: a warning names them
    config = BertConfig.from_pretrained(tiny_bert)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    for name in ("vocab.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_bert / name).read_bytes())
    with pytest.warns(UserWarning, match=r"2 weight\(s\) of the encoder are not in the "
                                         r"checkpoint and start random, e.g. bert.pooler"):
        load_base(str(tmp_path), "hf", ["0", "1"])


# ---- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"lora_r": 4}, "unknown setting 'lora_r'"),
    ({"metric": "f1"}, "classify.metric in the settings must be one of accuracy, macro_f1"),
    ({"classify": {"rank": 4}}, "'rank' is not a setting of section 'classify'; it belongs "
                                "in 'lora'"),
    ({"lora.rank": 0}, "LoRA needs rank >= 1"),
])
def test_bad_settings_are_refused_before_any_file_is_read(tmp_path, settings, message):
    missing = tmp_path / "missing.tsv"
    with pytest.raises(SettingsError) as info:
        train_classifier("no-such-base", missing, missing, tmp_path / "out", lora=True,
                         settings=settings, progress=False)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


def test_data_errors_come_before_the_base_is_looked_up(files, tmp_path):
    one_label = write_tsv(tmp_path / "one.tsv", [("1", "很好"), ("1", "很棒")])
    with pytest.raises(DataError, match="needs at least two labels; the training data has "
                                        "only '1'"):
        train_classifier(str(tmp_path / "nope"), one_label, files["dev"], tmp_path / "out")
    with pytest.raises(ModelLoadError, match="nope"):
        train_classifier(str(tmp_path / "nope"), files["train"], files["dev"], tmp_path / "out")


# ---- bad inputs ---------------------------------------------------------------------------------
def test_data_files_tsv_csv_and_gz(tmp_path):
    write_tsv(tmp_path / "a.tsv", [("1", 'say "hi", 好'), ("0", ""), ("0", "差")])
    data = read_labelled(tmp_path / "a.tsv")
    assert data.texts == ['say "hi", 好', "差"] and data.labels == ["1", "0"]
    assert data.lines == [2, 4] and data.skipped_empty == [3]
    assert "skipped 1 line(s) with an empty text (line 3)" in data.skipped_message()

    (tmp_path / "b.csv").write_text('text,label\n"好, 很好",1\n"多\n行",0\n', encoding="utf-8")
    data = read_labelled(tmp_path / "b.csv")
    assert data.texts == ["好, 很好", "多\n行"] and data.labels == ["1", "0"]

    with gzip.open(tmp_path / "c.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("cat\tlabel\ttext\n水果\t1\t很甜\n")
    data = read_labelled(tmp_path / "c.tsv.gz", label_column="cat")
    assert data.texts == ["很甜"] and data.labels == ["水果"]


@pytest.mark.parametrize("content, column, message", [
    ("label\tbody\n1\t好\n", "text", "no column 'text'"),
    ("label\ttext\n1\t好\n0\t差\textra\n", "text", "line 3: 3 field(s) where the header has 2"),
    ("label\ttext\n1\t好\n\t差\n", "text", "line 3: the label ('label') is empty"),
    ("", "text", "is empty"),
    ("label\ttext\n1\t\n", "text", "has no examples"),
])
def test_bad_files_give_errors_naming_the_file_and_line(tmp_path, content, column, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="bad.tsv") as info:
        read_labelled(path, text_column=column)
    assert message in str(info.value)


def test_invalid_utf8_and_unknown_formats_are_named(tmp_path):
    (tmp_path / "x.tsv").write_bytes(b"label\ttext\n1\t\xff\xfe\n")
    with pytest.raises(DataError, match=r"x.tsv line 2: not valid UTF-8"):
        read_labelled(tmp_path / "x.tsv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="expected .tsv or .csv"):
        read_labelled(tmp_path / "x.json")
    with pytest.raises(DataError, match="no such data file"):
        read_labelled(tmp_path / "missing.tsv")


def test_cli_train_passes_its_flags_and_prints_the_tables(files, tiny_base, tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "run"
    result = runner.invoke(app, ["classify", "train", "--base", str(tiny_base),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--test", str(files["dev"]), "--out", str(out),
                                 "--max-steps", "20", *FAST, "--lora", "--set", "lora.rank=4",
                                 "--class-weights", "--oversample", "--metric", "macro_f1"])
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[1].strip() for line in result.stdout.splitlines()
            if line.count("│") > 2]
    assert "accuracy" in result.stdout and rows[:2] == ["dev", "test"]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["train"]["max_steps"] == 20 and settings["train"]["eval_every"] == 10
    assert settings["lora"]["rank"] == 4
    assert settings["classify"] == {"metric": "macro_f1", "max_length": 256,
                                    "class_weights": True, "oversample": True}
    assert json.loads((out / "classify.json").read_text())["lora"] is True
    assert set(json.loads((out / "metrics.json").read_text())) == {"dev", "test"}


def test_cli_train_without_base_fine_tunes_the_shipped_model(files, tmp_path):
    from pinzi.hub import shipped_model_path

    out = tmp_path / "run"
    result = runner.invoke(app, ["classify", "train", "--train", str(files["train"]),
                                 "--dev", str(files["dev"]), "--out", str(out), "--max-steps",
                                 "1", "--set", "eval_every=1", "--set", "batch_tokens=256"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "classify.json").read_text())
    assert (info["kind"], info["base"]) == ("pinzi", str(shipped_model_path()))
    assert TextClassifier.load(out).model.config.hidden_size == json.loads(
        (shipped_model_path() / "config.json").read_text())["hidden_size"]
    # A second run into the same folder is refused, unless it replaces or continues the first.
    again = ["classify", "train", "--train", str(files["train"]), "--dev", str(files["dev"]),
             "--out", str(out), "--max-steps", "1", "--set", "eval_every=1",
             "--set", "batch_tokens=256"]
    result = runner.invoke(app, again)
    assert result.exit_code == 2 and "already holds a training run" in result.output
    assert runner.invoke(app, [*again, "--overwrite"]).exit_code == 0


def test_cli_rejects_a_dev_label_never_seen_in_training(files, tiny_base, tmp_path):
    dev = write_tsv(tmp_path / "dev.tsv", [("1", "很好"), ("2", "一般"), ("0", "差")])
    result = runner.invoke(app, ["classify", "train", "--base", str(tiny_base),
                                 "--train", str(files["train"]), "--dev", str(dev),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "dev.tsv line 3: label '2' never occurs in the training data" in message


def test_cli_errors_for_a_missing_column_and_a_missing_base(files, tmp_path):
    result = runner.invoke(app, ["classify", "train", "--base", str(tmp_path / "nope"),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--out", str(tmp_path / "out"), "--label-column", "stars"])
    assert result.exit_code == 2 and "no column 'stars'" in result.stderr
    assert "--label-column" in result.stderr
    result = runner.invoke(app, ["classify", "train", "--base", str(tmp_path / "nope"),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "nope" in result.stderr
    assert "Traceback" not in result.output


# ---- CLI predict and eval -----------------------------------------------------------------------
def test_cli_predict_from_stdin_keeps_line_alignment(trained):
    lines = ["服务真好".encode(), b"", "菜太烂\r".encode(), b"  ", b"ab\xff", "价格非常棒".encode()]
    result = runner.invoke(app, ["classify", "predict", "--model", str(trained)],
                           input=b"\n".join(lines) + b"\n")
    assert result.exit_code == 0, result.output
    out = result.stdout.split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == ""
    # the same answers as the Python API, invalid bytes read as U+FFFD
    classifier = TextClassifier.load(trained)
    expected = classifier.predict(["服务真好", "菜太烂", "ab\ufffd", "价格非常棒"])
    assert [p.label for p in expected[:2] + expected[3:]] == ["1", "0", "1"]
    assert [out[0], out[2], out[4], out[5]] == [f"{p.label}\t{p.prob:.4f}" for p in expected]
    assert out[1] == "" and out[3] == ""
    assert "invalid UTF-8" in result.stderr and "line 5" in result.stderr


def test_cli_predict_arguments_and_json(trained):
    result = runner.invoke(app, ["classify", "predict", "-m", str(trained), "--json",
                                 "环境很好", ""])
    assert result.exit_code == 0, result.output
    first, blank = (json.loads(line) for line in result.stdout.splitlines())
    assert first["label"] == "1" and set(first["probs"]) == {"0", "1"}
    assert first["prob"] == max(first["probs"].values())
    assert blank == {"text": "", "label": None, "prob": None, "probs": None}


def test_cli_eval_prints_the_table_and_writes_the_confusion_png(trained, files, tmp_path):
    result = runner.invoke(app, ["classify", "eval", "--model", str(trained),
                                 str(files["dev"]), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "dev.tsv" in result.stdout and "100.00%" in result.stdout
    assert (tmp_path / "confusion-dev.png").stat().st_size > 1000
    [report] = json.loads((tmp_path / "metrics.json").read_text())
    assert report["accuracy"] == 1.0 and report["confusion"] == [[12, 0], [0, 12]]
    result = runner.invoke(app, ["classify", "eval", "--model", str(trained),
                                 str(tmp_path / "none.tsv")])
    assert result.exit_code == 2 and "no such data file" in result.stderr


# ---- pinzi serve --classifier ------------------------------------------------------------------
class StubConverter:
    """Just enough of a Converter for create_app (the conversion routes are not used here)."""

    scorer = type("Scorer", (), {"name": "stub"})()
    learned = LearnedWords()  # in memory: this server learns nothing

    def candidates(self, pinyin, k=5, **options):
        return [("你好", 0.0)]


def test_the_server_classifies_with_a_trained_folder(trained):
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from pinzi.serve import create_app

    classifier = TextClassifier.load(trained, device="cpu")
    with TestClient(create_app(StubConverter(), classifier=classifier)) as client:
        answer = client.post("/v1/classify", json={"texts": ["服务很棒", "", "菜真差"]})
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert [r["label"] for r in results] == ["1", "", "0"]
        assert results[1]["prob"] == 0.0
        expected = classifier.predict(["服务很棒", "菜真差"])
        assert [results[0]["prob"], results[2]["prob"]] == pytest.approx(
            [p.prob for p in expected])
    result = runner.invoke(app, ["serve", "--help"])
    assert "--classifier" in result.output
