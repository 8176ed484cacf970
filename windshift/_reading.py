"""Reading a stream without processing it: one event, a page newest first, a tail.

Nothing here settles anything or moves a consumer: reads go through
``$JS.API.STREAM.MSG.GET`` or an ordered, ack-none consumer of their own
(:class:`~windshift._ordered.OrderedRead`), so operators can look at a stream
while its consumers work.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from windshift import _payloads as payloads
from windshift import _wire as wire
from windshift._connection import Connection
from windshift._jsapi import NO_MESSAGE_FOUND, STREAM_NOT_FOUND, ApiError, StoredMessage
from windshift._names import quote_value, validate_name, validate_subject
from windshift._ordered import OrderedRead, RecordIterator, StoredRecord
from windshift._pointers import StreamPointer
from windshift._streams import Streams
from windshift.errors import NotFoundError, StreamNotFoundError, ValidationError

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="Message | BaseModel")

#: Most events one :meth:`Reader.newest` call returns.
MAX_PAGE = 1000
# Ids a page may look at beyond ``limit`` (deleted events leave holes).
_HOLES = 1000
# How many reads of a page are in flight at once.
_IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as its stream keeps it, read without a consumer (nothing is settled).

    Example:
        >>> event = await client.get_event("orders", 17)
        >>> event.subject, event.data_type, event.to_json()
        ('orders.created', 'acme.orders.v1.OrderCreated', {'id': '17'})

    Attributes:
        stream: the stream it is in.
        id: its id (stream sequence).
        subject: the subject it was published to.
        stored: when the stream stored it.
        headers: all its headers.
        body: its body, as published (protobuf bytes, or JSON); empty when
            only headers were read.
        size: the size of its body in bytes.
    """

    stream: str
    id: int
    subject: str
    stored: datetime
    headers: Mapping[str, str]
    body: bytes = field(repr=False)
    size: int

    @property
    def data_type(self) -> str:
        """The type of its data (``WS-Data-Type``; empty when it carries none)."""
        return self.headers.get(wire.HEADER_DATA_TYPE, "")

    @property
    def content_type(self) -> str | None:
        """``application/json`` for JSON data, None for protobuf."""
        return payloads.content_type(self.headers)

    @property
    def idempotency_key(self) -> str | None:
        """The idempotency key it was published with (``Nats-Msg-Id``), if any."""
        return self.headers.get(wire.HEADER_MSG_ID) or None

    @property
    def timestamp(self) -> datetime:
        """When it was published (``WS-Published-Time``, else when it was stored)."""
        return wire.published_time(self.headers) or self.stored

    @property
    def data(self) -> AnyProto:
        """Its data as a ``google.protobuf.Any`` (JSON data as a ``Struct``)."""
        return payloads.as_any(self.data_type, self.body, self.content_type)

    def unpack(self, message_type: type[M]) -> M:
        """Parse the data as ``message_type``: a protobuf message or a pydantic model class.

        Raises:
            ValidationError: the data is of another type or format, or does not parse.
        """
        return payloads.decode(
            message_type,
            data_type=self.data_type,
            body=self.body,
            content=self.content_type,
            what=f"event {self.id} of stream {self.stream!r}",
        )

    def to_json(self, pool: DescriptorPool | None = None) -> object | None:
        """The data as a JSON-ready document; None when its type is unknown.

        JSON data is parsed; protobuf data is decoded when ``pool`` (or
        protobuf's default pool: every generated module imported so far)
        knows its type.
        """
        return payloads.to_json(self.data_type, self.body, self.content_type, pool)

    @classmethod
    def of_stored(cls, stream: str, message: StoredMessage) -> StoredEvent:
        return cls(
            stream=stream,
            id=message.sequence,
            subject=message.subject,
            stored=wire.parse_time(message.time),
            headers=message.headers,
            body=message.data,
            size=len(message.data),
        )

    @classmethod
    def of_record(cls, stream: str, record: StoredRecord) -> StoredEvent:
        return cls(
            stream=stream,
            id=record.sequence,
            subject=record.subject,
            stored=wire.time_from_nanos(record.timestamp_ns),
            headers=record.headers,
            body=record.data,
            size=record.size,
        )


class EventTail(RecordIterator[StoredEvent]):
    """An async iterator of :class:`StoredEvent`, in stream order; use it with ``async with``.

    Get one from :meth:`windshift.Client.tail`. Without ``follow`` it ends
    once every event that matched when it began was handed on. Iterating it
    before entering the ``async with``, or entering it twice, raises
    ValidationError.
    """

    noun = "tail"


class Reader:
    """Reads of streams over one connection (behind ``Client.get_event``, ``read_events``, ``tail``)."""

    def __init__(self, connection: Connection, streams: Streams) -> None:
        self._connection = connection
        self._api = connection.api
        self._streams = streams

    async def get(self, stream: str, event_id: int) -> StoredEvent:
        """One event; see ``Client.get_event``."""
        validate_name("stream", stream)
        _check_id(event_id, "event id")
        found = await self._get(stream, event_id)
        if found is None:
            raise NotFoundError(f"event {event_id} is not in stream {stream!r}")
        return found

    async def _get(self, stream: str, event_id: int) -> StoredEvent | None:
        try:
            message = await self._api.get_message(stream, {"seq": event_id})
        except ApiError as exc:
            if exc.err_code == NO_MESSAGE_FOUND:
                return None
            if exc.err_code == STREAM_NOT_FOUND:
                raise StreamNotFoundError(
                    f"stream {stream!r} does not exist", stream=stream
                ) from None
            raise exc.to_windshift(
                f"event {event_id} of stream {stream!r}", stream=stream
            ) from None
        return StoredEvent.of_stored(stream, message)

    async def newest(self, stream: str, *, before_id: int | None, limit: int) -> list[StoredEvent]:
        """A page of events, newest first; see ``Client.read_events``."""
        validate_name("stream", stream)
        if before_id is not None:
            _check_id(before_id, "before_id")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValidationError(
                f"limit must be a number of events from 1 to {MAX_PAGE}, got {quote_value(limit)}"
            )
        info = await self._streams.info(stream)
        top = info.last_id if before_id is None else min(before_id - 1, info.last_id)
        bottom = max(info.first_id, 1, top - limit - _HOLES + 1)
        page: list[StoredEvent] = []
        next_id = top
        while next_id >= bottom and len(page) < limit:
            count = min(_IN_FLIGHT, limit - len(page))
            ids = range(next_id, max(bottom - 1, next_id - count), -1)
            found = await asyncio.gather(*(self._get(stream, event_id) for event_id in ids))
            page.extend(event for event in found if event is not None)
            next_id = ids[-1] - 1
        return page[:limit]

    def tail(
        self, stream: str, *, subjects: Sequence[str], start: StreamPointer, follow: bool
    ) -> EventTail:
        """Events in stream order, acknowledging nothing; see ``Client.tail``."""
        validate_name("stream", stream)
        if isinstance(subjects, str):
            raise ValidationError(f"subjects must be a list of subjects, got {subjects!r}")
        for subject in subjects:
            validate_subject(subject, wildcards=True)
        if not isinstance(start, StreamPointer):
            raise ValidationError(f"start must be a StreamPointer, got {quote_value(start)}")
        read = OrderedRead(
            self._connection,
            stream,
            subjects=subjects,
            start=start.consumer_fields(),
            follow=follow,
            what=f"tail of stream {stream!r}",
        )
        return EventTail(read, functools.partial(StoredEvent.of_record, stream))


def _check_id(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{what} must be an event id of 1 or more, got {quote_value(value)}")


__all__ = ["MAX_PAGE", "EventTail", "Reader", "StoredEvent"]
