"""Logging of ``windshift-grpc serve``: JSON lines in production, plain text in development."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(*, development: bool) -> None:
    """Send all logs to stderr: DEBUG and readable in development, INFO and JSON otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    if development:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    level = logging.DEBUG if development else logging.INFO
    for name in ("windshift", "windshift_grpc"):
        logging.getLogger(name).setLevel(level)


__all__ = ["JsonFormatter", "configure"]
