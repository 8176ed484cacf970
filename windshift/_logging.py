"""Log lines of the Windshift commands: JSON lines for machines, readable lines for people.

Both ``windshift run`` and ``windshift-grpc serve`` log through here, so that
their lines look alike. Every line comes from the standard :mod:`logging`
module (loggers ``windshift.*`` for the library, ``windshift_grpc.*`` for the
server, and whatever an application's handlers use). When stderr is a file,
a pipe or a log collector, each is one JSON object:

.. code-block:: json

    {"time": "2025-01-31T12:00:00.123+00:00", "level": "info", "logger": "windshift.streams",
     "message": "created stream orders", "stream": "orders", "trace_id": "4bf9...",
     "span_id": "00f0..."}

``time``, ``level``, ``logger`` and ``message`` are always there; the fields a
call site passes with ``extra=`` (``stream``, ``consumer``, ``method``,
``code``, ``duration_ms``, ...) are added as they are; ``trace_id`` and
``span_id`` when the line is written inside a traced call; ``exception`` with
the traceback of an error. No call site of the library passes event data,
idempotency keys, tokens or passwords. On a terminal the lines are
:data:`READABLE` instead.

The library itself never configures logging; only the commands call
:func:`configure`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

# What every LogRecord has: anything else on a record came with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}

#: The format of the readable lines (a terminal, or asked for).
READABLE = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# (A server writes a line per call: the encoder is made once, not per line.)
_ENCODER = json.JSONEncoder(ensure_ascii=False)


@functools.lru_cache(maxsize=4)
def _second_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def time_text(created: float) -> str:
    """``created`` (seconds since the epoch) in UTC, to the millisecond, as JSON lines show it.

    The same text as ``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``
    (microseconds rounded half to even, then cut), with the whole-second part
    formatted once per second.
    """
    seconds = math.floor(created)
    micros = round((created - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return f"{_second_text(seconds)}.{micros // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, trace ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time_text(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = _plain(value)
        if "trace_id" not in entry:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                entry["trace_id"] = f"{context.trace_id:032x}"
                entry["span_id"] = f"{context.span_id:016x}"
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


def configure(
    level: int = logging.INFO,
    *,
    loggers: Mapping[str, int] | None = None,
    readable: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every log line to ``stream`` (stderr), replacing the root logger's handlers.

    Args:
        level: the root logger's level: lines below it are dropped.
        loggers: levels of named loggers (``{"windshift": logging.DEBUG}``),
            for lines of those loggers above or below the root's level.
        readable: True for :data:`READABLE` lines, False for JSON lines; None
            (the default) for readable lines exactly when the stream is a
            terminal (someone reads it) and JSON lines otherwise.
        stream: where the lines go; stderr by default.
    """
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    if readable is None:
        readable = is_terminal(out)
    handler.setFormatter(logging.Formatter(READABLE) if readable else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, named_level in (loggers or {}).items():
        logging.getLogger(name).setLevel(named_level)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (False for anything that cannot say)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without one, or closed
        return False


__all__ = ["READABLE", "JsonFormatter", "configure", "is_terminal"]
