"""The figures of a text classifier, in plain numpy: every one can be checked by hand.

:func:`classification_report` is what ``pinzi classify eval``, the dev evaluations of
training and ``OUT/metrics.json`` show: accuracy, macro precision / recall / F1, the per-class
figures, the confusion matrix and, for two classes, ROC-AUC (:func:`roc_auc`, by ranks).
:func:`evaluate_logits` adds the mean cross-entropy of a model's logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# The one-number figures of a report, in the order a summary shows them ("auc": two classes).
SUMMARY_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "auc")


def confusion_matrix(gold: Sequence[int], pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(K, K) counts: row = gold class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (np.asarray(gold, np.int64), np.asarray(pred, np.int64)), 1)
    return matrix


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of their ranks."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # start of each group of equal values
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(values)]  # group g holds ranks starts[g]+1 .. ends[g]
    ranks = np.empty(len(values))
    ranks[order] = ((starts + 1 + ends) / 2)[group]
    return ranks


def roc_auc(positive: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U): the chance that a random positive
    scores above a random negative, ties counting one half. NaN when a class is missing."""
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_report(gold: Sequence[int], pred: Sequence[int], label_names: Sequence[str],
                          scores: Sequence[float] | None = None) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1, per-class figures, the confusion matrix, and
    ROC-AUC when there are two classes and ``scores`` (the probability of class 1) are given.

    Per class: precision = TP / predicted (0 when never predicted), recall = TP / support,
    F1 = 2PR / (P + R) (0 when P + R = 0). The macro figures average over the classes that
    occur in the gold labels or the predictions (as scikit-learn does by default); macro F1
    is the mean of the per-class F1, not the F1 of macro P and R.
    """
    gold, pred = np.asarray(gold, np.int64), np.asarray(pred, np.int64)
    n = len(label_names)
    matrix = confusion_matrix(gold, pred, n)
    tp = np.diag(matrix).astype(np.float64)
    support, predicted = matrix.sum(1), matrix.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(n), where=both > 0)
    present = (support > 0) | (predicted > 0)
    report: dict[str, Any] = {
        "examples": int(len(gold)),
        "accuracy": float(tp.sum() / max(1, len(gold))),
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }
    if n == 2 and scores is not None:
        auc = roc_auc(gold == 1, scores)
        if not math.isnan(auc):
            report["auc"] = auc
    report["per_class"] = [
        {"label": name, "precision": float(precision[i]), "recall": float(recall[i]),
         "f1": float(f1[i]), "support": int(support[i])} for i, name in enumerate(label_names)]
    report["labels"] = list(label_names)
    report["confusion"] = matrix.tolist()
    return report


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis (shifted by the maximum: no overflow)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def evaluate_logits(logits: np.ndarray, gold: np.ndarray,
                    label_names: Sequence[str]) -> dict[str, Any]:
    """The classification report of ``logits`` (N, K) against ``gold`` (N,), plus ``loss``,
    the mean cross-entropy (unweighted; probabilities floored at 1e-12)."""
    probs = softmax(logits.astype(np.float64))
    loss = float(-np.log(np.maximum(probs[np.arange(len(gold)), gold], 1e-12)).mean())
    scores = probs[:, 1] if len(label_names) == 2 else None
    return {"loss": loss,
            **classification_report(gold, probs.argmax(1), label_names, scores=scores)}
