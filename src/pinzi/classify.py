"""Text classification: fine-tune a pinzi encoder, or any Hugging Face encoder, on labelled texts.

    pinzi classify train --base runs/small --train train.tsv.gz --dev dev.tsv.gz --out runs/htl
    pinzi classify eval --model runs/htl test.tsv.gz
    echo 房间很干净 | pinzi classify predict --model runs/htl

Reads top to bottom: the data files (:func:`read_labelled`), the metrics (plain numpy, small
enough to check by hand), the two kinds of base model behind one text encoder interface, the
:class:`ClassificationTask` that the one training loop (:func:`pinzi.train.train`) runs, and
:class:`TextClassifier`, a trained folder ready to label texts (what ``pinzi serve
--classifier`` answers ``/v1/classify`` with).

Data files are TSV (split on TAB, no quoting: the format of ``shared/data``) or CSV (the csv
module's quoting), ``.gz`` too, with a header line naming the columns. A line whose text is
empty is skipped with a warning that counts them; every other problem (a missing column, a
line with the wrong number of fields, an empty label, a dev/test label never seen in training)
is an error that names the file and the line.

A trained folder holds the model (``config.json``, ``model.safetensors``), its tokenizer
(``vocab.json`` for pinzi, the Hugging Face tokenizer files otherwise) and ``classify.json``
(labels, columns, maximum length). With ``--lora`` the adapter is merged into the saved
weights, so every folder loads the same way and needs neither peft nor the base model.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import functools
import gzip
import json
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INFO_FILE = "classify.json"
DATA_SUFFIXES = (".tsv", ".csv")  # each may also end in .gz
METRICS = ("accuracy", "macro_f1")
PINZI_LORA_TARGETS = ("qkv", "out", "mlp.0", "mlp.2")  # attention in/out, MLP in/out
MAX_BATCH_ROWS = 256  # inference batches: at most this many texts, whatever the token budget

# Training defaults for classification (``pinzi pretrain`` has its own): an epoch of
# ChnSentiCorp is ~170 batches of 4096 tokens, so 1000 steps are ~6 epochs, with a look at
# the dev split every 100 steps and a stop after 5 looks without a better figure.
CLASSIFY_DEFAULTS: dict[str, Any] = dict(max_steps=1000, eval_every=100, save_every=100,
                                         batch_tokens=4096, patience=5, log_every=10)
# (base kind, lora) -> default peak learning rate. The small pinzi encoders want more than
# BERT's: on ChnSentiCorp dev, 5e-4 gave 86.5% where 1e-4 gave 85.7%.
LEARNING_RATES = {("pinzi", False): 5e-4, ("hf", False): 3e-5, ("pinzi", True): 1e-3,
                  ("hf", True): 5e-4}


class ClassifyError(ValueError):
    """A problem the user can fix (bad file, bad column, unknown label): shown without traceback."""


@dataclass
class ClassifyConfig:
    """Classification settings; everything else (steps, learning rate...) is a TrainConfig."""

    metric: str = "accuracy"  # dev figure for early stopping and the best model: or macro_f1
    max_length: int = 256  # tokens per text (with [CLS]); longer texts are cut
    class_weights: bool = False  # weight the loss by inverse class frequency
    oversample: bool = False  # repeat minority-class examples up to the majority's count
    lora: bool = False  # train LoRA adapters (+ the classifier) instead of every weight
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: str = ""  # comma-separated module names; "" = qkv,out,mlp.0,mlp.2 / peft's


# ---- data ---------------------------------------------------------------------------------------
@dataclass
class LabelledTexts:
    """The examples of one file; ``lines`` are their 1-based line numbers (for error messages)."""

    path: str
    texts: list[str]
    labels: list[str]
    lines: list[int]
    skipped_empty: list[int] = field(default_factory=list)  # lines whose text was empty

    def __len__(self) -> int:
        return len(self.texts)

    def skipped_message(self) -> str | None:
        if not self.skipped_empty:
            return None
        shown = ", ".join(map(str, self.skipped_empty[:5]))
        more = ", ..." if len(self.skipped_empty) > 5 else ""
        return (f"{self.path}: skipped {len(self.skipped_empty)} line(s) with an empty text "
                f"(line {shown}{more})")


def _format_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix in DATA_SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    raise ClassifyError(f"{path}: unknown data format; expected .tsv or .csv (optionally .gz) "
                        "with a header line")


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ClassifyError(f"{path} line {number}: not valid UTF-8 ({err.reason} "
                                        f"at byte {err.start})") from None
                yield number, line.removeprefix("\ufeff") if number == 1 else line
    except (OSError, EOFError) as err:  # unreadable, or a damaged / truncated .gz
        raise ClassifyError(f"cannot read {path}: {err}") from err


def _rows(path: Path, fmt: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields); blank lines are left out."""
    lines = _decoded_lines(path)
    if fmt == "tsv":  # no quoting: a text may hold '"'; it never holds a TAB
        for number, line in lines:
            if line.strip():
                yield number, line.rstrip("\r\n").split("\t")
        return
    reader = csv.reader(line for _, line in lines)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error as err:
        raise ClassifyError(f"{path} line {reader.line_num}: {err}") from None


def read_labelled(path: str | Path, label_column: str | None = "label",
                  text_column: str = "text") -> LabelledTexts:
    """The (text, label) examples of a TSV/CSV file; ``label_column=None`` reads texts only."""
    path = Path(path)
    if not path.is_file():
        raise ClassifyError(f"no such data file: {path}")
    fmt = _format_of(path)
    rows = _rows(path, fmt)
    header = next(rows, None)
    if header is None:
        raise ClassifyError(f"{path} is empty: expected a header line naming the columns")
    number, columns = header[0], [c.strip() for c in header[1]]
    wanted = [("text", text_column)] + ([("label", label_column)] if label_column else [])
    for role, name in wanted:
        if name not in columns:
            raise ClassifyError(f"{path} line {number}: the header has no column {name!r} (its "
                                f"columns: {', '.join(columns)}); choose one with "
                                f"--{role}-column")
    text_at = columns.index(text_column)
    label_at = columns.index(label_column) if label_column else None
    data = LabelledTexts(str(path), [], [], [])
    for number, fields in rows:
        if len(fields) != len(columns):
            hint = (" (TSV has no quoting: is there a TAB inside the text?)"
                    if fmt == "tsv" and len(fields) > len(columns) else "")
            raise ClassifyError(f"{path} line {number}: {len(fields)} field(s) where the header "
                                f"has {len(columns)}{hint}")
        text = fields[text_at].strip()
        if not text:
            data.skipped_empty.append(number)
            continue
        label = fields[label_at].strip() if label_at is not None else ""
        if label_at is not None and not label:
            raise ClassifyError(f"{path} line {number}: the label ({label_column!r}) is empty")
        data.texts.append(text)
        data.labels.append(label)
        data.lines.append(number)
    if not data.texts:
        raise ClassifyError(f"{path} has no examples (only a header, or only empty texts)")
    return data


def label_order(labels: Iterable[str]) -> list[str]:
    """The distinct labels in a stable order: numerically when all are numbers (0, 1, 2, 10)."""
    names = set(labels)
    try:
        return sorted(names, key=lambda name: (float(name), name))
    except ValueError:
        return sorted(names)


def label_indices(data: LabelledTexts, names: Sequence[str], *, known_from: str) -> np.ndarray:
    """Labels as indices into ``names``; a label not among them is an error naming its line."""
    index = {name: i for i, name in enumerate(names)}
    out = np.empty(len(data), np.int64)
    for i, (label, line) in enumerate(zip(data.labels, data.lines, strict=True)):
        if label not in index:
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise ClassifyError(f"{data.path} line {line}: label {label!r} never occurs in "
                                f"{known_from} (its labels: {shown})")
        out[i] = index[label]
    return out


# ---- metrics (numpy only: every figure can be checked by hand) ----------------------------------
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


SUMMARY_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "auc")


def report_tables(results: Sequence[tuple[str, dict]], *, per_class: bool = True) -> list:
    """rich Tables: one summary row per (name, report), then each report's per-class figures."""
    from rich.table import Table

    has_auc = any("auc" in report for _, report in results)
    summary = Table("data", "examples", "accuracy", "macro P", "macro R", "macro F1",
                    *(["AUC"] if has_auc else []), title="text classification")
    for name, report in results:
        summary.add_row(name, str(report["examples"]),
                        *(f"{report[k]:.2%}" for k in SUMMARY_KEYS[:4]),
                        *([f"{report['auc']:.4f}" if "auc" in report else "-"] if has_auc else []))
    tables = [summary]
    for name, report in (results if per_class else ()):
        table = Table("label", "precision", "recall", "F1", "support", title=name)
        for row in report["per_class"]:
            table.add_row(row["label"], *(f"{row[k]:.2%}" for k in ("precision", "recall", "f1")),
                          str(row["support"]))
        tables.append(table)
    return tables


@functools.cache
def _cjk_font() -> str | None:
    """A font with Chinese glyphs that matplotlib can use (registering a system one), or None."""
    from matplotlib import font_manager

    known = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC",
             "Droid Sans Fallback", "AR PL UMing CN")
    have = {f.name for f in font_manager.fontManager.ttflist}
    for name in known:
        if name in have:
            return name
    hints = ("notosanscjk", "sourcehansans", "wqy", "simhei", "msyh", "pingfang",
             "droidsansfallback", "uming")
    for path in font_manager.findSystemFonts():
        if any(h in Path(path).name.lower().replace("-", "") for h in hints):
            try:
                font_manager.fontManager.addfont(path)
                return font_manager.FontProperties(fname=path).get_name()
            except (OSError, RuntimeError, ValueError):
                continue
    return None


def plot_confusion(matrix: Sequence[Sequence[int]], label_names: Sequence[str],
                   png_path: str | Path, title: str = "confusion matrix") -> None:
    """The confusion matrix as a PNG: colour = share of the gold row, numbers = counts.

    Label names with Chinese characters need a CJK font; without one the axes show indices.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    n = len(label_names)
    names = list(label_names)
    font = None
    if any(not name.isascii() for name in names):
        font = _cjk_font()
        if font is None:
            names = [str(i) for i in range(n)]
    rows = matrix / np.maximum(1, matrix.sum(1, keepdims=True))
    size = max(4.0, 0.45 * n + 2.5)
    with plt.rc_context({"font.sans-serif": [font, "DejaVu Sans"]} if font else {}):
        fig, ax = plt.subplots(figsize=(size + 1, size))
        image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold class")
        ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="gold", title=title)
        ax.set_xticklabels(names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticklabels(names)
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rows[i, j] > 0.5 else "black")
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
        plt.close(fig)


# ---- text encoders: one interface over the two kinds of tokenizer -------------------------------
class PinziTextEncoder:
    """pinzi's vocabulary: ``[CLS]`` then one id per character of the normalised text."""

    kind = "pinzi"

    def __init__(self, tokenizer, max_length: int):
        from pinzi.tokenizer import PAD_ID

        self.tokenizer, self.max_length, self.pad_id = tokenizer, max_length, PAD_ID

    @staticmethod
    def _clean(text: str) -> str:
        from pinzi.data import normalise  # the pretraining corpus went through it

        return normalise(text).strip()

    def is_blank(self, text: str) -> bool:
        return not self._clean(text)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        from pinzi.tokenizer import CLS_ID

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


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


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


class HFClassifier(nn.Module):
    """A Hugging Face sequence classifier behind pinzi's forward: ``class_weights`` weigh the
    loss, computed here from the logits (their models take no per-class weights)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, class_weights: torch.Tensor | None = None):
        from pinzi.model import ClassificationOutput

        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels, weight=class_weights)
        return ClassificationOutput(loss=loss, logits=logits)


def exportable(model: nn.Module) -> nn.Module:
    """The plain model to save: unwrapped, and with LoRA adapters merged into a copy."""
    if isinstance(model, HFClassifier):
        model = model.model
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        model = copy.deepcopy(model).merge_and_unload()
    return model


# ---- the training task --------------------------------------------------------------------------
@dataclass
class Encoded:
    ids: list[np.ndarray]
    labels: np.ndarray  # (N,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(s) for s in self.ids], np.int64)


class ClassificationTask:
    """The :class:`pinzi.train.Task` of fine-tuning a classifier (pinzi or Hugging Face)."""

    def __init__(self, text, train: Encoded, dev: Encoded, label_names: Sequence[str],
                 cfg: ClassifyConfig, *, batch_tokens: int, seed: int,
                 info: dict[str, Any] | None = None):
        if cfg.metric not in METRICS:
            raise ClassifyError(f"unknown metric {cfg.metric!r}; choose one of "
                                f"{', '.join(METRICS)}")
        self.text, self.train_data, self.dev_data = text, train, dev
        self.label_names, self.cfg = list(label_names), cfg
        self.metric = cfg.metric
        self.batch_tokens, self.seed = batch_tokens, seed
        self.train_lengths = train.lengths
        self.class_weights = None
        if cfg.class_weights:
            weights = inverse_frequency_weights(train.labels, len(self.label_names))
            self.class_weights = torch.tensor(weights, dtype=torch.float32)
        self.info = info or {}

    # ---- batching ----------------------------------------------------------------------------
    def batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's examples (oversampled if asked), shuffled, grouped by similar length,
        the batches in random order: a pure function of (seed, epoch)."""
        rng = np.random.default_rng((self.seed, epoch))
        order = epoch_order(self.train_data.labels, len(self.label_names), rng,
                            self.cfg.oversample)
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

    # ---- validation --------------------------------------------------------------------------
    def evaluate(self, model) -> dict[str, float]:
        """Loss (unweighted cross-entropy), accuracy, macro P/R/F1 and, for two classes, AUC."""
        logits = predict_logits(model, self.dev_data.ids, self.text.pad_id,
                                max(self.batch_tokens, 2048))
        figures = evaluate_logits(logits, self.dev_data.labels, self.label_names)
        return {k: v for k, v in figures.items() if isinstance(v, float)}

    def save(self, model, directory: Path) -> None:
        exportable(model).save_pretrained(directory)
        self.text.save(directory)
        info = {**self.info, "labels": self.label_names, "max_length": self.text.max_length}
        Path(directory, INFO_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2)
                                              + "\n", encoding="utf-8")


def evaluate_logits(logits: np.ndarray, gold: np.ndarray,
                    label_names: Sequence[str]) -> dict[str, Any]:
    """The classification report of ``logits`` against ``gold``, plus the mean loss."""
    probs = softmax(logits.astype(np.float64))
    loss = float(-np.log(np.maximum(probs[np.arange(len(gold)), gold], 1e-12)).mean())
    scores = probs[:, 1] if len(label_names) == 2 else None
    return {"loss": loss,
            **classification_report(gold, probs.argmax(1), label_names, scores=scores)}


# ---- base models --------------------------------------------------------------------------------
def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def locate_model(name: str) -> tuple[str, str, dict]:
    """(folder or hub id, kind "pinzi" | "hf", its config.json) of a model folder or hub id.

    A pinzi repo on the hub is downloaded whole (pinzi's loaders want a folder); a Hugging
    Face one is left to ``from_pretrained``, which downloads and caches it.
    """
    path = Path(name).expanduser()
    if path.exists():
        config = path / "config.json"
        if not path.is_dir() or not config.is_file():
            raise ClassifyError(f"{name} is not a model folder (no config.json in it)")
        try:
            values = json.loads(config.read_text(encoding="utf-8"))
            kind = "pinzi" if values.get("model_type") == "pinzi" else "hf"
        except (OSError, ValueError, AttributeError) as err:
            raise ClassifyError(f"{config} cannot be read as a model config: {err}") from err
        return str(path), kind, values
    if _looks_like_path(name):
        raise ClassifyError(f"no such model folder: {name}")
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        values = json.loads(Path(hf_hub_download(name, "config.json")).read_text("utf-8"))
        if values.get("model_type") == "pinzi":
            return snapshot_download(name), "pinzi", values
    except Exception as err:  # offline, unknown repo, bad name: one clear message
        raise ClassifyError(f"no model folder {name!r} here, and it could not be fetched from "
                            f"the Hugging Face hub: {err}") from err
    return name, "hf", values


def load_base(base: str, label_names: Sequence[str], max_length: int = 256):
    """``(model, text_encoder)`` for fine-tuning: the base's encoder with a new classifier.

    ``base`` is a pinzi model folder (a converter from ``pinzi pretrain``: its encoder weights
    load, the classifier is new) or any Hugging Face encoder by hub name or path
    (``AutoModelForSequenceClassification``).
    """
    from pinzi.model import ModelLoadError, PinziForClassification, load_pretrained

    folder, kind, _ = locate_model(base)
    names = list(label_names)
    id2label, label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    with _quiet_loading():
        if kind == "pinzi":
            try:
                model, tokenizer = load_pretrained(PinziForClassification, folder,
                                                   num_labels=len(names), label_names=names,
                                                   ignore_mismatched_sizes=True)
            except (ModelLoadError, ValueError) as err:
                raise ClassifyError(str(err)) from err
            model.config.id2label, model.config.label2id = id2label, label2id
            text = PinziTextEncoder(tokenizer,
                                    min(max_length, model.config.max_position_embeddings))
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForSequenceClassification.from_pretrained(
                    folder, num_labels=len(names), id2label=id2label, label2id=label2id,
                    ignore_mismatched_sizes=True)
            except Exception as err:  # bad folder, unknown architecture, no tokenizer...
                raise ClassifyError(f"cannot load {base!r} as a Hugging Face encoder for "
                                    f"classification: {err}") from err
            text = HFTextEncoder(tokenizer, _hf_max_length(tokenizer, model.config, max_length))
    model.train()
    return model, text


def _hf_max_length(tokenizer, config, wanted: int) -> int:
    limits = [wanted, getattr(tokenizer, "model_max_length", None) or wanted,
              getattr(config, "max_position_embeddings", None) or wanted]
    return int(min(x for x in limits if x and x < 10**9))


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide the deprecation chatter of transformers/peft while loading (real errors still raise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def apply_lora(model: nn.Module, kind: str, cfg: ClassifyConfig) -> nn.Module:
    """LoRA adapters on the attention and MLP layers; the classifier itself is trained fully."""
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as err:
        raise ClassifyError("--lora needs peft: pip install peft") from err
    targets = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()] or None
    common = dict(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
    if kind == "pinzi":  # by module name; no task_type: peft's SEQ_CLS wrapper passes HF kwargs
        lora = LoraConfig(target_modules=targets or list(PINZI_LORA_TARGETS),
                          modules_to_save=["classifier"], **common)
    else:  # peft knows the layers of the usual encoders, and keeps their classifier trainable
        lora = LoraConfig(task_type=TaskType.SEQ_CLS, target_modules=targets, **common)
    try:
        with _quiet_loading():
            return get_peft_model(model, lora)
    except ValueError as err:  # e.g. the target layers are not in this model (LSTM encoder)
        raise ClassifyError(f"--lora cannot be applied to this base: {err}; name its layers "
                            "with --set lora_targets=a,b or train every weight (no --lora)"
                            ) from err


# ---- a trained classifier -----------------------------------------------------------------------
class TextClassifier:
    """A trained folder (from ``pinzi classify train``, or a Hugging Face sequence classifier),
    ready to label texts. ``predict`` is the protocol of ``pinzi serve``'s ``/v1/classify``.

    >>> clf = TextClassifier.load("runs/htl")                    # doctest: +SKIP
    >>> clf.predict(["房间很干净，服务也好", ""])                # doctest: +SKIP
    [('1', 0.97), ('', 0.0)]
    """

    def __init__(self, model: nn.Module, text, labels: Sequence[str],
                 info: dict[str, Any] | None = None):
        self.model, self.text, self.labels = model.eval(), text, list(labels)
        self.info = info or {}

    @classmethod
    def load(cls, name_or_path: str | Path, device: str | None = None) -> TextClassifier:
        from pinzi.model import ModelLoadError, PinziForClassification, load_pretrained

        folder, kind, config = locate_model(str(name_or_path))
        info_path = Path(folder, INFO_FILE)
        info = json.loads(info_path.read_text("utf-8")) if info_path.is_file() else {}
        architectures = config.get("architectures") or []
        if architectures and not any(a.endswith(("ForClassification", "ForSequenceClassification"))
                                     for a in architectures):
            raise ClassifyError(f"{name_or_path} is not a text classifier (it is "
                                f"{', '.join(architectures)}): train one with "
                                "`pinzi classify train`")
        with _quiet_loading():
            if kind == "pinzi":
                try:
                    model, tokenizer = load_pretrained(PinziForClassification, folder)
                except (ModelLoadError, ValueError) as err:
                    raise ClassifyError(str(err)) from err
                labels = model.config.label_names or [model.config.id2label[i]
                                                      for i in range(model.config.num_labels)]
                text = PinziTextEncoder(tokenizer, info.get("max_length")
                                        or model.config.max_position_embeddings)
            else:
                from transformers import AutoModelForSequenceClassification, AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(folder)
                    model = AutoModelForSequenceClassification.from_pretrained(folder)
                except Exception as err:
                    raise ClassifyError(f"cannot load {name_or_path!r} as a classifier: {err}"
                                        ) from err
                labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
                text = HFTextEncoder(tokenizer, _hf_max_length(
                    tokenizer, model.config, info.get("max_length") or 512))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), text, labels, info)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, K) class probabilities; the row of a blank text is NaN."""
        texts = list(texts)
        out = np.full((len(texts), len(self.labels)), np.nan)
        keep = [i for i, t in enumerate(texts) if not self.text.is_blank(t)]
        if keep:
            logits = predict_logits(self.model, self.text.encode([texts[i] for i in keep]),
                                    self.text.pad_id)
            out[keep] = softmax(logits.astype(np.float64))
        return out

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """``(label, probability)`` per text, in order; a blank text gets ``("", 0.0)``."""
        results = []
        for row in self.predict_proba(texts):
            if np.isnan(row).any():
                results.append(("", 0.0))
            else:
                best = int(row.argmax())
                results.append((self.labels[best], float(row[best])))
        return results

    def evaluate(self, data: LabelledTexts) -> dict[str, Any]:
        """The classification report of a labelled file (labels must be the model's)."""
        gold = label_indices(data, self.labels, known_from="the model's labels")
        logits = predict_logits(self.model, self.text.encode(data.texts), self.text.pad_id)
        report = evaluate_logits(logits, gold, self.labels)
        report["file"] = data.path
        return report


# ---- the `pinzi classify train` job -------------------------------------------------------------
def train_classifier(base: str, train_file: str | Path, dev_file: str | Path,
                     out_dir: str | Path, *, test_file: str | Path | None = None,
                     label_column: str = "label", text_column: str = "text",
                     settings: dict | None = None, resume: bool = False, progress: bool = True,
                     on_step=None, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``base`` on a labelled train file, keep the best model by the dev split.

    ``settings`` holds TrainConfig and ClassifyConfig fields (``lora``, ``class_weights``,
    ``oversample``, ``metric``...). Afterwards the best model is evaluated on dev (and test):
    OUT/metrics.json, OUT/confusion_dev.png (and _test). Returns the training summary with
    those reports under ``dev`` / ``test``.
    """
    from pinzi.train import (
        TrainConfig,
        TrainingError,
        build_dataclass,
        check_known,
        split_settings,
        train,
    )

    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    train_values, classify_values, unknown = split_settings(settings or {}, TrainConfig,
                                                            ClassifyConfig)
    check_known(unknown, {f.name for f in dataclasses.fields(TrainConfig)}
                | {f.name for f in dataclasses.fields(ClassifyConfig)}, where="the settings")
    ccfg = build_dataclass(ClassifyConfig, classify_values, where="the classification settings")
    if ccfg.metric not in METRICS:
        raise TrainingError(f"unknown metric {ccfg.metric!r}; choose one of {', '.join(METRICS)}")

    splits = {"train": read_labelled(train_file, label_column, text_column),
              "dev": read_labelled(dev_file, label_column, text_column)}
    if test_file is not None:
        splits["test"] = read_labelled(test_file, label_column, text_column)
    for data in splits.values():
        if data.skipped_message():
            warn(data.skipped_message())
    names = label_order(splits["train"].labels)
    if len(names) < 2:
        raise ClassifyError(f"{train_file}: classification needs at least two labels; the "
                            f"training data has only {names[0]!r}")
    gold = {split: label_indices(data, names, known_from=f"the training data {train_file}")
            for split, data in splits.items()}

    kind = locate_model(base)[1]
    values = {**CLASSIFY_DEFAULTS, "learning_rate": LEARNING_RATES[(kind, ccfg.lora)],
              **train_values}
    cfg = build_dataclass(TrainConfig, values, where="the training settings")
    if "warmup_steps" not in train_values:
        cfg.warmup_steps = max(1, cfg.max_steps // 10)
    torch.manual_seed(cfg.seed)  # the same seed gives the same new classifier
    model, text = load_base(base, names, ccfg.max_length)
    if ccfg.lora:
        model = apply_lora(model, kind, ccfg)
    if kind == "hf":
        model = HFClassifier(model)

    def encoded(split: str) -> Encoded:
        return Encoded(text.encode(splits[split].texts), gold[split])

    info = {"kind": kind, "base": str(base), "label_column": label_column,
            "text_column": text_column, "metric": ccfg.metric, "lora": ccfg.lora}
    task = ClassificationTask(text, encoded("train"), encoded("dev"), names, ccfg,
                              batch_tokens=cfg.batch_tokens, seed=cfg.seed, info=info)
    summary = train(model, task, cfg, out_dir, resume=resume, progress=progress,
                    on_step=on_step)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # several processes: the main one reports
        return summary

    out = Path(out_dir)
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
