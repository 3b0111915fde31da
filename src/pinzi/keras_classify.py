"""Fine-tuning a text classifier with Keras 3: ``compile``, ``fit`` (callbacks such as early
stopping), ``evaluate``, ``predict``, on pinzi's encoders or any Hugging Face encoder.

    >>> import keras                                                     # doctest: +SKIP
    >>> from pinzi.io import read_labelled
    >>> from pinzi.keras_classify import build_classifier
    >>> train, dev = read_labelled("train.tsv"), read_labelled("dev.tsv")
    >>> model = build_classifier("runs/small", train.labels)
    >>> model.compile(optimizer=keras.optimizers.AdamW(5e-4),
    ...               loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> model.fit(model.batches(train, shuffle=True), validation_data=model.batches(dev),
    ...           epochs=5, callbacks=[keras.callbacks.EarlyStopping(
    ...               monitor="val_accuracy", patience=1, restore_best_weights=True)])
    >>> model.evaluate(model.batches(dev), return_dict=True)
    >>> model.save_classifier("runs/keras-htl")   # `pinzi classify predict -m runs/keras-htl`

Keras runs on its PyTorch backend (no TensorFlow): importing this module sets
``KERAS_BACKEND=torch`` unless the variable is already set, and it must be set before Keras is
first imported. The model is the torch classifier of ``pinzi classify train`` (the base's
encoder with a new head, :func:`pinzi.classify_task.load_base`) inside a
``keras.layers.TorchModuleWrapper``, followed by a softmax: Keras trains the torch weights in
place, so :meth:`KerasClassifier.save_classifier` writes the ordinary classifier folder
(safetensors) that :class:`pinzi.classifier.TextClassifier` loads, and
:func:`load_classifier` reads such a folder back into Keras. Keras's own ``model.save``
format is refused: ``TorchModuleWrapper`` would pickle the torch module into it. See
docs/keras.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported, or it wants TF

import keras
import numpy as np
import torch
from torch import nn

from pinzi.classifier import INFO_FILE, TextClassifier, TextEncoder, label_indices, model_kind, pad
from pinzi.classify_task import label_order, load_base, read_splits
from pinzi.errors import DataError, PinziError, SettingsError
from pinzi.hub import model_config
from pinzi.io import LabelledTexts, write_atomic, write_dir_atomic

KERAS_FORMAT_REFUSED = ("a pinzi Keras classifier is saved with model.save_classifier(FOLDER) "
                        "(safetensors; load it with pinzi.keras_classify.load_classifier), "
                        "not in the Keras format, which would pickle the torch model")


class Logits(nn.Module):
    """A sequence classifier (pinzi's or Hugging Face's) as a function of ids and mask to
    logits, the plain tensor a Keras layer must return."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids.long(), attention_mask=attention_mask.long()).logits


class TextBatches(keras.utils.PyDataset):
    """Token ids (and label indices) in batches of ``batch_size`` rows, each batch padded to
    its longest text: ``({"input_ids", "attention_mask"}, labels)``, or the inputs alone.
    With ``shuffle`` the rows are reshuffled every epoch, a function of (seed, epoch);
    otherwise they keep their order, so ``predict`` answers in the order of the texts."""

    def __init__(self, ids: list[np.ndarray], pad_id: int, labels: np.ndarray | None = None,
                 *, batch_size: int = 32, shuffle: bool = False, seed: int = 0):
        super().__init__()
        if batch_size < 1:
            raise SettingsError(f"batch_size must be at least 1, not {batch_size}")
        self.ids, self.pad_id, self.labels = ids, pad_id, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0
        self.order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.ids))
        return np.random.default_rng((self.seed, self.epoch)).permutation(len(self.ids))

    def __len__(self) -> int:
        return -(-len(self.ids) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        ids, mask = pad([self.ids[i] for i in rows], self.pad_id)
        inputs = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        return inputs if self.labels is None else (inputs, self.labels[rows])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._epoch_order()


class KerasClassifier(keras.Model):
    """A ``keras.Model`` from texts' token ids to class probabilities (columns in the order
    of ``labels``), around a torch sequence classifier. Build one with
    :func:`build_classifier` or :func:`load_classifier`; feed it :meth:`batches`."""

    def __init__(self, model: nn.Module, text: TextEncoder, labels: Sequence[str],
                 info: dict[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.classifier = keras.layers.TorchModuleWrapper(Logits(model),
                                                          output_shape=(None, len(labels)))
        self.softmax = keras.layers.Softmax()
        # Tuples and a JSON string: Keras would turn a list or a dict into tracked structures.
        self.text, self.labels = text, tuple(labels)
        self.info_json = json.dumps(info or {}, ensure_ascii=False)

    @property
    def torch_model(self) -> nn.Module:
        """The torch sequence classifier that Keras trains (in place)."""
        return self.classifier.module.model

    def call(self, inputs: dict[str, Any], training: bool | None = None):
        logits = self.classifier(inputs["input_ids"], inputs["attention_mask"],
                                 training=training)
        return self.softmax(logits)

    def batches(self, data: LabelledTexts | Sequence[str], *, batch_size: int = 32,
                shuffle: bool = False, seed: int = 0) -> TextBatches:
        """What ``fit``, ``evaluate`` and ``predict`` take: a labelled file's texts and label
        indices (a label the model does not know is a DataError), or plain texts (for
        ``predict``, which then answers in their order)."""
        if isinstance(data, LabelledTexts):
            labels = label_indices(data, self.labels, known_from="the model's labels")
            return TextBatches(self.text.encode(data.texts), self.text.pad_id, labels,
                               batch_size=batch_size, shuffle=shuffle, seed=seed)
        if isinstance(data, str):
            raise DataError("batches() takes a list of texts, not one string")
        return TextBatches(self.text.encode(list(data)), self.text.pad_id,
                           batch_size=batch_size, shuffle=shuffle, seed=seed)

    def predict_labels(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        """The most probable label of each text, in order; "" for a blank text, as
        :meth:`pinzi.classifier.TextClassifier.predict` answers."""
        texts = list(texts)
        labels = [""] * len(texts)
        keep = [i for i, text in enumerate(texts) if not self.text.is_blank(text)]
        if keep:
            probs = self.predict(self.batches([texts[i] for i in keep], batch_size=batch_size),
                                 verbose=0)
            for i, best in zip(keep, np.asarray(probs).argmax(axis=1), strict=True):
                labels[i] = self.labels[best]
        return labels

    def save_classifier(self, directory: str | Path) -> Path:
        """Write (atomically) the classifier folder that ``pinzi classify predict`` /
        ``eval``, ``pinzi serve --classifier`` and :func:`load_classifier` load: the torch
        model (safetensors, config.json), its tokenizer and ``classify.json``."""
        target = Path(directory)
        replaceable = not target.exists() or (target.is_dir() and (
            not any(target.iterdir()) or (target / INFO_FILE).is_file()))
        if not replaceable:
            raise DataError(f"{target} exists and is no classifier folder; the classifier "
                            "replaces the whole folder, so give a new or empty one")
        info = {**json.loads(self.info_json), "labels": list(self.labels),
                "max_length": self.text.max_length, "trainer": "keras"}

        def fill(folder: Path) -> None:
            self.torch_model.save_pretrained(folder)
            self.text.save(folder)
            Path(folder, INFO_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2)
                                               + "\n", encoding="utf-8")

        write_dir_atomic(target, fill)
        return target

    def save(self, *args, **kwargs) -> None:
        """Refused before Keras opens a file: see :data:`KERAS_FORMAT_REFUSED`."""
        raise PinziError(KERAS_FORMAT_REFUSED)

    def get_config(self) -> dict[str, Any]:
        """Refused: Keras's config of a TorchModuleWrapper is the pickled torch module."""
        raise PinziError(KERAS_FORMAT_REFUSED)


def check_backend() -> None:
    """SettingsError unless Keras runs on PyTorch, the only backend that wraps torch models."""
    if keras.backend.backend() != "torch":
        raise SettingsError(f"pinzi's Keras classifiers need Keras's PyTorch backend, but "
                            f"Keras runs on {keras.backend.backend()!r}: set KERAS_BACKEND=torch "
                            "before Keras is first imported")


def build_classifier(base: str | Path, labels: Sequence[str], *, max_length: int = 256,
                     seed: int = 0, info: dict[str, Any] | None = None) -> KerasClassifier:
    """A new classifier to ``compile`` and ``fit``: ``base``'s encoder with a new head.

    Args:
        base: a pinzi model folder (a converter from ``pinzi pretrain``) or any Hugging Face
            encoder by hub name or path, as ``pinzi classify train --base`` takes.
        labels: the label names, or simply every label of the training file; they are put in
            the order of ``pinzi classify train`` (numeric when all are numbers).
        max_length: tokens per text (with ``[CLS]``); longer texts are cut.
        seed: seeds the new head's weights (the same seed, the same head).
        info: more to keep in the saved folder's ``classify.json`` (the data's columns).

    ModelLoadError when ``base`` cannot load, DataError for fewer than two labels.
    """
    check_backend()
    names = label_order(labels)
    if len(names) < 2:
        raise DataError(f"classification needs at least two labels, not {names}")
    folder, config = model_config(str(base))
    kind = model_kind(config)
    torch.manual_seed(seed)
    model, text = load_base(folder, kind, names, max_length)
    return KerasClassifier(model, text, names, {**(info or {}), "kind": kind, "base": str(base)})


def load_classifier(folder: str | Path) -> KerasClassifier:
    """A saved classifier folder (from :meth:`KerasClassifier.save_classifier` or ``pinzi
    classify train``) as a Keras model, to ``compile`` and train further or to evaluate.
    ModelLoadError when it is no classifier."""
    check_backend()
    loaded = TextClassifier.load(folder, device="cpu")  # Keras puts it on its own device
    info = {k: v for k, v in loaded.info.items() if k not in ("labels", "max_length")}
    return KerasClassifier(loaded.model, loaded.text, loaded.labels, info)


def train_keras_classifier(base: str | Path, train_file: str | Path, dev_file: str | Path,
                           out_dir: str | Path, *, test_file: str | Path | None = None,
                           epochs: int = 3, batch_size: int = 32, learning_rate: float = 5e-4,
                           patience: int = 1, max_length: int = 256, label_column: str = "label",
                           text_column: str = "text", seed: int = 0, progress: bool = True,
                           warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The Keras workflow of the module's example, end to end (``pinzi classify keras``).

    AdamW at ``learning_rate``; at most ``epochs`` epochs, stopped by ``EarlyStopping`` after
    ``patience`` epochs without a better dev accuracy, the best epoch's weights restored;
    the classifier saved to ``out_dir`` and evaluated there on dev (and test), the reports
    also in OUT/metrics.json. Keras's progress goes to stderr. Returns the epochs run, the
    Keras history and the reports under ``dev`` (and ``test``).
    """
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    if epochs < 1:
        raise SettingsError(f"epochs must be at least 1, not {epochs}")
    splits = read_splits(train_file, dev_file, test_file, label_column, text_column, warn)
    names = label_order(splits["train"].labels)
    for data in splits.values():  # a test label unseen in training: said before training
        label_indices(data, names, known_from=f"the training data {train_file}")

    keras.utils.set_random_seed(seed)
    model = build_classifier(base, names, max_length=max_length, seed=seed,
                             info={"label_column": label_column, "text_column": text_column})
    train, dev = (model.batches(splits["train"], batch_size=batch_size, shuffle=True, seed=seed),
                  model.batches(splits["dev"], batch_size=batch_size))
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience,
                                         restore_best_weights=True)
    with contextlib.redirect_stdout(sys.stderr):  # results on stdout, progress on stderr
        history = model.fit(train, validation_data=dev, epochs=epochs, callbacks=[stop],
                            verbose=(1 if sys.stderr.isatty() else 2) if progress else 0)
    out = model.save_classifier(out_dir)

    classifier = TextClassifier.load(out)
    reports = {split: classifier.evaluate(data) for split, data in splits.items()
               if split != "train"}
    write_atomic(out / "metrics.json",
                 (json.dumps(reports, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return {"epochs": len(history.history["loss"]), "history": history.history, **reports}
