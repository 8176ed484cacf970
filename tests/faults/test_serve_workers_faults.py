"""``serve --workers``: a worker killed under load, a worker that keeps crashing, a killed supervisor."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from typing import TYPE_CHECKING

import grpc

from tests._faults import Ledger
from tests._util import Background
from tests.grpc_fixtures import (
    EventsClient,
    StartServe,
    alive,
    channels_on_every_worker,
    child_pids,
    ensure_consumer,
    http_get,
    string_any,
    unpack_text,
    wait_gone,
    worker_pids,
)
from windshift import EmbeddedNats
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.supervisor import CRASH_WINDOW, MAX_CRASHES, RESTART_DELAY

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

TOTAL = 2_000
HOLDERS = 2  # Events clients of the worker that dies; each holds what it is given
HELD_EACH = 8  # their max_processing_events
TAKERS = 2  # Events clients of the worker that lives; they settle everything
SEED = TOTAL // 10  # published before the wait for the holders' events
PUBLISHERS = 16  # half on a connection to each worker
# Codes after which a publish may or may not have been stored: retried, with
# the same idempotency key, on the same channel (which connects again, to a
# worker that lives).
MAYBE_STORED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def stub_of(channel: grpc.aio.Channel) -> Stub:
    return pb_grpc.EventsServiceStub(channel)  # type: ignore[return-value]


async def publish_until_acknowledged(stub: Stub, ledger: Ledger, subject: str, key: str) -> None:
    """Publish ``key`` (payload and idempotency key) until the server acknowledges it."""
    ledger.attempted.add(key)
    request = pb.PublishEventRequest(subject=subject, data=string_any(key), idempotency_key=key)
    while True:
        try:
            response = await stub.PublishEvent(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in MAYBE_STORED:
                raise
            ledger.errors[exc.code().name] += 1
            await asyncio.sleep(0.05)  # retry pacing
            continue
        ledger.record_ack(key, response.id)
        return


async def take_events(
    call: EventsClient, ledger: Ledger, attempts: dict[int, int], *, settle: bool
) -> None:
    """Record every event ``call`` is given; settle it (or hold it) as told. Runs until cancelled."""
    while True:
        event = await call.next_event(timeout=120)
        attempts[event.id] = max(attempts.get(event.id, 0), event.delivery_attempt)
        ledger.record_received(event.id, event.delivery_attempt, unpack_text(event))
        if settle:
            await call.ack(event.id)
            ledger.record_settled(event.id)


async def test_a_worker_killed_under_load_loses_nothing_and_its_clients_events_come_back(
    start_serve: StartServe, nats_server: EmbeddedNats, name: str, background: Background
) -> None:
    """A worker SIGKILLed while its Events clients hold unsettled events, in the
    middle of publishes through both workers: every acknowledged publish is on
    the stream once, and what the dead worker's clients held reaches the
    other worker's clients as a redelivery; the worker comes back."""
    server = await start_serve(workers=2)
    ledger = Ledger("grpc/worker-killed")
    keys = [f"k{i}" for i in range(TOTAL)]
    given: list[dict[int, int]] = [{} for _ in range(HOLDERS)]  # id -> highest attempt
    taken: dict[int, int] = {}  # the same, for the surviving worker's clients together
    channels = await channels_on_every_worker(server, 2, name)
    try:
        doomed, survivor = stub_of(channels[1]), stub_of(channels[2])
        doomed_pid = worker_pids(server)[1]
        await ensure_consumer(survivor, name, "shared", timeout=1)
        holders = [EventsClient(doomed) for _ in range(HOLDERS)]
        takers = [EventsClient(survivor) for _ in range(TAKERS)]
        for call in [*holders, *takers]:
            await call.subscribe(name, "shared", max_processing_events=HELD_EACH)
        consuming = [
            *(
                background.start(take_events(c, ledger, mine, settle=False))
                for c, mine in zip(holders, given, strict=True)
            ),
            *(background.start(take_events(c, ledger, taken, settle=True)) for c in takers),
        ]

        async def publish(part: list[str]) -> None:
            pending = iter(part)

            async def publisher(stub: Stub) -> None:
                for key in pending:
                    await publish_until_acknowledged(stub, ledger, f"{name}.created", key)

            await asyncio.gather(
                *(publisher(doomed if i % 2 else survivor) for i in range(PUBLISHERS))
            )

        # A first SEED publishes, then the doomed worker's clients must hold
        # their events; the kill comes at half the publishes, with the rest
        # in flight through both workers (as in tests/faults/test_grpc_resilience.py).
        await asyncio.wait_for(publish(keys[:SEED]), 60)
        await ledger.wait_until(
            lambda: all(len(mine) >= HELD_EACH for mine in given),
            60,
            "the doomed worker's clients to be given their events",
        )
        publishing = background.start(publish(keys[SEED:]))
        await ledger.wait_until(lambda: len(ledger.acked) >= TOTAL // 2, 60, "half the publishes")
        given_before_kill: dict[int, int] = {}
        for mine in given:
            for event_id, attempt in mine.items():
                given_before_kill[event_id] = max(given_before_kill.get(event_id, 0), attempt)
        before = len(server.lines)
        os.kill(doomed_pid, signal.SIGKILL)
        for call in holders:
            assert await call.finish() == grpc.StatusCode.UNAVAILABLE
        await asyncio.wait_for(publishing, 60)
        await ledger.wait_until(ledger.received_all_acked, 60, "every acked event")
        await ledger.wait_until(ledger.settled_all_acked, 60, "every event settled")
        for task in consuming:
            task.cancel()
        await asyncio.gather(*consuming, return_exceptions=True)
        for call in takers:
            await call.cancel()
        await server.wait_for_line(r"worker 1 of 2 started again", after=before, timeout=30)
    finally:
        for channel in channels.values():
            await channel.close()
    figures = await ledger.audit([nats_server.url], name, f"{name}.>")
    ledger.report(figures, given_to_holders=len(given_before_kill))
    ledger.check_deliveries()
    assert figures.published == figures.acknowledged == figures.stored == TOTAL
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert figures.unreceived == 0
    assert set(given_before_kill) <= set(taken)
    assert all(taken[event_id] >= 2 for event_id in given_before_kill)
    assert ledger.errors, "publishes in flight through the killed worker should have failed"
    assert await http_get(server.health_port, "/readyz") == (200, "ready\n")


async def test_a_worker_that_keeps_crashing_stops_the_server(start_serve: StartServe) -> None:
    server = await start_serve(workers=2)
    assert server.process is not None
    survivor = worker_pids(server)[2]
    killed = []
    for crash in range(1, MAX_CRASHES + 1):
        pid = worker_pids(server)[1]
        before = len(server.lines)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        if crash == MAX_CRASHES:
            break
        delay = RESTART_DELAY * 2 ** (crash - 1)
        line = await server.wait_for_line(rf"worker 1 of 2 \(pid {pid}\)", after=before)
        assert line.endswith(f'was killed by SIGKILL; starting it again in {delay:g} s"}}'), line
        # Until it is back, the server is not ready, and says why.
        assert await http_get(server.health_port, "/readyz") == (
            503,
            "not ready: worker 1 of 2: was killed by SIGKILL; restarting\n",
        )
        await server.wait_for_line(r"worker 1 of 2 started again", after=before, timeout=30)
    # The last exit within the window: no restart, every process stops, exit code 1.
    assert await asyncio.wait_for(server.process.wait(), 60) == 1
    await server.wait_for_line("windshift-grpc stopped: worker 1 of 2 was killed by SIGKILL")
    stop = next(line for line in server.lines if "stopping the server" in line)
    assert (
        f"worker 1 of 2 (pid {killed[-1]}) was killed by SIGKILL, its exit {MAX_CRASHES} "
        f"within {CRASH_WINDOW:g} s: stopping the server"
    ) in stop
    assert not alive(survivor)


async def test_the_workers_stop_when_their_supervisor_is_killed(start_serve: StartServe) -> None:
    server = await start_serve(workers=2)
    assert server.process is not None
    pids = child_pids(server.process.pid)
    assert len(pids) == 2
    server.process.kill()
    for pid in pids:  # (as their link closed)
        await wait_gone(pid)
    assert await server.signal(signal.SIGKILL) == -signal.SIGKILL
    lost = [line for line in server.lines if "the supervisor is gone: shutting down" in line]
    assert len(lost) == 2, server.log
    assert len([line for line in server.lines if re.search(r'"windshift-grpc stopped"', line)]) == 2
