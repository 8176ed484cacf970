"""Logging of ``windshift-grpc serve``: JSON lines for machines, plain text for people.

The formats are the library's (:mod:`windshift._logging`, shared with
``windshift run``): one JSON object per line when stderr is a file, a pipe or
a log collector, readable lines on a terminal and in ``DEVELOPMENT``. The
loggers are ``windshift.*`` for the library and ``windshift_grpc.*`` for the
server; a line's fields (``stream``, ``consumer``, ``method``, ``code``,
``duration_ms``, trace ids, ...) are described there. No call site passes
event data, idempotency keys, tokens or passwords.
"""

from __future__ import annotations

import logging

from windshift._logging import READABLE, JsonFormatter
from windshift._logging import configure as _configure


def configure(*, development: bool) -> None:
    """Send all logs to stderr, from DEBUG up in development and from INFO up otherwise.

    Readable lines in development and whenever stderr is a terminal (someone
    running ``make serve`` reads them), one JSON object per line otherwise.
    Only Windshift's own loggers go down to DEBUG in development: the root
    stays at INFO, so that grpc's and nats-py's debug lines stay out.
    """
    level = logging.DEBUG if development else logging.INFO
    _configure(
        logging.INFO,
        loggers={"windshift": level, "windshift_grpc": level},
        readable=True if development else None,
    )


__all__ = ["READABLE", "JsonFormatter", "configure"]
