"""Subscription: pull events of a consumer, with flow control, auto-ping and recovery.

How it works, in short: the subscription owns one inbox subscription and
asks JetStream for events with pull requests sent to it. It never asks for
more than ``max_pending_events`` minus what it already holds and what earlier
requests may still bring, so at most ``max_pending_events`` events are ever
delivered and unsettled. With ``max_pending_bytes`` the same holds for their
size: each pull request carries JetStream's ``max_bytes``, the room left in
bytes, and an event too large for the whole bound is asked for alone, once
nothing else is held (so it is delivered rather than stuck). Every pull request carries an idle heartbeat; when
neither events nor heartbeats arrive for a while, or the connection comes
back after a drop, the requests in flight are taken as dead and new ones are
sent at once. Status messages (timeouts, leadership changes, heartbeats) are
handled here and never reach the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Self

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js.api import Header

from windshift import _deadletters as deadletters
from windshift import _tracing as tracing
from windshift._connection import Connection
from windshift._deadletters import DeadLetterPolicy
from windshift._events import (
    ACK,
    ATTEMPTS_EXHAUSTED,
    PING,
    Event,
    Outcome,
    Settlement,
    reject_payload,
)
from windshift._jsapi import ApiError
from windshift._metrics import SubscriptionMetrics
from windshift._names import quote_value, validate_name
from windshift._publishing import Publisher
from windshift._wire import HEADER_DATA_TYPE, parse_reply
from windshift.errors import (
    ConsumerNotFoundError,
    EventSettledError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)

logger = logging.getLogger("windshift.subscriptions")

DEFAULT_MAX_PENDING_EVENTS = 50
# A pull request's batch is a signed 64-bit number to JetStream: a larger one
# is refused, and was asked for again and again (tests/test_resilience.py).
MAX_PENDING_EVENTS_LIMIT = 2**63 - 1
# JetStream reads a pull request's max_bytes as a signed 64-bit number too.
MAX_PENDING_BYTES_LIMIT = 2**63 - 1

# A pull request is held by the server this long at most; an idle one
# proves it is alive with a heartbeat this often.
_PULL_EXPIRES = 30.0
_HEARTBEAT = 1.0
# Back-off after the server refuses a pull request.
_REFUSED_BACKOFF = 0.25
# How long a consumer must stay missing before the subscription gives up on it.
_MISSING_GRACE = 3.0


@dataclass(slots=True)
class _PullRequest:
    remaining: int  # events it may still bring
    expires_at: float
    remaining_bytes: int = 0  # bytes it may still bring (with max_pending_bytes)
    max_bytes: int = 0  # the max_bytes it asked for; 0: none


class Subscription:
    """An async iterator over the events of one consumer.

    Get one with :meth:`windshift.Client.subscribe` and use it with
    ``async with``:

    Example:
        >>> async with client.subscribe("orders", consumer.id) as events:
        ...     async for event in events:
        ...         await event.ack()

    Several subscriptions to one durable consumer share its events (each
    event goes to one of them), and several tasks may iterate one
    subscription at once (each event goes to one of them too). Leaving the
    ``async with`` hands events that were fetched but never given to the
    caller back to NATS at once.
    """

    def __init__(
        self,
        connection: Connection,
        publisher: Publisher,
        stream: str,
        consumer: str,
        *,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        max_pending_bytes: int | None = None,
        auto_ping: bool = True,
    ) -> None:
        validate_name("stream", stream)
        validate_name("consumer", consumer)
        if (
            isinstance(max_pending_events, bool)
            or not isinstance(max_pending_events, int)
            or not 1 <= max_pending_events <= MAX_PENDING_EVENTS_LIMIT
        ):
            raise ValidationError(
                f"max_pending_events must be between 1 and {MAX_PENDING_EVENTS_LIMIT}, "
                f"got {quote_value(max_pending_events)}"
            )
        if max_pending_bytes is not None and (
            isinstance(max_pending_bytes, bool)
            or not isinstance(max_pending_bytes, int)
            or not 1 <= max_pending_bytes <= MAX_PENDING_BYTES_LIMIT
        ):
            raise ValidationError(
                f"max_pending_bytes must be None or between 1 and {MAX_PENDING_BYTES_LIMIT}, "
                f"got {quote_value(max_pending_bytes)}"
            )
        self.nc = connection.nc
        self._connection = connection
        self._api = api = connection.api
        self._publisher = publisher
        self._acks = connection.acks  # where confirmed settlements get their answer
        self._dead_letters: DeadLetterPolicy | None = None
        self._moving: set[asyncio.Task[None]] = set()
        self.stream = stream
        self.consumer = consumer
        self.max_pending_events = max_pending_events
        self.max_pending_bytes = max_pending_bytes
        self.auto_ping = auto_ping
        self.request_timeout = api.timeout
        self.processing_timeout = timedelta(seconds=30)
        self._loop = asyncio.get_running_loop()
        self.clock = self._loop.time
        self._next_subject = f"{api.prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._sub: NatsSubscription | None = None
        # How long the server holds a pull request, and how often an idle one
        # sends a heartbeat (seconds; tests shorten them).
        self.pull_expires = _PULL_EXPIRES
        self.heartbeat = _HEARTBEAT
        self._tokens = itertools.count(1)
        self._requests: dict[str, _PullRequest] = {}
        self._credit = 0  # events the live pull requests may still bring
        self._byte_credit = 0  # bytes they may still bring (with max_pending_bytes)
        self._held: dict[str, Event] = {}  # delivered and unsettled, by reply subject
        self._sizes: dict[str, int] = {}  # their sizes (only with max_pending_bytes)
        self._held_bytes = 0
        # A pull request with this much room in bytes was refused: the next
        # event is larger. Asking again waits until there is more room.
        self._too_small = 0
        self._by_id: dict[int, Event] = {}  # the latest of them per event id
        self._metrics = SubscriptionMetrics(stream, consumer, self._held)
        self._buffer: deque[Event] = deque()  # held, not yet handed to the caller
        # Tasks waiting in __anext__: several may iterate one subscription.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._last_activity = 0.0
        self._not_before = 0.0
        self._maintainer: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._missing_since: float | None = None
        self._error: WindshiftError | None = None
        self._started = False
        self._closed = False

    @property
    def held_events(self) -> int:
        """Events delivered to this subscription and not yet settled."""
        return len(self._held)

    @property
    def held_bytes(self) -> int:
        """The size of the held events, as JetStream counts it (0 without ``max_pending_bytes``)."""
        return self._held_bytes

    @property
    def dead_letters(self) -> DeadLetterPolicy | None:
        """The consumer's dead-letter settings (read on entering); None without them."""
        return self._dead_letters

    def held_event(self, event_id: int) -> Event | None:
        """The unsettled delivery of the event with this id, if this subscription holds one.

        With several deliveries of the same event held (a redelivery arrived
        before the earlier one was settled), the latest.
        """
        event = self._by_id.get(event_id)
        return event if event is not None and event.settled is None else None

    async def __aenter__(self) -> Self:
        if self._started:
            raise ValidationError("a subscription can be entered only once")
        self._started = True
        try:
            info = await self._api.request(f"CONSUMER.INFO.{self.stream}.{self.consumer}")
        except ApiError as exc:
            raise exc.to_windshift(
                f"subscribe to consumer {self.consumer!r} on stream {self.stream!r}",
                stream=self.stream,
                consumer=self.consumer,
            ) from None
        ack_wait = int(info["config"].get("ack_wait", 30_000_000_000))
        self._dead_letters = DeadLetterPolicy.of(info["config"])
        self.processing_timeout = timedelta(microseconds=ack_wait // 1000)
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_message)
        self._connection.reconnect_listeners.add(self._on_reconnect)
        self._metrics.track()
        self._last_activity = self.clock()
        await self._pull()
        self._maintainer = asyncio.create_task(self._maintain(), name=f"windshift-{self.consumer}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if not self._started:
            raise ValidationError("use the subscription with 'async with' before iterating")
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():  # cancelled while waiting
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
        event = self._buffer.popleft()
        event._span = tracing.start_receive_span(
            self.stream, self.consumer, event.subject, event.id, event.headers
        )
        event._handed_out = self.clock()
        return event

    def _wake(self, *, everyone: bool = False) -> None:
        """Wake one waiting task (an event arrived), or all of them (closed, failed)."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    async def _on_message(self, msg: Msg) -> None:
        self._last_activity = now = self.clock()
        reply = msg.reply
        if not reply:
            await self._on_status(msg.subject[len(self._inbox) + 1 :], msg)
            return
        bound = self.max_pending_bytes
        size = _wire_size(msg) if bound is not None else 0
        # Events carry their own subject, not the request's: JetStream serves
        # waiting requests in order, so count this one against the oldest.
        for token, request in self._requests.items():
            self._credit -= 1
            request.remaining -= 1
            if request.max_bytes:
                taken = min(size, request.remaining_bytes)
                self._byte_credit -= taken
                request.remaining_bytes -= taken
            # JetStream ends a request whose bytes are used up exactly, silently.
            if request.remaining <= 0 or (request.max_bytes and request.remaining_bytes <= 0):
                self._retire(token)
            break
        if (
            self._closed
            or len(self._held) >= self.max_pending_events
            or (bound is not None and self._held and self._held_bytes + size > bound)
        ):
            # Only a request taken for dead can bring this: hand it straight back.
            await self.nc.publish(reply, b"-NAK")
            return
        event = _event_from(self, msg, now)
        if event is None:
            await self.nc.publish(reply, b"+TERM")
            return
        self._held[reply] = event
        if bound is not None:
            self._sizes[reply] = size
            self._held_bytes += size
        earlier = self._by_id.get(event.id)
        self._by_id[event.id] = event
        if earlier is not None and not self.auto_ping:
            # Redelivered before the earlier delivery was given up: it has
            # expired on the server already.
            await self._expire(earlier)
        if event.delivery_attempt > 1:
            self._metrics.redelivered()
        policy = self._dead_letters
        if policy is not None and policy.exhausted(event.delivery_attempt):
            # One past the last attempt (its subscriber died during the last
            # one): move it instead of handing it out.
            task = asyncio.create_task(self._give_up(event))
            self._moving.add(task)
            task.add_done_callback(self._moving.discard)
            return
        self._buffer.append(event)
        self._wake()

    async def _on_status(self, token: str, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status", "")
        if status == "100":
            return  # idle heartbeat
        request = self._requests.get(token)
        if request is not None:
            self._retire(token)
        # nats-py keys the description with an Enum member whose hash is not the string's
        description = str(headers.get(Header.DESCRIPTION) or headers.get("Description") or "")
        if status == "409" and "Exceeds MaxBytes" in description:
            # The next event does not fit the room this request had: ask again
            # once there is more (a settlement), or for it alone once nothing
            # is held (see _pull).
            if request is not None:
                self._too_small = max(self._too_small, request.max_bytes)
            await self._pull()
            return
        if status == "409" and "Consumer Deleted" in description:
            self._fail(
                ConsumerNotFoundError(
                    f"consumer {self.consumer!r} on stream {self.stream!r} was deleted",
                    stream=self.stream,
                    consumer=self.consumer,
                )
            )
            return
        if status == "503":
            # Nobody serves the consumer right now: it was deleted, or JetStream
            # is still starting or electing a leader. Find out before asking again.
            self._not_before = self.clock() + _REFUSED_BACKOFF
            if self._checker is None or self._checker.done():
                self._checker = asyncio.create_task(self._check_consumer())
            return
        if status == "400":
            # JetStream cannot read the request: asking again would only be
            # refused again, as fast as the answers come. Say so instead.
            self._fail(
                ValidationError(
                    f"NATS refused the pull requests of consumer {self.consumer!r} on "
                    f"stream {self.stream!r}: {description}"
                )
            )
            return
        if status == "409" and ("Exceeded" in description or "push based" in description):
            logger.warning(
                "pull request for %s/%s refused: %s", self.stream, self.consumer, description
            )
            self._not_before = self.clock() + _REFUSED_BACKOFF
            return
        await self._pull()

    async def _check_consumer(self) -> None:
        try:
            await self._api.request(
                f"CONSUMER.INFO.{self.stream}.{self.consumer}", timeout=_REFUSED_BACKOFF * 4
            )
        except ApiError as exc:
            if exc.code != 404:
                return
            # A restarting server answers "not found" until it has loaded the
            # consumer again: only a consumer missing for a while is gone.
            now = self.clock()
            if self._missing_since is None:
                self._missing_since = now
            elif now - self._missing_since >= _MISSING_GRACE:
                self._fail(
                    ConsumerNotFoundError(
                        f"consumer {self.consumer!r} on stream {self.stream!r} no longer exists",
                        stream=self.stream,
                        consumer=self.consumer,
                    )
                )
            return
        except WindshiftError:
            return  # JetStream not answering yet: the maintenance loop asks again
        self._missing_since = None
        self._not_before = 0.0
        await self._pull()

    def _fail(self, error: WindshiftError) -> None:
        if self._error is None:
            self._error = error
        self._wake(everyone=True)

    async def _pull(self) -> None:
        if self._closed or self._error is not None or not self.nc.is_connected:
            return
        if self.clock() < self._not_before:
            return
        free = self.max_pending_events - len(self._held) - self._credit
        if free <= 0 or (self._credit and free < max(1, self.max_pending_events // 2)):
            return
        max_bytes = 0
        bound = self.max_pending_bytes
        if bound is not None:
            max_bytes = bound - self._held_bytes - self._byte_credit
            if max_bytes <= self._too_small:
                if self._held or self._requests:
                    return  # wait for room
                # Nothing held, nothing asked for, and the next event is larger
                # than the whole bound: ask for it alone, without max_bytes.
                free, max_bytes = 1, 0
            elif self._byte_credit and max_bytes < bound // 2:
                return
        token = str(next(self._tokens))
        self._requests[token] = _PullRequest(
            free, self.clock() + self.pull_expires, max_bytes, max_bytes
        )
        self._credit += free
        self._byte_credit += max_bytes
        request = {
            "batch": free,
            "expires": int(self.pull_expires * 1e9),
            "idle_heartbeat": int(self.heartbeat * 1e9),
        }
        if max_bytes:
            request["max_bytes"] = max_bytes
        await self.nc.publish(
            self._next_subject,
            json.dumps(request).encode(),
            reply=f"{self._inbox}.{token}",
        )

    def _retire(self, token: str) -> None:
        """Forget a pull request that ended: what it could still bring is no longer credit."""
        request = self._requests.pop(token)
        self._credit -= request.remaining
        self._byte_credit -= request.remaining_bytes

    def _drop_requests(self) -> None:
        self._requests.clear()
        self._credit = 0
        self._byte_credit = 0

    async def _on_reconnect(self) -> None:
        # The requests in flight died with the old connection: ask again now.
        self._drop_requests()
        self._last_activity = self.clock()
        self._not_before = 0.0
        self._too_small = 0
        await self._pull()

    # The event source of the events this subscription delivers (windshift._events.EventSource).

    async def send(self, event: Event, payload: bytes, *, confirm: bool) -> None:
        """Send a settlement of ``event`` to NATS (called by :class:`Event`)."""
        try:
            if confirm:
                await self._acks.request(event.reply, payload, None, self.request_timeout)
            else:
                await self.nc.publish(event.reply, payload)
        except (nats.errors.Error, TimeoutError) as exc:
            raise _unsettled(event, exc) from None

    async def dead_letter(self, event: Event, reason: str, attempts: int) -> None:
        """Store ``event`` in the consumer's dead-letter stream (called by :class:`Event`)."""
        policy = self._dead_letters
        if policy is None:
            raise ValidationError(
                f"consumer {self.consumer!r} on stream {self.stream!r} has no dead-letter stream"
            )
        if await deadletters.move(
            self._publisher, policy, event, self.stream, self.consumer, reason, attempts
        ):
            self._metrics.dead_lettered()

    async def release(self, event: Event, outcome: Outcome) -> None:
        """Forget a settled event and make room for the next (called by :class:`Event`)."""
        self._released(event, outcome)
        await self._pull()

    def _released(self, event: Event, outcome: Outcome) -> None:
        if event._handed_out:  # not for events the subscription gave up on itself
            seconds = self.clock() - event._handed_out
            if outcome == "acknowledged":
                self._metrics.acknowledged(seconds)
            elif outcome != "expired":
                self._metrics.rejected(seconds, permanently=outcome != "rejected")
        self._forget(event)

    # Settling many events at once.

    async def ack_many(
        self, events: Sequence[Event], *, confirm: bool = False
    ) -> list[WindshiftError | None]:
        """Acknowledge many events of this subscription at once; one outcome per event.

        Example:
            >>> outcomes = await events.ack_many(batch, confirm=True)
            >>> retry = [e for e, failed in zip(batch, outcomes) if failed is not None]

        What ``event.ack(confirm=...)`` does for each, without a task or a
        coroutine per event: every acknowledgement is sent before the first
        confirmation is awaited. One failure does not stop the others.

        Returns:
            Per event, in order: None when it is acknowledged (and with
            ``confirm``, confirmed), else the error :meth:`Event.ack` would
            raise: EventSettledError (settled before, or given up), or
            UnavailableError (not confirmed; the event stays unsettled and
            may be acknowledged again).

        Raises:
            ValidationError: ``events`` is not a sequence of events this
                subscription delivered (the first other one is named);
                raised before anything is sent.
        """
        chosen = self._own("ack_many", events)
        return await self._settle_many(chosen, "acknowledged", ACK, confirm, "acknowledged")

    async def reject_many(
        self,
        events: Sequence[Event],
        *,
        delay: timedelta | None = None,
        permanently: bool = False,
        reason: str | None = None,
        confirm: bool = False,
    ) -> list[WindshiftError | None]:
        """Reject many events of this subscription at once; one outcome per event.

        Each event is rejected as ``event.reject`` rejects it with the same
        arguments (dead-letter moves included, which go one by one); the
        others are sent before the first confirmation is awaited.

        Returns:
            Per event, in order: None when it is rejected, else the error
            :meth:`Event.reject` would raise.

        Raises:
            ValidationError: ``delay`` together with ``permanently``, a
                negative delay, or ``events`` is not a sequence of events
                this subscription delivered; raised before anything is sent.
        """
        if permanently and delay is not None:
            raise ValidationError("reject takes either delay or permanently=True, not both")
        chosen = self._own("reject_many", events)
        payload, outcome = reject_payload(delay, permanently=permanently)
        policy = self._dead_letters
        if policy is None:
            return await self._settle_many(chosen, "rejected", payload, confirm, outcome)
        # Those a reject moves to the dead letters go one by one (a publish,
        # then a confirmed termination each); the others together.
        moving = [
            index
            for index, event in enumerate(chosen)
            if permanently or policy.last_attempt(event.delivery_attempt)
        ]
        if not moving:
            return await self._settle_many(chosen, "rejected", payload, confirm, outcome)
        moved = set(moving)
        rest = [index for index in range(len(chosen)) if index not in moved]
        results: list[WindshiftError | None] = [None] * len(chosen)

        async def reject_one(event: Event) -> list[WindshiftError | None]:
            try:
                await event.reject(delay=delay, permanently=permanently, reason=reason)
            except WindshiftError as exc:
                return [exc]
            return [None]

        together = self._settle_many(
            [chosen[index] for index in rest], "rejected", payload, confirm, outcome
        )
        outcomes = await asyncio.gather(together, *(reject_one(chosen[i]) for i in moving))
        for index, result in zip(rest, outcomes[0], strict=True):
            results[index] = result
        for index, (result,) in zip(moving, outcomes[1:], strict=True):
            results[index] = result
        return results

    async def ping_many(
        self, events: Sequence[Event], *, confirm: bool = False
    ) -> list[WindshiftError | None]:
        """Ping many events of this subscription at once; one outcome per event.

        Returns:
            Per event, in order: None when it is pinged, else the error
            :meth:`Event.ping` would raise.

        Raises:
            ValidationError: ``events`` is not a sequence of events this
                subscription delivered; raised before anything is sent.
        """
        return await self._settle_many(self._own("ping_many", events), None, PING, confirm, None)

    def _own(self, method: str, events: Sequence[Event]) -> Sequence[Event]:
        """``events``, checked to be a sequence of this subscription's events."""
        if isinstance(events, Event) or not isinstance(events, Sequence):
            raise ValidationError(f"{method} takes a list of events, got {quote_value(events)}")
        for index, event in enumerate(events):
            if not isinstance(event, Event) or event._source is not self:
                raise ValidationError(
                    f"{method}: item {index} is not an event of this subscription "
                    f"({self.stream}/{self.consumer}), got {quote_value(event)}"
                )
        return events

    async def _settle_many(
        self,
        events: Sequence[Event],
        settlement: Settlement | None,
        payload: bytes,
        confirm: bool,
        outcome: Outcome | None,
    ) -> list[WindshiftError | None]:
        """Send ``payload`` for each unsettled event; a final ``settlement`` marks them first.

        ``settlement`` None is a ping: the events stay held, their
        ``last_ping`` moves on once NATS has it (with ``confirm``) or it was sent.
        """
        results: list[WindshiftError | None] = [None] * len(events)
        chosen: list[int] = []
        first: dict[int, int] = {}  # the index each event was first named at
        again: list[tuple[int, int]] = []  # pings of an event named before
        for index, event in enumerate(events):
            earlier = first.setdefault(id(event), index)
            if earlier != index and settlement is None:
                again.append((index, earlier))  # pinged once; the same outcome
                continue
            try:
                event._check_unsettled()  # an event named twice is settled the second time
            except EventSettledError as exc:
                results[index] = exc
                continue
            if settlement is not None:
                event._settled = settlement  # a second settling now finds it settled
            chosen.append(index)
        try:
            failures = await self._send_many([events[index] for index in chosen], payload, confirm)
        except BaseException:
            if settlement is not None:
                for index in chosen:
                    events[index]._settled = None
            raise
        released = False
        for index, failure in zip(chosen, failures, strict=True):
            event = events[index]
            if failure is not None:
                if settlement is not None:
                    event._settled = None  # not settled: it may be tried again
                results[index] = failure
            elif settlement is None:
                event.last_ping = self.clock()
            else:
                event._end_span(settlement)
                self._released(event, outcome or settlement)
                released = True
        for index, earlier in again:
            results[index] = results[earlier]
        if released:
            await self._pull()
        return results

    async def _send_many(
        self, events: list[Event], payload: bytes, confirm: bool
    ) -> list[WindshiftError | None]:
        """Send ``payload`` to each event's reply subject; per event, None or why it failed."""
        if confirm:
            answers = await self._acks.request_many(
                [event.reply for event in events], payload, self.request_timeout
            )
            return [
                _unsettled(event, answer) if isinstance(answer, Exception) else None
                for event, answer in zip(events, answers, strict=True)
            ]
        results: list[WindshiftError | None] = []
        for event in events:
            try:
                await self.nc.publish(event.reply, payload)
            except nats.errors.Error as exc:
                results.append(_unsettled(event, exc))
            else:
                results.append(None)
        return results

    def _forget(self, event: Event) -> None:
        if self._held.pop(event.reply, None) is not None:
            if self._by_id.get(event.id) is event:
                del self._by_id[event.id]
            if self.max_pending_bytes is not None:
                self._held_bytes -= self._sizes.pop(event.reply, 0)
                self._too_small = 0  # more room: the next event may fit now

    async def _expire(self, event: Event) -> None:
        """Give up an unsettled event unpinged for its processing timeout (``auto_ping=False``)."""
        if event.expire():
            with contextlib.suppress(ValueError):
                self._buffer.remove(event)
            await self.release(event, "expired")

    async def _give_up(self, event: Event) -> None:
        try:
            # The attempts handed out: this delivery, one past the last, was not.
            await event._give_up(ATTEMPTS_EXHAUSTED, attempts=event.delivery_attempt - 1)
        except WindshiftError as exc:
            # Not moved: forget it here, so that NATS delivers it again after
            # the processing timeout and the move is retried then.
            logger.warning("could not dead-letter event %d yet: %s", event.id, exc)
            self._forget(event)
            await self._pull()

    async def _maintain(self) -> None:
        ping_every = self.processing_timeout.total_seconds() / 3
        tick = max(0.05, min(0.5, ping_every / 2))
        while not self._closed:
            await asyncio.sleep(tick)
            try:
                await self._maintain_once(ping_every)
            except Exception:  # keep the loop alive whatever one round met
                logger.exception(
                    "subscription %s/%s maintenance failed", self.stream, self.consumer
                )

    async def _maintain_once(self, ping_every: float) -> None:
        now = self.clock()
        for token, request in list(self._requests.items()):
            if now > request.expires_at + 1.0:
                self._retire(token)
        # Requests are taken as dead when nothing (event or heartbeat) came for a while.
        if self._requests and now - self._last_activity > 2 * self.heartbeat + 0.5:
            logger.debug("pull requests of %s/%s went silent", self.stream, self.consumer)
            self._drop_requests()
            self._last_activity = now
        if self.auto_ping:
            for reply, event in list(self._held.items()):
                if event.settled is None and now - event.last_ping >= ping_every:
                    event.last_ping = now
                    await self.nc.publish(reply, b"+WPI")
        else:
            # Nobody pings for the holder: what it left unpinged for the whole
            # processing timeout, NATS delivers again; give it up here too.
            timeout = self.processing_timeout.total_seconds()
            for event in [e for e in self._held.values() if now - e.last_ping >= timeout]:
                await self._expire(event)
        await self._pull()

    async def close(self) -> None:
        """Stop receiving and hand back events never given to the caller.

        Events already handed out can still be settled after this.
        """
        if self._closed:
            return
        self._closed = True
        self._connection.reconnect_listeners.discard(self._on_reconnect)
        for task in (self._maintainer, self._checker, *self._moving):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._sub is not None:
            # Drain, not unsubscribe: events the server sent before it saw the
            # unsubscribe still reach _on_message, which hands them back.
            # Draining flushes (PING/PONG). nats-py breaks its connection when a
            # flush is cancelled (its PONG handler then sets the result of the
            # cancelled future and the read loop dies), so neither the timeout
            # nor a cancellation of our caller may reach it: both are shielded.
            drain = asyncio.ensure_future(self._sub.drain())  # type: ignore[no-untyped-call]
            drain.add_done_callback(_consume_outcome)
            try:
                await asyncio.wait_for(asyncio.shield(drain), self.request_timeout)
            except Exception:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
        returned = list(self._buffer)
        self._buffer.clear()
        for event in returned:
            self._forget(event)
            with contextlib.suppress(Exception):
                await self.nc.publish(event.reply, b"-NAK")
        self._drop_requests()
        self._wake(everyone=True)
        if self.nc.is_connected:
            flush = asyncio.ensure_future(self.nc.flush(timeout=2))
            flush.add_done_callback(_consume_outcome)
            with contextlib.suppress(Exception):
                await asyncio.shield(flush)


def _consume_outcome(task: asyncio.Future[None]) -> None:
    """Retrieve a shielded task's outcome, so an error left behind is not logged as lost."""
    if not task.cancelled():
        task.exception()


def _unsettled(event: Event, exc: BaseException) -> UnavailableError:
    """The error of a settlement of ``event`` that NATS refused or did not confirm."""
    if isinstance(exc, TimeoutError):
        return UnavailableError(f"NATS did not confirm settling event {event.id}")
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return UnavailableError(f"cannot settle event {event.id}: the NATS connection is closed")
    if isinstance(exc, nats.errors.OutboundBufferLimitError):
        # Disconnected, and nats-py's reconnect buffer is full.
        return UnavailableError(
            f"cannot settle event {event.id}: NATS is unreachable and the reconnect buffer is full"
        )
    if isinstance(exc, nats.errors.NoRespondersError):
        return UnavailableError(
            f"NATS did not confirm settling event {event.id}: nobody serves its consumer now"
        )
    return UnavailableError(f"cannot settle event {event.id}: {exc!r}")


def _wire_size(msg: Msg) -> int:
    """The size JetStream counts a delivered message at against a pull request's ``max_bytes``.

    Subject, reply subject, header block and data; nats-py keeps the headers
    parsed only, so their block (``NATS/1.0\\r\\n``, ``Name: value\\r\\n`` each,
    ``\\r\\n``) is counted again from them.
    """
    size = len(msg.subject) + len(msg.reply) + len(msg.data)
    headers = msg.headers
    if headers:
        size += 12 + 4 * len(headers) + sum(map(len, headers)) + sum(map(len, headers.values()))
    return size


def _event_from(subscription: Subscription, msg: Msg, now: float) -> Event | None:
    headers = msg.headers or {}
    if not headers.get(HEADER_DATA_TYPE):
        logger.error(
            "terminating event on %r in %s/%s: it has no %s header, so its data cannot be read",
            msg.subject,
            subscription.stream,
            subscription.consumer,
            HEADER_DATA_TYPE,
        )
        return None
    delivery = parse_reply(msg.reply)
    if delivery is None:
        logger.error("terminating a message with an unreadable reply subject %r", msg.reply)
        return None
    return Event(
        subscription,
        msg.reply,
        msg.subject,
        headers,
        msg.data,
        delivery.stream_sequence,
        delivery.delivery_attempt,
        delivery.timestamp_ns,
        now,
    )


__all__ = ["DEFAULT_MAX_PENDING_EVENTS", "Subscription"]
