"""``pinzi classify train``: fine-tune a pinzi encoder, or any Hugging Face encoder, on labelled
texts; keep the best model by the dev split; report on dev (and test).

    pinzi classify train --train train.tsv.gz --dev dev.tsv.gz --out runs/htl  # shipped base
    pinzi classify eval --model runs/htl test.tsv.gz
    echo 房间很干净 | pinzi classify predict --model runs/htl

The pieces live below this recipe: the data files in :mod:`pinzi.io` (:func:`read_labelled`),
the figures in :mod:`pinzi.metrics`, a trained folder ready to label texts in
:mod:`pinzi.classifier` (:class:`TextClassifier`), the training task in
:mod:`pinzi.classify_task`, LoRA in :mod:`pinzi.lora`, and the one training loop in
:mod:`pinzi.train`. See docs/classify.md.

Settings come in three sections (:mod:`pinzi.settings`): ``train`` (:class:`TrainConfig`),
``classify`` (:class:`ClassifySettings`) and ``lora`` (:class:`LoraSettings`, used with
``lora=True``), layered as: the fields' defaults, :data:`DEFAULTS`, the learning rate of
:data:`LEARNING_RATES` for the kind of base, then the caller's ``settings``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from pinzi.classifier import TextClassifier, label_indices, model_kind
from pinzi.classify_task import (
    HEADS,
    ClassificationTask,
    ClassifySettings,
    Encoded,
    HFClassifier,
    label_order,
    load_base,
    read_splits,
)
from pinzi.errors import DataError
from pinzi.hub import model_config, resolve_model
from pinzi.lora import LoraSettings, apply_lora
from pinzi.plots import plot_confusion
from pinzi.settings import Layers, layers, record, resolve
from pinzi.train import TrainConfig, run_folder, train

SECTIONS = {"train": TrainConfig, "classify": ClassifySettings, "lora": LoraSettings}
# Classification's own defaults over the fields' ones: an epoch of ChnSentiCorp is ~170
# batches of 4096 tokens, so 1000 steps are ~6 epochs, with a look at the dev split every 100
# steps, a stop after 5 looks without a better figure, and a warmup of a tenth of the steps.
DEFAULTS = {"train": dict(max_steps=1000, eval_every=100, save_every=100, batch_tokens=4096,
                          patience=5, log_every=10, warmup_steps=0.1),
            "lora": dict(dropout=0.1)}
# (base kind, lora) -> default peak learning rate, a layer between DEFAULTS and the caller's
# settings. The small pinzi encoders want more than BERT's: on ChnSentiCorp dev, 5e-4 gave
# 86.5% where 1e-4 gave 85.7%; the adapters alone learn faster still.
LEARNING_RATES = {("pinzi", False): 5e-4, ("hf", False): 3e-5, ("pinzi", True): 1e-3,
                  ("hf", True): 5e-4}


def learning_rate(kind: str, lora: bool) -> dict[str, Any]:
    """The settings layer of the default learning rate for this kind of base."""
    return {"train": {"learning_rate": LEARNING_RATES[(kind, lora)]}}


def train_classifier(base: str | Path | None, train_file: str | Path, dev_file: str | Path,
                     out_dir: str | Path, *, lora: bool = False,
                     test_file: str | Path | None = None, label_column: str = "label",
                     text_column: str = "text", settings: Layers = None, resume: bool = False,
                     overwrite: bool = False, progress: bool = True,
                     on_step: Callable[[int, float], None] | None = None,
                     warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``base`` on a labelled train file, keep the best model by the dev split.

    Args:
        base: a pinzi model folder, a Hugging Face encoder by hub name or path, or None for
            the shipped model.
        train_file, dev_file, test_file: labelled TSV/CSV files (``.gz`` too).
        out_dir: the run folder: the classifier, checkpoints, logs, reports.
        lora: train LoRA adapters (the ``lora`` section) and the classifier head instead of
            every weight; the saved model has them merged in.
        settings: the ``train``, ``classify`` and ``lora`` sections (one dict or layers).
        warn: called with the warnings (empty texts skipped); default ``warnings.warn``.
        resume, overwrite: go on with the run in ``out_dir``, or replace it; without either an
            earlier run there is an error (:func:`pinzi.train.run_folder`).

    Afterwards the best model is evaluated on dev (and test): OUT/metrics.json,
    OUT/confusion_dev.png (and _test). Returns the training summary with those reports under
    ``dev`` / ``test``. DataError, SettingsError, ModelLoadError, TrainingError for what the
    caller can fix.
    """
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    user = layers(settings)
    checked = resolve(SECTIONS, DEFAULTS, *user)  # every setting, before any file is read
    if lora:
        checked["lora"].check()

    # The data: labels in a stable order, a dev/test label unseen in training is an error.
    splits = read_splits(train_file, dev_file, test_file, label_column, text_column, warn)
    names = label_order(splits["train"].labels)
    if len(names) < 2:
        raise DataError(f"{train_file}: classification needs at least two labels; the "
                        f"training data has only {names[0]!r}")
    gold = {split: label_indices(data, names, known_from=f"the training data {train_file}")
            for split, data in splits.items()}

    # The settings, with the learning rate for this kind of base.
    base_name = str(base) if base is not None else str(resolve_model(None))
    folder, base_config = model_config(base_name)
    kind = model_kind(base_config)
    config = resolve(SECTIONS, DEFAULTS, learning_rate(kind, lora), *user)
    cfg, classify = config["train"], config["classify"]

    # The model: the base's encoder, a new classifier head (the same seed, the same head).
    torch.manual_seed(cfg.seed)
    model, text = load_base(folder, kind, names, classify.max_length)
    if lora:
        apply_lora(model, config["lora"], train_also=HEADS)
    if kind == "hf":
        model = HFClassifier(model)
    out = Path(out_dir)

    def encoded(split: str) -> Encoded:
        return Encoded(text.encode(splits[split].texts), gold[split])

    info = {"kind": kind, "base": base_name, "label_column": label_column,
            "text_column": text_column, "metric": classify.metric, "lora": lora}
    task = ClassificationTask(text, encoded("train"), encoded("dev"), names, classify,
                              batch_tokens=cfg.batch_tokens, seed=cfg.seed, info=info)
    with run_folder(out, resume=resume, overwrite=overwrite):
        record(out, config)
        summary = train(model, task, cfg, out, resume=resume, progress=progress,
                        on_step=on_step)


    if not PartialState().is_main_process:  # several processes: the main one reports
        return summary

    # The best model on dev (and test): reports, confusion matrices.
    classifier = TextClassifier.load(out)
    reports = {}
    for split, data in splits.items():
        if split != "train":
            reports[split] = classifier.evaluate(data)
            plot_confusion(reports[split]["confusion"], names, out / f"confusion_{split}.png",
                           f"{Path(data.path).name}: confusion matrix")
    (out / "metrics.json").write_text(json.dumps(reports, ensure_ascii=False, indent=2) + "\n",
                                      encoding="utf-8")
    return {**summary, **reports}
