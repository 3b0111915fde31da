"""The figures of a text classifier, from scikit-learn.

:func:`classification_report` is what ``pinzi classify eval``, the dev evaluations of
training and ``OUT/metrics.json`` show: accuracy, macro precision / recall / F1, the per-class
figures, the confusion matrix and, for two classes, ROC-AUC. :func:`evaluate_logits` adds the
mean cross-entropy of a model's logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# The one-number figures of a report, in the order a summary shows them ("auc": two classes).
SUMMARY_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "auc")


def classification_report(gold: Sequence[int], pred: Sequence[int], label_names: Sequence[str],
                          scores: Sequence[float] | None = None) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1, per-class figures, the confusion matrix, and
    ROC-AUC when there are two classes, both in ``gold``, and ``scores`` (the probability of
    class 1) are given. ``gold`` and ``pred`` are class indices into ``label_names``.

    A class never predicted has precision 0 (and F1 0). The macro figures average over the
    classes that occur in the gold labels or the predictions (scikit-learn's default); macro F1
    is the mean of the per-class F1, not the F1 of macro P and R.
    """
    # Imported here: the CLI reads SUMMARY_KEYS at start-up, and scikit-learn takes a second
    # to import (and is an extra that `pinzi convert` does not need).
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    gold, pred = np.asarray(gold, np.int64), np.asarray(pred, np.int64)
    classes = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=classes, average=None, zero_division=0)
    macro = precision_recall_fscore_support(gold, pred, average="macro", zero_division=0)
    report: dict[str, Any] = {
        "examples": int(len(gold)),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
    }
    if len(classes) == 2 and scores is not None and len(set(gold.tolist())) == 2:
        report["auc"] = float(roc_auc_score(gold, np.asarray(scores, np.float64)))
    report["per_class"] = [
        {"label": name, "precision": float(precision[i]), "recall": float(recall[i]),
         "f1": float(f1[i]), "support": int(support[i])} for i, name in enumerate(label_names)]
    report["labels"] = list(label_names)
    report["confusion"] = confusion_matrix(gold, pred, labels=classes).tolist()
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
