"""Dead-letter queues over gRPC: EnsureConsumer's added fields and the five dead-letter RPCs.

Through the session's real ``windshift-grpc serve`` and a real channel:
events are given up on over Events (rejected permanently, or out of
attempts), then listed, read, replayed, deleted and purged with the added
RPCs. Where waiting is needed, the tests wait for the server's log line of
the move, never for time to pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests.grpc_fixtures import (
    EventsClient,
    ServeProcess,
    StartServe,
    duration,
    ensure_stream,
    publish,
    string_any,
)
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

OpenEvents = Callable[[], EventsClient]

TRACE_ID = "5b8efff798038103d269b633813fc60c"
CONSUMER = "worker"


def _dead(name: str) -> str:
    return f"{name}dead"


def _consumer_request(name: str, *, timeout: float = 30) -> pb.EnsureConsumerRequest:
    """A durable consumer of every subject of ``name``, from its start, with a dead-letter stream."""
    request = pb.EnsureConsumerRequest(
        stream=name,
        name=CONSUMER,
        subjects=[f"{name}.>"],
        processing_timeout=duration(timeout),
        max_delivery_attempts=2,
        dead_letter_stream=_dead(name),
    )
    getattr(request, "from").start = True
    return request


async def _setup(stub: Stub, name: str) -> str:
    """A stream and its consumer with a dead-letter stream; the dead-letter stream's name."""
    await ensure_stream(stub, name)
    response: pb.EnsureConsumerResponse = await stub.EnsureConsumer(_consumer_request(name))
    assert response.id == CONSUMER
    return _dead(name)


def _text(letter: pb.DeadLetter) -> str:
    value = StringValue()
    assert letter.data.Unpack(value)
    return value.value


async def _list(
    stub: Stub, dead: str, after_id: int = 0, limit: int | None = None
) -> list[pb.DeadLetter]:
    request = pb.ListDeadLettersRequest(dead_letter_stream=dead, after_id=after_id)
    if limit is not None:
        request.limit = limit
    response: pb.ListDeadLettersResponse = await stub.ListDeadLetters(request)
    return list(response.dead_letters)


async def _reject_permanently(
    stub: Stub, events_client: OpenEvents, name: str, *texts: str
) -> EventsClient:
    """Publish ``texts`` and reject each permanently over Events; the still open call."""
    ids = await publish(stub, f"{name}.orders", *texts)
    call = events_client()
    await call.subscribe(name, CONSUMER, max_processing_events=len(ids))
    events = await call.events(len(ids))
    assert [event.id for event in events] == ids
    assert list((await call.reject(*ids, permanently=True)).ids) == ids
    return call


async def _error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error a call ends with (it must end with one)."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


# --- EnsureConsumer's added fields ------------------------------------------------


async def test_ensure_consumer_sets_and_keeps_the_dead_letter_settings(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    dead = await _setup(stub, name)
    info = await client.consumer_info(name, CONSUMER)
    assert (info.dead_letter_stream, info.max_delivery_attempts) == (dead, 2)
    assert await _list(stub, dead) == []  # the dead-letter stream was created

    # An update that keeps them (and changes something else) keeps them.
    await stub.EnsureConsumer(_consumer_request(name, timeout=45))
    info = await client.consumer_info(name, CONSUMER)
    assert (info.dead_letter_stream, info.max_delivery_attempts) == (dead, 2)
    assert info.processing_timeout == timedelta(seconds=45)

    # A request without them, as any client generated from the original
    # protos sends, keeps them too (the other options are set as given).
    request = _consumer_request(name, timeout=50)
    request.ClearField("max_delivery_attempts")
    request.ClearField("dead_letter_stream")
    await stub.EnsureConsumer(request)
    info = await client.consumer_info(name, CONSUMER)
    assert (info.dead_letter_stream, info.max_delivery_attempts) == (dead, 2)
    assert info.processing_timeout == timedelta(seconds=50)

    # 0 and "" remove them.
    request = _consumer_request(name)
    request.max_delivery_attempts = 0
    request.dead_letter_stream = ""
    await stub.EnsureConsumer(request)
    info = await client.consumer_info(name, CONSUMER)
    assert (info.dead_letter_stream, info.max_delivery_attempts) == (None, None)

    # Left out on a consumer that has none: still none; on a new one: none.
    request.ClearField("max_delivery_attempts")
    request.ClearField("dead_letter_stream")
    await stub.EnsureConsumer(request)
    request.name = "fresh"
    await stub.EnsureConsumer(request)
    for consumer in (CONSUMER, "fresh"):
        info = await client.consumer_info(name, consumer)
        assert (info.dead_letter_stream, info.max_delivery_attempts) == (None, None)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("dead_letter_stream", "bad name", "'bad name'"),
        ("dead_letter_stream", "a.b", "'a.b'"),
    ],
)
async def test_ensure_consumer_refuses_bad_dead_letter_settings(
    stub: Stub, name: str, field: str, value: object, named: str
) -> None:
    await ensure_stream(stub, name)
    request = _consumer_request(name)
    setattr(request, field, value)
    error = await _error(stub.EnsureConsumer(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in str(error.details())


async def test_a_dead_letter_stream_must_differ_from_the_stream(stub: Stub, name: str) -> None:
    await ensure_stream(stub, name)
    request = _consumer_request(name)
    request.dead_letter_stream = name
    error = await _error(stub.EnsureConsumer(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "differ" in str(error.details())


# --- ListDeadLetters ------------------------------------------------------------------


async def test_rejected_and_exhausted_events_are_listed_with_their_story(
    stub: Stub, grpc_server: ServeProcess, events_client: OpenEvents, name: str
) -> None:
    dead = await _setup(stub, name)
    moment = datetime(2025, 6, 7, 8, 9, 10, 123000, tzinfo=UTC)
    poison_request = pb.PublishEventRequest(subject=f"{name}.orders", data=string_any("poison"))
    poison_request.timestamp.FromDatetime(moment)
    traceparent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    poison: pb.PublishEventResponse = await stub.PublishEvent(
        poison_request, metadata=[("traceparent", traceparent)]
    )
    [flaky] = await publish(stub, f"{name}.payments", "flaky")

    call = events_client()
    await call.subscribe(name, CONSUMER)
    first, second = await call.events(2)
    assert (first.id, second.id) == (poison.id, flaky)
    rejection = await call.reject(poison.id, permanently=True, reason="no such\ncustomer")
    assert list(rejection.ids) == [poison.id]
    assert list((await call.reject(flaky)).ids) == [flaky]
    again = await call.next_event()
    assert (again.id, again.delivery_attempt) == (flaky, 2)
    start = len(grpc_server.lines)
    # Rejected on its last attempt: moved before the rejection is confirmed
    # (the dead letters are listed right after, below).
    assert list((await call.reject(flaky)).ids) == [flaky]
    assert call.pending_events() == 0

    rejected, exhausted = await _list(stub, dead)
    await grpc_server.wait_for_line(
        rf"dead-lettered event {flaky} of {name}/{CONSUMER} into {dead}", after=start
    )
    assert rejected.subject == f"{name}.orders"
    assert (rejected.stream, rejected.consumer, rejected.event_id) == (name, CONSUMER, poison.id)
    assert rejected.attempts == 1
    assert rejected.reason == "no such customer"  # one line, as every header
    assert _text(rejected) == "poison"
    assert rejected.data.type_url == "type.googleapis.com/google.protobuf.StringValue"
    assert rejected.headers.timestamp.ToDatetime(tzinfo=UTC) == moment
    assert rejected.headers.trace_parent.split("-")[1] == TRACE_ID
    assert not rejected.headers.HasField("idempotency_key")
    assert abs(rejected.dead_since.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(
        minutes=1
    )

    assert exhausted.subject == f"{name}.payments"
    assert (exhausted.stream, exhausted.consumer, exhausted.event_id) == (name, CONSUMER, flaky)
    assert exhausted.attempts == 2  # the deliveries handed out
    assert exhausted.reason == "max delivery attempts reached"
    assert _text(exhausted) == "flaky"
    assert not exhausted.headers.HasField("trace_parent")
    assert exhausted.HasField("dead_since")
    assert exhausted.id > rejected.id

    # Paging: after_id and limit.
    assert await _list(stub, dead, limit=1) == [rejected]
    assert await _list(stub, dead, after_id=rejected.id, limit=1) == [exhausted]
    assert await _list(stub, dead, after_id=rejected.id) == [exhausted]
    assert await _list(stub, dead, after_id=exhausted.id) == []


async def test_list_pages_default_to_100_and_stop_at_1000(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    dead = await _setup(stub, name)
    await _reject_permanently(stub, events_client, name, *(str(i) for i in range(101)))
    assert len(await _list(stub, dead)) == 100
    assert len(await _list(stub, dead, limit=0)) == 100
    assert len(await _list(stub, dead, limit=1000)) == 101
    error = await _error(
        stub.ListDeadLetters(pb.ListDeadLettersRequest(dead_letter_stream=dead, limit=1001))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1001" in str(error.details())


async def _pages(stub: Stub, dead: str, *, limit: int = 1000) -> list[pb.ListDeadLettersResponse]:
    """Every non-empty ListDeadLetters answer, paging from the start until an empty one."""
    pages: list[pb.ListDeadLettersResponse] = []
    after = 0
    while True:
        response: pb.ListDeadLettersResponse = await stub.ListDeadLetters(
            pb.ListDeadLettersRequest(dead_letter_stream=dead, after_id=after, limit=limit)
        )
        if not response.dead_letters:
            return pages
        pages.append(response)
        after = response.dead_letters[-1].id


async def test_pages_end_at_the_byte_budget_and_paging_reaches_every_letter(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    # The session's server has the default budget, 1 MiB: letters of 300 kB
    # come three to a page, however high the limit.
    dead = await _setup(stub, name)
    texts = [f"{i}{'x' * 300_000}" for i in range(7)]
    await _reject_permanently(stub, events_client, name, *texts)
    pages = await _pages(stub, dead)
    assert [len(page.dead_letters) for page in pages] == [3, 3, 1]
    assert all(page.ByteSize() <= 1024 * 1024 for page in pages)
    assert [_text(letter) for page in pages for letter in page.dead_letters] == texts


async def test_the_budget_is_a_setting_and_a_larger_letter_comes_alone(
    start_serve: StartServe, name: str
) -> None:
    budget = 64 * 1024
    server = await start_serve(WINDSHIFT_DEAD_LETTER_PAGE_BYTES=str(budget))
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        dead = await _setup(stub, name)
        texts = [f"{i}{'x' * size}" for i, size in enumerate([20_000] * 3 + [100_000, 20_000])]
        call = await _reject_permanently(stub, lambda: EventsClient(stub), name, *texts)
        await call.cancel()
        pages = await _pages(stub, dead)
        assert [len(page.dead_letters) for page in pages] == [3, 1, 1]
        assert [page.ByteSize() <= budget for page in pages] == [True, False, True]
        assert [_text(letter) for page in pages for letter in page.dead_letters] == texts


# --- GetDeadLetter and the errors ----------------------------------------------------


async def test_get_dead_letter_and_what_is_not_found_or_invalid(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    dead = await _setup(stub, name)
    await _reject_permanently(stub, events_client, name, "one", "two")
    first, second = await _list(stub, dead)
    response: pb.GetDeadLetterResponse = await stub.GetDeadLetter(
        pb.GetDeadLetterRequest(dead_letter_stream=dead, id=second.id)
    )
    assert response.dead_letter == second
    assert _text(response.dead_letter) == "two"

    missing_id = await _error(
        stub.GetDeadLetter(pb.GetDeadLetterRequest(dead_letter_stream=dead, id=second.id + 10))
    )
    assert missing_id.code() == grpc.StatusCode.NOT_FOUND
    assert str(second.id + 10) in str(missing_id.details())
    no_such_id = await _error(stub.GetDeadLetter(pb.GetDeadLetterRequest(dead_letter_stream=dead)))
    assert no_such_id.code() == grpc.StatusCode.NOT_FOUND  # ids start at 1

    ghost = f"{name}ghost"
    for call in (
        stub.GetDeadLetter(pb.GetDeadLetterRequest(dead_letter_stream=ghost, id=first.id)),
        stub.ListDeadLetters(pb.ListDeadLettersRequest(dead_letter_stream=ghost)),
        stub.ReplayDeadLetter(pb.ReplayDeadLetterRequest(dead_letter_stream=ghost, id=1)),
        stub.DeleteDeadLetter(pb.DeleteDeadLetterRequest(dead_letter_stream=ghost, id=1)),
        stub.PurgeDeadLetters(pb.PurgeDeadLettersRequest(dead_letter_stream=ghost)),
    ):
        missing_stream = await _error(call)
        assert missing_stream.code() == grpc.StatusCode.NOT_FOUND
        assert ghost in str(missing_stream.details())

    for call in (
        stub.GetDeadLetter(pb.GetDeadLetterRequest(dead_letter_stream="bad name", id=1)),
        stub.ListDeadLetters(pb.ListDeadLettersRequest(dead_letter_stream="bad name")),
        stub.DeleteDeadLetter(pb.DeleteDeadLetterRequest(dead_letter_stream="bad name", id=1)),
        stub.PurgeDeadLetters(pb.PurgeDeadLettersRequest(dead_letter_stream="bad name")),
    ):
        bad_name = await _error(call)
        assert bad_name.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'bad name'" in str(bad_name.details())


# --- ReplayDeadLetter, DeleteDeadLetter, PurgeDeadLetters ---------------------------------


async def test_replay_delivers_the_event_again_on_its_subject(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    dead = await _setup(stub, name)
    call = await _reject_permanently(stub, events_client, name, "retry me")
    [letter] = await _list(stub, dead)

    replayed: pb.ReplayDeadLetterResponse = await stub.ReplayDeadLetter(
        pb.ReplayDeadLetterRequest(dead_letter_stream=dead, id=letter.id)
    )
    assert replayed.stream == name
    assert replayed.id > letter.event_id

    event = await call.next_event()
    assert (event.id, event.subject, event.delivery_attempt) == (replayed.id, f"{name}.orders", 1)
    value = StringValue()
    assert event.data.Unpack(value) and value.value == "retry me"
    assert list((await call.ack(event.id)).ids) == [event.id]

    assert await _list(stub, dead) == []
    gone = await _error(
        stub.GetDeadLetter(pb.GetDeadLetterRequest(dead_letter_stream=dead, id=letter.id))
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    again = await _error(
        stub.ReplayDeadLetter(pb.ReplayDeadLetterRequest(dead_letter_stream=dead, id=letter.id))
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_removes_one_and_purge_the_rest(
    stub: Stub, events_client: OpenEvents, name: str
) -> None:
    dead = await _setup(stub, name)
    await _reject_permanently(stub, events_client, name, "a", "b", "c")
    first, second, third = await _list(stub, dead)

    delete = pb.DeleteDeadLetterRequest(dead_letter_stream=dead, id=first.id)
    assert await stub.DeleteDeadLetter(delete) == pb.DeleteDeadLetterResponse()
    assert await _list(stub, dead) == [second, third]
    deleted_twice = await _error(stub.DeleteDeadLetter(delete))
    assert deleted_twice.code() == grpc.StatusCode.NOT_FOUND

    purged: pb.PurgeDeadLettersResponse = await stub.PurgeDeadLetters(
        pb.PurgeDeadLettersRequest(dead_letter_stream=dead)
    )
    assert purged.purged == 2
    assert await _list(stub, dead) == []
    empty: pb.PurgeDeadLettersResponse = await stub.PurgeDeadLetters(
        pb.PurgeDeadLettersRequest(dead_letter_stream=dead)
    )
    assert empty.purged == 0
