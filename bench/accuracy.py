"""Accuracy benchmark: pinzi (and the peer IME engines) on the held-out test sets.

For every test set it takes the first ``--limit`` all-hanzi clauses (see pinzi.evaluate) and
reports character accuracy, clause exact match and P@5 of pinzi for the three input forms
(spaced, continuous, abbreviated). When the peer harness is installed (``PEERS_DIR/build``
exists; ``../shared/peers/install.sh`` builds it) the peer engines convert the same spaced pinyin
through their line-in/line-out pipes, one process per engine and set, and get a row of their own
(spaced input only; they print one conversion, so no P@5).

    .venv/bin/python bench/accuracy.py                          # pinzi + all peers, 1000/set
    .venv/bin/python bench/accuracy.py --model runs/x/model --limit 0 --peers none
    .venv/bin/python bench/accuracy.py --no-model --peers libime,sunpinyin --sets pku,msr

Relative --data-root, --peers-dir and --out are taken from the repository root, whatever the
working directory (--model, like everywhere, from the working directory). Writes the
markdown table to ``--out`` (default work/bench/accuracy.md) and the full results next to it as
JSON (same name, .json); prints the table too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from peers import PeerEngine, PeerError, add_peer_options, peer_names

from pinzi.evaluate import (
    DEFAULT_SEED,
    FORMS,
    evaluate_clauses,
    pinyin_input,
    read_clauses,
    score,
)

REPO = Path(__file__).resolve().parents[1]
# Test set name -> file under the data root (layout of /work/shared/data, see its README).
SETS = {
    "pku": "sighan2005/pku_test.txt.gz",
    "msr": "sighan2005/msr_test.txt.gz",
    "cctv": "cctv_xwlb/test.txt.gz",
    "cmrc_dev": "cmrc2018_wiki/dev.txt.gz",
    "cmrc_trial": "cmrc2018_wiki/trial.txt.gz",
    "crosswoz": "crosswoz_dialog/test.txt.gz",
    "kdconv": "kdconv_dialog/test.txt.gz",
    "chnsenticorp": "chnsenticorp_htl/test.tsv.gz",
    "thu2020": "thu_ime_homework/test2020.tsv.gz",
    "thu2022": "thu_ime_homework/test2022.tsv.gz",
    "weibo": "weibo_hot/test.txt.gz",
    "zhihu": "zhihu_questions/test.txt.gz",
}
MODEL = "pinzi"  # the system name of the model in the tables


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder or hub id [default: the shipped model]")
    parser.add_argument("--no-model", action="store_true", help="run the peers only")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"),
                        help="folder of the test sets (default: ../shared/data)")
    parser.add_argument("--sets", default="all", help=f"comma-separated, from: {', '.join(SETS)}")
    parser.add_argument("--forms", default=",".join(FORMS), help="input forms for pinzi")
    parser.add_argument("--limit", type=int, default=1000, help="clauses per set; 0 = all")
    parser.add_argument("--nbest", type=int, default=5, help="k of P@k")
    parser.add_argument("--lm-weight", type=float, default=None,
                        help="weight of the n-gram model in decoding [default: the converter's]")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="abbreviation seed")
    add_peer_options(parser)
    parser.add_argument("--out", type=Path, default=Path("work/bench/accuracy.md"),
                        help="markdown table; the JSON goes beside it")
    args = parser.parse_args(argv)
    for name in ("data_root", "peers_dir", "out"):
        setattr(args, name, (REPO / getattr(args, name)).resolve())  # absolute ones stay
    args.sets = list(SETS) if args.sets == "all" else args.sets.split(",")
    args.forms = args.forms.split(",")
    if unknown := [s for s in args.sets if s not in SETS]:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    if unknown := [f for f in args.forms if f not in FORMS]:
        parser.error(f"unknown form(s) {', '.join(unknown)}; choose from {', '.join(FORMS)}")
    try:
        args.peers = peer_names(args.peers, args.peers_dir)
    except PeerError as error:
        parser.error(str(error))
    return args


def run(args: argparse.Namespace) -> dict:
    """Results as {set: {"file", "clauses", "chars", "systems": {system: {form: metrics}}}}."""
    converter = None
    if not args.no_model:
        import torch

        from pinzi.converter import Converter
        from pinzi.decoding_config import DecodingConfig
        from pinzi.errors import PinziError
        from pinzi.hub import resolve_model

        torch.set_num_threads(1)  # the machine is shared; one core keeps runs comparable
        try:
            converter = Converter.from_pretrained(args.model)
            if args.lm_weight is not None:
                decoding = DecodingConfig.load(resolve_model(args.model))
                converter.decoding = dataclasses.replace(decoding, lm_weight=args.lm_weight)
        except (PinziError, OSError) as error:
            raise SystemExit(f"error: {error} (pick one with --model, or run --no-model)"
                             ) from None
    results: dict = {}
    for name in args.sets:
        path = args.data_root / SETS[name]
        clauses = read_clauses(path, args.limit or None)
        golds = [c.hanzi for c in clauses]
        entry = results[name] = {"file": str(path), "clauses": len(clauses),
                                 "chars": sum(map(len, golds)), "systems": {}}
        if converter is not None:
            for form in args.forms:
                metrics = evaluate_clauses(converter, clauses, form, nbest=args.nbest,
                                           seed=args.seed)
                entry["systems"].setdefault(MODEL, {})[form] = metrics
                log(name, f"{MODEL}/{form}", metrics)
        spaced = [pinyin_input(c, "spaced") for c in clauses]
        for peer in args.peers:
            with PeerEngine(args.peers_dir, peer) as engine:
                start = time.perf_counter()  # after start-up, as for the model
                outputs = engine.convert_all(spaced)
                seconds = time.perf_counter() - start
            metrics = {"form": "spaced", **score(golds, outputs),
                       "clauses_per_s": len(spaced) / seconds if seconds > 0 else 0.0,
                       "startup_s": engine.startup_s}
            entry["systems"].setdefault(peer, {})["spaced"] = metrics
            log(name, peer, metrics)
    return results


def log(name: str, system: str, metrics: dict) -> None:
    print(f"[{name}] {system}: char_acc {metrics['char_acc']:.4f} exact {metrics['exact']:.4f} "
          f"({metrics['clauses']} clauses, {metrics['clauses_per_s']:.0f}/s)",
          file=sys.stderr, flush=True)


def markdown(results: dict, nbest: int) -> str:
    """One row per set and system; per input form: char acc / exact match / P@k (percent)."""
    systems = list(dict.fromkeys(s for entry in results.values() for s in entry["systems"]))
    forms = [f for f in FORMS
             if any(f in by_form for e in results.values() for by_form in e["systems"].values())]
    header = ["set", "clauses", "chars", "system"]
    for form in forms:
        header += [f"{form} acc", f"{form} EM", f"{form} P@{nbest}"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---|" + "---:|" * 3 * len(forms)]
    for name, entry in results.items():
        for system in systems:
            if system in entry["systems"]:
                lines.append(_row([name, entry["clauses"], entry["chars"], system],
                                  entry["systems"][system], forms))
    if len(results) > 1:  # macro average over the sets each system ran on
        for system in systems:
            runs = [e["systems"][system] for e in results.values() if system in e["systems"]]
            mean = {form: {key: sum(r[form][key] for r in runs) / len(runs)
                           for key in ("char_acc", "exact", "p_at_k") if key in runs[0][form]}
                    for form in forms if form in runs[0]}
            lines.append(_row(["**mean**", "", "", system], mean, forms))
    return "\n".join(lines) + "\n"


def _row(cells: list, by_form: dict, forms: list[str]) -> str:
    for form in forms:
        metrics = by_form.get(form, {})
        cells += [f"{100 * metrics[k]:.2f}" if k in metrics else "–"
                  for k in ("char_acc", "exact", "p_at_k")]
    return "| " + " | ".join(map(str, cells)) + " |"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    table = markdown(results, args.nbest)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    args.out.with_suffix(".json").write_text(
        json.dumps({"settings": settings, "results": results}, ensure_ascii=False, indent=2,
                   default=str), encoding="utf-8")
    print(table)
    return results


if __name__ == "__main__":
    main()
