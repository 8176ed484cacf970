"""subscribe: events, settling, flow control, sharing, redelivery, leaving cleanly."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from google.protobuf.wrappers_pb2 import BytesValue, StringValue

import windshift
from tests._util import publish_many, take, text
from windshift import StreamPointer
from windshift.errors import EventSettledError, NotFoundError, ValidationError


async def _setup(
    client: windshift.Client,
    name: str,
    *,
    timeout: timedelta = timedelta(seconds=30),
    consumer: str | None = "worker",
) -> str:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    info = await client.ensure_consumer(
        name, consumer, start=StreamPointer.start(), processing_timeout=timeout
    )
    return info.id


async def test_event_carries_id_subject_data_and_metadata(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name)
    published = await client.publish(
        f"{name}.created", StringValue(value="hello"), idempotency_key="key-7"
    )
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        assert event.id == published.id
        assert event.subject == f"{name}.created"
        assert event.data.type_url == "type.googleapis.com/google.protobuf.StringValue"
        assert event.unpack(StringValue).value == "hello"
        assert event.idempotency_key == "key-7"
        assert event.delivery_attempt == 1
        assert event.timestamp.tzinfo is not None
        assert event.settled is None
        await event.ack()
        assert event.settled == "acknowledged"


async def test_acked_events_are_not_delivered_again(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name)
    await publish_many(client, f"{name}.a", 5)
    async with client.subscribe(name, consumer) as events:
        for event in await take(events, 5):
            await event.ack(confirm=True)
    info = await client.consumer_info(name, consumer)
    assert (info.pending_events, info.unsettled_events) == (0, 0)


async def test_reject_redelivers_now_with_the_same_id(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name)
    published = await client.publish(f"{name}.a", StringValue(value="retry me"))
    async with client.subscribe(name, consumer) as events:
        [first] = await take(events, 1)
        await first.reject()
        assert first.settled == "rejected"
        [second] = await take(events, 1)
        assert second.id == first.id == published.id
        assert second.delivery_attempt == 2
        assert text(second) == "retry me"
        await second.ack()


async def test_reject_with_delay_waits_for_the_delay(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name)
    await client.publish(f"{name}.a", StringValue(value="later"))
    loop = asyncio.get_running_loop()
    async with client.subscribe(name, consumer) as events:
        [first] = await take(events, 1)
        rejected_at = loop.time()
        await first.reject(delay=timedelta(seconds=1))
        [second] = await take(events, 1)
        assert loop.time() - rejected_at >= 0.9
        assert second.id == first.id
        assert second.delivery_attempt == 2
        await second.ack()


async def test_reject_permanently_never_delivers_again(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name, timeout=timedelta(seconds=1))
    doomed = await client.publish(f"{name}.a", StringValue(value="doomed"))
    async with client.subscribe(name, consumer) as events:
        [first] = await take(events, 1)
        assert first.id == doomed.id
        await first.reject(permanently=True, confirm=True)
        # Longer than the processing timeout: a retry would have come by now.
        await asyncio.sleep(1.5)
        after = await client.publish(f"{name}.a", StringValue(value="next"))
        [second] = await take(events, 1)
        assert second.id == after.id
        await second.ack(confirm=True)
    info = await client.consumer_info(name, consumer)
    assert (info.pending_events, info.unsettled_events) == (0, 0)


async def test_settling_twice_is_a_clear_error(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name)
    await client.publish(f"{name}.a", StringValue(value="once"))
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        await event.ack()
        with pytest.raises(EventSettledError, match=f"event {event.id} was already acknowledged"):
            await event.ack()
        with pytest.raises(EventSettledError, match="already acknowledged"):
            await event.reject()
        with pytest.raises(EventSettledError, match="already acknowledged"):
            await event.ping()


async def test_reject_options_are_checked(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name)
    await client.publish(f"{name}.a", StringValue(value="x"))
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        with pytest.raises(ValidationError, match="not both"):
            await event.reject(delay=timedelta(seconds=1), permanently=True)
        with pytest.raises(ValidationError, match="delay"):
            await event.reject(delay=timedelta(seconds=-1))
        assert event.settled is None
        await event.ack()


async def test_unsettled_event_is_redelivered_after_the_timeout(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name, timeout=timedelta(milliseconds=500))
    await client.publish(f"{name}.a", StringValue(value="slow"))
    async with client.subscribe(name, consumer, auto_ping=False) as events:
        [first] = await take(events, 1)
        [second] = await take(events, 1)
        assert second.id == first.id
        assert second.delivery_attempt == first.delivery_attempt + 1
        await second.ack()


async def test_ping_extends_the_processing_time(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name, timeout=timedelta(seconds=1))
    await client.publish(f"{name}.a", StringValue(value="long work"))
    async with client.subscribe(name, consumer, auto_ping=False) as events:
        [event] = await take(events, 1)
        for _ in range(6):  # 2.4 s of work, pinging every 0.4 s
            await asyncio.sleep(0.4)
            await event.ping(confirm=True)
        assert (await client.consumer_info(name, consumer)).redelivered_events == 0
        await event.ack(confirm=True)
    assert event.delivery_attempt == 1


async def test_held_events_are_pinged_automatically(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name, timeout=timedelta(seconds=1))
    await publish_many(client, f"{name}.a", 3)
    async with client.subscribe(name, consumer) as events:
        held = await take(events, 3)
        await asyncio.sleep(2.5)  # long past the processing timeout, never pinged by hand
        assert (await client.consumer_info(name, consumer)).redelivered_events == 0
        for event in held:
            await event.ack(confirm=True)


async def test_flow_control_bounds_unsettled_events(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name)
    await publish_many(client, f"{name}.a", 100)
    async with client.subscribe(name, consumer, max_pending_events=10) as events:
        first = await take(events, 10)
        for _ in range(10):  # the server never has more than 10 out to us
            info = await client.consumer_info(name, consumer)
            assert info.unsettled_events <= 10
            assert events.held_events == 10
            await asyncio.sleep(0.05)
        for event in first[:5]:
            await event.ack()
        more = await take(events, 5)
        assert {e.id for e in more}.isdisjoint(e.id for e in first)
        assert (await client.consumer_info(name, consumer)).unsettled_events <= 10
        for event in first[5:] + more:
            await event.ack()


async def test_a_bound_in_bytes_limits_what_a_subscription_holds(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name)
    for _ in range(20):
        await client.publish(f"{name}.a", BytesValue(value=b"x" * 10_000))
    bound = 35_000  # three events of 10 kB and their subject, headers and reply subject
    async with client.subscribe(
        name, consumer, max_pending_events=1000, max_pending_bytes=bound
    ) as events:
        first = await take(events, 3)
        assert (events.held_events, events.max_pending_bytes) == (3, bound)
        assert 30_000 < events.held_bytes <= bound
        info = await client.consumer_info(name, consumer)
        assert (info.unsettled_events, info.pending_events) == (3, 17)
        # Settling one makes room for one more, not more.
        await first[0].ack(confirm=True)
        (more,) = await take(events, 1)
        assert more.id not in {e.id for e in first}
        info = await client.consumer_info(name, consumer)
        assert (info.unsettled_events, info.pending_events) == (3, 16)
        for event in [*first[1:], more]:
            await event.ack(confirm=True)
        assert events.held_bytes <= bound  # the next ones came, within the bound


async def test_an_event_larger_than_the_bound_comes_alone(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name)
    for _ in range(3):
        await client.publish(f"{name}.a", BytesValue(value=b"x" * 5_000))
    async with client.subscribe(name, consumer, max_pending_bytes=1_000) as events:
        for _ in range(3):
            (event,) = await take(events, 1)
            assert events.held_events == 1
            assert events.held_bytes > 5_000
            info = await client.consumer_info(name, consumer)
            assert info.unsettled_events == 1
            await event.ack(confirm=True)


async def test_subscriptions_to_one_durable_share_its_events(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name)
    ids = await publish_many(client, f"{name}.a", 60)
    seen: list[list[int]] = [[], []]
    done = asyncio.Event()

    async def work(index: int) -> None:
        async with client.subscribe(name, consumer, max_pending_events=5) as events:
            async for event in events:
                seen[index].append(event.id)
                await event.ack()
                if len(seen[0]) + len(seen[1]) == len(ids):
                    done.set()
                await asyncio.sleep(0.001)
                if done.is_set():
                    return

    tasks = [asyncio.create_task(work(0)), asyncio.create_task(work(1))]
    await asyncio.wait_for(done.wait(), 20)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(seen[0] + seen[1]) == ids
    assert set(seen[0]).isdisjoint(seen[1])
    assert seen[0] and seen[1], "both subscriptions should have received events"


async def test_different_consumers_each_get_every_event(
    client: windshift.Client, name: str
) -> None:
    first = await _setup(client, name, consumer="first")
    second = (await client.ensure_consumer(name, "second", start=StreamPointer.start())).id
    ids = await publish_many(client, f"{name}.a", 10)
    for consumer in (first, second):
        async with client.subscribe(name, consumer) as events:
            received = await take(events, 10)
            assert [event.id for event in received] == ids
            for event in received:
                await event.ack()


async def test_leaving_hands_back_unreturned_events_at_once(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name, timeout=timedelta(seconds=60))
    ids = await publish_many(client, f"{name}.a", 10)
    async with client.subscribe(name, consumer, max_pending_events=10) as events:
        [event] = await take(events, 1)
        await event.ack(confirm=True)
        # The other nine are fetched, never handed out. Nothing public announces a
        # fetch, so watch the count (bounded by the take timeout below if it stalls).
        while events.held_events < 9:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    # Well inside the 60 s processing timeout: they must come back at once.
    async with client.subscribe(name, consumer) as events:
        rest = await take(events, 9, timeout=10)
        assert sorted(e.id for e in rest) == ids[1:]
        for e in rest:
            await e.ack()


async def test_idle_subscription_sees_no_status_messages(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name)
    async with client.subscribe(name, consumer) as events:
        # Several idle heartbeats pass; none of them may surface.
        await asyncio.sleep(2.5)
        published = await client.publish(f"{name}.a", StringValue(value="after idle"))
        [event] = await take(events, 1)
        assert event.id == published.id
        await event.ack()


async def test_expiring_pull_requests_never_surface(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name)
    subscription = client.subscribe(name, consumer)
    subscription.pull_expires = 0.4  # JetStream answers each request with 408 when it expires
    subscription.heartbeat = 0.1
    async with subscription as events:
        await asyncio.sleep(2)  # several requests expire meanwhile
        published = await client.publish(f"{name}.a", StringValue(value="after expiry"))
        [event] = await take(events, 1)
        assert event.id == published.id
        await event.ack()


async def test_deleting_the_consumer_ends_the_subscription_clearly(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name)
    async with client.subscribe(name, consumer) as events:
        await client.delete_consumer(name, consumer)
        with pytest.raises(NotFoundError, match=consumer):
            await take(events, 1)


async def test_bad_subscribe_arguments(client: windshift.Client) -> None:
    with pytest.raises(ValidationError, match="max_pending_events"):
        client.subscribe("s", "c", max_pending_events=0)
    for bad in (0, -1, True, 1.5, 2**63):
        with pytest.raises(ValidationError, match="max_pending_bytes must be None or between"):
            client.subscribe("s", "c", max_pending_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=re.escape("'a.b'")):
        client.subscribe("a.b", "c")


async def test_several_tasks_may_iterate_one_subscription(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "c", start=StreamPointer.start())
    async with client.subscribe(name, consumer.id) as events:
        waiting = [asyncio.create_task(anext(events)) for _ in range(3)]
        await publish_many(client, f"{name}.x", 3)
        got = await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert len({event.id for event in got}) == 3  # each event to one of them
        for event in got:
            await event.ack()
        left = [asyncio.create_task(anext(events)) for _ in range(2)]
        await asyncio.sleep(0)  # one turn of the loop: both tasks run up to their wait
    # Leaving ends every waiting iteration, not just one.
    for task in left:
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(task, 10)
