"""The `pinzi` command line: one sub-command per job of the toolkit.

Every command prints a clear message and exits with status 2 on a user error (a missing file, a
bad setting, a damaged model); tracebacks are kept for real bugs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pinzi import __version__

app = typer.Typer(
    help="pinzi (拼字): build a Chinese language model from scratch and convert pinyin to hanzi.",
    no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Prepare corpora for training.", no_args_is_help=True)
app.add_typer(data_app, name="data", help="Turn raw Chinese text into training data.")
err = Console(stderr=True)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        print(f"pinzi {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """pinzi (拼字): build a Chinese language model from scratch and convert pinyin to hanzi."""


# ---- convert ------------------------------------------------------------------------------------
def _parse_fuzzy(value: str | None) -> frozenset[str]:
    from pinzi.pinyin import FUZZY_PAIRS

    if not value:
        return frozenset()
    if value == "all":
        return frozenset(FUZZY_PAIRS)
    pairs = frozenset(p.strip() for p in value.split(",") if p.strip())
    unknown = sorted(pairs - set(FUZZY_PAIRS))
    if unknown:
        raise fail(f"unknown fuzzy pair(s) {', '.join(unknown)}; "
                   f"choose from: all, {', '.join(FUZZY_PAIRS)}")
    return pairs


@app.command()
def convert(
    text: Annotated[str | None, typer.Argument(
        help="Pinyin to convert, e.g. woaibeijing or 'wo ai bei jing'. "
             "Omit it to convert standard input line by line.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model folder or Hugging Face repo id (default: the shipped model).")
    ] = None,
    adapter: Annotated[Path | None, typer.Option(  # pinzi finetune --lora
        help="LoRA adapter folder from `pinzi finetune --lora`, applied on top of the model.")
    ] = None,
    nbest: Annotated[int, typer.Option("--nbest", "-n", min=1, max=50,
                                       help="Print the K best conversions, TAB-separated.")] = 1,
    context: Annotated[str, typer.Option(help="Hanzi already committed to the left, e.g. 我想去."
                                         )] = "",
    userdict: Annotated[Path | None, typer.Option(
        help="File of preferred words, one per line with an optional weight (default 4.0).")
    ] = None,
    fuzzy: Annotated[str | None, typer.Option(
        help="Fuzzy pinyin: 'all' or pairs such as 'z=zh,n=l,an=ang'.")] = None,
    punct: Annotated[bool, typer.Option(
        "--punct", help="Map ASCII punctuation to Chinese punctuation (, -> ，).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Convert pinyin to hanzi: [bold]pinzi convert woaibeijingtiananmen[/] -> 我爱北京天安门.

    Accepts spaced or continuous pinyin, apostrophes (xi'an), tone marks or digits (ni3hao3),
    initials (bj, zhgr) and mixtures (beij), an unfinished last syllable, fuzzy pinyin, and
    passes digits, Latin words, URLs and punctuation through unchanged.

    Without TEXT it reads standard input and writes exactly one line per input line, flushed
    at once, so it can run as a pipe or co-process. An empty line gives an empty line; a line
    that cannot be converted (over 4096 characters) gives an empty line and a message on
    standard error; invalid UTF-8 bytes become U+FFFD and pass through.
    """
    from pinzi.converter import Converter, InputTooLong
    from pinzi.decode import UserDict
    from pinzi.tokenizer import ModelLoadError

    pairs = _parse_fuzzy(fuzzy)
    try:  # onnxruntime when the folder has a model.onnx and no adapter is given
        converter = Converter.from_pretrained(model, adapter=adapter)
        if userdict is not None:
            converter.userdict = UserDict.load(userdict)
    except (ModelLoadError, OSError, ValueError) as error:
        raise fail(str(error)) from None

    def emit(line: str, number: int | None = None) -> None:
        line = _CONTROL.sub("", line)
        try:
            best = converter.candidates(line, k=nbest, context=context, fuzzy=pairs,
                                        chinese_punct=punct)
        except InputTooLong as error:
            where = f"line {number}: " if number else ""
            err.print(f"[yellow]warning:[/] {where}{error}; output left empty", highlight=False)
            best = []
        if as_json:
            out = json.dumps({"input": line, "output": best[0][0] if best else "",
                              "candidates": [[t, round(s, 4)] for t, s in best]},
                             ensure_ascii=False)
        else:
            out = "\t".join(t for t, _ in best)
        sys.stdout.write(out + "\n")
        sys.stdout.flush()

    if text is not None:
        emit(text)
        return
    for number, raw in enumerate(sys.stdin.buffer, 1):
        line = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            decoded = line.decode("utf-8", errors="replace")
            err.print(f"[yellow]warning:[/] line {number}: invalid UTF-8 replaced by U+FFFD",
                      highlight=False)
        emit(decoded, number)


# ---- data prepare -------------------------------------------------------------------------------
@data_app.command("prepare")
def data_prepare(
    inputs: Annotated[list[str], typer.Argument(
        help="Text/JSONL/TSV/CSV files (.gz too), folders of them, or Hugging Face dataset names."
    )],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    text_field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    text_column: Annotated[str, typer.Option(help="TSV/CSV column holding the text.")] = "text",
    hf_split: Annotated[str | None, typer.Option(help="Split of a hub dataset.")] = None,
    simplified: Annotated[bool, typer.Option(
        "--simplified", help="Convert traditional to simplified characters (OpenCC t2s).")] = False,
    min_hanzi: Annotated[int, typer.Option(help="Drop lines with fewer hanzi.")] = 2,
    max_chars: Annotated[int, typer.Option(help="Split longer sentences at clauses.")] = 128,
    valid_fraction: Annotated[float, typer.Option(help="Share of lines for validation.")] = 0.01,
    test_fraction: Annotated[float, typer.Option(help="Share of lines for test.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed of the train/valid/test split.")] = 1234,
    num_shards: Annotated[int, typer.Option(help="Split the work over N machines...")] = 1,
    shard_index: Annotated[int, typer.Option(help="...and prepare this shard (0-based).")] = 0,
    workers: Annotated[int | None, typer.Option(help="Processes [default: all cores].")] = None,
) -> None:
    """Normalise, split, deduplicate, annotate with pinyin and store a training dataset.

    Writes OUT/train, OUT/valid, OUT/test (memory-mapped Arrow), OUT/chars.tsv (the character
    vocabulary by frequency) and OUT/stats.json (what was kept and dropped, by reason). Files
    whose names say their split (train/valid/dev/test) keep it.
    """
    from pinzi.data import DataError, prepare

    try:
        stats = prepare(inputs, out, text_field=text_field, text_column=text_column,
                        hf_split=hf_split, to_simplified=simplified, min_hanzi=min_hanzi,
                        max_chars=max_chars, valid_fraction=valid_fraction,
                        test_fraction=test_fraction, seed=seed, num_shards=num_shards,
                        shard_index=shard_index, num_workers=workers)
    except (DataError, FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
    err.print_json(json.dumps({k: stats[k] for k in ("lines", "chars", "vocab_size", "dropped")
                               if k in stats}, ensure_ascii=False))


# Options shared by every training command (pretrain, finetune, classify train).
ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="YAML or TOML file of settings.")]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="Override any setting: --set learning_rate=5e-4 (repeatable).")]
MaxMinutes = Annotated[float | None, typer.Option(
    "--max-minutes", help="Stop after this wall time; the best model so far is kept.")]
Seed = Annotated[int | None, typer.Option(
    "--seed", help="Seed: the same seed repeats the run.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue from OUT's latest checkpoint.")]


# ---- pretrain -----------------------------------------------------------------------------------
def _settings(config: Path | None, overrides: list[str] | None) -> dict:
    from pinzi.train import read_config_file

    settings = read_config_file(config)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--set expects key=value, got {item!r}")
        settings[key.strip().replace("-", "_")] = _scalar(value.strip())
    return settings


def _scalar(value: str):
    import yaml

    return yaml.safe_load(value) if value else value


@app.command()
def pretrain(
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder from `pinzi data prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Run folder (model, checkpoints, logs).")],
    preset: Annotated[str, typer.Option(help="Model size: tiny, small, base, large.")] = "small",
    arch: Annotated[str, typer.Option(help="transformer or lstm-attention.")] = "transformer",
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
) -> None:
    """Pretrain a converter with the pinyin-denoising objective, from scratch or from --base.

    Runs on CPU, one GPU, or many (launch with `accelerate launch -m pinzi pretrain ...`).
    Settings come from the defaults, then --config, then --set and the flags below. See
    `docs/training.md` for the recipe and every setting.
    """
    from pinzi.denoise import train_converter
    from pinzi.model import ModelLoadError
    from pinzi.train import TrainingError

    settings = _settings(config, set_)
    if base is None:
        settings["arch"] = arch
    for key, value in (("max_steps", max_steps), ("max_minutes", max_minutes), ("seed", seed)):
        if value is not None:
            settings[key] = value
    try:
        summary = train_converter(data, out, base=base, preset=preset, settings=settings,
                                  resume=resume)
    except (TrainingError, ModelLoadError) as error:
        raise fail(str(error)) from None
    err.print_json(json.dumps(summary))


# ---- eval (pinzi.evaluate) ----------------------------------------------------------------------
# shared with serve
_BACKEND_HELP = ("auto, torch or onnx. auto: onnxruntime when the folder has a model.onnx and "
                 "onnxruntime is installed, else PyTorch.")


@app.command("eval")
def eval_(
    files: Annotated[list[Path], typer.Argument(
        help="Gold test files: text (.txt, .txt.gz; one sentence a line) or TSV (.tsv, .tsv.gz; "
             "a header line, the text last; a pinyin<TAB>hanzi header supplies the input).")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model folder or Hugging Face repo id (default: the shipped model).")
    ] = None,
    form: Annotated[str, typer.Option(
        help="Input form: spaced (wo ai bei jing), continuous (woaibeijing), abbreviated "
             "(wo ai b jing: 30% of syllables as initials), or all.")] = "spaced",
    limit: Annotated[int | None, typer.Option(min=1, help="Clauses per file (default: all).")
                     ] = None,
    bleu: Annotated[bool, typer.Option("--bleu", help="Also corpus BLEU (needs pinzi\\[bench]).")
                    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    backend: Annotated[str, typer.Option(help=_BACKEND_HELP)] = "auto",
) -> None:
    """Measure conversion accuracy on gold text: [bold]pinzi eval -m MODEL test.txt.gz[/].

    Each line is split into clauses at punctuation; clauses made only of hanzi are kept, and
    their pinyin (pypinyin, toneless) is the input. Reports character accuracy, clause exact
    match and P@5 (the gold among the 5 best) per file and input form.
    """
    from rich.markup import escape
    from rich.table import Table

    from pinzi.converter import Converter
    from pinzi.evaluate import FORMS, evaluate_clauses, read_clauses, require_bleu
    from pinzi.tokenizer import ModelLoadError

    forms = FORMS if form == "all" else (form,)
    if not set(forms) <= set(FORMS):
        raise fail(f"unknown --form {form!r}; choose from: {', '.join(FORMS)}, all")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise fail(escape(f"no such test file: {', '.join(missing)}"))
    if bleu:
        try:
            require_bleu()
        except ImportError as error:
            raise fail(escape(str(error))) from None  # the hint has [brackets]
    try:
        converter = Converter.from_pretrained(model, backend=backend)
    except (ModelLoadError, OSError, ValueError) as error:
        raise fail(str(error)) from None

    results = []
    for path in files:
        try:
            clauses = read_clauses(path, limit)
        except (OSError, UnicodeDecodeError) as error:
            raise fail(escape(f"cannot read {path}: {error}")) from None
        for name in forms:
            results.append({"file": str(path), **evaluate_clauses(converter, clauses, name,
                                                                  bleu=bleu)})
    if as_json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    table = Table("file", "form", "clauses", "chars", "char acc", "exact", "P@5",
                  *(["BLEU"] if bleu else []), "clauses/s", title="pinyin → hanzi")
    for row in results:
        table.add_row(Path(row["file"]).name, row["form"], str(row["clauses"]), str(row["chars"]),
                      *(f"{row[key]:.2%}" for key in ("char_acc", "exact", "p_at_k")),
                      *([f"{row['bleu']:.2f}"] if bleu else []), f"{row['clauses_per_s']:.1f}")
    console = Console()
    if not console.is_terminal:  # rich would assume 80 columns and squeeze the table
        console.width = 160
    console.print(table)
# ---- end of eval --------------------------------------------------------------------------------


# ---- serve, export (pinzi.serve, pinzi.export) --------------------------------------------------
@app.command()
def serve(
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model folder or Hugging Face repo id (default: the shipped model).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface."
                                      )] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="PINZI_API_KEY", show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on /v1 routes.")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(
        help="Allow browser calls from this origin, e.g. https://example.com (repeatable).")
    ] = None,
    backend: Annotated[str, typer.Option(help=_BACKEND_HELP)] = "auto",
    threads: Annotated[int, typer.Option(
        min=1, help="Model threads per request. 1 suits many clients (--workers puts more "
                    "cores to work); more can speed up one client on a big model.")] = 1,
    adapter: Annotated[list[str] | None, typer.Option(
        help="Also load this LoRA adapter of the model (from `pinzi finetune --lora`), as "
             "NAME=DIR or DIR (named after its folder); a request picks it with "
             "\"adapter\": \"NAME\". Repeatable. Adapters run on PyTorch.")] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Server processes, each with its own copy of the model (~200 MB on "
                    "onnxruntime). One per core suits many clients: requests then use every "
                    "core instead of one.")] = 1,
    log_level: Annotated[str, typer.Option(
        help="uvicorn's: debug, info (one line per request), warning, error.")] = "info",
    classifier: Annotated[str | None, typer.Option(  # classify: /v1/classify
        help="Also answer /v1/classify with this folder from `pinzi classify train`.")] = None,
) -> None:
    """Serve conversion over HTTP, with an input-method page: [bold]pinzi serve -m MODEL[/].

    Open http://127.0.0.1:8000/ to type pinyin in a browser; the API is described at /docs.
    Stops gracefully on Ctrl-C or SIGTERM (requests in flight get 10 seconds to finish).
    """
    import uvicorn

    from pinzi.serve import WORKER_CONFIG, ServeConfig, build_app
    from pinzi.tokenizer import ModelLoadError

    levels = ("debug", "info", "warning", "error")
    if log_level not in levels:
        raise fail(f"unknown --log-level {log_level!r}; choose from: {', '.join(levels)}")
    adapters: dict[str, str] = {}
    for given in adapter or []:
        name, _, folder = given.partition("=") if "=" in given else ("", "", given)
        name = name or Path(folder).name
        if not name or not folder or name in adapters:
            raise fail(f"--adapter {given!r}: give NAME=DIR or DIR, each name once")
        adapters[name] = folder
    # PyTorch's threads are process-wide. Several threads per request, each spinning while it
    # waits, slowed every request several times over under load: hence --threads 1.
    config = ServeConfig(model=model, backend=backend, threads=threads, api_key=api_key or None,
                         cors_origins=tuple(cors_origin or ()), classifier=classifier,
                         adapters=adapters)
    try:  # with workers too: a model that does not load is an error here, not a restart loop
        app_ = build_app(config)
    except (ModelLoadError, OSError, ValueError) as error:
        raise fail(str(error)) from None
    # uvicorn handles SIGINT/SIGTERM itself: it stops accepting, lets requests in flight end,
    # runs the app's shutdown, then exits (re-raising the signal, so the status says why).
    # With workers, its supervisor passes the signal on to every worker.
    options = dict(host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
    if workers == 1:
        uvicorn.run(app_, **options)
        return
    del app_  # each worker loads its own copy
    os.environ[WORKER_CONFIG] = json.dumps(dataclasses.asdict(config))
    uvicorn.run("pinzi.serve:worker_app", factory=True, workers=workers, **options)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (may be the model's).")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model folder (default: the shipped model).")] = None,
    format_: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    quantize: Annotated[str | None, typer.Option(
        help="int8: dynamic int8 quantisation (onnxruntime), about 4x smaller.")] = None,
) -> None:
    """Export a converter for onnxruntime: [bold]pinzi export --model M --out M[/].

    Writes OUT/model.onnx (encoder + conversion head, dynamic batch and length) with
    config.json and vocab.json; `pinzi serve` and `pinzi convert` then run it with onnxruntime
    (pip install "pinzi[onnx]").
    """
    from pinzi.export import export_onnx
    from pinzi.model import ModelLoadError

    if format_ != "onnx":
        raise fail(f"unknown --format {format_!r}; the one format is onnx")
    try:
        summary = export_onnx(model, out, quantize=quantize)
    except (ModelLoadError, OSError, ValueError) as error:
        raise fail(str(error)) from None
    err.print_json(json.dumps(summary))
# ---- end of serve, export -----------------------------------------------------------------------


# ---- finetune, merge (pinzi.finetune) -----------------------------------------------------------
@app.command()
def finetune(
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder from `pinzi data prepare`.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Run folder: the model (or the adapter), logs, report.")],
    base: Annotated[str | None, typer.Option(
        "--base", "-b", help="Model to fine-tune: folder or hub id (default: the shipped model)")
    ] = None,
    lora: Annotated[bool, typer.Option(
        "--lora", help="Train a small LoRA adapter instead of every weight.")] = False,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank r.")] = 8,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (updates scaled by alpha / r).")] = 16,
    lora_dropout: Annotated[float, typer.Option(help="Dropout on the LoRA input.")] = 0.05,
    targets: Annotated[str | None, typer.Option(
        help="Comma-separated module names to adapt (default: qkv,out,mlp.0,mlp.2).")] = None,
    config: ConfigFile = None,
    set_: Overrides = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps (default: 2000).")
                         ] = None,
    max_minutes: MaxMinutes = None,
    domain_test: Annotated[list[Path] | None, typer.Option(
        help="Domain test file, repeatable (default: the dataset's test split).")] = None,
    general_test: Annotated[list[Path] | None, typer.Option(
        help="General test file, repeatable "
             "(default: ../shared/data/sighan2005/pku_test.txt.gz if present).")] = None,
    eval_limit: Annotated[int, typer.Option(
        min=0, help="Clauses per test set in the before/after report; 0: no report.")] = 500,
    eval_form: Annotated[str, typer.Option(
        help="Pinyin input form of the report: spaced, continuous or abbreviated.")] = "spaced",
    resume: Resume = False,
) -> None:
    """Adapt a converter to a domain: [bold]pinzi finetune --base M --data D --out R --lora[/].

    Continues the pinyin objective on the domain's prepared text (full fine-tuning, or a LoRA
    adapter with --lora), stops early on its valid split, then compares the base and the result
    on the domain's test split and a general news test: OUT/report.md, .json, .png. See
    docs/finetune.md.
    """
    from pinzi.finetune import finetune as run_finetune
    from pinzi.model import ModelLoadError
    from pinzi.train import TrainingError

    settings = _settings(config, set_)
    for key, value in (("max_steps", max_steps), ("max_minutes", max_minutes)):
        if value is not None:
            settings[key] = value
    try:
        run_finetune(base, data, out, lora=lora, rank=rank, alpha=alpha, dropout=lora_dropout,
                     targets=targets, settings=settings, domain_test=domain_test or None,
                     general_test=general_test or None, eval_limit=eval_limit,
                     eval_form=eval_form, resume=resume)
    except (TrainingError, ModelLoadError) as error:
        raise fail(str(error)) from None
    print((out / "report.md").read_text(encoding="utf-8"), end="")


@app.command()
def merge(
    adapter: Annotated[Path, typer.Option(help="LoRA adapter folder from `pinzi finetune --lora`."
                                          )],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the merged model.")],
    base: Annotated[str | None, typer.Option(
        "--base", "-b", help="The adapter's base model (default: the shipped model)")] = None,
) -> None:
    """Merge a LoRA adapter into its base: one standalone model folder for every command."""
    from pinzi.finetune import merge as run_merge
    from pinzi.model import ModelLoadError

    try:
        summary = run_merge(base, adapter, out)
    except (ModelLoadError, OSError) as error:
        raise fail(str(error)) from None
    err.print_json(json.dumps(summary))
# ---- end of finetune, merge ---------------------------------------------------------------------


# ---- classify (pinzi.classify) ------------------------------------------------------------------
classify_app = typer.Typer(help="Fine-tune text classifiers and use them.", no_args_is_help=True)
app.add_typer(classify_app, name="classify",
              help="Text classification: fine-tune an encoder, evaluate, label texts.")


def _classify_warn(message: str) -> None:
    from rich.markup import escape

    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def _print_tables(tables: list) -> None:
    console = Console()
    if not console.is_terminal:  # rich would assume 80 columns and squeeze the table
        console.width = 160
    for table in tables:
        console.print(table)


@classify_app.command("train")
def classify_train(
    base: Annotated[str, typer.Option(
        "--base", "-b", help="Encoder to fine-tune: a pinzi model folder, or a Hugging Face "
                             "encoder by hub name or path (bert-base-chinese).")],
    train_file: Annotated[Path, typer.Option("--train", help="Labelled TSV/CSV file (.gz too).")],
    dev: Annotated[Path, typer.Option(help="Dev file: early stopping and the best model.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: model, logs, metrics.")],
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
    metric: Annotated[str | None, typer.Option(
        help="Dev metric for early stopping and the best model: accuracy or macro_f1.")] = None,
    config: ConfigFile = None,
    set_: Overrides = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps \\[default: 1000].")
                         ] = None,
    seed: Seed = None,
    resume: Resume = False,
) -> None:
    """Fine-tune a classifier: [bold]pinzi classify train --base M --train F --dev F --out R[/].

    Files are TSV (split on TAB, no quoting) or CSV with a header line; lines with an empty
    text are skipped with a warning. The best model by the dev split is kept in OUT, then
    evaluated on dev (and --test): tables here, OUT/metrics.json, OUT/confusion_*.png. See
    docs/classify.md.
    """
    from rich.markup import escape

    from pinzi.classify import ClassifyError, report_tables, train_classifier
    from pinzi.model import ModelLoadError
    from pinzi.train import TrainingError

    settings = _settings(config, set_)
    for key, value in (("max_steps", max_steps), ("seed", seed), ("metric", metric)):
        if value is not None:
            settings[key] = value
    for key, flag in (("lora", lora), ("class_weights", class_weights),
                      ("oversample", oversample)):
        if flag:
            settings[key] = True
    try:
        summary = train_classifier(base, train_file, dev, out, test_file=test,
                                   label_column=label_column, text_column=text_column,
                                   settings=settings, resume=resume, warn=_classify_warn)
    except (ClassifyError, TrainingError, ModelLoadError) as error:
        raise fail(escape(str(error))) from None
    reports = [(split, summary[split]) for split in ("dev", "test") if split in summary]
    _print_tables(report_tables(reports))
    err.print_json(json.dumps({k: v for k, v in summary.items() if k not in ("dev", "test")}))


@classify_app.command("eval")
def classify_eval(
    files: Annotated[list[Path], typer.Argument(help="Labelled TSV/CSV files (.gz too).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Classifier folder.")],
    label_column: Annotated[str | None, typer.Option(
        help="Column holding the label [default: the one used in training].")] = None,
    text_column: Annotated[str | None, typer.Option(
        help="Column holding the text [default: the one used in training].")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for metrics.json and a confusion-matrix PNG per file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
) -> None:
    """Evaluate a classifier: accuracy, macro P/R/F1, per-class figures, AUC (two classes)."""
    from rich.markup import escape

    from pinzi.classify import (
        ClassifyError,
        TextClassifier,
        plot_confusion,
        read_labelled,
        report_tables,
    )

    try:
        classifier = TextClassifier.load(model)
        label_column = label_column or classifier.info.get("label_column", "label")
        text_column = text_column or classifier.info.get("text_column", "text")
        results = []
        for path in files:
            data = read_labelled(path, label_column, text_column)
            if data.skipped_message():
                _classify_warn(data.skipped_message())
            results.append(classifier.evaluate(data))
    except ClassifyError as error:
        raise fail(escape(str(error))) from None
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
    _print_tables(report_tables(list(zip(names, results, strict=True))))


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
    import numpy as np
    from rich.markup import escape

    from pinzi.classify import ClassifyError, TextClassifier

    try:
        classifier = TextClassifier.load(model)
    except ClassifyError as error:
        raise fail(escape(str(error))) from None

    def emit(chunk: list[str]) -> None:
        probs = classifier.predict_proba(chunk)
        for text, row in zip(chunk, probs, strict=True):
            blank = bool(np.isnan(row).any())  # a blank text has a NaN row
            best = 0 if blank else int(row.argmax())
            if as_json:
                line = json.dumps({"text": text,
                                   "label": None if blank else classifier.labels[best],
                                   "prob": None if blank else round(float(row[best]), 4),
                                   "probs": None if blank else {
                                       name: round(float(p), 4)
                                       for name, p in zip(classifier.labels, row, strict=True)}},
                                  ensure_ascii=False)
            else:
                line = "" if blank else f"{classifier.labels[best]}\t{row[best]:.4f}"
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    if texts:
        emit([_CONTROL.sub("", t) for t in texts])
        return
    chunk: list[str] = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        line = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            decoded = line.decode("utf-8", errors="replace")
            _classify_warn(f"line {number}: invalid UTF-8 replaced by U+FFFD")
        chunk.append(_CONTROL.sub("", decoded))
        if len(chunk) == 256:
            emit(chunk)
            chunk = []
    if chunk:
        emit(chunk)
# ---- end of classify ----------------------------------------------------------------------------


def main() -> None:
    app()
