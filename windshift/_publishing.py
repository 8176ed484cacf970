"""Publishing events: headers, idempotency, optimistic concurrency, pipelined acks.

The Publisher service of a client: ``Client.publish`` and everything else that
writes to a stream (dead-letter moves and replays, state store writes) goes
through :meth:`Publisher.send`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg
from opentelemetry.trace import Span, Status, StatusCode

from windshift import _metrics as metrics
from windshift import _payloads as payloads
from windshift import _tracing as tracing
from windshift import _wire as wire
from windshift._acks import checked, header_block
from windshift._connection import Connection
from windshift._jsapi import MESSAGE_TOO_LARGE, WRONG_LAST_SEQUENCE, ApiError, raise_api_error
from windshift._names import quote_value, validate_subject
from windshift._payloads import Payload
from windshift.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """What JetStream acknowledged for a publish.

    Attributes:
        id: the event's id, its sequence in the stream.
        stream: the stream that stored it.
        duplicate: True when the idempotency key was seen within the
            deduplication window; ``id`` is then the original event's id.
    """

    id: int
    stream: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """One event of :meth:`~windshift.Client.publish_many`: what ``publish`` takes, as a value.

    Example:
        >>> OutgoingEvent("orders.created", OrderCreated(id="1"), idempotency_key="order-1")

    Attributes:
        subject: the event's subject (no wildcards); a stream must collect it.
        data: a protobuf message (or an Any), or a pydantic model.
        timestamp: its publication time (an aware datetime or nanoseconds); now by default.
        idempotency_key: deduplication within the stream's window.
        expected_last_id: refuse unless the last event on this subject has this id.
        expected_last_stream_id: refuse unless the last event of the stream has this id.
    """

    subject: str
    data: Payload
    timestamp: datetime | int | None = None
    idempotency_key: str | None = None
    expected_last_id: int | None = None
    expected_last_stream_id: int | None = None


@functools.lru_cache(maxsize=4096)
def _valid_subject(subject: str) -> str:
    # Publishers use few subjects over and over: check each once (a bad one
    # raises, and exceptions are not cached).
    return validate_subject(subject)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_expected(value: int | None, what: str) -> None:
    # Above 2**64 - 1 NATS cannot read the header and silently checks nothing.
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64
    ):
        raise ValidationError(
            f"{what} must be 0 or a positive event id below 2**64, got {quote_value(value)}"
        )


# JetStream's answer to a stored, new event, e.g. {"stream":"orders","seq":17}
# (stream names cannot hold quotes or backslashes); anything else (a
# duplicate, an error, a domain) goes through json.loads.
_PLAIN_ACK = re.compile(rb'\{"stream":"([^"\\]+)",\s*"seq":(\d+)\}')


# How long to wait for JetStream to say whether a stream collects a subject
# that a publish found nobody listening on (see ``_no_responders``).
_NO_RESPONDERS_CHECK_TIMEOUT = 1.0


class Publisher:
    """Publishing over one connection (behind ``Client.publish``)."""

    def __init__(self, connection: Connection) -> None:
        self._nc = connection.nc
        self._api = connection.api
        self._acks = connection.acks
        self._publish_slots = connection.publish_slots
        self._timeout = connection.request_timeout

    def prepare(
        self,
        subject: str,
        message: Payload,
        *,
        timestamp: datetime | int | None = None,
        idempotency_key: str | None = None,
        expected_last_id: int | None = None,
        expected_last_stream_id: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """Check a publish and build its body and headers; nothing is sent.

        Raises:
            ValidationError: a bad subject, data, key, timestamp or expected id.
        """
        _valid_subject(subject) if isinstance(subject, str) else validate_subject(subject)
        data_type, body, content_type = payloads.encode(message)
        headers = {
            wire.HEADER_DATA_TYPE: data_type,
            wire.HEADER_PUBLISHED_TIME: wire.format_time(timestamp),
        }
        if content_type is not None:
            headers[wire.HEADER_CONTENT_TYPE] = content_type
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key.strip():
                raise ValidationError(
                    f"idempotency_key must be a non-empty string, got {quote_value(idempotency_key)}"
                )
            if any(c in idempotency_key for c in "\r\n"):
                raise ValidationError(
                    f"idempotency_key must not contain line breaks, got {quote_value(idempotency_key)}"
                )
            if not _encodable(idempotency_key):
                # lone surrogates (e.g. undecodable bytes smuggled into a str)
                # cannot go into a NATS header
                raise ValidationError(
                    f"idempotency_key must be valid Unicode text, got {quote_value(idempotency_key)}"
                )
            headers[wire.HEADER_MSG_ID] = idempotency_key
        _check_expected(expected_last_id, "expected_last_id")
        _check_expected(expected_last_stream_id, "expected_last_stream_id")
        if expected_last_id is not None:
            headers[wire.HEADER_EXPECTED_LAST_SUBJECT_SEQ] = str(expected_last_id)
        if expected_last_stream_id is not None:
            headers[wire.HEADER_EXPECTED_LAST_SEQ] = str(expected_last_stream_id)

        return body, headers

    async def publish(
        self,
        subject: str,
        message: Payload,
        *,
        timestamp: datetime | int | None = None,
        idempotency_key: str | None = None,
        expected_last_id: int | None = None,
        expected_last_stream_id: int | None = None,
    ) -> PublishedEvent:
        """Publish an event and wait until JetStream stored it (see ``Client.publish``)."""
        body, headers = self.prepare(
            subject,
            message,
            timestamp=timestamp,
            idempotency_key=idempotency_key,
            expected_last_id=expected_last_id,
            expected_last_stream_id=expected_last_stream_id,
        )
        span = tracing.start_publish_span(subject, headers)
        started = time.perf_counter()
        try:
            published = await self.send(subject, body, headers)
        except WindshiftError as exc:
            _end_publish_span(span, started, exc)
            raise
        _end_publish_span(span, started, published)
        return published

    async def send(self, subject: str, body: bytes, headers: dict[str, str]) -> PublishedEvent:
        """Publish ``body`` with exactly these headers and wait for JetStream's acknowledgement.

        Raises:
            ValidationError: NATS refuses the subject, or the event is too large.
            NotFoundError: no stream collects the subject.
            ConflictError: an expected last sequence header did not match.
            UnavailableError: no acknowledgement in time, or no leader right now.
        """
        async with self._publish_slots:
            try:
                answer = checked(await self._acks.request(subject, body, headers, self._timeout))
            except (nats.errors.Error, TimeoutError) as exc:
                raise await self._failure(exc, subject, body, headers) from None
        return await self._stored(answer, subject, body, headers)

    async def publish_many(
        self, events: Sequence[OutgoingEvent]
    ) -> list[PublishedEvent | WindshiftError]:
        """Publish events pipelined, without a task per event (see ``Client.publish_many``)."""
        if isinstance(events, OutgoingEvent) or not isinstance(events, Sequence):
            raise ValidationError(
                f"publish_many takes a list of OutgoingEvent, got {quote_value(events)}"
            )
        prepared: list[tuple[str, bytes, dict[str, str]]] = []
        for index, event in enumerate(events):
            if not isinstance(event, OutgoingEvent):
                raise ValidationError(
                    f"event {index} must be an OutgoingEvent, got {quote_value(event)}"
                )
            try:
                body, headers = self.prepare(
                    event.subject,
                    event.data,
                    timestamp=event.timestamp,
                    idempotency_key=event.idempotency_key,
                    expected_last_id=event.expected_last_id,
                    expected_last_stream_id=event.expected_last_stream_id,
                )
            except ValidationError as exc:
                raise ValidationError(f"event {index}: {exc}") from None
            prepared.append((event.subject, body, headers))
        # Everything is valid: send all, each as soon as a pipeline slot is
        # free, then collect the answers in order (no task per event).
        slots, acks, timeout = self._publish_slots, self._acks, self._timeout
        release = _Releaser(slots)
        sent: list[tuple[Span, float, str | None, asyncio.Future[Msg] | WindshiftError]] = []
        for subject, body, headers in prepared:
            span = tracing.start_publish_span(subject, headers)
            started = time.perf_counter()
            await slots.acquire()
            try:
                token, waiter = await acks.send(subject, body, headers, timeout)
            except (nats.errors.Error, TimeoutError) as exc:
                slots.release()
                sent.append((span, started, None, await self._failure(exc, subject, body, headers)))
                continue
            waiter.add_done_callback(release)
            sent.append((span, started, token, waiter))
        results: list[PublishedEvent | WindshiftError] = []
        for (subject, body, headers), (span, started, sent_token, pending) in zip(
            prepared, sent, strict=True
        ):
            result: PublishedEvent | WindshiftError
            if isinstance(pending, WindshiftError):
                result = pending
            else:
                try:
                    answer = checked(await pending)
                    result = await self._stored(answer, subject, body, headers)
                except (nats.errors.Error, TimeoutError) as exc:
                    result = await self._failure(exc, subject, body, headers)
                except WindshiftError as exc:
                    result = exc
                finally:
                    if sent_token is not None:
                        acks.forget(sent_token)
            _end_publish_span(span, started, result)
            results.append(result)
        return results

    async def _failure(
        self, exc: BaseException, subject: str, body: bytes, headers: dict[str, str]
    ) -> WindshiftError:
        """The windshift error for a publish that NATS refused or never answered."""
        if isinstance(exc, nats.errors.NoRespondersError):
            return await self._no_responders(subject)
        if isinstance(exc, TimeoutError):
            return UnavailableError(
                f"publish to {subject!r} was not acknowledged within {self._timeout:g}s"
            )
        if isinstance(exc, nats.errors.BadSubjectError):
            return ValidationError(f"{subject!r} is not a subject NATS accepts")
        if isinstance(exc, nats.errors.MaxPayloadError):
            size = len(body) + len(header_block(headers))
            return ValidationError(
                f"event on {subject!r} is larger than the NATS server accepts "
                f"({size} bytes with its headers, at most {self._nc.max_payload})"
            )
        if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
            return UnavailableError(f"publish to {subject!r}: connection closed")
        if isinstance(exc, nats.errors.OutboundBufferLimitError):
            # Disconnected, and nats-py's reconnect buffer is full.
            return UnavailableError(
                f"publish to {subject!r}: NATS is unreachable and the reconnect buffer "
                "is full; retry with the same idempotency key"
            )
        return UnavailableError(f"publish to {subject!r}: {exc!r}")

    async def _stored(
        self, answer: Msg, subject: str, body: bytes, headers: dict[str, str]
    ) -> PublishedEvent:
        """What JetStream's answer to a publish says (raises what it refused)."""
        stored = _PLAIN_ACK.fullmatch(answer.data)
        if stored is not None:  # the usual answer, read without the JSON parser
            return PublishedEvent(id=int(stored[2]), stream=stored[1].decode())
        reply = json.loads(answer.data)
        error = reply.get("error")
        if error:
            try:
                raise_api_error(error)
            except ApiError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise ConflictError(f"publish to {subject!r}: {exc.description}") from None
                if exc.err_code == MESSAGE_TOO_LARGE:
                    size = len(body) + len(header_block(headers))
                    raise await self._too_large(subject, size) from None
                raise exc.to_windshift(f"publish to {subject!r}") from None
        return PublishedEvent(
            id=int(reply["seq"]), stream=reply["stream"], duplicate=bool(reply.get("duplicate"))
        )

    async def _streams_collecting(self, subject: str) -> list[str]:
        """The names of the streams that collect ``subject`` (JetStream's own answer)."""
        answer = await self._api.request(
            "STREAM.NAMES", {"subject": subject}, timeout=_NO_RESPONDERS_CHECK_TIMEOUT
        )
        return [str(name) for name in answer.get("streams") or []]

    async def _too_large(self, subject: str, size: int) -> ValidationError:
        # The stream refused the event for its max_event_size. Its answer
        # names neither the size nor the limit; look the limit up (this path
        # is rare) so that the message says both.
        limit = ""
        with contextlib.suppress(ApiError, WindshiftError, LookupError, TypeError, ValueError):
            stream = (await self._streams_collecting(subject))[0]
            info = await self._api.request(
                f"STREAM.INFO.{stream}", None, timeout=_NO_RESPONDERS_CHECK_TIMEOUT
            )
            most = int(info["config"]["max_msg_size"])
            limit = f" of stream {stream!r} ({most} bytes)" if most > 0 else ""
        return ValidationError(
            f"publish to {subject!r}: the event is {size} bytes with its headers, more than "
            f"the max_event_size{limit}"
        )

    async def _no_responders(self, subject: str) -> WindshiftError:
        # Nobody stored the event. Either no stream collects the subject (a
        # mistake: NotFoundError), or one does but has no leader right now: a
        # restarting server that has not loaded it yet, or a cluster electing
        # a new leader after a node died. That second case is transient and
        # must not read as "not found", or callers stop retrying during a
        # failover (seen in tests/test_resilience.py, scenario 2).
        try:
            streams = await self._streams_collecting(subject)
        except (ApiError, UnavailableError) as exc:
            return UnavailableError(
                f"publish to {subject!r}: no stream answered, and JetStream cannot say "
                f"whether one collects the subject ({exc}); retry later"
            )
        if not streams:
            return NotFoundError(f"no stream collects subject {subject!r}")
        return UnavailableError(
            f"publish to {subject!r}: stream {streams[0]!r} collects it but has no leader "
            "right now (a server restarting or a cluster electing one); retry with the "
            "same idempotency key"
        )


class _Releaser:
    """A done-callback that frees a pipeline slot (one object for all the callbacks)."""

    __slots__ = ("_slots",)

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots

    def __call__(self, done: asyncio.Future[Msg]) -> None:
        self._slots.release()


def _end_publish_span(span: Span, started: float, result: PublishedEvent | WindshiftError) -> None:
    """Record a publish's outcome on its span and in the metrics, and end the span."""
    if isinstance(result, WindshiftError):
        span.set_status(Status(StatusCode.ERROR, str(result)))
        span.end()
        return
    metrics.published(result.stream, time.perf_counter() - started, duplicate=result.duplicate)
    span.set_attribute("messaging.message.id", str(result.id))
    span.end()


__all__ = ["OutgoingEvent", "PublishedEvent", "Publisher"]
