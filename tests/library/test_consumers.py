"""ensure_consumer, consumer_info and delete_consumer against a real JetStream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._util import publish_many, take
from windshift import StreamPointer
from windshift.errors import NotFoundError, ValidationError


async def test_unnamed_consumer_is_ephemeral_for_an_hour(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name)
    assert not consumer.durable
    assert consumer.id
    assert consumer.inactive_threshold == timedelta(hours=1)
    assert consumer.processing_timeout == timedelta(seconds=30)


async def test_named_consumer_is_durable_and_never_expires(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "worker")
    assert consumer.durable
    assert consumer.id == "worker"
    assert consumer.inactive_threshold is None
    expiring = await client.ensure_consumer(
        name, "expiring", inactive_threshold=timedelta(minutes=5)
    )
    assert expiring.inactive_threshold == timedelta(minutes=5)


async def test_default_start_is_new_events_only(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.old", 3)
    for start in (None, StreamPointer.end()):
        consumer = await client.ensure_consumer(name, start=start)
        new = await client.publish(f"{name}.new", StringValue(value="new"))
        async with client.subscribe(name, consumer.id) as events:
            [event] = await take(events, 1)
            assert event.id == new.id
            await event.ack()


@pytest.mark.parametrize("kind", ["start", "offset", "time"])
async def test_start_pointers(client: windshift.Client, name: str, kind: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    first = await publish_many(client, f"{name}.a", 3)
    middle = datetime.now(UTC)
    second = await publish_many(client, f"{name}.a", 2)
    start = {
        "start": StreamPointer.start(),
        "offset": StreamPointer.offset(first[1]),
        "time": StreamPointer.time(middle),
    }[kind]
    expected = {"start": first + second, "offset": first[1:] + second, "time": second}[kind]
    consumer = await client.ensure_consumer(name, start=start)
    assert consumer.pending_events == len(expected)
    async with client.subscribe(name, consumer.id) as events:
        received = await take(events, len(expected))
        assert [event.id for event in received] == expected
        for event in received:
            await event.ack()


async def test_several_subjects(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(
        name, "multi", subjects=[f"{name}.a", f"{name}.c.*"], start=StreamPointer.start()
    )
    assert consumer.subjects == [f"{name}.a", f"{name}.c.*"]
    a = await client.publish(f"{name}.a", StringValue(value="a"))
    await client.publish(f"{name}.b", StringValue(value="b"))
    c = await client.publish(f"{name}.c.x", StringValue(value="c"))
    async with client.subscribe(name, consumer.id) as events:
        received = await take(events, 2)
        assert [event.id for event in received] == [a.id, c.id]
        for event in received:
            await event.ack(confirm=True)
    assert (await client.consumer_info(name, "multi")).pending_events == 0


async def test_updating_a_durable_keeps_its_position(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name, "worker", subjects=[f"{name}.a"], start=StreamPointer.start()
    )
    ids = await publish_many(client, f"{name}.a", 3)
    async with client.subscribe(name, "worker", max_pending_events=1) as events:
        for _ in range(2):
            [event] = await take(events, 1)
            await event.ack(confirm=True)
    updated = await client.ensure_consumer(
        name,
        "worker",
        subjects=[f"{name}.a", f"{name}.b"],
        processing_timeout=timedelta(seconds=10),
        max_delivery_attempts=4,
        start=StreamPointer.start(),
    )
    assert updated.subjects == [f"{name}.a", f"{name}.b"]
    assert updated.processing_timeout == timedelta(seconds=10)
    assert updated.max_delivery_attempts == 4
    b = await client.publish(f"{name}.b", StringValue(value="b"))
    async with client.subscribe(name, "worker") as events:
        received = await take(events, 2)
        assert sorted(event.id for event in received) == [ids[2], b.id]
        for event in received:
            await event.ack()


async def test_missing_stream_and_consumer_are_not_found(
    client: windshift.Client, name: str
) -> None:
    with pytest.raises(NotFoundError, match=name):
        await client.ensure_consumer(name, "worker")
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    with pytest.raises(NotFoundError, match="ghost"):
        await client.consumer_info(name, "ghost")
    with pytest.raises(NotFoundError, match="ghost"):
        await client.delete_consumer(name, "ghost")
    with pytest.raises(NotFoundError, match="ghost"):
        async with client.subscribe(name, "ghost"):
            pass


async def test_delete_consumer(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "worker")
    await client.delete_consumer(name, consumer.id)
    with pytest.raises(NotFoundError):
        await client.consumer_info(name, consumer.id)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "bad name"}, "'bad name'"),
        ({"subjects": ["a b"]}, "'a b'"),
        ({"processing_timeout": timedelta(0)}, "processing_timeout"),
        ({"processing_timeout": 30}, "processing_timeout"),
        ({"max_delivery_attempts": 0}, "max_delivery_attempts"),
        ({"start": "start"}, "StreamPointer"),
    ],
)
async def test_bad_consumer_options(
    client: windshift.Client, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await client.ensure_consumer("valid", **options)  # type: ignore[arg-type]


def test_bad_pointers() -> None:
    with pytest.raises(ValidationError, match="0"):
        StreamPointer.offset(0)
    with pytest.raises(ValidationError, match="time zone"):
        StreamPointer.time(datetime(2026, 1, 1))
