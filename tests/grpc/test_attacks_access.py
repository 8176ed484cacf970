"""Attacks on who may reach what, each performed against a real ``windshift-grpc serve``.

Every test plays an attacker who holds a valid token (or, for the embedded
NATS, only a shell on the machine) and tries to get past its permissions:

- reach the embedded nats-server directly, with no credentials;
- republish events through ReplayDeadLetter without the publish permission
  (a mirror of someone's stream, a dead letter of that mirror);
- read, copy, break or purge a state store's bucket (``KV_<store>``) through
  stream permissions, or have a stream collect NATS' own subjects;
- claim another team's subjects with a stream of one's own;
- create streams and consumers without bound;
- use a tokens file others may read.

Each asserts the refusal and that nothing happened behind it; docs/security.md
says which rule stops which attack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import stat
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import nats
import nats.errors
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client as NATS

import windshift
from tests.grpc_fixtures import (
    EventsClient,
    ServeProcess,
    StartServe,
    run_command,
    serve_command,
    serve_env,
    string_any,
)
from windshift import EmbeddedNats, StreamPointer
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as state_grpc
from windshift_grpc.auth import Permission, digest, hashed

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )
    from windshift_grpc._proto.windshift.state.v1alpha1.service_pb2_grpc import (
        StateServiceAsyncStub as StateStub,
    )

OK = grpc.StatusCode.OK
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SECRET = "hunter2-the-secret"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def write_tokens(path: Path, entries: list[dict[str, Any]], mode: int = 0o600) -> Path:
    path.write_text(json.dumps({"tokens": entries}))
    path.chmod(mode)
    return path


def everything(token: str) -> dict[str, Any]:
    return {"name": "admin", "token": token, **{p.value: [">"] for p in Permission}}


def subjects(*filters: str) -> pb.EnsureStreamRequest.Subjects:
    return pb.EnsureStreamRequest.Subjects(subjects=list(filters))


def source(name: str) -> pb.EnsureStreamRequest.StreamSource:
    return pb.EnsureStreamRequest.StreamSource(name=name)


def secret_value() -> AnyProto:
    data = AnyProto()
    data.Pack(StringValue(value=SECRET))
    return data


async def outcome(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as failure:
        return failure.code(), failure.details() or ""
    return OK, ""


# --- 1. the embedded NATS -------------------------------------------------------


async def _raw_connect(url: str, **credentials: str) -> NATS:
    async def quiet(exc: Exception) -> None:
        pass  # the refusal is what the test looks at

    return await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=2,
        error_cb=quiet,
        **credentials,
    )


@pytest.mark.parametrize("with_tokens", [True, False], ids=["tokens-file", "open-api"])
async def test_the_embedded_nats_lets_in_only_serve(
    start_serve: StartServe, tmp_path: Path, with_tokens: bool
) -> None:
    admin = new_token()
    data = tmp_path / "data"
    env: dict[str, str | None] = {"NATS_URL": None, "WINDSHIFT_DATA_DIR": str(data)}
    if with_tokens:
        env["WINDSHIFT_AUTH_FILE"] = str(write_tokens(tmp_path / "t.json", [everything(admin)]))
    else:
        env["WINDSHIFT_AUTH"] = None  # open because the NATS is embedded: still, NATS is not
    server = await start_serve(**env)
    found = re.search(r"nats://[\d.]+:\d+", await server.wait_for_line("embedded NATS"))
    assert found is not None
    url = found.group(0)
    store = f"s{os.getpid()}"
    async with grpc.aio.insecure_channel(server.target) as channel:
        state: StateStub = state_grpc.StateServiceStub(channel)  # type: ignore[assignment]
        md = metadata(admin) if with_tokens else None
        await state.EnsureStore(state_pb.EnsureStoreRequest(store=store), metadata=md)
        await state.Set(
            state_pb.SetRequest(store=store, key="pw", value=secret_value()), metadata=md
        )

    # A local user without the credentials: no connection, so no stream
    # listing, no DIRECT.GET, no publish, no delete.
    auth = json.loads((data / EmbeddedNats.AUTH_FILE).read_text())
    for credentials in ({}, {"user": auth["user"], "password": "guessed"}, {"token": "x"}):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await _raw_connect(url, **credentials)

    # serve's credentials, from the file only its owner may read, do work.
    raw = await _raw_connect(url, user=auth["user"], password=auth["password"])
    try:
        names = json.loads((await raw.request("$JS.API.STREAM.NAMES", b"{}")).data)
        assert f"KV_{store}" in names["streams"]
        value = await raw.request(f"$JS.API.DIRECT.GET.KV_{store}.$KV.{store}.pw", b"")
        assert SECRET.encode() in value.data
    finally:
        await raw.close()

    for name in (EmbeddedNats.AUTH_FILE, "nats-server.conf", "nats-server.log"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert auth["password"] in (data / "nats-server.conf").read_text()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert auth["password"] not in server.log


# --- a server with tokens for the attackers ---------------------------------------


@dataclass
class Fortress:
    """A serve process requiring tokens; the attackers' tokens and the names they aim at."""

    server: ServeProcess
    admin: str
    owner: str  # the victim team: its streams victim, victim2 (subjects <name>.>) and claimed
    mirrorer: str  # consume on the victims; its own mine, mine2 and mine2dead
    wild: str  # consume and manage "*", publish on its own subjects only, no state
    quota: str  # max 2 streams, 2 consumers, among q1..q3
    single: str  # max 1 stream, among b1..b5
    victim: str
    victim2: str
    claimed: str
    mine: str
    mine2: str
    wilds: str  # wild's own stream name (its subjects: <wilds>.own.>)
    store: str
    q: list[str]
    b: list[str]


@pytest.fixture(scope="module")
async def fortress(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fortress]:
    p = f"atk{os.getpid()}"
    victim, victim2, claimed, store = f"{p}victim", f"{p}victimb", f"{p}claimed", f"{p}store"
    mine, mine2, wilds = f"{p}mine", f"{p}mineb", f"{p}wild"
    q = [f"{p}q{i}" for i in range(1, 4)]
    b = [f"{p}b{i}" for i in range(1, 6)]
    admin, owner, mirrorer, wild, quota, single = (new_token() for _ in range(6))
    path = write_tokens(
        tmp_path_factory.mktemp("attacks") / "tokens.json",
        [
            everything(admin),
            {
                "name": "owner",
                "token": hashed(owner),
                "publish": [f"{victim}.>", f"{victim2}.>", f"{claimed}.>"],
                "consume": [victim, victim2, claimed],
                "manage": [victim, victim2, claimed],
            },
            {
                "name": "mirrorer",
                "token": mirrorer,
                "publish": [f"{mine2}dead.>"],
                "consume": [victim, victim2, mine, mine2, f"{mine2}dead"],
                "manage": [mine, mine2, f"{mine2}dead"],
            },
            {
                "name": "wild",
                "token": wild,
                "publish": [f"{wilds}.>", f"{wilds}dead.>"],
                "consume": ["*"],
                "manage": ["*"],
            },
            {
                "name": "quota",
                "token": quota,
                "publish": [f"{name}.>" for name in q],
                "manage": q,
                "max_streams": 2,
                "max_consumers": 2,
            },
            {
                "name": "single",
                "token": single,
                "publish": [f"{name}.>" for name in b],
                "manage": b,
                "max_streams": 1,
            },
        ],
    )
    server = ServeProcess(serve_env(nats_server.url, WINDSHIFT_AUTH_FILE=str(path)))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            state: StateStub = state_grpc.StateServiceStub(channel)  # type: ignore[assignment]
            await state.EnsureStore(
                state_pb.EnsureStoreRequest(store=store), metadata=metadata(admin)
            )
            await state.Set(
                state_pb.SetRequest(store=store, key="pw", value=secret_value()),
                metadata=metadata(admin),
            )
        yield Fortress(
            server, admin, owner, mirrorer, wild, quota, single,
            victim, victim2, claimed, mine, mine2, wilds, store, q, b,
        )  # fmt: skip
    finally:
        await server.stop()


@pytest.fixture
async def stub(fortress: Fortress) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(fortress.server.target) as channel:
        yield pb_grpc.EventsServiceStub(channel)  # type: ignore[misc]


@pytest.fixture
async def state(fortress: Fortress) -> AsyncIterator[StateStub]:
    async with grpc.aio.insecure_channel(fortress.server.target) as channel:
        yield state_grpc.StateServiceStub(channel)  # type: ignore[misc]


async def _mirrored_victim(
    fortress: Fortress, stub: Stub, client: windshift.Client, victim: str, mirror: str
) -> None:
    """The owner's stream ``victim`` with one event, which mirrorer's ``mirror`` copied."""
    as_owner = metadata(fortress.owner)
    await stub.EnsureStream(
        pb.EnsureStreamRequest(name=victim, subjects=subjects(f"{victim}.>")), metadata=as_owner
    )
    await stub.PublishEvent(
        pb.PublishEventRequest(subject=f"{victim}.paid", data=string_any("pay 100")),
        metadata=as_owner,
    )
    # Allowed: the mirrorer may consume the victim's events anyway.
    request = pb.EnsureStreamRequest(name=mirror, mirror=source(victim))
    assert (await outcome(stub.EnsureStream(request, metadata=metadata(fortress.mirrorer)))) == (
        OK,
        "",
    )
    await _arrived(client, mirror, 1)


async def _arrived(client: windshift.Client, stream: str, count: int) -> None:
    """Wait until ``stream`` (a mirror, filled in the background) holds ``count`` events."""
    consumer = await client.ensure_consumer(stream, start=StreamPointer.start())
    async with client.subscribe(stream, consumer.id) as events:
        for _ in range(count):
            await asyncio.wait_for(anext(events), 10)


# --- 2. republishing through ReplayDeadLetter -----------------------------------


async def test_replaying_a_mirrored_event_is_refused(
    fortress: Fortress, stub: Stub, client: windshift.Client
) -> None:
    await _mirrored_victim(fortress, stub, client, fortress.victim, fortress.mine)
    as_mirrorer = metadata(fortress.mirrorer)
    code, details = await outcome(
        stub.ReplayDeadLetter(
            pb.ReplayDeadLetterRequest(dead_letter_stream=fortress.mine, id=1),
            metadata=as_mirrorer,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == (
        f"message 1 of {fortress.mine!r} is not a dead letter: it carries no WS-Dead-Subject header"
    )
    assert (await client.stream_info(fortress.victim)).events == 1  # nothing republished


async def test_replaying_a_dead_letter_needs_publish_on_its_subject(
    fortress: Fortress, stub: Stub, client: windshift.Client
) -> None:
    # The mirrorer turns the victim's event into a real dead letter of its own ...
    victim, mine = fortress.victim2, fortress.mine2
    await _mirrored_victim(fortress, stub, client, victim, mine)
    as_mirrorer = metadata(fortress.mirrorer)
    dead = f"{mine}dead"
    consumer = pb.EnsureConsumerRequest(
        stream=mine, name="c", subjects=[f"{victim}.>"], dead_letter_stream=dead
    )
    getattr(consumer, "from").start = True
    assert (await outcome(stub.EnsureConsumer(consumer, metadata=as_mirrorer)))[0] == OK
    call = EventsClient(stub, as_mirrorer)
    try:
        await call.subscribe(mine, "c")
        event = await call.next_event()
        assert list((await call.reject(event.id, permanently=True)).ids) == [event.id]
    finally:
        await call.cancel()
    listed: pb.ListDeadLettersResponse = await stub.ListDeadLetters(
        pb.ListDeadLettersRequest(dead_letter_stream=dead), metadata=as_mirrorer
    )
    [letter] = listed.dead_letters
    assert letter.subject == f"{victim}.paid"

    # ... and may not send it into the victim's stream: that is publishing there.
    replay = pb.ReplayDeadLetterRequest(dead_letter_stream=dead, id=letter.id)
    code, details = await outcome(stub.ReplayDeadLetter(replay, metadata=as_mirrorer))
    assert code == PERMISSION_DENIED
    assert details == f"token 'mirrorer' may not publish on subject '{victim}.paid'"
    assert (await client.stream_info(victim)).events == 1
    assert [kept.id for kept in (await client.dead_letters(dead).list())] == [letter.id]

    # Someone who may publish there replays it.
    assert (await outcome(stub.ReplayDeadLetter(replay, metadata=metadata(fortress.admin))))[
        0
    ] == OK
    assert (await client.stream_info(victim)).events == 2


# --- 3. state buckets and NATS' subjects through stream permissions -----------------


def _kv(fortress: Fortress) -> str:
    return f"KV_{fortress.store}"


StreamAttack = Callable[["Stub", Fortress, list[tuple[str, str]]], Awaitable[Any]]

# Every RPC that names a stream, aimed at the bucket of a state store.
KV_ATTACKS: dict[str, StreamAttack] = {
    "GetDeadLetter": lambda s, f, md: s.GetDeadLetter(
        pb.GetDeadLetterRequest(dead_letter_stream=_kv(f), id=1), metadata=md
    ),
    "ListDeadLetters": lambda s, f, md: s.ListDeadLetters(
        pb.ListDeadLettersRequest(dead_letter_stream=_kv(f)), metadata=md
    ),
    "ReplayDeadLetter": lambda s, f, md: s.ReplayDeadLetter(
        pb.ReplayDeadLetterRequest(dead_letter_stream=_kv(f), id=1), metadata=md
    ),
    "DeleteDeadLetter": lambda s, f, md: s.DeleteDeadLetter(
        pb.DeleteDeadLetterRequest(dead_letter_stream=_kv(f), id=1), metadata=md
    ),
    "PurgeDeadLetters": lambda s, f, md: s.PurgeDeadLetters(
        pb.PurgeDeadLettersRequest(dead_letter_stream=_kv(f)), metadata=md
    ),
    "EnsureConsumer": lambda s, f, md: s.EnsureConsumer(
        pb.EnsureConsumerRequest(stream=_kv(f), name="spy"), metadata=md
    ),
    "EnsureConsumer-dead_letter_stream": lambda s, f, md: s.EnsureConsumer(
        pb.EnsureConsumerRequest(stream=f.wilds, name="spy", dead_letter_stream=_kv(f)),
        metadata=md,
    ),
    "DeleteConsumer": lambda s, f, md: s.DeleteConsumer(
        pb.DeleteConsumerRequest(stream=_kv(f), id="spy"), metadata=md
    ),
    "EnsureStream-name": lambda s, f, md: s.EnsureStream(
        pb.EnsureStreamRequest(name=_kv(f), subjects=subjects(f"{f.wilds}.kv.>")), metadata=md
    ),
    "EnsureStream-mirror": lambda s, f, md: s.EnsureStream(
        pb.EnsureStreamRequest(name=f"{f.wilds}spy", mirror=source(_kv(f))), metadata=md
    ),
    "EnsureStream-sources": lambda s, f, md: s.EnsureStream(
        pb.EnsureStreamRequest(
            name=f"{f.wilds}spy",
            aggregate=pb.EnsureStreamRequest.StreamSources(
                sources=[source(f.wilds), source(_kv(f))]
            ),
        ),
        metadata=md,
    ),
    "EnsureStream-object-store": lambda s, f, md: s.EnsureStream(
        pb.EnsureStreamRequest(name=f"OBJ_{f.store}", subjects=subjects(f"{f.wilds}.o.>")),
        metadata=md,
    ),
}


@pytest.fixture
async def wild_stream(fortress: Fortress, stub: Stub) -> str:
    """wild's own stream (what it may rightly manage)."""
    await stub.EnsureStream(
        pb.EnsureStreamRequest(name=fortress.wilds, subjects=subjects(f"{fortress.wilds}.own.>")),
        metadata=metadata(fortress.wild),
    )
    return fortress.wilds


@pytest.mark.parametrize("attack", sorted(KV_ATTACKS))
@pytest.mark.parametrize("who", ["wild", "admin"])
async def test_no_stream_permission_reaches_a_state_store(
    fortress: Fortress,
    stub: Stub,
    state: StateStub,
    client: windshift.Client,
    wild_stream: str,
    attack: str,
    who: str,
) -> None:
    kv = _kv(fortress)
    before = await client.stream_info(kv)
    code, details = await outcome(
        KV_ATTACKS[attack](stub, fortress, metadata(getattr(fortress, who)))
    )
    assert code == PERMISSION_DENIED, details
    assert "may not" in details and ("'KV_" in details or "'OBJ_" in details)
    assert "only read_state and write_state reach it" in details
    # Nothing changed behind the refusal, and the store works.
    after = await client.stream_info(kv)
    assert (after.subjects, after.events, after.consumers) == (
        before.subjects,
        before.events,
        before.consumers,
    )
    got: state_pb.GetResponse = await state.Get(
        state_pb.GetRequest(store=fortress.store, key="pw"), metadata=metadata(fortress.admin)
    )
    assert SECRET.encode() in got.value.value
    with pytest.raises(windshift.StreamNotFoundError):
        await client.stream_info(f"OBJ_{fortress.store}")


async def test_no_events_call_reaches_a_state_store(fortress: Fortress, stub: Stub) -> None:
    for token in (fortress.wild, fortress.admin):
        call = EventsClient(stub, metadata(token))
        call.send(
            pb.EventsRequest(
                subscribe=pb.EventsRequest.Subscribe(stream=_kv(fortress), consumer="x")
            )
        )
        assert await call.finish() == PERMISSION_DENIED
        assert "only read_state and write_state reach it" in await call.details()
        assert call.responses == []


@pytest.mark.parametrize("subject_filter", ["_INBOX.>", "_INBOX.*.*", ">", "*.created", "$KV.>"])
@pytest.mark.parametrize("who", ["wild", "admin"])
async def test_no_stream_collects_the_subjects_of_nats(
    fortress: Fortress, stub: Stub, client: windshift.Client, subject_filter: str, who: str
) -> None:
    # A stream on _INBOX.> would store every reply NATS sends serve: JetStream's
    # answers, the values of state stores, the events handed to consumers.
    name = f"{fortress.wilds}inbox"
    request = pb.EnsureStreamRequest(
        name=name, subjects=subjects(f"{fortress.wilds}.x", subject_filter)
    )
    code, details = await outcome(
        stub.EnsureStream(request, metadata=metadata(getattr(fortress, who)))
    )
    assert code == PERMISSION_DENIED, details
    assert details.startswith(f"token {who!r} may not publish on")
    with pytest.raises(windshift.StreamNotFoundError):
        await client.stream_info(name)
    published = pb.PublishEventRequest(subject="_INBOX.abc.def", data=string_any("fake reply"))
    assert (await outcome(stub.PublishEvent(published, metadata=metadata(fortress.admin))))[
        0
    ] == PERMISSION_DENIED


# --- 4. claiming other teams' subjects ------------------------------------------


async def test_a_stream_may_collect_only_subjects_the_token_may_publish_on(
    fortress: Fortress, stub: Stub, client: windshift.Client
) -> None:
    as_wild = metadata(fortress.wild)
    grab = f"{fortress.wilds}grab"
    for filters in ([f"{fortress.claimed}.>"], [f"{fortress.wilds}.g", f"{fortress.claimed}.x"]):
        request = pb.EnsureStreamRequest(name=grab, subjects=subjects(*filters))
        code, details = await outcome(stub.EnsureStream(request, metadata=as_wild))
        assert code == PERMISSION_DENIED
        assert f"'{fortress.claimed}." in details and details.startswith("token 'wild' may not")
    with pytest.raises(windshift.StreamNotFoundError):
        await client.stream_info(grab)
    # Its dead-letter stream would collect <name>.>: the same claim, the same rule.
    consumer = pb.EnsureConsumerRequest(
        stream=fortress.wilds, name="grabber", dead_letter_stream=fortress.claimed
    )
    await stub.EnsureStream(
        pb.EnsureStreamRequest(name=fortress.wilds, subjects=subjects(f"{fortress.wilds}.own.>")),
        metadata=as_wild,
    )
    code, details = await outcome(stub.EnsureConsumer(consumer, metadata=as_wild))
    assert code == PERMISSION_DENIED
    assert details == (
        f"token 'wild' may not publish on every subject of '{fortress.claimed}.>' (a stream "
        "collecting them needs a publish pattern that covers them all)"
    )
    with pytest.raises(windshift.StreamNotFoundError):
        await client.stream_info(fortress.claimed)

    # The rightful owner's stream is still its to create, and holds its events.
    as_owner = metadata(fortress.owner)
    owned = pb.EnsureStreamRequest(
        name=fortress.claimed, subjects=subjects(f"{fortress.claimed}.>")
    )
    assert (await outcome(stub.EnsureStream(owned, metadata=as_owner)))[0] == OK
    await stub.PublishEvent(
        pb.PublishEventRequest(subject=f"{fortress.claimed}.x", data=string_any("mine")),
        metadata=as_owner,
    )
    assert (await client.stream_info(fortress.claimed)).events == 1


async def test_a_stream_on_covered_subjects_is_allowed(
    fortress: Fortress, stub: Stub, client: windshift.Client
) -> None:
    as_wild = metadata(fortress.wild)
    name = f"{fortress.wilds}narrow"
    covered = [f"{fortress.wilds}narrow.*.created", f"{fortress.wilds}narrow.audit"]
    # publish ["<wilds>.>"] does not cover "<wilds>narrow...": another first token
    request = pb.EnsureStreamRequest(name=name, subjects=subjects(*covered))
    assert (await outcome(stub.EnsureStream(request, metadata=as_wild)))[0] == PERMISSION_DENIED
    covered = [f"{fortress.wilds}.narrow.*.created", f"{fortress.wilds}.narrow.audit"]
    request = pb.EnsureStreamRequest(name=name, subjects=subjects(*covered))
    assert (await outcome(stub.EnsureStream(request, metadata=as_wild))) == (OK, "")
    assert (await client.stream_info(name)).subjects == covered
    consumer = pb.EnsureConsumerRequest(
        stream=name, name="c", subjects=covered[1:], dead_letter_stream=f"{fortress.wilds}dead"
    )
    assert (await outcome(stub.EnsureConsumer(consumer, metadata=as_wild))) == (OK, "")


# --- 5c. quotas -------------------------------------------------------------------


async def test_a_token_may_not_create_more_streams_or_consumers_than_its_quota(
    fortress: Fortress, stub: Stub, client: windshift.Client
) -> None:
    as_quota = metadata(fortress.quota)
    q1, q2, q3 = fortress.q

    def stream(name: str, **options: Any) -> Awaitable[Any]:
        request = pb.EnsureStreamRequest(name=name, subjects=subjects(f"{name}.>"), **options)
        call: Awaitable[Any] = stub.EnsureStream(request, metadata=as_quota)
        return call

    def consumer(stream: str, name: str | None, dead: str = "") -> Awaitable[Any]:
        request = pb.EnsureConsumerRequest(stream=stream, subjects=[f"{stream}.>"])
        if dead:
            request.dead_letter_stream = dead
        if name is not None:
            request.name = name
        call: Awaitable[Any] = stub.EnsureConsumer(request, metadata=as_quota)
        return call

    assert (await outcome(stream(q1)))[0] == OK
    assert (await outcome(stream(q2)))[0] == OK
    code, details = await outcome(stream(q3))
    assert code == RESOURCE_EXHAUSTED
    assert details == (
        f"token 'quota' may have at most 2 streams (max_streams) and its manage patterns "
        f"match 2: EnsureStream would create {q3!r}"
    )
    with pytest.raises(windshift.StreamNotFoundError):
        await client.stream_info(q3)
    # Changing a stream it has is no new one.
    assert (await outcome(stream(q1, max_event_size=1024)))[0] == OK

    assert await outcome(consumer(q1, "one")) == (OK, "")
    assert await outcome(consumer(q2, "two")) == (OK, "")
    for name in ("three", None):  # a durable one, an ephemeral one
        code, details = await outcome(consumer(q1, name))
        assert code == RESOURCE_EXHAUSTED
        assert "at most 2 consumers (max_consumers)" in details and "they have 2" in details
    assert (await client.stream_info(q1)).consumers == 1
    assert (await outcome(consumer(q1, "one")))[0] == OK  # an update
    # A dead-letter stream the call would create is a stream too.
    code, details = await outcome(consumer(q1, "one", dead=q3))
    assert code == RESOURCE_EXHAUSTED and "EnsureConsumer would create" in details
    await fortress.server.wait_for_line("EnsureStream refused: token 'quota' may have at most 2")


async def test_calls_at_once_do_not_slip_past_a_quota(
    fortress: Fortress, stub: Stub, client: windshift.Client
) -> None:
    as_single = metadata(fortress.single)
    codes = await asyncio.gather(
        *(
            outcome(
                stub.EnsureStream(
                    pb.EnsureStreamRequest(name=name, subjects=subjects(f"{name}.>")),
                    metadata=as_single,
                )
            )
            for name in fortress.b
        )
    )
    assert Counter(code for code, _ in codes) == Counter({OK: 1, RESOURCE_EXHAUSTED: 4})
    existing = []
    for name in fortress.b:
        with contextlib.suppress(windshift.StreamNotFoundError):
            existing.append((await client.stream_info(name)).name)
    assert len(existing) == 1


# --- 5. the tokens file on disk ---------------------------------------------------


async def test_plain_tokens_in_a_file_others_may_read_stop_serve(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    token = new_token()
    path = write_tokens(tmp_path / "t.json", [{"name": "ci", "token": token}], mode=0o644)
    env = serve_env(nats_server.url, WINDSHIFT_AUTH_FILE=str(path))
    code, out, err = await run_command(*serve_command(), env=env)
    assert code == 2
    assert err.strip().splitlines() == [
        f"windshift-grpc: invalid WINDSHIFT_AUTH_FILE: {str(path)!r} (mode 0644) holds tokens "
        "as themselves (token 'ci') and other users may access it: chmod 600 it, or store "
        "the tokens hashed (windshift-grpc token)"
    ]
    assert token not in err + out


async def test_hashed_tokens_in_a_file_others_may_read_are_warned_about(
    start_serve: StartServe, tmp_path: Path
) -> None:
    token, old = new_token(), new_token()
    path = write_tokens(
        tmp_path / "t.json",
        [
            {"name": "ci", "token": hashed(token), "manage": [">"]},
            {"name": "old", "token": "sha256:" + digest(old).hex()},
        ],
        mode=0o644,
    )
    server = await start_serve(WINDSHIFT_AUTH_FILE=str(path))
    warning = await server.wait_for_line("may be read by other users")
    assert "chmod 600" in warning and json.loads(warning)["level"] == "warning"
    deprecated = await server.wait_for_line("unsalted sha256")
    assert "'old'" in deprecated and json.loads(deprecated)["level"] == "warning"
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        for presented in (token, old):
            code, _ = await outcome(
                stub.DeleteConsumer(
                    pb.DeleteConsumerRequest(stream="nowhere", id="x"), metadata=metadata(presented)
                )
            )
            assert code in (PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)  # authenticated
    assert token not in server.log and old not in server.log
