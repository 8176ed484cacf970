"""Event on its own: settling through a source of the test's, no subscription, no NATS.

An Event talks to whoever delivered it through the small EventSource
protocol (send, dead-letter, release, clock). The source here records what
it was told, so each rule of settling is checked directly.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from windshift import Event, EventSettledError, UnavailableError, ValidationError
from windshift._deadletters import DeadLetterPolicy
from windshift._events import ATTEMPTS_EXHAUSTED, Outcome


class Recorder:
    """An EventSource that records every call."""

    def __init__(self, policy: DeadLetterPolicy | None = None) -> None:
        self.dead_letters = policy
        self.now = 100.0
        self.sent: list[tuple[bytes, bool]] = []
        self.moved: list[tuple[str, int]] = []
        self.released: list[Outcome] = []
        self.fail_sends = False

    def clock(self) -> float:
        return self.now

    async def send(self, event: Event, payload: bytes, *, confirm: bool) -> None:
        if self.fail_sends:
            raise UnavailableError("no NATS here")
        self.sent.append((payload, confirm))

    async def dead_letter(self, event: Event, reason: str, attempts: int) -> None:
        self.moved.append((reason, attempts))

    async def release(self, event: Event, outcome: Outcome) -> None:
        self.released.append(outcome)


def event(source: Recorder, *, attempt: int = 1) -> Event:
    return Event(
        source,
        "$JS.ACK.orders.c.1.7.7.0.0",
        "orders.created",
        {"WS-Data-Type": "google.protobuf.StringValue"},
        StringValue(value="x").SerializeToString(),
        7,
        attempt,
        1_700_000_000_000_000_000,
        source.now,
    )


async def test_ack_sends_ack_and_releases() -> None:
    source = Recorder()
    delivered = event(source)
    await delivered.ack(confirm=True)
    assert source.sent == [(b"+ACK", True)]
    assert source.released == ["acknowledged"]
    assert delivered.settled == "acknowledged"
    with pytest.raises(EventSettledError, match="event 7 was already acknowledged"):
        await delivered.reject()
    assert source.sent == [(b"+ACK", True)]  # nothing more went out


async def test_reject_sends_a_nak_with_its_delay() -> None:
    source = Recorder()
    await event(source).reject()
    await event(source).reject(delay=timedelta(milliseconds=1500))
    await event(source).reject(permanently=True)
    assert [payload for payload, _ in source.sent] == [
        b"-NAK",
        b'-NAK {"delay":1500000000}',
        b"+TERM",
    ]
    assert source.released == ["rejected", "rejected", "rejected permanently"]


async def test_reject_refuses_a_delay_with_permanently_and_a_negative_delay() -> None:
    source = Recorder()
    with pytest.raises(ValidationError, match="either delay or permanently"):
        await event(source).reject(delay=timedelta(seconds=1), permanently=True)
    with pytest.raises(ValidationError, match="delay must not be negative"):
        await event(source).reject(delay=timedelta(seconds=-1))
    assert source.sent == []


async def test_a_settlement_that_fails_leaves_the_event_unsettled() -> None:
    source = Recorder()
    delivered = event(source)
    source.fail_sends = True
    with pytest.raises(UnavailableError):
        await delivered.ack(confirm=True)
    assert delivered.settled is None
    assert source.released == []
    source.fail_sends = False
    await delivered.ack()  # may be tried again
    assert source.released == ["acknowledged"]


async def test_ping_moves_the_last_ping_to_the_sources_clock() -> None:
    source = Recorder()
    delivered = event(source)
    source.now = 130.0
    await delivered.ping()
    assert (source.sent, delivered.last_ping) == ([(b"+WPI", False)], 130.0)


async def test_with_a_dead_letter_stream_permanent_rejections_are_moved_first() -> None:
    source = Recorder(DeadLetterPolicy("dead", max_delivery_attempts=3))
    await event(source, attempt=2).reject(permanently=True, reason="bad order")
    assert source.moved == [("bad order", 2)]
    assert source.sent == [(b"+TERM", True)]  # terminated only once stored, confirmed
    assert source.released == ["dead-lettered"]


async def test_a_reject_on_the_last_attempt_moves_at_once() -> None:
    source = Recorder(DeadLetterPolicy("dead", max_delivery_attempts=3))
    await event(source, attempt=2).reject(delay=timedelta(minutes=5))
    assert source.moved == []  # an attempt is left: redelivered after its delay
    await event(source, attempt=3).reject(delay=timedelta(minutes=5))
    assert source.moved == [(ATTEMPTS_EXHAUSTED, 3)]
    assert source.sent[-1] == (b"+TERM", True)


async def test_an_expired_event_cannot_be_settled() -> None:
    source = Recorder()
    delivered = event(source)
    assert delivered.expire()
    assert delivered.settled == "expired"
    assert not delivered.expire()
    with pytest.raises(EventSettledError, match="not pinged within the processing timeout"):
        await delivered.ack()
    with pytest.raises(EventSettledError):
        await delivered.ping()
    assert source.sent == []


def test_data_and_times_come_from_the_delivery() -> None:
    source = Recorder()
    delivered = event(source)
    assert delivered.unpack(StringValue).value == "x"
    assert delivered.timestamp_ns == 1_700_000_000_000_000_000  # no header: the stream's time
    assert delivered.data.type_url == "type.googleapis.com/google.protobuf.StringValue"
