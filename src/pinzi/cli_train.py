"""The training commands of `pinzi`: pretrain, finetune, merge, classify.

Each reads its settings in layers (see :mod:`pinzi.settings`): the job's defaults, then
``--config FILE``, then ``--set key=value``, then the command's own flags. The jobs themselves
are :mod:`pinzi.pretrain`, :mod:`pinzi.finetune` and :mod:`pinzi.classify`, imported inside
the commands so that ``pinzi convert`` never loads the training stack.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from pinzi.console import emit, print_json, print_tables, stdin_lines, warn, without_controls
from pinzi.evaluate import FORMS
from pinzi.metrics import SUMMARY_KEYS
from pinzi.settings import parse_assignments, read_config_file

# The choices of settings whose modules load PyTorch (tests/test_cli.py checks them against
# pinzi.model.ModelSettings and pinzi.classify_task.METRICS): `pinzi --help` stays light.
Preset = Literal["tiny", "small", "base", "large"]
Arch = Literal["transformer", "lstm-attention"]
Metric = Literal["accuracy", "macro_f1"]

classify_app = typer.Typer(help="Fine-tune text classifiers and use them.", no_args_is_help=True)


def settings_layers(config: Path | None, overrides: list[str] | None,
                    **flags: object) -> list[dict]:
    """--config, then --set, then the flags given (None: not given), later ones winning.
    A flag's name is its setting's dotted name, with ``__`` for the dot."""
    given = {key.replace("__", "."): value for key, value in flags.items() if value is not None}
    return [read_config_file(config), parse_assignments(overrides), given]


# Options shared by every training command (pretrain, finetune, classify train).
ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="YAML or TOML file of settings.")]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="Override any setting: --set train.learning_rate=5e-4, or just "
                  "learning_rate=5e-4 when one section has it (repeatable).")]
MaxMinutes = Annotated[float | None, typer.Option(
    "--max-minutes", help="Stop after this wall time; the best model so far is kept.")]
Seed = Annotated[int | None, typer.Option(
    "--seed", help="Seed: the same seed repeats the run.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue from OUT's latest checkpoint.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the run already in OUT (without it, OUT must not hold one, "
                        "or --resume continues it).")]


# ---- pretrain, finetune, merge ------------------------------------------------------------------
def pretrain(
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder from `pinzi data prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Run folder (model, checkpoints, logs).")],
    preset: Annotated[Preset | None, typer.Option(help="Model size \\[default: small].")
                      ] = None,
    arch: Annotated[Arch | None, typer.Option(
        help="Model architecture \\[default: transformer].")] = None,
    base: Annotated[str | None, typer.Option(
        help="Continue training this model (folder or hub id) instead of starting from "
             "scratch; its size and vocabulary are kept, the n-gram model is counted anew "
             "from --data.")] = None,
    config: ConfigFile = None,
    set_: Overrides = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps.")] = None,
    max_minutes: MaxMinutes = None,
    seed: Seed = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Pretrain a converter with the pinyin-denoising objective, from scratch or from --base.

    Runs on CPU, one GPU, or many (launch with `accelerate launch -m pinzi pretrain ...`).
    Settings come from the defaults, then --config, then --set and the flags below. See
    `docs/training.md` for the recipe and every setting.
    """
    from pinzi.pretrain import pretrain as run_pretrain

    layers = settings_layers(config, set_, model__preset=preset, model__arch=arch,
                             train__max_steps=max_steps, train__max_minutes=max_minutes,
                             train__seed=seed)
    print_json(run_pretrain(data, out, base=base, settings=layers, resume=resume,
                            overwrite=overwrite))


def finetune(
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder from `pinzi data prepare`.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Run folder: the model (or the adapter), logs, report.")],
    base: Annotated[str | None, typer.Option(
        "--base", "-b", help="Model to fine-tune: folder or hub id (default: the shipped model).")
    ] = None,
    lora: Annotated[bool, typer.Option(
        "--lora", help="Train a small LoRA adapter instead of every weight.")] = False,
    rank: Annotated[int | None, typer.Option(min=1, help="LoRA rank r \\[default: 8].")] = None,
    alpha: Annotated[float | None, typer.Option(
        help="LoRA alpha (updates scaled by alpha / r) \\[default: 16].")] = None,
    lora_dropout: Annotated[float | None, typer.Option(
        help="Dropout on the LoRA input \\[default: 0.05].")] = None,
    targets: Annotated[str | None, typer.Option(
        help="Comma-separated module names to adapt (default: qkv,out,mlp.0,mlp.2).")] = None,
    config: ConfigFile = None,
    set_: Overrides = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps \\[default: 2000].")
                         ] = None,
    max_minutes: MaxMinutes = None,
    domain_test: Annotated[list[Path] | None, typer.Option(
        help="Domain test file, repeatable (default: the dataset's test split).")] = None,
    general_test: Annotated[list[Path] | None, typer.Option(
        help="General test file, repeatable "
             "(default: a small general test that ships with pinzi).")] = None,
    eval_limit: Annotated[int, typer.Option(
        min=0, help="Clauses per test set in the before/after report; 0: no report.")] = 500,
    eval_form: Annotated[Literal[FORMS], typer.Option(
        help="Pinyin input form of the report.")] = "spaced",
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Adapt a converter to a domain: [bold]pinzi finetune --base M --data D --out R --lora[/].

    Continues the pinyin objective on the domain's prepared text (full fine-tuning, or a LoRA
    adapter with --lora), stops early on its valid split, then compares the base and the result
    on the domain's test split and a general test: OUT/report.md, .json, .png. See
    docs/finetune.md.
    """
    from pinzi.finetune import finetune as run_finetune

    layers = settings_layers(config, set_, lora__rank=rank, lora__alpha=alpha,
                             lora__dropout=lora_dropout, lora__targets=targets,
                             train__max_steps=max_steps, train__max_minutes=max_minutes)
    run_finetune(base, data, out, lora=lora, settings=layers, domain_test=domain_test or None,
                 general_test=general_test or None, eval_limit=eval_limit, eval_form=eval_form,
                 resume=resume, overwrite=overwrite)
    print((out / "report.md").read_text(encoding="utf-8"), end="")


def merge(
    adapter: Annotated[Path, typer.Option(help="LoRA adapter folder from `pinzi finetune --lora`."
                                          )],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the merged model.")],
    base: Annotated[str | None, typer.Option(
        "--base", "-b", help="The adapter's base model (default: the shipped model).")] = None,
) -> None:
    """Merge a LoRA adapter into its base: one standalone model folder for every command."""
    from pinzi.finetune import merge as run_merge

    print_json(run_merge(base, adapter, out))


# ---- classify (pinzi.classify, pinzi.classifier) ------------------------------------------------
def _report_tables(results: Sequence[tuple[str, dict]], *, per_class: bool = True) -> list:
    """rich Tables: one summary row per (name, report), then each report's per-class figures."""
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


@classify_app.command("train")
def classify_train(
    train_file: Annotated[Path, typer.Option("--train", help="Labelled TSV/CSV file (.gz too).")],
    dev: Annotated[Path, typer.Option(help="Dev file: early stopping and the best model.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: model, logs, metrics.")],
    base: Annotated[str | None, typer.Option(
        "--base", "-b", help="Encoder to fine-tune (default: the shipped model): a pinzi "
                             "model folder, or a Hugging Face encoder by hub name or path "
                             "(bert-base-chinese).")] = None,
    test: Annotated[Path | None, typer.Option(help="Test file, evaluated once at the end.")
                    ] = None,
    label_column: Annotated[str, typer.Option(help="Column holding the label.")] = "label",
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    lora: Annotated[bool, typer.Option(
        "--lora", help="Train LoRA adapters + the classifier instead of every weight.")] = False,
    class_weights: Annotated[bool, typer.Option(
        "--class-weights", help="Weight the loss by inverse class frequency.")] = False,
    oversample: Annotated[bool, typer.Option(
        "--oversample", help="Repeat minority-class examples in every epoch.")] = False,
    metric: Annotated[Metric | None, typer.Option(
        help="Dev metric for early stopping and the best model \\[default: accuracy].")] = None,
    config: ConfigFile = None,
    set_: Overrides = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps \\[default: 1000].")
                         ] = None,
    seed: Seed = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune a classifier: [bold]pinzi classify train --train F --dev F --out R[/].

    Files are TSV (split on TAB, no quoting) or CSV with a header line; lines with an empty
    text are skipped with a warning. The best model by the dev split is kept in OUT, then
    evaluated on dev (and --test): tables here, OUT/metrics.json, OUT/confusion_*.png. See
    docs/classify.md.
    """
    from pinzi.classify import train_classifier

    layers = settings_layers(config, set_, train__max_steps=max_steps, train__seed=seed,
                             classify__metric=metric, classify__class_weights=class_weights or None,
                             classify__oversample=oversample or None)
    summary = train_classifier(base, train_file, dev, out, lora=lora, test_file=test,
                               label_column=label_column, text_column=text_column,
                               settings=layers, resume=resume, overwrite=overwrite,
                               warn=warn)
    reports = [(split, summary[split]) for split in ("dev", "test") if split in summary]
    print_tables(_report_tables(reports))
    print_json({k: v for k, v in summary.items() if k not in ("dev", "test")})


@classify_app.command("keras")
def classify_keras(
    base: Annotated[str, typer.Option(
        "--base", "-b", help="Encoder to fine-tune: a pinzi model folder, or a Hugging Face "
                             "encoder by hub name or path.")],
    train_file: Annotated[Path, typer.Option("--train", help="Labelled TSV/CSV file (.gz too).")],
    dev: Annotated[Path, typer.Option(help="Dev file: early stopping and the best epoch.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Classifier folder to write.")],
    test: Annotated[Path | None, typer.Option(help="Test file, evaluated once at the end.")
                    ] = None,
    label_column: Annotated[str, typer.Option(help="Column holding the label.")] = "label",
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs.")] = 3,
    patience: Annotated[int, typer.Option(
        min=0, help="Stop after this many epochs without a better dev accuracy.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per batch.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="AdamW's learning rate.")] = 5e-4,
    max_length: Annotated[int, typer.Option(min=2, help="Tokens per text; longer are cut.")
                          ] = 256,
    seed: Annotated[int, typer.Option(help="Seed: the same seed repeats the run.")] = 0,
) -> None:
    """Fine-tune a classifier with Keras 3 (compile, fit with EarlyStopping, evaluate).

    Keras runs on PyTorch (pip install "pinzi\\[keras]"); the folder it writes loads like one
    from `classify train`: `classify predict`, `classify eval`, `serve --classifier`. See
    docs/keras.md.
    """
    from pinzi.keras_classify import train_keras_classifier

    summary = train_keras_classifier(base, train_file, dev, out, test_file=test, epochs=epochs,
                                     batch_size=batch_size, learning_rate=learning_rate,
                                     patience=patience, max_length=max_length,
                                     label_column=label_column, text_column=text_column,
                                     seed=seed, warn=warn)
    reports = [(split, summary[split]) for split in ("dev", "test") if split in summary]
    print_tables(_report_tables(reports))
    print_json({k: v for k, v in summary.items() if k not in ("dev", "test")})


@classify_app.command("eval")
def classify_eval(
    files: Annotated[list[Path], typer.Argument(help="Labelled TSV/CSV files (.gz too).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Classifier folder.")],
    label_column: Annotated[str | None, typer.Option(
        help="Column holding the label \\[default: the one used in training].")] = None,
    text_column: Annotated[str | None, typer.Option(
        help="Column holding the text \\[default: the one used in training].")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for metrics.json and a confusion-matrix PNG per file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
) -> None:
    """Evaluate a classifier: accuracy, macro P/R/F1, per-class figures, AUC (two classes)."""
    from pinzi.classifier import TextClassifier
    from pinzi.io import read_labelled
    from pinzi.plots import plot_confusion

    classifier = TextClassifier.load(model)
    label_column = label_column or classifier.info.get("label_column", "label")
    text_column = text_column or classifier.info.get("text_column", "text")
    results = []
    for path in files:
        data = read_labelled(path, label_column, text_column)
        if data.skipped_message():
            warn(data.skipped_message())
        results.append(classifier.evaluate(data))
    names = [Path(r["file"]).name for r in results]
    if len(set(names)) < len(names):  # test.tsv.gz of several datasets: add the folder
        names = [f"{Path(r['file']).parent.name}/{Path(r['file']).name}" for r in results]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, report in zip(names, results, strict=True):
            stem = name.replace("/", "-").removesuffix(".gz").rsplit(".", 1)[0]
            plot_confusion(report["confusion"], report["labels"], out / f"confusion-{stem}.png",
                           f"{name}: confusion matrix")
        (out / "metrics.json").write_text(json.dumps(results, ensure_ascii=False, indent=2)
                                          + "\n", encoding="utf-8")
    if as_json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    print_tables(_report_tables(list(zip(names, results, strict=True))))


@classify_app.command("predict")
def classify_predict(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to label. Omit them to label standard input, one text per line.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Classifier folder.")] = ...,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line: text, label, prob, probs.")] = False,
) -> None:
    """Label texts: prints [bold]label<TAB>probability[/] per text, one line per input line.

    Standard input is read in chunks of 256 lines and every input line gives exactly one
    output line: an empty (or blank) line gives an empty line (null label and prob in JSON);
    invalid UTF-8 bytes become U+FFFD with a warning.
    """
    from pinzi.classifier import TextClassifier

    classifier = TextClassifier.load(model)

    def label(chunk: list[str]) -> None:
        for text, found in zip(chunk, classifier.predict(chunk), strict=True):
            blank = not found.label
            if as_json:
                emit(json.dumps({"text": text, "label": None if blank else found.label,
                                 "prob": None if blank else round(found.prob, 4),
                                 "probs": None if blank else {
                                     name: round(p, 4) for name, p in found.probs.items()}},
                                ensure_ascii=False))
            else:
                emit("" if blank else f"{found.label}\t{found.prob:.4f}")

    if texts:
        label([without_controls(t) for t in texts])
        return
    chunk: list[str] = []
    for _, line in stdin_lines():
        chunk.append(line)
        if len(chunk) == 256:
            label(chunk)
            chunk = []
    if chunk:
        label(chunk)
