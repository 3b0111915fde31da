"""``pinzi finetune``: adapt a converter to a domain, fully or with a LoRA adapter; a report.

    pinzi data prepare my_texts/ --out work/data/mine                     # the domain's text
    pinzi finetune --base MODEL --data work/data/mine --out runs/mine --lora
    pinzi convert --model MODEL --adapter runs/mine "nihao"               # base + adapter
    pinzi merge --base MODEL --adapter runs/mine --out runs/mine-merged   # one normal model

Both modes continue the pretraining objective (:mod:`pinzi.denoise`) on the domain's text
through the one training loop (:func:`pinzi.train.train`), with settings suited to
fine-tuning (:data:`DEFAULTS`: a lower learning rate, a short warmup, early stopping on the
domain's valid split). Full fine-tuning writes a normal model folder; with LoRA
(:mod:`pinzi.lora`) the run folder is the adapter alone, and the base stays bit-identical.

Either way the result keeps the base's character n-gram model (``ngram.npz``) and decoding
settings, so the report compares the networks alone. Every run evaluates the base and the
result on the domain's test split and on a general test (by default the small one that ships
with pinzi, :data:`DEFAULT_GENERAL_TEST`), and writes ``OUT/report.json``, ``OUT/report.md``
(char accuracy, exact match, relative change of the character error rate) and
``OUT/report.png``.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from pinzi.backends import TorchScorer
from pinzi.converter import SIDE_FILES, Converter
from pinzi.corpus import load_prepared
from pinzi.decoding_config import DecodingConfig
from pinzi.denoise import NoiseConfig, PinyinDenoisingTask, TokenTables
from pinzi.errors import DataError, ModelLoadError, SettingsError
from pinzi.evaluate import FORMS, clauses_from_lines, evaluate_clauses, read_clauses
from pinzi.hub import resolve_model
from pinzi.io import write_dir_atomic
from pinzi.lexicon import Lexicon
from pinzi.lora import (
    LoraSettings,
    apply_lora,
    check_targets,
    fingerprint,
    load_adapter,
    merge_into_base,
)
from pinzi.model import PinziForPinyin, count_parameters, load_pretrained
from pinzi.ngram import CharNgram
from pinzi.plots import plot_report
from pinzi.settings import Layers, as_dict, layers, record, resolve
from pinzi.train import TrainConfig, run_folder, train

SECTIONS = {"train": TrainConfig, "noise": NoiseConfig, "lora": LoraSettings}
# Fine-tuning's own defaults over the fields' ones. Early stopping: 5 evaluations (500 steps)
# without a better char_acc on the domain's valid split end the run with the best model.
# Memory: the loss scores all ~7,200 characters at every typed position, and each (positions x
# characters) float32 tensor of a batch of 8192 tokens weighs ~115-235 MB, held several times
# over in the forward and backward passes; a LoRA run peaked at 2.2 GB. Batches of 2048 tokens,
# accumulated 4 to a step, keep the 8192 tokens of a step at about half the peak.
DEFAULTS = {"train": dict(learning_rate=3e-4, warmup_steps=50, max_steps=2000, eval_every=100,
                          save_every=100, patience=5, keep_checkpoints=1, batch_tokens=2048,
                          grad_accum=4)}
LORA_DEFAULTS = {"train": dict(learning_rate=1e-3)}  # the adapter alone learns faster
# 332 everyday sentences (516 clauses) of daily life, news-like reports, dialogue and questions,
# written for this project rather than taken from any corpus, so that they ship freely
# and appear in no training data.
DEFAULT_GENERAL_TEST = Path(str(resources.files("pinzi") / "resources" / "general_test.txt"))
DEFAULT_EVAL_LIMIT = 500  # clauses per test set
SAMPLE_SEED = 1234  # which lines of a prepared test split are evaluated under a limit


def finetune(base: str | Path | None, data_dir: str | Path, out_dir: str | Path, *, lora: bool,
             settings: Layers = None,
             domain_test: str | Path | Sequence[str | Path] | None = None,
             general_test: str | Path | Sequence[str | Path] | None = None,
             eval_limit: int | None = DEFAULT_EVAL_LIMIT, eval_form: str = "spaced",
             resume: bool = False, overwrite: bool = False, progress: bool = True,
             on_step=None) -> dict[str, Any]:
    """Fine-tune ``base`` (None: the shipped model) on a prepared domain dataset.

    Args:
        base: a model folder or hub id; ``data_dir``: a folder from ``pinzi data prepare``.
        out_dir: the run folder: the model (full) or the adapter (LoRA), logs, the report.
        lora: train a LoRA adapter (the ``lora`` settings) instead of every weight.
        settings: the ``train``, ``noise`` and ``lora`` sections (one dict or layers), over
            :data:`DEFAULTS` (and :data:`LORA_DEFAULTS`).
        domain_test: test file(s) of the domain (default: the dataset's test split).
        general_test: general test file(s) (default :data:`DEFAULT_GENERAL_TEST`; ``[]``: none).
        eval_limit: clauses per test set (None: all; 0: no before/after evaluation).
        eval_form: the pinyin input form of the evaluation (see :data:`pinzi.evaluate.FORMS`).
        resume, overwrite: go on with the run in ``out_dir``, or replace it; without either an
            earlier run there is an error (:func:`pinzi.train.run_folder`).

    Returns the report (also in OUT/report.json).
    """
    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    if eval_form not in FORMS:
        raise SettingsError(f"unknown eval form {eval_form!r}; choose from {', '.join(FORMS)}")
    if eval_limit is not None and eval_limit < 0:
        raise SettingsError("eval_limit must be >= 0 (0: no evaluation)")
    defaults = [DEFAULTS, LORA_DEFAULTS] if lora else [DEFAULTS]
    config = resolve(SECTIONS, *defaults, *layers(settings))
    cfg, noise = config["train"], config["noise"]
    if lora:
        config["lora"].check()
    out = Path(out_dir)
    splits = load_prepared(data_dir)
    sets, notes = _test_sets(splits, domain_test, general_test, eval_limit) \
        if eval_limit != 0 else ([], ["--eval-limit 0: no evaluation"])

    # The base, loaded once: evaluated as it is, then trained.
    base_name = str(base) if base is not None else str(resolve_model(None))
    folder = resolve_model(base)
    model, tokenizer = load_pretrained(PinziForPinyin, folder)
    ngram, decoding = CharNgram.load(folder), DecodingConfig.load(folder)
    if lora:
        check_targets(model, config["lora"].target_names(model))
    before: list[dict] = []
    if sets:  # PyTorch like the tuned model, so that both rows come from the same arithmetic
        log(f"base model {base_name}")
        converter = Converter(TorchScorer(model), tokenizer, decoding=decoding, ngram=ngram)
        before = _evaluate(converter, sets, eval_form, log)

    total = count_parameters(model)
    adapter_base = None
    if lora:
        adapter_base = {"base": base_name, "base_path": str(folder.resolve()),
                        "base_fingerprint": fingerprint(model, tokenizer)}
        with torch.random.fork_rng():  # the same seed gives the same initial adapter
            torch.manual_seed(cfg.seed)
            apply_lora(model, config["lora"])
    trainable = count_parameters(model, trainable_only=True)
    log(f"{'LoRA' if lora else 'full'} fine-tuning: {trainable:,} of {total:,} parameters trained")
    with run_folder(out, resume=resume, overwrite=overwrite):
        record(out, config)
        task = PinyinDenoisingTask(splits["train"].tokenized(tokenizer),
                                   splits["valid"].tokenized(tokenizer), tokenizer,
                                   TokenTables(tokenizer, Lexicon.default()), noise,
                                   batch_tokens=cfg.batch_tokens, seed=cfg.seed, ngram=ngram,
                                   decoding=decoding, adapter_base=adapter_base)
        summary = train(model, task, cfg, out, resume=resume, progress=progress,
                        on_step=on_step)

    after: list[dict] = []
    if sets:
        log(f"fine-tuned {'adapter' if lora else 'model'} {out}")
        tuned = Converter.from_pretrained(folder, adapter=out) if lora \
            else Converter.from_pretrained(out, backend="torch")
        after = _evaluate(tuned, sets, eval_form, log)

    report = {
        "mode": "lora" if lora else "full", "base": base_name, "data": str(data_dir),
        "out": str(out), "settings": as_dict(config),
        "training": {"steps": summary["steps"], "stop": summary["stop"],
                     "minutes": round(summary["minutes"], 2), "tokens": summary["tokens"],
                     "best_char_acc": summary["best_char_acc"]},
        "trainable_parameters": trainable, "total_parameters": total,
        "trainable_fraction": trainable / max(1, total),
        "eval": {"form": eval_form, "limit": eval_limit},
        "tests": _rows(before, after), "notes": notes,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    if report["tests"]:
        plot_report(report, out / "report.png")
    return report


def merge(base: str | Path | None, adapter: str | Path, out: str | Path) -> dict[str, Any]:
    """Merge ``adapter`` into ``base`` (default: the shipped model) and save a normal model.

    ``out`` (a new or empty folder) gets config.json and model.safetensors with
    ``W + (alpha / r) B A`` in place of each adapted weight, plus the base's vocabulary, n-gram
    tables, word list and decoding settings.
    """
    folder = resolve_model(base)
    out = Path(out)
    if out.resolve() in (folder.resolve(), Path(adapter).resolve()):
        raise ModelLoadError("merge --out must be a new folder, not the base or the adapter")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelLoadError(f"merge --out {out} exists and is not an empty folder: "
                             "choose a new one")
    model, tokenizer = load_pretrained(PinziForPinyin, folder)
    merged = merge_into_base(load_adapter(model, adapter, tokenizer=tokenizer))

    def fill(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        for name in SIDE_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)

    write_dir_atomic(out, fill)  # with the modes the umask gives: others may read the model
    return {"out": str(out), "base": str(base or folder), "adapter": str(adapter),
            "parameters": count_parameters(merged)}


# ---- test sets and the report -------------------------------------------------------------------
def _test_sets(splits, domain_test, general_test, limit: int | None) -> tuple[list, list[str]]:
    """[(kind, name, clauses)] to evaluate, and notes on what was left out."""
    sets, notes = [], []

    def files(value) -> list[Path]:
        items = [value] if isinstance(value, (str, Path)) else list(value)
        paths = [Path(p) for p in items]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise DataError(f"no such test file: {', '.join(absent)}")
        return paths

    if domain_test:
        for path in files(domain_test):
            sets.append(("domain", _label(path), read_clauses(path, limit)))
    elif "test" in splits and len(splits["test"]):
        texts = splits["test"].texts()
        order = list(range(len(texts)))
        random.Random(SAMPLE_SEED).shuffle(order)  # a limit samples the split evenly
        sets.append(("domain", "test split",
                     clauses_from_lines((texts[i] for i in order), limit)))
    else:
        notes.append("the dataset has no test split and no --domain-test was given: "
                     "no domain evaluation")
    for path in files(DEFAULT_GENERAL_TEST if general_test is None else general_test):
        sets.append(("general", _label(path), read_clauses(path, limit)))
    empty = [name for _, name, clauses in sets if not clauses]
    if empty:
        raise DataError(f"no all-hanzi clause to evaluate in: {', '.join(empty)}")
    return sets, notes


def _label(path: Path) -> str:
    """``crosswoz_dialog/test.txt.gz``: the file and its folder, as two tests may share a name."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _evaluate(converter, sets, form: str, log) -> list[dict]:
    results = []
    for kind, name, clauses in sets:
        log(f"evaluating on {name} ({len(clauses)} clauses, {form} pinyin)")
        row = evaluate_clauses(converter, clauses, form)
        results.append({"kind": kind, "name": name, **row})
    return results


def _rows(before: list[dict], after: list[dict]) -> list[dict]:
    rows = []
    for b, a in zip(before, after, strict=True):
        cer_before, cer_after = 1 - b["char_acc"], 1 - a["char_acc"]
        rows.append({"kind": b["kind"], "name": b["name"], "form": b["form"],
                     "clauses": b["clauses"], "chars": b["chars"],
                     "before": {k: b[k] for k in ("char_acc", "exact", "p_at_k")},
                     "after": {k: a[k] for k in ("char_acc", "exact", "p_at_k")},
                     "cer_relative_change": (cer_after - cer_before) / cer_before
                     if cer_before > 0 else None})
    return rows


def report_markdown(report: dict) -> str:
    """The report as a small Markdown table with a one-line header."""
    lines = [f"Fine-tuning ({report['mode']}) of {report['base']} on {report['data']}: "
             f"{report['training']['steps']} steps, stopped by {report['training']['stop']}, "
             f"best valid char acc {report['training']['best_char_acc']:.2%}; "
             f"{report['trainable_parameters']:,} of {report['total_parameters']:,} "
             f"parameters trained ({report['trainable_fraction']:.2%}).", ""]
    if report["tests"]:
        lines += ["| test set | clauses | char acc base | char acc tuned | exact base | "
                  "exact tuned | CER change |", "|---|---:|---:|---:|---:|---:|---:|"]
        for row in report["tests"]:
            change = row["cer_relative_change"]
            lines.append(f"| {row['kind']}: {row['name']} | {row['clauses']} | "
                         f"{row['before']['char_acc']:.2%} | {row['after']['char_acc']:.2%} | "
                         f"{row['before']['exact']:.2%} | {row['after']['exact']:.2%} | "
                         f"{'n/a' if change is None else f'{change:+.1%}'} |")
        lines += ["", f"Input: {report['tests'][0]['form']} pinyin; CER = 1 - char acc; "
                  "CER change = (CER tuned - CER base) / CER base (negative: fewer errors)."]
    lines += [f"Note: {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"
