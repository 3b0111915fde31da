"""Domain adaptation of the converter: full fine-tuning or LoRA adapters; a before/after report.

    pinzi data prepare my_texts/ --out work/data/mine                     # the domain's text
    pinzi finetune --base MODEL --data work/data/mine --out runs/mine --lora
    pinzi convert --model MODEL --adapter runs/mine "nihao"               # base + adapter
    pinzi merge --base MODEL --adapter runs/mine --out runs/mine-merged   # one normal model

Both modes continue the pretraining objective (:mod:`pinzi.denoise`) on the domain's text,
through the one training loop (:func:`pinzi.train.train`), with settings suited to
fine-tuning: a lower learning rate, a short warmup and early stopping on the domain's valid
split (:data:`FULL_DEFAULTS`, :data:`LORA_DEFAULTS`).

* Full fine-tuning updates every weight and writes a normal model folder.
* LoRA (``peft``) adds low-rank updates ``B @ A`` (rank ``r``, scaled by ``alpha / r``) beside
  the Linear layers named in ``targets`` (default: ``qkv``, ``out``, ``mlp.0``, ``mlp.2`` of
  every Transformer block) and trains only those; the base weights stay bit-identical. The
  model class knows nothing of LoRA: peft swaps the named modules for wrapped ones in place.
  The run folder is the adapter: ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's
  formats) + ``adapter_base.json`` (the base it was trained on and its fingerprint). It loads
  on top of its base (:func:`load_adapter`, ``Converter.from_pretrained(base, adapter=DIR)``)
  or is merged into a standalone model (:func:`merge`). An adapter on a base with another
  vocabulary or configuration is a :class:`~pinzi.model.ModelLoadError`.

Either way the result keeps the base's character n-gram model (``ngram.npz``), so the report
compares the networks alone. Every run evaluates the base and the result on the domain's test
split and on a general news test (PKU SIGHAN-2005 by default), and writes ``OUT/report.json``,
``OUT/report.md`` (char accuracy, exact match, relative change of the character error rate) and
``OUT/report.png``.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pinzi.model import (
    ModelLoadError,
    PinziConfig,
    PinziForPinyin,
    count_parameters,
    load_pretrained,
)
from pinzi.tokenizer import VOCAB_FILE, PinziTokenizer

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_BASE = "adapter_base.json"
ADAPTER_FORMAT = "pinzi-lora-1"
DEFAULT_TARGETS = ("qkv", "out", "mlp.0", "mlp.2")  # of every block: encoder.blocks.N.<name>
DEFAULT_GENERAL_TEST = Path("../shared/data/sighan2005/pku_test.txt.gz")
DEFAULT_EVAL_LIMIT = 500  # clauses per test set
SAMPLE_SEED = 1234  # which lines of a prepared test split are evaluated under a limit

# Fine-tuning defaults; --config and --set override them. Early stopping: 5 evaluations (500
# steps) without a better char_acc on the domain's valid split end the run with the best model.
FULL_DEFAULTS: dict[str, Any] = dict(learning_rate=3e-4, warmup_steps=50, max_steps=2000,
                                     eval_every=100, save_every=100, patience=5,
                                     keep_checkpoints=1)
LORA_DEFAULTS: dict[str, Any] = {**FULL_DEFAULTS, "learning_rate": 1e-3}

# What must agree between an adapter's base and the model it is loaded on.
_ARCH_FIELDS = ("arch", "vocab_size", "char_offset", "n_chars", "hidden_size", "num_layers",
                "num_heads", "intermediate_size", "max_position_embeddings")


# ---- fingerprints -------------------------------------------------------------------------------
def fingerprint(model: nn.Module, tokenizer: PinziTokenizer | None = None) -> dict[str, Any]:
    """What identifies a base model: its architecture, its vocabulary and its weights.

    ``config``/``vocab`` must match for an adapter to load; ``weights`` (a hash of the base
    weights, LoRA layers ignored) only warns, since a retrained base of the same shape loads.
    """
    arch = {name: getattr(model.config, name) for name in _ARCH_FIELDS}
    weights = hashlib.sha256()
    for name, tensor in sorted(_base_state_dict(model).items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        weights.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        weights.update(flat.view(torch.uint8).numpy().tobytes())
    return {"arch": arch, "config": _sha(json.dumps(arch, sort_keys=True)),
            "vocab": _sha(json.dumps(list(tokenizer.chars), ensure_ascii=False))
            if tokenizer is not None else None,
            "weights": weights.hexdigest()}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict under the base's own names, whether or not LoRA layers are in place."""
    return {name.replace(".base_layer.", "."): tensor
            for name, tensor in model.state_dict().items() if ".lora_" not in name}


# ---- LoRA ---------------------------------------------------------------------------------------
def parse_targets(targets: str | Sequence[str] | None) -> list[str]:
    """``"qkv,out"`` or a list -> module name suffixes (default :data:`DEFAULT_TARGETS`)."""
    if targets is None:
        return list(DEFAULT_TARGETS)
    if isinstance(targets, str):
        targets = targets.split(",")
    names = [t.strip() for t in targets if t.strip()]
    if not names:
        raise ValueError("no LoRA target modules given")
    return names


def lora_config(*, rank: int = 8, alpha: float = 16, dropout: float = 0.05,
                targets: str | Sequence[str] | None = None):
    """The peft ``LoraConfig`` of an adapter; ValueError for an impossible shape."""
    from peft import LoraConfig

    if rank < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(f"LoRA needs rank >= 1, alpha > 0 and 0 <= dropout < 1 (got rank "
                         f"{rank}, alpha {alpha}, dropout {dropout})")
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                      target_modules=parse_targets(targets))


def apply_lora(model: PinziForPinyin, *, rank: int = 8, alpha: float = 16,
               dropout: float = 0.05, targets: str | Sequence[str] | None = None
               ) -> PinziForPinyin:
    """Put fresh LoRA layers on the modules named ``targets`` (in place); freeze the rest.

    A target matches a module whose name is it or ends in ``.`` + it (``qkv`` matches
    ``encoder.blocks.3.attn.qkv``). ``B`` starts at zero, so the model's outputs do not change
    until it trains. Raises ValueError when a target matches no Linear layer.
    """
    return _inject(model, lora_config(rank=rank, alpha=alpha, dropout=dropout, targets=targets))


def check_targets(model: nn.Module, targets: Sequence[str]) -> None:
    """Raise ValueError when a LoRA target matches no Linear layer of ``model``."""
    linear = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linear)]
    if missing:
        arch = getattr(model.config, "arch", "?")
        raise ValueError(f"LoRA target(s) {', '.join(missing)} match no Linear layer of this "
                         f"{arch} model (its Transformer blocks have attn.qkv, attn.out, "
                         "mlp.0, mlp.2); use full fine-tuning for other architectures")


def _inject(model: nn.Module, config) -> nn.Module:
    from peft import inject_adapter_in_model

    if hasattr(model, "peft_config"):
        raise ValueError("the model already has a LoRA adapter; load the base model again")
    check_targets(model, list(config.target_modules))
    return inject_adapter_in_model(config, model)


def set_adapter_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every LoRA layer of ``model`` on or off (off: exactly the base model's outputs)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)


def save_adapter(model: nn.Module, directory: str | Path, *, base: str, base_path: str,
                 base_fingerprint: dict[str, Any]) -> None:
    """Write the adapter alone: its weights, its peft config and the base it belongs to."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
              str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = model.peft_config["default"]
    config.base_model_name_or_path = base
    config.save_pretrained(str(directory))
    info = {"format": ADAPTER_FORMAT, "base": base, "base_path": base_path,
            "fingerprint": base_fingerprint,
            "adapter_parameters": sum(v.numel() for v in state.values())}
    (directory / ADAPTER_BASE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")


def read_adapter(directory: str | Path) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """(LoraConfig, weights, base info) of an adapter folder; ModelLoadError if it is none."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"no adapter folder {str(directory)!r}")
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_BASE)
               if not (directory / n).is_file()]
    if missing:
        raise ModelLoadError(f"{directory} is not a pinzi LoRA adapter (no "
                             f"{', '.join(missing)}); adapters come from "
                             "`pinzi finetune --lora`")
    try:
        info = json.loads((directory / ADAPTER_BASE).read_text(encoding="utf-8"))
        config = LoraConfig.from_pretrained(str(directory))
        weights = load_file(str(directory / ADAPTER_WEIGHTS))
    except Exception as err:  # bad JSON, a foreign peft config, truncated safetensors
        raise ModelLoadError(f"the adapter in {directory} cannot be read: {err}") from err
    if info.get("format") != ADAPTER_FORMAT:
        raise ModelLoadError(f"{directory}/{ADAPTER_BASE} is not of format {ADAPTER_FORMAT}")
    return config, weights, info


def load_adapter(model: PinziForPinyin, adapter_dir: str | Path, *,
                 tokenizer: PinziTokenizer | None = None) -> PinziForPinyin:
    """Put the adapter saved in ``adapter_dir`` on ``model`` (in place) and return it.

    The base's architecture and vocabulary must be those the adapter was trained on (the
    vocabulary is read from ``tokenizer``, else from the model's folder): otherwise a
    :class:`ModelLoadError` names the base it needs. Other base weights of the same shape
    (e.g. a later checkpoint) load with a warning.
    """
    config, weights, info = read_adapter(adapter_dir)
    if tokenizer is None and model.name_or_path and Path(model.name_or_path, VOCAB_FILE).is_file():
        tokenizer = PinziTokenizer.load(model.name_or_path)
    _check_base(fingerprint(model, tokenizer), info, adapter_dir)
    config.inference_mode = True
    try:
        _inject(model, config)
    except ValueError as err:
        raise ModelLoadError(f"adapter {adapter_dir}: {err}") from err
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, weights)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if result.unexpected_keys or missing:
        raise ModelLoadError(f"adapter {adapter_dir} does not fit the model: "
                             f"{len(missing)} missing and {len(result.unexpected_keys)} "
                             f"unexpected tensors, e.g. {(missing + result.unexpected_keys)[0]}")
    return model.eval()


def _check_base(found: dict[str, Any], info: dict[str, Any], adapter_dir) -> None:
    wanted = info.get("fingerprint", {})
    base = info.get("base", "?")
    if info.get("base_path") and info["base_path"] != base:
        base += f" ({info['base_path']})"
    differ = [f"{k} {found['arch'][k]} instead of {v}"
              for k, v in wanted.get("arch", {}).items() if found["arch"].get(k) != v]
    if differ or found["config"] != wanted.get("config"):
        raise ModelLoadError(f"adapter {adapter_dir} was trained on base {base} and does not fit "
                             f"this model ({'; '.join(differ) or 'another configuration'}): "
                             "load it on its base model")
    if found["vocab"] is not None and found["vocab"] != wanted.get("vocab"):
        raise ModelLoadError(f"adapter {adapter_dir} was trained on base {base}, whose vocabulary "
                             "differs from this model's: load it on its base model")
    if found["weights"] != wanted.get("weights"):
        warnings.warn(f"adapter {adapter_dir} was trained on other weights of this architecture "
                      f"(base {base}); the results may suffer", UserWarning, stacklevel=3)


def merge_into_base(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base Linear (``W + (alpha / r) B A``), in place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def merge(base: str | Path | None, adapter: str | Path, out: str | Path) -> dict[str, Any]:
    """Merge ``adapter`` into ``base`` (default: the shipped model) and save a normal model.

    ``out`` gets config.json and model.safetensors with ``W + (alpha / r) B A`` in place of
    each adapted weight, plus the base's vocab.json and ngram.npz (when it has one).
    """
    from pinzi.converter import shipped_model_path
    from pinzi.ngram import NGRAM_FILE

    source = Path(str(base or shipped_model_path()))
    out = Path(out)
    model, tokenizer = load_pretrained(PinziForPinyin, str(source))
    folder = Path(model.name_or_path or source)  # a hub id resolves to its local snapshot
    if out.resolve() in (folder.resolve(), Path(adapter).resolve()):
        raise ModelLoadError("merge --out must be a new folder, not the base or the adapter")
    merged = merge_into_base(load_adapter(model, adapter, tokenizer=tokenizer))
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    for name in (VOCAB_FILE, NGRAM_FILE):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
    return {"out": str(out), "base": str(source), "adapter": str(adapter),
            "parameters": count_parameters(merged)}


# ---- test sets and the report -------------------------------------------------------------------
def _test_sets(splits, domain_test, general_test, limit: int | None) -> tuple[list, list[str]]:
    """[(kind, name, clauses)] to evaluate, and notes on what was left out."""
    from pinzi.evaluate import clauses_from_lines, read_clauses
    from pinzi.train import TrainingError

    sets, notes = [], []

    def files(value) -> list[Path]:
        items = [value] if isinstance(value, (str, Path)) else list(value)
        paths = [Path(p) for p in items]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise TrainingError(f"no such test file: {', '.join(absent)}")
        return paths

    if domain_test:
        for path in files(domain_test):
            sets.append(("domain", _label(path), read_clauses(path, limit)))
    elif "test" in splits and len(splits["test"]):
        texts = splits["test"].data.table.column("text").to_pylist()
        order = list(range(len(texts)))
        random.Random(SAMPLE_SEED).shuffle(order)  # a limit samples the split evenly
        sets.append(("domain", "test split",
                     clauses_from_lines((texts[i] for i in order), limit)))
    else:
        notes.append("the dataset has no test split and no --domain-test was given: "
                     "no domain evaluation")
    if general_test is None:
        general_test = [DEFAULT_GENERAL_TEST] if DEFAULT_GENERAL_TEST.is_file() else []
        if not general_test:
            notes.append(f"{DEFAULT_GENERAL_TEST} is not here: no general evaluation")
    for path in files(general_test):
        sets.append(("general", _label(path), read_clauses(path, limit)))
    empty = [name for _, name, clauses in sets if not clauses]
    if empty:
        raise TrainingError(f"no all-hanzi clause to evaluate in: {', '.join(empty)}")
    return sets, notes


def _label(path: Path) -> str:
    """``crosswoz_dialog/test.txt.gz``: the file and its folder, as two tests may share a name."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _evaluate(converter, sets, form: str, log) -> list[dict]:
    from pinzi.evaluate import evaluate_clauses

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
    mode = report["mode"]
    lines = [f"Fine-tuning ({mode}) of {report['base']} on {report['data']}: "
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


def plot_report(report: dict, path: Path) -> None:
    """Bars of char accuracy and exact match, base against fine-tuned, per test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["tests"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [f"{r['kind']}:\n{r['name']}" for r in rows]
    x = range(len(rows))
    for ax, metric, title in zip(axes, ("char_acc", "exact"), ("char accuracy", "exact match"),
                                 strict=True):
        for offset, when, label in ((-0.2, "before", "base"),
                                    (0.2, "after", f"fine-tuned ({report['mode']})")):
            values = [r[when][metric] for r in rows]
            bars = ax.bar([i + offset for i in x], values, width=0.4, label=label)
            ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], fontsize=8)
        ax.set_xticks(list(x), names, fontsize=8)
        ax.set(title=title, ylim=(0, 1.25))
        ax.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- the job ------------------------------------------------------------------------------------
def _check_settings(settings: dict[str, Any]) -> None:
    """Fail before any evaluation or training on a setting that train_converter would refuse."""
    from dataclasses import fields

    from pinzi.denoise import NoiseConfig
    from pinzi.train import (
        TrainConfig,
        TrainingError,
        build_dataclass,
        check_known,
        split_settings,
    )

    train_values, noise_values, rest = split_settings(settings, TrainConfig, NoiseConfig)
    model_fields = set(PinziConfig().to_dict())
    check_known([k for k in rest if k not in model_fields],
                {f.name for c in (TrainConfig, NoiseConfig) for f in fields(c)},
                where="the settings")
    if rest:
        raise TrainingError(f"model settings ({', '.join(rest)}) cannot change when "
                            "fine-tuning a base model")
    build_dataclass(TrainConfig, train_values, where="the training settings")
    build_dataclass(NoiseConfig, noise_values, where="the noise settings")


class _AdapterTask:
    """The denoising task, with ``save`` writing the LoRA adapter alone."""

    def __init__(self, task, save: Callable[[nn.Module, Path], None]):
        self._task, self._save = task, save

    def __getattr__(self, name: str):
        return getattr(self._task, name)

    def save(self, model: nn.Module, directory: Path) -> None:
        self._save(model, directory)


def finetune(base: str | Path | None, data_dir: str | Path, out_dir: str | Path, *, lora: bool,
             rank: int = 8, alpha: float = 16, dropout: float = 0.05,
             targets: str | Sequence[str] | None = None, settings: dict | None = None,
             domain_test: str | Path | Sequence[str | Path] | None = None,
             general_test: str | Path | Sequence[str | Path] | None = None,
             eval_limit: int | None = DEFAULT_EVAL_LIMIT, eval_form: str = "spaced",
             resume: bool = False, progress: bool = True, on_step=None) -> dict[str, Any]:
    """Fine-tune ``base`` (default: the shipped model) on a prepared domain dataset.

    Args:
        base: a model folder or hub id; ``data_dir``: a folder from ``pinzi data prepare``.
        out_dir: the run folder: the model (full) or the adapter (LoRA), logs, the report.
        lora: train a LoRA adapter of ``rank``, ``alpha``, ``dropout`` on ``targets``
            (default :data:`DEFAULT_TARGETS`) instead of every weight.
        settings: TrainConfig / NoiseConfig fields over :data:`FULL_DEFAULTS` or
            :data:`LORA_DEFAULTS`.
        domain_test: test file(s) of the domain (default: the dataset's test split).
        general_test: general test file(s) (default :data:`DEFAULT_GENERAL_TEST` if present).
        eval_limit: clauses per test set (None: all; 0: no before/after evaluation).
        eval_form: the pinyin input form of the evaluation (see :data:`pinzi.evaluate.FORMS`).

    Returns the report (also in OUT/report.json). Raises TrainingError (bad data or settings)
    or ModelLoadError (no such base).
    """
    from pinzi.converter import Converter, shipped_model_path
    from pinzi.denoise import load_prepared, train_converter
    from pinzi.evaluate import FORMS
    from pinzi.ngram import CharNgram
    from pinzi.train import TrainConfig, TrainingError

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    if eval_form not in FORMS:
        raise TrainingError(f"unknown eval form {eval_form!r}; choose from {', '.join(FORMS)}")
    if eval_limit is not None and eval_limit < 0:
        raise TrainingError("eval_limit must be >= 0 (0: no evaluation)")
    try:
        config = lora_config(rank=rank, alpha=alpha, dropout=dropout, targets=targets) \
            if lora else None
    except ValueError as err:
        raise TrainingError(str(err)) from err
    target_names = sorted(config.target_modules) if config is not None else None
    base_name = str(base or shipped_model_path())
    out = Path(out_dir)
    merged_settings = {**(LORA_DEFAULTS if lora else FULL_DEFAULTS), **(settings or {})}
    _check_settings(merged_settings)
    splits = load_prepared(data_dir)
    sets, notes = _test_sets(splits, domain_test, general_test, eval_limit) \
        if eval_limit != 0 else ([], ["--eval-limit 0: no evaluation"])

    base_model, _ = load_pretrained(PinziForPinyin, base_name)  # fail early on a bad base
    if lora:
        try:
            check_targets(base_model, target_names)
        except ValueError as err:
            raise TrainingError(str(err)) from err
    del base_model
    before: list[dict] = []
    if sets:
        log(f"base model {base_name}")
        # PyTorch like the tuned model, so that both rows come from the same arithmetic
        before = _evaluate(Converter.from_pretrained(base_name, backend="torch"), sets,
                           eval_form, log)

    info: dict[str, Any] = {}

    def prepare(model: nn.Module, task):
        folder = model.name_or_path or base_name
        task.ngram = CharNgram.load(folder)  # keep the base's n-gram model, not the domain's
        base_fingerprint = fingerprint(model, task.tokenizer)
        info["total"] = count_parameters(model)
        if lora:
            with torch.random.fork_rng():  # the same seed gives the same initial adapter
                torch.manual_seed(int(merged_settings.get("seed", TrainConfig.seed)))
                _inject(model, config)  # the targets were checked above
            task = _AdapterTask(task, lambda m, d: save_adapter(
                m, d, base=base_name, base_path=str(Path(folder).resolve()),
                base_fingerprint=base_fingerprint))
        info["trainable"] = count_parameters(model, trainable_only=True)
        log(f"{'LoRA' if lora else 'full'} fine-tuning: {info['trainable']:,} of "
            f"{info['total']:,} parameters trained")
        return model, task

    summary = train_converter(data_dir, out, base=base_name, settings=merged_settings,
                              resume=resume, progress=progress, on_step=on_step, prepare=prepare)
    after: list[dict] = []
    if sets:
        log(f"fine-tuned {'adapter' if lora else 'model'} {out}")
        tuned = Converter.from_pretrained(base_name, adapter=out) if lora \
            else Converter.from_pretrained(out)
        after = _evaluate(tuned, sets, eval_form, log)

    report = {
        "mode": "lora" if lora else "full", "base": base_name, "data": str(data_dir),
        "out": str(out),
        "lora": {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": target_names}
        if lora else None,
        "settings": merged_settings,
        "training": {"steps": summary["steps"], "stop": summary["stop"],
                     "minutes": round(summary["minutes"], 2), "tokens": summary["tokens"],
                     "best_char_acc": summary["best_char_acc"]},
        "trainable_parameters": info["trainable"], "total_parameters": info["total"],
        "trainable_fraction": info["trainable"] / max(1, info["total"]),
        "eval": {"form": eval_form, "limit": eval_limit},
        "tests": _rows(before, after), "notes": notes,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    if report["tests"]:
        plot_report(report, out / "report.png")
    return report
