"""Evaluation of pinyin -> hanzi conversion: test clauses, input forms, metrics and the driver.

Used by ``pinzi eval`` and by the benchmarks in ``bench/`` (accuracy.py, speed.py), which also
drive the peer IME engines of ``../shared/peers`` through :class:`PeerEngine`::

    pinzi eval --model MODEL ../shared/data/sighan2005/pku_test.txt.gz --form all --limit 1000

>>> from pinzi.evaluate import evaluate_lines
>>> evaluate_lines(converter, ["我爱北京，天安门。"], form="continuous")  # doctest: +SKIP
{'form': 'continuous', 'clauses': 2, 'chars': 7, 'char_acc': 1.0, 'exact': 1.0, ...}

Test items are *clauses*, made from gold text the way the peers' ``score.py --split-clauses``
makes them: a line is split at punctuation and symbols, spaces are dropped, and only clauses made
entirely of CJK ideographs are kept (anything with digits or Latin letters is skipped). The input
is the clause's toneless pinyin from :func:`pinzi.pinyin.annotate` (or the pinyin a
``pinyin<TAB>hanzi`` test file gives) in one of three forms:

* ``spaced``       ``wo ai bei jing``  -- what the peer engines get;
* ``continuous``   ``woaibeijing``     -- what people type, syllable boundaries left to guess;
* ``abbreviated``  ``wo ai b jing``    -- a seeded random share of the syllables typed as their
  initial only (zero-initial syllables such as ``ai`` have none and stay whole).

Metrics: character accuracy (positions equal to the gold / gold characters; an output of the
wrong length scores 0 on that clause, as in score.py), clause exact match, P@k (the gold is among
the k best conversions) and, on request, corpus BLEU with sacrebleu's character-level ``zh``
tokenisation (``pip install 'pinzi[bench]'``).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import shlex
import subprocess
import threading
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import eq
from pathlib import Path
from typing import Protocol

from pinzi.pinyin import annotate, initial_of, normalize_syllable

FORMS = ("spaced", "continuous", "abbreviated")
DEFAULT_SEED = 1234
ABBREVIATED_FRACTION = 0.3
# The engines of the peer harness that bench/accuracy.py and bench/speed.py run by default;
# pinyin2hanzi-hmm is left out because it converts about one sentence per second.
PEER_ENGINES = ("libime", "libpinyin", "sunpinyin", "rime", "googlepinyin", "pinyin2hanzi-dag")
BLEU_HINT = "BLEU needs sacrebleu: pip install 'pinzi[bench]' (or pip install sacrebleu)"


class Candidates(Protocol):
    """What the driver needs of a converter (:class:`pinzi.converter.Converter` has it)."""

    def candidates(self, pinyin: str, k: int = 5) -> list[tuple[str, float]]: ...


@dataclass(frozen=True)
class Clause:
    """One test item: gold hanzi and one toneless syllable per character."""

    hanzi: str
    syllables: tuple[str, ...]


# ---- gold text -> clauses -----------------------------------------------------------------------
def is_hanzi(ch: str) -> bool:
    """CJK ideographs, with exactly the ranges of the peers' score.py (so both keep one set)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x3FFFF
            or 0xF900 <= cp <= 0xFAFF or cp == 0x3007)


def split_clauses(line: str) -> list[str]:
    """The all-hanzi clauses of a gold line, spaces removed (score.py ``--split-clauses``)."""
    clauses, current = [], []
    for ch in line + "。":  # the sentinel flushes the last clause
        if ch.isspace():
            continue
        if unicodedata.category(ch)[0] in "PS":
            if current and all(map(is_hanzi, current)):
                clauses.append("".join(current))
            current = []
        else:
            current.append(ch)
    return clauses


def clauses_from_lines(lines: Iterable[str], limit: int | None = None) -> list[Clause]:
    """Gold lines -> annotated clauses, at most ``limit`` of them (None: all).

    A clause with a character pypinyin cannot read has no input and is skipped.
    """
    clauses: list[Clause] = []
    for line in lines:
        for text in split_clauses(line):
            syllables = annotate(text)
            if all(syllables):
                clauses.append(Clause(text, tuple(syllables)))
                if len(clauses) == limit:
                    return clauses
    return clauses


def read_clauses(path: str | Path, limit: int | None = None) -> list[Clause]:
    """The clauses of a test file, at most ``limit`` (None: all).

    Plain text (``.txt``, ``.txt.gz``): one sentence a line. TSV (``.tsv``, ``.tsv.gz``): a header
    line, then the text in the last field; under a ``pinyin<TAB>hanzi`` header, the first field is
    the line's own space-separated pinyin, used as the input where it gives one canonical
    syllable per character of an all-hanzi line (otherwise the line is annotated like text).
    Raises OSError / UnicodeDecodeError for unreadable files.
    """
    path = Path(path)
    with _open_text(path) as lines:
        if not path.name.removesuffix(".gz").endswith(".tsv"):
            return clauses_from_lines((line.rstrip("\n") for line in lines), limit)
        header = next(lines, "").rstrip("\n").split("\t")
        rows = (line.rstrip("\n").split("\t") for line in lines)
        if header[:1] != ["pinyin"]:
            return clauses_from_lines((row[-1] for row in rows), limit)
        clauses: list[Clause] = []
        for row in rows:
            hanzi = row[-1].strip()
            given = tuple(normalize_syllable(s) or "" for s in row[0].split())
            if hanzi and len(given) == len(hanzi) and all(given) and all(map(is_hanzi, hanzi)):
                clauses.append(Clause(hanzi, given))
            else:
                clauses += clauses_from_lines([hanzi])
            if limit is not None and len(clauses) >= limit:
                return clauses[:limit]
        return clauses


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


# ---- input forms --------------------------------------------------------------------------------
def pinyin_input(clause: Clause, form: str, *, seed: int = DEFAULT_SEED,
                 fraction: float = ABBREVIATED_FRACTION) -> str:
    """The pinyin typed for ``clause`` in ``form`` (one of :data:`FORMS`).

    The abbreviated form draws from a generator seeded with ``seed`` and the clause text, so a
    clause is abbreviated the same way whatever file, order or --limit it comes with.
    """
    if form == "spaced":
        return " ".join(clause.syllables)
    if form == "continuous":
        return "".join(clause.syllables)
    if form == "abbreviated":
        rng = random.Random(f"{seed}:{clause.hanzi}")  # str seeds are hashed stably (sha512)
        return " ".join(_abbreviate(s) if rng.random() < fraction else s for s in clause.syllables)
    raise ValueError(f"unknown input form {form!r}; choose from {', '.join(FORMS)}")


def _abbreviate(syllable: str) -> str:
    return initial_of(syllable) or syllable


# ---- metrics ------------------------------------------------------------------------------------
def char_correct(gold: str, output: str) -> int:
    """Characters of ``output`` equal to ``gold`` position by position; 0 if the lengths differ."""
    return sum(map(eq, gold, output)) if len(gold) == len(output) else 0


def score(golds: Sequence[str], outputs: Sequence[str],
          ranked: Sequence[Sequence[str]] | None = None) -> dict[str, float | int]:
    """Char accuracy, exact match and wrong-length count of ``outputs`` against ``golds``.

    With ``ranked`` (each clause's k-best list) also ``p_at_k``: the share of clauses whose gold
    is in the list.
    """
    if len(outputs) != len(golds):
        raise ValueError(f"{len(outputs)} outputs for {len(golds)} gold clauses")
    chars = sum(map(len, golds))
    result: dict[str, float | int] = {
        "clauses": len(golds),
        "chars": chars,
        "char_acc": sum(map(char_correct, golds, outputs)) / max(chars, 1),
        "exact": sum(map(eq, golds, outputs)) / max(len(golds), 1),
        "length_errors": sum(len(g) != len(o) for g, o in zip(golds, outputs, strict=True)),
    }
    if ranked is not None:
        hits = sum(g in r for g, r in zip(golds, ranked, strict=True))
        result["p_at_k"] = hits / max(len(golds), 1)
    return result


def require_bleu():
    """The sacrebleu module, or ImportError with the install hint."""
    try:
        import sacrebleu
    except ImportError as error:
        raise ImportError(BLEU_HINT) from error
    return sacrebleu


def corpus_bleu(golds: Sequence[str], outputs: Sequence[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's character-level Chinese tokenisation."""
    return require_bleu().corpus_bleu(list(outputs), [list(golds)], tokenize="zh").score


# ---- the driver ---------------------------------------------------------------------------------
def evaluate_clauses(converter: Candidates, clauses: Sequence[Clause], form: str = "spaced", *,
                     nbest: int = 5, seed: int = DEFAULT_SEED,
                     fraction: float = ABBREVIATED_FRACTION, bleu: bool = False) -> dict:
    """Convert every clause from ``form`` input and score it (see :func:`score`).

    One ``candidates(k=nbest)`` call per clause gives both the top-1 and the k-best list (the
    top-1 does not depend on k while k <= the converter's beam). ``p_at_k`` is reported when
    ``nbest > 1``; ``clauses_per_s`` is the conversion throughput of this run.
    """
    inputs = [pinyin_input(c, form, seed=seed, fraction=fraction) for c in clauses]
    start = time.perf_counter()
    ranked = [[text for text, _ in converter.candidates(p, k=nbest)] for p in inputs]
    seconds = time.perf_counter() - start
    golds = [c.hanzi for c in clauses]
    outputs = [r[0] if r else "" for r in ranked]
    result = {"form": form, "nbest": nbest, **score(golds, outputs, ranked if nbest > 1 else None),
              "clauses_per_s": len(clauses) / seconds if seconds > 0 else 0.0}
    if bleu:
        result["bleu"] = corpus_bleu(golds, outputs)
    return result


def evaluate_lines(converter: Candidates, gold_lines: Iterable[str], form: str = "spaced",
                   nbest: int = 5, limit: int | None = None, seed: int = DEFAULT_SEED, *,
                   fraction: float = ABBREVIATED_FRACTION, bleu: bool = False) -> dict:
    """Evaluate ``converter`` on the clauses of gold text lines (at most ``limit`` clauses)."""
    return evaluate_clauses(converter, clauses_from_lines(gold_lines, limit), form, nbest=nbest,
                            seed=seed, fraction=fraction, bleu=bleu)


# ---- peer engines -------------------------------------------------------------------------------
class PeerError(RuntimeError):
    """A peer engine could not be started or stopped answering."""


def peers_installed(peers_dir: str | Path) -> bool:
    """Whether the harness in ``peers_dir`` is built (its install.sh creates build/)."""
    return (Path(peers_dir) / "build").is_dir()


def peer_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a running process in MiB (Linux /proc), None where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


class PeerEngine:
    """One engine of the peer harness: ``bin/<name>``, a line of spaced pinyin in, a line out.

    ``name`` may carry wrapper flags ("libime --extb"). The process is started and answers one
    warm-up line before the constructor returns (``startup_s``: data load, Rime's deploy). Use it
    as a context manager, or call :meth:`close`.
    """

    WARMUP = "ni hao"

    def __init__(self, peers_dir: str | Path, name: str):
        self.name = name
        command = shlex.split(name)
        command[0] = str(Path(peers_dir) / "bin" / command[0])
        start = time.perf_counter()
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, encoding="utf-8", bufsize=1)
        except OSError as error:
            raise PeerError(f"cannot start {name}: {error}") from None
        self.convert(self.WARMUP)
        self.startup_s = time.perf_counter() - start

    def convert(self, pinyin: str) -> str:
        """One round trip: the best conversion of one line."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(pinyin + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._stopped() from None
        return self._read()

    def convert_all(self, lines: Sequence[str]) -> list[str]:
        """All lines through the pipe at once; a thread writes so that neither pipe fills up."""
        stdin = self.process.stdin
        assert stdin is not None

        def feed() -> None:
            with contextlib.suppress(BrokenPipeError):  # the reader reports the engine's death
                stdin.writelines(line + "\n" for line in lines)
                stdin.flush()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        outputs = [self._read() for _ in lines]
        writer.join()
        return outputs

    def peak_rss_mb(self) -> float | None:
        return peer_rss_mb(self.process.pid)

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> PeerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise self._stopped()
        return line.rstrip("\n").split("\t")[0]  # with --nbest, the best comes first

    def _stopped(self) -> PeerError:
        return PeerError(f"{self.name} stopped answering (exit code {self.process.poll()})")


def add_peer_options(parser) -> None:
    """The --peers and --peers-dir options that every benchmark shares."""
    parser.add_argument("--peers", default="all",
                        help="'all' (every default engine, if installed), 'none', or names")
    parser.add_argument("--peers-dir", type=Path, default=Path("../shared/peers"),
                        help="the peer harness (point it at a copy installed elsewhere)")


def peer_names(value: str, peers_dir: str | Path) -> list[str]:
    """Parse a --peers option: "all" (the default set, where the harness is installed), "none",
    or comma-separated engine names with optional flags ("libime,libime --extb")."""
    if value == "none":
        return []
    if value == "all":
        return list(PEER_ENGINES) if peers_installed(peers_dir) else []
    names = [n.strip() for n in value.split(",") if n.strip()]
    missing = [n for n in names if not os.access(Path(peers_dir) / "bin" / n.split()[0], os.X_OK)]
    if missing:
        raise PeerError(f"no peer engine {', '.join(missing)} in {Path(peers_dir) / 'bin'} "
                        "(install the harness with its install.sh, or set --peers-dir)")
    return names



# ---- throughput on several cores ----------------------------------------------------------------
_worker: Candidates | None = None  # the converter of a convert_parallel worker process


def _start_worker(model: str | None, backend: str, barrier, timeout: float) -> None:
    """Load the model with one thread, then wait until every worker has loaded it."""
    global _worker
    from pinzi.converter import Converter

    _worker = Converter.from_pretrained(model, backend=backend, threads=1)
    _worker.candidates(PeerEngine.WARMUP, k=1)
    barrier.wait(timeout)  # so the clock starts with all workers ready


def _convert_chunk(lines: Sequence[str]) -> tuple[float, float, list[str], float]:
    import resource

    assert _worker is not None
    start = time.time()  # wall clock: comparable across the worker processes
    outputs = [best[0][0] if (best := _worker.candidates(line, k=1)) else "" for line in lines]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return start, time.time(), outputs, peak_kib / 1024


def convert_parallel(model: str | Path | None, lines: Sequence[str], workers: int = 2, *,
                     backend: str = "auto", chunk: int = 16,
                     timeout: float = 600.0) -> tuple[list[str], float, float]:
    """Convert ``lines`` in ``workers`` processes of one thread each, on ``backend``.

    Returns ``(outputs, seconds, peak_rss_mb)``: the seconds from the first worker starting
    its first chunk to the last finishing (model loading excluded) and the largest worker's
    peak resident memory. The processes are spawned, not forked: torch and fork do not mix.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    chunks = [lines[i:i + chunk] for i in range(0, len(lines), chunk)]
    workers = max(1, min(workers, len(chunks)))  # every worker must get work to pass the barrier
    barrier = context.Barrier(workers)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(None if model is None else str(model), backend,
                                       barrier, timeout)) as pool:
        parts = list(pool.map(_convert_chunk, chunks))
    if not parts:
        return [], 0.0, 0.0
    seconds = max(p[1] for p in parts) - min(p[0] for p in parts)
    return [out for p in parts for out in p[2]], seconds, max(p[3] for p in parts)
