"""Speed benchmark: pinzi against the peer IME engines, measured in the same run.

For pinzi and every peer engine (when the harness in ``--peers-dir`` is installed):

* load time: start until the first conversion ("ni hao") came back -- model loading for
  pinzi, data loading (and Rime's deploy) for a peer, which answers through its pipe;
* latency of one conversion of 4, 8, 16 and 32 syllables (p50 and p99 over ``--repeats``
  inputs cut from the test text, after ``--warmup`` conversions): pinzi in-process with one
  model thread, a peer as the round trip of one line through its pipe;
* throughput (clauses/s) over ``--clauses`` clauses with ``--workers`` processes (default 2,
  one per core): pinzi in worker processes of one model thread each, a peer as that many engine
  processes each fed its share of the file through one pipe;
* peak resident memory of one converting process.

    .venv/bin/python bench/speed.py                         # shipped model + all peers
    .venv/bin/python bench/speed.py --model runs/x/model --peers none --repeats 50

The machine is shared, so the figures are indicative; compare systems within one run. Prints a
table and writes it as JSON to ``--out`` (default work/bench/speed.json) and as markdown beside
it (.md). Relative --data, --peers-dir and --out are taken from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from peers import PeerEngine, PeerError, add_peer_options, convert_parallel, peer_names

from pinzi.evaluate import (
    FORMS,
    Clause,
    pinyin_input,
    read_clauses,
    score,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = "pinzi"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder or hub id [default: the shipped model]")
    parser.add_argument("--no-model", action="store_true", help="measure the peers only")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cctv_xwlb/test.txt.gz"),
                        help="test text the inputs are cut from (any pinzi eval test file)")
    parser.add_argument("--lengths", default="4,8,16,32", help="syllables per latency input")
    parser.add_argument("--repeats", type=int, default=100, help="latency inputs per length")
    parser.add_argument("--warmup", type=int, default=10, help="untimed conversions first")
    parser.add_argument("--clauses", type=int, default=1000, help="clauses for throughput")
    parser.add_argument("--workers", type=int, default=2, help="processes for throughput")
    parser.add_argument("--backends", default="auto",
                        help="pinzi backends to compare: auto (the model folder as it is: "
                             "onnxruntime for the shipped model), torch, onnx, int8 (these two "
                             "exported on the fly)")
    parser.add_argument("--form", default="spaced", choices=FORMS,
                        help="pinzi's input form (the peers always get spaced pinyin)")
    add_peer_options(parser)
    parser.add_argument("--out", type=Path, default=Path("work/bench/speed.json"),
                        help="JSON results; the markdown table goes beside it")
    args = parser.parse_args(argv)
    for name in ("data", "peers_dir", "out"):
        setattr(args, name, (REPO / getattr(args, name)).resolve())  # absolute ones stay
    args.lengths = [int(n) for n in args.lengths.split(",")]
    if min(args.lengths) < 1 or args.repeats < 1 or args.workers < 1 or args.clauses < 1:
        parser.error("--lengths, --repeats, --workers and --clauses must be positive")
    try:
        args.peers = peer_names(args.peers, args.peers_dir)
    except PeerError as error:
        parser.error(str(error))
    return args


def fixed_length(clauses: list[Clause], length: int, count: int) -> list[Clause]:
    """``count`` inputs of exactly ``length`` syllables, cut one after another from the text
    of all clauses joined (wrapping around), so that long inputs exist whatever the clauses."""
    hanzi = "".join(c.hanzi for c in clauses)
    syllables = [s for c in clauses for s in c.syllables]
    span = len(hanzi) - length + 1
    if span < 1:
        raise SystemExit(f"the test text has fewer than {length} characters; use more --clauses")
    offsets = [(i * length) % span for i in range(count)]
    return [Clause(hanzi[o:o + length], tuple(syllables[o:o + length])) for o in offsets]


def latency(convert: Callable[[str], object], inputs: dict[int, list[str]],
            warmup: list[str]) -> dict[str, dict[str, float]]:
    """p50 / p99 / mean milliseconds of one conversion, per input length."""
    for line in warmup:
        convert(line)
    result = {}
    for length, lines in inputs.items():
        times = []
        for line in lines:
            start = time.perf_counter()
            convert(line)
            times.append(1000 * (time.perf_counter() - start))
        p50, p99 = np.percentile(times, [50, 99])
        result[str(length)] = {"p50": float(p50), "p99": float(p99), "mean": float(np.mean(times))}
    return result


def measure_model(args: argparse.Namespace, clauses: list[Clause],
                  by_length: dict[int, list[Clause]], folder: str | None, backend: str) -> dict:
    """One pinzi backend; ``folder`` holds the model (an exported one for onnx)."""
    from pinzi.converter import Converter
    from pinzi.errors import PinziError

    start = time.perf_counter()
    try:
        converter = Converter.from_pretrained(folder, backend=backend, threads=1)
    except (PinziError, OSError) as error:
        raise SystemExit(f"error: {error} (pick one with --model, or run --no-model)") from None
    converter.convert(PeerEngine.WARMUP)
    load_s = time.perf_counter() - start
    inputs = {n: [pinyin_input(c, args.form) for c in cs] for n, cs in by_length.items()}
    warmup = [pinyin_input(c, args.form) for c in clauses[: args.warmup]]
    lat = latency(converter.convert, inputs, warmup)
    lines = [pinyin_input(c, args.form) for c in clauses]
    outputs, seconds, worker_rss = convert_parallel(folder, lines, args.workers, backend=backend)
    return {"load_s": load_s, "latency_ms": lat, "form": args.form,
            "char_acc": score([c.hanzi for c in clauses], outputs)["char_acc"],
            "clauses_per_s": len(lines) / seconds if seconds > 0 else 0.0,
            # the workers load only the model; this process also holds the test text and pypinyin
            "peak_rss_mb": worker_rss,
            "bench_process_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_peer(args: argparse.Namespace, name: str, clauses: list[Clause],
                 by_length: dict[int, list[Clause]]) -> dict:
    inputs = {n: [pinyin_input(c, "spaced") for c in cs] for n, cs in by_length.items()}
    warmup = [pinyin_input(c, "spaced") for c in clauses[: args.warmup]]
    with PeerEngine(args.peers_dir, name) as engine:
        lat = latency(engine.convert, inputs, warmup)
        result = {"load_s": engine.startup_s, "latency_ms": lat, "form": "spaced",
                  "peak_rss_mb": engine.peak_rss_mb()}
    lines = [pinyin_input(c, "spaced") for c in clauses]
    shares = [lines[i::args.workers] for i in range(args.workers)]
    engines = [PeerEngine(args.peers_dir, name) for _ in shares]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:  # the engines run; the threads wait on pipes
            start = time.perf_counter()
            parts = list(pool.map(PeerEngine.convert_all, engines, shares))
            seconds = time.perf_counter() - start
    finally:
        for engine in engines:
            engine.close()
    outputs = [""] * len(lines)
    for i, part in enumerate(parts):
        outputs[i::args.workers] = part
    result["clauses_per_s"] = len(lines) / seconds if seconds > 0 else 0.0
    result["char_acc"] = score([c.hanzi for c in clauses], outputs)["char_acc"]
    return result


def table(systems: dict, lengths: list[int], workers: int) -> str:
    header = ["system", "load s", "peak RSS MiB",
              *(f"{n} syl p50 / p99 ms" for n in lengths), f"clauses/s ({workers} proc)",
              "char acc"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, r in systems.items():
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else "?"
        cells = [name, f"{r['load_s']:.2f}", rss,
                 *(f"{r['latency_ms'][str(n)]['p50']:.2f} / {r['latency_ms'][str(n)]['p99']:.2f}"
                   for n in lengths), f"{r['clauses_per_s']:.0f}",
                 f"{100 * r['char_acc']:.2f}" if "char_acc" in r else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_before = os.getloadavg()  # the machine is shared: record how busy it was
    clauses = read_clauses(args.data, args.clauses)
    by_length = {n: fixed_length(clauses, n, args.repeats) for n in args.lengths}
    systems = {}
    if not args.no_model:
        with tempfile.TemporaryDirectory() as exported:
            for backend in args.backends.split(","):
                folder = args.model
                if backend in ("onnx", "int8"):  # export the same model for onnxruntime
                    from pinzi.export import export_onnx

                    folder = str(Path(exported) / backend)
                    export_onnx(args.model, folder, quantize="int8" if backend == "int8" else None)
                systems[f"{MODEL} ({backend})"] = measure_model(
                    args, clauses, by_length, folder, "onnx" if backend == "int8" else backend)
    for name in args.peers:
        systems[name] = measure_peer(args, name, clauses, by_length)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = {"settings": settings, "clauses": len(clauses), "cpus": os.cpu_count(),
              "load_average": {"start": load_before, "end": os.getloadavg()},
              "systems": systems}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    markdown = table(systems, args.lengths, args.workers)
    args.out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return report


if __name__ == "__main__":
    main()
