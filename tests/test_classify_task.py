"""The classification training task (pinzi.classify_task): labels, class weights, oversampling,
batches, the settings it checks. No training here: the end-to-end runs are in test_classify.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pinzi.classifier import PinziTextEncoder
from pinzi.classify_task import (
    ClassificationTask,
    ClassifySettings,
    Encoded,
    HFClassifier,
    epoch_order,
    inverse_frequency_weights,
    label_order,
)
from pinzi.errors import SettingsError
from pinzi.tokenizer import PinziTokenizer

torch.set_num_threads(1)


def test_label_order_is_numeric_when_labels_are_numbers():
    assert label_order(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert label_order(["酒店", "书籍", "水果"]) == sorted(["酒店", "书籍", "水果"])
    assert label_order(["b", "10", "a"]) == ["10", "a", "b"]  # not all numbers: as text


def _task(labels, **settings) -> ClassificationTask:
    text = PinziTextEncoder(PinziTokenizer(list("好差")), 16)
    ids = text.encode(["好" * (1 + i % 4) for i in range(len(labels))])
    data = Encoded(ids, np.asarray(labels, np.int64))
    return ClassificationTask(text, data, data, ["0", "1"], ClassifySettings(**settings),
                              batch_tokens=12, seed=7)


def test_an_unknown_metric_is_a_settings_error():
    with pytest.raises(SettingsError, match="unknown metric 'f1'; choose one of accuracy, "
                                            "macro_f1"):
        _task([0, 1], metric="f1")
    assert _task([0, 1], metric="macro_f1").metric == "macro_f1"


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


def test_a_batch_pads_its_texts_and_carries_their_labels():
    task = _task([0, 1, 1, 0])  # texts of 1..4 characters: 2..5 ids with [CLS]
    batch = task.make_batch(np.asarray([3, 0]), (7, 0, 0))
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].sum(1).tolist() == [5, 2]
    assert batch["input_ids"][1, 2:].tolist() == [task.text.pad_id] * 3
    assert batch["labels"].tolist() == [0, 0]
