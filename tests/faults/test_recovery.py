"""Subscriptions resume by themselves when NATS goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._util import take
from windshift import EmbeddedNats, StreamPointer
from windshift.errors import UnavailableError


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedNats]:
    """A nats-server of this test's own, to kill and restart."""
    async with EmbeddedNats() as server:
        yield server


async def _publish_until_stored(
    client: windshift.Client, subject: str, value: str, key: str
) -> int:
    # Retrying with the same idempotency key never stores an event twice.
    while True:
        try:
            return (await client.publish(subject, StringValue(value=value), idempotency_key=key)).id
        except UnavailableError:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
async def test_idle_subscription_resumes_within_a_second(
    own_server: EmbeddedNats, kill: bool
) -> None:
    loop = asyncio.get_running_loop()
    async with windshift.connect(own_server.url) as client:
        await client.ensure_stream("orders", subjects=["orders.>"])
        consumer = await client.ensure_consumer("orders", "worker", start=StreamPointer.start())
        async with client.subscribe("orders", consumer.id) as events:
            await _publish_until_stored(client, "orders.a", "before", "before")
            [before] = await take(events, 1)
            await before.ack(confirm=True)

            await own_server.restart(kill=kill)
            listening_at = loop.time()
            after_id = await _publish_until_stored(client, "orders.a", "after", "after")
            # At-least-once: a crash may forget the ack of "before", which then
            # comes again; the first event after the restart is what counts.
            [first] = await take(events, 1, timeout=30)
            resumed_in = loop.time() - listening_at
            after = first
            while after.id != after_id:
                assert after.id == before.id
                await after.ack()
                [after] = await take(events, 1, timeout=30)
            await after.ack()
    assert resumed_in < 1.0, f"first event {resumed_in:.2f}s after NATS was back"


async def test_no_event_lost_when_the_server_dies_mid_stream(own_server: EmbeddedNats) -> None:
    total = 1500
    async with windshift.connect(own_server.url, request_timeout=timedelta(seconds=2)) as client:
        await client.ensure_stream("orders", subjects=["orders.>"])
        consumer = await client.ensure_consumer(
            "orders", "worker", start=StreamPointer.start(), processing_timeout=timedelta(seconds=5)
        )
        published: dict[str, int] = {}
        received: set[int] = set()
        halfway = asyncio.Event()
        progress = asyncio.Event()

        async def publisher() -> None:
            for i in range(total):
                published[f"k{i}"] = await _publish_until_stored(
                    client, "orders.a", str(i), f"k{i}"
                )
                if i == total // 2:
                    halfway.set()

        async def subscriber() -> None:
            async with client.subscribe("orders", consumer.id, max_pending_events=20) as events:
                async for event in events:
                    received.add(event.id)
                    await event.ack()
                    progress.set()

        async def received_all() -> None:
            # Checked on every receipt *and* once the publisher is done: the
            # last event may well arrive before its publish call returns.
            ids = set(published.values())
            while not received >= ids:
                progress.clear()
                await progress.wait()

        tasks = [asyncio.create_task(publisher()), asyncio.create_task(subscriber())]
        await asyncio.wait_for(halfway.wait(), 60)
        await own_server.restart(kill=True)
        await asyncio.wait_for(tasks[0], 120)
        try:
            await asyncio.wait_for(received_all(), 60)
        except TimeoutError:
            missing = sorted(set(published.values()) - received)
            state = await client.consumer_info("orders", consumer.id)
            raise AssertionError(f"missing {len(missing)}: {missing[:20]}; {state}") from None
        finally:
            tasks[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[1]

        ids = list(published.values())
        assert len(set(ids)) == total, "an idempotent retry stored an event twice"
        assert (await client.stream_info("orders")).events == total
        assert received == set(ids)
