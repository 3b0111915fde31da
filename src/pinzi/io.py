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
  under a temporary name, then renamed over it (:func:`write_atomic`, :func:`write_dir_atomic`),
  with the modes the umask gives; a failed write (a full disk) leaves no temporary behind;
* one process at a time writes an output folder (:func:`exclusive`);
* no line is read into memory whole past :data:`MAX_LINE_BYTES`.
"""

from __future__ import annotations

import csv
import ctypes
import gzip
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from pinzi.errors import DataError, OutputError

BOM = "\ufeff"
MAX_LINE_BYTES = 1 << 20  # a longer line is never read into memory whole
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
            # A bounded readline: never more than MAX_LINE_BYTES of one line in memory.
            for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise DataError(f"{path} line {number}: longer than {MAX_LINE_BYTES:,} "
                                    "bytes (is it a text file?)")
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


# ---- atomic writes and the output lock ---------------------------------------------------------
def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all, with the mode the umask gives a new file.

    The temporary file beside it has a unique name (two writers never share it) and is removed
    when the write fails, so a full disk leaves nothing behind.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_dir_atomic(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder, then swap it in place of ``target``.

    The files get the modes the umask gives (some writers, safetensors among them, make
    0600 files); the temporary folder is removed when ``fill`` fails. Where the system can
    (Linux), the old and new folders are exchanged in one step, so ``target`` never goes
    missing for a reader.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        _give_umask_modes(tmp)
        if not (target.exists() and _exchange(tmp, target)):
            old = tmp.with_name(tmp.name + ".old")
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            tmp = old
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    try:  # Linux says it without changing it
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^Umask:\s*([0-7]+)", status, re.M).group(1), 8)
    except (OSError, AttributeError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _give_umask_modes(folder: Path) -> None:
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2); False where that is not possible."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd, rename_exchange = -100, 2
    return renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0


LOCK_FILE = ".pinzi.lock"


@contextmanager
def exclusive(folder: str | Path) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock while writing it.

    A second pinzi process that wants the same folder fails at once with
    :class:`~pinzi.errors.OutputError` instead of mixing its files with this one's. The lock
    is the kernel's (``filelock``): it ends with the process, however that ends. Re-entrant
    within one process.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder: choose another output folder")
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE, timeout=0, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        holder = (folder / LOCK_FILE).read_text().strip()
        by = f" (process {holder})" if holder.isdigit() else ""
        raise OutputError(f"{folder} is being written by another pinzi process{by}: wait for it "
                          "to end, or choose another output folder") from None
    try:
        if lock.lock_counter == 1:
            (folder / LOCK_FILE).write_text(str(os.getpid()))
        yield folder
    finally:
        lock.release()
