"""The gRPC figures of bench.py: PublishEvent(s) and Events through a real ``windshift-grpc serve``.

Measured in the same run, against the same nats-server, as the library, and
reported as a ratio to the library's own figure for the same workload:
PublishEvent (one event per call) and PublishEvents (:data:`BATCH` per call)
against the library's pipelined publish; Events one event per message and
with ``max_batch`` against its consume + ack. Each workload checks what it
got: every publish answered with an id, no id twice, every event received
exactly once (bench.py also counts the stream and the consumer afterwards).

Both servers are subprocesses whose target is a :class:`Target`, which knows
the server's pid: :func:`server_cpu` reads the CPU time the server has used
(user + system, all its threads) from ``/proc/<pid>/stat``, so bench.py
reports server CPU per event for ``serve`` next to the no-op server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from google.protobuf.any_pb2 import Any

from windshift._embedded import free_port
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc

CHANNELS = 4  # a Python client saturates one channel well before the server
WORKERS = 128  # PublishEvent calls in flight
ACK_BATCH = 64  # ids per Ack request
BATCH = 100  # events per PublishEvents call
BATCH_CALLS = 8  # PublishEvents calls in flight (800 events: the server's pipeline stays full)
MAX_BATCH = 100  # Subscribe.max_batch of the batched Events workload
MAX_PROCESSING_EVENTS = 256


class CountMismatch(RuntimeError):
    """A workload lost or duplicated events: its figure would mean nothing."""


class Target(str):
    """A server's ``host:port``, which also knows the server's process id."""

    pid: int

    def __new__(cls, address: str, pid: int) -> Target:
        target = super().__new__(cls, address)
        target.pid = pid
        return target


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def server_cpu(target: str) -> float | None:
    """CPU seconds (user + system, summed over its threads) the server of ``target`` has used.

    None when ``target`` is not a :class:`Target` or ``/proc`` cannot be read.
    """
    pid = getattr(target, "pid", None)
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Fields after the command (which may hold spaces) in parentheses:
            # utime and stime are the 14th and 15th of the whole line.
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


@contextlib.asynccontextmanager
async def serve(
    nats_url: str, extra_env: dict[str, str] | None = None, command: str | None = None
) -> AsyncIterator[Target]:
    """A ``windshift-grpc serve`` subprocess on free ports; yields its target.

    ``extra_env``: more environment variables for the server (``WINDSHIFT_EVENT_LOOP``, ...);
    ``command``: another ``windshift-grpc`` to run (another checkout's, to compare).
    """
    grpc_port, health_port = free_port(), free_port()
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "GRPC_PORT": str(grpc_port),
        "HEALTH_PORT": str(health_port),
        "WINDSHIFT_AUTH": "none",
        "DEVELOPMENT": "false",
        **(extra_env or {}),
    }
    script = Path(command) if command else Path(sys.executable).parent / "windshift-grpc"
    process = await asyncio.create_subprocess_exec(
        str(script),
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(300):  # ready once /readyz answers 200
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", health_port)
                writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status = await reader.readline()
                writer.close()
                if b" 200 " in status:
                    break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("windshift-grpc serve did not become ready")
        yield Target(f"127.0.0.1:{grpc_port}", process.pid)
    finally:
        process.terminate()
        await process.wait()


@contextlib.asynccontextmanager
async def serve_noop() -> AsyncIterator[Target]:
    """The no-op server of ``grpc_noop_server.py`` in a subprocess; yields its target."""
    port = free_port()
    script = Path(__file__).with_name("grpc_noop_server.py")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    target = Target(f"127.0.0.1:{port}", process.pid)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
        yield target
    finally:
        process.terminate()
        await process.wait()


def _data(message: bytes) -> Any:
    data = Any()
    data.type_url = "type.googleapis.com/google.protobuf.StringValue"
    data.value = message
    return data


async def publish_events(target: str, subject: str, count: int, body: bytes) -> float:
    """Concurrent PublishEvent calls; events per second."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    try:
        stubs = [pb_grpc.EventsServiceStub(channel) for channel in channels]
        request = pb.PublishEventRequest(subject=subject, data=_data(body))
        per_worker, rest = divmod(count, WORKERS)

        async def worker(index: int) -> None:
            stub = stubs[index % CHANNELS]
            for _ in range(per_worker + (1 if index < rest else 0)):
                await stub.PublishEvent(request)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(WORKERS)))
        return count / (time.perf_counter() - started)
    finally:
        for channel in channels:
            await channel.close()


async def publish_events_batched(
    target: str, subject: str, count: int, body: bytes, batch: int = BATCH
) -> float:
    """Concurrent PublishEvents calls of ``batch`` events each; events per second.

    Raises:
        CountMismatch: an event was refused, or two events got the same id.
    """
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    try:
        stubs = [pb_grpc.EventsServiceStub(channel) for channel in channels]
        event = pb.PublishEventRequest(subject=subject, data=_data(body))
        sizes = [batch] * (count // batch) + ([count % batch] if count % batch else [])
        requests = {size: pb.PublishEventsRequest(events=[event] * size) for size in set(sizes)}
        ids: list[int] = []
        refused: list[str] = []

        async def worker(index: int) -> None:
            stub = stubs[index % CHANNELS]
            while sizes:
                answer = await stub.PublishEvents(requests[sizes.pop()])
                for result in answer.results:
                    if result.WhichOneof("result") == "id":
                        ids.append(result.id)
                    else:
                        refused.append(result.error.message)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(BATCH_CALLS)))
        rate = count / (time.perf_counter() - started)
    finally:
        for channel in channels:
            await channel.close()
    if refused or len(set(ids)) != count:
        raise CountMismatch(
            f"PublishEvents: {len(set(ids))} distinct ids for {count} events, "
            f"{len(refused)} refused ({refused[:1]})"
        )
    return rate


async def consume_events(
    target: str, stream: str, consumer: str, count: int, max_batch: int | None = None
) -> float:
    """One Events call receiving and acking ``count`` events; events per second.

    With ``max_batch`` the events come in batches (``events``), up to that many
    per message.

    Raises:
        CountMismatch: an event came twice, or the call ended before ``count``
            were acknowledged.
    """
    requests: asyncio.Queue[pb.EventsRequest | None] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[pb.EventsRequest]:
        while (request := await requests.get()) is not None:
            yield request

    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EventsServiceStub(channel)
        subscribe = pb.EventsRequest.Subscribe(
            stream=stream, consumer=consumer, max_processing_events=MAX_PROCESSING_EVENTS
        )
        if max_batch is not None:
            subscribe.max_batch = max_batch
        await requests.put(pb.EventsRequest(subscribe=subscribe))
        call = stub.Events(outgoing())
        seen: set[int] = set()
        received = acked = 0
        pending: list[int] = []
        started = 0.0
        async for response in call:
            kind = response.WhichOneof("response")
            if kind == "subscribed":
                started = time.perf_counter()
                continue
            if kind == "event":
                ids = [response.event.id]
            elif kind == "events":
                ids = [event.id for event in response.events.events]
            elif kind == "ack_confirmation":
                acked += len(response.ack_confirmation.ids)
                if acked >= count:
                    break
                continue
            else:
                continue
            # (The no-op server streams events without end: only the first count are taken.)
            ids = ids[: count - received]
            received += len(ids)
            seen.update(ids)
            pending += ids
            if pending and (len(pending) >= ACK_BATCH or received >= count):
                await requests.put(pb.EventsRequest(ack=pb.EventsRequest.Ack(ids=pending)))
                pending = []
        elapsed = time.perf_counter() - started
        await requests.put(None)
        call.cancel()
    if received != count or len(seen) != count or acked != count:
        raise CountMismatch(
            f"Events: {received} received ({len(seen)} distinct), {acked} acknowledged, "
            f"for {count} events"
        )
    return count / elapsed


async def paced_calls(
    rate: int, duration: float, call: Callable[[], Awaitable[object]]
) -> list[float]:
    """Start ``call()`` ``rate`` times a second for ``duration`` seconds; each call's latency (s).

    Open loop: every call starts at its own time (``i / rate`` after the
    first) in a task of its own, whether or not the calls before it were
    answered, so a slow answer shows in the figures rather than slowing the
    rate down. A latency runs from the call's start to its answer.
    """
    total = int(rate * duration)
    latencies: list[float] = []

    async def one() -> None:
        began = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - began)

    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for index in range(total):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies


async def publish_event_latency(
    target: str, subject: str, rate: int, duration: float, body: bytes
) -> list[float]:
    """Unbatched PublishEvent calls on one channel at ``rate`` a second; each call's latency (s).

    Raises:
        CountMismatch: two calls were answered with the same id.
    """
    ids: list[int] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EventsServiceStub(channel)
        request = pb.PublishEventRequest(subject=subject, data=_data(body))
        await channel.channel_ready()

        async def call() -> None:
            ids.append((await stub.PublishEvent(request)).id)

        latencies = await paced_calls(rate, duration, call)
    if len(set(ids)) != len(latencies):
        raise CountMismatch(
            f"PublishEvent: {len(set(ids))} distinct ids for {len(latencies)} calls"
        )
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` (0.99: p99) percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
