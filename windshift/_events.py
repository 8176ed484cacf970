"""Event: one delivery of a stream event, and how to settle it.

An :class:`Event` knows its data and its delivery; everything it needs from
whoever delivered it goes through the small :class:`EventSource` protocol:
send a settlement, move the event to the dead letters, release it, read the
clock. A :class:`~windshift.Subscription` is the real source; a test can
hand an Event a source of its own and check what it was told.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry.trace import Span

from windshift import _payloads as payloads
from windshift import _tracing as tracing
from windshift import _wire as wire
from windshift.errors import EventSettledError, ValidationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from windshift._deadletters import DeadLetterPolicy

M = TypeVar("M", bound="Message | BaseModel")

#: How an event ended, once it has: settled by its holder, or given up on
#: (``"expired"``: not pinged within the processing timeout, with
#: ``auto_ping=False``; NATS delivers it again).
Settlement = Literal["acknowledged", "rejected", "expired"]
#: What :meth:`EventSource.release` is told (``"dead-lettered"``: moved, then terminated).
Outcome = Literal["acknowledged", "rejected", "rejected permanently", "dead-lettered", "expired"]

ACK = b"+ACK"
NAK = b"-NAK"
TERM = b"+TERM"
PING = b"+WPI"

#: The reason recorded with an event whose delivery attempts ran out.
ATTEMPTS_EXHAUSTED = "max delivery attempts reached"


def reject_payload(delay: timedelta | None, *, permanently: bool) -> tuple[bytes, Outcome]:
    """What a reject sends NATS (``-NAK``, with its delay, or ``+TERM``), and its outcome.

    Raises:
        ValidationError: a negative delay.
    """
    if permanently:
        return TERM, "rejected permanently"
    if delay is not None:
        nanos = wire.duration_to_nanos(delay, "delay")
        if nanos:
            return b'-NAK {"delay":%d}' % nanos, "rejected"
    return NAK, "rejected"


class EventSource(Protocol):
    """What an :class:`Event` needs from whoever delivered it.

    A :class:`~windshift.Subscription` implements it over NATS. Settling
    methods raise :class:`~windshift.UnavailableError` when the settlement
    could not be sent (or, with ``confirm``, was not confirmed).
    """

    @property
    def dead_letters(self) -> DeadLetterPolicy | None:
        """The consumer's dead-letter settings; None without a dead-letter stream."""
        ...

    def clock(self) -> float:
        """Now, in the seconds the source measures processing times with."""
        ...

    async def send(self, event: Event, payload: bytes, *, confirm: bool) -> None:
        """Send a settlement (``+ACK``, ``-NAK``, ``+TERM``, ``+WPI``) for ``event``."""
        ...

    async def dead_letter(self, event: Event, reason: str, attempts: int) -> None:
        """Store ``event`` in the dead-letter stream, recording ``reason`` and ``attempts``."""
        ...

    async def release(self, event: Event, outcome: Outcome) -> None:
        """``event`` is settled (or given up on): forget it and make room for the next."""
        ...


class Event:
    """An event delivered by a subscription.

    Example:
        >>> async for event in events:
        ...     order = event.unpack(OrderCreated)
        ...     try:
        ...         await handle(order)
        ...     except TemporaryFailure:
        ...         await event.reject(delay=timedelta(seconds=5))
        ...     else:
        ...         await event.ack()

    Settle every event exactly once: :meth:`ack` when it is processed,
    :meth:`reject` to have it delivered again (now, after a delay, or never).
    Until then the subscription pings it every third of the processing
    timeout, unless the subscription was opened with ``auto_ping=False``
    (then call :meth:`ping` during long work: an event not pinged within the
    processing timeout is given up, and NATS delivers it again).

    Attributes:
        id: the event's id: its sequence in the stream, equal to what
            ``publish`` returned and the same on every redelivery.
        subject: the subject it was published to.
        headers: the NATS headers it carries.
        body: the serialized protobuf message (the value of :attr:`data`).
        delivery_attempt: 1 on first delivery, 2 on the first redelivery, ...
        last_ping: the source's clock when the event was last pinged (or received).
    """

    __slots__ = (
        "_handed_out",
        "_published_ns",
        "_reply",
        "_settled",
        "_source",
        "_span",
        "body",
        "delivery_attempt",
        "headers",
        "id",
        "last_ping",
        "subject",
    )

    def __init__(
        self,
        source: EventSource,
        reply: str,
        subject: str,
        headers: Mapping[str, str],
        body: bytes,
        event_id: int,
        delivery_attempt: int,
        published_ns: int,
        now: float,
    ) -> None:
        self._source = source
        self._reply = reply
        self._settled: Settlement | None = None
        self._span: Span | None = None
        self._handed_out = 0.0  # the source's clock when handed out; 0: not yet
        self._published_ns = published_ns
        self.subject = subject
        self.headers = headers
        self.body = body
        self.id = event_id
        self.delivery_attempt = delivery_attempt
        self.last_ping = now

    def __repr__(self) -> str:
        return (
            f"Event(id={self.id}, subject={self.subject!r}, data_type={self.data_type!r}, "
            f"delivery_attempt={self.delivery_attempt})"
        )

    @property
    def reply(self) -> str:
        """The NATS subject settlements of this delivery are sent to."""
        return self._reply

    @property
    def data_type(self) -> str:
        """The full protobuf name of the event's data (``WS-Data-Type``)."""
        return self.headers.get(wire.HEADER_DATA_TYPE, "")

    @property
    def content_type(self) -> str | None:
        """``"application/json"`` for a JSON event (a pydantic model); None for protobuf."""
        return payloads.content_type(self.headers)

    @property
    def data(self) -> Any:
        """The event's data as a ``google.protobuf.Any`` (a JSON event's as a ``Struct``)."""
        return payloads.as_any(self.data_type, self.body, self.content_type)

    def unpack(self, message_type: type[M]) -> M:
        """Parse the event's data as ``message_type``: a protobuf message or a pydantic model class.

        Raises:
            ValidationError: the event holds another type, or the other format
                (JSON for a protobuf class, or the reverse; the message names
                both), or its bytes do not parse as ``message_type``.
        """
        return payloads.decode(
            message_type,
            data_type=self.data_type,
            body=self.body,
            content=self.content_type,
            what=f"event {self.id}",
        )

    @property
    def timestamp(self) -> datetime:
        """When the event was published (``WS-Published-Time``, else the stream's time).

        It keeps the offset the publisher wrote. A ``datetime`` holds
        microseconds; :attr:`timestamp_ns` has every digit.
        """
        return wire.published_time(self.headers) or wire.time_from_nanos(self._published_ns)

    @property
    def timestamp_ns(self) -> int:
        """When the event was published, in nanoseconds since the Unix epoch (exact)."""
        written = wire.published_ns(self.headers)
        return self._published_ns if written is None else written

    @property
    def idempotency_key(self) -> str | None:
        """The idempotency key it was published with (``Nats-Msg-Id``), if any."""
        return self.headers.get(wire.HEADER_MSG_ID)

    @property
    def trace_context(self) -> otel_context.Context:
        """The OpenTelemetry context of the publish (empty when untraced)."""
        return tracing.extract_context(self.headers)

    @property
    def span(self) -> Span | None:
        """The OpenTelemetry span of this delivery (a child of the publish).

        Opened when the subscription hands the event out and ended when it is
        settled; None before and after. Its context is what to hand on to
        whoever processes the event (the gRPC façade sends it as the event's
        ``trace_parent``).
        """
        return self._span

    @property
    def settled(self) -> Settlement | None:
        """None while unsettled, else "acknowledged", "rejected" or "expired"."""
        return self._settled

    async def ack(self, *, confirm: bool = False) -> None:
        """Acknowledge the event: it was processed and is not delivered again.

        Args:
            confirm: wait until NATS confirms it recorded the acknowledgement.

        Raises:
            EventSettledError: the event was already settled (or expired).
            UnavailableError: with ``confirm``, NATS did not answer (the event
                stays unsettled; the call may be retried).
        """
        await self._settle("acknowledged", ACK, confirm)

    async def reject(
        self,
        *,
        delay: timedelta | None = None,
        permanently: bool = False,
        reason: str | None = None,
        confirm: bool = False,
    ) -> None:
        """Reject the event.

        Without options it is delivered again at once; with ``delay``, not
        before the delay; with ``permanently=True``, never again. When the
        consumer has a dead-letter stream, an event rejected permanently, or
        rejected on its last allowed delivery attempt, is moved there first
        (with ``reason``), and only then removed from the consumer's work.

        Raises:
            ValidationError: ``delay`` together with ``permanently``, or a
                negative delay.
            EventSettledError: the event was already settled (or expired).
            UnavailableError: with ``confirm`` (or a dead-letter move), NATS
                did not answer.
        """
        if permanently and delay is not None:
            raise ValidationError("reject takes either delay or permanently=True, not both")
        policy = self._source.dead_letters
        if policy is not None:
            if permanently:
                await self._give_up(reason or "rejected permanently")
                return
            if policy.last_attempt(self.delivery_attempt):
                # No later attempt would be handed out: move it now, rather
                # than after the delay and one more (unseen) delivery.
                await self._give_up(reason or ATTEMPTS_EXHAUSTED)
                return
        payload, outcome = reject_payload(delay, permanently=permanently)
        await self._settle("rejected", payload, confirm, outcome=outcome)

    async def ping(self, *, confirm: bool = False) -> None:
        """Tell NATS the event is still being processed: its timeout starts again.

        Raises:
            EventSettledError: the event was already settled (or expired).
            UnavailableError: with ``confirm``, NATS did not answer.
        """
        self._check_unsettled()
        await self._source.send(self, PING, confirm=confirm)
        self.last_ping = self._source.clock()

    def expire(self) -> bool:
        """Give the event up unsettled (its source's business); False if it was settled."""
        if self._settled is not None:
            return False
        self._settled = "expired"
        self._end_span("expired")
        return True

    async def _give_up(self, reason: str, *, attempts: int | None = None) -> None:
        """Move the event to the dead letters, then terminate it (confirmed)."""
        self._check_unsettled()
        self._settled = "rejected"
        try:
            await self._source.dead_letter(
                self, reason, self.delivery_attempt if attempts is None else attempts
            )
            await self._source.send(self, TERM, confirm=True)
        except BaseException:
            self._settled = None
            raise
        self._end_span("rejected")
        await self._source.release(self, "dead-lettered")

    async def _settle(
        self, settlement: Settlement, payload: bytes, confirm: bool, outcome: Outcome | None = None
    ) -> None:
        self._check_unsettled()
        self._settled = settlement
        try:
            await self._source.send(self, payload, confirm=confirm)
        except BaseException:
            self._settled = None
            raise
        self._end_span(settlement)
        await self._source.release(self, outcome or settlement)

    def _check_unsettled(self) -> None:
        if self._settled == "expired":
            raise EventSettledError(
                f"event {self.id} was given up: it was not pinged within the processing "
                "timeout, and NATS delivers it again"
            )
        if self._settled is not None:
            raise EventSettledError(f"event {self.id} was already {self._settled}")

    def _end_span(self, outcome: str) -> None:
        if self._span is not None:
            self._span.set_attribute("windshift.outcome", outcome)
            self._span.end()
            self._span = None


__all__ = [
    "ATTEMPTS_EXHAUSTED",
    "Event",
    "EventSource",
    "Outcome",
    "Settlement",
    "reject_payload",
]
