"""The readers on the path of every event give exactly what the general ones give.

Each fast path is checked against the general code it stands in for, on
generated inputs that mix the usual form with every odd byte the general
code treats specially.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsPyClient

from windshift import EmbeddedNats
from windshift import _wire as wire
from windshift._logging import time_text
from windshift._nats_client import NatsClient, parse_header_lines

_HEADER_PIECES = st.sampled_from(
    [
        b"WS-Data-Type",
        b"Nats-Msg-Id",
        b"a",
        b":",
        b": ",
        b" ",
        b"\t",
        b"\r\n",
        b"\r",
        b"\n",
        b"\x0b",
        b"\x0c",
        b"\x1c",
        b"\x1f",
        b"\x00",
        b"\x7f",
        b"\xc3\xa9",
        b"\xc2\x85",
        b"\xff",
        b"value with spaces",
        b"X: y\r\n",
    ]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_HEADER_PIECES, max_size=30).map(b"".join))
def test_header_lines_are_read_as_nats_py_reads_them(raw: bytes) -> None:
    assert parse_header_lines(raw) == NatsPyClient._parse_header_lines(raw)


def test_windshift_headers_are_read_as_nats_py_reads_them() -> None:
    raw = (
        b"WS-Data-Type: google.protobuf.StringValue\r\n"
        b"WS-Published-Time: 2026-12-07T09:20:00.123456789Z\r\n"
        b"Nats-Msg-Id: order-7\r\n"
        b"WS-Trace-Parent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
    )
    assert parse_header_lines(raw) == NatsPyClient._parse_header_lines(raw)
    assert parse_header_lines(raw)["Nats-Msg-Id"] == "order-7"


class _Counting(NatsClient):
    calls: ClassVar[int] = 0

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        _Counting.calls += 1
        return parse_header_lines(raw)


async def test_nats_py_reads_headers_through_the_method_windshift_replaces(
    nats_server: EmbeddedNats,
) -> None:
    # Should a nats-py release stop calling it, windshift would silently be
    # back on the slower reader: this says so.
    nc = _Counting()
    await nc.connect(nats_server.url)
    try:
        received: asyncio.Future[dict[str, str] | None] = asyncio.get_running_loop().create_future()

        async def on_message(msg: object) -> None:
            received.set_result(getattr(msg, "headers", None))

        await nc.subscribe("fast.headers", cb=on_message)
        await nc.publish("fast.headers", b"x", headers={"WS-Data-Type": "t", "A": "b"})
        assert await asyncio.wait_for(received, 10) == {"WS-Data-Type": "t", "A": "b"}
        assert _Counting.calls >= 1
    finally:
        await nc.close()


def _general_ns(text: str) -> int | str:
    try:
        moment, nanos = wire._parse(text)
    except ValueError:
        return "refused"
    since = moment - wire._EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000_000 + nanos


def _fast_ns(text: str) -> int | str:
    try:
        return wire.parse_time_ns(text)
    except ValueError:
        return "refused"


_TIME_PIECES = st.sampled_from(
    [
        *("2026", "0001", "9999", "12", "13", "07", "00", "T", "t", "-", ":", "09", "59", "60"),
        *(".", "5", "123456789", "1234567890", "Z", "z", "+02:00", " ", "\n", "\u0663", "\uff10"),
    ]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_TIME_PIECES, max_size=14).map("".join))
def test_published_times_are_read_as_the_general_reader_reads_them(text: str) -> None:
    assert _fast_ns(text) == _general_ns(text)


def test_published_times_of_every_shape_are_read_exactly() -> None:
    for text in [
        "2026-12-07T09:20:00Z",
        "2026-12-07T09:20:00.5Z",
        "2026-12-07t09:20:00.000000001Z",
        "2026-12-07T09:20:00.123456789Z",
        "2026-12-07T09:20:00.Z",
        "2026-12-07T09:20:00.1234567890Z",
        "2026-13-07T09:20:00Z",
        "2026-12-07T23:59:60Z",
        "\u0662\u0660\u0662\u0666-12-07T09:20:00.5Z",
        "2026-12-07T09:20:00.1\u0663Z",
        " 2026-12-07T09:20:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
    ]:
        assert _fast_ns(text) == _general_ns(text), text
    assert wire.parse_time_ns("2026-12-07T09:20:00.5Z") == 1_796_635_200_500_000_000


@settings(max_examples=1000, deadline=None)
@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_log_times_are_what_isoformat_writes(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert time_text(created) == expected


def test_log_times_round_as_datetime_rounds() -> None:
    for created in [0.0, 1.9999995, 1.9999994999, 1_733_563_200.0005, 1_733_563_200.9999996]:
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert time_text(created) == expected, created
