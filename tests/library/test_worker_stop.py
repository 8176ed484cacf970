"""Worker.stop cut short: a second, shorter stop, or run cancelled, during a graceful stop.

What ``windshift run`` does on a second SIGTERM or SIGINT. Each test has a
first handler call that would take an hour in a worker granting it ten
minutes, and a second event waiting behind it (concurrency 1): a stop hands
the waiting event back before the grace period begins, so a second
subscription receiving it says the grace period is under way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

import windshift
from tests._util import publish_many, take
from windshift import StreamPointer

GRACE = timedelta(minutes=10)


@dataclass
class Stopping:
    worker: windshift.Worker
    running: asyncio.Task[None]
    first_stop: asyncio.Task[None]
    events: windshift.Subscription  # the test's own subscription on the consumer


@pytest.fixture
async def stopping(client: windshift.Client, name: str) -> AsyncIterator[Stopping]:
    """A worker in the grace period of its first stop, its first call still running."""
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.a", 2)
    worker = windshift.Worker(client, grace_period=GRACE)
    started = asyncio.Event()

    @worker.handler(name, "worker", subjects=[f"{name}.a"], start=StreamPointer.start())
    async def handle(event: windshift.Event) -> None:
        if event.id == 1:
            started.set()
            await asyncio.sleep(3600)

    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    first_stop = asyncio.create_task(worker.stop())
    async with client.subscribe(name, "worker") as events:
        [waiting] = await take(events, 1)
        assert (waiting.id, waiting.delivery_attempt) == (2, 2)  # handed back by the stop
        await waiting.ack()
        yield Stopping(worker, running, first_stop, events)
    running.cancel()
    await asyncio.gather(running, first_stop, return_exceptions=True)


def worker_tasks() -> list[str]:
    return [
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith("windshift-worker-") and not task.done()
    ]


async def test_a_stop_at_once_during_a_graceful_stop_cancels_the_running_call(
    stopping: Stopping,
) -> None:
    # Far sooner than the ten minutes of the first stop.
    await asyncio.wait_for(stopping.worker.stop(grace_period=timedelta(0)), 10)
    assert stopping.first_stop.done() and stopping.running.done()
    assert stopping.running.exception() is None
    assert worker_tasks() == []
    [cancelled] = await take(stopping.events, 1)  # handed back: delivered again at once
    assert (cancelled.id, cancelled.delivery_attempt) == (1, 2)
    await cancelled.ack()


async def test_a_shorter_grace_period_during_a_graceful_stop_ends_it_sooner(
    stopping: Stopping,
) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(stopping.worker.stop(grace_period=timedelta(seconds=0.5)), 10)
    assert loop.time() - began >= 0.5  # the shorter grace period, not none
    [cancelled] = await take(stopping.events, 1)
    assert (cancelled.id, cancelled.delivery_attempt) == (1, 2)
    await cancelled.ack()


async def test_run_cancelled_during_a_graceful_stop_hands_back_and_leaves_nothing_running(
    stopping: Stopping,
) -> None:
    stopping.running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stopping.running, 10)
    assert worker_tasks() == []  # no handler call outlives run
    await asyncio.wait_for(stopping.first_stop, 10)
    [cancelled] = await take(stopping.events, 1)
    assert (cancelled.id, cancelled.delivery_attempt) == (1, 2)
    await cancelled.ack()
