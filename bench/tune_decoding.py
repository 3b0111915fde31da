"""Tune decoding on the *validation* split of a prepared dataset: n-gram weight and readings.

    python bench/tune_decoding.py --model src/pinzi/resources/model --data work/general \
        --weights 0.5,1.0,1.5,2.0 --readings 1,4 --forms spaced,continuous,abbreviated

Clauses are sampled evenly from the validation split (never a test set), so the settings chosen
here do not peek at the accuracy benchmark. Prints char accuracy, exact match and the mean time
per clause for every combination of form, weight and number of readings.
"""

from __future__ import annotations

import argparse
import itertools
import time

from datasets import load_from_disk

from pinzi import Converter
from pinzi.evaluate import FORMS, clauses_from_lines, evaluate_clauses


def numbers(kind):
    return lambda value: [kind(v) for v in value.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--data", required=True, help="a folder from `pinzi data prepare`")
    parser.add_argument("--weights", type=numbers(float), default=[0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--readings", type=numbers(int), default=[4],
                        help="readings (segmentations) of the input decoded per line")
    parser.add_argument("--forms", default="spaced")
    parser.add_argument("--limit", type=int, default=400, help="validation clauses")
    args = parser.parse_args()
    valid = load_from_disk(args.data)["valid"]
    lines = valid.select(range(0, len(valid), max(1, len(valid) // args.limit)))["text"]
    clauses = clauses_from_lines(lines, limit=args.limit)
    base = Converter.from_pretrained(args.model, backend=args.backend, threads=1)
    print(f"{len(clauses)} validation clauses, {base.scorer.name} backend")
    for form in args.forms.split(","):
        if form not in FORMS:
            parser.error(f"unknown form {form}")
        for weight, readings in itertools.product(args.weights, args.readings):
            converter = Converter(base.scorer, base.tokenizer, ngram=base.ngram,
                                  lm_weight=weight, readings=readings)
            start = time.perf_counter()
            result = evaluate_clauses(converter, clauses, form, nbest=1)
            per_clause = (time.perf_counter() - start) / len(clauses) * 1000
            print(f"{form:<12} weight {weight:<4} readings {readings}  "
                  f"char acc {100 * result['char_acc']:.2f}  exact {100 * result['exact']:.2f}  "
                  f"{per_clause:.1f} ms/clause", flush=True)


if __name__ == "__main__":
    main()
