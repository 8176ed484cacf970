"""Attacks on what one request may ask: configurations that stall nats-server, pages that fill serve.

A tenant with a valid token sends requests that are each allowed by its
permissions, but that cost everyone else: an EnsureStream of 20,001 subjects
(nats-server checks a stream's subjects against each other, in time that grows
with the square of their number: about ten CPU-seconds, during which other
tenants' JetStream calls stall and fail UNAVAILABLE), an aggregate of 20,001
sources, a consumer or a mirror of 20,001 filter subjects, a subject too long
for the NATS protocol (nats-server closes serve's one connection, everyone's),
and a ListDeadLetters over letters of 900 kB (one answer of tens of MB, built
in serve's memory). Every attack runs against a real ``windshift-grpc serve``
with a tokens file of two tenants, each scoped to its own names, and must be
refused at once (INVALID_ARGUMENT naming the limit and the count) or answered
within bounds, while the other tenant keeps being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.wrappers_pb2 import BytesValue

import windshift
from tests.grpc_fixtures import (
    EventsClient,
    ServeProcess,
    StartServe,
    duration,
    serve_env,
    string_any,
)
from windshift import EmbeddedNats
from windshift._names import MAX_STORE_NAME_LENGTH, MAX_SUBJECT_LENGTH
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as state_grpc
from windshift_grpc.settings import Settings

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )
    from windshift_grpc._proto.windshift.state.v1alpha1.service_pb2_grpc import (
        StateServiceAsyncStub as StateStub,
    )

ESR = pb.EnsureStreamRequest
INVALID = grpc.StatusCode.INVALID_ARGUMENT
ATTACK = 20_001  # subjects, sources or filters of one attacking request
# How long a refusal, and a call of the other tenant during the attacks, may
# take at most (they take milliseconds; the attacks cost seconds before).
QUICK = 2.0
PAGE_BUDGET = 1024 * 1024  # WINDSHIFT_DEAD_LETTER_PAGE_BYTES's default


def _metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@dataclass
class Tenants:
    """A serve process with two tenants, and the names each may use."""

    server: ServeProcess
    attacker: list[tuple[str, str]]  # the attacker's call metadata
    victim: list[tuple[str, str]]
    attacker_stream: str  # collects <name>.>; the attacker may do anything with it
    attacker_dead: str  # its dead-letter stream
    long_store: str  # a store name as long as NATS allows, the attacker's
    victim_stream: str  # and the victim's store of the same name


@pytest.fixture(scope="module")
async def tenants(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Tenants]:
    prefix = f"lim{os.getpid()}"
    attacker_stream, victim_stream = f"{prefix}atk", f"{prefix}vic"
    attacker_dead = f"{attacker_stream}dead"
    long_store = prefix + "s" * (MAX_STORE_NAME_LENGTH - len(prefix))
    attacker_token, victim_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path = tmp_path_factory.mktemp("limits") / "tokens.json"
    spare = f"{attacker_stream}x"  # a stream the attacker may make, test by test
    own = [attacker_stream, attacker_dead, spare]
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "name": "attacker",
                        "token": attacker_token,
                        "publish": [f"{attacker_stream}.>", f"{spare}.>", f"{attacker_dead}.>"],
                        "consume": own,
                        "manage": own,
                        "read_state": [long_store],
                        "write_state": [long_store, long_store + "s"],
                    },
                    {
                        "name": "victim",
                        "token": victim_token,
                        "publish": [f"{victim_stream}.>", f"{victim_stream}x.>"],
                        "consume": [victim_stream],
                        "manage": [victim_stream, f"{victim_stream}x"],
                        "read_state": [victim_stream],
                        "write_state": [victim_stream],
                    },
                ]
            }
        )
    )
    path.chmod(0o600)  # plain tokens: a file others may read is refused
    server = ServeProcess(serve_env(nats_server.url, WINDSHIFT_AUTH_FILE=str(path)))
    await server.start()
    tenants = Tenants(
        server,
        _metadata(attacker_token),
        _metadata(victim_token),
        attacker_stream,
        attacker_dead,
        long_store,
        victim_stream,
    )
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub, state = _stubs(channel)
            for stream, who in (
                (attacker_stream, tenants.attacker),
                (victim_stream, tenants.victim),
            ):
                await stub.EnsureStream(_subjects(stream, [f"{stream}.>"]), metadata=who)
            await state.EnsureStore(
                state_pb.EnsureStoreRequest(store=victim_stream), metadata=tenants.victim
            )
            await state.Set(
                state_pb.SetRequest(store=victim_stream, key="cart", value=string_any("3 apples")),
                metadata=tenants.victim,
            )
        yield tenants
    finally:
        await server.stop()


@pytest.fixture
async def channel(tenants: Tenants) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(tenants.server.target) as opened:
        yield opened


def _stubs(channel: grpc.aio.Channel) -> tuple[Stub, StateStub]:
    events: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
    state: StateStub = state_grpc.StateServiceStub(channel)  # type: ignore[assignment]
    return events, state


def _subjects(name: str, subjects: list[str]) -> pb.EnsureStreamRequest:
    return ESR(name=name, subjects=ESR.Subjects(subjects=subjects))


async def _refused(call: Awaitable[Any]) -> tuple[grpc.aio.AioRpcError, float]:
    """The error a call ends with (it must end with one), and how long it took."""
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value, time.perf_counter() - started


Latencies = list[tuple[str, float, grpc.StatusCode]]


async def _victim_calls(tenants: Tenants, channel: grpc.aio.Channel, rounds: int) -> Latencies:
    """``rounds`` rounds of the victim's usual calls: a state Get and an unchanged EnsureStream."""
    stub, state = _stubs(channel)
    stream = tenants.victim_stream
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "Get": lambda: state.Get(
            state_pb.GetRequest(store=stream, key="cart"), metadata=tenants.victim, timeout=30
        ),
        "EnsureStream": lambda: stub.EnsureStream(
            _subjects(stream, [f"{stream}.>"]), metadata=tenants.victim, timeout=30
        ),
    }
    latencies: Latencies = []
    for _ in range(rounds):
        for what, call in calls.items():
            started = time.perf_counter()
            try:
                await call()
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                code = error.code()
            latencies.append((what, time.perf_counter() - started, code))
    return latencies


def _summary(latencies: Latencies) -> str:
    lines = []
    for what in sorted({row[0] for row in latencies}):
        seconds = [row[1] for row in latencies if row[0] == what]
        codes = sorted({row[2].name for row in latencies if row[0] == what})
        lines.append(
            f"{what}: {len(seconds)} calls, median {statistics.median(seconds) * 1000:.1f} ms, "
            f"max {max(seconds) * 1000:.1f} ms, {'/'.join(codes)}"
        )
    return "; ".join(lines)


async def _during(
    tenants: Tenants, channel: grpc.aio.Channel, attacks: Awaitable[list[Any]]
) -> tuple[list[Any], Latencies]:
    """Run the attacks while the victim keeps calling; the attacks' results, the victim's calls."""
    attacking = asyncio.ensure_future(attacks)
    latencies: Latencies = []
    try:
        # At least a few rounds, and as many as it takes for the attacks to end.
        while not attacking.done() or len(latencies) < 20:
            latencies += await _victim_calls(tenants, channel, 1)
    finally:
        if not attacking.done():
            attacking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attacking
    return attacking.result(), latencies


def _victim_kept_being_served(before: Latencies, during: Latencies) -> None:
    print(f"\nthe other tenant before the attacks: {_summary(before)}")
    print(f"the other tenant during the attacks: {_summary(during)}")
    assert {row[2] for row in before + during} == {grpc.StatusCode.OK}, _summary(during)
    slowest = max(row[1] for row in during)
    assert slowest < QUICK, f"a call of the other tenant took {slowest:.1f}s: {_summary(during)}"


# --- the attacks ------------------------------------------------------------------


async def test_a_stream_of_20001_subjects_is_refused_at_once_and_others_stay_served(
    tenants: Tenants, channel: grpc.aio.Channel, client: windshift.Client
) -> None:
    stub, _ = _stubs(channel)
    name = tenants.attacker_stream + "x"
    attack = _subjects(name, [f"{name}.s{i}" for i in range(ATTACK)])
    assert attack.ByteSize() > 200_000  # what one request of the attack weighs

    async def attacker() -> list[tuple[grpc.aio.AioRpcError, float]]:
        # Three at a time, three times: more than nats-server could absorb.
        results: list[tuple[grpc.aio.AioRpcError, float]] = []
        for _ in range(3):
            results += await asyncio.gather(
                *(_refused(stub.EnsureStream(attack, metadata=tenants.attacker)) for _ in range(3))
            )
        return results

    before = await _victim_calls(tenants, channel, 10)
    results, during = await _during(tenants, channel, attacker())
    for error, seconds in results:
        assert error.code() == INVALID, error.details()
        assert f"{ATTACK} stream subjects, more than the limit of 256 (max_stream_subjects)" in str(
            error.details()
        )
        assert seconds < QUICK, f"the refusal took {seconds:.1f}s"
    print(f"\nrefused in at most {max(s for _, s in results) * 1000:.0f} ms")
    _victim_kept_being_served(before, during)
    with pytest.raises(windshift.StreamNotFoundError):
        await client.stream_info(name)  # nothing reached NATS


async def test_at_the_limits_a_stream_is_made_in_milliseconds(
    tenants: Tenants, channel: grpc.aio.Channel, client: windshift.Client
) -> None:
    stub, _ = _stubs(channel)
    name = tenants.attacker_stream + "x"
    subjects = [f"{name}.{i:03}.{'s' * 200}" for i in range(256)]
    started = time.perf_counter()
    await stub.EnsureStream(_subjects(name, subjects), metadata=tenants.attacker)
    seconds = time.perf_counter() - started
    print(f"\n256 subjects of 200+ characters: created in {seconds * 1000:.0f} ms")
    assert seconds < QUICK
    try:
        assert (await client.stream_info(name)).subjects == subjects
        error, _ = await _refused(
            stub.EnsureStream(
                _subjects(name, [*subjects, f"{name}.more"]), metadata=tenants.attacker
            )
        )
        assert error.code() == INVALID
        assert "257 stream subjects, more than the limit of 256" in str(error.details())
    finally:
        await client.delete_stream(name)


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (
            lambda name, own: ESR(
                name=name,
                aggregate=ESR.StreamSources(sources=[ESR.StreamSource(name=own)] * ATTACK),
            ),
            f"{ATTACK} sources, more than the limit of 64 (max_stream_sources)",
        ),
        (
            lambda name, own: ESR(
                name=name,
                aggregate=ESR.StreamSources(
                    sources=[
                        ESR.StreamSource(
                            name=own, filter_subjects=[f"{own}.{i}.{j}" for j in range(100)]
                        )
                        for i in range(3)
                    ]
                ),
            ),
            "300 filter subjects in its sources together, more than the limit of 256 "
            "(max_filter_subjects)",
        ),
        (
            lambda name, own: ESR(
                name=name,
                mirror=ESR.StreamSource(
                    name=own, filter_subjects=[f"{own}.{i}" for i in range(ATTACK)]
                ),
            ),
            f"{ATTACK} filter subjects, more than the limit of 256 (max_filter_subjects)",
        ),
        (
            lambda name, own: _subjects(name, [f"{name}." + "a" * 300]),
            "characters long, more than the limit of 256 (max_subject_length)",
        ),
        (
            lambda name, own: _subjects(name, [f"{name}." + ".".join("*" * 20)]),
            "has 21 tokens, more than the limit of 16 (max_subject_tokens)",
        ),
    ],
    ids=["sources", "sources-filters", "mirror-filters", "subject-length", "subject-tokens"],
)
async def test_aggregates_mirrors_and_subjects_beyond_the_limits_are_refused(
    tenants: Tenants,
    channel: grpc.aio.Channel,
    attack: Callable[[str, str], pb.EnsureStreamRequest],
    message: str,
) -> None:
    stub, _ = _stubs(channel)
    request = attack(tenants.attacker_stream + "x", tenants.attacker_stream)
    error, seconds = await _refused(stub.EnsureStream(request, metadata=tenants.attacker))
    assert error.code() == INVALID, error.details()
    assert message in str(error.details())
    assert seconds < QUICK


async def test_a_consumer_of_20001_subjects_is_refused_and_others_stay_served(
    tenants: Tenants, channel: grpc.aio.Channel
) -> None:
    stub, _ = _stubs(channel)
    own = tenants.attacker_stream
    attack = pb.EnsureConsumerRequest(
        stream=own, name="greedy", subjects=[f"{own}.{i}" for i in range(ATTACK)]
    )

    async def attacker() -> list[tuple[grpc.aio.AioRpcError, float]]:
        return list(
            await asyncio.gather(
                *(
                    _refused(stub.EnsureConsumer(attack, metadata=tenants.attacker))
                    for _ in range(3)
                )
            )
        )

    before = await _victim_calls(tenants, channel, 10)
    results, during = await _during(tenants, channel, attacker())
    for error, seconds in results:
        assert error.code() == INVALID, error.details()
        assert (
            f"consumer 'greedy' on stream '{own}': {ATTACK} consumer subjects, more than the "
            "limit of 256 (max_filter_subjects)"
        ) in str(error.details())
        assert seconds < QUICK
    _victim_kept_being_served(before, during)


async def test_a_subject_too_long_for_nats_does_not_cut_everyones_connection(
    tenants: Tenants, channel: grpc.aio.Channel
) -> None:
    # nats-server reads a publish's subject, reply and sizes as one line of at
    # most 4096 bytes, and closes the connection of a client that sends more:
    # serve's one connection, every tenant's.
    stub, state = _stubs(channel)
    start = len(tenants.server.lines)
    for length in (4096, MAX_SUBJECT_LENGTH + 1):
        subject = f"{tenants.attacker_stream}." + "a" * (length - len(tenants.attacker_stream) - 1)
        error, _ = await _refused(
            stub.PublishEvent(
                pb.PublishEventRequest(subject=subject, data=string_any("x")),
                metadata=tenants.attacker,
            )
        )
        assert error.code() == INVALID, error.details()
        assert f"is {length} characters long, longer than NATS can carry" in str(error.details())
    response = await state.Get(
        state_pb.GetRequest(store=tenants.victim_stream, key="cart"), metadata=tenants.victim
    )
    assert response.value == string_any("3 apples")
    assert not [line for line in tenants.server.lines[start:] if "disconnected" in line]

    # The longest subject and key there may be go through, also behind the
    # longest store name: the bounds leave room for the rest of the line.
    longest = f"{tenants.attacker_stream}." + "b" * (
        MAX_SUBJECT_LENGTH - len(tenants.attacker_stream) - 1
    )
    published = await stub.PublishEvent(
        pb.PublishEventRequest(subject=longest, data=string_any("long")), metadata=tenants.attacker
    )
    assert published.id > 0
    store, key = tenants.long_store, "k" * MAX_SUBJECT_LENGTH
    await state.EnsureStore(state_pb.EnsureStoreRequest(store=store), metadata=tenants.attacker)
    await state.Set(
        state_pb.SetRequest(store=store, key=key, value=string_any("deep")),
        metadata=tenants.attacker,
    )
    got = await state.Get(state_pb.GetRequest(store=store, key=key), metadata=tenants.attacker)
    assert got.value == string_any("deep")
    error, _ = await _refused(
        state.EnsureStore(state_pb.EnsureStoreRequest(store=store + "s"), metadata=tenants.attacker)
    )
    assert error.code() == INVALID, error.details()
    assert "253 characters long, longer than NATS allows (252)" in str(error.details())


async def test_the_limits_are_settings_of_serve(start_serve: StartServe, name: str) -> None:
    variables = {
        "WINDSHIFT_MAX_STREAM_SUBJECTS": "300",  # above the default: real streams may need it
        "WINDSHIFT_MAX_STREAM_SOURCES": "1",
        "WINDSHIFT_MAX_FILTER_SUBJECTS": "2",
        "WINDSHIFT_MAX_SUBJECT_LENGTH": "40",
        "WINDSHIFT_MAX_SUBJECT_TOKENS": "3",
    }
    assert Settings.from_env(variables).limits() == windshift.Limits(
        max_stream_subjects=300,
        max_stream_sources=1,
        max_filter_subjects=2,
        max_subject_length=40,
        max_subject_tokens=3,
    )
    server = await start_serve(**variables)
    async with grpc.aio.insecure_channel(server.target) as opened:
        stub, _ = _stubs(opened)
        subjects = [f"{name}.{i}" for i in range(300)]
        await stub.EnsureStream(_subjects(name, subjects))
        other = name + "b"
        refusals = [
            (
                _subjects(name, [*subjects, f"{name}.more"]),
                "301 stream subjects, more than the limit of 300 (max_stream_subjects)",
            ),
            (
                ESR(
                    name=other,
                    aggregate=ESR.StreamSources(sources=[ESR.StreamSource(name=name)] * 2),
                ),
                "2 sources, more than the limit of 1 (max_stream_sources)",
            ),
            (
                _subjects(other, [f"{other}.{'a' * 40}"]),
                "more than the limit of 40 (max_subject_length)",
            ),
            (
                _subjects(other, [f"{other}.a.b.c"]),
                "has 4 tokens, more than the limit of 3 (max_subject_tokens)",
            ),
        ]
        for request, message in refusals:
            error, _ = await _refused(stub.EnsureStream(request))
            assert (error.code(), message in str(error.details())) == (INVALID, True), error
        error, _ = await _refused(
            stub.EnsureConsumer(
                pb.EnsureConsumerRequest(stream=name, subjects=[f"{name}.1", f"{name}.2", "x"])
            )
        )
        assert error.code() == INVALID
        assert "3 consumer subjects, more than the limit of 2 (max_filter_subjects)" in str(
            error.details()
        )


# --- dead letters: pages bounded in bytes ------------------------------------------


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak since the last reset) of a process, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def _reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its VmRSS now (Linux ``clear_refs`` 5); whether it could."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def test_dead_letters_of_900_kb_come_in_pages_within_the_budget(
    tenants: Tenants, channel: grpc.aio.Channel, client: windshift.Client
) -> None:
    stub, _ = _stubs(channel)
    own, dead = tenants.attacker_stream + "x", tenants.attacker_dead
    await stub.EnsureStream(_subjects(own, [f"{own}.>"]), metadata=tenants.attacker)
    try:
        await _page_through_large_dead_letters(tenants, stub, own, dead)
    finally:  # 108 MB of events and letters
        await client.delete_stream(own)
        await client.delete_stream(dead)


async def _page_through_large_dead_letters(
    tenants: Tenants, stub: Stub, own: str, dead: str
) -> None:
    consumer = pb.EnsureConsumerRequest(
        stream=own,
        name="poisoned",
        subjects=[f"{own}.big"],
        processing_timeout=duration(120),
        dead_letter_stream=dead,
    )
    getattr(consumer, "from").start = True
    await stub.EnsureConsumer(consumer, metadata=tenants.attacker)
    count, size = 60, 900_000
    for i in range(count):
        data = AnyProto()
        data.Pack(BytesValue(value=bytes([i]) * size))
        await stub.PublishEvent(
            pb.PublishEventRequest(subject=f"{own}.big", data=data), metadata=tenants.attacker
        )
    start = len(tenants.server.lines)
    call = EventsClient(stub, metadata=tenants.attacker)
    try:
        await call.subscribe(own, "poisoned", max_processing_events=count)
        # A call holds a few MiB at most (WINDSHIFT_EVENTS_MAX_PENDING_BYTES):
        # each rejection lets the next event out.
        for _ in range(count):
            event = await call.next_event(timeout=60)
            assert list((await call.reject(event.id, permanently=True)).ids) == [event.id]
    finally:
        await call.cancel()
    # The call's 54 MB of events are let go of once it has ended.
    await tenants.server.wait_for_line(r"rpc \S+/Events CANCELLED", after=start)

    assert tenants.server.process is not None
    pid = tenants.server.process.pid
    exact_peak = _reset_peak(pid)
    resident = sampled = _memory(pid)["VmRSS"]
    pages: list[pb.ListDeadLettersResponse] = []
    after = 0
    while True:  # with a client's default limits: 4 MiB per message received
        response: pb.ListDeadLettersResponse = await stub.ListDeadLetters(
            pb.ListDeadLettersRequest(dead_letter_stream=dead, after_id=after, limit=1000),
            metadata=tenants.attacker,
        )
        sampled = max(sampled, _memory(pid)["VmRSS"])
        if not response.dead_letters:
            break
        pages.append(response)
        after = response.dead_letters[-1].id
    peak = _memory(pid)["VmHWM"] if exact_peak else sampled
    print(
        f"\n{count} dead letters of {size} bytes: {len(pages)} pages, the largest "
        f"{max(page.ByteSize() for page in pages)} bytes; serve's resident memory "
        f"{resident / 2**20:.0f} MiB before, at most {peak / 2**20:.0f} MiB while paging"
    )
    assert all(page.ByteSize() <= PAGE_BUDGET for page in pages)
    letters = [letter for page in pages for letter in page.dead_letters]
    assert len(letters) == count
    for i, letter in enumerate(letters):
        value = BytesValue()
        assert letter.data.Unpack(value)
        assert value.value == bytes([i]) * size
    # One page at a time: a few budgets' worth, not the 54 MB of them all.
    assert peak - resident < 32 * 2**20
