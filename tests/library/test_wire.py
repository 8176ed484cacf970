"""The on-NATS format: the bytes match what the Go Windshift writes and reads."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta, timezone

import nats
import pytest
from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import Int64Value, StringValue

import windshift
from windshift import EmbeddedNats, StreamPointer
from windshift import _wire as wire
from windshift._acks import header_block as wire_header_block
from windshift.errors import ValidationError


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 3, 1, 12, 34, 56, 123456, tzinfo=UTC), "2026-03-01T12:34:56.123456Z"),
        (datetime(2026, 3, 1, 12, 34, 56, 120000, tzinfo=UTC), "2026-03-01T12:34:56.12Z"),
        (datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC), "2026-03-01T12:34:56Z"),
        (
            datetime(2026, 3, 1, 12, 34, 56, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-03-01T12:34:56.000005+02:00",
        ),
        (
            datetime(2026, 3, 1, 1, 2, 3, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
            "2026-03-01T01:02:03-05:30",
        ),
    ],
)
def test_times_are_written_as_go_rfc3339nano(moment: datetime, text: str) -> None:
    assert wire.format_time(moment) == text


def test_now_is_written_with_nanoseconds_in_utc() -> None:
    text = wire.format_time(None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", text), text
    assert not re.search(r"\.\d*0Z$", text), "trailing zeros must be dropped"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        wire.format_time(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "2026-03-01T12:34:56.123456789+02:00",
            datetime(2026, 3, 1, 10, 34, 56, 123456, tzinfo=UTC),
        ),
        ("2026-03-01T12:34:56Z", datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC)),
        ("2026-03-01T12:34:56.1-01:00", datetime(2026, 3, 1, 13, 34, 56, 100000, tzinfo=UTC)),
    ],
)
def test_times_are_read_with_nine_digits_and_any_offset(text: str, expected: datetime) -> None:
    assert wire.parse_time(text) == expected


async def test_published_event_has_the_go_headers_and_a_bare_body(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    message = StringValue(value="hello")
    published = await client.publish(
        f"{name}.created",
        message,
        idempotency_key="key-1",
        timestamp=datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2))),
    )
    raw = await nats.connect(nats_server.url)
    try:
        stored = await raw.jetstream().get_msg(name, published.id)
    finally:
        await raw.close()
    assert stored.data == message.SerializeToString()
    headers = stored.headers or {}
    assert headers["WS-Data-Type"] == "google.protobuf.StringValue"
    assert headers["WS-Published-Time"] == "2026-03-01T12:00:00.25+02:00"
    assert headers["Nats-Msg-Id"] == "key-1"


async def test_a_timestamp_in_nanoseconds_is_written_with_every_digit(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    exact = 1_772_368_496_000_000_010  # 10 ns past the second: a datetime cannot hold it
    published = await client.publish(f"{name}.n", StringValue(value="x"), timestamp=exact)
    raw = await nats.connect(nats_server.url)
    try:
        stored = await raw.jetstream().get_msg(name, published.id)
    finally:
        await raw.close()
    assert (stored.headers or {})["WS-Published-Time"] == "2026-03-01T12:34:56.00000001Z"
    assert wire.parse_time_ns("2026-03-01T12:34:56.00000001Z") == exact
    with pytest.raises(ValidationError, match="outside the years 1 to 9999"):
        await client.publish(f"{name}.n", StringValue(value="x"), timestamp=10**21)


async def test_any_is_stored_as_its_value_with_the_type_name(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    packed = Any()
    packed.Pack(Int64Value(value=42))
    published = await client.publish(f"{name}.n", packed)
    raw = await nats.connect(nats_server.url)
    try:
        stored = await raw.jetstream().get_msg(name, published.id)
    finally:
        await raw.close()
    assert stored.data == Int64Value(value=42).SerializeToString()
    assert (stored.headers or {})["WS-Data-Type"] == "google.protobuf.Int64Value"


async def test_events_written_the_go_way_are_read(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "reader", start=StreamPointer.start())
    raw = await nats.connect(nats_server.url)
    try:
        ack = await raw.jetstream().publish(
            f"{name}.created",
            StringValue(value="from go").SerializeToString(),
            headers={
                "WS-Data-Type": "google.protobuf.StringValue",
                "WS-Published-Time": "2026-03-01T12:34:56.123456789+02:00",
                "Nats-Msg-Id": "go-1",
            },
        )
    finally:
        await raw.close()
    async with client.subscribe(name, consumer.id) as events:
        event = await anext(events)
        assert event.id == ack.seq
        assert event.timestamp == datetime(2026, 3, 1, 10, 34, 56, 123456, tzinfo=UTC)
        assert event.timestamp.utcoffset() == timedelta(hours=2)
        assert event.data.type_url == "type.googleapis.com/google.protobuf.StringValue"
        assert event.unpack(StringValue).value == "from go"
        assert event.idempotency_key == "go-1"
        await event.ack()


async def test_unreadable_event_is_terminated_not_retried(
    client: windshift.Client,
    nats_server: EmbeddedNats,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "reader", start=StreamPointer.start())
    raw = await nats.connect(nats_server.url)
    try:
        await raw.jetstream().publish(f"{name}.bad", b"no headers at all")
    finally:
        await raw.close()
    good = await client.publish(f"{name}.good", StringValue(value="ok"))
    with caplog.at_level(logging.ERROR, logger="windshift"):
        async with client.subscribe(name, consumer.id) as events:
            event = await anext(events)
            assert event.id == good.id
            await event.ack(confirm=True)
    assert any("terminating event" in r.getMessage() for r in caplog.records)
    info = await client.consumer_info(name, consumer.id)
    assert info.unsettled_events == 0
    assert info.pending_events == 0


async def test_wrong_type_unpack_is_a_clear_error(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, start=StreamPointer.start())
    await client.publish(f"{name}.x", StringValue(value="text"))
    async with client.subscribe(name, consumer.id) as events:
        event = await asyncio.wait_for(anext(events), 10)
        with pytest.raises(ValidationError, match=re.escape("google.protobuf.StringValue")):
            event.unpack(Int64Value)
        await event.ack()


class _RawSubscriber:
    """A NATS protocol client of a few lines: sees each message's bytes as the server relays them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str, subject: str) -> _RawSubscriber:
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        await reader.readline()  # INFO
        writer.write(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
            + f"SUB {subject} 1\r\nPING\r\n".encode()
        )
        while (await reader.readline()) != b"PONG\r\n":
            pass
        return cls(reader, writer)

    async def header_block(self) -> bytes:
        """The header block of the next message (skipping the server's PINGs)."""
        while True:
            line = await asyncio.wait_for(self._reader.readline(), 10)
            if line == b"PING\r\n":
                self._writer.write(b"PONG\r\n")
                continue
            assert line.startswith(b"HMSG "), line
            header_size, total = (int(n) for n in line.split()[-2:])
            message = await self._reader.readexactly(total + 2)
            return message[:header_size]

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def test_the_header_block_is_the_one_nats_py_writes(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    # windshift writes its publishes into nats-py's buffer itself (windshift._acks);
    # the bytes must be those nats-py's own publish would have sent.
    assert client._connection.acks._direct, "the direct send should be on with the nats-py in use"
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    moment = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
    raw_subscriber = await _RawSubscriber.open(nats_server.url, f"{name}.>")
    raw = await nats.connect(nats_server.url)
    try:
        for key in ("key-1", "  spaced key  ", "ünïcode-kéy"):
            await client.publish(
                f"{name}.a", StringValue(value="x"), timestamp=moment, idempotency_key=key
            )
            ours = await raw_subscriber.header_block()
            headers = {
                "WS-Data-Type": "google.protobuf.StringValue",
                "WS-Published-Time": wire.format_time(moment),
                "Nats-Msg-Id": key,
            }
            # With an SDK installed by other tests, the trace context follows.
            lines = ours.decode().split("\r\n")[1:]
            headers |= dict(line.split(": ", 1) for line in lines if line.startswith("WS-Trace-"))
            await raw.publish(f"{name}.b", b"x", headers=headers)
            theirs = await raw_subscriber.header_block()
            assert ours == theirs
            assert ours == wire_header_block(headers)
    finally:
        await raw.close()
        await raw_subscriber.close()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"A": "b"},
        {"A": " padded ", "B": "line\r\nbreak", "C": "only\nnewline", "D": "ünï"},
    ],
)
def test_header_blocks_strip_values_and_turn_line_breaks_into_spaces(
    headers: dict[str, str],
) -> None:
    expected = b"NATS/1.0\r\n"
    for key, value in headers.items():
        cleaned = value.strip().replace("\r", " ").replace("\n", " ")
        expected += f"{key}: {cleaned}\r\n".encode()
    assert wire_header_block(headers) == expected + b"\r\n"


async def test_publishing_without_the_direct_send_gives_the_same_results(
    nats_server: EmbeddedNats, name: str
) -> None:
    # What a nats-py without the internals windshift._acks needs would get.
    async with windshift.connect(nats_server.url) as slow:
        slow._connection.acks._direct = False
        await slow.ensure_stream(name, subjects=[f"{name}.>"], max_event_size=300)
        first = await slow.publish(f"{name}.a", StringValue(value="x"), idempotency_key="k")
        again = await slow.publish(f"{name}.a", StringValue(value="x"), idempotency_key="k")
        assert (first.id, again.id, again.duplicate) == (1, 1, True)
        with pytest.raises(ValidationError, match="size"):
            await slow.publish(f"{name}.a", StringValue(value="x" * 500))
        with pytest.raises(ValidationError, match="larger than the NATS server accepts"):
            await slow.publish(f"{name}.a", StringValue(value="x" * 2_000_000))
        assert (await slow.stream_info(name)).events == 1
