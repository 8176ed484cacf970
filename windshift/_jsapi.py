"""The JetStream JSON API, requested directly: one request, one answer, one error mapping."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, NoReturn

import nats.errors
from nats.aio.client import Client as NATS

from windshift.errors import (
    ConfigurationConflictError,
    ConflictError,
    ConsumerNotFoundError,
    NotFoundError,
    StreamNotFoundError,
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
MESSAGE_TOO_LARGE = 10054
NO_MESSAGE_FOUND = 10037
MESSAGE_DELETE_FAILED = 10057  # e.g. "no message found"
STREAM_STORE_FULL = 10077  # a limit with discard "new" refuses the event
STREAM_INVALID_CONFIG = 10052  # on an update: a change the existing stream cannot take
MIRROR_NOT_UPDATABLE = 10055
MIRROR_WITH_SUBJECTS = 10034

# Refusals that say the request is fine but clashes with what exists.
_CONFLICTS = frozenset(
    {STREAM_NAME_IN_USE, SUBJECTS_OVERLAP, STREAM_STORE_FULL, MIRROR_NOT_UPDATABLE}
)
# Refusals of an update to an existing stream (a create with the same
# configuration would be a validation error instead).
_UPDATE_CONFLICTS = frozenset({STREAM_INVALID_CONFIG, MIRROR_WITH_SUBJECTS})

_DEFAULT_PREFIX = "$JS.API"


class ApiError(Exception):
    """An error answer of the JetStream API (kept internal; mapped before it leaves)."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (status {code}, error {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description

    def to_windshift(
        self,
        context: str,
        *,
        stream: str | None = None,
        consumer: str | None = None,
        update: bool = False,
    ) -> WindshiftError:
        """The windshift error for this answer.

        Mapped by JetStream's ``err_code`` first, then by the status class.

        Args:
            context: what was attempted, the start of the message.
            stream: the stream the request was about (for StreamNotFoundError).
            consumer: the consumer it was about (for ConsumerNotFoundError).
            update: the request changed an existing resource, so a refused
                configuration is a conflict with it, not a bad request.
        """
        message = f"{context}: {self.description}"
        err_code = self.err_code
        if err_code == STREAM_NOT_FOUND and stream is not None:
            return StreamNotFoundError(message, stream=stream)
        if err_code == CONSUMER_NOT_FOUND and stream is not None and consumer is not None:
            return ConsumerNotFoundError(message, stream=stream, consumer=consumer)
        if err_code == STREAM_STORE_FULL:
            return ConfigurationConflictError(
                f"{message} (the stream discards new events at its limit)"
            )
        if err_code in _CONFLICTS or (update and err_code in _UPDATE_CONFLICTS):
            return ConfigurationConflictError(message)
        if err_code == WRONG_LAST_SEQUENCE:
            return ConflictError(message)
        if self.code >= 500:
            return UnavailableError(message)
        if self.code == 404:
            return NotFoundError(message)
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


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message read back from a stream."""

    subject: str
    sequence: int
    headers: dict[str, str]
    data: bytes
    time: str


def _parse_header_block(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode(errors="replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers


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

    async def get_message(self, stream: str, query: dict[str, Any]) -> StoredMessage:
        """Read one stored message (``{"seq": n}``, ``{"last_by_subj": s}``, ...).

        Raises:
            ApiError: no such message (``NO_MESSAGE_FOUND``) or stream.
        """
        message = (await self.request(f"STREAM.MSG.GET.{stream}", query))["message"]
        return StoredMessage(
            subject=message["subject"],
            sequence=int(message["seq"]),
            headers=_parse_header_block(base64.b64decode(message.get("hdrs") or b"")),
            data=base64.b64decode(message.get("data") or b""),
            time=message["time"],
        )


__all__ = ["ApiError", "JetStreamApi", "StoredMessage", "raise_api_error"]
