"""Text classification (pinzi.classify): data files, metrics by hand, both kinds of base, the CLI.

Every model here is tiny and built in the test (a random pinzi encoder, a 2-layer BERT with a
15-character vocabulary), so the whole file runs in seconds and never touches the network.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from pinzi.classify import (
    ClassificationTask,
    ClassifyConfig,
    ClassifyError,
    Encoded,
    HFClassifier,
    PinziTextEncoder,
    TextClassifier,
    average_ranks,
    classification_report,
    confusion_matrix,
    epoch_order,
    inverse_frequency_weights,
    label_order,
    read_labelled,
    roc_auc,
    train_classifier,
)
from pinzi.cli import app

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
FAST = ["--set", "eval_every=10", "--set", "save_every=60", "--set", "batch_tokens=256",
        "--set", "learning_rate=3e-3", "--set", "warmup_steps=5", "--set", "patience=3"]


def write_tsv(path: Path, rows, header: str = "label\ttext") -> Path:
    path.write_text(header + "\n" + "".join("\t".join(row) + "\n" for row in rows),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sentiment")
    return {"train": write_tsv(root / "train.tsv", TRAIN), "dev": write_tsv(root / "dev.tsv", DEV)}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny (random) pinzi encoder folder, as `pinzi pretrain` writes one."""
    from pinzi.model import PinziConfig, PinziForPinyin
    from pinzi.tokenizer import PinziTokenizer

    out = tmp_path_factory.mktemp("pinzi-base")
    tokenizer = PinziTokenizer(sorted({c for _, text in TRAIN + DEV for c in text}))
    config = PinziConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, dropout=0.0,
                                     char_offset=tokenizer.char_offset, n_chars=tokenizer.n_chars)
    torch.manual_seed(0)
    PinziForPinyin(config).save_pretrained(out)
    tokenizer.save(out)
    return out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny BERT encoder + BertTokenizer vocab.txt, loaded by path like any hub encoder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    out = tmp_path_factory.mktemp("bert-base")
    chars = sorted({c for _, text in TRAIN + DEV for c in text})
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                              *chars]) + "\n", encoding="utf-8")
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(out)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=5 + len(chars), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def trained(files, tiny_base, tmp_path_factory) -> Path:
    """`pinzi classify train` on the separable task, through the CLI."""
    out = tmp_path_factory.mktemp("classifier")
    result = runner.invoke(app, ["classify", "train", "--base", str(tiny_base),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--test", str(files["dev"]), "--out", str(out),
                                 "--max-steps", "60", *FAST])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout
    return out


# ---- learning -----------------------------------------------------------------------------------
def test_a_tiny_pinzi_encoder_learns_the_separable_task(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == 1.0 and metrics["test"]["macro_f1"] == 1.0
    assert metrics["dev"]["auc"] == 1.0
    for name in ("config.json", "model.safetensors", "vocab.json", "classify.json",
                 "confusion_dev.png", "confusion_test.png", "curves.png"):
        assert (trained / name).is_file(), name
    info = json.loads((trained / "classify.json").read_text())
    assert info["labels"] == ["0", "1"] and info["kind"] == "pinzi"

    classifier = TextClassifier.load(trained)
    answers = classifier.predict(["房间真棒", "", "味道太差", "   "])
    assert [label for label, _ in answers] == ["1", "", "0", ""]
    assert answers[0][1] > 0.5 and answers[1] == ("", 0.0)


def test_a_saved_classifier_keeps_its_number_of_labels(tmp_path):
    from pinzi.model import PinziConfig, PinziForClassification

    config = PinziConfig.from_preset("tiny", vocab_size=50, num_labels=3,
                                     label_names=["a", "b", "c"])
    PinziForClassification(config).save_pretrained(tmp_path)
    again = PinziForClassification.from_pretrained(tmp_path)
    assert again.config.num_labels == 3 and again.classifier.out_features == 3
    assert again.config.label_names == ["a", "b", "c"]


def test_lora_trains_adapters_and_saves_a_plain_merged_model(files, tiny_base, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    seen = {}

    def on_step(step, loss):
        seen["loss"] = loss

    summary = train_classifier(str(tiny_base), files["train"], files["dev"], tmp_path,
                               settings=dict(lora=True, max_steps=30, eval_every=10,
                                             batch_tokens=256, learning_rate=1e-2,
                                             warmup_steps=3, patience=2),
                               progress=False, on_step=on_step)
    assert summary["dev"]["accuracy"] == 1.0
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert not [k for k in saved if "lora" in k or "modules_to_save" in k]
    base = load_file(str(tiny_base / "model.safetensors"))
    # The embeddings are not adapted; the attention weights carry the merged update.
    assert torch.equal(saved["encoder.embed.weight"], base["encoder.embed.weight"])
    assert not torch.equal(saved["encoder.blocks.0.attn.qkv.weight"],
                           base["encoder.blocks.0.attn.qkv.weight"])
    assert TextClassifier.load(tmp_path).predict(["服务很棒"])[0][0] == "1"


def test_a_local_hugging_face_bert_loads_by_path_and_trains(files, tiny_bert, tmp_path):
    summary = train_classifier(str(tiny_bert), files["train"], files["dev"], tmp_path,
                               settings=dict(max_steps=4, eval_every=2, batch_tokens=256,
                                             class_weights=True), progress=False)
    assert summary["steps"] == 4 and 0.0 <= summary["dev"]["accuracy"] <= 1.0
    assert json.loads((tmp_path / "classify.json").read_text())["kind"] == "hf"
    classifier = TextClassifier.load(tmp_path)
    assert type(classifier.model).__name__ == "BertForSequenceClassification"
    assert classifier.labels == ["0", "1"]
    answers = classifier.predict(["服务很好", ""])
    assert answers[0][0] in ("0", "1") and answers[1] == ("", 0.0)


def test_hugging_face_lora_keeps_the_classifier_trainable(files, tiny_bert, tmp_path):
    pytest.importorskip("peft")
    from pinzi.classify import apply_lora, load_base

    model, _ = load_base(str(tiny_bert), ["0", "1"])
    peft_model = apply_lora(model, "hf", ClassifyConfig(lora=True))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert not any("word_embeddings" in n for n in trainable)
    summary = train_classifier(str(tiny_bert), files["train"], files["dev"], tmp_path,
                               settings=dict(lora=True, max_steps=2, eval_every=2,
                                             batch_tokens=256), progress=False)
    assert summary["steps"] == 2
    assert TextClassifier.load(tmp_path).predict(["菜很差"])[0][0] in ("0", "1")


# ---- metrics by hand ----------------------------------------------------------------------------
def test_metrics_equal_hand_computed_values():
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    assert confusion_matrix(gold, pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    report = classification_report(gold, pred, ["a", "b", "c"])
    # precision: a 1/2, b 2/3, c 1/1; recall: a 1/2, b 2/2, c 1/2; F1: 1/2, 4/5, 2/3
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert report["macro_recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert report["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    b = report["per_class"][1]
    assert (b["label"], b["support"]) == ("b", 2)
    assert b["precision"] == pytest.approx(2 / 3) and b["f1"] == pytest.approx(4 / 5)
    assert "auc" not in report  # three classes


def test_macro_figures_skip_absent_classes_and_zero_unpredicted_ones():
    # Class "c" never occurs and is never predicted: out of the macro average.
    # Class "b" occurs but is never predicted: precision 0, recall 0.
    report = classification_report([0, 0, 1], [0, 0, 0], ["a", "b", "c"])
    assert report["per_class"][1]["precision"] == 0.0 and report["per_class"][1]["f1"] == 0.0
    assert report["macro_precision"] == pytest.approx((2 / 3 + 0) / 2)
    assert report["macro_recall"] == pytest.approx((1 + 0) / 2)
    assert report["macro_f1"] == pytest.approx((0.8 + 0) / 2)


def test_roc_auc_is_the_share_of_correctly_ordered_pairs():
    positive = [True, True, False, False, True]
    scores = [0.9, 0.4, 0.4, 0.1, 0.8]
    # positives {0.9, 0.4, 0.8} x negatives {0.4, 0.1}: 5 pairs ordered, 1 tie (1/2) of 6
    assert roc_auc(positive, scores) == pytest.approx(5.5 / 6)
    assert roc_auc([1, 0], [0.2, 0.7]) == 0.0
    assert math.isnan(roc_auc([1, 1], [0.2, 0.7]))
    assert average_ranks([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    report = classification_report([1, 1, 0, 0, 1], [1, 0, 0, 0, 1], ["0", "1"], scores=scores)
    assert report["auc"] == pytest.approx(5.5 / 6)


def test_label_order_is_numeric_when_labels_are_numbers():
    assert label_order(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert label_order(["酒店", "书籍", "水果"]) == sorted(["酒店", "书籍", "水果"])


# ---- class weights and oversampling -------------------------------------------------------------
def _task(labels, **cfg) -> ClassificationTask:
    from pinzi.tokenizer import PinziTokenizer

    text = PinziTextEncoder(PinziTokenizer(list("好差")), 16)
    ids = text.encode(["好" * (1 + i % 4) for i in range(len(labels))])
    data = Encoded(ids, np.asarray(labels, np.int64))
    return ClassificationTask(text, data, data, ["0", "1"], ClassifyConfig(**cfg),
                              batch_tokens=12, seed=7)


def test_class_weights_are_inverse_frequency_and_weight_the_loss():
    labels = [0, 0, 0, 0, 0, 0, 1, 1]
    # w_c = N / (K n_c): 8 / (2 * 6) and 8 / (2 * 2)
    assert inverse_frequency_weights(np.asarray(labels), 2).tolist() == pytest.approx([2 / 3, 2])
    task = _task(labels, class_weights=True)
    batch = task.make_batch(np.arange(8), (7, 0, 0))
    assert batch["class_weights"].tolist() == pytest.approx([2 / 3, 2])
    assert "class_weights" not in _task(labels).make_batch(np.arange(8), (7, 0, 0))

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    gold = torch.tensor([0, 0, 1])
    weights = torch.tensor([2 / 3, 2.0])
    nll = -torch.log_softmax(logits, -1)[torch.arange(3), gold]
    by_hand = (nll * weights[gold]).sum() / weights[gold].sum()

    class Fixed(torch.nn.Module):  # a "Hugging Face model" that returns these logits
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": logits + self.w})()

    wrapped = HFClassifier(Fixed())
    ids = torch.zeros(3, 2, dtype=torch.long)
    with torch.no_grad():
        weighted = float(wrapped(ids, labels=gold, class_weights=weights).loss)
        plain = float(wrapped(ids, labels=gold).loss)
    assert weighted == pytest.approx(float(by_hand)) and weighted != pytest.approx(plain)
    assert plain == pytest.approx(float(nll.mean()))
    assert float(F.cross_entropy(logits, gold, weight=weights)) == pytest.approx(float(by_hand))


def test_oversampling_balances_each_epoch_and_batches_are_deterministic():
    labels = [0, 0, 0, 0, 0, 0, 1, 1]
    plain, balanced = _task(labels), _task(labels, oversample=True)

    def counts(task, epoch):
        seen = np.concatenate(task.batches(epoch))
        return np.bincount(np.asarray(labels)[seen], minlength=2).tolist(), seen

    assert counts(plain, 0)[0] == [6, 2]
    got, seen = counts(balanced, 0)
    assert got == [6, 6]
    assert sorted(seen[np.asarray(labels)[seen] == 1].tolist()) == [6, 6, 6, 7, 7, 7]
    # a pure function of (seed, epoch); another epoch, another order
    assert [b.tolist() for b in balanced.batches(3)] == [b.tolist() for b in balanced.batches(3)]
    assert [b.tolist() for b in plain.batches(0)] != [b.tolist() for b in plain.batches(1)]
    # the token budget holds (rows x longest, [CLS] included)
    for batch in balanced.batches(0):
        longest = max(len(balanced.train_data.ids[i]) for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 12
    rng = np.random.default_rng(0)
    order = epoch_order(np.asarray([0, 0, 0, 1]), 2, rng, oversample=True)
    assert np.bincount(np.asarray([0, 0, 0, 1])[order]).tolist() == [3, 3]


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
    with pytest.raises(ClassifyError, match="bad.tsv") as info:
        read_labelled(path, text_column=column)
    assert message in str(info.value)


def test_invalid_utf8_and_unknown_formats_are_named(tmp_path):
    (tmp_path / "x.tsv").write_bytes(b"label\ttext\n1\t\xff\xfe\n")
    with pytest.raises(ClassifyError, match=r"x.tsv line 2: not valid UTF-8"):
        read_labelled(tmp_path / "x.tsv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ClassifyError, match="expected .tsv or .csv"):
        read_labelled(tmp_path / "x.json")
    with pytest.raises(ClassifyError, match="no such data file"):
        read_labelled(tmp_path / "missing.tsv")


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


def test_a_converter_folder_is_not_a_classifier(tiny_base):
    with pytest.raises(ClassifyError, match="not a text classifier"):
        TextClassifier.load(tiny_base)


# ---- CLI predict and eval -----------------------------------------------------------------------
def test_cli_predict_from_stdin_keeps_line_alignment(trained):
    lines = ["服务真好".encode(), b"", "菜太烂\r".encode(), b"  ", b"ab\xff", "价格非常棒".encode()]
    result = runner.invoke(app, ["classify", "predict", "--model", str(trained)],
                           input=b"\n".join(lines) + b"\n")
    assert result.exit_code == 0, result.output
    out = result.stdout.split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == ""
    assert out[0].split("\t")[0] == "1" and float(out[0].split("\t")[1]) > 0.5
    assert out[1] == "" and out[3] == ""
    assert out[2].startswith("0\t") and out[5].startswith("1\t")
    assert out[4].split("\t")[0] in ("0", "1")
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
        assert results[0]["prob"] > 0.5 and results[1]["prob"] == 0.0
    result = runner.invoke(app, ["serve", "--help"])
    assert "--classifier" in result.output
