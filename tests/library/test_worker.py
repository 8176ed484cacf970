"""windshift.Worker against a real nats-server: settlement, concurrency, ordering, retries, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import windshift
from tests._util import text
from windshift import (
    ConsumerNotFoundError,
    Event,
    Retry,
    StreamPointer,
    ValidationError,
    Worker,
)

FAST = Retry(delay=timedelta(milliseconds=20), backoff=1.0, jitter=0.0)


async def publish(client: windshift.Client, subject: str, *values: str) -> list[int]:
    return [(await client.publish(subject, StringValue(value=v))).id for v in values]


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Run the worker in a task; stop it (and re-raise what it raised) on leaving."""
    task = asyncio.create_task(worker.run())
    try:
        await _serving(worker, task)
        yield task
    finally:
        await worker.stop()
        await task


async def _serving(worker: Worker, task: asyncio.Task[None]) -> None:
    """Wait until the worker serves; raise at once what its run raised instead."""
    serving = asyncio.ensure_future(worker.serving())
    await asyncio.wait([serving, task], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        serving.cancel()
        task.result()
    assert serving.done(), "the worker did not start serving"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    """Poll JetStream's own state, which announces nothing, until ``check`` holds."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 (the server's state: nothing to await)
            await asyncio.sleep(0.02)


async def settled(client: windshift.Client, stream: str, consumer: str) -> bool:
    info = await client.consumer_info(stream, consumer)
    return info.pending_events == 0 and info.unsettled_events == 0


class Recorder:
    """A handler's memory: what it saw, and a wake-up at every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int]] = []  # (id, text, attempt)
        self._changed = asyncio.Condition()

    async def record(self, event: Event) -> None:
        async with self._changed:
            self.calls.append((event.id, text(event), event.delivery_attempt))
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.calls) >= count)

    def attempts(self, event_id: int) -> list[int]:
        return [attempt for seen, _, attempt in self.calls if seen == event_id]


async def test_returning_acks_raising_retries_and_settling_is_left_alone(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    seen = Recorder()
    worker = Worker(client)

    @worker.handler(name, "w", subjects=[f"{name}.>"], start=StreamPointer.start(), retry=FAST)
    async def handle(event: Event) -> None:
        await seen.record(event)
        if text(event) == "flaky" and event.delivery_attempt < 3:
            raise RuntimeError("not yet")
        if text(event) == "own":
            await event.reject(permanently=True)

    ok, flaky, own = await publish(client, f"{name}.x", "ok", "flaky", "own")
    async with running(worker):
        await seen.wait_for(5)
        await eventually(lambda: settled(client, name, "w"))
    assert seen.attempts(ok) == [1]
    assert seen.attempts(own) == [1]  # rejected permanently by the handler: not redelivered
    assert seen.attempts(flaky) == [1, 2, 3]  # one more at every call of the same event


async def test_a_failure_is_logged_with_the_event_id_and_never_the_payload(
    client: windshift.Client, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    seen = Recorder()
    worker = Worker(client)

    @worker.handler(name, "w", subjects=[f"{name}.>"], start=StreamPointer.start(), retry=FAST)
    async def handle(event: Event) -> None:
        await seen.record(event)
        if event.delivery_attempt == 1:
            raise KeyError("no such customer")

    [event_id] = await publish(client, f"{name}.x", "secret-card-4111")
    with caplog.at_level(logging.ERROR, logger="windshift.worker"):
        async with running(worker):
            await seen.wait_for(2)
    [failure] = [r for r in caplog.records if r.name == "windshift.worker"]
    assert f"event {event_id} of {name}/w (attempt 1)" in failure.getMessage()
    assert failure.exc_info is not None and failure.exc_info[0] is KeyError
    assert "secret-card-4111" not in caplog.text


async def test_without_subjects_the_consumer_must_exist_at_start(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    worker = Worker(client)

    @worker.handler(name, "missing")
    async def handle(event: Event) -> None:
        raise AssertionError("never called")

    with pytest.raises(ConsumerNotFoundError, match="give the handler subjects=") as missing:
        await worker.run()
    assert (missing.value.stream, missing.value.consumer) == (name, "missing")
    assert not worker.running


async def test_with_subjects_the_consumer_is_ensured_with_the_options(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    worker = Worker(client)

    @worker.handler(
        name,
        "ensured",
        subjects=[f"{name}.a"],
        start=StreamPointer.start(),
        max_delivery_attempts=4,
        dead_letter_stream=f"{name}dead",
        processing_timeout=timedelta(seconds=7),
    )
    async def handle(event: Event) -> None:
        pass

    async with running(worker):
        info = await client.consumer_info(name, "ensured")
    assert info.subjects == [f"{name}.a"]
    assert info.max_delivery_attempts == 4
    assert info.dead_letter_stream == f"{name}dead"
    assert info.processing_timeout == timedelta(seconds=7)


def test_bad_registrations_are_refused_at_once() -> None:
    worker = Worker()
    with pytest.raises(ValidationError, match="give subjects= as well"):
        worker.handler("s", "c", max_delivery_attempts=3)
    with pytest.raises(ValidationError, match="concurrency must be"):
        worker.handler("s", "c", concurrency=0)
    with pytest.raises(ValidationError, match="prefetch must be"):
        worker.handler("s", "c", concurrency=8, prefetch=4)
    with pytest.raises(ValidationError, match="async def"):
        worker.handler("s", "c")(lambda event: None)  # type: ignore[type-var]

    @worker.handler("s", "c")
    async def first(event: Event) -> None:
        pass

    with pytest.raises(ValidationError, match="already has a handler"):

        @worker.handler("s", "c")
        async def second(event: Event) -> None:
            pass


async def test_several_handlers_run_side_by_side(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    both = asyncio.Barrier(3)
    worker = Worker(client)

    @worker.handler(name, "one", subjects=[f"{name}.one"], start=StreamPointer.start())
    async def one(event: Event) -> None:
        await both.wait()  # returns only once the other handler runs too

    @worker.handler(name, "two", subjects=[f"{name}.two"], start=StreamPointer.start())
    async def two(event: Event) -> None:
        await both.wait()

    await publish(client, f"{name}.one", "1")
    await publish(client, f"{name}.two", "2")
    async with running(worker):
        await asyncio.wait_for(both.wait(), 15)
        await eventually(lambda: settled(client, name, "one"))
        await eventually(lambda: settled(client, name, "two"))


async def test_concurrency_bounds_the_calls_and_the_fetched_events(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    worker = Worker(client)
    running_now = 0
    most = 0
    release = asyncio.Event()
    started = asyncio.Condition()

    @worker.handler(
        name, "w", subjects=[f"{name}.>"], start=StreamPointer.start(), concurrency=4, prefetch=6
    )
    async def handle(event: Event) -> None:
        nonlocal running_now, most
        async with started:
            running_now += 1
            most = max(most, running_now)
            started.notify_all()
        await release.wait()
        running_now -= 1

    await publish(client, f"{name}.x", *map(str, range(40)))
    async with running(worker):
        async with asyncio.timeout(15), started:
            await started.wait_for(lambda: running_now == 4)
        # Four calls run, two more wait: JetStream hands out no more than prefetch.
        await eventually(lambda: unsettled(client, name, "w", 6))
        assert most == 4
        release.set()
        await eventually(lambda: settled(client, name, "w"))
    assert most == 4


async def unsettled(client: windshift.Client, stream: str, consumer: str, count: int) -> bool:
    return (await client.consumer_info(stream, consumer)).unsettled_events == count


async def test_a_call_longer_than_the_processing_timeout_is_pinged_not_redelivered(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    seen = Recorder()
    worker = Worker(client)
    timeout = timedelta(seconds=1)

    @worker.handler(
        name, "w", subjects=[f"{name}.>"], start=StreamPointer.start(), processing_timeout=timeout
    )
    async def handle(event: Event) -> None:
        await seen.record(event)
        await asyncio.sleep(2.5 * timeout.total_seconds())  # the slow work itself

    [event_id] = await publish(client, f"{name}.x", "slow")
    async with running(worker):
        await seen.wait_for(1)
        await eventually(lambda: settled(client, name, "w"))
    assert seen.attempts(event_id) == [1]  # never delivered again while it ran
    assert (await client.consumer_info(name, "w")).redelivered_events == 0


async def test_per_key_order_holds_under_concurrency_with_a_failure_in_the_middle(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    seen = Recorder()
    worker = Worker(client)
    overlap = asyncio.Event()  # set when calls of two different keys ran at once
    active: dict[str, int] = {}

    @worker.handler(
        name,
        "w",
        subjects=[f"{name}.>"],
        start=StreamPointer.start(),
        concurrency=8,
        ordering_key=lambda event: event.subject,
        retry=Retry(delay=timedelta(milliseconds=200), backoff=1.0, jitter=0.0),
    )
    async def handle(event: Event) -> None:
        key = event.subject
        assert active.get(key, 0) == 0, f"two calls of key {key} at once"
        active[key] = 1
        try:
            if len([k for k, n in active.items() if n]) > 1:
                overlap.set()
            await seen.record(event)
            await asyncio.sleep(0.005)  # long enough for other keys to interleave
            if text(event) == "a-3" and event.delivery_attempt < 3:
                raise RuntimeError("fails twice, then succeeds")
        finally:
            active[key] = 0

    published: dict[str, list[int]] = {}
    for index in range(10):
        for key in "abcd":
            [event_id] = await publish(client, f"{name}.{key}", f"{key}-{index}")
            published.setdefault(f"{name}.{key}", []).append(event_id)
    async with running(worker):
        await seen.wait_for(42)  # 40 events, "a-3" twice more
        await eventually(lambda: settled(client, name, "w"))
    assert overlap.is_set()  # different keys ran concurrently
    for subject, ids in published.items():
        order = [i for i, value, _ in seen.calls if value.startswith(subject[-1] + "-")]
        # in stream order, each event after the earlier ones of its key are done;
        # the failing one runs again (and again) before the next of its key
        assert [i for n, i in enumerate(order) if n == 0 or order[n - 1] != i] == ids
    a3 = published[f"{name}.a"][3]
    assert seen.attempts(a3) == [1, 2, 3]


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
async def test_after_the_last_attempt_the_event_is_dead_lettered_once(
    client: windshift.Client, name: str, ordered: bool
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    seen = Recorder()
    worker = Worker(client)
    dead = f"{name}dead"

    @worker.handler(
        name,
        "w",
        subjects=[f"{name}.>"],
        start=StreamPointer.start(),
        retry=FAST,
        max_delivery_attempts=3,
        dead_letter_stream=dead,
        ordering_key=(lambda event: event.subject) if ordered else None,
    )
    async def handle(event: Event) -> None:
        await seen.record(event)
        if text(event) == "poison":
            raise ValueError("cannot parse the order")

    [poison] = await publish(client, f"{name}.x", "poison")
    [after] = await publish(client, f"{name}.x", "fine")
    async with running(worker):
        await seen.wait_for(4)
        await eventually(lambda: settled(client, name, "w"))
    assert seen.attempts(poison) == [1, 2, 3]
    assert seen.attempts(after) == [1]
    [letter] = await client.dead_letters(dead).list()
    assert (letter.event_id, letter.attempts) == (poison, 3)
    assert "ValueError: cannot parse the order" in letter.reason


async def test_stop_with_a_full_queue_hands_back_what_did_not_start(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    worker = Worker(client, grace_period=timedelta(seconds=20))
    started = asyncio.Event()
    finish = asyncio.Event()
    finished: list[int] = []

    @worker.handler(
        name, "w", subjects=[f"{name}.>"], start=StreamPointer.start(), concurrency=2, prefetch=10
    )
    async def handle(event: Event) -> None:
        started.set()
        await finish.wait()
        finished.append(event.id)

    await publish(client, f"{name}.x", *map(str, range(30)))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 15)
    await eventually(lambda: unsettled(client, name, "w", 10))  # 2 running, 8 waiting
    stopping = asyncio.create_task(worker.stop())
    # While the two running calls are still inside their grace period, what
    # was received and not started is back with NATS already: another reader
    # gets it at once (not after the 30 s processing timeout).
    async with client.subscribe(name, "w", max_pending_events=28) as other:
        again = [await asyncio.wait_for(anext(other), 5) for _ in range(28)]
        assert not stopping.done()
        assert sum(event.delivery_attempt == 2 for event in again) == 8  # the handed-back
        finish.set()
        await asyncio.wait_for(stopping, 15)
        await task
        assert len(finished) == 2  # the running calls finished and were acknowledged
        assert set(finished).isdisjoint(event.id for event in again)
        for event in again:
            await event.ack()
    await eventually(lambda: settled(client, name, "w"))


async def test_stop_past_the_grace_period_cancels_and_hands_back(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    worker = Worker(client, grace_period=timedelta(milliseconds=200))
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @worker.handler(name, "w", subjects=[f"{name}.>"], start=StreamPointer.start())
    async def handle(event: Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never ends by itself
        except asyncio.CancelledError:
            cancelled.set()
            raise

    [event_id] = await publish(client, f"{name}.x", "stuck")
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 15)
    await asyncio.wait_for(worker.stop(), 15)
    await task
    assert cancelled.is_set()
    async with client.subscribe(name, "w") as events:
        again = await asyncio.wait_for(anext(events), 15)  # handed back: at once, not after 30 s
        assert (again.id, again.delivery_attempt) == (event_id, 2)
        await again.ack()


async def test_handler_metrics_report_duration_by_outcome(
    client: windshift.Client, name: str, metric_reader: InMemoryMetricReader
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    seen = Recorder()
    worker = Worker(client)

    @worker.handler(name, "w", subjects=[f"{name}.>"], start=StreamPointer.start(), retry=FAST)
    async def handle(event: Event) -> None:
        await seen.record(event)
        if event.delivery_attempt == 1 and text(event) == "again":
            raise RuntimeError("once")

    await publish(client, f"{name}.x", "ok", "again")
    async with running(worker):
        await seen.wait_for(3)
        await eventually(lambda: settled(client, name, "w"))
        data = metric_reader.get_metrics_data()
    points: dict[str, int] = {}
    gauges: set[str] = set()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = point.attributes or {}
                    if attributes.get("windshift.consumer") != "w" or (
                        attributes.get("windshift.stream") != name
                    ):
                        continue
                    if metric.name == "windshift.handler.duration":
                        outcome = str(attributes["windshift.outcome"])
                        points[outcome] = points.get(outcome, 0) + point.count  # type: ignore[union-attr]
                    elif metric.name.startswith("windshift.handler."):
                        gauges.add(metric.name)
    assert points == {"acknowledged": 2, "retried": 1}
    assert gauges == {"windshift.handler.running", "windshift.handler.queued"}


def test_retry_delays_grow_by_the_backoff_up_to_the_cap() -> None:
    retry = Retry(delay=timedelta(seconds=1), backoff=2.0, max_delay=timedelta(seconds=5), jitter=0)
    assert [retry.delay_for(n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert retry.delay_for(10_000) == timedelta(seconds=5)  # no overflow
    spread = Retry(delay=timedelta(seconds=10), jitter=0.1)
    for _ in range(200):
        assert 9 <= spread.delay_for(1).total_seconds() <= 11
    assert Retry(delay=timedelta(0)).delay_for(3) == timedelta(0)


def test_retry_refuses_bad_values() -> None:
    with pytest.raises(ValidationError, match="backoff must be 1 or more"):
        Retry(backoff=0.5)
    with pytest.raises(ValidationError, match="jitter must be a fraction"):
        Retry(jitter=2)
    with pytest.raises(ValidationError, match="must not be shorter than delay"):
        Retry(delay=timedelta(minutes=10), max_delay=timedelta(minutes=1))
    with pytest.raises(ValidationError, match="attempt must be"):
        Retry().delay_for(0)


async def test_retry_serves_a_plain_subscription_too(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "plain", start=StreamPointer.start())
    await publish(client, f"{name}.x", "later")
    retry = Retry(delay=timedelta(milliseconds=300), jitter=0)
    loop = asyncio.get_running_loop()
    async with client.subscribe(name, consumer.id) as events:
        event = await anext(events)
        rejected_at = loop.time()
        await event.reject(delay=retry.delay_for(event.delivery_attempt))
        again = await asyncio.wait_for(anext(events), 15)
        assert again.delivery_attempt == 2
        assert loop.time() - rejected_at >= 0.3
        await again.ack()
