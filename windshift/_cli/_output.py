"""What the operator subcommands print: rich tables on a terminal, JSON with ``--json``.

One :class:`Output` per command run. A command builds its answer as
JSON-ready data (``dict``/``list`` of str, int, float, bool, None) and
hands it over together with a rich renderable for people
(:meth:`Output.result`); with ``--json`` the data is printed as one JSON
document, otherwise the renderable. Streams of items (``tail``, ``state
watch``) print one JSON object per line (:meth:`Output.item`).

Errors are one line on stderr, ``windshift: <what went wrong>``, and an exit
code (:class:`Failure`); the codes are those of :mod:`windshift._cli`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.table import Table

#: Exit codes of the operator subcommands (docs/cli.md).
EXIT_OK = 0
EXIT_FAILED = 1  # the command could not do its work (NATS, a server-side refusal)
EXIT_USAGE = 2  # bad usage or input: options, ids, JSON, --proto files
EXIT_NOT_FOUND = 3  # the stream, consumer, store, key or dead letter does not exist
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT) or SIGTERM

#: The ``--json`` option every operator subcommand takes.
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Machine-readable output: JSON instead of tables."),
]


# How wide tables are when stdout is no terminal (and COLUMNS says nothing).
_PIPE_WIDTH = 200


class Failure(Exception):
    """Ends a command: the one-line ``message`` on stderr (none when empty), exit ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def usage_error(message: str) -> Failure:
    """Bad input (exit 2); ``message`` names the bad value."""
    return Failure(EXIT_USAGE, message)


R = TypeVar("R")


def reports_failures(command: Callable[..., R]) -> Callable[..., R]:
    """Make a :class:`Failure` raised by ``command`` its one line on stderr and exit code."""

    @functools.wraps(command)
    def reporting(*args: Any, **kwargs: Any) -> R:
        try:
            return command(*args, **kwargs)
        except Failure as failure:
            if failure.message:
                sys.stdout.flush()
                print(f"windshift: {failure.message}", file=sys.stderr, flush=True)
            raise typer.Exit(failure.code) from None

    return reporting


class Output:
    """Where one command writes: stdout (tables or JSON), stderr (notes and errors)."""

    def __init__(self, *, json_output: bool) -> None:
        self.json = json_output
        # Made per command run, so that they write to the sys.stdout of the moment.
        self.console = Console(soft_wrap=False, highlight=False)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            # Into a pipe or a file: wide rows rather than cells folded at 80 columns.
            self.console = Console(soft_wrap=False, highlight=False, width=_PIPE_WIDTH)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def terminal(self) -> bool:
        """Whether stdout is a terminal (progress bars and colours)."""
        return self.console.is_terminal

    def result(self, data: object, renderable: RenderableType | None = None) -> None:
        """The command's answer: ``data`` as JSON with ``--json``, else ``renderable``."""
        self.item(data, renderable)

    def item(self, data: object, renderable: RenderableType | None) -> None:
        """One item of a stream of them: a JSON line with ``--json``, else ``renderable``.

        Raises:
            Failure: (exit 0, no message) whoever read stdout closed it
                (``windshift tail ... | head``): the command ends there.
        """
        try:
            if self.json or renderable is None:
                self._json(data)
            else:
                self.console.print(renderable)
        except (BrokenPipeError, SystemExit):  # rich ends with SystemExit on a broken pipe
            _silence_stdout()
            raise Failure(EXIT_OK, "") from None

    def note(self, text: str) -> None:
        """A line for people (stderr, never in the JSON): summaries of long work, hints."""
        self.errors.print(text, markup=False)

    def _json(self, data: object) -> None:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, default=_default) + "\n")
        sys.stdout.flush()


def _silence_stdout() -> None:
    # Nothing more can be written there; nor may the interpreter's last flush fail.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (tests' StringIO)
        pass


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} is not JSON")


def iso(moment: datetime | None) -> str | None:
    """A time in JSON: ISO 8601 in UTC, with a Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def shown_time(moment: datetime | None) -> str:
    """A time in a table: UTC, to the millisecond."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def shown_seconds(seconds: float | None) -> str:
    """A duration in a table: ``850ms``, ``4.2s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def shown_bytes(count: int) -> str:
    """A size in a table: ``512 B``, ``1.5 KiB``, ``3.2 MiB``..."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table; numbers (columns whose name starts with ``#``) aligned right."""
    shown = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        if column.startswith("#"):
            shown.add_column(column[1:], justify="right", no_wrap=True)
        else:
            shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*("-" if cell is None else str(cell) for cell in row))
    return shown


def fields(title: str | None, pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column table of names and values (one thing in full)."""
    shown = Table(title=title, title_justify="left", show_header=False)
    shown.add_column("field", style="bold", no_wrap=True)
    shown.add_column("value", overflow="fold")
    for key, value in pairs:
        shown.add_row(key, "-" if value is None else str(value))
    return shown


def pretty_json(document: object) -> str:
    """A JSON document for a table cell or a panel: indented."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=_default)


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "Failure",
    "JsonOption",
    "Output",
    "fields",
    "iso",
    "pretty_json",
    "reports_failures",
    "shown_bytes",
    "shown_seconds",
    "shown_time",
    "table",
    "usage_error",
]
