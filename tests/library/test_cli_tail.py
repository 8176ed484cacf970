"""``windshift tail STREAM`` against a real nats-server: what it prints, and that it settles nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from pydantic import BaseModel

import windshift
from tests import _protos
from tests._cli import (
    STOP_TIMEOUT,
    Start,
    run_env,
    run_in_process,
    run_windshift,
    windshift_command,
)
from tests._util import publish_many, take
from windshift import EmbeddedNats, OutgoingEvent, StreamPointer


class Shipment(BaseModel):
    model_config = {"title": "acme.Shipment"}
    id: str
    boxes: int


async def tail_json(nats_server: EmbeddedNats, *args: str) -> list[dict[str, Any]]:
    code, out, err = await run_in_process("tail", *args, "--json", "--server", nats_server.url)
    assert (code, err) == (0, ""), err
    return [json.loads(line) for line in out.splitlines()]


async def test_tail_prints_each_event_with_its_headers_and_data(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    published = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    await client.publish(
        f"{name}.text", StringValue(value="hello"), idempotency_key="k-1", timestamp=published
    )
    await client.publish(f"{name}.json", Shipment(id="s1", boxes=2))
    first, second = await tail_json(nats_server, name)
    stored = await client.get_event(name, 1)
    assert first == {
        "id": 1,
        "subject": f"{name}.text",
        "time": "2026-03-01T12:00:00Z",
        "stored": stored.stored.isoformat().replace("+00:00", "Z"),
        "type": "google.protobuf.StringValue",
        "content_type": None,
        "size": stored.size,
        "idempotency_key": "k-1",
        "delivery_attempts": None,
        "data": "hello",
    }
    assert (second["id"], second["type"], second["content_type"]) == (
        2,
        "acme.Shipment",
        "application/json",
    )
    assert second["data"] == {"id": "s1", "boxes": 2}  # a JSON payload, as JSON
    assert second["idempotency_key"] is None

    code, out, _ = await run_in_process("tail", name, "--server", nats_server.url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(
        f"#1  {name}.text  2026-03-01 12:00:00.000Z  google.protobuf.StringValue"
    )
    assert "key=k-1" in lines[0]
    assert lines[1].strip() == '"hello"'
    assert lines[3].strip() == '{"id": "s1", "boxes": 2}'


async def test_subject_from_and_limit_choose_the_events(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.a", 3)  # ids 1-3
    await publish_many(client, f"{name}.b", 3)  # ids 4-6
    ids = [e["id"] for e in await tail_json(nats_server, name, "--subject", f"{name}.b")]
    assert ids == [4, 5, 6]
    ids = [e["id"] for e in await tail_json(nats_server, name, "--from", "3", "--limit", "2")]
    assert ids == [3, 4]
    fifth = await client.get_event(name, 5)
    at = fifth.stored.astimezone(UTC).isoformat()
    ids = [e["id"] for e in await tail_json(nats_server, name, "--from", at)]
    assert ids == [5, 6]
    ids = [e["id"] for e in await tail_json(nats_server, name, "--from", "1h", "-s", f"{name}.a")]
    assert ids == [1, 2, 3]
    assert await tail_json(nats_server, name, "--from", "end") == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "--from 'yesterday' is not start, end, an event id, a time"),
        ("2026-01-01T00:00:00", "--from '2026-01-01T00:00:00' has no time zone"),
        ("0", "--from '0': event ids start at 1"),
    ],
)
async def test_a_bad_from_exits_2_naming_it(
    nats_server: EmbeddedNats, name: str, value: str, message: str
) -> None:
    code, out, err = await run_in_process(
        "tail", name, "--from", value, "--server", nats_server.url
    )
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith(f"windshift: {message}"), line


async def test_a_missing_stream_exits_3(nats_server: EmbeddedNats, name: str) -> None:
    code, out, err = await run_in_process("tail", name, "--server", nats_server.url)
    assert (code, out) == (3, "")
    assert len(err.splitlines()) == 1 and repr(name) in err, err


async def test_protobuf_data_is_shown_with_a_descriptor_set_and_only_then(
    client: windshift.Client, nats_server: EmbeddedNats, name: str, tmp_path: Path
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    order = _protos.order("o-17", 3)
    await client.publish(f"{name}.orders", order)
    [unknown] = await tail_json(nats_server, name)
    assert (unknown["type"], unknown["data"]) == (_protos.TYPE, None)
    assert base64.b64decode(unknown["data_base64"]) == order.SerializeToString()

    types = _protos.write_descriptor_set(tmp_path / "types.binpb")
    [known] = await tail_json(nats_server, name, "--proto", str(types))
    assert known["data"] == {"id": "o-17", "items": 3}
    assert "data_base64" not in known


async def test_protobuf_data_is_shown_with_a_module_of_generated_code(
    client: windshift.Client, nats_server: EmbeddedNats, name: str, tmp_path: Path
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.publish(f"{name}.orders", _protos.order("o-9", 1))
    _protos.write_module(tmp_path / "shop_pb2.py")
    env = run_env(NATS_URL=nats_server.url)
    for proto in ("shop_pb2", str(tmp_path / "shop_pb2.py")):  # a module name, a file
        code, out, err = await run_windshift(
            "tail", name, "--proto", proto, "--json", cwd=tmp_path, env=env
        )
        assert (code, err) == (0, "")
        assert json.loads(out)["data"] == {"id": "o-9", "items": 1}


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        ("no_such_module", "--proto 'no_such_module' is neither a descriptor set file nor"),
        ("garbage.bin", "--proto 'garbage.bin' is not a protobuf descriptor set"),
        ("json", "--proto 'json' is no module of generated protobuf code"),
    ],
)
async def test_a_bad_proto_exits_2_naming_it(
    nats_server: EmbeddedNats, name: str, tmp_path: Path, proto: str, message: str
) -> None:
    (tmp_path / "garbage.bin").write_bytes(b"\xff\xff\xff not a descriptor set")
    code, out, err = await run_windshift(
        "tail", name, "--proto", proto, cwd=tmp_path, env=run_env(NATS_URL=nats_server.url)
    )
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith(f"windshift: {message}"), line


async def test_consumer_shows_the_stream_as_that_consumer_sees_it_and_settles_nothing(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name, "billing", subjects=[f"{name}.paid"], start=StreamPointer.start()
    )
    for subject in ("paid", "other", "paid", "paid", "paid"):  # billing reads 1, 3, 4, 5
        await client.publish(f"{name}.{subject}", StringValue(value=subject))
    async with client.subscribe(name, "billing", max_pending_events=2) as events:
        first, second = sorted(await take(events, 2), key=lambda event: event.id)
        await first.ack()
        [third] = await take(events, 1)  # in the slot event 1 left
        assert (first.id, second.id, third.id) == (1, 3, 4)
        # 1 settled, 3 and 4 delivered and held (no slot left), 5 pending
        before = await client.consumer_info(name, "billing")
        shown = await tail_json(nats_server, name, "--consumer", "billing")
        from_start = await tail_json(nats_server, name, "-c", "billing", "--from", "start")
        after = await client.consumer_info(name, "billing")
    assert [(e["id"], e["consumer_state"]) for e in shown] == [
        (3, "delivered"),
        (4, "delivered"),
        (5, "pending"),
    ]
    assert [(e["id"], e["consumer_state"]) for e in from_start] == [
        (1, "settled"),
        (3, "delivered"),
        (4, "delivered"),
        (5, "pending"),
    ]
    # The tail moved nothing of the consumer's.
    assert (after.acknowledged_id, after.delivered_id, after.pending_events) == (
        before.acknowledged_id,
        before.delivered_id,
        before.pending_events,
    )
    assert [c.id for c in await client.consumers(name)] == ["billing"]  # its own one is gone


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_follow_prints_new_events_until_sigint_which_exits_130(
    client: windshift.Client, start_windshift: Start, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.publish(f"{name}.a", StringValue(value="before"))
    tail = await start_windshift("tail", name, "--from", "start", "--follow", "--json")
    await tail.wait_for_line(r'"data": "before"', stdout=True)
    await client.publish(f"{name}.a", StringValue(value="after"))
    line = await tail.wait_for_line(r'"data": "after"', stdout=True)
    assert json.loads(line)["id"] == 2
    tail.send(signal.SIGINT)
    assert await tail.exited(timeout=STOP_TIMEOUT) == 130
    assert tail.lines == ["windshift: interrupted"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
async def test_ctrl_c_on_a_terminal_ends_a_waiting_follow_with_130(
    client: windshift.Client, start_windshift: Start, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.publish(f"{name}.a", StringValue(value="one"))
    tail = await start_windshift("tail", name, "--from", "start", "-f", terminal=True)
    await tail.wait_for_line(rf"^#1  {name}\.a  ")
    await tail.wait_for_line(r'^  "one"$')
    started = asyncio.get_running_loop().time()
    tail.ctrl_c()  # while it waits for more
    assert await tail.exited(timeout=STOP_TIMEOUT) == 130
    assert asyncio.get_running_loop().time() - started < 5  # promptly
    assert tail.lines[-1].removeprefix("^C") == "windshift: interrupted"


async def test_limit_ends_a_follow(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.a", 3)
    shown = await tail_json(nats_server, name, "--from", "2", "--follow", "--limit", "2")
    assert [e["id"] for e in shown] == [2, 3]


async def test_a_reader_that_stops_reading_ends_the_tail_quietly_with_0(
    client: windshift.Client, nats_server: EmbeddedNats, name: str, tmp_path: Path
) -> None:
    # As `windshift tail STREAM --follow | head -1`: more output than a pipe holds.
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.publish_many(
        [OutgoingEvent(f"{name}.a", StringValue(value="x" * 500)) for _ in range(500)]
    )
    reading, writing = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            windshift_command(),
            *("tail", name, "--from", "start", "--follow", "--json"),
            cwd=tmp_path,
            env=run_env(NATS_URL=nats_server.url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=writing,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(writing)
    with os.fdopen(reading, "rb") as stdout:
        first = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 30)
    # the reader has gone: the next writes fail
    assert json.loads(first)["id"] == 1
    _, err = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT)
    assert (process.returncode, err) == (0, b"")
