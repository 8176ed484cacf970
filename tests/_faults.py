"""Fault injection for the resilience tests, and a ledger that counts independently.

The code under test (windshift) is never asked what it did. Instead:

* every publish is recorded by the test itself: the idempotency key it was
  attempted with and the id NATS acknowledged for it (:class:`Ledger`);
* every event the test's handler receives and settles is recorded by that
  handler, with the time it arrived;
* at the end the whole stream is read back with plain nats-py
  (:func:`read_stream`) to find out what NATS really stored: an acknowledged
  key missing from the stream (or stored under another id) is *lost*, a key
  stored twice is *duplicated*.

Faults are real: nats-servers (one, or a three-node cluster from
``_cluster.nats_cluster``) are killed with SIGKILL and restarted on the same
store; subscribers run as real child processes (``_subscriber_process.py``)
that are killed or exit mid-work, and whose memory is read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

import windshift
from windshift import EmbeddedNats, Event
from windshift.errors import UnavailableError, WindshiftError

HERE = Path(__file__).resolve().parent
SUBSCRIBER_SCRIPT = HERE / "_subscriber_process.py"

# Errors a careful publisher retries (with the same idempotency key).
RETRYABLE: tuple[type[WindshiftError], ...] = (UnavailableError,)


# --------------------------------------------------------------------------- the ledger


@dataclass(frozen=True)
class Figures:
    """What one scenario did, counted by the test (see the module docstring)."""

    published: int  # distinct idempotency keys a publish was attempted with
    acknowledged: int  # keys NATS acknowledged (with an id)
    stored: int  # events the stream holds, read back with plain nats-py
    received: int  # distinct ids the handler got
    deliveries: int  # handler calls, redeliveries included
    redelivered: int  # distinct ids the handler got more than once
    settled: int  # distinct ids the handler acknowledged
    lost: int  # acknowledged keys not in the stream under the id NATS gave
    duplicated: int  # extra copies of an idempotency key in the stream
    unreceived: int  # acknowledged ids the handler never got
    publish_retries: int  # publishes that failed and were retried

    def line(self) -> str:
        return " ".join(f"{key}={value}" for key, value in asdict(self).items())


@dataclass
class _Waiter:
    predicate: Callable[[], bool]
    future: asyncio.Future[None]


@dataclass
class Ledger:
    """The independent record of one scenario."""

    name: str
    attempted: set[str] = field(default_factory=set)
    acked: dict[str, int] = field(default_factory=dict)
    ack_times: list[float] = field(default_factory=list)
    # an idempotency key acknowledged twice with two different ids
    ack_conflicts: list[tuple[str, int, int]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # (loop time, id, delivery attempt) of every delivery to the handler
    deliveries: list[tuple[float, int, int]] = field(default_factory=list)
    received: Counter[int] = field(default_factory=Counter)
    # the payload (= idempotency key) each delivered id carried
    delivered_keys: dict[int, str] = field(default_factory=dict)
    settled: set[int] = field(default_factory=set)
    in_progress: int = 0
    stored: dict[int, str | None] | None = None
    _waiters: list[_Waiter] = field(default_factory=list)
    clock: Callable[[], float] = field(init=False)

    def __post_init__(self) -> None:
        self.clock = asyncio.get_running_loop().time

    # -- recording (called by the test's publishers and handlers)

    def record_ack(self, key: str, event_id: int) -> None:
        previous = self.acked.setdefault(key, event_id)
        if previous != event_id:
            self.ack_conflicts.append((key, previous, event_id))
        self.ack_times.append(self.clock())
        self._poke()

    def record_delivery(self, event: Event) -> None:
        self.record_received(event.id, event.delivery_attempt, event.unpack(StringValue).value)

    def record_received(self, event_id: int, attempt: int, key: str) -> None:
        """One delivery to a handler, from any client (the library or a gRPC call)."""
        self.deliveries.append((self.clock(), event_id, attempt))
        self.received[event_id] += 1
        self.delivered_keys.setdefault(event_id, key)
        self._poke()

    def record_settled(self, event_id: int) -> None:
        self.settled.add(event_id)
        self._poke()

    # -- waiting on the record (no polling: every record wakes the waiters)

    def _poke(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.future.done() and waiter.predicate():
                waiter.future.set_result(None)
                self._waiters.remove(waiter)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        if predicate():
            return
        waiter = _Waiter(predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            raise AssertionError(
                f"[{self.name}] timed out after {timeout:g}s waiting for {what}; "
                f"acked={len(self.acked)} received={len(self.received)} "
                f"settled={len(self.settled)} errors={dict(self.errors)}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def acked_ids(self) -> set[int]:
        return set(self.acked.values())

    def received_all_acked(self) -> bool:
        return len(self.received) >= len(self.acked) and self.acked_ids() <= self.received.keys()

    def settled_all_acked(self) -> bool:
        return len(self.settled) >= len(self.acked) and self.acked_ids() <= self.settled

    # -- timings

    def first_delivery_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first delivery after it (None: none came)."""
        for at, _, _ in self.deliveries:
            if at >= moment:
                return at - moment
        return None

    def longest_gap_after(self, moment: float, until: float | None = None) -> float:
        """The longest stretch without a first delivery, counted from ``moment`` on.

        Redeliveries are left out: an event that was on its way to the
        subscriber when a node died comes back only once the consumer's
        processing timeout has passed, however soon the subscription resumed
        (see :meth:`late_after`).
        """
        firsts = [at for at, _, attempt in self.deliveries if attempt == 1]
        return longest_gap(firsts, moment, until)

    def late_after(self, moment: float) -> list[float]:
        """Delays (from ``moment``) of redelivered events the handler had never seen.

        NATS delivered them, but they never reached the handler: lost on their
        way when a node died, they come back after the processing timeout.
        """
        seen: set[int] = set()
        late = []
        for at, event_id, attempt in self.deliveries:
            if at >= moment and attempt > 1 and event_id not in seen:
                late.append(at - moment)
            seen.add(event_id)
        return late

    # -- the audit

    async def audit(self, servers: Sequence[str], stream: str, subjects: str) -> Figures:
        """Read the whole stream with plain nats-py and compute the figures."""
        self.stored = await read_stream(servers, stream, subjects)
        return self.figures()

    def figures(self) -> Figures:
        assert self.stored is not None, "audit() first"
        stored_keys = Counter(self.stored.values())
        acked_ids = self.acked_ids()
        return Figures(
            published=len(self.attempted),
            acknowledged=len(self.acked),
            stored=len(self.stored),
            received=len(self.received),
            deliveries=len(self.deliveries),
            redelivered=sum(1 for count in self.received.values() if count > 1),
            settled=len(self.settled),
            lost=sum(1 for key, eid in self.acked.items() if self.stored.get(eid) != key),
            duplicated=sum(count - 1 for count in stored_keys.values() if count > 1),
            unreceived=len(acked_ids - self.received.keys()),
            publish_retries=sum(self.errors.values()),
        )

    def check_deliveries(self) -> None:
        """Every delivered id carried the key that NATS stored under that id."""
        assert self.stored is not None, "audit() first"
        wrong = [
            (eid, key, self.stored.get(eid))
            for eid, key in self.delivered_keys.items()
            if self.stored.get(eid) != key
        ]
        assert not wrong, f"[{self.name}] events delivered with the wrong id: {wrong[:10]}"
        assert not self.ack_conflicts, f"[{self.name}] {self.ack_conflicts[:10]}"

    def report(self, figures: Figures, **timings: float | int | str | None) -> str:
        extra = " ".join(
            f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
            for key, value in timings.items()
        )
        line = f"[{self.name}] {figures.line()} {extra}".rstrip()
        print(line)
        return line


def longest_gap(times: Sequence[float], moment: float, until: float | None = None) -> float:
    """The longest stretch of ``times`` (sorted) without an entry, from ``moment`` on."""
    previous = moment
    gap = 0.0
    for at in times:
        if at < moment:
            continue
        if until is not None and at > until:
            break
        gap = max(gap, at - previous)
        previous = at
    return gap


# --------------------------------------------------------------------------- publishing


async def publish_with_retries(
    client: windshift.Client,
    ledger: Ledger,
    subject: str,
    key: str,
    *,
    retry_on: tuple[type[WindshiftError], ...] = RETRYABLE,
    backoff: float = 0.05,
) -> int:
    """Publish ``key`` (as payload and idempotency key) until NATS acknowledges it."""
    ledger.attempted.add(key)
    while True:
        try:
            published = await client.publish(subject, StringValue(value=key), idempotency_key=key)
        except retry_on as exc:
            ledger.errors[type(exc).__name__] += 1
            await asyncio.sleep(backoff)  # retry pacing
            continue
        ledger.record_ack(key, published.id)
        return published.id


async def publish_all(
    client: windshift.Client,
    ledger: Ledger,
    subject: str,
    keys: Iterable[str],
    *,
    concurrency: int,
    retry_on: tuple[type[WindshiftError], ...] = RETRYABLE,
) -> None:
    """Publish every key with ``concurrency`` publishes in flight, each retried until acked."""
    pending = iter(keys)

    async def worker() -> None:
        for key in pending:
            await publish_with_retries(client, ledger, subject, key, retry_on=retry_on)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# --------------------------------------------------------------------------- raw nats-py


async def raw_connect(servers: Sequence[str]) -> NatsClient:
    """A plain nats-py connection (no windshift involved)."""
    nc: NatsClient = await nats.connect(
        servers=list(servers), connect_timeout=2, reconnect_time_wait=0.1
    )
    return nc


async def read_stream(
    servers: Sequence[str], stream: str, subjects: str, timeout: float = 60
) -> dict[int, str | None]:
    """Every event ``stream`` holds, read with plain nats-py: id -> ``Nats-Msg-Id``.

    Tried again while JetStream is not ready to answer (a cluster that just
    changed leaders, a node catching up).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await _read_stream_once(servers, stream, subjects)
        except (nats.errors.Error, TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)  # until JetStream answers again


async def _read_stream_once(
    servers: Sequence[str], stream: str, subjects: str
) -> dict[int, str | None]:
    nc = await raw_connect(servers)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(stream)
        last = info.state.last_seq or 0
        expected = info.state.messages or 0
        stored: dict[int, str | None] = {}
        if not expected:
            return stored
        sub = await js.pull_subscribe(
            subjects,
            stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=60.0,
            ),
        )
        try:
            seen_last = 0
            while seen_last < last:
                for msg in await sub.fetch(2000, timeout=10):
                    sequence = msg.metadata.sequence.stream
                    stored[sequence] = (msg.headers or {}).get("Nats-Msg-Id")
                    seen_last = max(seen_last, sequence)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        assert len(stored) == expected, f"read {len(stored)} events, the stream says {expected}"
        return stored
    finally:
        await nc.close()


async def fill_stream(
    servers: Sequence[str], stream: str, subject: str, count: int, chunk: int = 5000
) -> None:
    """Put ``count`` valid windshift events (StringValue) on ``subject``, fast.

    Plain nats-py core publishes, each chunk closed by one acknowledged
    JetStream publish: the stream stores a connection's messages in order,
    so that acknowledgement means the whole chunk was processed. The
    stream's count is checked at the end.
    """
    headers = {
        "WS-Data-Type": "google.protobuf.StringValue",
        "WS-Published-Time": "2026-01-01T00:00:00Z",
    }
    nc = await raw_connect(servers)
    try:
        js = nc.jetstream(timeout=30)
        before = (await js.stream_info(stream)).state.messages or 0
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            for i in range(start, start + size - 1):
                await nc.publish(
                    subject, StringValue(value=f"b{i}").SerializeToString(), headers=headers
                )
            last = StringValue(value=f"b{start + size - 1}").SerializeToString()
            await js.publish(subject, last, headers=headers)
        stored = ((await js.stream_info(stream)).state.messages or 0) - before
        assert stored == count, f"filled {stored} of {count} events"
    finally:
        await nc.close()


async def api(nc: NatsClient, subject: str, timeout: float = 1.0, **payload: Any) -> dict[str, Any]:
    """One raw JetStream API request (``$JS.API.<subject>``)."""
    body = json.dumps(payload).encode() if payload else b""
    msg = await nc.request(f"$JS.API.{subject}", body, timeout=timeout)
    answer: dict[str, Any] = json.loads(msg.data)
    return answer


# --------------------------------------------------------------------------- server faults


@dataclass(frozen=True)
class Outage:
    """When a server was killed and when it listened again (loop time)."""

    killed_at: float
    listening_at: float

    @property
    def down_for(self) -> float:
        return self.listening_at - self.killed_at


async def kill_and_restart(server: EmbeddedNats) -> Outage:
    """SIGKILL ``server`` and start it again on the same port and store."""
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await server.kill()
    await server.start()
    return Outage(killed_at, loop.time())


@dataclass
class Election:
    """When a killed node's leaderships were taken over, seen by a raw poller."""

    killed_at: float
    stream_leader: str | None = None
    stream_elected_at: float | None = None
    consumer_leader: str | None = None
    consumer_elected_at: float | None = None

    @property
    def stream_election(self) -> float:
        assert self.stream_elected_at is not None
        return self.stream_elected_at - self.killed_at

    @property
    def consumer_election(self) -> float:
        assert self.consumer_elected_at is not None
        return self.consumer_elected_at - self.killed_at

    @property
    def election(self) -> float:
        """Until both the stream and the consumer had a live leader again."""
        return max(self.stream_election, self.consumer_election)


async def watch_election(
    survivors: Sequence[str], stream: str, consumer: str, victim: str, killed_at: float
) -> Election:
    """Poll raw stream and consumer info on the surviving nodes until both have a new leader.

    The polling interval (20 ms) is the resolution of the measurement.
    """
    loop = asyncio.get_running_loop()
    election = Election(killed_at)
    nc = await raw_connect(survivors)
    try:
        while election.stream_elected_at is None or election.consumer_elected_at is None:
            for kind in ("stream", "consumer"):
                if getattr(election, f"{kind}_elected_at") is not None:
                    continue
                subject = (
                    f"STREAM.INFO.{stream}"
                    if kind == "stream"
                    else f"CONSUMER.INFO.{stream}.{consumer}"
                )
                try:
                    answer = await api(nc, subject, timeout=0.25)
                except (nats.errors.Error, TimeoutError):
                    continue
                leader = (answer.get("cluster") or {}).get("leader")
                if leader and leader != victim:
                    setattr(election, f"{kind}_leader", leader)
                    setattr(election, f"{kind}_elected_at", loop.time())
            await asyncio.sleep(0.02)  # the poller's resolution
        return election
    finally:
        await nc.close()


async def wait_replica_current(
    servers: Sequence[str], stream: str, node: str, timeout: float = 60
) -> dict[str, Any]:
    """Wait until ``node`` is a current replica of ``stream`` (or its leader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    nc = await raw_connect(servers)
    try:
        while True:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                answer = await api(nc, f"STREAM.INFO.{stream}")
                cluster = answer.get("cluster") or {}
                if cluster.get("leader") == node:
                    return answer
                for replica in cluster.get("replicas") or []:
                    current = replica.get("current") and not replica.get("lag")
                    if replica.get("name") == node and current:
                        return answer
            if loop.time() > deadline:
                raise AssertionError(f"{node} did not catch up on {stream} in {timeout:g}s")
            await asyncio.sleep(0.1)  # polling the cluster's own view
    finally:
        await nc.close()


async def move_leader(
    servers: Sequence[str], stream: str, to: str, consumer: str | None = None, timeout: float = 30
) -> None:
    """Make ``to`` the leader of ``stream`` (or of its ``consumer``).

    A leader step-down with a preferred placement, repeated until it lands.
    """
    info, stepdown = (
        (f"STREAM.INFO.{stream}", f"STREAM.LEADER.STEPDOWN.{stream}")
        if consumer is None
        else (
            f"CONSUMER.INFO.{stream}.{consumer}",
            f"CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}",
        )
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    nc = await raw_connect(servers)
    try:
        while True:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                answer = await api(nc, info)
                if (answer.get("cluster") or {}).get("leader") == to:
                    return
                await api(nc, stepdown, timeout=5, placement={"preferred": to})
            if loop.time() > deadline:
                raise AssertionError(f"could not move the leader of {info[:-5]} to {to}")
            await asyncio.sleep(0.2)  # let the step-down's election finish before asking again
    finally:
        await nc.close()


async def leader_of(servers: Sequence[str], stream: str, consumer: str | None = None) -> str:
    """The server name of the current leader of ``stream`` (or of its ``consumer``)."""
    nc = await raw_connect(servers)
    try:
        subject = (
            f"STREAM.INFO.{stream}" if consumer is None else f"CONSUMER.INFO.{stream}.{consumer}"
        )
        answer = await api(nc, subject, timeout=5)
        return str(answer["cluster"]["leader"])
    finally:
        await nc.close()


# --------------------------------------------------------------------------- child subscribers


class ChildSubscriber:
    """A windshift subscriber in a child process (``_subscriber_process.py``).

    It reports on stdout, one JSON object a line; the lines are collected
    here and waited on without polling. Its memory is read from ``/proc``.
    """

    def __init__(self, *args: str) -> None:
        self.args = [str(arg) for arg in args]
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self.process: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SUBSCRIBER_SCRIPT),
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            async with self._changed:
                self.lines.append(json.loads(raw))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> None:
        async def until() -> None:
            async with self._changed:
                while not predicate(self.lines):
                    assert self._reader is not None
                    if self._reader.done():
                        raise AssertionError(f"child exited before {what}: {await self.errors()}")
                    await self._changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(f"child: no {what} within {timeout:g}s") from None

    async def send_line(self, text: str = "go") -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        await self.process.stdin.drain()

    def rss_bytes(self) -> int:
        """The child's resident set size now (``VmRSS`` in ``/proc/<pid>/status``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)

    async def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def errors(self) -> str:
        assert self.process is not None and self.process.stderr is not None
        if self.process.returncode is None:
            return "(still running)"
        return (await self.process.stderr.read()).decode(errors="replace")[-2000:]

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.kill()
            await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
