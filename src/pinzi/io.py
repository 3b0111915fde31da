"""Reading the files pinzi is given and writing its own: formats by name, gzip, UTF-8, the
byte-order mark, labelled tables, atomic writes.

One place for the rules that every reader shares:

* a file's format comes from its name, ``.gz`` aside (:func:`format_of`);
* gzip is recognised by its name (text readers) or its magic bytes (the corpus pipeline);
* a UTF-8 byte-order mark at the start of a file is dropped, whatever reads it;
* a labelled table (:func:`read_labelled`) is TSV, split on TAB with no quoting (the format of
  ``shared/data``), or CSV with the csv module's quoting, and has a header line naming its
  columns. Its problems are :class:`~pinzi.errors.DataError` that name the file and line;
* a file or folder pinzi writes appears whole or not at all: it is written beside its place
  under a temporary name, then renamed over it (:func:`write_atomic`, :func:`write_dir_atomic`).
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pinzi.errors import DataError

BOM = "\ufeff"
TABLE_FORMATS = ("tsv", "csv")


def format_of(path: str | Path, formats: Sequence[str]) -> str | None:
    """The format among ``formats`` that the file name ends with (``x.tsv.gz`` -> ``tsv``)."""
    name = Path(path).name.lower().removesuffix(".gz")
    return next((f for f in formats if name.endswith("." + f)), None)


@contextmanager
def open_text(path: str | Path) -> Iterator[Iterator[str]]:
    """The lines of a UTF-8 text file (``.gz`` too), newlines kept, the byte-order mark dropped.

    Raises OSError for an unreadable file and UnicodeDecodeError for bytes that are not UTF-8.
    """
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield _without_bom(f)


def _without_bom(lines) -> Iterator[str]:
    first = next(lines, None)
    if first is None:
        return
    yield first.removeprefix(BOM)
    yield from lines


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a UTF-8 file (``.gz`` too); DataError names a bad line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path} line {number}: not valid UTF-8 ({err.reason} "
                                    f"at byte {err.start})") from None
                yield number, line.removeprefix(BOM) if number == 1 else line
    except (OSError, EOFError) as err:  # unreadable, or a damaged / truncated .gz
        raise DataError(f"cannot read {path}: {err}") from err


# ---- labelled tables ----------------------------------------------------------------------------
@dataclass
class LabelledTexts:
    """The examples of one file; ``lines`` are their 1-based line numbers (for error messages)."""

    path: str
    texts: list[str]
    labels: list[str]
    lines: list[int]
    skipped_empty: list[int] = field(default_factory=list)  # lines whose text was empty

    def __len__(self) -> int:
        return len(self.texts)

    def skipped_message(self) -> str | None:
        if not self.skipped_empty:
            return None
        shown = ", ".join(map(str, self.skipped_empty[:5]))
        more = ", ..." if len(self.skipped_empty) > 5 else ""
        return (f"{self.path}: skipped {len(self.skipped_empty)} line(s) with an empty text "
                f"(line {shown}{more})")


def table_rows(path: Path, fmt: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a TSV or CSV file; blank lines are left out."""
    lines = numbered_lines(path)
    if fmt == "tsv":  # no quoting: a text may hold '"'; it never holds a TAB
        for number, line in lines:
            if line.strip():
                yield number, line.rstrip("\r\n").split("\t")
        return
    reader = csv.reader(line for _, line in lines)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: {err}") from None


def read_labelled(path: str | Path, label_column: str | None = "label",
                  text_column: str = "text") -> LabelledTexts:
    """The (text, label) examples of a TSV/CSV file; ``label_column=None`` reads texts only.

    A line whose text is empty is skipped and counted (:meth:`LabelledTexts.skipped_message`);
    a missing column, a line with the wrong number of fields or an empty label is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such data file: {path}")
    fmt = format_of(path, TABLE_FORMATS)
    if fmt is None:
        raise DataError(f"{path}: unknown data format; expected .tsv or .csv (optionally .gz) "
                        "with a header line")
    rows = table_rows(path, fmt)
    header = next(rows, None)
    if header is None:
        raise DataError(f"{path} is empty: expected a header line naming the columns")
    number, columns = header[0], [c.strip() for c in header[1]]
    wanted = [("text", text_column)] + ([("label", label_column)] if label_column else [])
    for role, name in wanted:
        if name not in columns:
            raise DataError(f"{path} line {number}: the header has no column {name!r} (its "
                            f"columns: {', '.join(columns)}); choose one with --{role}-column")
    text_at = columns.index(text_column)
    label_at = columns.index(label_column) if label_column else None
    data = LabelledTexts(str(path), [], [], [])
    for number, fields in rows:
        if len(fields) != len(columns):
            hint = (" (TSV has no quoting: is there a TAB inside the text?)"
                    if fmt == "tsv" and len(fields) > len(columns) else "")
            raise DataError(f"{path} line {number}: {len(fields)} field(s) where the header "
                            f"has {len(columns)}{hint}")
        text = fields[text_at].strip()
        if not text:
            data.skipped_empty.append(number)
            continue
        label = fields[label_at].strip() if label_at is not None else ""
        if label_at is not None and not label:
            raise DataError(f"{path} line {number}: the label ({label_column!r}) is empty")
        data.texts.append(text)
        data.labels.append(label)
        data.lines.append(number)
    if not data.texts:
        raise DataError(f"{path} has no examples (only a header, or only empty texts)")
    return data


# ---- atomic writes ------------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_dir_atomic(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder, then swap it in place of ``target`` with renames."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
