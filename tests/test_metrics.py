"""The classification figures (pinzi.metrics, from scikit-learn) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pinzi.metrics import (
    SUMMARY_KEYS,
    classification_report,
    evaluate_logits,
    softmax,
)


def test_metrics_equal_hand_computed_values():
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
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
    assert report["examples"] == 6 and report["labels"] == ["a", "b", "c"]
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_macro_figures_skip_absent_classes_and_zero_unpredicted_ones():
    # Class "c" never occurs and is never predicted: out of the macro average.
    # Class "b" occurs but is never predicted: precision 0, recall 0.
    report = classification_report([0, 0, 1], [0, 0, 0], ["a", "b", "c"])
    assert report["per_class"][1]["precision"] == 0.0 and report["per_class"][1]["f1"] == 0.0
    assert report["macro_precision"] == pytest.approx((2 / 3 + 0) / 2)
    assert report["macro_recall"] == pytest.approx((1 + 0) / 2)
    assert report["macro_f1"] == pytest.approx((0.8 + 0) / 2)


def test_roc_auc_is_the_share_of_correctly_ordered_pairs():
    gold, pred = [1, 1, 0, 0, 1], [1, 0, 0, 0, 1]
    scores = [0.9, 0.4, 0.4, 0.1, 0.8]
    # positives {0.9, 0.4, 0.8} x negatives {0.4, 0.1}: 5 pairs ordered, 1 tie (1/2) of 6
    report = classification_report(gold, pred, ["0", "1"], scores=scores)
    assert report["auc"] == pytest.approx(5.5 / 6)
    reversed_order = classification_report([1, 0], [0, 1], ["0", "1"], scores=[0.2, 0.7])
    assert reversed_order["auc"] == 0.0
    # one class only in the gold labels: no AUC rather than a NaN (or an error) in the report
    assert "auc" not in classification_report([1, 1], [1, 0], ["0", "1"], scores=[0.9, 0.1])


def test_a_label_absent_from_gold_and_predictions_keeps_its_row_and_column():
    report = classification_report([0, 2], [0, 2], ["a", "b", "c"])
    assert report["confusion"] == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert report["per_class"][1] == {"label": "b", "precision": 0.0, "recall": 0.0,
                                      "f1": 0.0, "support": 0}
    assert report["macro_f1"] == 1.0  # "b" occurs nowhere: out of the average


def test_evaluate_logits_adds_the_mean_cross_entropy_to_the_report():
    # p(class 1) = 3/4 in the first row, 1/2 in the second
    logits = np.asarray([[0.0, math.log(3)], [5.0, 5.0]], np.float32)
    figures = evaluate_logits(logits, np.asarray([1, 0]), ["0", "1"])
    assert figures["loss"] == pytest.approx(-(math.log(3 / 4) + math.log(1 / 2)) / 2)
    assert figures["accuracy"] == 1.0  # row 0: class 1; row 1, a tie: the first class
    assert figures["confusion"] == [[1, 0], [0, 1]]
    assert figures["auc"] == 1.0  # the positive's score 3/4 is above the negative's 1/2
    assert softmax(np.asarray([[1000.0, 1000.0]])).tolist() == [[0.5, 0.5]]  # no overflow
    assert [k for k in SUMMARY_KEYS if k not in figures] == []
