"""Batched calls: PublishEvents and Subscribe.max_batch, through real serve processes.

PublishEvents publishes many events in one call, pipelined, with one result
per event: partial failures carry their own codes, a validation failure or a
missing permission refuses the whole call with nothing stored, and its size
is bounded. Events with ``max_batch`` sends the events that are ready in one
message, within the same flow control as single events, and clients that
leave it out (old ones included) get exactly what they got before.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests.grpc.test_proto import _original_message_class
from tests.grpc_fixtures import (
    EventsClient,
    ServeProcess,
    StartServe,
    ensure_consumer,
    ensure_stream,
    publish,
    string_any,
    unpack_text,
)
from windshift_grpc import convert
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.events_stream import MAX_BATCH, MAX_BATCH_BYTES, _Call

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EVENTS = "/windshift.events.v1alpha1.EventsService/Events"


def event(subject: str, text: str, **fields: Any) -> pb.PublishEventRequest:
    return pb.PublishEventRequest(subject=subject, data=string_any(text), **fields)


async def publish_events(
    stub: Stub, *events: pb.PublishEventRequest, metadata: Any = None
) -> list[pb.PublishEventResult]:
    response: pb.PublishEventsResponse = await stub.PublishEvents(
        pb.PublishEventsRequest(events=events), metadata=metadata
    )
    return list(response.results)


async def stored_texts(stub: Stub, stream: str, count: int) -> list[tuple[int, str, str]]:
    """The stream's events from its start: (id, subject, text), read through a new consumer."""
    consumer = await ensure_consumer(stub, stream, f"reader{secrets.token_hex(3)}")
    call = EventsClient(stub)
    try:
        await call.subscribe(stream, consumer, max_processing_events=max(count, 1))
        events = await call.events(count)
    finally:
        await call.cancel()
    return [(e.id, e.subject, unpack_text(e)) for e in events]


# --- PublishEvents ---------------------------------------------------------------


async def test_publish_events_stores_the_good_ones_and_answers_each_failure_with_its_code(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    await ensure_stream(stub, name)
    [first] = await publish(stub, f"{name}.a", "first")
    results = await publish_events(
        stub,
        event(f"{name}.b", "one"),
        event(f"{name}.a", "wrong last id", expected_last_id=first + 100),
        event(f"{name}.c", "keyed", idempotency_key="k-1"),
        event(f"{name}.c", "same key again", idempotency_key="k-1"),
        event(f"nostream{name}.x", "nowhere"),
        event(f"{name}.a", "right last id", expected_last_id=first),
    )
    kinds = [result.WhichOneof("result") for result in results]
    assert kinds == ["id", "error", "id", "id", "error", "id"]
    one, conflict, keyed, again, nowhere, last = results
    assert (one.id, keyed.id, last.id) == (first + 1, first + 2, first + 3)
    assert not (one.duplicate or keyed.duplicate or last.duplicate)
    # The duplicate is PublishEvent's answer to one: the first event's id, nothing stored.
    assert (again.id, again.duplicate) == (keyed.id, True)
    # Each failure carries the status PublishEvent answers for the same event.
    assert conflict.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "wrong last sequence" in conflict.error.message, conflict.error.message
    with pytest.raises(grpc.aio.AioRpcError) as alone:
        await stub.PublishEvent(event(f"nostream{name}.x", "nowhere"))
    assert nowhere.error.code == alone.value.code().value[0] == grpc.StatusCode.NOT_FOUND.value[0]
    assert nowhere.error.message == alone.value.details()

    assert await stored_texts(stub, name, 4) == [
        (first, f"{name}.a", "first"),
        (first + 1, f"{name}.b", "one"),
        (first + 2, f"{name}.c", "keyed"),
        (first + 3, f"{name}.a", "right last id"),
    ]
    assert (await client.stream_info(name)).events == 4


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"idempotency_key": "a\nb"}, "event 2: idempotency_key must not contain line breaks"),
        ({"idempotency_key": " "}, "event 2: idempotency_key must be a non-empty string"),
        ({"subject": "{name}..x"}, "event 2: "),
        # Once, a subject this long closed serve's one NATS connection for everyone.
        ({"subject": "{name}." + "a" * 4096}, "characters long, longer than NATS can carry"),
        ({"timestamp": Timestamp(seconds=-(10**12))}, "event 2: timestamp is not a valid"),
    ],
    ids=["key-line-break", "key-blank", "subject", "subject-too-long", "timestamp"],
)
async def test_one_invalid_event_refuses_the_whole_call_before_anything_is_published(
    stub: Stub, client: windshift.Client, name: str, bad: dict[str, Any], named: str
) -> None:
    await ensure_stream(stub, name)
    fields = {
        key: value.format(name=name) if isinstance(value, str) else value
        for key, value in bad.items()
    }
    wrong = event(f"{name}.a", "bad")
    for key, value in fields.items():
        if isinstance(value, Timestamp):
            getattr(wrong, key).CopyFrom(value)
        else:
            setattr(wrong, key, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await publish_events(
            stub,
            event(f"{name}.a", "good"),
            event(f"{name}.b", "good"),
            wrong,
            event(f"{name}.c", "good"),
        )
    assert refused.value.code() == INVALID
    details = str(refused.value.details())
    assert named in details, details
    if "subject" in fields:  # the bad value itself (a long one shortened)
        assert repr(fields["subject"])[:60] in details, details
    assert (await client.stream_info(name)).events == 0


async def test_an_empty_batch_is_answered_with_no_results(stub: Stub) -> None:
    assert await publish_events(stub) == []


async def test_more_events_than_the_setting_allows_are_refused_naming_count_and_limit(
    start_serve: StartServe, client: windshift.Client, name: str
) -> None:
    server = await start_serve(WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS="5")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await publish_events(stub, *(event(f"{name}.a", str(n)) for n in range(6)))
        assert refused.value.code() == INVALID
        assert refused.value.details() == (
            "PublishEvents carries 6 events, more than the 5 one call may carry "
            "(WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS); send them in several calls"
        )
        assert (await client.stream_info(name)).events == 0
        results = await publish_events(stub, *(event(f"{name}.a", str(n)) for n in range(5)))
        assert [result.id for result in results] == [1, 2, 3, 4, 5]


async def test_a_batch_over_grpcs_message_limit_is_resource_exhausted(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    # 1000 events of 5 kB: within the count, over the 4 MiB gRPC accepts.
    await ensure_stream(stub, name)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await publish_events(stub, *(event(f"{name}.a", "x" * 5000) for _ in range(1000)))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await client.stream_info(name)).events == 0


def _tokens(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"tokens": entries}))
    path.chmod(0o600)  # plain tokens: a file others may read is refused
    return path


@dataclass
class Secured:
    """A serve requiring tokens, a stub on it, and the metadata of two tokens."""

    server: ServeProcess
    stub: Stub
    admin: list[tuple[str, str]]  # may do everything
    limited: list[tuple[str, str]]  # may publish on <name>ok.> only


@pytest.fixture
async def secured(start_serve: StartServe, tmp_path: Path, name: str) -> AsyncIterator[Secured]:
    admin, limited = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path = _tokens(
        tmp_path / "tokens.json",
        [
            {"name": "admin", "token": admin, "publish": [">"], "consume": [">"], "manage": [">"]},
            {"name": "limited", "token": limited, "publish": [f"{name}ok.>"]},
        ],
    )
    server = await start_serve(WINDSHIFT_AUTH_FILE=str(path))
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        as_admin = [("authorization", f"Bearer {admin}")]
        for stream in (f"{name}ok", f"{name}no"):
            await stub.EnsureStream(
                pb.EnsureStreamRequest(
                    name=stream, subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{stream}.>"])
                ),
                metadata=as_admin,
            )
        yield Secured(server, stub, as_admin, [("authorization", f"Bearer {limited}")])


async def test_one_event_the_token_may_not_publish_refuses_the_whole_call(
    secured: Secured, client: windshift.Client, name: str
) -> None:
    stub, limited = secured.stub, secured.limited
    allowed, denied = f"{name}ok", f"{name}no"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await publish_events(
            stub,
            event(f"{allowed}.a", "fine"),
            event(f"{allowed}.b", "fine"),
            event(f"{denied}.a", "not for this token"),
            event(f"{denied}.a", "nor this"),
            metadata=limited,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        f"token 'limited' may not publish on subject '{denied}.a' "
        "(event 2 of 4, nothing was published)"
    )
    assert (await client.stream_info(allowed)).events == 0
    assert (await client.stream_info(denied)).events == 0
    # Within its subjects the same token publishes batches.
    results = await publish_events(
        stub, event(f"{allowed}.a", "one"), event(f"{allowed}.b", "two"), metadata=limited
    )
    assert [result.id for result in results] == [1, 2]
    # Not even the admin publishes on NATS' own subjects, in a batch either.
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await publish_events(
            stub,
            event(f"{allowed}.a", "fine"),
            event("_INBOX.abc.def", "fake reply"),
            metadata=secured.admin,
        )
    assert internal.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "(event 1 of 2, nothing was published)" in str(internal.value.details())
    assert (await client.stream_info(allowed)).events == 2
    # Without a token: refused before anything else.
    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        await publish_events(stub, event(f"{allowed}.a", "x"))
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _status_mib(server: ServeProcess, field: str) -> float:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{server.process.pid}/status")


def _reset_peak(server: ServeProcess) -> None:
    """Measure the serve process's peak resident memory (VmHWM) anew, from now."""
    assert server.process is not None
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")


async def test_a_huge_batch_is_refused_from_its_bytes_without_being_decoded(
    secured: Secured, client: windshift.Client, name: str
) -> None:
    # 4 MiB of empty events (two million of them): decoded, they once took
    # serve's memory up by 180 MiB before any token was checked, and 360 MiB
    # more (and 0.8 s of its event loop) behind a valid one.
    raw = b"\x0a\x00" * (2 * 1024 * 1024 - 16)
    server = secured.server
    async with grpc.aio.insecure_channel(server.target) as channel:
        method = channel.unary_unary("/windshift.events.v1alpha1.EventsService/PublishEvents")
        _reset_peak(server)
        before = _status_mib(server, "VmRSS")
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await method(raw)
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await method(raw, metadata=secured.admin)
        assert refused.value.code() == INVALID
        assert refused.value.details() == (
            "PublishEvents carries more than 2016 fields, more than the 1000 events one call "
            "may carry (WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS); send them in several calls"
        )
        grown = _status_mib(server, "VmHWM") - before
    assert grown < 40, f"serve grew by {grown:.0f} MiB"
    assert (await client.stream_info(f"{name}ok")).events == 0


def test_the_guard_counts_events_by_their_tags_alone() -> None:
    guard = convert.publish_events_guard(3)
    one = pb.PublishEventRequest(subject="a.b", data=string_any("\n" * 50))  # 0x0a bytes inside
    assert guard(pb.PublishEventsRequest(events=[one] * 3).SerializeToString()) is None
    assert guard(pb.PublishEventsRequest(events=[one] * 4).SerializeToString()) == (
        "PublishEvents carries 4 events, more than the 3 one call may carry "
        "(WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS); send them in several calls"
    )
    # Fields of other numbers (a newer client's) are not events, but are walked
    # at most so far: 3 + 3 + 16 fields.
    unknown = b"\x10\x01"  # field 2, a varint
    assert guard(unknown * 22 + b"\x0a\x00" * 4) is not None
    assert guard(unknown * 22) is None  # no 0x0a byte at all: nothing to count
    assert "more than 22 fields" in str(guard(unknown * 30 + b"\x0a\x00" * 4))
    # A broken encoding is left to the parser, which names the fault.
    assert guard(b"\x0a\x00" * 4 + b"\x0a\x09ab") is None


# --- Events with max_batch ----------------------------------------------------------


async def _receive_all(
    call: EventsClient, count: int, max_unsettled: int, ack_at: int
) -> tuple[list[int], int]:
    """Receive ``count`` events, acking ``ack_at`` at a time; the ids and the most unsettled seen."""
    received: list[int] = []
    unsettled: list[int] = []
    most = 0
    while len(received) < count:
        got = await call.next_event()
        received.append(got.id)
        unsettled.append(got.id)
        # Events a batch brought along are already here: count them as unsettled too.
        while call.pending_events() and len(received) < count:
            more = await call.next_event()
            received.append(more.id)
            unsettled.append(more.id)
        most = max(most, len(unsettled))
        assert len(unsettled) <= max_unsettled, unsettled
        if len(unsettled) >= ack_at or len(received) == count:
            confirmed = await call.ack(*unsettled)
            assert sorted(confirmed.ids) == sorted(unsettled)
            unsettled = []
    return received, most


@pytest.mark.parametrize(
    ("max_processing_events", "max_batch"),
    [(5, 50), (50, 3)],
    ids=["flow-control-bounds", "max-batch-bounds"],
)
async def test_batches_stay_within_flow_control_and_deliver_every_event_once(
    stub: Stub,
    client: windshift.Client,
    events_client: Any,
    name: str,
    max_processing_events: int,
    max_batch: int,
) -> None:
    await ensure_stream(stub, name)
    published: list[int] = []
    for chunk in range(3):
        results = await publish_events(
            stub, *(event(f"{name}.a", f"{chunk}-{n}") for n in range(100))
        )
        published += [result.id for result in results]
    consumer = await ensure_consumer(stub, name)
    call: EventsClient = events_client()
    await call.subscribe(
        name, consumer, max_processing_events=max_processing_events, max_batch=max_batch
    )
    received, most = await _receive_all(
        call, len(published), max_unsettled=max_processing_events, ack_at=max_processing_events
    )
    assert sorted(received) == published  # each exactly once
    assert received == published  # and in order (nothing was redelivered)
    assert most == max_processing_events
    largest = min(max_processing_events, max_batch)
    assert 1 < max(call.batches) <= largest, call.batches  # batches, within both bounds
    # Every event came in a batch: no single `event` message on this call.
    assert not [r for r in call.responses if r.HasField("event")]
    assert sum(call.batches) == len(published)
    info = await client.consumer_info(name, consumer)
    assert (info.pending_events, info.unsettled_events) == (0, 0)


async def test_large_events_come_in_batches_of_at_most_a_mebibyte(
    stub: Stub, events_client: Any, name: str
) -> None:
    # 300 kB events, all held at once (within the 4 MiB default).
    await ensure_stream(stub, name)
    ids = [
        result.id
        for result in await publish_events(
            stub, *(event(f"{name}.a", f"{n:02d}" + "x" * 300_000) for n in range(12))
        )
    ]
    consumer = await ensure_consumer(stub, name)
    call: EventsClient = events_client()
    await call.subscribe(name, consumer, max_processing_events=100, max_batch=100)
    received, _ = await _receive_all(call, len(ids), max_unsettled=12, ack_at=12)
    assert received == ids
    assert max(call.batches) <= 3, call.batches
    sizes = [r.ByteSize() for r in call.responses if r.HasField("events")]
    assert max(sizes) < MAX_BATCH_BYTES + 100, sizes


async def test_a_batch_ends_before_it_passes_a_mebibyte(
    client: windshift.Client, name: str
) -> None:
    # How many large events are ready at once depends on timing; here the
    # outbox of a real call holds 12 real events of 300 kB, all ready: three
    # fit in a batch, the fourth waits at the head for the next one.
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    for n in range(12):
        await client.publish(f"{name}.a", StringValue(value=f"{n:02d}" + "x" * 300_000))
    await client.ensure_consumer(
        name, "big", subjects=[f"{name}.>"], start=windshift.StreamPointer.start()
    )
    async with client.subscribe(name, "big", max_pending_events=12, auto_ping=False) as held:
        events = [await anext(held) for _ in range(12)]

        async def nothing() -> AsyncIterator[pb.EventsRequest]:
            return
            yield

        running = _Call(held, nothing(), asyncio.Event(), 10_000, None, max_batch=100)
        running._outbox.extend(events[1:])

        def batch(first: windshift.Event) -> list[pb.Event]:
            response = running._batch(first)
            assert response is not None
            return list(response.events.events)

        batches = [batch(events[0])]
        while running._outbox:
            first = running._outbox.popleft()
            assert isinstance(first, windshift.Event)
            batches.append(batch(first))
        for each in events:
            await each.ack()
    assert [[e.id for e in batch] for batch in batches] == [
        [1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
        [10, 11, 12],
    ]
    assert all(sum(e.ByteSize() for e in batch) <= MAX_BATCH_BYTES for batch in batches)


async def test_batches_stay_within_the_pending_bytes_limit(
    start_serve: StartServe, client: windshift.Client, name: str
) -> None:
    # Events of 2 kB and a little (headers, subject), at most 7000 bytes held:
    # three events at a time, whatever max_processing_events and max_batch say.
    server = await start_serve(WINDSHIFT_EVENTS_MAX_PENDING_BYTES="7000")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        results = await publish_events(
            stub, *(event(f"{name}.a", f"{n:04d}" + "x" * 2000) for n in range(60))
        )
        published = [result.id for result in results]
        consumer = await ensure_consumer(stub, name)
        call = EventsClient(stub)
        try:
            await call.subscribe(name, consumer, max_processing_events=100, max_batch=100)
            received, most = await _receive_all(call, 60, max_unsettled=3, ack_at=3)
        finally:
            await call.cancel()
    assert received == published
    assert most == 3
    assert 1 < max(call.batches) <= 3, call.batches


@pytest.mark.parametrize("max_batch", [None, 0, 1])
async def test_without_max_batch_every_event_comes_alone_as_before(
    stub: Stub, events_client: Any, name: str, max_batch: int | None
) -> None:
    await ensure_stream(stub, name)
    ids = [
        result.id
        for result in await publish_events(stub, *(event(f"{name}.a", str(n)) for n in range(20)))
    ]
    consumer = await ensure_consumer(stub, name)
    call: EventsClient = events_client()
    await call.subscribe(name, consumer, max_processing_events=20, max_batch=max_batch)
    assert [e.id for e in await call.events(20)] == ids
    assert call.batches == []
    kinds = [response.WhichOneof("response") for response in call.responses]
    assert kinds == ["subscribed"] + ["event"] * 20


async def test_a_client_of_the_original_protos_gets_single_events(
    channel: grpc.aio.Channel, stub: Stub, name: str
) -> None:
    # Messages built from the original definition (the additions taken out),
    # as a client generated from the Go service's protos has them.
    old_request = _original_message_class("EventsRequest")
    old_response = _original_message_class("EventsResponse")
    await ensure_stream(stub, name)
    ids = [
        result.id
        for result in await publish_events(stub, *(event(f"{name}.a", str(n)) for n in range(10)))
    ]
    consumer = await ensure_consumer(stub, name)
    events = channel.stream_stream(
        EVENTS,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=old_response.FromString,
    )
    subscribe = old_request(
        subscribe={"stream": name, "consumer": consumer, "max_processing_events": 10}
    )
    done = asyncio.Event()

    async def requests() -> AsyncIterator[Any]:
        yield subscribe
        await done.wait()  # open until every event is in (a half-close ends the call)

    call = events(requests())
    kinds: list[str | None] = []
    received: list[int] = []
    try:
        async for response in call:
            kinds.append(response.WhichOneof("response"))
            if kinds[-1] == "event":
                received.append(response.event.id)
            if len(received) == len(ids):
                break
    finally:
        done.set()
        call.cancel()
    assert kinds == ["subscribed"] + ["event"] * 10  # never a member it does not know
    assert received == ids


@pytest.mark.parametrize("max_batch", [-1, MAX_BATCH + 1, -(2**31), 2**31 - 1])
async def test_a_bad_max_batch_is_refused_naming_the_value(
    stub: Stub, events_client: Any, name: str, max_batch: int
) -> None:
    await ensure_stream(stub, name)
    consumer = await ensure_consumer(stub, name)
    call: EventsClient = events_client()
    subscribe = pb.EventsRequest.Subscribe(stream=name, consumer=consumer, max_batch=max_batch)
    call.send(pb.EventsRequest(subscribe=subscribe))
    assert await call.finish() == INVALID
    assert await call.details() == (
        f"subscribe.max_batch must be 0 to {MAX_BATCH} (0 or 1: one event per message), "
        f"got {max_batch}"
    )
    assert call.responses == []


async def test_the_largest_max_batch_is_accepted(stub: Stub, events_client: Any, name: str) -> None:
    await ensure_stream(stub, name)
    [only] = await publish(stub, f"{name}.a", "alone")
    consumer = await ensure_consumer(stub, name)
    call: EventsClient = events_client()
    await call.subscribe(name, consumer, max_batch=MAX_BATCH)
    assert (await call.next_event()).id == only
    assert call.batches == [1]  # one event ready: sent at once, alone, not waiting for more
