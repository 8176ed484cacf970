"""Dead-letter queues: events given up on, kept with where they came from and why.

A consumer made with ``dead_letter_stream="orders-dead"`` moves an event to
that stream when it is rejected permanently, or when its delivery attempts
run out — also when the subscriber died during the last attempt: the next
delivery, one past the limit, is moved instead of handed out. The move is a
publish to ``<dead-letter stream>.<stream>.<consumer>.<event id>`` that
JetStream accepts only while that subject is empty, so however often it is
retried, each event is dead-lettered once; only after the dead letter is
stored is the event terminated in its consumer. At any moment an event is
pending, acknowledged or dead-lettered, never lost.

Example:
    >>> await client.ensure_consumer("orders", "billing", max_delivery_attempts=5,
    ...                              dead_letter_stream="orders-dead")
    >>> queue = client.dead_letters("orders-dead")
    >>> for letter in await queue.list():
    ...     print(letter.event_id, letter.reason)
    ...     await queue.replay(letter.id)      # published again to its original subject
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message
from opentelemetry import context as otel_context

from windshift import _metrics as metrics
from windshift import _payloads as payloads
from windshift import _tracing as tracing
from windshift import _wire as wire
from windshift._jsapi import (
    MESSAGE_DELETE_FAILED,
    NO_MESSAGE_FOUND,
    STREAM_NOT_FOUND,
    ApiError,
    JetStreamApi,
    StoredMessage,
)
from windshift._names import quote_value, validate_name
from windshift._options import METADATA_DEAD_LETTER_STREAM, METADATA_MAX_DELIVERY_ATTEMPTS
from windshift.errors import ConflictError, NotFoundError, StreamNotFoundError, ValidationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from windshift._events import Event
    from windshift._publishing import PublishedEvent, Publisher

logger = logging.getLogger("windshift.deadletters")

M = TypeVar("M", bound="Message | BaseModel")

# Dead letters are numbered by JetStream's stream sequence: 1 up to this.
_LAST_ID = 2**64 - 1

# What every dead letter carries (move() writes them): where it came from.
# A message without them is no dead letter, and is never replayed.
_IDENTITY = (
    wire.HEADER_DEAD_SUBJECT,
    wire.HEADER_DEAD_STREAM,
    wire.HEADER_DEAD_CONSUMER,
    wire.HEADER_DEAD_EVENT_ID,
)

_CARRIED = (
    wire.HEADER_DATA_TYPE,
    wire.HEADER_CONTENT_TYPE,
    wire.HEADER_PUBLISHED_TIME,
    wire.HEADER_TRACE_PARENT,
    wire.HEADER_TRACE_STATE,
)


@dataclass(frozen=True, slots=True)
class DeadLetterPolicy:
    """A consumer's dead-letter settings, as read from its metadata."""

    stream: str
    max_delivery_attempts: int | None

    @classmethod
    def of(cls, consumer_config: Mapping[str, Any]) -> DeadLetterPolicy | None:
        """The settings in a consumer's configuration; None when it has no dead-letter stream."""
        metadata = consumer_config.get("metadata") or {}
        stream = metadata.get(METADATA_DEAD_LETTER_STREAM)
        if not stream:
            return None
        attempts = metadata.get(METADATA_MAX_DELIVERY_ATTEMPTS)
        return cls(stream, int(attempts) if attempts else None)

    def last_attempt(self, delivery_attempt: int) -> bool:
        """Whether no delivery after this one may be handed out."""
        return self.max_delivery_attempts is not None and (
            delivery_attempt >= self.max_delivery_attempts
        )

    def exhausted(self, delivery_attempt: int) -> bool:
        """Whether a delivery is past the last allowed attempt."""
        return self.max_delivery_attempts is not None and (
            delivery_attempt > self.max_delivery_attempts
        )


def _header_value(text: str) -> str:
    return " ".join(text.split())[:1000]  # one line, bounded


async def move(
    publisher: Publisher,
    policy: DeadLetterPolicy,
    event: Event,
    stream: str,
    consumer: str,
    reason: str,
    attempts: int,
) -> bool:
    """Store ``event`` in the dead-letter stream (once, however often this is retried).

    Args:
        attempts: how often the event was handed out to be processed.

    Returns:
        True when this call stored it, False when an earlier try already had.
    """
    headers = {name: event.headers[name] for name in _CARRIED if name in event.headers}
    headers.update(
        {
            wire.HEADER_DEAD_SUBJECT: event.subject,
            wire.HEADER_DEAD_STREAM: stream,
            wire.HEADER_DEAD_CONSUMER: consumer,
            wire.HEADER_DEAD_EVENT_ID: str(event.id),
            wire.HEADER_DEAD_ATTEMPTS: str(attempts),
            wire.HEADER_DEAD_REASON: _header_value(reason),
            wire.HEADER_DEAD_TIME: wire.format_time(None),
            wire.HEADER_MSG_ID: f"dead.{stream}.{consumer}.{event.id}",
            wire.HEADER_EXPECTED_LAST_SUBJECT_SEQ: "0",
        }
    )
    subject = f"{policy.stream}.{stream}.{consumer}.{event.id}"
    try:
        stored = not (await publisher.send(subject, event.body, headers)).duplicate
    except ConflictError:  # an earlier try stored it: the subject holds it
        stored = False
    logger.warning(
        "dead-lettered event %d of %s/%s into %s%s: %s",
        event.id,
        stream,
        consumer,
        policy.stream,
        "" if stored else " (stored by an earlier try)",
        headers[wire.HEADER_DEAD_REASON],
        extra={
            "stream": stream,
            "consumer": consumer,
            "event_id": event.id,
            "dead_letter_stream": policy.stream,
        },
    )
    return stored


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event in a dead-letter stream.

    Attributes:
        id: its id in the dead-letter stream.
        subject: the subject it was originally published to.
        stream: the stream it came from.
        consumer: the consumer that gave up on it.
        event_id: its id in the original stream.
        attempts: how often it had been delivered.
        reason: why it was given up on.
        dead_since: when it was moved.
        data: the event's data, a ``google.protobuf.Any`` (JSON data as a ``Struct``).
        headers: all its headers.
        body: the event's body, as published (protobuf bytes, or JSON).
    """

    id: int
    subject: str
    stream: str
    consumer: str
    event_id: int
    attempts: int
    reason: str
    dead_since: datetime
    data: AnyProto
    headers: Mapping[str, str]
    body: bytes = field(default=b"", repr=False)

    @property
    def timestamp(self) -> datetime | None:
        """When the event was published (``WS-Published-Time``); None when it carries none."""
        nanos = self.timestamp_ns
        return None if nanos is None else wire.time_from_nanos(nanos)

    @property
    def timestamp_ns(self) -> int | None:
        """When the event was published, in nanoseconds since the Unix epoch (exact)."""
        return wire.published_ns(self.headers)

    @property
    def trace_context(self) -> otel_context.Context:
        """The OpenTelemetry context of the original publish (empty when untraced)."""
        return tracing.extract_context(self.headers)

    def unpack(self, message_type: type[M]) -> M:
        """Parse the data as ``message_type``: a protobuf message or a pydantic model class.

        Raises:
            ValidationError: the data is of another type or format, or does not parse.
        """
        return payloads.decode(
            message_type,
            data_type=self.headers.get(wire.HEADER_DATA_TYPE, ""),
            body=self.body,
            content=payloads.content_type(self.headers),
            what=f"dead letter {self.id}",
        )

    def to_json(self, pool: DescriptorPool | None = None) -> object | None:
        """The data as a JSON-ready document; None when its type is unknown.

        As :meth:`windshift.StoredEvent.to_json`: JSON data parsed, protobuf
        data decoded when ``pool`` (or protobuf's default pool) knows its type.
        """
        return payloads.to_json(
            self.headers.get(wire.HEADER_DATA_TYPE, ""),
            self.body,
            payloads.content_type(self.headers),
            pool,
        )


# What a letter's size adds to its strings: the numbers, timestamps and field
# framing of a gRPC DeadLetter, and of its place in a list, with room to spare.
_SIZE_OVERHEAD = 256


def _size(letter: DeadLetter) -> int:
    """At least the bytes ``letter`` takes as a gRPC ``DeadLetter`` (see ``list``'s ``max_bytes``).

    Every string the proto carries is counted, as UTF-8, from where it comes:
    the data and its type URL, the subject, stream, consumer and reason, and
    the headers (the publish time and trace context come from them).
    """
    strings = (
        letter.data.type_url,
        letter.subject,
        letter.stream,
        letter.consumer,
        letter.reason,
        *letter.headers.keys(),
        *letter.headers.values(),
    )
    return len(letter.data.value) + sum(len(text.encode()) for text in strings) + _SIZE_OVERHEAD


class DeadLetterQueue:
    """The dead letters of one dead-letter stream; from :meth:`Client.dead_letters`."""

    def __init__(self, publisher: Publisher, api: JetStreamApi, name: str) -> None:
        validate_name("dead-letter stream", name)
        self._publisher = publisher
        self._api = api
        self.name = name

    def __repr__(self) -> str:
        return f"DeadLetterQueue({self.name!r})"

    async def _read(self, query: dict[str, Any], what: str) -> StoredMessage | None:
        try:
            return await self._api.get_message(self.name, query)
        except ApiError as exc:
            if exc.err_code == NO_MESSAGE_FOUND:
                return None
            if exc.err_code == STREAM_NOT_FOUND:
                raise StreamNotFoundError(
                    f"dead-letter stream {self.name!r} does not exist", stream=self.name
                ) from None
            raise exc.to_windshift(f"read {what} of {self.name!r}", stream=self.name) from None

    def _letter(self, stored: StoredMessage) -> DeadLetter | str:
        """The dead letter ``stored`` is, or why it is none."""
        headers = stored.headers
        missing = [name for name in _IDENTITY if not headers.get(name)]
        if missing:
            return f"it carries no {missing[0]} header"
        # move() stores each letter on <queue>.<stream>.<consumer>.<event id>.
        expected = ".".join(
            (
                self.name,
                headers[wire.HEADER_DEAD_STREAM],
                headers[wire.HEADER_DEAD_CONSUMER],
                headers[wire.HEADER_DEAD_EVENT_ID],
            )
        )
        if stored.subject != expected:
            return f"it is stored on {stored.subject!r}, not {expected!r}"
        try:
            event_id = int(headers[wire.HEADER_DEAD_EVENT_ID])
            attempts = int(headers.get(wire.HEADER_DEAD_ATTEMPTS) or 0)
        except ValueError:
            return "its event id or attempts header is not a number"
        return DeadLetter(
            id=stored.sequence,
            subject=headers[wire.HEADER_DEAD_SUBJECT],
            stream=headers[wire.HEADER_DEAD_STREAM],
            consumer=headers[wire.HEADER_DEAD_CONSUMER],
            event_id=event_id,
            attempts=attempts,
            reason=headers.get(wire.HEADER_DEAD_REASON, ""),
            dead_since=wire.parse_time(headers.get(wire.HEADER_DEAD_TIME) or stored.time),
            data=payloads.as_any(
                headers.get(wire.HEADER_DATA_TYPE, ""), stored.data, payloads.content_type(headers)
            ),
            headers=headers,
            body=stored.data,
        )

    async def get(self, dead_letter_id: int) -> DeadLetter:
        """One dead letter.

        Only a message that a consumer's dead-letter policy moved here is a
        dead letter: one stored on ``<this stream>.<stream>.<consumer>.<event id>``
        with the ``WS-Dead-*`` headers saying the same (any other message,
        say in a stream that mirrors another, is refused).

        Raises:
            NotFoundError: no such dead letter (or stream).
            ValidationError: the message with this id is not a dead letter.
        """
        stored = None
        if 1 <= dead_letter_id <= _LAST_ID:  # JetStream calls any other id a bad request
            stored = await self._read({"seq": dead_letter_id}, f"dead letter {dead_letter_id}")
        if stored is None:
            raise NotFoundError(f"dead letter {dead_letter_id} is not in {self.name!r}")
        letter = self._letter(stored)
        if isinstance(letter, str):
            raise ValidationError(
                f"message {dead_letter_id} of {self.name!r} is not a dead letter: {letter}"
            )
        return letter

    async def list(
        self, *, after_id: int = 0, limit: int = 100, max_bytes: int | None = None
    ) -> list[DeadLetter]:
        """Dead letters in order, those with an id above ``after_id``, at most ``limit``.

        Messages of the stream that are no dead letters (see :meth:`get`) are left out.

        Example:
            >>> page = await queue.list(max_bytes=1024 * 1024)
            >>> while page:
            ...     ...
            ...     page = await queue.list(after_id=page[-1].id, max_bytes=1024 * 1024)

        Args:
            after_id: only letters with a higher id: 0 for the first page, the
                last id of the previous page for the next one.
            limit: at most this many letters.
            max_bytes: also end the page before the letters' sizes together
                would pass this many bytes. A letter's size counts its data,
                its type, its subject, stream, consumer, reason and headers,
                plus 256 bytes: never less than it weighs as a gRPC
                ``DeadLetter``. A first letter larger than ``max_bytes``
                comes alone, so that paging always moves on. None: no bound.

        With ``max_bytes`` a page may hold fewer than ``limit`` letters while
        more follow: only an empty page says there are no more.

        Raises:
            ValidationError: ``max_bytes`` is not a whole number of 1 or more.
            NotFoundError: the dead-letter stream does not exist.
        """
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1
        ):
            raise ValidationError(f"max_bytes must be 1 or more, got {quote_value(max_bytes)}")
        letters: list[DeadLetter] = []
        total = 0
        next_id = after_id + 1
        while len(letters) < limit and next_id <= _LAST_ID:
            stored = await self._read(
                {"seq": next_id, "next_by_subj": f"{self.name}.>"}, "dead letters"
            )
            if stored is None:
                break
            letter = self._letter(stored)
            next_id = stored.sequence + 1
            if not isinstance(letter, DeadLetter):  # a message that is none is left out
                continue
            if max_bytes is not None:
                total += _size(letter)
                if letters and total > max_bytes:
                    break  # read again as the first of the next page
            letters.append(letter)
        return letters

    async def replay(
        self, dead_letter_id: int, *, check: Callable[[DeadLetter], None] | None = None
    ) -> PublishedEvent:
        """Publish a dead letter again to its original subject, then remove it.

        The new event keeps the data type and trace context. Retrying a
        replay that failed half-way does not publish twice (within the
        original stream's deduplication window). Only dead letters are
        replayed (see :meth:`get`).

        Args:
            dead_letter_id: the letter's id.
            check: called with the letter after it is read and before it is
                published; what it raises ends the replay, with nothing
                published or removed. (The gRPC server checks there that the
                caller may publish on the letter's subject.)

        Raises:
            NotFoundError: no such dead letter, or no stream collects the
                original subject any more.
            ValidationError: the message with this id is not a dead letter.
        """
        letter = await self.get(dead_letter_id)
        if check is not None:
            check(letter)
        headers = {
            name: letter.headers[name]
            for name in (
                wire.HEADER_DATA_TYPE,
                wire.HEADER_CONTENT_TYPE,
                wire.HEADER_TRACE_PARENT,
                wire.HEADER_TRACE_STATE,
            )
            if name in letter.headers
        }
        headers[wire.HEADER_PUBLISHED_TIME] = wire.format_time(None)
        headers[wire.HEADER_MSG_ID] = f"replay.{self.name}.{letter.id}"
        started = time.perf_counter()
        published = await self._publisher.send(letter.subject, letter.body, headers)
        metrics.published(
            published.stream, time.perf_counter() - started, duplicate=published.duplicate
        )
        await self._delete(letter.id)
        logger.info(
            "replayed dead letter %d of %s as event %d of %s",
            letter.id,
            self.name,
            published.id,
            published.stream,
            extra={"dead_letter_stream": self.name, "stream": published.stream},
        )
        return published

    async def delete(self, dead_letter_id: int) -> None:
        """Remove one dead letter.

        Raises:
            NotFoundError: no such dead letter.
        """
        await self._delete(dead_letter_id)
        logger.info(
            "deleted dead letter %d of %s",
            dead_letter_id,
            self.name,
            extra={"dead_letter_stream": self.name},
        )

    async def _delete(self, dead_letter_id: int) -> None:
        try:
            await self._api.request(f"STREAM.MSG.DELETE.{self.name}", {"seq": dead_letter_id})
        except ApiError as exc:
            if exc.code == 404 or exc.err_code in (NO_MESSAGE_FOUND, MESSAGE_DELETE_FAILED):
                raise NotFoundError(
                    f"dead letter {dead_letter_id} is not in {self.name!r}"
                ) from None
            raise exc.to_windshift(f"delete dead letter {dead_letter_id}") from None

    async def purge(self) -> int:
        """Remove every dead letter; return how many were removed.

        Raises:
            NotFoundError: the dead-letter stream does not exist.
        """
        try:
            answer = await self._api.request(f"STREAM.PURGE.{self.name}", {})
        except ApiError as exc:
            raise exc.to_windshift(f"purge {self.name!r}", stream=self.name) from None
        purged = int(answer.get("purged", 0))
        logger.info(
            "purged %d dead letters of %s",
            purged,
            self.name,
            extra={"dead_letter_stream": self.name},
        )
        return purged


__all__ = ["DeadLetter", "DeadLetterPolicy", "DeadLetterQueue", "move"]
