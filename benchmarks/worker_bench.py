"""The Worker against the plain subscribe loop and FastStream, in one run, on one nats-server.

Run from the repository root:

    .venv/bin/python benchmarks/worker_bench.py             # full size, a few minutes
    .venv/bin/python benchmarks/worker_bench.py --quick     # smaller numbers
    .venv/bin/python benchmarks/worker_bench.py --json out.json

Rows, each on a fresh stream pre-filled with raw nats-py (never timed), each
the median of ``--repeat`` rounds taken in turn:

* ``loop``: ``async with client.subscribe(...)``, ``event.unpack``, ``await event.ack()``;
* ``worker c=1``: a ``windshift.Worker`` handler doing the same, concurrency 1;
* ``faststream c=1``: FastStream's JetStream subscriber (durable, push), the
  same handler work, acked by FastStream after the handler;
* ``worker c=16, 1 ms``: concurrency 16, a handler that awaits 1 ms;
* ``ref: asyncio ceiling``: 16 tasks that do nothing but ``await asyncio.sleep(0.001)``:
  what asyncio's timers allow at all (each sleep lasts about 1.2 ms, not 1);
* ``ref: ... out of step``: the same 16 tasks started spread over one sleep,
  each spending after every sleep the CPU time the loop row spends per event
  (1 / its rate): the ceiling for a handler that awaits 1 ms once events, and
  so the handlers' timers, no longer come in step;
* ``faststream c=16, 1 ms``: ``max_workers=16`` (FastStream's documented
  concurrency setting), the same handler;
* ``pydantic publish`` / ``pydantic consume``: a pydantic model published and
  read back through each library (windshift: ``publish(model)`` and a Worker
  handler calling ``event.unpack(Model)``; FastStream: ``publisher.publish(model)``
  and a subscriber typed with the model, which FastStream parses);
* ``memory``: a worker (concurrency 16) drains a backlog (100,000 events) in a
  child process: RSS growth during the drain.

Targets (printed, each met or MISS): the worker at concurrency 1 at least
0.9x the loop; at concurrency 16 with the 1 ms handler at least 0.8x the
lower of 16,000 ev/s and the loop's rate; ahead of FastStream on every row;
memory bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import nats
from faststream.nats import JStream, NatsBroker
from google.protobuf.wrappers_pb2 import StringValue
from nats.js.api import DeliverPolicy
from pydantic import BaseModel

import windshift
from windshift import EmbeddedNats, Event, StreamPointer, Worker

SCRIPT = os.path.abspath(__file__)
DATA_TYPE = StringValue.DESCRIPTOR.full_name
BODY = StringValue(value="x" * 98).SerializeToString()


class Order(BaseModel):
    """The pydantic rows' event."""

    id: str
    customer: str
    total_cents: int
    items: list[str]


ORDER = Order(id="ord-12345", customer="cust-678", total_cents=4250, items=["a", "b", "c"])


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def fill(url: str, stream: str, count: int) -> None:
    """Create ``stream`` and publish ``count`` windshift-shaped events with raw nats-py."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=512)
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    headers = {"WS-Data-Type": DATA_TYPE, "WS-Published-Time": "2026-01-01T00:00:00Z"}
    for _ in range(count):
        await js.publish_async(f"{stream}.event", BODY, headers=headers)
    await js.publish_async_completed()
    await nc.close()


async def drop(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    with contextlib.suppress(Exception):
        await nc.jetstream().delete_stream(stream)
    await nc.close()


class Counter:
    """Counts handled events; ``done`` is set at ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = asyncio.Event()

    def add(self, events: int = 1) -> None:
        self.count += events
        if self.count >= self.target:
            self.done.set()


async def timed(run: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


# --------------------------------------------------------------------- the rows


async def loop_row(url: str, stream: str, count: int) -> float:
    async with windshift.connect(url) as client:
        consumer = await client.ensure_consumer(stream, "bench", start=StreamPointer.start())

        async def run() -> None:
            handled = 0
            async with client.subscribe(stream, consumer.id) as events:
                async for event in events:
                    event.unpack(StringValue)
                    await event.ack()
                    handled += 1
                    if handled == count:
                        break
            await client.nats.flush()

        return count / await timed(run)


async def worker_row(url: str, stream: str, count: int, concurrency: int, work: float) -> float:
    async with windshift.connect(url) as client:
        counter = Counter(count)
        worker = Worker(client)

        @worker.handler(
            stream,
            "bench",
            subjects=[f"{stream}.>"],
            start=StreamPointer.start(),
            concurrency=concurrency,
        )
        async def handle(event: Event) -> None:
            event.unpack(StringValue)
            if work:
                await asyncio.sleep(work)
            counter.add()

        async def run() -> None:
            task = asyncio.create_task(worker.run())
            await counter.done.wait()
            await worker.stop(grace_period=timedelta(seconds=30))
            await task

        return count / await timed(run)


async def faststream_row(url: str, stream: str, count: int, workers: int, work: float) -> float:
    broker = NatsBroker(url, logger=None, apply_types=False)
    counter = Counter(count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        subscriber = broker.subscriber(
            f"{stream}.>",
            stream=JStream(stream, declare=False),
            durable="bench",
            deliver_policy=DeliverPolicy.ALL,
            persistent=False,
            max_workers=workers,  # FastStream's documented concurrency setting
        )

    async def handle(body: bytes) -> None:
        StringValue.FromString(body)
        if work:
            await asyncio.sleep(work)
        counter.add()

    subscriber(handle)

    await broker.start()
    try:
        return count / await timed(counter.done.wait)
    finally:
        await broker.stop()


async def sleep_ceiling(
    tasks: int, work: float, seconds: float = 2.0, *, cost: float = 0.0
) -> float:
    """What asyncio allows at all: ``tasks`` tasks each awaiting ``asyncio.sleep(work)`` in turn.

    With ``cost`` (seconds of CPU per event, spent busy after each sleep, as
    receiving and settling an event costs) the tasks also start spread over
    one sleep, as handlers do once events come in one by one: their timers
    then fall between the event loop's wake-ups, which the selector rounds up
    to whole milliseconds.
    """
    done = 0
    until = time.perf_counter() + seconds

    def busy(duration: float) -> None:
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            pass

    async def sleeper(index: int) -> None:
        nonlocal done
        if cost:
            busy(index * work / tasks)
        while time.perf_counter() < until:
            await asyncio.sleep(work)
            done += 1
            if cost:
                busy(cost)

    started = time.perf_counter()
    await asyncio.gather(*(sleeper(index) for index in range(tasks)))
    return done / (time.perf_counter() - started)


async def pydantic_windshift(url: str, stream: str, count: int) -> tuple[float, float]:
    async with windshift.connect(url) as client:
        await client.ensure_stream(stream, subjects=[f"{stream}.>"])
        slots = asyncio.Semaphore(256)

        async def one() -> None:
            async with slots:
                await client.publish(f"{stream}.order", ORDER)

        async def publish_all() -> None:
            await asyncio.gather(*(one() for _ in range(count)))

        publish_rate = count / await timed(publish_all)
        counter = Counter(count)
        worker = Worker(client)

        @worker.handler(
            stream, "bench", subjects=[f"{stream}.>"], start=StreamPointer.start(), concurrency=1
        )
        async def handle(event: Event) -> None:
            event.unpack(Order)
            counter.add()

        async def consume() -> None:
            task = asyncio.create_task(worker.run())
            await counter.done.wait()
            await worker.stop()
            await task

        return publish_rate, count / await timed(consume)


async def pydantic_faststream(url: str, stream: str, count: int) -> tuple[float, float]:
    broker = NatsBroker(url, logger=None)  # apply_types on: FastStream parses the model
    await broker.start()
    try:
        js = broker.connection.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        publisher = broker.publisher(
            f"{stream}.order", stream=JStream(stream, declare=False), persistent=False
        )
        slots = asyncio.Semaphore(256)

        async def one() -> None:
            async with slots:
                await publisher.publish(ORDER)

        async def publish_all() -> None:
            await asyncio.gather(*(one() for _ in range(count)))

        publish_rate = count / await timed(publish_all)
        counter = Counter(count)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            subscriber = broker.subscriber(
                f"{stream}.>",
                stream=JStream(stream, declare=False),
                durable="bench",
                deliver_policy=DeliverPolicy.ALL,
                persistent=False,
            )

        @subscriber
        async def handle(order: Order) -> None:
            counter.add()

        await subscriber.start()
        try:
            consume_rate = count / await timed(counter.done.wait)
        finally:
            await subscriber.stop()
        return publish_rate, consume_rate
    finally:
        await broker.stop()


async def memory_child(url: str, stream: str, backlog: int) -> None:
    """Drain ``stream`` with a worker (concurrency 16); print RSS figures as JSON."""
    async with windshift.connect(url) as client:
        counter = Counter(backlog)
        peak = 0
        worker = Worker(client)

        @worker.handler(
            stream, "bench", subjects=[f"{stream}.>"], start=StreamPointer.start(), concurrency=16
        )
        async def handle(event: Event) -> None:
            nonlocal peak
            event.unpack(StringValue)
            counter.add()
            if counter.count % 1000 == 0:
                peak = max(peak, rss_kb())

        gc.collect()
        baseline = rss_kb()
        started = time.perf_counter()
        task = asyncio.create_task(worker.run())
        await counter.done.wait()
        elapsed = time.perf_counter() - started
        await worker.stop()
        await task
        peak = max(peak, rss_kb())
    print(json.dumps({"baseline_kb": baseline, "peak_kb": peak, "rate": backlog / elapsed}))


# --------------------------------------------------------------------- the run


@dataclass
class Figures:
    rows: dict[str, list[float]]

    def median(self, row: str) -> float:
        return statistics.median(self.rows[row])


async def run(args: argparse.Namespace) -> int:
    count = args.events
    figures = Figures(rows={})
    async with EmbeddedNats(sync_always=False) as server:
        url = server.url
        names = iter(f"wb{n}" for n in range(10_000))

        async def measure(row: str, body: Callable[[str], Awaitable[float]], fill_it: bool) -> None:
            stream = next(names)
            if fill_it:
                await fill(url, stream, count)
            try:
                figures.rows.setdefault(row, []).append(await body(stream))
            finally:
                await drop(url, stream)

        slow = min(count, args.slow_events)  # events of the 1 ms rows
        for round_number in range(args.repeat):
            print(f"round {round_number + 1}/{args.repeat}", file=sys.stderr)
            await measure("loop", lambda s: loop_row(url, s, count), True)
            await measure("worker c=1", lambda s: worker_row(url, s, count, 1, 0), True)
            await measure("faststream c=1", lambda s: faststream_row(url, s, count, 1, 0), True)
            await measure("worker c=16, 1 ms", lambda s: worker_row(url, s, slow, 16, 0.001), True)
            figures.rows.setdefault("asyncio ceiling 16 x 1 ms", []).append(
                await sleep_ceiling(16, 0.001)
            )
            # The same with the loop's own cost per event, the tasks out of step.
            figures.rows.setdefault("asyncio ceiling 16 x 1 ms, staggered", []).append(
                await sleep_ceiling(16, 0.001, cost=1 / figures.rows["loop"][-1])
            )
            await measure(
                "faststream c=16, 1 ms", lambda s: faststream_row(url, s, slow, 16, 0.001), True
            )
            for library, body in (
                ("windshift", pydantic_windshift),
                ("faststream", pydantic_faststream),
            ):
                stream = next(names)
                try:
                    published, consumed = await body(url, stream, count)
                finally:
                    await drop(url, stream)
                figures.rows.setdefault(f"{library} pydantic publish", []).append(published)
                figures.rows.setdefault(f"{library} pydantic consume", []).append(consumed)
        stream = next(names)
        await fill(url, stream, args.backlog)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--memory-child",
            url,
            stream,
            str(args.backlog),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await child.communicate()
        memory = json.loads(out.decode().strip().splitlines()[-1])
        await drop(url, stream)
    return report(figures, memory, args)


def report(figures: Figures, memory: dict[str, float], args: argparse.Namespace) -> int:
    med = figures.median
    loop = med("loop")
    lines = [
        "| row | events/s | ratio |",
        "|---|---:|---|",
        f"| loop (subscribe) | {loop:,.0f} | 1.00 |",
        f"| worker c=1 | {med('worker c=1'):,.0f} | {med('worker c=1') / loop:.2f}x loop |",
        f"| faststream c=1 | {med('faststream c=1'):,.0f} | worker "
        f"{med('worker c=1') / med('faststream c=1'):.2f}x |",
        f"| worker c=16, 1 ms | {med('worker c=16, 1 ms'):,.0f} | "
        f"{med('worker c=16, 1 ms') / min(16_000, loop):.2f}x of min(16,000, loop) |",
        f"| ref: asyncio ceiling, 16 tasks only sleeping 1 ms | "
        f"{med('asyncio ceiling 16 x 1 ms'):,.0f} | worker "
        f"{med('worker c=16, 1 ms') / med('asyncio ceiling 16 x 1 ms'):.2f}x of it |",
        f"| ref: the same, out of step, each event costing what the loop spends on one | "
        f"{med('asyncio ceiling 16 x 1 ms, staggered'):,.0f} | worker "
        f"{med('worker c=16, 1 ms') / med('asyncio ceiling 16 x 1 ms, staggered'):.2f}x of it |",
        f"| faststream c=16, 1 ms | {med('faststream c=16, 1 ms'):,.0f} | worker "
        f"{med('worker c=16, 1 ms') / med('faststream c=16, 1 ms'):.2f}x |",
    ]
    for kind in ("publish", "consume"):
        ws, fs = med(f"windshift pydantic {kind}"), med(f"faststream pydantic {kind}")
        lines.append(
            f"| pydantic {kind}: windshift / FastStream | {ws:,.0f} / {fs:,.0f} | {ws / fs:.2f}x |"
        )
    growth_mb = (memory["peak_kb"] - memory["baseline_kb"]) / 1024
    lines.append(
        f"| memory: worker c=16 drains {args.backlog:,} | {memory['rate']:,.0f} | "
        f"RSS +{growth_mb:.1f} MiB |"
    )
    print("\n".join(lines))
    targets = [
        ("worker c=1 >= 0.9x loop", med("worker c=1") >= 0.9 * loop),
        (
            "worker c=16, 1 ms >= 0.8x min(16,000, loop)",
            med("worker c=16, 1 ms") >= 0.8 * min(16_000, loop),
        ),
        ("worker c=1 ahead of FastStream", med("worker c=1") > med("faststream c=1")),
        (
            "worker c=16 ahead of FastStream",
            med("worker c=16, 1 ms") > med("faststream c=16, 1 ms"),
        ),
        (
            "pydantic publish ahead of FastStream",
            med("windshift pydantic publish") > med("faststream pydantic publish"),
        ),
        (
            "pydantic consume ahead of FastStream",
            med("windshift pydantic consume") > med("faststream pydantic consume"),
        ),
        ("memory bounded (RSS growth under 50 MiB)", growth_mb < 50),
    ]
    print()
    for label, met in targets:
        print(f"{'met ' if met else 'MISS'} {label}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": figures.rows, "memory": memory}, out, indent=2)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--slow-events", type=int, default=20_000, help="events of the 1 ms rows")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="5,000 events, 20,000 backlog, 1 round"
    )
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--memory-child", nargs=3, metavar=("URL", "STREAM", "BACKLOG"))
    args = parser.parse_args()
    if args.memory_child:
        url, stream, backlog = args.memory_child
        asyncio.run(memory_child(url, stream, int(backlog)))
        return 0
    if args.quick:
        args.events, args.slow_events, args.backlog, args.repeat = 5_000, 5_000, 20_000, 1
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
