"""Structured logs: a line per stream/consumer change, JSON fields, never payloads or secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests.grpc_fixtures import (
    EventsClient,
    ServeProcess,
    StartServe,
    ensure_stream,
    serve_command,
    serve_env,
    string_any,
)
from windshift import StreamPointer
from windshift._embedded import EmbeddedNats, free_port
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as state_grpc

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )
    from windshift_grpc._proto.windshift.state.v1alpha1.service_pb2_grpc import (
        StateServiceAsyncStub as StateStub,
    )

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _changes(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(logger, message) of the INFO-and-above lines of the library."""
    return [
        (record.name, record.getMessage())
        for record in caplog.records
        if record.name.startswith("windshift.") and record.levelno >= logging.INFO
    ]


async def test_every_stream_and_consumer_change_is_one_line(
    client: windshift.Client, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="windshift")
    dead = f"{name}dead"
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_stream(name, subjects=[f"{name}.>"])  # unchanged: no line
    await client.ensure_stream(name, subjects=[f"{name}.>"], max_events=100)
    await client.ensure_consumer(name, "worker", start=StreamPointer.start())
    await client.ensure_consumer(name, "worker", start=StreamPointer.start())  # unchanged
    await client.ensure_consumer(
        name,
        "worker",
        start=StreamPointer.start(),
        max_delivery_attempts=1,
        dead_letter_stream=dead,
    )
    ephemeral = await client.ensure_consumer(name)
    await client.publish(f"{name}.a", StringValue(value="x"))
    async with client.subscribe(name, "worker") as events:
        event = await anext(events)
        await event.reject(permanently=True, reason="bad\nline")
    queue = client.dead_letters(dead)
    [letter] = await queue.list()
    await queue.replay(letter.id)
    await client.delete_consumer(name, ephemeral.id)
    await client.delete_consumer(name, "worker")
    await queue.purge()
    await client.ensure_store(name)
    await client.ensure_store(name)  # exists: no line
    await client.delete_stream(name)

    assert _changes(caplog) == [
        ("windshift.streams", f"created stream {name}"),
        ("windshift.streams", f"updated stream {name}"),
        ("windshift.consumers", f"created consumer worker on {name}"),
        ("windshift.consumers", f"created dead-letter stream {dead}"),
        ("windshift.consumers", f"updated consumer worker on {name}"),
        ("windshift.consumers", f"created ephemeral consumer {ephemeral.id} on {name}"),
        (
            "windshift.deadletters",
            f"dead-lettered event 1 of {name}/worker into {dead}: bad line",
        ),
        ("windshift.deadletters", f"replayed dead letter 1 of {dead} as event 2 of {name}"),
        ("windshift.consumers", f"deleted consumer {ephemeral.id} on {name}"),
        ("windshift.consumers", f"deleted consumer worker on {name}"),
        ("windshift.deadletters", f"purged 0 dead letters of {dead}"),
        ("windshift.state", f"created state store {name}"),
        ("windshift.streams", f"deleted stream {name}"),
    ]
    # the names also travel as fields (JSON logs show them as they are)
    fields = [
        (getattr(r, "stream", None), getattr(r, "consumer", None))
        for r in caplog.records
        if r.name in ("windshift.streams", "windshift.consumers") and r.levelno >= logging.INFO
    ]
    assert (name, None) in fields
    assert (name, "worker") in fields
    assert (dead, None) in fields


async def test_a_dead_letter_moved_again_says_so(
    client: windshift.Client, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="windshift")
    dead = f"{name}dead"
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name, "worker", start=StreamPointer.start(), dead_letter_stream=dead
    )
    await client.publish(f"{name}.a", StringValue(value="x"))
    async with client.subscribe(name, "worker") as events:
        event = await anext(events)
        await event.reject(permanently=True, reason="no")
        await events.dead_letter(event, "no", event.delivery_attempt)
    moves = [m for logger, m in _changes(caplog) if logger == "windshift.deadletters"]
    assert moves == [
        f"dead-lettered event 1 of {name}/worker into {dead}: no",
        f"dead-lettered event 1 of {name}/worker into {dead} (stored by an earlier try): no",
    ]


@pytest.mark.parametrize("development", ["true", "false"])
async def test_no_payload_key_or_password_reaches_any_line_of_serve(
    start_serve: StartServe,
    client: windshift.Client,
    nats_server: EmbeddedNats,
    name: str,
    development: str,
) -> None:
    secret = "Sekr1t-marker-7c1f"
    dead = f"{name}dead"
    url = nats_server.url.replace("nats://", f"nats://someone:{secret}pw@")
    server = await start_serve(NATS_URL=url, DEVELOPMENT=development)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        state: StateStub = state_grpc.StateServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        await client.ensure_consumer(
            name,
            "worker",
            start=StreamPointer.start(),
            max_delivery_attempts=2,
            dead_letter_stream=dead,
        )
        for i in range(3):
            await stub.PublishEvent(
                pb.PublishEventRequest(
                    subject=f"{name}.a",
                    data=string_any(f"{secret}-payload-{i}"),
                    idempotency_key=f"{secret}-key-{i}",
                )
            )
        with pytest.raises(grpc.aio.AioRpcError):  # an error answer carries no payload either
            await stub.PublishEvent(
                pb.PublishEventRequest(subject=f"{name}nostream.a", data=string_any(secret))
            )
        call = EventsClient(stub)
        try:
            await call.subscribe(name, "worker")
            first, second, third = await call.events(3)
            await call.ack(first.id)
            await call.reject(second.id, permanently=True)  # dead-lettered
            await call.reject(third.id)
            redelivered = await call.next_event()
            await call.reject(redelivered.id)  # out of attempts: dead-lettered
        finally:
            await call.cancel()
        await state.EnsureStore(state_pb.EnsureStoreRequest(store=name))
        await state.Set(
            state_pb.SetRequest(store=name, key="k", value=string_any(f"{secret}-state"))
        )
    await server.wait_for_lines("dead-lettered event", 2)
    assert await server.signal(signal.SIGTERM) == 0

    everything = "\n".join([*server.lines, *server.stdout])
    assert secret not in everything
    assert "PublishEvent OK" in everything
    assert f"created state store {name}" in everything
    if development == "false":
        for line in server.lines:
            json.loads(line)


async def test_json_lines_carry_fields_and_the_callers_trace(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(DEVELOPMENT="false")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await stub.EnsureStream(
            pb.EnsureStreamRequest(
                name=name, subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{name}.>"])
            ),
            metadata=[("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")],
        )
    rpc = json.loads(await server.wait_for_line("EnsureStream OK"))
    assert rpc["logger"] == "windshift_grpc.rpc"
    assert rpc["level"] == "info"
    assert rpc["method"] == "/windshift.events.v1alpha1.EventsService/EnsureStream"
    assert rpc["code"] == "OK"
    assert isinstance(rpc["duration_ms"], float)
    assert rpc["trace_id"] == TRACE_ID
    created = json.loads(await server.wait_for_line(f"created stream {name}"))
    assert created["logger"] == "windshift.streams"
    assert created["stream"] == name
    # written while the call's span was current: the same trace
    assert created["trace_id"] == TRACE_ID
    assert set(created) >= {"time", "level", "logger", "message"}


async def _ok_then_not_found(server: ServeProcess, name: str) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.DeleteConsumer(pb.DeleteConsumerRequest(stream=name, id="missing"))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("development", ["false", "true"])
async def test_by_default_only_calls_that_fail_get_a_line_at_info(
    start_serve: StartServe, name: str, development: str
) -> None:
    # As the Go original: a call that ends OK is logged at DEBUG (shown in
    # development), one that fails at INFO or above. The lines come in the
    # order the calls end, so the OK call's would come before the other's.
    server = await start_serve(DEVELOPMENT=development, WINDSHIFT_RPC_LOG=None)
    await _ok_then_not_found(server, name)
    await server.wait_for_line("DeleteConsumer NOT_FOUND")
    ok = [line for line in server.lines if "EnsureStream OK" in line]
    if development == "false":
        assert ok == []
        failed = json.loads(
            next(line for line in server.lines if "DeleteConsumer NOT_FOUND" in line)
        )
        assert failed["level"] == "info"
    else:
        assert len(ok) == 1 and "DEBUG" in ok[0], ok


async def test_with_rpc_log_calls_every_call_gets_a_line_at_info(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(DEVELOPMENT="false", WINDSHIFT_RPC_LOG="calls")
    await _ok_then_not_found(server, name)
    await server.wait_for_line("DeleteConsumer NOT_FOUND")
    [ok] = [json.loads(line) for line in server.lines if "EnsureStream OK" in line]
    assert ok["level"] == "info"


async def test_serve_that_cannot_reach_nats_does_not_log_the_password() -> None:
    env = serve_env(f"nats://someone:Sekr1t-pw@127.0.0.1:{free_port()}")
    process = await asyncio.create_subprocess_exec(
        *serve_command(),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert "cannot connect to NATS at nats://***@127.0.0.1" in err.decode()
    assert "Sekr1t" not in out.decode() + err.decode()
