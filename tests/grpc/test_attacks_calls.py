"""Attacks on what one Events call, or one token, may cost the server.

Each test performs the attack against a real ``windshift-grpc serve``
subprocess, through real channels, and checks what the server holds:

* Ack, Reject and Ping requests naming huge lists of ids, with their
  confirmations never read (the server's memory, read from
  ``/proc/<pid>/status`` of the serve process);
* silent calls, and calls of a token without permissions, that once took
  every Events slot; one token taking them all;
* a silent subscriber whose token is withdrawn by a reload of the tokens file;
* a subscriber of large events asking for ``max_processing_events`` 10000.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import BytesValue, StringValue

import windshift
from tests.grpc_fixtures import EventsClient, ServeProcess, StartServe
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.events_stream import MAX_PROCESSING_EVENTS

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

MIB = 1024 * 1024
EVENTS = "/windshift.events.v1alpha1.EventsService/Events"
#: WINDSHIFT_EVENTS_MAX_IDS_PER_REQUEST's default.
MAX_IDS = 10_000
#: WINDSHIFT_EVENTS_MAX_PENDING_BYTES's default.
MAX_PENDING_BYTES = 4 * MIB


# --- helpers --------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_urlsafe(24)


def metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def write_tokens(path: Path, entries: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({"tokens": entries}))
    path.chmod(0o600)  # plain tokens: a file others may read is refused


def _status_kib(server: ServeProcess, field: str) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{server.process.pid}/status")


def rss_mib(server: ServeProcess) -> float:
    """The serve process's resident memory now."""
    return _status_kib(server, "VmRSS") / 1024


def reset_peak(server: ServeProcess) -> None:
    """Start measuring the serve process's peak resident memory (VmHWM) anew, from now."""
    assert server.process is not None
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")


def peak_mib(server: ServeProcess) -> float:
    """The serve process's peak resident memory since :func:`reset_peak`."""
    return _status_kib(server, "VmHWM") / 1024


async def consumer_of(client: windshift.Client, stream: str, consumer: str = "worker") -> None:
    await client.ensure_stream(stream, subjects=[f"{stream}.>"])
    await client.ensure_consumer(
        stream, consumer, subjects=[f"{stream}.>"], start=windshift.StreamPointer.start()
    )


async def ended_lines(server: ServeProcess, count: int, after: int) -> list[str]:
    """Wait until ``count`` Events calls have ended (each logs one line when it has)."""
    return await server.wait_for_lines(rf"rpc {EVENTS} \w+ ", count, after=after, timeout=30)


@pytest.fixture
async def channel_to() -> AsyncIterator[Any]:
    """Open channels to serve processes; all closed at the end."""
    opened: list[grpc.aio.Channel] = []

    def open_channel(server: ServeProcess) -> Stub:
        channel = grpc.aio.insecure_channel(server.target)
        opened.append(channel)
        return pb_grpc.EventsServiceStub(channel)  # type: ignore[return-value]

    try:
        yield open_channel
    finally:
        for channel in opened:
            await channel.close()


# --- 1. memory amplification through lists of ids ------------------------------


def _settle(kind: str, ids: range) -> pb.EventsRequest:
    if kind == "ack":
        return pb.EventsRequest(ack=pb.EventsRequest.Ack(ids=ids))
    if kind == "reject":
        return pb.EventsRequest(reject=pb.EventsRequest.Reject(ids=ids))
    return pb.EventsRequest(ping=pb.EventsRequest.Ping(ids=ids))


@pytest.mark.parametrize("kind", ["ack", "reject", "ping"])
async def test_a_request_naming_too_many_ids_is_refused_naming_the_limit(
    start_serve: StartServe, channel_to: Any, client: windshift.Client, name: str, kind: str
) -> None:
    await consumer_of(client, name)
    server = await start_serve()
    stub = channel_to(server)
    call = EventsClient(stub)
    await call.subscribe(name, "worker")
    # As many as the limit: answered (none was delivered, so all invalid).
    call.send(_settle(kind, range(1, MAX_IDS + 1)))
    answer = await call.answer()
    confirmation = getattr(answer, f"{kind}_confirmation")
    assert len(confirmation.invalid_ids) == MAX_IDS

    call.send(_settle(kind, range(1, MAX_IDS + 2)))
    assert await call.finish() == grpc.StatusCode.INVALID_ARGUMENT
    details = await call.details()
    assert f"{kind} names {MAX_IDS + 1} ids, more than the {MAX_IDS}" in details
    assert "WINDSHIFT_EVENTS_MAX_IDS_PER_REQUEST" in details


class _Flood:
    """One Events call that subscribes, then writes settle requests and never reads again."""

    def __init__(self, stub: Stub, stream: str, ids: range, messages: int) -> None:
        self.call = stub.Events()
        self.stream, self.ids, self.messages = stream, ids, messages
        self.written = 0

    async def run(self) -> None:
        subscribe = pb.EventsRequest.Subscribe(stream=self.stream, consumer="worker")
        await self.call.write(pb.EventsRequest(subscribe=subscribe))
        first = await self.call.read()
        assert isinstance(first, pb.EventsResponse) and first.HasField("subscribed"), first
        request = pb.EventsRequest(ack=pb.EventsRequest.Ack(ids=self.ids))
        for _ in range(self.messages):
            await self.call.write(request)  # waits while gRPC flow control holds it
            self.written += 1


async def _flood(
    server: ServeProcess, stub: Stub, stream: str, *, calls: int, ids: range, messages: int
) -> tuple[float, list[_Flood], list[str]]:
    """Run the attack for a while; the peak memory during it, the calls and their log lines."""
    floods = [_Flood(stub, stream, ids, messages) for _ in range(calls)]
    reset_peak(server)
    before = len(server.lines)
    tasks = [asyncio.create_task(flood.run()) for flood in floods]
    # The attack's duration: the writers run until they are done or held.
    done, _ = await asyncio.wait(tasks, timeout=3.0)
    for task in done:  # refused calls end their writer with an error
        task.exception()
    peak = peak_mib(server)
    for flood, task in zip(floods, tasks, strict=True):
        task.cancel()
        flood.call.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return peak, floods, await ended_lines(server, calls, before)


async def test_ids_whose_confirmations_are_never_read_hold_bounded_memory(
    start_serve: StartServe, channel_to: Any, client: windshift.Client, name: str
) -> None:
    await consumer_of(client, name)
    server = await start_serve()
    stub = channel_to(server)
    # Warm up: one call of each kind of request, read to its end.
    start = len(server.lines)
    warm = EventsClient(stub)
    await warm.subscribe(name, "worker")
    for kind in ("ack", "reject", "ping"):
        warm.send(_settle(kind, range(10**6, 10**6 + MAX_IDS)))
        await warm.answer()
    await warm.cancel()
    await ended_lines(server, 1, start)
    baseline = rss_mib(server)

    # 64 requests of a million ids each (the attack that once took 1 GB):
    # refused at the first.
    # (The writing client sees INTERNAL, grpc.aio's bug; the server's log says what it answered.)
    peak, floods, logged = await _flood(
        server, stub, name, calls=1, ids=range(10**6, 2 * 10**6), messages=64
    )
    assert f"{EVENTS} INVALID_ARGUMENT" in logged[0]
    assert floods[0].written < 64
    # Bounded by the one message gRPC accepts (4 MiB) and its parsed ids.
    assert peak - baseline < 40, (baseline, peak)

    # As many ids as allowed per request, on 4 calls, as fast as gRPC takes
    # them: a call reads requests only while those not yet confirmed name
    # fewer than MAX_IDS ids, so once the client's receive window is full
    # of unread confirmations, it is held. What a held call costs: under
    # 2 * MAX_IDS ids of its own (about 1 MiB) and gRPC's flow-control
    # windows (grown by gRPC's BDP probing; about 5 MiB here); without the
    # bound on ids in flight, 20 MiB.
    calls = 4
    first_peak, floods, logged = await _flood(
        server, stub, name, calls=calls, ids=range(10**6, 10**6 + MAX_IDS), messages=2000
    )
    written = [flood.written for flood in floods]
    assert all(0 < count < 2000 for count in written), written
    assert all(f"{EVENTS} CANCELLED" in line for line in logged), logged  # held, not refused
    assert first_peak - baseline < 12 * calls, (baseline, first_peak)

    # The same again, after those calls ended: it reuses what they freed.
    second_peak, _, _ = await _flood(
        server, stub, name, calls=calls, ids=range(10**6, 10**6 + MAX_IDS), messages=2000
    )
    assert second_peak - first_peak < max(8, (first_peak - baseline) / 2), (
        baseline,
        first_peak,
        second_peak,
    )
    assert rss_mib(server) - baseline < 12 * calls


# --- 2. Events slots ------------------------------------------------------------


async def test_silent_calls_and_calls_without_permission_take_no_events_slot(
    start_serve: StartServe, channel_to: Any, client: windshift.Client, tmp_path: Path, name: str
) -> None:
    await consumer_of(client, name)
    nobody, subscriber = new_token(), new_token()
    tokens = tmp_path / "tokens.json"
    write_tokens(
        tokens,
        [
            {"name": "nobody", "token": nobody},
            {"name": "subscriber", "token": subscriber, "consume": [name]},
        ],
    )
    # The default first-message timeout (5 s): long enough for everything below.
    server = await start_serve(WINDSHIFT_AUTH_FILE=str(tokens), WINDSHIFT_MAX_EVENTS_CALLS="10")
    stub = channel_to(server)  # one connection for everyone
    opened = time.monotonic()
    silent = [stub.Events(metadata=metadata(nobody)) for _ in range(50)]
    for call in silent:
        await call.wait_for_connection()
    denied = [EventsClient(stub, metadata(nobody)) for _ in range(50)]
    for call in denied:
        call.send(
            pb.EventsRequest(subscribe=pb.EventsRequest.Subscribe(stream=name, consumer="worker"))
        )

    legitimate = EventsClient(stub, metadata(subscriber))
    try:
        await legitimate.subscribe(name, "worker")
        (event_id,) = [
            (await client.publish(f"{name}.created", StringValue(value="for the subscriber"))).id
        ]
        assert (await legitimate.next_event()).id == event_id
        assert not any(call.done() for call in silent)  # still open meanwhile
        codes = await asyncio.gather(*(call.finish() for call in denied))
        assert set(codes) == {grpc.StatusCode.PERMISSION_DENIED}

        # The silent calls end, after the first-message timeout, naming it.
        for call in silent:
            assert await asyncio.wait_for(call.code(), 20) == grpc.StatusCode.INVALID_ARGUMENT
        assert time.monotonic() - opened >= 4.9
        details = await silent[0].details()
        assert "no subscribe within 5s" in details
        assert "WINDSHIFT_EVENTS_FIRST_MESSAGE_TIMEOUT" in details
        assert list((await legitimate.ack(event_id)).ids) == [event_id]
    finally:
        await legitimate.cancel()


async def test_one_token_cannot_take_every_events_slot(
    start_serve: StartServe, channel_to: Any, client: windshift.Client, tmp_path: Path, name: str
) -> None:
    await consumer_of(client, name)
    greedy, subscriber = new_token(), new_token()
    tokens = tmp_path / "tokens.json"
    write_tokens(
        tokens,
        [
            {"name": "greedy", "token": greedy, "consume": [name]},
            {"name": "subscriber", "token": subscriber, "consume": [name]},
        ],
    )
    server = await start_serve(
        WINDSHIFT_AUTH_FILE=str(tokens),
        WINDSHIFT_MAX_EVENTS_CALLS="10",
        WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN="5",
    )
    stub = channel_to(server)
    held = [EventsClient(stub, metadata(greedy)) for _ in range(5)]
    legitimate = EventsClient(stub, metadata(subscriber))
    try:
        for call in held:
            await call.subscribe(name, "worker")
        refused = EventsClient(stub, metadata(greedy))
        refused.send(
            pb.EventsRequest(subscribe=pb.EventsRequest.Subscribe(stream=name, consumer="worker"))
        )
        assert await refused.finish() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await refused.details() == (
            "token 'greedy' already has 5 open Events calls, its limit "
            "(WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN is 5); end one first"
        )
        assert refused.responses == []  # refused before it subscribed

        await legitimate.subscribe(name, "worker")

        # One of the five ends: room for another of the same token.
        before = len(server.lines)
        await held.pop().cancel()
        await ended_lines(server, 1, before)
        again = EventsClient(stub, metadata(greedy))
        held.append(again)
        await again.subscribe(name, "worker")
    finally:
        for call in [*held, legitimate]:
            if not call.ended.is_set():
                await call.cancel()


# --- 3. revocation of silent calls ----------------------------------------------


async def test_a_reload_ends_the_silent_calls_of_withdrawn_tokens_at_once(
    start_serve: StartServe, channel_to: Any, client: windshift.Client, tmp_path: Path, name: str
) -> None:
    labels = ("removed", "demoted", "bystander")
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    for label in labels:
        await client.ensure_consumer(
            name, label, subjects=[f"{name}.{label}"], start=windshift.StreamPointer.start()
        )
    secrets_ = {label: new_token() for label in labels}
    tokens = tmp_path / "tokens.json"
    write_tokens(
        tokens,
        [{"name": label, "token": secrets_[label], "consume": [name]} for label in labels],
    )
    server = await start_serve(WINDSHIFT_AUTH_FILE=str(tokens))
    stub = channel_to(server)
    calls = {label: EventsClient(stub, metadata(secrets_[label])) for label in labels}
    try:
        for label, call in calls.items():
            await call.subscribe(name, label)
            published = await client.publish(f"{name}.{label}", StringValue(value="before"))
            assert (await call.next_event()).id == published.id
        # From here on the subscribers send nothing.

        write_tokens(
            tokens,
            [
                {"name": "demoted", "token": secrets_["demoted"], "publish": [f"{name}.>"]},
                {"name": "bystander", "token": secrets_["bystander"], "consume": [name]},
            ],
        )
        start = len(server.lines)
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        reloaded = await server.wait_for_line(r"reloaded 2 token\(s\)", after=start)
        after = {
            label: (await client.publish(f"{name}.{label}", StringValue(value="after"))).id
            for label in labels
        }

        assert await calls["removed"].finish(timeout=5) == grpc.StatusCode.UNAUTHENTICATED
        assert await calls["removed"].details() == (
            "the bearer token is not valid (the tokens file was reloaded)"
        )
        assert await calls["demoted"].finish(timeout=5) == grpc.StatusCode.PERMISSION_DENIED
        assert await calls["demoted"].details() == (
            f"token 'demoted' may not consume stream '{name}' (the tokens file was reloaded)"
        )
        for label in ("removed", "demoted"):
            received = [r.event.id for r in calls[label].responses if r.HasField("event")]
            assert after[label] not in received
        assert "ended 2 Events call(s)" in reloaded

        # The unaffected token's call goes on.
        assert (await calls["bystander"].next_event()).id == after["bystander"]
        assert list((await calls["bystander"].ack(after["bystander"])).ids) == [after["bystander"]]
    finally:
        for call in calls.values():
            if not call.ended.is_set():
                await call.cancel()


# --- 4. the bytes one call holds ------------------------------------------------


async def test_a_call_holds_at_most_its_bound_in_bytes_of_large_events(
    start_serve: StartServe, channel_to: Any, client: windshift.Client, name: str
) -> None:
    size = 900_000
    count = 40
    await consumer_of(client, name)
    server = await start_serve()
    stub = channel_to(server)
    start = len(server.lines)
    warm = EventsClient(stub)  # the first call's imports and buffers are not the attack's
    await warm.subscribe(name, "worker")
    await warm.cancel()
    await ended_lines(server, 1, start)
    payload = BytesValue(value=b"x" * size)
    for _ in range(count):
        await client.publish(f"{name}.large", payload)
    baseline = rss_mib(server)
    reset_peak(server)

    call = EventsClient(stub)
    expected = MAX_PENDING_BYTES // (size + 1000)  # subject, headers, reply subject
    try:
        await call.subscribe(name, "worker", max_processing_events=MAX_PROCESSING_EVENTS)
        received = await call.events(expected)
        # A ping's confirmation comes after anything sent before it: nothing more.
        assert list((await call.ping(received[0].id)).ids) == [received[0].id]
        assert call.pending_events() == 0
        info = await client.consumer_info(name, "worker")
        assert (info.unsettled_events, info.pending_events) == (expected, count - expected)
        assert peak_mib(server) - baseline < 3 * MAX_PENDING_BYTES / MIB, (
            baseline,
            peak_mib(server),
        )

        # Settling one lets exactly one more out.
        assert list((await call.ack(received[0].id)).ids) == [received[0].id]
        more = await call.next_event()
        assert list((await call.ping(more.id)).ids) == [more.id]
        assert call.pending_events() == 0
        info = await client.consumer_info(name, "worker")
        assert (info.unsettled_events, info.pending_events) == (expected, count - expected - 1)
    finally:
        await call.cancel()
