"""Logging of ``windshift-grpc serve``: JSON lines for machines, plain text for people.

Every line comes from the standard :mod:`logging` module (loggers
``windshift.*`` for the library, ``windshift_grpc.*`` for the server). When
stderr is a file, a pipe or a log collector, and not ``DEVELOPMENT``, each is
one JSON object:

.. code-block:: json

    {"time": "2025-01-31T12:00:00.123+00:00", "level": "info", "logger": "windshift.streams",
     "message": "created stream orders", "stream": "orders", "trace_id": "4bf9...",
     "span_id": "00f0..."}

``time``, ``level``, ``logger`` and ``message`` are always there; the fields a
call site passes with ``extra=`` (``stream``, ``consumer``, ``method``,
``code``, ``duration_ms``, ...) are added as they are; ``trace_id`` and
``span_id`` when the line is written inside a traced call; ``exception`` with
the traceback of an error. No call site passes event data, idempotency keys,
tokens or passwords.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

# What every LogRecord has: anything else on a record came with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, trace ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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
        return json.dumps(entry, ensure_ascii=False)


#: The format of the readable lines (development, or a terminal).
READABLE = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(*, development: bool) -> None:
    """Send all logs to stderr, from DEBUG up in development and from INFO up otherwise.

    Readable lines in development and whenever stderr is a terminal (someone
    running ``make serve`` reads them), one JSON object per line otherwise.
    """
    handler = logging.StreamHandler(sys.stderr)
    if development or _is_terminal(sys.stderr):
        handler.setFormatter(logging.Formatter(READABLE))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    level = logging.DEBUG if development else logging.INFO
    for name in ("windshift", "windshift_grpc"):
        logging.getLogger(name).setLevel(level)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without one, or closed
        return False


__all__ = ["READABLE", "JsonFormatter", "configure"]
