"""The bidirectional Events RPC, through a real channel to a real serve process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import nats
import pytest
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.wrappers_pb2 import StringValue
from pydantic import BaseModel

import windshift
from tests.grpc_fixtures import (
    EventsClient,
    StartServe,
    ensure_consumer,
    ensure_stream,
    publish,
    string_any,
    unpack_text,
)
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

OpenEvents = Callable[[], EventsClient]


class Order(BaseModel):
    id: str
    total_cents: int


TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


# --- opening the call -----------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        pb.EventsRequest(ack=pb.EventsRequest.Ack(ids=[1])),
        pb.EventsRequest(ping=pb.EventsRequest.Ping(ids=[1])),
        pb.EventsRequest(),
        None,  # the client half-closes without sending anything
    ],
    ids=["ack", "ping", "empty", "nothing"],
)
async def test_the_first_message_must_be_a_subscribe(
    events_client: OpenEvents, first: pb.EventsRequest | None
) -> None:
    call = events_client()
    if first is None:
        call.half_close()
    else:
        call.send(first)
    assert await call.finish() == grpc.StatusCode.INVALID_ARGUMENT
    assert "subscribe" in await call.details()
    assert call.responses == []


async def test_subscribed_carries_the_processing_timeout(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name, "slow", timeout=7.5)
    await ensure_consumer(stub, name, "default")

    subscribed = await events_client().subscribe(name, "slow")
    assert subscribed.processing_timeout.ToTimedelta() == timedelta(seconds=7.5)
    subscribed = await events_client().subscribe(name, "default")
    assert subscribed.processing_timeout.ToTimedelta() == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("stream", "consumer", "code"),
    [
        ("exists", "missing", grpc.StatusCode.NOT_FOUND),
        ("missing", "missing", grpc.StatusCode.NOT_FOUND),
        ("bad name", "worker", grpc.StatusCode.INVALID_ARGUMENT),
        ("exists", "", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_subscribing_to_what_does_not_exist(
    stub: Stub,
    events_client: OpenEvents,
    name: str,
    stream: str,
    consumer: str,
    code: grpc.StatusCode,
) -> None:
    await ensure_stream(stub, name)
    stream = {"exists": name, "missing": f"{name}-missing"}.get(stream, stream)
    call = events_client()
    call.send(
        pb.EventsRequest(subscribe=pb.EventsRequest.Subscribe(stream=stream, consumer=consumer))
    )
    assert await call.finish() == code


# --- events ---------------------------------------------------------------------


async def test_events_carry_id_subject_data_and_headers(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    moment = datetime(2025, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    request = pb.PublishEventRequest(
        subject=f"{name}.created", data=string_any("hello"), idempotency_key="k-1"
    )
    request.timestamp.FromDatetime(moment)
    traceparent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    published = await stub.PublishEvent(request, metadata=[("traceparent", traceparent)])
    plain = await publish(stub, f"{name}.other", "plain")

    call = events_client()
    await call.subscribe(name, "worker")
    first, second = await call.events(2)

    assert first.id == published.id  # the stream sequence, as PublishEvent returned
    assert first.subject == f"{name}.created"
    assert unpack_text(first) == "hello"
    assert first.data.type_url == "type.googleapis.com/google.protobuf.StringValue"
    assert first.headers.timestamp.ToDatetime(tzinfo=UTC) == moment
    assert first.headers.idempotency_key == "k-1"
    assert first.headers.trace_parent.split("-")[1] == TRACE_ID  # the caller's trace goes on
    assert first.delivery_attempt == 1

    assert second.id == plain[0]
    assert not second.headers.HasField("idempotency_key")
    assert not second.headers.HasField("trace_parent")
    assert abs(second.headers.timestamp.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(
        minutes=1
    )


async def test_timestamps_keep_their_nanoseconds_both_ways(
    stub: Stub, events_client: OpenEvents, nats_server: windshift.EmbeddedNats, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    # A gRPC client's nanoseconds are written with nine digits, as Go writes them ...
    request = pb.PublishEventRequest(subject=f"{name}.grpc", data=string_any("from grpc"))
    request.timestamp.seconds, request.timestamp.nanos = 1_772_368_496, 123_456_789
    published = await stub.PublishEvent(request)
    raw = await nats.connect(nats_server.url)
    try:
        stored = await raw.jetstream().get_msg(name, published.id)
        assert (stored.headers or {})["WS-Published-Time"] == "2026-03-01T12:34:56.123456789Z"
        # ... and nine digits written by Go come back exact.
        await raw.jetstream().publish(
            f"{name}.go",
            StringValue(value="from go").SerializeToString(),
            headers={
                "WS-Data-Type": "google.protobuf.StringValue",
                "WS-Published-Time": "2026-03-01T14:34:56.987654321+02:00",
            },
        )
    finally:
        await raw.close()

    call = events_client()
    await call.subscribe(name, "worker")
    from_grpc, from_go = await call.events(2)
    assert (from_grpc.headers.timestamp.seconds, from_grpc.headers.timestamp.nanos) == (
        1_772_368_496,
        123_456_789,
    )
    assert (from_go.headers.timestamp.seconds, from_go.headers.timestamp.nanos) == (
        1_772_368_496,
        987_654_321,
    )


async def test_json_events_reach_grpc_clients_as_a_struct(
    stub: Stub, events_client: OpenEvents, client: windshift.Client, name: str
) -> None:
    # A pydantic model published through the library is JSON on NATS; a gRPC
    # client gets it as a google.protobuf.Struct, which every language reads.
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    await client.publish(f"{name}.json", Order(id="1", total_cents=500))
    call = events_client()
    await call.subscribe(name, "worker")
    [event] = await call.events(1)
    assert event.data.type_url == "type.googleapis.com/google.protobuf.Struct"
    document = Struct()
    assert event.data.Unpack(document)
    assert json_format.MessageToDict(document) == {"id": "1", "total_cents": 500}


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (None, 50), (0, 50)])
async def test_at_most_max_processing_events_are_out(
    stub: Stub,
    events_client: OpenEvents,
    client: windshift.Client,
    name: str,
    limit: int | None,
    expected: int,
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    ids = await asyncio.gather(*(publish(stub, f"{name}.a", f"e{i}") for i in range(expected + 7)))
    assert len(ids) == expected + 7

    call = events_client()
    await call.subscribe(name, "worker", max_processing_events=limit)
    received = await call.events(expected)
    # A ping's confirmation comes after anything the server sent before it.
    assert list((await call.ping(received[0].id)).ids) == [received[0].id]
    assert call.pending_events() == 0
    info = await client.consumer_info(name, "worker")
    assert (info.unsettled_events, info.pending_events) == (expected, 7)

    # Settling one lets exactly one more out.
    assert list((await call.ack(received[0].id)).ids) == [received[0].id]
    more = await call.next_event()
    assert more.id not in {event.id for event in received}
    assert list((await call.ping(more.id)).ids) == [more.id]
    assert call.pending_events() == 0
    info = await client.consumer_info(name, "worker")
    assert (info.unsettled_events, info.pending_events) == (expected, 6)


# --- confirmations --------------------------------------------------------------


async def test_ack_confirmation_lists_done_and_invalid_ids(
    stub: Stub, events_client: OpenEvents, client: windshift.Client, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    await ensure_consumer(stub, name, "other")
    await publish(stub, f"{name}.a", "one", "two", "three")

    call = events_client()
    await call.subscribe(name, "worker")
    one, two, three = await call.events(3)
    other = events_client()
    await other.subscribe(name, "other")
    foreign = await other.next_event()

    confirmation = await call.ack(one.id, 999_999, two.id)
    assert list(confirmation.ids) == [one.id, two.id]
    assert list(confirmation.invalid_ids) == [999_999]
    assert list(confirmation.temporary_failed_ids) == []

    again = await call.ack(one.id, three.id, three.id)
    assert list(again.ids) == [three.id]
    assert sorted(again.invalid_ids) == [one.id, three.id]  # settled, and repeated

    # Ids belong to the call that delivered them: "other" still holds its copy.
    assert foreign.id == one.id
    assert list((await call.ack(foreign.id)).invalid_ids) == [foreign.id]
    assert list((await other.ack(foreign.id)).ids) == [foreign.id]

    info = await client.consumer_info(name, "worker")
    assert (info.unsettled_events, info.pending_events) == (0, 0)


async def test_reject_now_redelivers_at_once(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    (event_id,) = await publish(stub, f"{name}.a", "retry me")
    call = events_client()
    await call.subscribe(name, "worker")
    first = await call.next_event()

    confirmation = await call.reject(first.id, 424_242)
    assert list(confirmation.ids) == [event_id]
    assert list(confirmation.invalid_ids) == [424_242]
    again = await call.next_event(timeout=5)
    assert (again.id, again.delivery_attempt) == (event_id, 2)
    assert unpack_text(again) == "retry me"
    assert list((await call.reject(first.id)).ids) == [event_id]  # the new delivery
    assert (await call.next_event(timeout=5)).delivery_attempt == 3


async def test_reject_with_delay_redelivers_after_the_delay(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    (event_id,) = await publish(stub, f"{name}.a", "later")
    call = events_client()
    await call.subscribe(name, "worker")
    await call.next_event()

    rejected_at = time.monotonic()
    assert list((await call.reject(event_id, delay=1.0)).ids) == [event_id]
    again = await call.next_event(timeout=10)
    assert time.monotonic() - rejected_at >= 0.9
    assert (again.id, again.delivery_attempt) == (event_id, 2)
    assert list((await call.ack(event_id)).ids) == [event_id]


@pytest.mark.parametrize("with_delay", [False, True], ids=["permanently", "permanently+delay"])
async def test_reject_permanently_never_redelivers(
    stub: Stub, events_client: OpenEvents, client: windshift.Client, name: str, with_delay: bool
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    (poison,) = await publish(stub, f"{name}.a", "poison")
    call = events_client()
    await call.subscribe(name, "worker")
    await call.next_event()

    confirmation = await call.reject(poison, permanently=True, delay=0.2 if with_delay else None)
    assert list(confirmation.ids) == [poison]
    (fresh,) = await publish(stub, f"{name}.a", "fresh")
    assert (await call.next_event()).id == fresh  # not the poison again
    assert list((await call.ack(fresh)).ids) == [fresh]
    info = await client.consumer_info(name, "worker")
    assert (info.unsettled_events, info.pending_events) == (0, 0)
    assert list((await call.ack(poison)).invalid_ids) == [poison]


async def test_ping_restarts_the_processing_timeout(
    stub: Stub, events_client: OpenEvents, client: windshift.Client, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name, timeout=2.0)
    (event_id,) = await publish(stub, f"{name}.a", "long work")
    call = events_client()
    await call.subscribe(name, "worker")
    await call.next_event()

    for _ in range(6):  # 3 s of work, well past the 2 s timeout
        await asyncio.sleep(0.5)  # the passing time is what is tested
        confirmation = await call.ping(event_id, 777)
        assert list(confirmation.ids) == [event_id]
        assert list(confirmation.invalid_ids) == [777]
    assert list((await call.ack(event_id)).ids) == [event_id]
    assert call.pending_events() == 0  # never redelivered
    assert (await client.consumer_info(name, "worker")).redelivered_events == 0


async def test_an_unpinged_event_is_forgotten_and_delivered_again(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name, timeout=1.0)
    (event_id,) = await publish(stub, f"{name}.a", "forgotten")
    call = events_client()
    # One event out at a time: the redelivery can only come once the server
    # has forgotten the first delivery (bounded bookkeeping, no stall).
    await call.subscribe(name, "worker", max_processing_events=1)
    first = await call.next_event()
    again = await call.next_event(timeout=10)
    assert (again.id, again.delivery_attempt) == (first.id, 2)
    assert list((await call.ack(event_id)).ids) == [event_id]


# --- protocol errors and endings ------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (
            pb.EventsRequest(subscribe=pb.EventsRequest.Subscribe(stream="s", consumer="c")),
            "subscribe",
        ),
        (pb.EventsRequest(), "ack, reject or ping"),
        (
            pb.EventsRequest(reject=pb.EventsRequest.Reject(ids=[1], delay=Duration(seconds=-5))),
            "delay",
        ),
    ],
    ids=["second-subscribe", "empty", "negative-delay"],
)
async def test_protocol_errors_end_the_call(
    stub: Stub, events_client: OpenEvents, name: str, request_: pb.EventsRequest, words: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    call = events_client()
    await call.subscribe(name, "worker")
    call.send(request_)
    assert await call.finish() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in await call.details()


async def test_half_close_answers_then_ends_ok(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    (event_id,) = await publish(stub, f"{name}.a", "last")
    call = events_client()
    await call.subscribe(name, "worker")
    await call.next_event()
    call.send(pb.EventsRequest(ack=pb.EventsRequest.Ack(ids=[event_id])))
    call.half_close()
    assert await call.finish() == grpc.StatusCode.OK
    assert list(call.responses[-1].ack_confirmation.ids) == [event_id]


async def test_deleting_the_consumer_ends_the_call(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name)
    call = events_client()
    await call.subscribe(name, "worker")
    await stub.DeleteConsumer(pb.DeleteConsumerRequest(stream=name, id="worker"))
    assert await call.finish() == grpc.StatusCode.NOT_FOUND


async def test_a_client_going_away_gets_its_events_redelivered(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name, timeout=1.0)
    ids = await publish(stub, f"{name}.a", "one", "two")
    gone = events_client()
    await gone.subscribe(name, "worker")
    assert [event.id for event in await gone.events(2)] == ids
    received_at = time.monotonic()
    await gone.cancel()

    after = events_client()
    await after.subscribe(name, "worker")
    redelivered = await after.events(2)
    assert sorted(event.id for event in redelivered) == ids
    assert {event.delivery_attempt for event in redelivered} == {2}
    assert time.monotonic() - received_at >= 0.8  # after the processing timeout, not at once
    assert sorted((await after.ack(*ids)).ids) == ids


async def test_two_serve_processes_share_a_durable_consumer(
    stub: Stub, start_serve: StartServe, name: str
) -> None:
    second = await start_serve()
    async with grpc.aio.insecure_channel(second.target) as channel:
        second_stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        await ensure_consumer(second_stub, name, "shared")
        ids = await publish(stub, f"{name}.a", *(f"e{i}" for i in range(10)))

        here, there = EventsClient(stub), EventsClient(second_stub)
        try:
            await here.subscribe(name, "shared", max_processing_events=5)
            await there.subscribe(name, "shared", max_processing_events=5)
            # Neither settles, so each can only ever hold five.
            mine, theirs = await asyncio.gather(here.events(5), there.events(5))
            assert sorted(e.id for e in mine + theirs) == ids
            assert list((await there.ack(*(e.id for e in theirs))).ids) == [e.id for e in theirs]
            assert list((await here.ack(*(e.id for e in mine))).ids) == [e.id for e in mine]
        finally:
            await here.cancel()
            await there.cancel()
