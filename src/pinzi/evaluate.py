"""Evaluation of pinyin -> hanzi conversion: test clauses, input forms, metrics and the driver.

Used by ``pinzi eval``, ``pinzi finetune``'s report and the benchmarks in ``bench/`` (whose
plumbing for the peer IME engines lives in ``bench/peers.py``)::

    pinzi eval --model MODEL ../shared/data/sighan2005/pku_test.txt.gz --form all --limit 1000

>>> from pinzi.evaluate import evaluate_lines
>>> evaluate_lines(converter, ["我爱北京，天安门。"], form="continuous")  # doctest: +SKIP
{'form': 'continuous', 'clauses': 2, 'chars': 7, 'char_acc': 1.0, 'exact': 1.0, ...}

Test items are *clauses*, made from gold text the way the peers' ``score.py --split-clauses``
makes them: a line is split at punctuation and symbols, spaces are dropped, and only clauses made
entirely of CJK ideographs are kept (anything with digits or Latin letters is skipped). The input
is the clause's toneless pinyin from :func:`pinzi.readings.annotate` (or the pinyin a
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

import random
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import eq
from pathlib import Path
from typing import Protocol

from pinzi.errors import DataError, PinziError
from pinzi.io import format_of, open_text
from pinzi.pinyin import initial_of, normalize_syllable
from pinzi.readings import annotate
from pinzi.text import is_hanzi

FORMS = ("spaced", "continuous", "abbreviated")
DEFAULT_SEED = 1234
ABBREVIATED_FRACTION = 0.3
BLEU_HINT = "BLEU needs sacrebleu: pip install 'pinzi[bench]' (or pip install sacrebleu)"


class Candidates(Protocol):
    """What the driver needs of a converter (:class:`pinzi.converter.Converter` has it)."""

    def candidates(self, pinyin: str, k: int = 5, *,
                   partial: bool = True) -> Sequence[tuple]: ...  # (hanzi, score, ...)


@dataclass(frozen=True)
class Clause:
    """One test item: gold hanzi and one toneless syllable per character."""

    hanzi: str
    syllables: tuple[str, ...]


# ---- gold text -> clauses -----------------------------------------------------------------------
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
    A byte-order mark is dropped. Raises :class:`~pinzi.errors.DataError` for a missing or
    unreadable file.
    """
    path = Path(path)
    try:
        return _read_clauses(path, limit)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read test file {path}: {err}") from err


def _read_clauses(path: Path, limit: int | None) -> list[Clause]:
    with open_text(path) as lines:
        if format_of(path, ("tsv",)) is None:
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
    """The sacrebleu module, or a PinziError with the install hint."""
    try:
        import sacrebleu
    except ImportError as error:
        raise PinziError(BLEU_HINT) from error
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
    ranked = [[c[0] for c in converter.candidates(p, k=nbest, partial=False)] for p in inputs]
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
