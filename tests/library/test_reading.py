"""Looking at streams without processing them: listings, lag, one event, pages, tails, store keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._util import publish_many, take
from windshift import StreamPointer
from windshift.errors import (
    NotFoundError,
    StoreNotFoundError,
    StreamNotFoundError,
    ValidationError,
)

# How long a test waits for an event that must come; waiting longer fails it.
WAIT = 15


async def test_streams_lists_every_stream_with_its_first_and_last_times(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(f"{name}b", subjects=[f"{name}b.>"])
    await client.ensure_stream(f"{name}a", subjects=[f"{name}a.>"])
    before = datetime.now(UTC) - timedelta(seconds=1)
    await publish_many(client, f"{name}a.x", 3)
    listed = {stream.name: stream for stream in await client.streams()}
    names = [stream.name for stream in await client.streams()]
    assert names == sorted(names)
    empty, full = listed[f"{name}b"], listed[f"{name}a"]
    assert (empty.events, empty.first_time, empty.last_time) == (0, None, None)
    assert full.events == 3 and full.subjects == [f"{name}a.>"]
    assert full.first_time is not None and full.last_time is not None
    assert before <= full.first_time <= full.last_time <= datetime.now(UTC)
    assert full.retention == "limits"


async def test_consumers_lists_durable_and_ephemeral_consumers(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(name, "zeta")
    await client.ensure_consumer(name, "alpha", subjects=[f"{name}.a"])
    ephemeral = await client.ensure_consumer(name)
    listed = await client.consumers(name)
    assert [consumer.id for consumer in listed] == sorted(["zeta", "alpha", ephemeral.id])
    by_id = {consumer.id: consumer for consumer in listed}
    assert by_id["alpha"].subjects == [f"{name}.a"]
    assert by_id["zeta"].durable and not by_id[ephemeral.id].durable
    with pytest.raises(StreamNotFoundError, match=f"{name}nothing"):
        await client.consumers(f"{name}nothing")


async def test_consumer_lag_counts_unprocessed_events_and_the_age_of_the_oldest(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(name, "c", start=StreamPointer.start())
    ids = await publish_many(client, f"{name}.x", 3)
    first = await client.get_event(name, ids[0])
    lag = await client.consumer_lag(name, "c")
    assert (lag.events, lag.oldest_id, lag.oldest_stored) == (3, ids[0], first.stored)
    assert lag.seconds >= 0
    later = await client.consumer_lag(name, "c")
    assert later.seconds >= lag.seconds  # the same event, waiting longer

    async with client.subscribe(name, "c") as events:
        received = await take(events, 3)
        # Settled out of order: the first one still waits, so it is the oldest.
        await received[1].ack(confirm=True)
        await received[2].ack(confirm=True)
        info = await client.consumer_info(name, "c")
        assert info.unsettled_events == 1
        lag = await client.consumer_lag(name, info)
        assert (lag.events, lag.oldest_id) == (1, ids[0])
        await received[0].ack(confirm=True)
    # Settled (the acks above are confirmed): up to date.
    lag = await client.consumer_lag(name, "c")
    assert (lag.events, lag.oldest_id, lag.oldest_stored, lag.seconds) == (0, None, None, 0.0)


async def test_consumer_lag_looks_only_at_the_consumers_subjects(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name, "b", subjects=[f"{name}.b", f"{name}.c"], start=StreamPointer.start()
    )
    await publish_many(client, f"{name}.a", 2)
    (of_c,) = await publish_many(client, f"{name}.c", 1)
    await publish_many(client, f"{name}.b", 1)
    lag = await client.consumer_lag(name, "b")
    assert (lag.events, lag.oldest_id) == (2, of_c)


async def test_consumer_lag_refuses_an_info_of_another_stream(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    info = await client.ensure_consumer(name, "c")
    with pytest.raises(ValidationError, match="reads stream"):
        await client.consumer_lag(f"{name}other", info)


async def test_get_event_reads_an_event_with_its_headers_and_decoded_data(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    published = await client.publish(
        f"{name}.x", StringValue(value="hello"), idempotency_key="key-1"
    )
    event = await client.get_event(name, published.id)
    assert (event.stream, event.id, event.subject) == (name, published.id, f"{name}.x")
    assert event.data_type == "google.protobuf.StringValue"
    assert event.idempotency_key == "key-1"
    assert event.size == len(StringValue(value="hello").SerializeToString())
    assert event.unpack(StringValue).value == "hello"
    assert event.to_json() == "hello"  # protobuf's JSON form of a StringValue
    assert event.content_type is None
    assert abs((event.timestamp - event.stored).total_seconds()) < 5


async def test_to_json_is_none_for_a_type_nobody_knows(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.nats.publish(f"{name}.x", b"\x0a\x03abc", headers={"WS-Data-Type": "acme.Unknown"})
    await client.nats.flush()
    (event,) = await client.read_events(name)
    assert event.data_type == "acme.Unknown"
    assert event.to_json() is None
    assert event.body == b"\x0a\x03abc"


async def test_get_event_names_what_is_missing(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    with pytest.raises(NotFoundError, match=f"event 9 is not in stream '{name}'"):
        await client.get_event(name, 9)
    with pytest.raises(StreamNotFoundError, match=f"{name}nothing"):
        await client.get_event(f"{name}nothing", 1)
    with pytest.raises(ValidationError, match="event id must be an event id of 1 or more, got 0"):
        await client.get_event(name, 0)


async def test_read_events_pages_newest_first_across_holes(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    ids = await publish_many(client, f"{name}.x", 10)
    await client.nats.request(
        f"$JS.API.STREAM.MSG.DELETE.{name}", f'{{"seq": {ids[7]}}}'.encode(), timeout=5
    )
    first = await client.read_events(name, limit=4)
    assert [event.id for event in first] == [ids[9], ids[8], ids[6], ids[5]]
    rest = await client.read_events(name, before_id=first[-1].id, limit=100)
    assert [event.id for event in rest] == [ids[4], ids[3], ids[2], ids[1], ids[0]]
    assert await client.read_events(name, before_id=ids[0]) == []
    with pytest.raises(ValidationError, match=r"limit must be .* got 0"):
        await client.read_events(name, limit=0)


async def test_a_tail_without_follow_reads_what_is_there_in_order_and_ends(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(name, "worker", start=StreamPointer.start())
    ids = await publish_many(client, f"{name}.a", 5)
    await publish_many(client, f"{name}.b", 2)
    async with client.tail(
        name, subjects=[f"{name}.a"], start=StreamPointer.start(), follow=False
    ) as tail:
        seen = [event async for event in tail]
    assert [event.id for event in seen] == ids
    assert {event.subject for event in seen} == {f"{name}.a"}
    # Nothing was settled or moved for the stream's consumer.
    info = await client.consumer_info(name, "worker")
    assert (info.pending_events, info.acknowledged_id) == (7, 0)
    # The tail's own consumer is gone.
    assert [consumer.id for consumer in await client.consumers(name)] == ["worker"]


async def test_a_tail_of_nothing_without_follow_ends_at_once(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    async with client.tail(name, start=StreamPointer.start(), follow=False) as tail:
        assert [event async for event in tail] == []


async def test_a_following_tail_from_the_end_sees_new_events(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.x", 3)
    async with client.tail(name) as tail:
        ids = await publish_many(client, f"{name}.x", 2)
        seen = [await asyncio.wait_for(anext(tail), WAIT) for _ in ids]
    assert [event.id for event in seen] == ids


async def test_a_tail_from_an_id_starts_there(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    ids = await publish_many(client, f"{name}.x", 5)
    async with client.tail(name, start=StreamPointer.offset(ids[3]), follow=False) as tail:
        assert [event.id async for event in tail] == ids[3:]


async def test_a_tail_whose_consumer_vanishes_goes_on_without_a_gap(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    ids = await publish_many(client, f"{name}.x", 3)
    async with client.tail(name, start=StreamPointer.start()) as tail:
        seen = [await asyncio.wait_for(anext(tail), WAIT) for _ in range(2)]
        (consumer,) = await client.consumers(name)
        await client.delete_consumer(name, consumer.id)
        ids += await publish_many(client, f"{name}.x", 3)
        seen += [await asyncio.wait_for(anext(tail), WAIT) for _ in range(4)]
    assert [event.id for event in seen] == ids


async def test_a_tail_of_a_missing_stream_fails_on_entering(
    client: windshift.Client, name: str
) -> None:
    with pytest.raises(StreamNotFoundError, match=name):
        async with client.tail(name):
            pass
    with pytest.raises(ValidationError, match="subjects must be a list"):
        client.tail(name, subjects="a.b")


async def test_store_keys_lists_the_keys_holding_a_value(
    client: windshift.Client, name: str
) -> None:
    store = await client.ensure_store(name)
    await store.set("cart.1", StringValue(value="a"))
    await store.set("cart.2", StringValue(value="b"))
    await store.set("user.1", StringValue(value="c"))
    await store.delete("cart.2")
    await store.set("cart.1", StringValue(value="a2"))
    assert await store.keys() == ["user.1", "cart.1"]
    assert await store.keys("cart.*") == ["cart.1"]
    assert await client.store(f"{name}new").exists() is False
    with pytest.raises(StoreNotFoundError):
        await client.store(f"{name}none").keys()


async def test_a_store_keeps_the_history_it_was_asked_for(
    client: windshift.Client, name: str
) -> None:
    store = await client.ensure_store(name, history=3)
    for value in ("a", "b", "c", "d"):
        await store.set("k", StringValue(value=value))
    await store.delete("k")
    history = await store.history("k")
    assert [change.operation for change in history] == ["set", "set", "delete"]
    assert [change.unpack(StringValue).value for change in history[:2]] == ["c", "d"]
    assert [change.revision for change in history] == sorted(c.revision for c in history)
    # A store that keeps one value: the history is the last change alone.
    single = await client.ensure_store(f"{name}one")
    await single.set("k", StringValue(value="a"))
    await single.set("k", StringValue(value="b"))
    assert [c.unpack(StringValue).value for c in await single.history("k")] == ["b"]
    # Asking again changes what an existing store keeps.
    await client.ensure_store(f"{name}one", history=2)
    await single.set("k", StringValue(value="c"))
    assert [c.unpack(StringValue).value for c in await single.history("k")] == ["b", "c"]
    with pytest.raises(ValidationError, match=r"history must be .* got 65"):
        await client.ensure_store(name, history=65)


async def test_stores_names_every_store(client: windshift.Client, name: str) -> None:
    await client.ensure_store(f"{name}b")
    await client.ensure_store(f"{name}a")
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    mine = [store for store in await client.stores() if store.startswith(name)]
    assert mine == [f"{name}a", f"{name}b"]


async def test_a_dead_letter_reads_as_json_too(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name,
        "c",
        start=StreamPointer.start(),
        max_delivery_attempts=1,
        dead_letter_stream=f"{name}_dead",
    )
    await client.publish(f"{name}.x", StringValue(value="gone"))
    async with client.subscribe(name, "c") as events:
        (event,) = await take(events, 1)
        await event.reject(permanently=True)
    (letter,) = await client.dead_letters(f"{name}_dead").list()
    assert letter.to_json() == "gone"
