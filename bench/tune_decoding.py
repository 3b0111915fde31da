"""Tune decoding on *validation* text: n-gram weight, readings, reading-cost gap, lexicon, words.

    python bench/tune_decoding.py --data work/general --weights 0.5,1.0,1.5,2.0 \
        --readings 1,4 --forms spaced,continuous,abbreviated
    python bench/tune_decoding.py --forms continuous --gaps 0,10,11,1000 --limit 1000 --data \
        ../shared/data/{cctv_xwlb/valid,kdconv_dialog/dev,crosswoz_dialog/val}.txt.gz
    python bench/tune_decoding.py --word-weights 0,0.3,0.6 --word-nbest 8,16 --data ...

``--data``: a folder from ``pinzi data prepare`` (clauses sampled evenly from its validation
split), or dev files as ``pinzi eval`` reads them (the first ``--limit`` clauses of each). Never
a test set, so the settings chosen here do not peek at the accuracy benchmark. Prints char
accuracy, exact match, the mean model rows (readings decoded) and time per clause for every
combination of form, weight, readings, gap and word weight / n-best (with the model folder's
word list, words.tsv.gz), per file and over all of them. An option left out takes the model's
own setting (its decoding_config.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

from pinzi import Converter
from pinzi.evaluate import FORMS, clauses_from_lines, evaluate_clauses, read_clauses
from pinzi.lexicon import Lexicon

LEXICONS = {"attested": Lexicon.attested, "all": Lexicon.default}
# option -> (DecodingConfig field, type, help): each takes comma-separated values to try.
GRID = {
    "weights": ("lm_weight", float, "n-gram weights"),
    "readings": ("readings", int, "readings (segmentations) of the input decoded at most"),
    "gaps": ("max_cost_gap", float, "decode readings costing at most this above the best"),
    "reading-priors": ("reading_prior", float, "weights of log P(reading | character)"),
    "word-weights": ("word_weight", float, "weights of the word model's score (0: chars alone)"),
    "word-nbest": ("word_nbest", int, "conversions per reading the word model ranks again"),
    "word-fitting": ("word_fitting", int, "fitting words kept per start position (0: none)"),
}


def numbers(kind):
    return lambda value: [kind(v) for v in value.split(",")]


def load_sets(paths: list[str], limit: int) -> dict[str, list]:
    if len(paths) == 1 and Path(paths[0]).is_dir():
        from pinzi.corpus import load_prepared

        valid = load_prepared(paths[0])["valid"].texts()
        lines = valid[:: max(1, len(valid) // limit)]
        return {paths[0]: clauses_from_lines(lines, limit=limit)}
    return {path: read_clauses(path, limit=limit) for path in paths}


class RowCounter:
    """Wraps a scorer to count the model rows (one per reading decoded)."""

    def __init__(self, scorer):
        self.scorer, self.name, self.rows = scorer, scorer.name, 0

    def __call__(self, *arrays):
        self.rows += len(arrays[0])
        return self.scorer(*arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--data", required=True, nargs="+",
                        help="a prepared folder, or validation text files")
    for option, (_, kind, text) in GRID.items():
        parser.add_argument(f"--{option}", type=numbers(kind), help=f"{text} [the model's]")
    parser.add_argument("--lexicons", default="attested",
                        help="candidates: attested (readings some word uses, the default) or all")
    parser.add_argument("--forms", default="spaced")
    parser.add_argument("--limit", type=int, default=400, help="clauses per file (or folder)")
    args = parser.parse_args()
    sets = load_sets(args.data, args.limit)
    base = Converter.from_pretrained(args.model, backend=args.backend, threads=1)
    grid = {field: getattr(args, option.replace("-", "_")) or [getattr(base.decoding, field)]
            for option, (field, _, _) in GRID.items()}  # unset: the model's own setting
    counter = RowCounter(base.scorer)
    print(f"{sum(map(len, sets.values()))} validation clauses, {base.scorer.name} backend")
    for form in args.forms.split(","):
        if form not in FORMS:
            parser.error(f"unknown form {form}")
        for lexicon, *values in itertools.product(args.lexicons.split(","), *grid.values()):
            if lexicon not in LEXICONS:
                parser.error(f"unknown lexicon {lexicon}")
            settings = dict(zip(grid, values, strict=True))
            decoding = dataclasses.replace(base.decoding, **settings)
            converter = Converter(counter, base.tokenizer, LEXICONS[lexicon](), ngram=base.ngram,
                                  decoding=decoding, words=base.words)
            correct = chars = clauses = 0
            counter.rows = 0
            start = time.perf_counter()
            for path, set_clauses in sets.items():
                result = evaluate_clauses(converter, set_clauses, form, nbest=1)
                correct += result["char_acc"] * result["chars"]
                chars += result["chars"]
                clauses += result["clauses"]
                if len(sets) > 1:
                    name = "/".join(Path(path).parts[-2:])
                    print(f"  {name:<30} char acc {100 * result['char_acc']:.2f}  "
                          f"exact {100 * result['exact']:.2f}")
            per_clause = (time.perf_counter() - start) / clauses * 1000
            shown = " ".join(f"{option} {value:<4}" for option, value
                             in zip(GRID, values, strict=True))
            print(f"{form:<12} {lexicon:<8} {shown} "
                  f"char acc {100 * correct / chars:.2f}  rows {counter.rows / clauses:.2f}  "
                  f"{per_clause:.1f} ms/clause", flush=True)


if __name__ == "__main__":
    main()
