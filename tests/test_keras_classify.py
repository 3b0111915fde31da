"""Keras 3 fine-tuning of pinzi encoders (pinzi.keras_classify): compile, fit with early
stopping, evaluate, and a saved folder that pinzi's own classifier loads.

The models are tiny and built here (a random pinzi encoder, a 2-layer BERT), the task is a
separable three-label one, so every fit takes a second or two. Skipped without Keras.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from conftest import write_tsv
from typer.testing import CliRunner

from pinzi.classifier import TextClassifier
from pinzi.cli import app
from pinzi.errors import DataError, ModelLoadError, PinziError, SettingsError
from pinzi.io import read_labelled

if importlib.util.find_spec("keras") is None:
    pytest.skip("needs the keras extra: pip install 'pinzi[keras]'", allow_module_level=True)

from pinzi import keras_classify  # noqa: E402
from pinzi.keras_classify import (  # noqa: E402
    KerasClassifier,
    TextBatches,
    build_classifier,
    check_backend,
    load_classifier,
)

# Keras as pinzi.keras_classify imported it: a plain `import keras` before that module
# would choose the TensorFlow backend.
keras = keras_classify.keras
torch.set_num_threads(1)
runner = CliRunner()

SUBJECTS = ["菜", "服务", "环境", "房间", "味道", "价格"]
WORDS = {"pos": ["好", "棒"], "neg": ["差", "烂"], "mid": ["一般", "还行"]}
TRAIN = [(label, f"{s}{a}{w}") for label, words in WORDS.items() for s in SUBJECTS
         for a in "很真太" for w in words]
DEV = [(label, f"{s}非常{w}") for label, words in WORDS.items() for s in SUBJECTS
       for w in words]
MAX_EPOCHS = 20


def compiled(model: KerasClassifier, learning_rate: float = 1e-3) -> KerasClassifier:
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def fitted(files, tiny_base, tmp_path_factory):
    """(model, history, saved folder): fit until EarlyStopping stops, the best epoch restored."""
    train, dev = read_labelled(files["train"]), read_labelled(files["dev"])
    keras.utils.set_random_seed(0)
    model = compiled(build_classifier(tiny_base, train.labels))
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=1,
                                         restore_best_weights=True)
    history = model.fit(model.batches(train, batch_size=16, shuffle=True),
                        validation_data=model.batches(dev), epochs=MAX_EPOCHS, callbacks=[stop],
                        verbose=0)
    out = model.save_classifier(tmp_path_factory.mktemp("keras") / "classifier")
    return model, history.history, out


# ---- the Keras workflow -------------------------------------------------------------------------
def test_fit_stops_early_and_restores_the_best_epoch(fitted, files):
    model, history, _ = fitted
    assert model.labels == ("mid", "neg", "pos")
    assert 2 <= len(history["loss"]) < MAX_EPOCHS  # EarlyStopping ended the fit
    assert history["loss"][-1] < history["loss"][0]
    figures = model.evaluate(model.batches(read_labelled(files["dev"])), return_dict=True,
                             verbose=0)
    # the torch weights are the best epoch's, not the last one's
    best = int(np.argmax(history["val_accuracy"]))
    assert figures["accuracy"] == max(history["val_accuracy"]) == 1.0
    assert figures["loss"] == pytest.approx(history["val_loss"][best], rel=1e-4)


def test_the_saved_folder_loads_in_text_classifier_with_the_same_answers(fitted, files):
    model, _, out = fitted
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "classify.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".keras"))]
    info = json.loads((out / "classify.json").read_text())
    assert info["labels"] == ["mid", "neg", "pos"] and info["trainer"] == "keras"
    assert info["kind"] == "pinzi" and info["max_length"] == 256

    texts = [text for _, text in DEV]
    classifier = TextClassifier.load(out, device="cpu")
    keras_probs = np.asarray(model.predict(model.batches(texts), verbose=0))
    np.testing.assert_allclose(classifier.predict_proba(texts), keras_probs, atol=1e-5)
    expected = [label for label, _ in DEV]
    assert model.predict_labels(texts) == expected
    assert model.predict_labels([" ", "菜非常好"]) == ["", "pos"]  # blank: no label, as pinzi's
    assert model.predict_labels([]) == []
    assert [p.label for p in classifier.predict(texts)] == expected
    assert classifier.evaluate(read_labelled(files["dev"]))["accuracy"] == 1.0


def test_pinzi_classify_predict_runs_the_keras_folder(fitted):
    _, _, out = fitted
    result = runner.invoke(app, ["classify", "predict", "-m", str(out), "菜非常还行", "服务很烂"])
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["mid", "neg"]


def test_load_classifier_brings_the_folder_back_into_keras(fitted, files):
    model, _, out = fitted
    again = compiled(load_classifier(out))
    assert isinstance(again, KerasClassifier) and again.labels == model.labels
    assert json.loads(again.info_json)["kind"] == "pinzi"
    dev = read_labelled(files["dev"])
    before = model.evaluate(model.batches(dev), return_dict=True, verbose=0)
    after = again.evaluate(again.batches(dev), return_dict=True, verbose=0)
    assert after == pytest.approx(before, rel=1e-5)


def test_a_hugging_face_encoder_trains_and_saves_as_its_own_classifier(files, tiny_bert,
                                                                        tmp_path):
    train = read_labelled(files["train"])
    model = compiled(build_classifier(tiny_bert, train.labels))
    history = model.fit(model.batches(train, shuffle=True), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    out = model.save_classifier(tmp_path / "out")
    classifier = TextClassifier.load(out, device="cpu")
    assert type(classifier.model).__name__ == "BertForSequenceClassification"
    assert classifier.labels == ["mid", "neg", "pos"]
    texts = [text for _, text in DEV]
    np.testing.assert_allclose(classifier.predict_proba(texts),
                               np.asarray(model.predict(model.batches(texts), verbose=0)),
                               atol=1e-5)


def test_keras_format_saving_is_refused_because_it_would_pickle(fitted, tmp_path):
    model, _, _ = fitted
    with pytest.raises(PinziError, match=r"model.save_classifier\(FOLDER\)"):
        model.save(tmp_path / "model.keras")
    assert not (tmp_path / "model.keras").exists()


def test_cli_keras_trains_saves_and_reports(files, tiny_base, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["classify", "keras", "--base", str(tiny_base),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--test", str(files["dev"]), "--out", str(out),
                                 "--epochs", "3", "--batch-size", "16",
                                 "--learning-rate", "1e-3"])
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[1].strip() for line in result.stdout.splitlines()
            if line.count("│") > 2]
    assert rows[:2] == ["dev", "test"]
    assert "Epoch 1/3" in result.stderr and "Epoch" not in result.stdout  # progress: stderr
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["epochs"] == len(summary["history"]["val_accuracy"]) <= 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == max(summary["history"]["val_accuracy"])
    info = json.loads((out / "classify.json").read_text())
    assert info["label_column"] == "label" and info["labels"] == ["mid", "neg", "pos"]
    assert TextClassifier.load(out).evaluate(read_labelled(files["dev"]))["examples"] == len(DEV)


def test_cli_keras_errors_are_one_line(files, tiny_base, tmp_path):
    result = runner.invoke(app, ["classify", "keras", "--base", str(tmp_path / "nope"),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "nope" in result.stderr
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["classify", "keras", "--base", str(tiny_base),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--out", str(tmp_path / "out"), "--label-column", "stars"])
    assert result.exit_code == 2 and "no column 'stars'" in result.stderr
    test = write_tsv(tmp_path / "test.tsv", [("pos", "好"), ("wow", "棒")])
    result = runner.invoke(app, ["classify", "keras", "--base", str(tiny_base),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--test", str(test), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "test.tsv line 3: label 'wow' never occurs in the training data" in " ".join(
        result.stderr.split())
    assert not (tmp_path / "out").exists()  # refused before any training


def test_without_keras_the_command_names_its_extra(files, tiny_base, tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "pinzi.keras_classify")
    monkeypatch.setitem(sys.modules, "keras", None)  # as if pinzi[keras] were not installed
    result = runner.invoke(app, ["classify", "keras", "--base", str(tiny_base),
                                 "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert 'pip install "pinzi[keras]"' in result.stderr


# ---- batches ------------------------------------------------------------------------------------
def test_batches_pad_each_batch_to_its_longest_and_shuffle_per_epoch():
    ids = [np.arange(1, n + 1) for n in (3, 1, 2, 5, 4)]
    ordered = TextBatches(ids, pad_id=0, batch_size=2)
    assert len(ordered) == 3
    first = ordered[0]
    np.testing.assert_array_equal(first["input_ids"], [[1, 2, 3], [1, 0, 0]])
    np.testing.assert_array_equal(first["attention_mask"], [[1, 1, 1], [1, 0, 0]])
    assert ordered[2]["input_ids"].shape == (1, 4)

    labels = np.arange(5)
    shuffled = TextBatches(ids, 0, labels, batch_size=2, shuffle=True, seed=3)
    epochs = []
    for _ in range(3):
        rows = np.concatenate([shuffled[i][1] for i in range(len(shuffled))])
        assert sorted(rows) == list(range(5))  # every example once per epoch
        for i in range(len(shuffled)):  # the ids stay with their labels
            inputs, batch_labels = shuffled[i]
            assert list(inputs["attention_mask"].sum(1)) == [len(ids[j]) for j in batch_labels]
        epochs.append(list(rows))
        shuffled.on_epoch_end()
    assert len({tuple(e) for e in epochs}) > 1  # a new order each epoch...
    again = TextBatches(ids, 0, labels, batch_size=2, shuffle=True, seed=3)
    assert list(np.concatenate([again[i][1] for i in range(len(again))])) == epochs[0]  # seeded


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_input_gives_pinzi_errors(fitted, files, tiny_base, tmp_path):
    model, _, _ = fitted
    with pytest.raises(DataError, match="at least two labels"):
        build_classifier(tiny_base, ["pos", "pos"])
    with pytest.raises(ModelLoadError):
        build_classifier(tmp_path / "nope", ["a", "b"])
    unknown = read_labelled(write_tsv(tmp_path / "odd.tsv", [("pos", "好"), ("wow", "棒")]))
    with pytest.raises(DataError, match=r"odd.tsv line 3: label 'wow' never occurs"):
        model.batches(unknown)
    with pytest.raises(DataError, match="list of texts"):
        model.batches("服务很好")
    with pytest.raises(SettingsError, match="batch_size"):
        model.batches(["好"], batch_size=0)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="no classifier folder"):
        model.save_classifier(busy)
    with pytest.raises(DataError, match="no classifier folder"):
        model.save_classifier(busy / "notes.txt")
    assert (busy / "notes.txt").read_text() == "mine"


def test_another_keras_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(SettingsError, match="KERAS_BACKEND=torch"):
        check_backend()
