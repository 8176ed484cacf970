"""Proto messages <-> windshift values: the façade's only translation layer.

Every function turns one proto value into the library's argument (or an
Event into its proto), and refuses what cannot be converted with a
:class:`~windshift.ValidationError` naming the field and the value. What the
library itself checks (names, subjects, ranges) is left to the library, so
that gRPC and Python callers get the same answers.

The proto field ``from`` is a Python keyword: it is read with
``getattr(message, "from")`` after ``message.HasField("from")``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from windshift import (
    ConsumerOptions,
    DeadLetter,
    Event,
    OutgoingEvent,
    PublishedEvent,
    StreamOptions,
    StreamPointer,
    StreamSource,
    ValidationError,
    WindshiftError,
)
from windshift._payloads import JSON
from windshift._wire import HEADER_TRACE_PARENT, TYPE_URL_PREFIX
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc.status import status_for
from windshift_grpc.undecodable import count_fields

_PROPAGATOR = TraceContextTextMapPropagator()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Fields of the original's messages numbered from here up are additions of this implementation.
FIRST_ADDED_FIELD = 100
#: Dead letters per ListDeadLetters answer when the request sets no limit.
DEFAULT_DEAD_LETTER_PAGE = 100
#: The largest ``limit`` a ListDeadLetters request may ask for.
MAX_DEAD_LETTER_PAGE = 1000
#: Events per PublishEvents call when serve is not told otherwise
#: (``WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS``).
DEFAULT_PUBLISH_EVENTS_MAX_EVENTS = 1000

_DISCARD = {
    pb.EnsureStreamRequest.DISCARD_POLICY_UNSPECIFIED: "old",
    pb.EnsureStreamRequest.DISCARD_POLICY_OLD: "old",
    pb.EnsureStreamRequest.DISCARD_POLICY_NEW: "new",
}
_STORAGE = {
    pb.EnsureStreamRequest.STORAGE_TYPE_UNSPECIFIED: "file",
    pb.EnsureStreamRequest.STORAGE_TYPE_FILE: "file",
    pb.EnsureStreamRequest.STORAGE_TYPE_MEMORY: "memory",
}


def duration(value: Duration, field: str) -> timedelta:
    """A proto Duration as a timedelta.

    Raises:
        ValidationError: the Duration is out of range or malformed.
    """
    try:
        return value.ToTimedelta()
    except (ValueError, OverflowError) as exc:
        raise ValidationError(
            f"{field} is not a valid duration (seconds={value.seconds}, nanos={value.nanos}): {exc}"
        ) from None


def to_duration(value: timedelta) -> Duration:
    """A timedelta as a proto Duration."""
    result = Duration()
    result.FromTimedelta(value)
    return result


def timestamp(value: Timestamp, field: str) -> datetime:
    """A proto Timestamp as an aware UTC datetime.

    Raises:
        ValidationError: the Timestamp is outside what a datetime can hold.
    """
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValidationError(
            f"{field} is not a valid timestamp (seconds={value.seconds}, nanos={value.nanos}): "
            f"{exc}"
        ) from None


def timestamp_ns(value: Timestamp, field: str) -> int:
    """A proto Timestamp as nanoseconds since the Unix epoch, every digit kept.

    Raises:
        ValidationError: the Timestamp is outside what a datetime can hold
            (the years 1 to 9999), or its nanos are out of range.
    """
    timestamp(value, field)  # the same range checks, and message
    return value.seconds * 1_000_000_000 + value.nanos


def to_timestamp(value: datetime) -> Timestamp:
    """An aware datetime as a proto Timestamp."""
    # Exact arithmetic on the difference; Timestamp.FromDatetime gives the
    # same, several times slower (it is on the path of every event).
    since = value - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def pointer(value: pb.StreamPointer) -> StreamPointer | None:
    """A proto StreamPointer as a library one; None means "the default".

    The original service's reading is kept: a pointer without any member set,
    and ``offset: 0``, leave the default in place (new events for a consumer,
    the whole source stream for a mirror or source).
    """
    kind = value.WhichOneof("pointer")
    if kind == "start":
        return StreamPointer.start()
    if kind == "end":
        return StreamPointer.end()
    if kind == "time":
        return StreamPointer.time(timestamp(value.time, "from.time"))
    if kind == "offset" and value.offset > 0:
        return StreamPointer.offset(value.offset)
    return None


def _limit(value: int) -> int | None:
    # JetStream reads 0 as "no limit", and so did the original service.
    return value or None


def stream_options(request: pb.EnsureStreamRequest) -> StreamOptions:
    """The options an EnsureStream request states (left-out fields: the defaults).

    Fields added by this implementation that the request leaves out take the
    defaults too; :func:`unset_additions` names them, for the servicer to
    keep what an existing stream has.
    """
    options: dict[str, Any] = {}
    source = request.WhichOneof("source")
    if source == "subjects":
        options["subjects"] = list(request.subjects.subjects)
    elif source == "mirror":
        options["mirror"] = stream_source(request.mirror, "mirror")
    elif source == "aggregate":
        options["sources"] = [
            stream_source(item, f"aggregate.sources[{index}]")
            for index, item in enumerate(request.aggregate.sources)
        ]
    if request.HasField("retention_policy"):
        retention = request.retention_policy
        if retention.HasField("max_age"):
            age = duration(retention.max_age, "retention_policy.max_age")
            options["max_age"] = age or None
        if retention.HasField("max_events"):
            options["max_events"] = _limit(retention.max_events)
        if retention.HasField("max_events_per_subject"):
            options["max_events_per_subject"] = _limit(retention.max_events_per_subject)
        if retention.HasField("max_bytes"):
            options["max_bytes"] = _limit(retention.max_bytes)
        if retention.HasField("discard_policy"):
            options["discard"] = _enum(
                _DISCARD, retention.discard_policy, "retention_policy.discard_policy"
            )
        if retention.HasField("discard_new_per_subject"):
            options["discard_new_per_subject"] = retention.discard_new_per_subject
    if request.HasField("storage"):
        if request.storage.HasField("type"):
            options["storage"] = _enum(_STORAGE, request.storage.type, "storage.type")
        if request.storage.HasField("replicas"):
            options["replicas"] = request.storage.replicas
    if request.HasField("deduplication_window"):
        options["deduplication_window"] = duration(
            request.deduplication_window, "deduplication_window"
        )
    if request.HasField("max_event_size"):
        options["max_event_size"] = _limit(request.max_event_size)
    options.update(additions(request, StreamOptions))
    return StreamOptions(**options)


def stream_source(value: pb.EnsureStreamRequest.StreamSource, field: str) -> StreamSource:
    """A mirror or aggregate source as a library StreamSource."""
    start = pointer(getattr(value, "from")) if value.HasField("from") else None
    return StreamSource(value.name, start=start, filter_subjects=list(value.filter_subjects))


def consumer_options(request: pb.EnsureConsumerRequest) -> ConsumerOptions:
    """The options an EnsureConsumer request states (left-out fields: the defaults).

    As for streams, :func:`unset_additions` names the added fields left out.
    """
    if not request.subjects:
        raise ValidationError("a consumer needs at least one subject")
    options: dict[str, Any] = {"subjects": list(request.subjects)}
    if request.HasField("from"):
        options["start"] = pointer(getattr(request, "from"))
    if request.HasField("processing_timeout"):
        timeout = duration(request.processing_timeout, "processing_timeout")
        if timeout:  # zero means the default, as in the original service
            options["processing_timeout"] = timeout
    options.update(additions(request, ConsumerOptions))
    return ConsumerOptions(**options)


def _added_fields(request: Message, kind: type[Any]) -> list[Any]:
    """The request's fields added by this implementation (100 and up) that are options of ``kind``.

    An added field takes the name of the library option it carries; a test
    checks that every added field of EnsureStream and EnsureConsumer does.
    """
    names = {option.name for option in dataclasses.fields(kind)}
    return [
        field
        for field in request.DESCRIPTOR.fields
        if field.number >= FIRST_ADDED_FIELD and field.name in names
    ]


def additions(request: Message, kind: type[Any]) -> dict[str, Any]:
    """The options added by this implementation that ``request`` sets, as library values.

    Set means set: a zero value (0, "", an empty Duration) means the option's
    default (None: no limit, no dead-letter stream, ...). Durations become
    timedeltas, StreamPointers pointers, repeated fields lists.
    """
    defaults = {option.name: option.default for option in dataclasses.fields(kind)}
    found: dict[str, Any] = {}
    for field in _added_fields(request, kind):
        value = getattr(request, field.name)
        if field.is_repeated:
            if value:
                found[field.name] = list(value)
            continue
        if not request.HasField(field.name):
            continue
        if isinstance(value, Duration):
            value = duration(value, field.name)
        elif isinstance(value, pb.StreamPointer):
            value = pointer(value)
        found[field.name] = value or defaults[field.name]
    return found


def unset_additions(request: Message, kind: type[Any]) -> set[str]:
    """The options added by this implementation that ``request`` leaves out.

    They are kept from an existing stream or consumer: a client generated
    from the original protos knows nothing of them and must not reset them.
    """
    return {
        field.name
        for field in _added_fields(request, kind)
        if not field.is_repeated and not request.HasField(field.name)
    }


def publish_options(request: pb.PublishEventRequest) -> dict[str, Any]:
    """The keyword arguments of ``Client.publish`` (after subject and data)."""
    options: dict[str, Any] = {}
    if request.HasField("timestamp"):
        # Nanoseconds, not a datetime: Go writes nine digits, and so do we.
        options["timestamp"] = timestamp_ns(request.timestamp, "timestamp")
    if request.HasField("idempotency_key"):
        options["idempotency_key"] = request.idempotency_key
    if request.HasField("expected_last_id"):
        options["expected_last_id"] = request.expected_last_id
    return options


def outgoing_events(
    request: pb.PublishEventsRequest, *, max_events: int = DEFAULT_PUBLISH_EVENTS_MAX_EVENTS
) -> list[OutgoingEvent]:
    """The events of a PublishEvents request, for ``Client.publish_many``.

    Each event is read as PublishEvent reads its request
    (:func:`publish_options`); the library then validates them all before
    it publishes any.

    Args:
        request: the request.
        max_events: the most events one call may carry
            (``WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS``); counted before
            anything is converted.

    Raises:
        ValidationError: more events than ``max_events`` (the message names
            both numbers), or an event whose timestamp is out of range (its
            index is named, as the library names the events it refuses).
    """
    count = len(request.events)
    if count > max_events:  # (serve refuses it before decoding: publish_events_guard)
        raise ValidationError(_too_many_events(count, max_events))
    events: list[OutgoingEvent] = []
    for index, event in enumerate(request.events):
        try:
            options = publish_options(event)
        except ValidationError as exc:
            raise ValidationError(f"event {index}: {exc}") from None
        events.append(OutgoingEvent(event.subject, event.data, **options))
    return events


def publish_events_guard(max_events: int) -> Callable[[bytes], str | None]:
    """A check of a PublishEvents request's bytes before they are decoded (for the call layer).

    Decoding builds an object per event: 4 MiB of empty events would take
    the server's memory up by hundreds of MiB before the count could be
    checked. The guard counts the events in the bytes instead, looking at
    their tags and lengths only, and answers why a request is refused (the
    same words as :func:`outgoing_events`), or None.
    """
    # Beyond this many fields the walk stops: enough to name the count of a
    # batch that is merely too large, little work for one made to be walked.
    walk = max_events + min(max_events, 10_000) + 16

    def guard(data: bytes) -> str | None:
        # Every event starts with the byte 0x0a (field 1, length-delimited):
        # fewer of those than the limit, and there is nothing to count.
        if data.count(0x0A) <= max_events:
            return None
        count = count_fields(data, 1, walk)
        if count is None or count <= max_events:
            return None  # (a broken encoding: the parser says why)
        if count > walk:
            return (
                f"PublishEvents carries more than {walk} fields, more than the {max_events} "
                "events one call may carry (WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS); send them in "
                "several calls"
            )
        return _too_many_events(count, max_events)

    return guard


def _too_many_events(count: int, max_events: int) -> str:
    return (
        f"PublishEvents carries {count} events, more than the {max_events} one call may "
        "carry (WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS); send them in several calls"
    )


def publish_result(result: PublishedEvent | WindshiftError) -> pb.PublishEventResult:
    """One event's outcome in a PublishEvents answer.

    A refusal carries the status code and message PublishEvent would have
    ended with for the same event (the one table of
    :mod:`windshift_grpc.status`).
    """
    if isinstance(result, PublishedEvent):
        return pb.PublishEventResult(id=result.id, duplicate=result.duplicate)
    code, message = status_for(result, "PublishEvents")
    return pb.PublishEventResult(error=pb.PublishEventError(code=code.value[0], message=message))


def dead_letter_page(request: pb.ListDeadLettersRequest, *, max_bytes: int) -> dict[str, Any]:
    """The keyword arguments of ``DeadLetterQueue.list`` for a ListDeadLetters request.

    Args:
        request: the request.
        max_bytes: the byte budget of one answer (``WINDSHIFT_DEAD_LETTER_PAGE_BYTES``);
            the library ends the page before its letters would pass it.

    Raises:
        ValidationError: ``limit`` is above :data:`MAX_DEAD_LETTER_PAGE`.
    """
    limit = request.limit or DEFAULT_DEAD_LETTER_PAGE  # unset or 0: the default
    if limit > MAX_DEAD_LETTER_PAGE:
        raise ValidationError(f"limit must be at most {MAX_DEAD_LETTER_PAGE}, got {limit}")
    return {"after_id": request.after_id, "limit": limit, "max_bytes": max_bytes}


def headers(
    published_ns: int | None, idempotency_key: str | None, context: otel_context.Context | None
) -> pb.Headers:
    """The Headers of an event or dead letter: its time, key and trace context (if any)."""
    result = pb.Headers()
    _fill_headers(result, published_ns, idempotency_key, context)
    return result


def _fill_headers(
    target: pb.Headers,
    published_ns: int | None,
    idempotency_key: str | None,
    context: otel_context.Context | None,
) -> None:
    # Set in place: on the path of every delivered event, and several times
    # cheaper than building the messages and copying them in.
    if published_ns is not None:
        timestamp = target.timestamp
        timestamp.SetInParent()  # (present even at the epoch itself)
        timestamp.seconds, timestamp.nanos = divmod(published_ns, 1_000_000_000)
    if idempotency_key is not None:
        target.idempotency_key = idempotency_key
    if context is None:
        return
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    if "traceparent" in carrier:
        target.trace_parent = carrier["traceparent"]
    if "tracestate" in carrier:
        target.trace_state = carrier["tracestate"]


def event(value: Event) -> pb.Event:
    """A delivered event as the proto the Events stream sends.

    Its trace context is the one of the delivery's span (a child of the
    publish) when there is one, else the publish's.
    """
    result = pb.Event()
    fill_event(result, value)
    return result


def fill_event(target: pb.Event, value: Event) -> None:
    """Write the delivered event ``value`` into the empty ``target`` (see :func:`event`)."""
    span = value.span
    context: otel_context.Context | None = None
    if span is not None and span.get_span_context().is_valid:
        context = trace.set_span_in_context(span)
    elif HEADER_TRACE_PARENT in value.headers:
        context = value.trace_context
    target.id = value.id
    target.subject = value.subject
    target.delivery_attempt = value.delivery_attempt
    _fill_headers(target.headers, value.timestamp_ns, value.idempotency_key, context)
    if value.content_type == JSON:
        target.data.CopyFrom(value.data)  # the JSON body as a Struct
    else:
        data = target.data
        data.type_url = TYPE_URL_PREFIX + value.data_type
        data.value = value.body


def dead_letter(value: DeadLetter) -> pb.DeadLetter:
    """A dead letter as its proto.

    Its headers carry the original publish's time and trace context. The
    idempotency key stays unset: the event's own key is not kept with a
    dead letter (its ``Nats-Msg-Id`` is the key of the move).
    """
    return pb.DeadLetter(
        id=value.id,
        subject=value.subject,
        stream=value.stream,
        consumer=value.consumer,
        event_id=value.event_id,
        attempts=value.attempts,
        reason=value.reason,
        dead_since=to_timestamp(value.dead_since),
        headers=headers(value.timestamp_ns, None, value.trace_context),
        data=value.data,
    )


def _enum(table: Mapping[Any, str], number: int, field: str) -> str:
    try:
        return table[number]
    except KeyError:
        raise ValidationError(f"{field} has no value {number}") from None


__all__ = [
    "DEFAULT_DEAD_LETTER_PAGE",
    "DEFAULT_PUBLISH_EVENTS_MAX_EVENTS",
    "FIRST_ADDED_FIELD",
    "MAX_DEAD_LETTER_PAGE",
    "additions",
    "consumer_options",
    "dead_letter",
    "dead_letter_page",
    "duration",
    "event",
    "headers",
    "outgoing_events",
    "pointer",
    "publish_events_guard",
    "publish_options",
    "publish_result",
    "stream_options",
    "stream_source",
    "timestamp",
    "timestamp_ns",
    "to_duration",
    "to_timestamp",
    "unset_additions",
]
