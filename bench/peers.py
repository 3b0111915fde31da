"""Benchmark plumbing: the peer IME engines of ``../shared/peers`` and multi-process conversion.

Shared by ``bench/accuracy.py`` and ``bench/speed.py`` (scripts in this folder import it as
``peers``). Each engine of the harness is ``bin/<name>``: a line of spaced pinyin in, a line of
hanzi out (:class:`PeerEngine`). :func:`convert_parallel` runs a pinzi converter in several
one-thread processes, to measure throughput the way the engines are measured.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

# The engines of the peer harness that accuracy.py and speed.py run by default;
# pinyin2hanzi-hmm is left out because it converts about one sentence per second.
PEER_ENGINES = ("libime", "libpinyin", "sunpinyin", "rime", "googlepinyin", "pinyin2hanzi-dag")


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
_worker = None  # the converter of a convert_parallel worker process


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
