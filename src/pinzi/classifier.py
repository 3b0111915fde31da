"""A trained text classifier, ready to label texts: :class:`TextClassifier`.

    >>> clf = TextClassifier.load("runs/htl")                    # doctest: +SKIP
    >>> clf.predict(["房间很干净，服务也好", ""])                # doctest: +SKIP
    [Prediction(label='1', prob=0.97, probs={'0': 0.03, '1': 0.97}),
     Prediction(label='', prob=0.0, probs={})]

A classifier folder (from ``pinzi classify train``, or any Hugging Face sequence classifier)
holds the model (``config.json``, ``model.safetensors``), its tokenizer (``vocab.json`` for
pinzi, the Hugging Face tokenizer files otherwise) and ``classify.json`` (labels, columns,
maximum length). Two kinds of model sit behind one text encoder interface
(:class:`PinziTextEncoder`, :class:`HFTextEncoder`: ``encode``, ``is_blank``, ``pad_id``,
``max_length``, ``save``), and :func:`predict_logits` runs either over texts batched by length.
Training (:mod:`pinzi.classify_task`) builds on the same pieces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pinzi.errors import DataError, ModelLoadError
from pinzi.hub import CLASSIFIER_ARCHITECTURES, model_config
from pinzi.io import LabelledTexts
from pinzi.metrics import evaluate_logits, softmax
from pinzi.model import PinziForClassification, load_pretrained
from pinzi.text import normalise
from pinzi.tokenizer import CLS_ID, PAD_ID, PinziTokenizer

INFO_FILE = "classify.json"  # labels, columns, max_length, base, lora of a trained folder
MAX_BATCH_ROWS = 256  # inference batches: at most this many texts, whatever the token budget


@dataclass(frozen=True)
class Prediction:
    """The label of one text, its probability, and the probability of every label.
    A blank text gets ``Prediction("", 0.0, {})``."""

    label: str
    prob: float
    probs: dict[str, float] = field(hash=False)


# ---- text encoders: one interface over the two kinds of tokenizer -------------------------------
class PinziTextEncoder:
    """pinzi's vocabulary: ``[CLS]`` then one id per character of the normalised text."""

    kind = "pinzi"

    def __init__(self, tokenizer: PinziTokenizer, max_length: int):
        self.tokenizer, self.max_length, self.pad_id = tokenizer, max_length, PAD_ID

    @staticmethod
    def _clean(text: str) -> str:
        return normalise(text).strip()  # the pretraining corpus went through it

    def is_blank(self, text: str) -> bool:
        return not self._clean(text)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        cut = self.max_length - 1
        return [np.asarray([CLS_ID] + self.tokenizer.encode_text(self._clean(t)[:cut]), np.int64)
                for t in texts]

    def save(self, directory: Path) -> None:
        self.tokenizer.save(directory)


class HFTextEncoder:
    """A Hugging Face tokenizer: its own ids and special tokens, cut at ``max_length``."""

    kind = "hf"

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def is_blank(self, text: str) -> bool:
        return not text.strip()

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        if not texts:
            return []
        ids = self.tokenizer([t.strip() for t in texts], truncation=True,
                             max_length=self.max_length)["input_ids"]
        return [np.asarray(row, np.int64) for row in ids]

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)


TextEncoder = PinziTextEncoder | HFTextEncoder


def text_encoder(kind: str, tokenizer, config, max_length: int) -> TextEncoder:
    """The encoder of a loaded model: texts cut at ``max_length`` tokens, or shorter when the
    model's positions (or a Hugging Face tokenizer's limit) end sooner."""
    if kind == "pinzi":
        return PinziTextEncoder(tokenizer, min(max_length, config.max_position_embeddings))
    limits = [max_length, getattr(tokenizer, "model_max_length", None) or max_length,
              getattr(config, "max_position_embeddings", None) or max_length]
    return HFTextEncoder(tokenizer, int(min(x for x in limits if x and x < 10**9)))


# ---- loading ------------------------------------------------------------------------------------
def model_kind(config: dict) -> str:
    """"pinzi" for a pinzi model's config.json, "hf" for any other."""
    return "pinzi" if config.get("model_type") == "pinzi" else "hf"


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return record.funcName != "log_state_dict_report"


@contextlib.contextmanager
def quiet_loading(new_head: bool = False) -> Iterator[None]:
    """Hide the deprecation chatter of transformers/peft while loading (real errors still raise),
    and with ``new_head`` transformers' load report too: a base loaded for a new task lacks its
    classifier by design, and the report would say so as if it were a fault."""
    # A filter rather than a level: at level WARNING or above, transformers also checks a
    # tensor-parallel plan and complains that pinzi's layers "were not sharded".
    report = logging.getLogger("transformers.modeling_utils")  # the logger of the report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if new_head:
            report.addFilter(_not_a_load_report)
        try:
            yield
        finally:
            report.removeFilter(_not_a_load_report)


def load_model(folder: str, kind: str, *, what: str = "a classifier", new_head: bool = False,
               **overrides):
    """``(model, tokenizer)`` of a sequence classifier (pinzi's ``PinziForClassification`` or
    ``AutoModelForSequenceClassification``) from ``folder`` or a hub id; ``overrides`` go to
    ``from_pretrained``. Anything that cannot load is a :class:`ModelLoadError`.

    ``new_head``: ``folder`` is a base for a new classifier, so the weights outside its base
    model (the head) are meant to be missing and are not reported; a Hugging Face checkpoint
    that also lacks weights of the base model itself gets a one-line warning naming them.
    """
    with quiet_loading(new_head):
        if kind == "pinzi":  # load_pretrained says itself what is damaged
            return load_pretrained(PinziForClassification, folder, **overrides)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                folder, output_loading_info=True, **overrides)
        except Exception as err:  # bad folder, unknown architecture, no tokenizer...
            raise ModelLoadError(f"cannot load {folder!r} as {what}: {err}") from err
    if new_head:
        encoder = f"{model.base_model_prefix}."
        missing = sorted(k for k in loading["missing_keys"] if k.startswith(encoder))
        if missing:
            warnings.warn(f"{folder}: {len(missing)} weight(s) of the encoder are not in the "
                          f"checkpoint and start random, e.g. {missing[0]}", stacklevel=3)
    return model, tokenizer


# ---- batches by length --------------------------------------------------------------------------
def pad(sequences: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, longest)."""
    longest = max(1, max(len(s) for s in sequences))
    ids = np.full((len(sequences), longest), pad_id, np.int64)
    mask = np.zeros((len(sequences), longest), np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def length_batches(order: np.ndarray, lengths: np.ndarray, batch_tokens: int,
                   max_rows: int | None = None) -> list[np.ndarray]:
    """Cut ``order`` (sorted by length, shortest first) into batches of at most ``batch_tokens``
    padded tokens (rows x the longest, which is the last) and ``max_rows`` rows."""
    batches, begin = [], 0
    while begin < len(order):
        end = begin + 1
        while (end < len(order) and (max_rows is None or end - begin < max_rows)
               and (end - begin + 1) * int(lengths[order[end]]) <= batch_tokens):
            end += 1
        batches.append(order[begin:end])
        begin = end
    return batches


@torch.no_grad()
def predict_logits(model: nn.Module, sequences: Sequence[np.ndarray], pad_id: int,
                   batch_tokens: int = 8192) -> np.ndarray:
    """(N, K) float32 logits, in the order of ``sequences``; batched by length."""
    if not sequences:
        return np.zeros((0, 0), np.float32)
    device = next(model.parameters()).device
    lengths = np.asarray([len(s) for s in sequences])
    order = np.argsort(lengths, kind="stable")
    parts, where = [], []
    for batch in length_batches(order, lengths, batch_tokens, MAX_BATCH_ROWS):
        ids, mask = pad([sequences[i] for i in batch], pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        parts.append(logits.float().cpu().numpy())
        where.append(batch)
    out = np.empty((len(sequences), parts[0].shape[1]), np.float32)
    out[np.concatenate(where)] = np.concatenate(parts)
    return out


def label_indices(data: LabelledTexts, names: Sequence[str], *, known_from: str) -> np.ndarray:
    """Labels as indices into ``names``; a label not among them is a DataError naming its line."""
    index = {name: i for i, name in enumerate(names)}
    out = np.empty(len(data), np.int64)
    for i, (label, line) in enumerate(zip(data.labels, data.lines, strict=True)):
        if label not in index:
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise DataError(f"{data.path} line {line}: label {label!r} never occurs in "
                            f"{known_from} (its labels: {shown})")
        out[i] = index[label]
    return out


# ---- a trained classifier -----------------------------------------------------------------------
class TextClassifier:
    """A trained folder (from ``pinzi classify train``, or a Hugging Face sequence classifier),
    ready to label texts: what ``pinzi classify predict`` / ``eval`` and ``pinzi serve
    --classifier`` (``/v1/classify``) run."""

    def __init__(self, model: nn.Module, text: TextEncoder, labels: Sequence[str],
                 info: dict[str, Any] | None = None):
        self.model, self.text, self.labels = model.eval(), text, list(labels)
        self.info = info or {}

    @classmethod
    def load(cls, name_or_path: str | Path, device: str | None = None) -> TextClassifier:
        """A classifier folder or hub id, on ``device`` (default: the GPU if there is one).

        ModelLoadError when it is no model, or a model of another kind (a converter)."""
        folder, config = model_config(name_or_path)
        kind = model_kind(config)
        info_path = Path(folder, INFO_FILE)
        info = json.loads(info_path.read_text("utf-8")) if info_path.is_file() else {}
        architectures = config.get("architectures") or []
        if architectures and not any(a.endswith(CLASSIFIER_ARCHITECTURES)
                                     for a in architectures):
            raise ModelLoadError(f"{name_or_path} is not a text classifier (it is "
                                 f"{', '.join(architectures)}): train one with "
                                 "`pinzi classify train`")
        model, tokenizer = load_model(folder, kind)
        if kind == "pinzi":
            labels = model.config.label_names or [model.config.id2label[i]
                                                  for i in range(model.config.num_labels)]
            max_length = info.get("max_length") or model.config.max_position_embeddings
        else:
            labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
            max_length = info.get("max_length") or 512
        text = text_encoder(kind, tokenizer, model.config, max_length)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), text, labels, info)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, K) class probabilities, columns in the order of ``labels``; the row of a blank
        text is NaN."""
        texts = list(texts)
        out = np.full((len(texts), len(self.labels)), np.nan)
        keep = [i for i, t in enumerate(texts) if not self.text.is_blank(t)]
        if keep:
            logits = predict_logits(self.model, self.text.encode([texts[i] for i in keep]),
                                    self.text.pad_id)
            out[keep] = softmax(logits.astype(np.float64))
        return out

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One :class:`Prediction` per text, in order; a blank text gets ``("", 0.0, {})``."""
        results = []
        for row in self.predict_proba(texts):
            if np.isnan(row).any():
                results.append(Prediction("", 0.0, {}))
                continue
            best = int(row.argmax())
            results.append(Prediction(self.labels[best], float(row[best]),
                                      {name: float(p) for name, p in zip(self.labels, row,
                                                                         strict=True)}))
        return results

    def evaluate(self, data: LabelledTexts) -> dict[str, Any]:
        """The classification report of a labelled file (labels must be the model's), with
        ``loss`` and ``file``."""
        gold = label_indices(data, self.labels, known_from="the model's labels")
        logits = predict_logits(self.model, self.text.encode(data.texts), self.text.pad_id)
        report = evaluate_logits(logits, gold, self.labels)
        report["file"] = data.path
        return report
