"""Publishing events: headers, idempotency, optimistic concurrency, pipelined acks."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime

import nats.errors
from google.protobuf.message import Message
from opentelemetry.trace import Status, StatusCode

from windshift import tracing, wire
from windshift._core import ClientBase
from windshift._jsapi import WRONG_LAST_SEQUENCE, ApiError, raise_api_error
from windshift.errors import (
    ConflictError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)
from windshift.names import validate_subject


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


def _check_expected(value: int | None, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValidationError(f"{what} must be 0 or a positive event id, got {value!r}")


class PublishingMixin(ClientBase):
    """The ``publish`` method of :class:`~windshift.Client`."""

    _publish_slots: asyncio.Semaphore

    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        timestamp: datetime | None = None,
        idempotency_key: str | None = None,
        expected_last_id: int | None = None,
        expected_last_stream_id: int | None = None,
    ) -> PublishedEvent:
        """Publish an event and wait until JetStream has stored it.

        Example:
            >>> published = await client.publish(
            ...     "orders.created", OrderCreated(id="123"), idempotency_key="order-123")
            >>> published.id
            17

        Many concurrent calls share one pipeline: up to
        ``publish_max_pending`` (see :func:`~windshift.connect`) publishes
        await their acknowledgement at once.

        Args:
            subject: the event's subject (no wildcards); a stream must collect it.
            message: a protobuf message, or a ``google.protobuf.Any`` holding one.
            timestamp: the event's publication time (aware datetime); now by default.
            idempotency_key: publishing the same key again within the stream's
                deduplication window stores nothing and returns the first id.
            expected_last_id: refuse unless the last event on this *subject*
                has this id (0: no event on the subject yet).
            expected_last_stream_id: refuse unless the last event in the whole
                *stream* has this id (0: the stream is empty).

        Raises:
            ValidationError: bad subject, data, key or timestamp; event too large.
            NotFoundError: no stream collects this subject.
            ConflictError: an expected last id did not match.
            UnavailableError: NATS did not acknowledge in time.
        """
        validate_subject(subject)
        data_type, body = wire.encode_message(message)
        headers = {
            wire.HEADER_DATA_TYPE: data_type,
            wire.HEADER_PUBLISHED_TIME: wire.format_time(timestamp),
        }
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key.strip():
                raise ValidationError(
                    f"idempotency_key must be a non-empty string, got {idempotency_key!r}"
                )
            if any(c in idempotency_key for c in "\r\n"):
                raise ValidationError(
                    f"idempotency_key must not contain line breaks, got {idempotency_key!r}"
                )
            headers[wire.HEADER_MSG_ID] = idempotency_key
        _check_expected(expected_last_id, "expected_last_id")
        _check_expected(expected_last_stream_id, "expected_last_stream_id")
        if expected_last_id is not None:
            headers[wire.HEADER_EXPECTED_LAST_SUBJECT_SEQ] = str(expected_last_id)
        if expected_last_stream_id is not None:
            headers[wire.HEADER_EXPECTED_LAST_SEQ] = str(expected_last_stream_id)

        span = tracing.start_publish_span(subject, headers)
        try:
            published = await self._send(subject, body, headers)
        except WindshiftError as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        span.set_attribute("messaging.message.id", str(published.id))
        span.end()
        return published

    async def _send(self, subject: str, body: bytes, headers: dict[str, str]) -> PublishedEvent:
        timeout = self._settings.request_timeout.total_seconds()
        async with self._publish_slots:
            try:
                answer = await self._nc.request(subject, body, timeout=timeout, headers=headers)
            except nats.errors.NoRespondersError:
                raise NotFoundError(f"no stream collects subject {subject!r}") from None
            except nats.errors.TimeoutError:
                raise UnavailableError(
                    f"publish to {subject!r} was not acknowledged within {timeout:g}s"
                ) from None
            except nats.errors.MaxPayloadError:
                raise ValidationError(
                    f"event on {subject!r} is larger than the NATS server accepts "
                    f"({len(body)} bytes)"
                ) from None
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                raise UnavailableError(f"publish to {subject!r}: connection closed") from None
        reply = json.loads(answer.data)
        error = reply.get("error")
        if error:
            try:
                raise_api_error(error)
            except ApiError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise ConflictError(f"publish to {subject!r}: {exc.description}") from None
                raise exc.to_windshift(f"publish to {subject!r}") from None
        return PublishedEvent(
            id=int(reply["seq"]), stream=reply["stream"], duplicate=bool(reply.get("duplicate"))
        )


__all__ = ["PublishedEvent", "PublishingMixin"]
