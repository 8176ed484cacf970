"""Event: one delivery of a stream event to a subscription, and how to settle it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeVar

import nats.errors
from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry.trace import Span

from windshift import _tracing as tracing
from windshift import _wire as wire
from windshift.errors import EventSettledError, UnavailableError, ValidationError

if TYPE_CHECKING:
    from windshift._subscriptions import Subscription

M = TypeVar("M", bound=Message)

Settlement = Literal["acknowledged", "rejected"]

_ACK = b"+ACK"
_NAK = b"-NAK"
_TERM = b"+TERM"
_PING = b"+WPI"


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
    (then call :meth:`ping` during long work).

    Attributes:
        id: the event's id: its sequence in the stream, equal to what
            ``publish`` returned and the same on every redelivery.
        subject: the subject it was published to.
        headers: the NATS headers it carries.
        delivery_attempt: 1 on first delivery, 2 on the first redelivery, ...
    """

    __slots__ = (
        "_handed_out",
        "_published_ns",
        "_reply",
        "_settled",
        "_span",
        "_subscription",
        "body",
        "delivery_attempt",
        "headers",
        "id",
        "last_ping",
        "subject",
    )

    def __init__(
        self,
        subscription: Subscription,
        reply: str,
        subject: str,
        headers: Mapping[str, str],
        body: bytes,
        event_id: int,
        delivery_attempt: int,
        published_ns: int,
        now: float,
    ) -> None:
        self._subscription = subscription
        self._reply = reply
        self._settled: Settlement | None = None
        self._span: Span | None = None
        self._handed_out = 0.0  # the subscription's clock when handed out; 0: not yet
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
    def data_type(self) -> str:
        """The full protobuf name of the event's data (``WS-Data-Type``)."""
        return self.headers.get(wire.HEADER_DATA_TYPE, "")

    @property
    def data(self) -> Any:
        """The event's data as a ``google.protobuf.Any``."""
        return wire.decode_message(self.data_type, self.body)

    def unpack(self, message_type: type[M]) -> M:
        """Parse the event's data as ``message_type``.

        Raises:
            ValidationError: the event holds another type of message, or its
                bytes do not parse as ``message_type``.
        """
        expected = message_type.DESCRIPTOR.full_name
        if self.data_type and self.data_type != expected:
            raise ValidationError(f"event {self.id} holds {self.data_type!r}, not {expected!r}")
        message = message_type()
        try:
            message.ParseFromString(self.body)
        except Exception as exc:  # protobuf raises DecodeError and others
            raise ValidationError(f"event {self.id} is not a valid {expected}: {exc}") from None
        return message

    @property
    def timestamp(self) -> datetime:
        """When the event was published (``WS-Published-Time``, else the stream's time)."""
        text = self.headers.get(wire.HEADER_PUBLISHED_TIME)
        if text:
            try:
                return wire.parse_time(text)
            except ValueError:
                pass
        return wire.time_from_nanos(self._published_ns)

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
        """None while unsettled, else "acknowledged" or "rejected"."""
        return self._settled

    async def ack(self, *, confirm: bool = False) -> None:
        """Acknowledge the event: it was processed and is not delivered again.

        Args:
            confirm: wait until NATS confirms it recorded the acknowledgement.

        Raises:
            EventSettledError: the event was already acknowledged or rejected.
            UnavailableError: with ``confirm``, NATS did not answer (the event
                stays unsettled; the call may be retried).
        """
        await self._settle("acknowledged", _ACK, confirm)

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
        before the delay; with ``permanently=True``, never again: when the
        consumer has a dead-letter stream, the event is moved there first
        (with ``reason``), and only then removed from the consumer's work.

        Raises:
            ValidationError: ``delay`` together with ``permanently``, or a
                negative delay.
            EventSettledError: the event was already acknowledged or rejected.
            UnavailableError: with ``confirm``, NATS did not answer.
        """
        if permanently:
            if delay is not None:
                raise ValidationError("reject takes either delay or permanently=True, not both")
            payload = _TERM
            if self._subscription.dead_letters is not None:
                why = reason or "rejected permanently"
                await self._settle("rejected", payload, True, dead_letter=why)
                return
        elif delay is not None:
            nanos = wire.duration_to_nanos(delay, "delay")
            payload = b'-NAK {"delay":%d}' % nanos if nanos else _NAK
        else:
            payload = _NAK
        await self._settle("rejected", payload, confirm)

    async def ping(self, *, confirm: bool = False) -> None:
        """Tell NATS the event is still being processed: its timeout starts again.

        Raises:
            EventSettledError: the event was already acknowledged or rejected.
            UnavailableError: with ``confirm``, NATS did not answer.
        """
        if self._settled is not None:
            raise EventSettledError(f"event {self.id} was already {self._settled}")
        await self._send(_PING, confirm)
        self.last_ping = self._subscription.clock()

    async def _settle(
        self, outcome: Settlement, payload: bytes, confirm: bool, dead_letter: str | None = None
    ) -> None:
        if self._settled is not None:
            raise EventSettledError(f"event {self.id} was already {self._settled}")
        self._settled = outcome
        try:
            if dead_letter is not None:
                await self._subscription.move_to_dead_letters(self, dead_letter)
            await self._send(payload, confirm)
        except BaseException:
            self._settled = None
            raise
        if self._span is not None:
            self._span.set_attribute("windshift.outcome", outcome)
            self._span.end()
            self._span = None
        subscription = self._subscription
        if self._handed_out:  # not for events the subscription gave up on itself
            seconds = subscription.clock() - self._handed_out
            if outcome == "acknowledged":
                subscription._metrics.acknowledged(seconds)
            else:
                subscription._metrics.rejected(seconds, permanently=payload == _TERM)
        await subscription.release(self)

    async def _send(self, payload: bytes, confirm: bool) -> None:
        subscription = self._subscription
        try:
            if confirm:
                await subscription.acks.request(
                    self._reply, payload, None, subscription.request_timeout
                )
            else:
                await subscription.nc.publish(self._reply, payload)
        except TimeoutError:
            raise UnavailableError(f"NATS did not confirm settling event {self.id}") from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            raise UnavailableError(
                f"cannot settle event {self.id}: the NATS connection is closed"
            ) from None
        except nats.errors.OutboundBufferLimitError:
            # Disconnected, and nats-py's reconnect buffer is full.
            raise UnavailableError(
                f"cannot settle event {self.id}: NATS is unreachable and the reconnect "
                "buffer is full"
            ) from None


__all__ = ["Event"]
