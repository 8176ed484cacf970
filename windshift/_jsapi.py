"""The JetStream JSON API, requested directly: one request, one answer, one error mapping."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import nats.errors
from nats.aio.client import Client as NATS

from windshift.errors import (
    ConfigurationConflictError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)

# JetStream error codes (``err_code``) the library reacts to.
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
STREAM_NAME_IN_USE = 10058
SUBJECTS_OVERLAP = 10065
WRONG_LAST_SEQUENCE = 10071
CONSUMER_ALREADY_EXISTS = 10148
MESSAGE_TOO_LARGE = 10054
STREAM_STORE_FULL = 10077  # a limit with discard "new" refuses the event

_DEFAULT_PREFIX = "$JS.API"


class ApiError(Exception):
    """An error answer of the JetStream API (kept internal; mapped before it leaves)."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (status {code}, error {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description

    def to_windshift(self, context: str) -> WindshiftError:
        """The windshift error for this answer, with ``context`` saying what was attempted."""
        message = f"{context}: {self.description}"
        if self.err_code == STREAM_STORE_FULL:
            return ConfigurationConflictError(
                f"{message} (the stream discards new events at its limit)"
            )
        if self.code == 404:
            return NotFoundError(message)
        if self.code == 503:
            return UnavailableError(message)
        if self.err_code in (SUBJECTS_OVERLAP, STREAM_NAME_IN_USE):
            return ConfigurationConflictError(message)
        if self.code == 400:
            return ValidationError(message)
        return ConfigurationConflictError(message)


def raise_api_error(error: dict[str, Any]) -> NoReturn:
    """Raise the :class:`ApiError` an ``{"error": …}`` answer describes."""
    raise ApiError(
        int(error.get("code", 500)),
        int(error.get("err_code", 0)),
        str(error.get("description", "")),
    )


class JetStreamApi:
    """Requests to ``$JS.API.*`` with JSON bodies, errors turned into exceptions."""

    def __init__(self, nc: NATS, *, timeout: float, prefix: str = _DEFAULT_PREFIX) -> None:
        self.nc = nc
        self.timeout = timeout
        self.prefix = prefix

    async def request(
        self, subject: str, payload: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send ``payload`` to ``$JS.API.<subject>`` and return the decoded answer.

        Raises:
            ApiError: JetStream answered with an error.
            UnavailableError: no answer (JetStream off, NATS unreachable, timeout).
        """
        body = json.dumps(payload, separators=(",", ":")).encode() if payload is not None else b""
        wait = self.timeout if timeout is None else timeout
        try:
            msg = await self.nc.request(f"{self.prefix}.{subject}", body, timeout=wait)
        except nats.errors.NoRespondersError as exc:
            raise UnavailableError(
                f"JetStream did not answer {subject}: no responders (is JetStream enabled?)"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise UnavailableError(f"JetStream did not answer {subject} within {wait:g}s") from exc
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            raise UnavailableError(f"the NATS connection is closed ({subject})") from exc
        answer: dict[str, Any] = json.loads(msg.data)
        error = answer.get("error")
        if error:
            raise_api_error(error)
        return answer


__all__ = ["ApiError", "JetStreamApi", "raise_api_error"]
