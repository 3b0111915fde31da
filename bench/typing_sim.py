"""Simulated typing benchmark (issue 13): a user types held-out clauses through pages of
candidates, with and without learning from the picks.

For every all-hanzi clause (a run of ``--limit`` consecutive ones per set, from a seeded start:
a text as a user types it), the user types its whole toneless pinyin without separators
(:func:`pinzi.readings.annotate`) and reads pages of 9 candidates
(``Converter.candidates(buffer, k=9, offset=...)``, the clause's text committed so far as
context):

* a candidate that is the rest of the clause is picked, and the clause is done;
* else the one that covers the most of the buffer among those whose hanzi start the rest of
  the clause and that cover exactly those characters' pinyin is picked, and the rest of the
  buffer is converted anew;
* else the next page (up to 5); after the fifth the clause counts as a failure and its rest is
  typed character by character (one selection per character).

Every pick is a selection, every turn to a next page a page turn. With learning on, each pick
is learned as it is made (``Converter.learn``), and the clause as a whole when it took more
than one pick: what the web page does. A fresh store per set, the clauses in order, so that
learning builds up over the text. Reported per set and over all: selections per clause, the
share of clauses whose first candidate was the whole clause, page turns per clause, failures,
and the time per clause. Figures on stdout, progress and failed clauses on stderr.

    .venv/bin/python bench/typing_sim.py                      # 200 clauses a set, test split
    .venv/bin/python bench/typing_sim.py --sets kdconv --limit 50 --learning on

Relative --data-root is taken from the repository root, whatever the working directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass

from predict import (
    DEFAULT_SETS,
    add_common_options,
    check_common_options,
    held_out_clauses,
    load_converter,
    log,
    set_file,
)

from pinzi.converter import Candidate, Converter
from pinzi.errors import PinziError
from pinzi.learning import LearnedWords
from pinzi.readings import annotate

PAGE = 9  # candidates a page shows (the web page's digits 1-9)
PAGES = 5  # pages a user reads before typing the rest character by character
SEPARATORS = " '’"
SETS = (*DEFAULT_SETS, "cctv")


@dataclass
class Tally:
    """What typing some clauses took; tallies add up."""

    clauses: int = 0
    selections: int = 0
    first_right: int = 0  # clauses whose first candidate was the whole clause
    page_turns: int = 0
    failures: int = 0  # clauses no page of candidates could finish
    refused: int = 0  # picks Converter.learn refused (with learning on)
    seconds: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def choose(shown: Sequence[Candidate], rest: str, syllables: Sequence[str],
           buffer: str) -> Candidate | None:
    """The candidate the user picks from a page: the rest of the clause (``rest``, read as
    ``syllables``, typed as ``buffer``) if it is there, else the one covering the most of the
    buffer whose hanzi start the rest and cover exactly their own pinyin; None when none fits."""
    for candidate in shown:
        if candidate.hanzi == rest and candidate.consumed == len(buffer):
            return candidate
    fitting = [c for c in shown if 0 < len(c.hanzi) < len(rest) and rest.startswith(c.hanzi)
               and _letters(buffer[:c.consumed]) == "".join(syllables[:len(c.hanzi)])]
    return max(fitting, key=lambda c: c.consumed, default=None)  # the first of the longest


def _letters(typed: str) -> str:
    return "".join(ch for ch in typed if ch not in SEPARATORS)


def type_clause(converter: Converter, clause: str, syllables: Sequence[str], *,
                learn: bool) -> Tally:
    """Types ``clause`` (one syllable per character) as the module's docstring says."""
    tally = Tally(clauses=1)
    start = time.perf_counter()
    picks: list[tuple[str, str]] = []  # (pinyin, hanzi) of each pick
    done = 0  # characters of the clause committed
    while done < len(clause):
        buffer = "".join(syllables[done:])
        chosen = None
        for page in range(PAGES):
            shown = converter.candidates(buffer, k=PAGE, offset=page * PAGE,
                                         context=clause[:done])
            if not shown:  # no next page to turn to
                break
            if not picks and page == 0:
                tally.first_right = int(shown[0].hanzi == clause
                                        and shown[0].consumed == len(buffer))
            tally.page_turns += page > 0
            chosen = choose(shown, clause[done:], syllables[done:], buffer)
            if chosen is not None:
                break
        if chosen is None:
            tally.failures = 1
            log(f"  failed: {clause[:done]}|{clause[done:]} ({buffer})")
            new = list(zip(syllables[done:], clause[done:], strict=True))
        else:
            new = [(buffer[:chosen.consumed], chosen.hanzi)]
        for pinyin, hanzi in new:
            picks.append((pinyin, hanzi))
            tally.selections += 1
            done += len(hanzi)
            if learn:
                tally.refused += not _learned(converter, pinyin, hanzi)
    if learn and len(picks) > 1:
        tally.refused += not _learned(converter, "".join(p for p, _ in picks), clause)
    tally.seconds = time.perf_counter() - start
    return tally


def _learned(converter: Converter, pinyin: str, hanzi: str) -> bool:
    try:
        converter.learn(pinyin, hanzi)
    except PinziError as error:
        log(f"  not learned: {error}")
        return False
    return True


def type_text(converter: Converter, clauses: Sequence[str], *, learn: bool) -> Tally:
    """Types the clauses in order (those whose pinyin pypinyin cannot give are left out);
    with ``learn``, into a fresh store of learned words."""
    converter.learned = LearnedWords()  # in memory; empty either way
    total = Tally()
    for clause in clauses:
        syllables = annotate(clause)
        if all(syllables):
            total += type_clause(converter, clause, syllables, learn=learn)
    return total


def row(name: str, learning: str, tally: Tally) -> str:
    n = max(tally.clauses, 1)
    return (f"| {name} | {learning} | {tally.clauses} | {tally.selections / n:.2f} | "
            f"{100 * tally.first_right / n:.1f} | {tally.page_turns / n:.2f} | "
            f"{tally.failures} | {tally.refused} | {1000 * tally.seconds / n:.0f} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, SETS, 200)
    parser.add_argument("--split", choices=["test", "valid"], default="test",
                        help="held-out split [default: %(default)s]")
    parser.add_argument("--learning", choices=["off", "on", "both"], default="both",
                        help="type with learning off, on, or both in turn [default: both]")
    parser.add_argument("--whole-margin", type=float, default=None,
                        help="DecodingConfig.whole_margin to type with (tuning it on valid) "
                             "[default: the model's]")
    args = parser.parse_args(argv)
    check_common_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, Tally]]:
    """Prints the table and returns {set or "overall": {"off"/"on": tally}}."""
    args = parse_args(argv)
    converter = load_converter(args.model)
    if args.whole_margin is not None:
        converter.decoding = dataclasses.replace(converter.decoding,
                                                 whole_margin=args.whole_margin)
    modes = ["off", "on"] if args.learning == "both" else [args.learning]
    report: dict[str, dict[str, Tally]] = {}
    for name in args.sets:
        clauses = held_out_clauses(set_file(args.data_root, name, args.split), args.limit,
                                   args.seed, consecutive=True)
        for mode in modes:
            log(f"[{name}] {len(clauses)} clauses, learning {mode}")
            report.setdefault(name, {})[mode] = type_text(converter, clauses,
                                                          learn=mode == "on")
    report["overall"] = {mode: sum((by_mode[mode] for by_mode in report.values()), Tally())
                         for mode in modes}
    print(f"simulated typing on the {args.split} split: {args.limit or 'all'} consecutive "
          f"clauses a set (seed {args.seed}), pages of {PAGE}, at most {PAGES}, whole_margin "
          f"{converter.decoding.whole_margin:g}")
    print("| set | learning | clauses | selections/clause | first right % | page turns/clause "
          "| failures | not learned | ms/clause |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, by_mode in report.items():
        for mode, tally in by_mode.items():
            print(row(name, mode, tally))
    return report


if __name__ == "__main__":
    main()
