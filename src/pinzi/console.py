"""What every command shares on the terminal: results on stdout, messages on stderr.

Results (conversions, labels, summaries, tables) go to standard output, so that they can be
piped; progress bars, warnings and errors go to standard error.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator

from rich import progress
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, soft_wrap=True)  # a message stays one line, for logs and grep

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def without_controls(text: str) -> str:
    """``text`` without ASCII control characters (TAB kept), which no conversion wants."""
    return _CONTROL.sub("", text)


def stdin_lines() -> Iterator[tuple[int, str]]:
    """(1-based number, line) of standard input, one per input line whatever its bytes:
    invalid UTF-8 becomes U+FFFD with a warning, control characters are dropped."""
    for number, raw in enumerate(sys.stdin.buffer, 1):
        line = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            decoded = line.decode("utf-8", errors="replace")
            warn(f"line {number}: invalid UTF-8 replaced by U+FFFD")
        yield number, without_controls(decoded)


def argument_or_lines(argument: str | None) -> Iterator[tuple[int | None, str]]:
    """What a command converts: its argument (numbered None), or else every line of
    standard input with its number (:func:`stdin_lines`)."""
    if argument is not None:
        yield None, without_controls(argument)
    else:
        yield from stdin_lines()


def emit(line: str) -> None:
    """One result line on stdout, flushed at once (a pipe or co-process waits for it)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def progress_bar() -> progress.Progress:
    """A progress bar on standard error, for tasks counted in items; drawn only on a terminal,
    so that logs keep one line per message."""
    console = Console(stderr=True)
    return progress.Progress(
        progress.TextColumn("{task.description}"), progress.BarColumn(),
        progress.MofNCompleteColumn(), progress.TimeElapsedColumn(),
        progress.TimeRemainingColumn(), console=console, transient=True,
        disable=not console.is_terminal)


def print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def print_tables(tables: list) -> None:
    console = Console()
    if not console.is_terminal:  # rich would assume 80 columns and squeeze the table
        console.width = 160
    for table in tables:
        console.print(table)
