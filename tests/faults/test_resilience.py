"""Resilience (issue 5): nothing acknowledged is lost through crashes, failover and bad input.

Every scenario keeps its own record (``_faults.Ledger``): the idempotency key
of every publish and the id NATS acknowledged for it, every event the
test's handler received and settled; at the end the stream is read back
with plain nats-py. The figures are asserted and printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.wrappers_pb2 import StringValue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import windshift
from tests._cluster import ensure_replicated_stream, nats_cluster
from tests._faults import (
    ChildSubscriber,
    Ledger,
    api,
    fill_stream,
    kill_and_restart,
    leader_of,
    longest_gap,
    move_leader,
    publish_all,
    publish_with_retries,
    raw_connect,
    read_stream,
    wait_replica_current,
    watch_election,
)
from tests._util import Background
from windshift import EmbeddedNats, Event, StreamPointer, StreamSource
from windshift._names import validate_name, validate_subject
from windshift.errors import ValidationError, WindshiftError

T = TypeVar("T")

STREAM = "orders"
SUBJECTS = "orders.>"
SUBJECT = "orders.created"


async def consume(events: windshift.Subscription, ledger: Ledger, work: float) -> None:
    """The test's handler: record each event, "work" on it for ``work`` seconds, ack it.

    Events are worked on concurrently (as many as the subscription lets the
    handler hold: its ``max_pending_events``), so the subscription is never
    kept waiting by the handler's loop itself.
    """
    working: set[asyncio.Task[None]] = set()

    async def process(event: Event) -> None:
        try:
            await asyncio.sleep(work)  # the handler's work
            await event.ack()
        finally:
            ledger.in_progress -= 1
        ledger.record_settled(event.id)

    try:
        async for event in events:
            # counted before the delivery is recorded, so a waiter woken by
            # the record sees the handler busy with it
            ledger.in_progress += 1
            ledger.record_delivery(event)
            task = asyncio.create_task(process(event))
            working.add(task)
            task.add_done_callback(working.discard)
    finally:
        for task in list(working):
            task.cancel()


# --------------------------------------------------------------------------- scenario 1

SINGLE_TOTAL = 20_000


@pytest.mark.parametrize("subscriber", ["busy", "idle"])
async def test_single_server_sigkilled_during_20000_publishes(
    tmp_path: Path, subscriber: str, background: Background
) -> None:
    """Scenario 1: lost 0, duplicates 0, the subscription resumes within 1 s by itself."""
    half = SINGLE_TOTAL // 2
    keys = [f"k{i}" for i in range(SINGLE_TOTAL)]
    # sync_always (EmbeddedNats' default): what the library recommends for production
    async with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        ledger = Ledger(f"single-server/{subscriber}")
        async with windshift.connect(server.url, request_timeout=timedelta(seconds=2)) as client:
            await client.ensure_stream(STREAM, subjects=[SUBJECTS])
            consumer = await client.ensure_consumer(
                STREAM,
                "worker",
                start=StreamPointer.start(),
                processing_timeout=timedelta(seconds=10),
            )
            async with client.subscribe(STREAM, consumer.id, max_pending_events=50) as events:
                handler = background.start(
                    consume(events, ledger, work=0.02 if subscriber == "busy" else 0.0)
                )
                if subscriber == "idle":
                    await publish_all(client, ledger, SUBJECT, keys[:half], concurrency=64)
                    await ledger.wait_until(ledger.settled_all_acked, 60, "the handler to catch up")
                    in_progress = ledger.in_progress
                    assert in_progress == 0
                    # Idle: nothing in flight anywhere but the subscription's pull
                    # request, which dies with the server. Publishing resumes once
                    # the server is back.
                    outage = await kill_and_restart(server)
                    publishing = background.start(
                        publish_all(client, ledger, SUBJECT, keys[half:], concurrency=64)
                    )
                else:
                    publishing = background.start(
                        publish_all(client, ledger, SUBJECT, keys, concurrency=64)
                    )

                    # Between two pulls the handler can be idle for a moment
                    # (it finished the last batch); the kill must find it busy.
                    def busy_after_half() -> bool:
                        return len(ledger.acked) >= half and ledger.in_progress > 0

                    while not busy_after_half():  # (it may have gone idle again since)
                        await ledger.wait_until(
                            busy_after_half, 60, "half the publishes, with the handler busy"
                        )
                    in_progress = ledger.in_progress
                    backlog = len(ledger.acked) - len(ledger.settled)
                    outage = await kill_and_restart(server)
                    assert in_progress > 0, "the handler should be busy when the server dies"
                    assert backlog > 0
                await asyncio.wait_for(publishing, 120)
                await ledger.wait_until(ledger.received_all_acked, 60, "every acked event")
                await ledger.wait_until(ledger.settled_all_acked, 30, "every event settled")
                handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
        figures = await ledger.audit([server.url], STREAM, SUBJECTS)

    resumed_in = ledger.first_delivery_after(outage.listening_at)
    ledger.report(
        figures,
        down_for=outage.down_for,
        first_event_after_listening=resumed_in,
        publish_pause=longest_gap(ledger.ack_times, outage.killed_at),
        in_progress_at_kill=in_progress,
    )
    ledger.check_deliveries()
    assert figures.published == figures.acknowledged == SINGLE_TOTAL
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert figures.stored == SINGLE_TOTAL
    assert figures.unreceived == 0
    assert figures.settled >= SINGLE_TOTAL
    assert resumed_in is not None and resumed_in < 1.0, f"first event {resumed_in}s after"


async def test_publishes_into_a_full_reconnect_buffer_fail_retryably(tmp_path: Path) -> None:
    """While NATS is away nats-py buffers what is sent, up to 2 MB; beyond that a
    publish must raise UnavailableError (what a careful caller retries), and the
    retries, with the same keys, store every event once."""
    big = StringValue(value="x" * 400_000)
    async with (
        EmbeddedNats(store_dir=tmp_path / "nats") as server,
        windshift.connect(server.url, request_timeout=timedelta(seconds=1)) as client,
    ):
        await client.ensure_stream(STREAM, subjects=[SUBJECTS])
        await server.kill()
        outcomes = await asyncio.gather(
            *(client.publish(SUBJECT, big, idempotency_key=f"big{i}") for i in range(8)),
            return_exceptions=True,
        )
        # (before the fix, the ones that no longer fitted raised nats-py's
        # OutboundBufferLimitError, which a careful publisher does not retry)
        assert {type(outcome).__name__ for outcome in outcomes} == {"UnavailableError"}, outcomes
        await server.start()
        for i in range(8):
            await publish_with_retries(client, Ledger("outage"), SUBJECT, f"big{i}")
        info = await client.stream_info(STREAM)
    assert info.events == 8


# --------------------------------------------------------------------------- scenario 2

CLUSTER_TOTAL = 10_000
# How much longer than the cluster's own leader election a subscriber may pause:
# the maintenance tick (0.5 s) and the poller's resolution, with room for a
# loaded two-core machine.
ELECTION_MARGIN = 1.0


@pytest.mark.parametrize("variant", ["clients-on-leader", "subscriber-behind"])
async def test_cluster_stream_leader_killed_mid_run(
    tmp_path: Path, variant: str, background: Background
) -> None:
    """Scenario 2: no acknowledged event lost; the pause is the cluster's own election."""
    loop = asyncio.get_running_loop()
    keys = [f"k{i}" for i in range(CLUSTER_TOTAL)]
    behind = variant == "subscriber-behind"
    async with nats_cluster(tmp_path) as nodes:
        urls = [node.url for node in nodes]
        async with windshift.connect(urls) as admin:
            await ensure_replicated_stream(admin, STREAM, [SUBJECTS])
            consumer = await admin.ensure_consumer(
                STREAM,
                "worker",
                start=StreamPointer.start(),
                processing_timeout=timedelta(seconds=10),
            )
        # The worst case for the subscriber: the node that dies leads both the
        # stream and the consumer, so the pull requests in flight die silently.
        leader = await leader_of(urls, STREAM)
        await move_leader(urls, STREAM, leader, consumer=consumer.id)
        victim = next(node for node in nodes if node.server_name == leader)
        survivors = [node.url for node in nodes if node is not victim]
        # clients-on-leader: both clients know only the node that dies (they
        # learn the others from the cluster, as any NATS client does) and lose
        # their connection. subscriber-behind: they are connected to the other
        # nodes and keep their connection; the leader's death reaches them only
        # as silence (the pull requests in flight die with it).
        client_urls = [victim.url] if variant == "clients-on-leader" else survivors
        ledger = Ledger(f"cluster/{variant}")
        timeout = timedelta(seconds=1)
        async with (
            windshift.connect(client_urls, request_timeout=timeout) as publisher,
            windshift.connect(client_urls, request_timeout=timeout) as subscriber,
            subscriber.subscribe(STREAM, consumer.id, max_pending_events=20) as events,
        ):
            # behind: at most 20 events at a time, 20 ms each (1,000/s), well
            # below the publishers' rate, so a backlog builds up
            handler = background.start(consume(events, ledger, work=0.02 if behind else 0.0))
            publishing = background.start(
                publish_all(publisher, ledger, SUBJECT, keys, concurrency=32)
            )
            await ledger.wait_until(
                lambda: len(ledger.acked) >= CLUSTER_TOTAL // 2, 60, "half the publishes"
            )
            backlog = len(ledger.acked) - len(ledger.settled)
            killed_at = loop.time()
            await victim.kill()
            election = await watch_election(survivors, STREAM, consumer.id, leader, killed_at)
            await victim.start()
            back_at = loop.time() - killed_at
            await asyncio.wait_for(publishing, 120)
            await ledger.wait_until(ledger.received_all_acked, 60, "every acked event")
            await ledger.wait_until(ledger.settled_all_acked, 30, "every event settled")
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        figures = await ledger.audit(urls, STREAM, SUBJECTS)

        # After recovery: the node that died catches up, and its copy, read
        # once it leads the stream again, holds exactly the same events.
        await wait_replica_current(urls, STREAM, leader)
        await move_leader(urls, STREAM, leader)
        recovered = await read_stream([victim.url], STREAM, SUBJECTS)

    pause = ledger.longest_gap_after(killed_at)
    late = ledger.late_after(killed_at)
    ledger.report(
        figures,
        backlog_at_kill=backlog,
        stream_election=election.stream_election,
        consumer_election=election.consumer_election,
        victim=leader,
        subscriber_pause=pause,
        publish_pause=longest_gap(ledger.ack_times, killed_at),
        victim_back_after=back_at,
        lost_in_flight_redelivered=len(late),
        redelivered_after=max(late, default=None),
    )
    ledger.check_deliveries()
    assert figures.published == figures.acknowledged == CLUSTER_TOTAL
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert figures.stored == CLUSTER_TOTAL
    assert figures.unreceived == 0
    assert recovered == ledger.stored, "the recovered replica differs"
    if behind:
        assert backlog > 1000, "the subscriber should be behind when the leader dies"
    assert pause <= election.election + ELECTION_MARGIN, (
        f"subscriber paused {pause:.2f}s, the election took {election.election:.2f}s"
    )


# --------------------------------------------------------------------------- scenario 4


@pytest.mark.parametrize("crash", ["sigkill", "os-exit"])
async def test_subscriber_crashing_before_settling_gets_its_events_redelivered(
    nats_server: EmbeddedNats,
    client: windshift.Client,
    name: str,
    crash: str,
    background: Background,
) -> None:
    """Scenario 4: what a crashed subscriber held comes back, with a higher delivery attempt."""
    loop = asyncio.get_running_loop()
    subject = f"{name}.created"
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    timeout = timedelta(seconds=1)
    consumer = await client.ensure_consumer(
        name, "worker", start=StreamPointer.start(), processing_timeout=timeout
    )
    ledger = Ledger(f"crash/{crash}")
    await publish_all(client, ledger, subject, [f"k{i}" for i in range(200)], concurrency=16)

    child = ChildSubscriber(
        "crash", nats_server.url, name, consumer.id, "--count", "10", "--max-pending", "25",
        *(["--exit"] if crash == "os-exit" else []),
    )  # fmt: skip
    await child.start()
    try:
        await child.wait_for(
            lambda lines: any("holding" in line for line in lines), 30, "10 events received"
        )
        if crash == "sigkill":
            child.kill()
        code = await child.wait()
    finally:
        await child.stop()
    crashed_at = loop.time()
    held = {line["id"]: line["attempt"] for line in child.lines if "id" in line}
    assert len(held) == 10 and code != 0

    async with client.subscribe(name, consumer.id) as events:
        handler = background.start(consume(events, ledger, work=0.0))
        await ledger.wait_until(ledger.settled_all_acked, 30, "every event settled")
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler
    figures = await ledger.audit([nats_server.url], name, f"{name}.>")

    first_attempt: dict[int, tuple[float, int]] = {}
    for at, event_id, attempt in ledger.deliveries:
        first_attempt.setdefault(event_id, (at, attempt))
    back_after = max(first_attempt[event_id][0] for event_id in held) - crashed_at
    ledger.report(figures, exit_code=code, held=len(held), all_back_after=back_after)
    ledger.check_deliveries()
    assert figures.lost == 0 and figures.unreceived == 0 and figures.duplicated == 0
    assert figures.settled == figures.acknowledged == 200
    for event_id, attempt in held.items():
        assert first_attempt[event_id][1] > attempt, (event_id, first_attempt[event_id], attempt)
    # the events it never saw were not held back by the crash
    fresh = [attempt for event_id, (_, attempt) in first_attempt.items() if event_id not in held]
    assert fresh.count(1) >= 200 - 25


# --------------------------------------------------------------------------- scenario 5

BACKLOG = 200_000
DRAINED = 150_000
MAX_PENDING = 50
MAX_GROWTH = 50 * 1024 * 1024


@dataclass
class Drain:
    """What one child subscriber did, counted by itself, by NATS and by ``/proc``."""

    seconds: float
    baseline_rss: int
    rss: list[int]
    nats_unacked: list[int]  # the consumer's num_ack_pending, sampled
    last: dict[str, Any]
    exit_code: int

    @property
    def growth(self) -> int:
        return max(self.rss) - self.baseline_rss

    def line(self, label: str, count: int) -> str:
        return (
            f"[backlog/{label}] events={count} in {self.seconds:.1f}s "
            f"({count / self.seconds:.0f}/s) rss {self.baseline_rss / 2**20:.1f}MiB -> "
            f"peak {max(self.rss) / 2**20:.1f}MiB (growth {self.growth / 2**20:.2f}MiB) "
            f"in_hand_max={self.last['in_hand_max']} nats_unacked_max={max(self.nats_unacked)} "
            f"samples={len(self.nats_unacked)}"
        )


async def drain_in_child(url: str, stream: str, consumer: str, count: int, *options: str) -> Drain:
    """Run a ``drain`` child subscriber over ``count`` events, sampling all along."""
    loop = asyncio.get_running_loop()
    child = ChildSubscriber(
        "drain", url, stream, consumer, "--count", str(count),
        "--max-pending", str(MAX_PENDING), "--report", "5000", *options,
    )  # fmt: skip
    unsettled: list[int] = []
    rss: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        nc = await raw_connect([url])
        try:
            while not done.is_set():
                with contextlib.suppress(Exception):
                    info = await api(nc, f"CONSUMER.INFO.{stream}.{consumer}")
                    unsettled.append(int(info["num_ack_pending"]))
                with contextlib.suppress(OSError):
                    rss.append(child.rss_bytes())
                await asyncio.sleep(0.02)  # the sampling interval
        finally:
            await nc.close()

    await child.start()
    try:
        await child.wait_for(lambda lines: bool(lines), 30, "the child to connect")
        baseline = child.rss_bytes()  # connected, imports done, nothing received yet
        watcher = asyncio.create_task(watch())
        started = loop.time()
        await child.send_line()
        await child.wait_for(lambda lines: "done" in lines[-1], 150, "the drain")
        seconds = loop.time() - started
        done.set()
        await watcher
        code = await child.wait()
    finally:
        done.set()
        await child.stop()
    assert len(unsettled) >= 20 and len(rss) >= 20, "too few samples to say anything"
    return Drain(seconds, baseline, rss, unsettled, child.lines[-1], code)


async def test_slow_consumer_behind_a_200000_event_backlog_stays_bounded(
    nats_server: EmbeddedNats, client: windshift.Client, name: str
) -> None:
    """Scenario 5: flow control holds; memory stays flat while the backlog drains.

    The consumer is made with no server-side limit on unacknowledged events
    (NATS' default is 1,000), so that the subscription's own flow control is
    all that stands between the backlog and the subscriber's memory: without
    it the first subscriber below grows by some 200 MB.

    1. A slow subscriber (child process) that works on one event after the
       other and acks without waiting for confirmation drains 150,000
       events: its memory (``VmRSS``) must stay flat.
    2. A subscriber that works on everything it is handed at once, with
       confirmed acks, drains the remaining 50,000: it never holds more than
       ``max_pending_events``, by its own count and by NATS' (the consumer's
       ``num_ack_pending``, sampled all along). With unconfirmed acks (1.)
       NATS' count may also include acks still on their way: reported only.
    """
    loop = asyncio.get_running_loop()
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    nc = await raw_connect([nats_server.url])
    try:
        config = {
            "durable_name": "slow",
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "ack_wait": 30 * 10**9,
            "max_ack_pending": -1,
        }
        await api(nc, f"CONSUMER.CREATE.{name}.slow", stream_name=name, config=config)
    finally:
        await nc.close()
    started = loop.time()
    await fill_stream([nats_server.url], name, f"{name}.created", BACKLOG)
    filled_in = loop.time() - started
    print(f"[backlog] {BACKLOG} events filled in {filled_in:.1f}s")

    slow = await drain_in_child(nats_server.url, name, "slow", DRAINED)
    print(slow.line("sequential-unconfirmed", DRAINED))
    busy = await drain_in_child(
        nats_server.url, name, "slow", BACKLOG - DRAINED, "--concurrent", "--confirm",
        "--work", "0.002",
    )  # fmt: skip
    print(busy.line("concurrent-confirmed", BACKLOG - DRAINED))

    for drain in (slow, busy):
        assert drain.exit_code == 0
        assert drain.growth < MAX_GROWTH
        assert drain.last["in_hand_max"] <= MAX_PENDING
    assert slow.last["done"] == DRAINED
    assert busy.last["done"] == BACKLOG - DRAINED
    assert busy.last["in_hand_max"] == MAX_PENDING  # it took all it could
    assert max(busy.nats_unacked) <= MAX_PENDING
    info = await client.consumer_info(name, "slow")
    assert info.pending_events == 0


# --------------------------------------------------------------------------- scenario 6

# Whatever a caller passes, the library answers with a windshift error (with
# a short message that says what was wrong), never another exception, never
# a hang. Values are a mix of good ones (so that calls get past the first
# check and reach NATS) and hostile ones: wrong types, huge strings, control
# characters, lone surrogates, invalid UTF-8 (as bytes, and smuggled into str
# with surrogateescape), out-of-range numbers and durations.

CALL_TIMEOUT = 15.0
MESSAGE_LIMIT = 1000  # an error message quotes the bad value, shortened
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FUZZ_STREAM = "fuzz"

TOKEN = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
CONTROL = st.characters(max_codepoint=0x1F) | st.sampled_from(["\x7f", "\x85", "\u2028", "\ufeff"])
ANY_CHARACTER = st.characters(exclude_categories=())  # lone surrogates included
HUGE_TEXT = st.builds(
    lambda char, size: char * size,
    st.sampled_from(["a", ".", ">", "\x00", "\ud800", "é", "a."]),
    st.sampled_from([256, 4097, 70_000, 1_100_000]),
)
INVALID_UTF8 = st.binary(min_size=1, max_size=40).map(
    lambda raw: raw.decode("utf-8", "surrogateescape")
)
HOSTILE_TEXT = st.one_of(
    st.text(ANY_CHARACTER, max_size=40),
    st.text(CONTROL, min_size=1, max_size=10),
    st.builds(lambda a, b, c: a + b + c, TOKEN, st.text(CONTROL, min_size=1, max_size=3), TOKEN),
    HUGE_TEXT,
    INVALID_UTF8,
)
# protobuf itself refuses lone surrogates in a string field
TYPE_URL = st.one_of(
    st.text(max_size=60),
    st.text(CONTROL, min_size=1, max_size=10).map(lambda text: f"x/a.{text}"),
    st.sampled_from(["", "/", "x/", "x/1a", "x/a..B", "x/a.B\r\nX: y", "x/" + "a" * 5000]),
)
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([-1, 0, 2**31, 2**63, 2**64, 10**30]),
    st.floats(),
    st.binary(max_size=40),
    HOSTILE_TEXT,
    st.lists(HOSTILE_TEXT, max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.timedeltas(),
    st.datetimes(),
    st.just(object()),
)
GOOD_SUBJECT = st.lists(TOKEN, min_size=1, max_size=3).map(
    lambda t: f"{FUZZ_STREAM}." + ".".join(t)
)
FILTER = st.one_of(GOOD_SUBJECT, st.sampled_from([f"{FUZZ_STREAM}.>", f"{FUZZ_STREAM}.*.x"]))
DURATION = st.one_of(
    st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=400)),
    st.sampled_from([timedelta(0), timedelta(microseconds=1), timedelta(-1), timedelta.max]),
    st.timedeltas(),
)
POINTER = st.one_of(
    st.just(StreamPointer.start()),
    st.just(StreamPointer.end()),
    st.integers(1, 2**63).map(StreamPointer.offset),
    st.datetimes(timezones=st.just(UTC)).map(StreamPointer.time),
)


@st.composite
def arguments(
    draw: st.DrawFn,
    good: dict[str, st.SearchStrategy[Any]],
    edges: dict[str, st.SearchStrategy[Any]] | None = None,
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Keyword arguments: good values, except (mostly) one argument that is hostile.

    One bad argument at a time, so that the checks of the arguments before
    it do not hide it; ``edges`` adds out-of-range values of the right type.
    """
    target = draw(st.sampled_from([*good, None]), label="hostile argument")
    values: dict[str, Any] = {}
    for key, strategy in good.items():
        if key == target:
            values[key] = draw(st.one_of(HOSTILE, (edges or {}).get(key, HOSTILE)), label=key)
        elif key in required or draw(st.booleans()):
            values[key] = draw(strategy, label=key)
    return values


async def _refused_cleanly(call: Awaitable[T]) -> T | None:
    """Run ``call``: its result, or None when it raised a windshift error with a clear message.

    Any other exception propagates (and fails the property); so does a hang.
    """
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await call
    except WindshiftError as exc:
        message = str(exc)
        assert message.strip(), f"{type(exc).__name__} without a message"
        assert len(message) <= MESSAGE_LIMIT, f"{len(message)}-character message: {message[:200]}"
        return None


@pytest.fixture(scope="module")
async def fuzz_server() -> AsyncIterator[EmbeddedNats]:
    """A nats-server of this module's own: random streams cannot disturb other tests."""
    async with EmbeddedNats(sync_always=False) as server:
        yield server


@pytest.fixture
async def fuzz_client(fuzz_server: EmbeddedNats) -> AsyncIterator[windshift.Client]:
    async with windshift.connect(fuzz_server.url, request_timeout=timedelta(seconds=3)) as client:
        await client.ensure_stream(FUZZ_STREAM, subjects=[f"{FUZZ_STREAM}.>"])
        yield client


def test_hostile_names_and_subjects_are_refused_clearly() -> None:
    @FUZZ
    @given(value=HOSTILE, kind=st.sampled_from(["stream", "consumer", "store"]))
    def check_name(value: object, kind: str) -> None:
        try:
            assert validate_name(kind, value) == value
        except ValidationError as exc:
            assert kind in str(exc) and len(str(exc)) <= MESSAGE_LIMIT

    @FUZZ
    @given(value=st.one_of(HOSTILE, FILTER), wildcards=st.booleans())
    def check_subject(value: object, wildcards: bool) -> None:
        try:
            assert validate_subject(value, wildcards=wildcards) == value
        except ValidationError as exc:
            assert "subject" in str(exc) and len(str(exc)) <= MESSAGE_LIMIT

    check_name()
    check_subject()


SIZE = st.integers(1, 2**40)
BIG_INT = st.integers(-(2**70), 2**70)
SOURCE = st.builds(
    StreamSource,
    name=st.just(FUZZ_STREAM),
    start=st.one_of(st.none(), POINTER),
    filter_subjects=st.lists(FILTER, max_size=2),
)
HOSTILE_SOURCE = st.builds(
    StreamSource,
    name=st.one_of(st.just(FUZZ_STREAM), HOSTILE),
    start=st.one_of(st.none(), POINTER, HOSTILE),
    filter_subjects=st.one_of(st.lists(FILTER, max_size=2), HOSTILE, st.lists(HOSTILE, max_size=2)),
)


@FUZZ
@given(
    values=arguments(
        {
            "name": TOKEN.map(lambda token: f"s{token}"),
            "subjects": st.lists(GOOD_SUBJECT.map(lambda s: f"x{s}"), min_size=1, max_size=2),
            "max_age": DURATION,
            "max_events": SIZE,
            "max_events_per_subject": SIZE,
            "max_bytes": SIZE,
            "discard": st.sampled_from(["old", "new"]),
            "storage": st.sampled_from(["file", "memory"]),
            "replicas": st.just(1),
            "deduplication_window": DURATION,
            "max_event_size": st.integers(1, 2**31 - 1),
        },
        edges={
            "subjects": st.lists(st.one_of(GOOD_SUBJECT, HOSTILE), max_size=3),
            "max_events": BIG_INT,
            "max_events_per_subject": BIG_INT,
            "max_bytes": BIG_INT,
            "replicas": BIG_INT,
            "max_event_size": BIG_INT,
        },
        required=("name", "subjects"),
    ),
    source=st.sampled_from(["subjects", "mirror", "sources"]),
    origin=st.one_of(SOURCE, HOSTILE_SOURCE, HOSTILE),
)
async def test_hostile_stream_options_are_refused_clearly(
    fuzz_client: windshift.Client, values: dict[str, Any], source: str, origin: Any
) -> None:
    if source == "mirror":
        values.pop("subjects", None)
        values["mirror"] = origin
    elif source == "sources":
        values.pop("subjects", None)
        values["sources"] = [origin]
    name = values.pop("name", "fuzzed")
    created = await _refused_cleanly(fuzz_client.ensure_stream(name, **values))
    if created is not None:
        await fuzz_client.delete_stream(created.name)


@FUZZ
@given(
    values=arguments(
        {
            "stream": st.just(FUZZ_STREAM),
            "name": st.one_of(st.none(), TOKEN),
            "subjects": st.lists(FILTER, max_size=2),
            "start": POINTER,
            "processing_timeout": DURATION,
            "max_delivery_attempts": st.integers(1, 100),
            "inactive_threshold": st.one_of(st.none(), DURATION),
        },
        edges={
            "subjects": st.lists(st.one_of(FILTER, HOSTILE), max_size=3),
            "max_delivery_attempts": BIG_INT,
        },
        required=("stream",),
    )
)
async def test_hostile_consumer_options_are_refused_clearly(
    fuzz_client: windshift.Client, values: dict[str, Any]
) -> None:
    stream = values.pop("stream", FUZZ_STREAM)
    name = values.pop("name", None)
    created = await _refused_cleanly(fuzz_client.ensure_consumer(stream, name, **values))
    if created is not None:
        await fuzz_client.delete_consumer(FUZZ_STREAM, created.id)


@FUZZ
@given(
    values=arguments(
        {
            "subject": GOOD_SUBJECT,
            "message": st.one_of(
                st.builds(StringValue, value=st.text(max_size=50)),
                st.builds(AnyProto, type_url=st.just("x/a.B"), value=st.binary(max_size=64)),
            ),
            "timestamp": st.datetimes(timezones=st.just(UTC)),
            "idempotency_key": TOKEN,
            "expected_last_id": st.integers(0, 10),
            "expected_last_stream_id": st.integers(0, 10),
        },
        edges={
            "message": st.builds(AnyProto, type_url=TYPE_URL, value=st.binary(max_size=64)),
            "timestamp": st.datetimes(),  # naive
            "expected_last_id": BIG_INT,
            "expected_last_stream_id": BIG_INT,
        },
        required=("subject", "message"),
    )
)
async def test_hostile_publish_options_are_refused_clearly(
    fuzz_client: windshift.Client, values: dict[str, Any]
) -> None:
    subject = values.pop("subject", f"{FUZZ_STREAM}.a")
    message = values.pop("message", StringValue(value="x"))
    await _refused_cleanly(fuzz_client.publish(subject, message, **values))


@FUZZ
@given(
    values=arguments(
        {
            "stream": st.just(FUZZ_STREAM),
            "consumer": st.just("reader"),
            "max_pending_events": st.integers(1, 1000),
        },
        edges={"max_pending_events": BIG_INT},
        required=("stream", "consumer"),
    )
)
async def test_hostile_subscribe_options_are_refused_clearly(
    fuzz_client: windshift.Client, values: dict[str, Any]
) -> None:
    # A fresh consumer each time, reading new events only: a subscription
    # that accepts its options must then deliver an event (or fail clearly),
    # not spin or hang.
    consumer = await fuzz_client.ensure_consumer(FUZZ_STREAM, subjects=[f"{FUZZ_STREAM}.sub"])
    stream = values.pop("stream", FUZZ_STREAM)
    name = values.pop("consumer", "reader")
    if name == "reader":
        name = consumer.id

    async def subscribe_and_receive() -> None:
        async with fuzz_client.subscribe(stream, name, **values) as events:
            published = await fuzz_client.publish(f"{FUZZ_STREAM}.sub", StringValue(value="x"))
            event = await anext(events)
            assert event.id == published.id
            await event.ack()

    try:
        await _refused_cleanly(subscribe_and_receive())
    finally:
        await fuzz_client.delete_consumer(FUZZ_STREAM, consumer.id)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("expected_last_id", 2**64, "expected_last_id"),
        ("expected_last_stream_id", 2**70, "expected_last_stream_id"),
        ("max_pending_events", 2**63, "max_pending_events"),
        ("timestamp", "2026-01-01T00:00:00Z", "timestamp"),
        ("idempotency_key", "\udcff", "idempotency_key"),
        ("idempotency_key", "k" * 1_100_000, "larger than the NATS server accepts"),
    ],
)
async def test_values_nats_cannot_take_are_refused_not_ignored(
    fuzz_client: windshift.Client, option: str, value: Any, match: str
) -> None:
    """Values that NATS would silently ignore, choke on, or answer by closing the connection."""
    with pytest.raises(ValidationError, match=match):
        if option == "max_pending_events":
            fuzz_client.subscribe(FUZZ_STREAM, "reader", max_pending_events=value)
        else:
            await fuzz_client.publish(f"{FUZZ_STREAM}.a", StringValue(value="x"), **{option: value})
    assert fuzz_client.is_connected  # nothing reached NATS that made it close the connection
    await fuzz_client.publish(f"{FUZZ_STREAM}.a", StringValue(value="still fine"))


@FUZZ
@given(size=st.integers(0, 2 * 1024 * 1024), limit=st.integers(64, 64 * 1024))
async def test_events_beyond_max_event_size_are_refused_clearly(
    fuzz_client: windshift.Client, size: int, limit: int
) -> None:
    await fuzz_client.ensure_stream("sized", subjects=["sized.>"], max_event_size=limit)
    event = AnyProto(type_url="type.googleapis.com/a.B", value=b"\xff" * size)
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            published = await fuzz_client.publish("sized.a", event)
    except ValidationError as exc:
        # the limit counts the headers too (data type, time, trace context)
        assert size + 256 > limit, f"a {size}-byte event refused under a {limit}-byte limit"
        assert str(size) in str(exc) or "size" in str(exc), str(exc)
    else:
        assert size <= limit, f"a {size}-byte event stored under a {limit}-byte limit"
        assert published.id > 0
