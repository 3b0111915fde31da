"""Benchmark of `pinzi data prepare` on the whole shared text corpus: speed and peak memory.

Run: ``.venv/bin/python bench/prepare_speed.py [--data /work/shared/data] [--workers N]``

Prepares every ``*.txt.gz`` under DATA except the ``.seg.`` ones, plus the ``text`` column of
every ``*.tsv.gz`` (files without one are skipped and counted), into a temporary folder, then
prints characters read per second, elapsed seconds, the size of the prepared dataset (pinzi's
memory-mapped format, see src/pinzi/corpus.py) and the peak resident memory of the parent and
its worker processes together (sampled every 0.2 s). Targets on the 2-core dev machine:
under 5 minutes and under 2 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import tempfile
import threading
import time
import warnings
from pathlib import Path

import psutil

from pinzi.data import prepare


class PeakRss:
    """Samples the summed RSS of this process and all its children in a background thread."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def corpus_files(data: Path) -> list[Path]:
    texts = [p for p in sorted(data.rglob("*.txt.gz")) if ".seg." not in p.name]
    return texts + sorted(data.rglob("*.tsv.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    args = parser.parse_args()
    files = corpus_files(args.data)
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB gzip")
    with tempfile.TemporaryDirectory() as out, PeakRss() as rss, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # files without a text column are expected here
        started, cpu_before = time.perf_counter(), cpu_seconds()
        stats = prepare([str(f) for f in files], out, num_workers=args.workers)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
        size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    chars = stats["chars"]["read"]
    print(f"read {stats['lines']['read']:,} lines / {chars:,} chars; kept "
          f"{stats['sentences']['kept']:,} sentences / {stats['chars']['kept']:,} chars; "
          f"workers {stats['run']['num_workers']}")
    print(f"dropped: {stats['dropped']}")
    print(f"output {size / 2**20:.1f} MiB (4 + 2 bytes a kept char, 8 a line, chars.tsv, json)")
    print(f"elapsed {elapsed:.1f} s, {chars / elapsed:,.0f} chars/s, "
          f"peak RSS (incl. children) {rss.peak / 2**30:.2f} GiB")
    # The machine may be shared: CPU time over cores is what an idle machine would take.
    print(f"CPU {cpu:.0f} s (parent + workers) = {cpu / (os.cpu_count() or 1):.0f} s on "
          f"{os.cpu_count()} idle cores; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
