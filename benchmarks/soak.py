"""Soak: windshift through repeated SIGKILLs, beside careful raw nats-py and FastStream.

The long version of the resilience scenarios 1 and 2 (tests/test_resilience.py)
and 3 (tests/test_grpc_resilience.py):

* ``--mode single``: one nats-server, SIGKILLed every ``--kill-interval``
  seconds and restarted at once on the same store;
* ``--mode cluster``: three nats-servers, a stream with 3 replicas; every
  ``--kill-interval`` seconds the stream's leader is SIGKILLed, and brought
  back ``--down`` seconds after the cluster elected a new one;
* ``--mode grpc``: two ``windshift-grpc serve`` processes on one nats-server,
  SIGKILLed in turn while their Events clients hold events; described in
  ``soak_grpc.py``, which runs it with this module's record, publisher loop,
  stream audit and report.

The rest of this docstring is about the first two.

One publisher (windshift, idempotency keys, retried with the same key
while NATS is unavailable) writes ``--events`` events (or for
``--duration`` seconds). Three subscribers read the same stream, each
through its own durable consumer, each acking every event:

* ``windshift``: ``client.subscribe(...)``, ``max_pending_events=--batch``;
* ``raw``: careful raw nats-py: ``pull_subscribe_bind`` and a loop of
  ``fetch(--batch, timeout=--fetch-timeout)`` that catches every error and
  fetches again;
* ``faststream``: FastStream's NATS pull subscriber,
  ``PullSub(batch_size=--batch, timeout=--fetch-timeout)``.

All connections reconnect forever, every 0.25 s. Kills alternate (``--pattern
mixed``) between *busy* ones (publishing goes on, subscribers are working)
and *idle* ones (publishing pauses until every subscriber has caught up, so
that each has nothing but a pull request in flight when the server dies;
publishing resumes once the server listens again).

Every figure comes from the script's own record (the key and acked id of
every publish, the keys each subscriber's handler saw) and a raw nats-py
read of the whole stream at the end, never from the libraries' counters.

    .venv/bin/python benchmarks/soak.py --mode single --events 100000 --kill-interval 8
    .venv/bin/python benchmarks/soak.py --mode cluster --events 60000 --kill-interval 15
    .venv/bin/python benchmarks/soak.py --mode single --duration 600 --json soak.json
    .venv/bin/python benchmarks/soak.py --mode grpc --events 20000 --kill-interval 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import nats.errors
from faststream.nats import JStream, NatsBroker, PullSub
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

import windshift
from windshift import StreamPointer
from windshift._embedded import EmbeddedNats, free_port
from windshift.errors import UnavailableError, WindshiftError

STREAM = "soak"
SUBJECTS = "soak.>"
SUBJECT = "soak.event"
SIDES = ("windshift", "raw", "faststream")
RECONNECT_WAIT = 0.25


def now() -> float:
    return asyncio.get_running_loop().time()


# --------------------------------------------------------------------------- the record


@dataclass
class Side:
    """What one subscriber's handler saw."""

    name: str
    # (time, key, delivery attempt as NATS counts it) of every delivery
    deliveries: list[tuple[float, str, int]] = field(default_factory=list)
    received: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, key: str, attempt: int) -> None:
        self.deliveries.append((now(), key, attempt))
        self.received[key] += 1
        self.changed.set()

    def first_after(self, moment: float) -> float | None:
        for at, _, _ in self.deliveries:
            if at >= moment:
                return at - moment
        return None

    def longest_gap_after(self, moment: float, until: float) -> float:
        """The longest stretch after ``moment`` without a first delivery of an event.

        Redeliveries are left out: events that were on their way to a
        subscriber when a node died come back only after the consumer's
        processing timeout (see ``late_after``), whatever the subscriber does.
        """
        previous, gap = moment, 0.0
        for at, _, attempt in self.deliveries:
            if at < moment or attempt > 1:
                continue
            if at > until and previous > moment:
                break  # (nothing at all by ``until``: the wait up to the first counts)
            gap = max(gap, at - previous)
            previous = at
            if at > until:
                break
        return gap

    def late_after(self, moment: float, until: float) -> list[float]:
        """Delays (from ``moment``) of redelivered events this subscriber had never seen.

        Such an event was delivered by NATS but never reached the handler: it
        was lost on its way when a node died, and comes back once the
        consumer's processing timeout passes.
        """
        seen: set[str] = set()
        late = []
        for at, key, attempt in self.deliveries:
            if at >= moment and at <= until and attempt > 1 and key not in seen:
                late.append(at - moment)
            seen.add(key)
        return late


@dataclass
class Kill:
    """One injected failure and what each subscriber did around it."""

    pattern: str  # "busy" or "idle"
    victim: str
    killed_at: float
    listening_at: float | None = None  # single: when the restarted server listened
    election: float | None = None  # cluster: until the stream and every consumer had leaders
    elections: dict[str, float] = field(default_factory=dict)  # "stream" and each consumer
    back_at: float | None = None  # cluster: when the old leader was started again
    first_event: dict[str, float | None] = field(default_factory=dict)
    pause: dict[str, float] = field(default_factory=dict)
    late: dict[str, list[float]] = field(default_factory=dict)  # see Side.late_after


@dataclass
class Record:
    attempted: set[str] = field(default_factory=set)
    acked: dict[str, int] = field(default_factory=dict)
    publish_errors: Counter[str] = field(default_factory=Counter)
    ack_times: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- servers


class Servers:
    """One nats-server, or three in a cluster, each on its own store."""

    def __init__(self, root: Path, cluster: bool, sync_always: bool) -> None:
        self.cluster = cluster
        if not cluster:
            self.nodes = [EmbeddedNats(store_dir=root / "n0", sync_always=sync_always)]
            return
        ports = [free_port() for _ in range(3)]
        routes = [f"nats-route://127.0.0.1:{port}" for port in ports]
        self.nodes = [
            EmbeddedNats(
                store_dir=root / f"n{i}",
                server_name=f"n{i}",
                cluster_port=ports[i],
                routes=[route for j, route in enumerate(routes) if j != i],
                sync_always=sync_always,
            )
            for i in range(3)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> EmbeddedNats:
        return next(node for node in self.nodes if (node.server_name or "n0") == name)

    async def start(self) -> None:
        await asyncio.gather(*(node.start() for node in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)


async def quiet(exc: Exception) -> None:
    """Connection errors are expected here: the servers are being killed."""


async def raw_connect(servers: Sequence[str]) -> NatsClient:
    nc: NatsClient = await nats.connect(
        servers=list(servers),
        error_cb=quiet,
        reconnect_time_wait=RECONNECT_WAIT,
        max_reconnect_attempts=-1,
        connect_timeout=2,
    )
    return nc


async def api(nc: NatsClient, subject: str, timeout: float = 1.0) -> dict[str, Any]:
    msg = await nc.request(f"$JS.API.{subject}", b"", timeout=timeout)
    answer: dict[str, Any] = json.loads(msg.data)
    return answer


async def leader(nc: NatsClient, subject: str) -> str | None:
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        cluster = (await api(nc, subject, timeout=0.25)).get("cluster") or {}
        return cluster.get("leader") or None
    return None


# --------------------------------------------------------------------------- subscribers


async def run_windshift(
    servers: Sequence[str], side: Side, batch: int, stop: asyncio.Event
) -> None:
    async with (
        windshift.connect(servers, reconnect_wait=timedelta(seconds=RECONNECT_WAIT)) as client,
        client.subscribe(STREAM, "windshift", max_pending_events=batch) as events,
    ):
        async for event in events:
            side.record(event.unpack(StringValue).value, event.delivery_attempt)
            await event.ack()
            if stop.is_set():
                return


async def run_raw(
    servers: Sequence[str], side: Side, batch: int, fetch_timeout: float, stop: asyncio.Event
) -> None:
    """Careful raw nats-py: every error is caught, logged in the record, and fetched past."""
    nc = await raw_connect(servers)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind(durable="raw", stream=STREAM)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=fetch_timeout)
            except nats.errors.TimeoutError:
                continue  # nothing within the fetch timeout: ask again
            except Exception as exc:  # the connection went away, a leader changed...
                side.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            for msg in msgs:
                side.record(StringValue.FromString(msg.data).value, msg.metadata.num_delivered)
                try:
                    await msg.ack()
                except Exception as exc:
                    side.errors[type(exc).__name__] += 1
    finally:
        await nc.close()


async def run_faststream(
    servers: Sequence[str], side: Side, batch: int, fetch_timeout: float, stop: asyncio.Event
) -> None:
    async def parser(msg: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
        # A custom parser (FastStream's documented hook) sees the raw nats-py
        # message, with its delivery count, right before the handler runs.
        side.record(StringValue.FromString(msg.data).value, msg.metadata.num_delivered)
        return await original(msg)

    broker = NatsBroker(
        list(servers),
        logger=None,
        apply_types=False,
        parser=parser,
        error_cb=quiet,
        reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]  # a float works
        max_reconnect_attempts=-1,
    )
    subscriber = broker.subscriber(
        SUBJECTS,
        stream=JStream(STREAM, declare=False),
        durable="faststream",
        deliver_policy=DeliverPolicy.ALL,
        pull_sub=PullSub(batch_size=batch, timeout=fetch_timeout),
    )

    @subscriber  # type: ignore[untyped-decorator,unused-ignore]
    async def handle(body: bytes) -> None:
        """Recorded by the parser; FastStream acks when this returns."""

    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.stop()


# --------------------------------------------------------------------------- the run


class Run:
    """What every mode shares: the record, the subscribers' sides, the publisher, the end.

    A mode gives :meth:`publisher` its own way of publishing one key (which
    fills :attr:`record`), and computes its figures with :meth:`totals`.
    """

    mode = ""

    def __init__(self, args: argparse.Namespace, side_names: Sequence[str]) -> None:
        self.args = args
        self.record = Record()
        self.sides = {name: Side(name) for name in side_names}
        self.kills: list[Kill] = []
        self.publishing = asyncio.Event()
        self.publishing.set()
        self.in_flight = 0
        self.nothing_in_flight = asyncio.Event()
        self.done_publishing = asyncio.Event()
        self.stop = asyncio.Event()
        # when publishing paused (before idle kills) or ended: a kill's figures
        # are taken up to the next of these, when nothing new comes anyway
        self.quiet_from: list[float] = []

    async def run(self) -> dict[str, Any]:
        """Set up, publish through the kills, wait for the subscribers; the figures."""
        raise NotImplementedError

    # -- publishing

    async def publisher(self, publish: Callable[[str], Awaitable[None]]) -> None:
        """Publish ``k0``, ``k1``... with ``--concurrency`` calls of ``publish`` in flight.

        Up to ``--events`` keys or for ``--duration`` seconds; waits while
        :attr:`publishing` is clear.
        """
        deadline = now() + self.args.duration if self.args.duration else None
        counter = iter(range(10**12))

        async def worker() -> None:
            for i in counter:
                if (self.args.events and i >= self.args.events) or (
                    deadline is not None and now() > deadline
                ):
                    return
                await self.publishing.wait()
                self.in_flight += 1
                self.nothing_in_flight.clear()
                try:
                    await publish(f"k{i}")
                finally:
                    self.in_flight -= 1
                    if not self.in_flight:
                        self.nothing_in_flight.set()

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))
        self.done_publishing.set()
        self.quiet_from.append(now())

    # -- waiting on the record

    async def caught_up(self, timeout: float) -> bool:
        """Wait until every subscriber has received every acknowledged key."""
        deadline = now() + timeout
        for side in self.sides.values():
            while not self.record.acked.keys() <= side.received.keys():
                side.changed.clear()
                remaining = deadline - now()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(side.changed.wait(), remaining)
        return True

    # -- figures

    def totals(
        self, stored: dict[int, str | None], seconds: float, caught_up: bool
    ) -> dict[str, Any]:
        """The figures of every mode, from the record and the stream as read at the end."""
        record = self.record
        stored_keys = Counter(stored.values())
        acked = record.acked
        sides = {}
        for name, side in self.sides.items():
            sides[name] = {
                "received": len(side.received),
                "deliveries": len(side.deliveries),
                "redelivered": sum(1 for count in side.received.values() if count > 1),
                "unreceived": len(acked.keys() - side.received.keys()),
                "errors": dict(side.errors),
            }
        return {
            "mode": self.mode,
            "seconds": round(seconds, 1),
            "kills": len(self.kills),
            "published": len(record.attempted),
            "acknowledged": len(acked),
            "stored": len(stored),
            "lost": sum(1 for key, eid in acked.items() if stored.get(eid) != key),
            "duplicated": sum(count - 1 for count in stored_keys.values() if count > 1),
            "publish_retries": sum(record.publish_errors.values()),
            "caught_up": caught_up,
            "subscribers": sides,
        }


class Soak(Run):
    """``--mode single`` and ``--mode cluster``: nats-servers killed under three subscribers."""

    def __init__(self, args: argparse.Namespace, servers: Servers) -> None:
        super().__init__(args, args.libraries)
        self.servers = servers
        self.mode = "cluster" if servers.cluster else "single"

    # -- publishing

    async def publish(self, client: windshift.Client, key: str) -> None:
        self.record.attempted.add(key)
        while True:
            try:
                published = await client.publish(
                    SUBJECT, StringValue(value=key), idempotency_key=key
                )
            except UnavailableError as exc:
                self.record.publish_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)  # retry pacing
                continue
            self.record.acked.setdefault(key, published.id)
            self.record.ack_times.append(now())
            return

    # -- failures

    async def quiesce(self) -> None:
        """Pause publishing and let every subscriber catch up (for an idle kill)."""
        self.publishing.clear()
        self.quiet_from.append(now())
        if self.in_flight:
            await self.nothing_in_flight.wait()
        if not await self.caught_up(60):
            print("  (a subscriber did not catch up within 60 s before this kill)")

    async def killer(self) -> None:
        number = 0
        while not self.done_publishing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done_publishing.wait(), self.args.kill_interval)
            if self.done_publishing.is_set():
                return
            pattern = self.args.pattern
            if pattern == "mixed":
                pattern = "idle" if number % 2 else "busy"
            number += 1
            if pattern == "idle":
                await self.quiesce()
            if self.servers.cluster:
                await self.kill_leader(pattern)
            else:
                await self.kill_single(pattern)

    async def kill_single(self, pattern: str) -> None:
        node = self.servers.nodes[0]
        kill = Kill(pattern, "n0", now())
        await node.kill()
        await node.start()
        kill.listening_at = now()
        self.publishing.set()
        self.kills.append(kill)
        print(
            f"  kill {len(self.kills)} ({pattern}): down {kill.listening_at - kill.killed_at:.2f}s"
        )

    async def kill_leader(self, pattern: str) -> None:
        nc = await raw_connect(self.servers.urls)
        try:
            victim = await leader(nc, f"STREAM.INFO.{STREAM}")
        finally:
            await nc.close()
        if victim is None:
            print("  (no stream leader to kill right now)")
            self.publishing.set()
            return
        node = self.servers.node(victim)
        survivors = [other.url for other in self.servers.nodes if other is not node]
        kill = Kill(pattern, victim, now())
        await node.kill()
        self.publishing.set()
        nc = await raw_connect(survivors)
        try:
            subjects = {"stream": f"STREAM.INFO.{STREAM}"} | {
                name: f"CONSUMER.INFO.{STREAM}.{name}" for name in self.sides
            }
            while len(kill.elections) < len(subjects) and now() - kill.killed_at < 60:
                for what, subject in subjects.items():
                    if what in kill.elections:
                        continue
                    elected = await leader(nc, subject)
                    if elected and elected != victim:
                        kill.elections[what] = now() - kill.killed_at
                await asyncio.sleep(0.02)  # the poller's resolution
            kill.election = now() - kill.killed_at
        finally:
            await nc.close()
        await asyncio.sleep(self.args.down)  # the node stays down a while
        await node.start()
        kill.back_at = now()
        self.kills.append(kill)
        print(
            f"  kill {len(self.kills)} ({pattern}): leader {victim}, "
            f"leadership back after {kill.election:.2f}s"
        )

    # -- the whole run

    async def run(self) -> dict[str, Any]:
        args = self.args
        started = now()
        urls = self.servers.urls
        async with windshift.connect(urls, request_timeout=timedelta(seconds=2)) as admin:
            replicas = 3 if self.servers.cluster else 1
            while True:
                try:
                    await admin.ensure_stream(STREAM, subjects=[SUBJECTS], replicas=replicas)
                    break
                except WindshiftError:
                    await asyncio.sleep(0.2)  # a cluster still electing its leaders
            for name in ("windshift", "raw"):
                if name in self.sides:
                    await admin.ensure_consumer(STREAM, name, start=StreamPointer.start())
        tasks: list[asyncio.Task[None]] = []
        factories: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "windshift": lambda: run_windshift(
                urls, self.sides["windshift"], args.batch, self.stop
            ),
            "raw": lambda: run_raw(
                urls, self.sides["raw"], args.batch, args.fetch_timeout, self.stop
            ),
            "faststream": lambda: run_faststream(
                urls, self.sides["faststream"], args.batch, args.fetch_timeout, self.stop
            ),
        }
        for name in self.sides:
            tasks.append(asyncio.create_task(factories[name](), name=name))
        async with windshift.connect(
            urls,
            request_timeout=timedelta(seconds=args.request_timeout),
            reconnect_wait=timedelta(seconds=RECONNECT_WAIT),
        ) as client:
            killer = asyncio.create_task(self.killer())
            await self.publisher(lambda key: self.publish(client, key))
            await killer
        published_in = now() - started
        caught_up = await self.caught_up(args.settle_timeout)
        self.stop.set()
        for task in tasks:
            if task.get_name() == "faststream":
                continue
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                self.sides[task.get_name()].errors[f"ended: {result!r}"] += 1
        stored = await read_stream(urls)
        return self.figures(stored, published_in, caught_up)

    def figures(
        self, stored: dict[int, str | None], seconds: float, caught_up: bool
    ) -> dict[str, Any]:
        for kill in self.kills:
            for name, side in self.sides.items():
                if kill.listening_at is not None:
                    kill.first_event[name] = side.first_after(kill.listening_at)
                until = min(
                    [at for at in self.quiet_from if at > kill.killed_at], default=kill.killed_at
                )
                kill.pause[name] = side.longest_gap_after(kill.killed_at, until)
                next_kill = min(
                    [other.killed_at for other in self.kills if other.killed_at > kill.killed_at],
                    default=kill.killed_at + 120,
                )
                kill.late[name] = side.late_after(kill.killed_at, next_kill)
        return {
            **self.totals(stored, seconds, caught_up),
            "per_kill": [asdict(kill) for kill in self.kills],
        }


async def read_stream(servers: Sequence[str]) -> dict[int, str | None]:
    """The whole stream, read with plain nats-py: id -> Nats-Msg-Id."""
    for attempt in range(60):
        try:
            return await _read_stream(servers)
        except (nats.errors.Error, TimeoutError):
            if attempt == 59:
                raise
            await asyncio.sleep(0.5)  # JetStream not answering yet
    raise AssertionError("unreachable")


async def _read_stream(servers: Sequence[str]) -> dict[int, str | None]:
    nc = await raw_connect(servers)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(STREAM)
        last = info.state.last_seq or 0
        stored: dict[int, str | None] = {}
        sub = await js.pull_subscribe(
            SUBJECTS,
            stream=STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=60.0,
            ),
        )
        seen = 0
        while seen < last:
            for msg in await sub.fetch(5000, timeout=10):
                stored[msg.metadata.sequence.stream] = (msg.headers or {}).get("Nats-Msg-Id")
                seen = max(seen, msg.metadata.sequence.stream)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        return stored
    finally:
        await nc.close()


# --------------------------------------------------------------------------- output


def summarize(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f}s, max {max(values):.2f}s (n={len(values)})"


def own_election(kill: dict[str, Any], side: str) -> float:
    elections: dict[str, float] = kill["elections"]
    return max(elections.get("stream", 0.0), elections.get(side, 0.0))


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"mode={result['mode']} seconds={result['seconds']} kills={result['kills']} "
        f"published={result['published']} acknowledged={result['acknowledged']} "
        f"stored={result['stored']} lost={result['lost']} duplicated={result['duplicated']} "
        f"publish_retries={result['publish_retries']} caught_up={result['caught_up']}"
    )
    for name, side in result["subscribers"].items():
        print(
            f"  {name:<10} received={side['received']} deliveries={side['deliveries']} "
            f"redelivered={side['redelivered']} unreceived={side['unreceived']} "
            f"errors={side['errors']}"
        )
    print()
    kills = result["per_kill"]
    if result["mode"] == "grpc":
        import soak_grpc  # see soak()

        soak_grpc.report_kills(result)
    elif result["mode"] == "single":
        print("first event after the server listened again (s):")
        header = ["kill", "pattern", *args.libraries]
        print("  " + " | ".join(f"{h:>10}" for h in header))
        for number, kill in enumerate(kills, 1):
            cells = [str(number), kill["pattern"]] + [
                "none"
                if kill["first_event"].get(name) is None
                else f"{kill['first_event'][name]:.2f}"
                for name in args.libraries
            ]
            print("  " + " | ".join(f"{c:>10}" for c in cells))
        for pattern in ("busy", "idle"):
            for name in args.libraries:
                values = [
                    kill["first_event"][name]
                    for kill in kills
                    if kill["pattern"] == pattern and kill["first_event"].get(name) is not None
                ]
                print(f"  {pattern:<5} {name:<10} {summarize(values)}")
    else:
        print(
            "longest pause of each subscriber after the stream leader died (without new\n"
            "events), and in brackets the cluster's own election: of the stream, or of that\n"
            "subscriber's consumer if its leader died too, whichever took longer (s):"
        )
        header = ["kill", "pattern", *args.libraries]
        print("  " + " | ".join(f"{h:>14}" for h in header))
        for number, kill in enumerate(kills, 1):
            cells = [str(number), kill["pattern"]] + [
                f"{kill['pause'][name]:.2f} ({own_election(kill, name):.2f})"
                for name in args.libraries
            ]
            print("  " + " | ".join(f"{c:>14}" for c in cells))
        for name in args.libraries:
            over = [kill["pause"][name] - own_election(kill, name) for kill in kills]
            print(f"  {name:<10} pause - election: {summarize(over)}")
        print(
            "events this subscriber never saw that came again after a kill, before the\n"
            "next (lost on their way when the node died; NATS redelivers them after the\n"
            "processing timeout, or sooner when handed back) (count, latest in s after the kill):"
        )
        for name in args.libraries:
            late = [delay for kill in kills for delay in kill["late"][name]]
            latest = f"{max(late):.1f}s" if late else "-"
            print(f"  {name:<10} {len(late)} events, latest {latest}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mode", choices=["single", "cluster", "grpc"], default="single")
    parser.add_argument(
        "--events", type=int, default=100_000, help="events to publish (0: no limit)"
    )
    parser.add_argument(
        "--duration", type=float, default=0, help="publish for this long (s; 0: no limit)"
    )
    parser.add_argument("--kill-interval", type=float, default=8.0, help="seconds between kills")
    parser.add_argument(
        "--pattern",
        choices=["mixed", "busy", "idle"],
        default="mixed",
        help="kill while subscribers are busy, idle, or alternate (grpc: always busy)",
    )
    parser.add_argument(
        "--down",
        type=float,
        help="cluster: seconds the old leader stays down after the election (default 2); "
        "grpc: seconds a killed serve process stays down (default 1)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="publishes in flight")
    parser.add_argument("--batch", type=int, default=50, help="max pending events / fetch batch")
    parser.add_argument(
        "--fetch-timeout",
        type=float,
        default=5.0,
        help="raw and FastStream fetch timeout (s; both default to 5)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=1.0,
        help="windshift publish timeout; grpc: the PublishEvent deadline (s)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        help="how long subscribers may take to catch up at the end (s; default 120; "
        "grpc: twice the processing timeout + 30, from the last publish)",
    )
    parser.add_argument(
        "--grpc-clients",
        type=int,
        default=2,
        help="grpc: Events clients on each of the two serve processes",
    )
    parser.add_argument(
        "--processing-timeout",
        type=float,
        default=5.0,
        help="grpc: the shared consumer's processing timeout (s)",
    )
    parser.add_argument(
        "--work",
        type=float,
        default=0.05,
        help="grpc: seconds each Events client's handler takes per event, before its ack",
    )
    parser.add_argument("--libraries", default=",".join(SIDES), help="subscribers to run")
    parser.add_argument(
        "--no-sync", action="store_true", help="nats-server without sync_interval: always"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.libraries = [name for name in args.libraries.split(",") if name]
    unknown = set(args.libraries) - set(SIDES)
    if unknown:
        parser.error(f"unknown libraries: {sorted(unknown)}")
    if not args.events and not args.duration:
        parser.error("give --events or --duration")
    if args.down is None:
        args.down = 1.0 if args.mode == "grpc" else 2.0
    if args.settle_timeout is None:
        args.settle_timeout = 2 * args.processing_timeout + 30 if args.mode == "grpc" else 120.0
    return args


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="windshift-soak-") as root:
        servers = Servers(Path(root), args.mode == "cluster", sync_always=not args.no_sync)
        await servers.start()
        try:
            run: Run
            if args.mode == "grpc":
                # soak_grpc imports this module (as ``soak``) for the record and
                # its helpers; imported here, on use, so that neither module
                # needs the other loaded first.
                import soak_grpc

                run = soak_grpc.GrpcSoak(args, servers.nodes[0], Path(root))
                what = soak_grpc.describe(args)
            else:
                run = Soak(args, servers)
                what = (
                    f"a kill every {args.kill_interval:g}s ({args.pattern}), "
                    f"subscribers {', '.join(args.libraries)}"
                )
            print(
                f"soak: {args.mode}, {args.events or 'unlimited'} events"
                f"{f' / {args.duration:g}s' if args.duration else ''}, {what}"
            )
            wall = time.perf_counter()
            result = await run.run()
            result["wall_seconds"] = round(time.perf_counter() - wall, 1)
            result["options"] = {k: v for k, v in vars(args).items() if k != "json"}
        finally:
            await servers.stop()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    result = asyncio.run(soak(args))
    report(result, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    ok = result["lost"] == 0 and result["duplicated"] == 0
    # windshift's subscriber, and the gRPC clients together, must receive every
    # acknowledged event; raw nats-py's and FastStream's misses are reported only
    ok = ok and all(
        result["subscribers"].get(name, {}).get("unreceived", 0) == 0
        for name in ("windshift", "grpc")
    )
    # grpc: an event a client held when its server died, never handed out
    # again, was never processed
    ok = ok and not result.get("held_not_back", 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
