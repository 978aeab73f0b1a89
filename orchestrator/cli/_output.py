"""The one output sink: data to stdout as a table or JSON, messages to stderr.

Everything printed here passes through `orchestrator.redact`, so no credential, token or presigned
secret leaves through the CLI (a value wrapped in `ShownOnce` excepted, see redact.py).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from orchestrator.redact import install_log_redaction, redact, redact_text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

# In a pipe or a file no table cell is wrapped or cut: URIs stay whole, one row a line.
PIPE_WIDTH = 100_000


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


class Output:
    """Prints command results in the chosen format; `json` prints exactly one JSON document."""

    def __init__(self, format: str = "table", quiet: bool = False) -> None:
        self.format = format
        self.quiet = quiet
        # Log records reach stderr too; they get the same masking as everything printed here.
        install_log_redaction()

    # rich is imported when something is printed through it: JSON output and `--help` never pay for it.
    @cached_property
    def out(self) -> Console:
        return _console(sys.stdout)

    @cached_property
    def err(self) -> Console:
        return _console(sys.stderr)

    @property
    def json(self) -> bool:
        return self.format == "json"

    def data(
        self,
        obj: Any,
        *,
        columns: list[str] | None = None,
        title: str | None = None,
        empty: str = "Nothing to show.",
    ) -> None:
        """Print a result: a list of rows as a table (`empty` on stderr when there is none), a mapping as
        key/value lines, or JSON."""
        obj = redact(obj)
        if self.json:
            sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        if self.quiet:
            return
        if isinstance(obj, list) and not obj:
            self.info(empty)
        elif isinstance(obj, list):
            self.table(obj, columns=columns, title=title)
        elif isinstance(obj, dict):
            # Plain aligned lines, not a table: values such as URIs must never be cut short.
            if title:
                self.out.print(title, style="bold", markup=False)
            width = max((len(str(key)) for key in obj), default=0)
            for key, value in obj.items():
                self.out.print(f"{str(key).ljust(width)}  {_cell(value)}", markup=False)
        else:
            self.out.print(redact_text(str(obj)), markup=False)

    def table(
        self, rows: Iterable[dict], *, columns: list[str] | None = None, title: str | None = None
    ) -> None:
        from rich.table import Table

        rows = [redact(row) for row in rows]
        columns = columns or (list(rows[0]) if rows else [])
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        self.out.print(table)

    def info(self, text: str) -> None:
        if not self.quiet:
            self.err.print(redact_text(text), markup=False)

    def warn(self, text: str) -> None:
        self._message(f"Warning: {redact_text(text)}", style="yellow")

    def error(self, text: str, hint: str | None = None) -> None:
        self._message(f"Error: {redact_text(text)}", style="red")
        if hint:
            self._message(f"Hint: {redact_text(hint)}")

    def _message(self, text: str, style: str | None = None) -> None:
        # Colour is for a person at a terminal; a scheduler's log or a pipe gets the plain line, without
        # importing rich for it.
        if "err" not in self.__dict__ and not sys.stderr.isatty():
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            return
        self.err.print(text, markup=False, style=style)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator:
        """A progress bar on a terminal; a silent stand-in in JSON mode, quiet mode or a pipe."""
        if self.json or self.quiet or not self.err.is_terminal:
            yield _NoProgress()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.err, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield _Advance(bar, task)


def _console(file) -> Console:
    from rich.console import Console

    console = Console(file=file, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **_: Any) -> None:
        pass


class _Advance:
    def __init__(self, bar: Progress, task) -> None:
        self.bar, self.task = bar, task

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def update(self, **fields: Any) -> None:
        self.bar.update(self.task, **fields)
