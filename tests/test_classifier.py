"""Labelling texts with a classifier (pinzi.classifier): encoders, batching, predictions, loading.

The models here are random (untrained) tiny pinzi classifiers built in the test: what is checked
is the plumbing (order, blanks, probabilities, folders), not what they answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pinzi.classifier import (
    INFO_FILE,
    PinziTextEncoder,
    Prediction,
    TextClassifier,
    label_indices,
    length_batches,
    pad,
    predict_logits,
    text_encoder,
)
from pinzi.errors import DataError, ModelLoadError
from pinzi.io import LabelledTexts
from pinzi.model import PinziConfig, PinziForClassification, PinziForPinyin
from pinzi.tokenizer import CLS_ID, PAD_ID, PinziTokenizer

torch.set_num_threads(1)
CHARS = list("好差很菜服务ab")


@pytest.fixture(scope="module")
def tokenizer() -> PinziTokenizer:
    return PinziTokenizer(CHARS)


@pytest.fixture(scope="module")
def model(tokenizer) -> PinziForClassification:
    config = PinziConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, dropout=0.0,
                                     char_offset=tokenizer.char_offset,
                                     n_chars=tokenizer.n_chars, num_labels=3,
                                     label_names=["neg", "neu", "pos"],
                                     max_position_embeddings=32)
    torch.manual_seed(0)
    return PinziForClassification(config).eval()


def test_the_pinzi_encoder_normalises_cuts_and_starts_with_cls(tokenizer, model):
    text = text_encoder("pinzi", tokenizer, model.config, 256)
    assert text.max_length == 32  # no longer than the model's positions
    ids = text.encode(["ａｂ好", "好" * 100])
    assert ids[0].tolist() == [CLS_ID, tokenizer.char_id("a"), tokenizer.char_id("b"),
                               tokenizer.char_id("好")]  # full-width ASCII -> ASCII
    assert len(ids[1]) == 32 and ids[1][0] == CLS_ID
    assert text.is_blank(" \u200b ") and not text.is_blank("好")
    assert text_encoder("pinzi", tokenizer, model.config, 8).max_length == 8


def test_batches_keep_the_token_budget_and_the_row_limit():
    lengths = np.asarray([1, 2, 2, 3, 5, 5])
    order = np.argsort(lengths, kind="stable")
    batches = length_batches(order, lengths, batch_tokens=6)
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3], [4], [5]]
    assert [len(b) for b in length_batches(order, lengths, 100, max_rows=4)] == [4, 2]
    ids, mask = pad([np.asarray([7, 8, 9]), np.asarray([7])], PAD_ID)
    assert ids.tolist() == [[7, 8, 9], [7, PAD_ID, PAD_ID]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_predicted_logits_come_back_in_the_order_of_the_texts(tokenizer, model):
    text = PinziTextEncoder(tokenizer, 32)
    texts = ["很好很好很好", "差", "服务很差", "菜好", "a"]
    sequences = text.encode(texts)
    batched = predict_logits(model, sequences, PAD_ID, batch_tokens=8)  # several batches
    with torch.no_grad():
        one_by_one = np.concatenate([
            model(input_ids=torch.from_numpy(s)[None]).logits.numpy() for s in sequences])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)
    assert predict_logits(model, [], PAD_ID).shape == (0, 0)


def test_predict_gives_the_label_its_probability_and_every_probability(tokenizer, model):
    classifier = TextClassifier(model, PinziTextEncoder(tokenizer, 32), ["neg", "neu", "pos"])
    texts = ["服务很好", "", "菜很差", "  "]
    answers = classifier.predict(texts)
    probs = classifier.predict_proba(texts)
    assert answers[1] == answers[3] == Prediction("", 0.0, {})
    assert np.isnan(probs[1]).all() and np.isnan(probs[3]).all()
    for i in (0, 2):
        answer = answers[i]
        assert list(answer.probs) == ["neg", "neu", "pos"]
        assert list(answer.probs.values()) == pytest.approx(probs[i].tolist())
        assert sum(answer.probs.values()) == pytest.approx(1.0)
        assert answer.label == ["neg", "neu", "pos"][int(probs[i].argmax())]
        assert answer.prob == max(answer.probs.values())
    with pytest.raises(AttributeError):
        answers[0].label = "pos"  # frozen
    assert classifier.predict([]) == []


def test_evaluate_reports_a_file_and_refuses_labels_the_model_lacks(tokenizer, model):
    classifier = TextClassifier(model, PinziTextEncoder(tokenizer, 32), ["neg", "neu", "pos"])
    data = LabelledTexts("dev.tsv", ["很好", "很差", "菜"], ["pos", "neg", "neu"], [2, 3, 4])
    report = classifier.evaluate(data)
    predicted = [p.label for p in classifier.predict(data.texts)]
    assert report["file"] == "dev.tsv" and report["examples"] == 3
    right = [p == g for p, g in zip(predicted, data.labels, strict=True)]
    assert report["accuracy"] == pytest.approx(np.mean(right))
    bad = LabelledTexts("test.tsv", ["好", "差"], ["pos", "bad"], [2, 7])
    with pytest.raises(DataError, match=r"test.tsv line 7: label 'bad' never occurs in the "
                                        r"model's labels \(its labels: neg, neu, pos\)"):
        classifier.evaluate(bad)
    assert label_indices(data, ["neg", "neu", "pos"], known_from="x").tolist() == [2, 0, 1]


def test_a_folder_loads_with_its_labels_and_length(tokenizer, model, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save(tmp_path)
    (tmp_path / INFO_FILE).write_text(json.dumps({"labels": ["neg", "neu", "pos"],
                                                  "max_length": 16, "kind": "pinzi"}))
    loaded = TextClassifier.load(tmp_path, device="cpu")
    assert loaded.labels == ["neg", "neu", "pos"] and loaded.text.max_length == 16
    assert loaded.info["kind"] == "pinzi"
    original = TextClassifier(model, PinziTextEncoder(tokenizer, 16), loaded.labels)
    assert loaded.predict(["服务很好"]) == original.predict(["服务很好"])


def test_folders_that_are_no_classifier_are_refused(tokenizer, tmp_path):
    converter = tmp_path / "converter"
    config = PinziConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size,
                                     char_offset=tokenizer.char_offset, n_chars=tokenizer.n_chars)
    PinziForPinyin(config).save_pretrained(converter)
    tokenizer.save(converter)
    with pytest.raises(ModelLoadError, match="is not a text classifier .*PinziForPinyin"):
        TextClassifier.load(converter)
    with pytest.raises(ModelLoadError, match="no model folder"):
        TextClassifier.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model folder"):
        TextClassifier.load(Path(tmp_path / "empty"))
