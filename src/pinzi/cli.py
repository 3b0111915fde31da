"""The `pinzi` command line: one sub-command per job of the toolkit.

Results go to standard output, progress and messages to standard error. A user error (a
missing file, a bad setting, a damaged model: any :class:`~pinzi.errors.PinziError`) ends a
command with ``error: <message>`` and status 2, handled in one place (:class:`_Commands`);
anything else keeps its traceback, since it is a bug. A command whose optional libraries are
not installed (the default install is what conversion needs) says which extra to install.

The training commands live in :mod:`pinzi.cli_train`. Modules below the surface are imported
inside the commands: ``pinzi convert`` with the shipped model then starts without PyTorch
(torch, transformers and the training stack load only for the commands that need them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich import box
from rich.table import Table
from typer.core import TyperGroup

from pinzi import __version__, cli_ime, cli_train
from pinzi.backends import BACKENDS
from pinzi.cli_ime import UserDirOption
from pinzi.console import (
    argument_or_lines,
    emit,
    error,
    print_json,
    print_tables,
    progress_bar,
    warn,
)
from pinzi.errors import PinziError
from pinzi.evaluate import FORMS
from pinzi.readings import TONES, annotate
from pinzi.shuangpin import FULL_PINYIN, SCHEME_NAMES

# shared by convert and serve
SchemeOption = Annotated[Literal[SCHEME_NAMES], typer.Option(
    help="How the keys are typed: full pinyin, or a shuangpin (双拼) scheme, e.g. xiaohe: "
         "vsgo = zhong guo (the key tables: docs/shuangpin.md).")]

# The extra of pyproject.toml that installs each optional library a command may import.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "transformers", "accelerate", "peft", "datasets", "safetensors",
                     "tensorboard", "matplotlib", "sklearn"), "train"),
    **dict.fromkeys(("fastapi", "fastapi_offline", "starlette", "uvicorn"), "serve"),
    "onnx": "onnx", "keras": "keras", "sacrebleu": "bench",
}


class _Commands(TyperGroup):
    """Every command's user errors become one clear message and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PinziError as problem:
            error(str(problem))
            raise typer.Exit(2) from None
        except OSError as problem:  # a file that cannot be read or written
            if isinstance(problem, BrokenPipeError):  # the reader went away: nothing to say
                raise typer.Exit(1) from None
            where = f": {problem.filename}" if problem.filename else ""
            error(f"{problem.strerror or problem}{where}")
            raise typer.Exit(2) from None
        except ModuleNotFoundError as missing:
            extra = EXTRA_OF_MODULE.get((missing.name or "").partition(".")[0])
            if extra is None:  # not an optional library: a bug, with its traceback
                raise
            error(f"this command needs {missing.name}, which is not installed: "
                  f'pip install "pinzi[{extra}]"')
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Commands,
    help="pinzi (拼字): build a Chinese language model from scratch and convert pinyin to hanzi.",
    no_args_is_help=True, rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Prepare corpora for training.", no_args_is_help=True)
app.add_typer(data_app, name="data", help="Turn raw Chinese text into training data.")


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
@app.command()
def convert(
    pinyin: Annotated[str | None, typer.Argument(
        help="Pinyin to convert, e.g. woaibeijing or 'wo ai bei jing'. "
             "Omit it to convert standard input line by line.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model folder or Hugging Face repo id (default: the shipped model).")
    ] = None,
    adapter: Annotated[Path | None, typer.Option(  # pinzi finetune --lora
        help="LoRA adapter folder from `pinzi finetune --lora`, applied on top of the model.")
    ] = None,
    nbest: Annotated[int, typer.Option("--nbest", "-n", min=1, max=50, help=(
        "Print the K best conversions of the whole line, TAB-separated; with --json, K "
        "candidates as an input method lists them, those covering the start of the line too."))
    ] = 1,
    offset: Annotated[int, typer.Option(min=0, max=1000, help=(
        "With --json: skip this many candidates (the next page: --nbest 9 --offset 9)."))] = 0,
    context: Annotated[str, typer.Option(help="Hanzi already committed to the left, e.g. 我想去."
                                         )] = "",
    userdict: Annotated[Path | None, typer.Option(
        help="File of preferred words, one per line with an optional weight (default 4.0): "
             "a word wins where its pinyin fits, by that margin (README, 'User dictionary').")
    ] = None,
    fuzzy: Annotated[str | None, typer.Option(
        help="Fuzzy pinyin: 'all' or pairs such as 'z=zh,n=l,an=ang'.")] = None,
    punct: Annotated[bool, typer.Option(
        "--punct", help="Map ASCII punctuation to Chinese punctuation (, -> ，).")] = False,
    traditional: Annotated[bool, typer.Option(
        "--traditional", help="Write traditional characters (OpenCC s2t: 我爱北京 -> 我愛北京); "
                              "the model itself writes simplified ones.")] = False,
    scheme: SchemeOption = FULL_PINYIN,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line: the pinyin, the best hanzi and the "
                       "candidates with their scores and how many characters of the pinyin "
                       "each covers ('consumed'), as /v1/candidates answers.")
    ] = False,
    user_dir: UserDirOption = None,
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
    from pinzi.converter import Converter
    from pinzi.decode import UserDict
    from pinzi.errors import InputTooLong

    words = UserDict.load(userdict) if userdict is not None else None
    # onnxruntime when the folder has a model.onnx and no adapter is given
    converter = Converter.from_pretrained(model, adapter=adapter, fuzzy=fuzzy, punct=punct,
                                          userdict=words, traditional=traditional, scheme=scheme,
                                          user_dir=user_dir)

    def convert_line(line: str, number: int | None = None) -> None:
        try:
            best = converter.candidates(line, k=nbest, context=context, partial=as_json,
                                        offset=offset if as_json else 0)
            hanzi = converter.convert(line, context) if as_json and offset else \
                (best[0].hanzi if best else "")
        except InputTooLong as problem:
            warn(f"{f'line {number}: ' if number else ''}{problem}; output left empty")
            best, hanzi = [], ""
        if as_json:
            emit(json.dumps({"pinyin": line, "hanzi": hanzi, "offset": offset,
                             "candidates": [c._asdict() | {"score": round(c.score, 4)}
                                            for c in best]}, ensure_ascii=False))
        else:
            emit("\t".join(c.hanzi for c in best))

    for number, line in argument_or_lines(pinyin):
        convert_line(line, number)


# ---- pinyin (pinzi.pinyin) ---------------------------------------------------------------------
@app.command("pinyin")
def pinyin_(
    text: Annotated[str | None, typer.Argument(
        help="Chinese text, e.g. 中文. Omit it to read standard input line by line.")] = None,
    tone: Annotated[Literal[TONES], typer.Option(
        help="mark: zhōng wén, number: zhong1 wen2 (5 for the neutral tone), none: zhong wen.")
    ] = "mark",
    separator: Annotated[str, typer.Option(
        help="Written between neighbouring readings, and between a reading and a word of "
             "letters or digits.")] = " ",
) -> None:
    """Hanzi to pinyin: [bold]pinzi pinyin 中文[/] -> zhōng wén.

    A character with several readings is read in its word (银行 yín háng, 行走 xíng zǒu), as
    pypinyin's phrase dictionary says; everything else (punctuation, spaces, Latin, digits)
    is written as given. Without TEXT it reads standard input and writes exactly one line per
    input line, as convert does.
    """

    def spell(line: str) -> None:
        out, before = [], (False, False)  # whether the previous character was read, word-like
        for char, reading in zip(line, annotate(line, tone), strict=True):
            read, wordlike = bool(reading), bool(reading) or char.isalnum()
            # a reading stands apart from a neighbouring reading, letter or digit, as words do;
            # punctuation and spaces are written as they come
            if (read or before[0]) and wordlike and before[1]:
                out.append(separator)
            out.append(reading or char)
            before = read, wordlike
        emit("".join(out))

    for _, line in argument_or_lines(text):
        spell(line)


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
    workers: Annotated[int | None, typer.Option(help="Processes \\[default: all cores].")
                       ] = None,
) -> None:
    """Normalise, split, deduplicate, annotate with pinyin and store a training dataset.

    Writes OUT/train, OUT/valid, OUT/test (memory-mapped arrays: code points, syllables, line
    offsets), OUT/dataset.json, OUT/chars.tsv (the character vocabulary by frequency) and
    OUT/stats.json (what was kept and dropped, by reason). Files whose names say their split
    (train/valid/dev/test) keep it.
    """
    from pinzi.data import prepare

    stats = prepare(inputs, out, text_field=text_field, text_column=text_column,
                    hf_split=hf_split, to_simplified=simplified, min_hanzi=min_hanzi,
                    max_chars=max_chars, valid_fraction=valid_fraction,
                    test_fraction=test_fraction, seed=seed, num_shards=num_shards,
                    shard_index=shard_index, num_workers=workers)
    print_json({k: stats[k] for k in ("lines", "sentences", "chars", "vocab_size", "dropped")
                if k in stats})


# ---- eval (pinzi.evaluate) ----------------------------------------------------------------------
# shared with serve
BackendOption = Annotated[Literal[BACKENDS], typer.Option(
    help="auto: onnxruntime when the folder has a model.onnx and onnxruntime is installed, "
         "else PyTorch.")]


class _Counted:
    """A converter that advances a progress bar at every conversion."""

    def __init__(self, converter, advance) -> None:
        self.converter, self.advance = converter, advance

    def candidates(self, pinyin: str, k: int = 5, *, partial: bool = True) -> list:
        found = self.converter.candidates(pinyin, k=k, partial=partial)
        self.advance()
        return found


@app.command("eval")
def eval_(
    files: Annotated[list[Path], typer.Argument(
        help="Gold test files: text (.txt, .txt.gz; one sentence a line) or TSV (.tsv, .tsv.gz; "
             "a header line, the text last; a pinyin<TAB>hanzi header supplies the input).")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model folder or Hugging Face repo id (default: the shipped model).")
    ] = None,
    form: Annotated[Literal[(*FORMS, "all")], typer.Option(
        help="Input form: spaced (wo ai bei jing), continuous (woaibeijing), abbreviated "
             "(wo ai b jing: 30% of syllables as initials), or all.")] = "spaced",
    limit: Annotated[int | None, typer.Option(min=1, help="Clauses per file (default: all).")
                     ] = None,
    bleu: Annotated[bool, typer.Option("--bleu", help="Also corpus BLEU (needs pinzi\\[bench]).")
                    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    backend: BackendOption = "auto",
) -> None:
    """Measure conversion accuracy on gold text: [bold]pinzi eval -m MODEL test.txt.gz[/].

    Each line is split into clauses at punctuation; clauses made only of hanzi are kept, and
    their pinyin (pypinyin, toneless) is the input. Reports character accuracy, clause exact
    match and P@5 (the gold among the 5 best) per file and input form.
    """
    from pinzi.converter import Converter
    from pinzi.evaluate import evaluate_clauses, read_clauses, require_bleu

    forms = FORMS if form == "all" else (form,)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise PinziError(f"no such test file: {', '.join(missing)}")
    if bleu:
        require_bleu()
    converter = Converter.from_pretrained(model, backend=backend)
    results, tables = [], []
    with progress_bar() as bar:
        for path in files:
            clauses = read_clauses(path, limit)
            tables.append(_eval_table(path.name, bleu))
            for name in forms:
                task = bar.add_task(f"{path.name} {name}", total=len(clauses))
                counted = _Counted(converter, lambda task=task: bar.advance(task))
                row = evaluate_clauses(counted, clauses, name, bleu=bleu)
                results.append({"file": str(path), **row})
                tables[-1].add_row(
                    row["form"], str(row["clauses"]), str(row["chars"]),
                    *(f"{row[key]:.2%}" for key in ("char_acc", "exact", "p_at_k")),
                    *([f"{row['bleu']:.2f}"] if bleu else []), f"{row['clauses_per_s']:.1f}")
    if as_json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    print_tables(tables)


def _eval_table(file_name: str, bleu: bool) -> Table:
    """One table per file, whose name is its title: every figure fits 80 columns, BLEU too."""
    table = Table(title=f"pinyin → hanzi: {file_name}", box=box.SIMPLE_HEAD,
                  collapse_padding=True, pad_edge=False)
    table.add_column("form")
    for name in ("clauses", "chars", "char acc", "exact", "P@5", *(["BLEU"] if bleu else []),
                 "clauses/s"):
        table.add_column(name, justify="right")
    return table


# ---- serve, export (pinzi.serve, pinzi.export) --------------------------------------------------
def _reserve_files(connections: int) -> None:
    """Raise the open-files limit to fit ``connections`` and the model's files, or refuse: past
    the limit accept() fails, and even /healthz gets connection resets."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    wanted = connections + 128  # model files, pipes, the listening socket
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise PinziError(f"--max-connections {connections} needs {wanted} open files; this "
                         f"process may open {hard} (ulimit -Hn): give fewer")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


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
        help="Require 'Authorization: Bearer KEY' on /v1 routes (printable ASCII). Set "
             "PINZI_API_KEY rather than this option: other users see a command line in `ps`.")
    ] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(
        help="Allow browser calls from this origin, e.g. https://example.com (repeatable).")
    ] = None,
    backend: BackendOption = "auto",
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
    max_connections: Annotated[int, typer.Option(
        min=1, help="Open connections per worker; one more gets 503 and is closed at once. "
                    "Each holds a file descriptor: the open-files limit is raised to fit.")
    ] = 1000,
    log_level: Annotated[str, typer.Option(
        help="uvicorn's: debug, info (one line per request), warning, error.")] = "info",
    classifier: Annotated[str | None, typer.Option(  # classify: /v1/classify
        help="Also answer /v1/classify with this folder from `pinzi classify train`.")] = None,
    scheme: SchemeOption = FULL_PINYIN,  # a request's "scheme" may choose another
    traditional: Annotated[bool, typer.Option(
        "--traditional", help="Answer in traditional characters unless a request sends "
                              "\"traditional\": false (OpenCC s2t).")] = False,
    user_dir: UserDirOption = None,
) -> None:
    """Serve conversion over HTTP, with an input-method page: [bold]pinzi serve -m MODEL[/].

    Open http://127.0.0.1:8000/ to type pinyin in a browser; the API is described at /docs.
    With --user-dir the server learns from the picks reported to /v1/learn (the page reports
    each) and keeps them in that folder; without it, it learns nothing. Stops gracefully on
    Ctrl-C or SIGTERM (requests in flight get 10 seconds to finish).
    """
    import uvicorn

    from pinzi.guard import GuardedHttp
    from pinzi.serve import WORKER_CONFIG, ServeConfig, build_app

    levels = ("debug", "info", "warning", "error")
    if log_level not in levels:
        raise PinziError(f"unknown --log-level {log_level!r}; choose from: {', '.join(levels)}")
    adapters: dict[str, str] = {}
    for given in adapter or []:
        name, _, folder = given.partition("=") if "=" in given else ("", "", given)
        name = name or Path(folder).name
        if not name or not folder or name in adapters:
            raise PinziError(f"--adapter {given!r}: give NAME=DIR or DIR, each name once")
        adapters[name] = folder
    if user_dir is not None and workers > 1:
        raise PinziError("--user-dir takes one worker: workers would each learn apart and "
                         "overwrite each other's picks (leave out --workers)")
    # PyTorch's threads are process-wide. Several threads per request, each spinning while it
    # waits, slowed every request several times over under load: hence --threads 1.
    config = ServeConfig(model=model, backend=backend, threads=threads, api_key=api_key or None,
                         cors_origins=tuple(cors_origin or ()), classifier=classifier,
                         adapters=adapters, scheme=scheme, traditional=traditional,
                         user_dir=None if user_dir is None else str(user_dir))
    app_ = build_app(config)  # with workers too: a model that does not load fails here
    _reserve_files(max_connections)  # workers inherit the limit
    # uvicorn handles SIGINT/SIGTERM itself: it stops accepting, lets requests in flight end,
    # runs the app's shutdown, then exits (re-raising the signal, so the status says why).
    # With workers, its supervisor passes the signal on to every worker.
    # GuardedHttp closes connections that never finish a request and refuses those past
    # limit_concurrency; uvicorn itself closes those idle after a response (5 s).
    options = dict(host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10,
                   http=GuardedHttp, limit_concurrency=max_connections)
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
    format_: Annotated[Literal["onnx"], typer.Option("--format", help="Export format.")
                       ] = "onnx",
    quantize: Annotated[Literal["int8"] | None, typer.Option(
        help="Dynamic int8 quantisation (onnxruntime), about 4x smaller.")] = None,
) -> None:
    """Export a converter for onnxruntime: [bold]pinzi export --model M --out M[/].

    Writes OUT/model.onnx (encoder + conversion head, dynamic batch and length) with
    config.json and vocab.json; `pinzi serve` and `pinzi convert` then run it with onnxruntime
    (exporting needs pip install "pinzi\\[onnx]").
    """
    from pinzi.export import export_onnx

    print_json(export_onnx(model, out, quantize=quantize))


for command in (cli_ime.predict, cli_ime.learn, cli_train.pretrain, cli_train.finetune,
                cli_train.merge):
    app.command()(command)
app.add_typer(cli_train.classify_app, name="classify",
              help="Text classification: fine-tune an encoder, evaluate, label texts.")


def main() -> None:
    app()
