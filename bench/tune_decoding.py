"""Tune the n-gram weight of decoding on the *validation* split of a prepared dataset.

    python bench/tune_decoding.py --model src/pinzi/resources/model --data work/general \
        --weights 0.5,1.0,1.5,2.0 --forms spaced,continuous,abbreviated --limit 400

Clauses are sampled evenly from the validation split (never a test set), so the weight chosen
here does not peek at the accuracy benchmark. Prints char accuracy and exact match per weight.
"""

from __future__ import annotations

import argparse
import time

import torch
from datasets import load_from_disk

from pinzi import Converter
from pinzi.evaluate import FORMS, clauses_from_lines, evaluate_clauses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--data", required=True, help="a folder from `pinzi data prepare`")
    parser.add_argument("--weights", default="0.5,1.0,1.5,2.0")
    parser.add_argument("--forms", default="spaced")
    parser.add_argument("--limit", type=int, default=400, help="validation clauses")
    args = parser.parse_args()
    torch.set_num_threads(1)
    valid = load_from_disk(args.data)["valid"]
    lines = valid.select(range(0, len(valid), max(1, len(valid) // args.limit)))["text"]
    clauses = clauses_from_lines(lines, limit=args.limit)
    base = Converter.from_pretrained(args.model)
    print(f"{len(clauses)} validation clauses")
    for form in args.forms.split(","):
        if form not in FORMS:
            parser.error(f"unknown form {form}")
        for weight in (float(w) for w in args.weights.split(",")):
            converter = Converter(base.model, base.tokenizer, ngram=base.ngram, lm_weight=weight)
            start = time.time()
            result = evaluate_clauses(converter, clauses, form, nbest=1)
            print(f"{form:<12} weight {weight:<5} char acc {100 * result['char_acc']:.2f}  "
                  f"exact {100 * result['exact']:.2f}  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
