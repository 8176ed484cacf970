"""The on-NATS message format, shared with the Go Windshift.

This module is the one place that knows how an event looks on NATS:

======================  =========================================================
header                  value
======================  =========================================================
``WS-Data-Type``        full protobuf message name (``acme.orders.v1.OrderCreated``)
``WS-Published-Time``   RFC 3339 with fractional seconds, written the way Go's
                        ``time.RFC3339Nano`` does (trailing zeros dropped)
``Nats-Msg-Id``         the idempotency key, when given
``WS-Trace-Parent``     W3C ``traceparent`` of the publish span
``WS-Trace-State``      W3C ``tracestate`` of the publish span
======================  =========================================================

The body is the serialized protobuf message itself (the ``value`` of a
``google.protobuf.Any``, never the ``Any``).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message

from windshift._names import quote_value
from windshift.errors import ValidationError

HEADER_DATA_TYPE = "WS-Data-Type"
HEADER_PUBLISHED_TIME = "WS-Published-Time"
HEADER_TRACE_PARENT = "WS-Trace-Parent"
HEADER_TRACE_STATE = "WS-Trace-State"
HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
HEADER_EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
# Set (to application/json) on events whose body is JSON, not protobuf.
HEADER_CONTENT_TYPE = "Content-Type"

# Dead letters: where the event came from, and why it was given up on.
HEADER_DEAD_SUBJECT = "WS-Dead-Subject"
HEADER_DEAD_STREAM = "WS-Dead-Stream"
HEADER_DEAD_CONSUMER = "WS-Dead-Consumer"
HEADER_DEAD_EVENT_ID = "WS-Dead-Event-Id"
HEADER_DEAD_ATTEMPTS = "WS-Dead-Attempts"
HEADER_DEAD_REASON = "WS-Dead-Reason"
HEADER_DEAD_TIME = "WS-Dead-Time"

TYPE_URL_PREFIX = "type.googleapis.com/"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a datetime can hold: 0001-01-01 to 9999-12-31, as nanoseconds since the epoch.
_MIN_NANOS = -62_135_596_800 * 1_000_000_000
_MAX_NANOS = 253_402_300_799 * 1_000_000_000 + 999_999_999

# A protobuf full message name: dot-separated identifiers.
_MESSAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


def encode_message(message: Message) -> tuple[str, bytes]:
    """Return the data type name and the body for a protobuf message or an ``Any``.

    Raises:
        ValidationError: an ``Any`` without a type URL or whose type URL does not
            end in a protobuf message name, or not a protobuf message.
    """
    if isinstance(message, Any):
        if not message.type_url:
            raise ValidationError("event data is missing: the Any has no type_url")
        data_type = message.type_url.rpartition("/")[2]
        if len(data_type) > 1024 or not _MESSAGE_NAME.fullmatch(data_type):
            shown = (
                message.type_url if len(message.type_url) <= 80 else message.type_url[:77] + "..."
            )
            raise ValidationError(
                f"event data type URL {shown!r} does not end in a protobuf message name"
            )
        return data_type, message.value
    if not isinstance(message, Message):
        raise ValidationError(
            f"event data must be a protobuf message, got {type(message).__name__}"
        )
    return message.DESCRIPTOR.full_name, message.SerializeToString()


def decode_message(data_type: str, body: bytes) -> Any:
    """Wrap an event body of the given data type into a ``google.protobuf.Any``."""
    return Any(type_url=TYPE_URL_PREFIX + data_type, value=body)


def format_time(moment: datetime | int | None = None) -> str:
    """Format a time as Go's ``time.RFC3339Nano`` would.

    ``None`` means now, with nanosecond precision, in UTC (``Z``); an ``int``
    is nanoseconds since the Unix epoch (UTC, every digit kept); an aware
    datetime keeps its offset. Trailing zeros of the fraction are dropped,
    and the fraction is left out entirely when it is zero.

    Raises:
        ValidationError: not a datetime or an int, a naive datetime (its zone
            would be a guess), or a time outside the years 1 to 9999.
    """
    if moment is None:
        return _nanos_text(time.time_ns())
    if isinstance(moment, int) and not isinstance(moment, bool):
        if not _MIN_NANOS <= moment <= _MAX_NANOS:
            raise ValidationError(
                f"timestamp {moment} (nanoseconds since the epoch) is outside the years 1 to 9999"
            )
        return _nanos_text(moment)
    if not isinstance(moment, datetime):
        raise ValidationError(f"timestamp must be a datetime, got {quote_value(moment)}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationError(
            f"timestamp {moment.isoformat()!r} has no time zone; pass an aware datetime"
        )
    offset = moment.utcoffset() or timedelta(0)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(moment.microsecond * 1000)
    if not offset:
        return base + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{base}{sign}{hours:02d}:{mins:02d}"


def _nanos_text(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return _second_text(seconds) + _fraction(nanos) + "Z"


@functools.lru_cache(maxsize=4)
def _second_text(seconds: int) -> str:
    # Publishing formats "now" for every event: the whole-second part only
    # changes once a second, so it is formatted once per second.
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def _fraction(nanos: int) -> str:
    if not nanos:
        return ""
    return "." + f"{nanos:09d}".rstrip("0")


def parse_time(text: str) -> datetime:
    """Read an RFC 3339 time with up to nine fractional digits and any UTC offset.

    Digits past microseconds are truncated (``datetime`` holds microseconds);
    :func:`parse_time_ns` keeps them all.

    Raises:
        ValueError: the text is not such a time.
    """
    moment, _ = _parse(text)
    return moment


def parse_time_ns(text: str) -> int:
    """Read an RFC 3339 time exactly, as nanoseconds since the Unix epoch.

    Raises:
        ValueError: the text is not such a time.
    """
    # Every delivered event's WS-Published-Time comes this way. Those
    # windshift writes are in UTC ("...Z") and mostly share their second with
    # the events before: the second is read once, the fraction each time.
    if len(text) >= 20 and text[-1] == "Z":
        second = _utc_second_ns(text[:19])
        if second is not None:
            fraction = text[19:-1]
            if not fraction:
                return second
            digits = fraction[1:]
            if (
                fraction[0] == "."
                and 0 < len(digits) <= 9
                and digits.isascii()
                and digits.isdigit()
            ):
                return second + int(digits.ljust(9, "0"))
    moment, nanos = _parse(text)
    since = moment - _EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000_000 + nanos


@functools.lru_cache(maxsize=64)
def _utc_second_ns(text: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS`` (ASCII digits) in UTC as nanoseconds since the epoch; else None."""
    if not text.isascii():
        return None
    try:
        moment, _ = _parse(text + "Z")
    except ValueError:
        return None
    since = moment - _EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000_000


def _parse(text: str) -> tuple[datetime, int]:
    """The time (microseconds) and the nanoseconds of its second."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    nanos = int((fraction or "0").ljust(9, "0"))
    if zone in ("Z", "z"):
        tz: timezone = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    moment = datetime(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second),
        nanos // 1000,
        tzinfo=tz,
    )
    return moment, nanos


def published_time(headers: Mapping[str, str]) -> datetime | None:
    """``WS-Published-Time`` as written (its offset kept); None when absent or unreadable."""
    text = headers.get(HEADER_PUBLISHED_TIME)
    if text:
        try:
            return parse_time(text)
        except ValueError:
            pass
    return None


def published_ns(headers: Mapping[str, str]) -> int | None:
    """``WS-Published-Time`` in nanoseconds since the epoch (exact); None when absent or unreadable."""
    text = headers.get(HEADER_PUBLISHED_TIME)
    if text:
        try:
            return parse_time_ns(text)
        except ValueError:
            pass
    return None


def time_from_nanos(ns: int) -> datetime:
    """Turn nanoseconds since the Unix epoch into an aware UTC datetime (microseconds)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What JetStream says about one delivery in its reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or with a domain and account hash,
    ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>...`` (and a
    random token at the end in newer servers).
    """

    stream: str
    consumer: str
    delivery_attempt: int
    stream_sequence: int
    consumer_sequence: int
    timestamp_ns: int
    pending: int


def parse_reply(reply: str) -> Delivery | None:
    """Read a JetStream delivery's reply subject; None when it is not one."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    # The old form has 9 tokens; the new one 11 or more (domain, account hash, ...).
    at = 2 if len(tokens) == 9 else 4
    try:
        return Delivery(
            stream=tokens[at],
            consumer=tokens[at + 1],
            delivery_attempt=int(tokens[at + 2]),
            stream_sequence=int(tokens[at + 3]),
            consumer_sequence=int(tokens[at + 4]),
            timestamp_ns=int(tokens[at + 5]),
            pending=int(tokens[at + 6]),
        )
    except (IndexError, ValueError):
        return None


def duration_to_nanos(value: timedelta, what: str) -> int:
    """Convert a non-negative ``timedelta`` into whole nanoseconds.

    Raises:
        ValidationError: not a timedelta, or negative.
    """
    if not isinstance(value, timedelta):
        raise ValidationError(f"{what} must be a timedelta, got {quote_value(value)}")
    if value < timedelta(0):
        raise ValidationError(f"{what} must not be negative, got {value}")
    return (value.days * 86_400 + value.seconds) * 1_000_000_000 + value.microseconds * 1000


def nanos_to_duration(ns: int) -> timedelta:
    """Convert nanoseconds into a ``timedelta`` (microsecond precision)."""
    return timedelta(microseconds=ns // 1000)


__all__ = [
    "HEADER_CONTENT_TYPE",
    "HEADER_DATA_TYPE",
    "HEADER_DEAD_ATTEMPTS",
    "HEADER_DEAD_CONSUMER",
    "HEADER_DEAD_EVENT_ID",
    "HEADER_DEAD_REASON",
    "HEADER_DEAD_STREAM",
    "HEADER_DEAD_SUBJECT",
    "HEADER_DEAD_TIME",
    "HEADER_EXPECTED_LAST_SEQ",
    "HEADER_EXPECTED_LAST_SUBJECT_SEQ",
    "HEADER_MSG_ID",
    "HEADER_PUBLISHED_TIME",
    "HEADER_TRACE_PARENT",
    "HEADER_TRACE_STATE",
    "TYPE_URL_PREFIX",
    "Delivery",
    "decode_message",
    "duration_to_nanos",
    "encode_message",
    "format_time",
    "nanos_to_duration",
    "parse_reply",
    "parse_time",
    "parse_time_ns",
    "time_from_nanos",
]
