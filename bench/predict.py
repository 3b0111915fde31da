"""Next-word prediction benchmark (issue 13): how often the next word of held-out text is
among the predictions made after the text before it.

Every all-hanzi clause of held-out text (:func:`pinzi.evaluate.split_clauses`: cut at
punctuation, clauses with digits or Latin letters left out) is cut into words by the model's
word list (``WordModel.split``). At up to ``--boundaries`` of its word boundaries after the
first word (a seeded sample), the clause's text before the boundary is the context and the next
word the target; a system hits at k when the target is exactly one of its first k predictions.
The systems:

* ``pinzi``           ``Converter.predict``, with the model's DecodingConfig weights;
* ``n-gram``          the character n-gram alone: its 5 likeliest next hanzi (a Predictor
                      without the word list), so it hits single-character targets only;
* ``word_weight 0``   pinzi's predictor without the word model's score;
* ``length_bonus 0``  pinzi's predictor without the bonus per character beyond the first.

``--grid`` ranks the candidates with every pair of length_bonus x word_weight on the validation
split and prints the best pairs: DecodingConfig.predict_length_bonus and predict_word_weight
are set from it. ``--learning`` measures what the user's own text adds: ``--limit``
consecutive clauses a set are typed in order, each learned once its boundaries are predicted
(as the web page learns every commit), and pinzi's hit rates are given without and with the
learned phrases (``Predictor.continuations``). Figures on stdout, progress on stderr.

    .venv/bin/python bench/predict.py                        # test split, 500 clauses a set
    .venv/bin/python bench/predict.py --grid                 # tuning, on the valid split
    .venv/bin/python bench/predict.py --learning --boundaries 0
    .venv/bin/python bench/predict.py --sets weibo,kdconv --limit 100 --boundaries 0

Relative --data-root is taken from the repository root, whatever the working directory.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pinzi.converter import MAX_LEARNED_CHARS, Converter
from pinzi.errors import PinziError
from pinzi.evaluate import DEFAULT_SEED, split_clauses
from pinzi.io import open_text
from pinzi.learning import LearnedWords
from pinzi.predict import Predictor

REPO = Path(__file__).resolve().parents[1]
# Held-out set -> (its folder under the data root, its file per split); layout of
# /work/shared/data, see its README.
SETS = {
    "weibo": ("weibo_hot", {"test": "test.txt.gz", "valid": "valid.txt.gz"}),
    "zhihu": ("zhihu_questions", {"test": "test.txt.gz", "valid": "valid.txt.gz"}),
    "crosswoz": ("crosswoz_dialog", {"test": "test.txt.gz", "valid": "val.txt.gz"}),
    "kdconv": ("kdconv_dialog", {"test": "test.txt.gz", "valid": "dev.txt.gz"}),
    "cctv": ("cctv_xwlb", {"test": "test.txt.gz", "valid": "valid.txt.gz"}),
}
DEFAULT_SETS = ("weibo", "zhihu", "crosswoz", "kdconv")
TOP = (1, 5)  # the hit rates reported: the target among the first k predictions
GRID_BONUSES = (0.0, 1.0, 2.0, 3.0, 4.0)
GRID_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
ALL = 1 << 30  # as many predictions as a predictor has candidates

Predict = Callable[[str, int], list[str]]  # (context, k) -> the k likeliest next words
Item = tuple[str, str]  # (context, target word)


# ---- what the two benchmarks share: options, the model, held-out clauses -----------------------
def add_common_options(parser: argparse.ArgumentParser, sets: Sequence[str],
                       limit: int) -> None:
    parser.add_argument("--model", help="model folder or hub id [default: the shipped model]")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"),
                        help="folder of the held-out sets (default: ../shared/data)")
    parser.add_argument("--sets", default=",".join(sets),
                        help=f"comma-separated, from: {', '.join(SETS)} [default: %(default)s]")
    parser.add_argument("--limit", type=int, default=limit,
                        help="clauses per set; 0 = all [default: %(default)s]")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the samples [default: %(default)s]")


def check_common_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Resolves --data-root and splits --sets, or exits with the parser's error."""
    args.data_root = (REPO / args.data_root).resolve()  # an absolute one stays
    args.sets = args.sets.split(",")
    if unknown := [s for s in args.sets if s not in SETS]:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    if args.limit < 0:
        parser.error("--limit must be 0 (all) or more")


def set_file(data_root: Path, name: str, split: str) -> Path:
    folder, files = SETS[name]
    return data_root / folder / files[split]


def load_converter(model: str | None) -> Converter:
    """The model to measure (one onnxruntime thread: the machine is shared), or exit with the
    reason it cannot be loaded."""
    try:
        return Converter.from_pretrained(model, threads=1)
    except (PinziError, OSError) as error:
        raise SystemExit(f"error: {error}") from None


def held_out_clauses(path: Path, limit: int, seed: int, *,
                     consecutive: bool = False) -> list[str]:
    """The all-hanzi clauses of a held-out file: ``limit`` of them (0: all) drawn at random
    with ``seed``, in the file's order; with ``consecutive``, a run of ``limit`` clauses from a
    random one on (a text as a user types it). Exits with a message when it cannot be read."""
    try:
        with open_text(path) as lines:
            clauses = [clause for line in lines for clause in split_clauses(line)]
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(f"error: cannot read {path}: {error}") from None
    if not limit or limit >= len(clauses):
        return clauses
    rng = random.Random(f"{seed}:{path.parent.name}/{path.name}")
    if consecutive:
        start = rng.randrange(len(clauses) - limit + 1)
        return clauses[start:start + limit]
    return [clauses[i] for i in sorted(rng.sample(range(len(clauses)), limit))]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- prediction -------------------------------------------------------------------------------
def boundaries(clause: str, split: Callable[[str], list[str]], per_clause: int,
               rng: random.Random) -> list[Item]:
    """``(context, target)`` at the boundaries after each word of ``clause`` but the last (as
    ``split`` cuts it into words): up to ``per_clause`` of them (0: all), a sample drawn with
    ``rng``, in the clause's order."""
    words = split(clause)
    ends = itertools.accumulate(map(len, words))
    items = [(clause[:end], word) for end, word in zip(ends, words[1:], strict=False)]
    if per_clause and len(items) > per_clause:
        items = [items[i] for i in sorted(rng.sample(range(len(items)), per_clause))]
    return items


def worded_predictor(converter: Converter, length_bonus: float | None = None,
                     word_weight: float | None = None) -> Predictor:
    """A Predictor over the converter's n-gram and word list, with its DecodingConfig's
    weights where none are given."""
    decoding = converter.decoding
    return Predictor(converter.ngram, converter.tokenizer.chars, converter.words,
                     length_bonus=decoding.predict_length_bonus if length_bonus is None
                     else length_bonus,
                     word_weight=decoding.predict_word_weight if word_weight is None
                     else word_weight)


def systems(converter: Converter) -> dict[str, Predict]:
    """The predictors measured, by name (see the module's docstring)."""

    def predictor(length_bonus: float | None = None,
                  word_weight: float | None = None) -> Predict:
        ranker = worded_predictor(converter, length_bonus, word_weight)
        return lambda context, k: [p.hanzi for p in ranker.predict(context, k)]

    # Without a word list a Predictor ranks the next hanzi by the n-gram's probability alone.
    chars_alone = Predictor(converter.ngram, converter.tokenizer.chars)
    return {
        "pinzi": lambda context, k: [p.hanzi for p in converter.predict(context, k)],
        "n-gram": lambda context, k: [p.hanzi for p in chars_alone.predict(context, k)],
        "word_weight 0": predictor(word_weight=0.0),
        "length_bonus 0": predictor(length_bonus=0.0),
    }


def hit_counts(predict: Predict, items: Sequence[Item]) -> dict[str, float]:
    """How many items have their target among the first k predictions (``top1``, ``top5``:
    each k of :data:`TOP`), and the ``seconds`` the predictions took."""
    hits = dict.fromkeys(TOP, 0)
    start = time.perf_counter()
    for context, target in items:
        found = predict(context, max(TOP))
        for k in TOP:
            hits[k] += target in found[:k]
    return {f"top{k}": hits[k] for k in TOP} | {"seconds": time.perf_counter() - start}


def grid_hit_counts(converter: Converter, items: Sequence[Item], bonuses: Sequence[float],
                    weights: Sequence[float]) -> dict[tuple[float, float], dict[str, int]]:
    """:func:`hit_counts` (without the time) of the predictor at every pair of length_bonus
    and word_weight.

    The candidates a Predictor ranks do not depend on its weights, so each context's are
    found and scored once by parts (the n-gram's chain, the characters past the first, the
    word model's score), and every pair adds the parts up as ``Predictor.score`` does: twenty
    pairs cost little more than one. (Equal totals, which are rare, may be ordered otherwise.)
    """
    chained = Predictor(converter.ngram, converter.tokenizer.chars, converter.words)
    pairs = list(itertools.product(bonuses, weights))
    hits = {pair: dict.fromkeys(TOP, 0) for pair in pairs}
    for context, target in items:
        found = chained.predict(context, ALL)  # every candidate, scored by its chain alone
        texts = [p.hanzi for p in found]
        chain = np.array([p.score for p in found])
        extra = np.array([len(text) - 1 for text in texts])
        word = np.array([converter.words.score(text) for text in texts])
        right = np.array([text == target for text in texts])
        for length_bonus, word_weight in pairs:
            total = chain + length_bonus * extra + word_weight * word
            top = right[np.argsort(-total, kind="stable")[:max(TOP)]]
            for k in TOP:
                hits[length_bonus, word_weight][k] += bool(top[:k].any())
    return {pair: {f"top{k}": counts[k] for k in TOP} for pair, counts in hits.items()}


def learning_hit_counts(converter: Converter, clauses: Sequence[str], per_clause: int,
                        rng: random.Random) -> dict[str, dict[str, int]]:
    """pinzi's hits (``top1``, ``top5``) over the boundaries of ``clauses`` typed in order,
    "off" without and "on" with the phrases learned from the clauses before (each clause is
    learned once its boundaries are predicted), and "boundaries"."""
    predictor = worded_predictor(converter)
    learned = LearnedWords()
    hits = {mode: dict.fromkeys(TOP, 0) for mode in ("off", "on")}
    total = 0
    for clause in clauses:
        for context, target in boundaries(clause, converter.words.split, per_clause, rng):
            total += 1
            for mode, phrases in (("off", None), ("on", learned.words)):
                found = [p.hanzi for p in predictor.predict(context, max(TOP), phrases)]
                for k in TOP:
                    hits[mode][k] += target in found[:k]
        if 1 < len(clause) <= MAX_LEARNED_CHARS:
            learned.record(clause)
    return {"boundaries": {"all": total}} | {
        mode: {f"top{k}": counts[k] for k in TOP} for mode, counts in hits.items()}


def held_out_items(converter: Converter, args: argparse.Namespace) -> dict[str, list[Item]]:
    """Per set, the (context, target) items of its sampled clauses."""
    items = {}
    for name in args.sets:
        clauses = held_out_clauses(set_file(args.data_root, name, args.split), args.limit,
                                   args.seed)
        rng = random.Random(f"{args.seed}:{name}")
        items[name] = [item for clause in clauses
                       for item in boundaries(clause, converter.words.split, args.boundaries,
                                              rng)]
        single = sum(len(target) == 1 for _, target in items[name])
        log(f"[{name}] {len(clauses)} clauses, {len(items[name])} boundaries "
            f"({single} single-character targets)")
    return items


# ---- the two reports --------------------------------------------------------------------------
def evaluate(converter: Converter, items: dict[str, list[Item]]) -> dict[str, dict]:
    """{set or "overall": {"boundaries", "single" (single-character targets), "systems":
    {system: hit counts}}}; overall pools every set's boundaries."""
    measured = systems(converter)
    report: dict[str, dict] = {}
    for name, set_items in items.items():
        entry = report[name] = {"boundaries": len(set_items),
                                "single": sum(len(t) == 1 for _, t in set_items),
                                "systems": {}}
        for system, predict in measured.items():
            entry["systems"][system] = counts = hit_counts(predict, set_items)
            log(f"[{name}] {system}: top-1 {share(counts['top1'], len(set_items))} "
                f"top-5 {share(counts['top5'], len(set_items))}")
    sets = list(report.values())
    report["overall"] = {key: sum(entry[key] for entry in sets)
                         for key in ("boundaries", "single")}
    report["overall"]["systems"] = {
        system: {key: sum(entry["systems"][system][key] for entry in sets)
                 for key in ("top1", "top5", "seconds")} for system in measured}
    return report


def share(count: float, total: int) -> str:
    """``count`` of ``total`` in percent."""
    return f"{100 * count / max(total, 1):.2f}"


def table(report: dict[str, dict]) -> str:
    lines = ["| set | boundaries | 1-char targets % | system | top-1 % | top-5 % | ms |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for name, entry in report.items():
        total = entry["boundaries"]
        for system, counts in entry["systems"].items():
            lines.append(f"| {name} | {total} | {share(entry['single'], total)} | {system} | "
                         f"{share(counts['top1'], total)} | {share(counts['top5'], total)} | "
                         f"{1000 * counts['seconds'] / max(total, 1):.1f} |")
    return "\n".join(lines)


def grid_table(counts: dict[tuple[float, float], dict[str, int]], total: int) -> str:
    """The top-1 and top-5 hit rates of every pair, and the best pairs by each."""
    bonuses = list(dict.fromkeys(bonus for bonus, _ in counts))
    weights = list(dict.fromkeys(weight for _, weight in counts))
    lines = [f"grid over {total} validation boundaries (top-1 % / top-5 %):",
             "| length_bonus | " + " | ".join(f"word_weight {w:g}" for w in weights) + " |",
             "|---:|" + "---:|" * len(weights)]
    for bonus in bonuses:
        cells = [f"{share(counts[bonus, w]['top1'], total)} / "
                 f"{share(counts[bonus, w]['top5'], total)}" for w in weights]
        lines.append(f"| {bonus:g} | " + " | ".join(cells) + " |")
    for key, other in (("top1", "top5"), ("top5", "top1")):
        best = max(counts, key=lambda pair: (counts[pair][key], counts[pair][other]))
        lines.append(f"best by {key}: length_bonus {best[0]:g} word_weight {best[1]:g} "
                     f"(top-1 {share(counts[best]['top1'], total)} %, "
                     f"top-5 {share(counts[best]['top5'], total)} %)")
    return "\n".join(lines)


def numbers(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (an option's values)."""
    try:
        return tuple(float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, DEFAULT_SETS, 500)
    parser.add_argument("--split", choices=["test", "valid"],
                        help="held-out split [default: test; valid with --grid]")
    parser.add_argument("--boundaries", type=int, default=2,
                        help="word boundaries sampled per clause; 0 = all [default: %(default)s]")
    parser.add_argument("--grid", action="store_true",
                        help="tune length_bonus x word_weight on the valid split")
    parser.add_argument("--learning", action="store_true",
                        help="pinzi without and with the phrases learned from the clauses "
                             "typed before (consecutive clauses, in order)")
    parser.add_argument("--bonuses", type=numbers, default=GRID_BONUSES,
                        help="the grid's length_bonus values [default: 0,1,2,3,4]")
    parser.add_argument("--weights", type=numbers, default=GRID_WEIGHTS,
                        help="the grid's word_weight values [default: 0,0.25,0.5,1]")
    args = parser.parse_args(argv)
    check_common_options(parser, args)
    if args.boundaries < 0:
        parser.error("--boundaries must be 0 (all) or more")
    if args.grid and args.split == "test":
        parser.error("--grid tunes on validation text: leave --split out (or give valid)")
    args.split = args.split or ("valid" if args.grid else "test")
    return args


def learning_report(converter: Converter, args: argparse.Namespace) -> dict:
    """Prints and returns {set or "overall": learning_hit_counts} (see --learning)."""
    report: dict[str, dict] = {}
    for name in args.sets:
        clauses = held_out_clauses(set_file(args.data_root, name, args.split), args.limit,
                                   args.seed, consecutive=True)
        log(f"[{name}] {len(clauses)} clauses typed in order")
        report[name] = learning_hit_counts(converter, clauses, args.boundaries,
                                           random.Random(f"{args.seed}:{name}"))
    report["overall"] = {key: {part: sum(entry[key][part] for entry in report.values())
                               for part in next(iter(report.values()))[key]}
                         for key in ("boundaries", "off", "on")}
    print(f"next-word prediction with learning, on the {args.split} split: {args.limit or 'all'}"
          f" consecutive clauses a set (seed {args.seed}), each learned after it is predicted")
    print("| set | boundaries | top-1 % off / on | top-5 % off / on |")
    print("|---|---:|---:|---:|")
    for name, entry in report.items():
        total = entry["boundaries"]["all"]
        print(f"| {name} | {total} | {share(entry['off']['top1'], total)} / "
              f"{share(entry['on']['top1'], total)} | {share(entry['off']['top5'], total)} / "
              f"{share(entry['on']['top5'], total)} |")
    return report


def main(argv: list[str] | None = None) -> dict:
    """Prints the report (or the grid) and returns it."""
    args = parse_args(argv)
    converter = load_converter(args.model)
    if converter.ngram is None or converter.words is None:
        raise SystemExit(f"error: the model {args.model or '(shipped)'} has no character "
                         "n-gram or no word list (ngram.npz, words.tsv.gz): prediction "
                         "needs both")
    if args.learning:
        return learning_report(converter, args)
    items = held_out_items(converter, args)
    print(f"next-word prediction on the {args.split} split: {args.limit or 'all'} clauses a "
          f"set, {args.boundaries or 'all'} boundaries a clause, seed {args.seed}; "
          f"pinzi's length_bonus {converter.decoding.predict_length_bonus:g}, "
          f"word_weight {converter.decoding.predict_word_weight:g}")
    if args.grid:
        pooled = [item for set_items in items.values() for item in set_items]
        counts = grid_hit_counts(converter, pooled, args.bonuses, args.weights)
        print(grid_table(counts, len(pooled)))
        return {"grid": counts, "boundaries": len(pooled)}
    report = evaluate(converter, items)
    print(table(report))
    return report


if __name__ == "__main__":
    main()
