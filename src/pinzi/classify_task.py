"""Fine-tuning a text classifier: the :class:`ClassificationTask` that the one training loop
(:func:`pinzi.train.train`) runs, and the pieces it needs.

* :class:`ClassifySettings`, the ``classify`` section of the settings;
* :func:`load_base`: a pinzi encoder or any Hugging Face encoder with a new classifier head;
* :class:`HFClassifier`: a Hugging Face model behind pinzi's ``forward`` (per-class weights);
* class balance: :func:`inverse_frequency_weights` (``class_weights``) and
  :func:`epoch_order` (``oversample``);
* the task itself: batches of similar length under a token budget, a pure function of
  (seed, epoch); the dev figures of :mod:`pinzi.metrics`; the saved folder, which
  :class:`pinzi.classifier.TextClassifier` loads (with LoRA the adapter is merged in, so every
  folder loads the same way and needs neither peft nor the base model).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pinzi.classifier import (
    INFO_FILE,
    TextEncoder,
    length_batches,
    load_model,
    pad,
    predict_logits,
    text_encoder,
)
from pinzi.errors import SettingsError
from pinzi.io import LabelledTexts, read_labelled
from pinzi.lora import merged_copy
from pinzi.metrics import evaluate_logits
from pinzi.model import ClassificationOutput

Metric = Literal["accuracy", "macro_f1"]
METRICS: tuple[str, ...] = get_args(Metric)
HEADS = ("classifier", "score")  # the classification head of pinzi / of Hugging Face models


@dataclass
class ClassifySettings:
    """The ``classify`` section of ``pinzi classify train``'s settings (steps, learning rate...
    are the ``train`` section; the shape of LoRA adapters the ``lora`` section)."""

    metric: Metric = "accuracy"  # dev figure for early stopping and the best model
    max_length: int = 256  # tokens per text (with [CLS]); longer texts are cut
    class_weights: bool = False  # weight the loss by inverse class frequency
    oversample: bool = False  # repeat minority-class examples up to the majority's count


# ---- labels -------------------------------------------------------------------------------------
def label_order(labels: Iterable[str]) -> list[str]:
    """The distinct labels in a stable order: numerically when all are numbers (0, 1, 2, 10)."""
    names = set(labels)
    try:
        return sorted(names, key=lambda name: (float(name), name))
    except ValueError:
        return sorted(names)


def read_splits(train_file: str | Path, dev_file: str | Path, test_file: str | Path | None,
                label_column: str, text_column: str,
                warn: Callable[[str], None]) -> dict[str, LabelledTexts]:
    """The labelled files of a classification job by split (``test`` only when given), and
    the labels of the training split in a stable order; what each file skipped is warned."""
    splits = {"train": read_labelled(train_file, label_column, text_column),
              "dev": read_labelled(dev_file, label_column, text_column)}
    if test_file is not None:
        splits["test"] = read_labelled(test_file, label_column, text_column)
    for data in splits.values():
        if data.skipped_message():
            warn(data.skipped_message())
    return splits


# ---- the base model -----------------------------------------------------------------------------
def load_base(folder: str, kind: str, label_names: Sequence[str],
              max_length: int = 256) -> tuple[nn.Module, TextEncoder]:
    """``(model, text_encoder)`` for fine-tuning: the base's encoder with a new classifier.

    ``folder`` (with ``kind`` "pinzi" or "hf", from :func:`pinzi.hub.model_config`) is a pinzi
    model folder (a converter from ``pinzi pretrain``: its encoder weights load, the
    classifier is new) or any Hugging Face encoder by hub name or path
    (``AutoModelForSequenceClassification``). ModelLoadError when it cannot load.
    """
    names = list(label_names)
    id2label, label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    if kind == "pinzi":
        model, tokenizer = load_model(folder, kind, new_head=True, num_labels=len(names),
                                      label_names=names, ignore_mismatched_sizes=True)
        model.config.id2label, model.config.label2id = id2label, label2id
    else:
        model, tokenizer = load_model(folder, kind,
                                      what="a Hugging Face encoder for classification",
                                      new_head=True, num_labels=len(names), id2label=id2label,
                                      label2id=label2id, ignore_mismatched_sizes=True)
    model.train()
    return model, text_encoder(kind, tokenizer, model.config, max_length)


class HFClassifier(nn.Module):
    """A Hugging Face sequence classifier behind pinzi's forward: ``class_weights`` weigh the
    loss, computed here from the logits (their models take no per-class weights)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, class_weights: torch.Tensor | None = None):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels, weight=class_weights)
        return ClassificationOutput(loss=loss, logits=logits)


def exportable(model: nn.Module) -> nn.Module:
    """The plain model to save: unwrapped, and with LoRA adapters merged into a copy."""
    return merged_copy(model.model if isinstance(model, HFClassifier) else model)


# ---- class balance ------------------------------------------------------------------------------
def inverse_frequency_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """w_c = N / (K * n_c): 1 for every class when balanced; a rare class weighs more."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)


def epoch_order(labels: np.ndarray, n_classes: int, rng: np.random.Generator,
                oversample: bool) -> np.ndarray:
    """The examples of one epoch, shuffled. With ``oversample`` every class is brought up to
    the largest one's count: its examples repeated whole, then a random subset for the rest."""
    index = np.arange(len(labels))
    if oversample:
        counts = np.bincount(labels, minlength=n_classes)
        target, parts = int(counts.max()), []
        for c in range(n_classes):
            members = index[labels == c]
            if len(members):
                repeats, rest = divmod(target, len(members))
                parts += [np.tile(members, repeats), rng.choice(members, rest, replace=False)]
        index = np.concatenate(parts)
    return rng.permutation(index)


# ---- the training task --------------------------------------------------------------------------
@dataclass
class Encoded:
    """The token ids of a split's texts and their label indices."""

    ids: list[np.ndarray]
    labels: np.ndarray  # (N,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(s) for s in self.ids], np.int64)


class ClassificationTask:
    """The :class:`pinzi.train.Task` of fine-tuning a classifier (pinzi or Hugging Face)."""

    def __init__(self, text: TextEncoder, train: Encoded, dev: Encoded,
                 label_names: Sequence[str], settings: ClassifySettings, *, batch_tokens: int,
                 seed: int, info: dict[str, Any] | None = None):
        if settings.metric not in METRICS:
            raise SettingsError(f"unknown metric {settings.metric!r}; choose one of "
                                f"{', '.join(METRICS)}")
        self.text, self.train_data, self.dev_data = text, train, dev
        self.label_names, self.settings = list(label_names), settings
        self.metric = settings.metric
        self.batch_tokens, self.seed = batch_tokens, seed
        self.train_lengths = train.lengths
        self.class_weights = None
        if settings.class_weights:
            weights = inverse_frequency_weights(train.labels, len(self.label_names))
            self.class_weights = torch.tensor(weights, dtype=torch.float32)
        self.info = info or {}

    # ---- batching ----------------------------------------------------------------------------
    def batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's examples (oversampled if asked), shuffled, grouped by similar length,
        the batches in random order: a pure function of (seed, epoch)."""
        rng = np.random.default_rng((self.seed, epoch))
        order = epoch_order(self.train_data.labels, len(self.label_names), rng,
                            self.settings.oversample)
        order = order[np.argsort(self.train_lengths[order], kind="stable")]
        batches = length_batches(order, self.train_lengths, self.batch_tokens)
        return [batches[i] for i in rng.permutation(len(batches))]

    def make_batch(self, indices: np.ndarray, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        ids, mask = pad([self.train_data.ids[i] for i in indices], self.text.pad_id)
        batch = {"input_ids": ids, "attention_mask": mask,
                 "labels": torch.from_numpy(self.train_data.labels[indices])}
        if self.class_weights is not None:
            batch["class_weights"] = self.class_weights
        return batch

    # ---- validation and saving ---------------------------------------------------------------
    def evaluate(self, model) -> dict[str, float]:
        """Loss (unweighted cross-entropy), accuracy, macro P/R/F1 and, for two classes, AUC."""
        logits = predict_logits(model, self.dev_data.ids, self.text.pad_id,
                                max(self.batch_tokens, 2048))
        figures = evaluate_logits(logits, self.dev_data.labels, self.label_names)
        return {k: v for k, v in figures.items() if isinstance(v, float)}

    def save(self, model, directory: Path) -> None:
        """The plain model (adapters merged), its tokenizer and ``classify.json``."""
        exportable(model).save_pretrained(directory)
        self.text.save(directory)
        info = {**self.info, "labels": self.label_names, "max_length": self.text.max_length}
        Path(directory, INFO_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2)
                                              + "\n", encoding="utf-8")
