"""One ``Events`` call: a subscription, the ids it handed out, and their confirmations.

The protocol, from the client's side: send a Subscribe first (anything else
is INVALID_ARGUMENT), read Subscribed with the consumer's processing timeout,
then read events and send Ack, Reject and Ping requests, each answered by one
confirmation in the order the requests were sent. At most
``max_processing_events`` events (50 when unset or 0) are out at once: the
library subscription never holds more, and the next arrives when one is
settled or forgotten.

Bookkeeping is the library subscription's (opened with ``auto_ping=False``):
it holds the events delivered on this call and not yet settled, never more
than ``max_processing_events``, and gives up those whose processing timeout
passes without a ping (NATS then delivers them again, possibly on this call,
with the same id). An id the subscription does not hold, or holds settled,
is answered in ``invalid_ids``; an id NATS did not confirm, in
``temporary_failed_ids`` (it stays valid, the client may send it again).

The call ends with OK when the client half-closes or the server shuts down
(pending confirmations are sent first), and with the mapped error status
when the subscription fails or the client breaks the protocol. Events handed
to the client and not settled are redelivered by NATS once their processing
timeout passes; events fetched but never sent are handed back at once.

A client that sets ``max_batch`` above 1 gets its events in ``events``
messages (an ``EventBatch``) instead: each holds the events ready at the
moment it is written, up to ``max_batch`` of them and about
:data:`MAX_BATCH_BYTES` (a single larger event comes alone). A batch never
waits to fill: when one event is ready, it goes alone. What is ready is what
the subscription delivered and the client was not yet sent, so a batch
holds no more than flow control (``max_processing_events``,
``max_pending_bytes``) lets the call hold. Confirmations keep their place:
a batch never reaches over one. Without ``max_batch`` (or 0, 1) the bytes on
the wire are the original's, one ``event`` per message.

What one call may cost the server is bounded (:class:`CallLimits`):

* the Subscribe must come within ``first_message_timeout`` seconds
  (INVALID_ARGUMENT otherwise), and the call takes its place among the open
  Events calls only once it is validated, just before the subscription
  opens (:class:`~windshift_grpc.admission.EventsCall`);
* the events it holds: at most ``max_processing_events`` and at most
  ``max_pending_bytes`` bytes of them (one larger event alone);
* an Ack, Reject or Ping names at most ``max_ids`` ids (INVALID_ARGUMENT
  naming the limit);
* requests are read only while fewer than :data:`MAX_REQUESTS_IN_FLIGHT`
  requests, naming fewer than ``max_ids`` ids in all, are being settled or
  wait for their confirmation to be sent. A client that does not read its
  confirmations therefore stops being read, and gRPC flow control holds
  its further requests on its side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import windshift
from windshift import Event, EventSettledError, UnavailableError, ValidationError, WindshiftError
from windshift_grpc import convert
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc.admission import EventsCall

logger = logging.getLogger("windshift_grpc.events")

DEFAULT_MAX_PROCESSING_EVENTS = 50
#: Larger ``max_processing_events`` values are lowered to this.
MAX_PROCESSING_EVENTS = 10_000
#: The largest ``max_batch`` a Subscribe may ask for.
MAX_BATCH = 1000
#: A batch ends before its events would pass this many bytes (as encoded),
#: well under the 4 MiB gRPC clients receive by default; a larger event comes alone.
MAX_BATCH_BYTES = 1024 * 1024
#: Ack/reject/ping requests of one call being settled or waiting for their
#: confirmation to be sent, at most; reading more waits (and so does the
#: client, through gRPC flow control).
MAX_REQUESTS_IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class CallLimits:
    """What one Events call may hold on the server (the ``WINDSHIFT_EVENTS_*`` settings).

    Attributes:
        first_message_timeout: seconds the Subscribe may take to arrive.
        max_ids: ids one Ack, Reject or Ping may name; also the ids that
            the requests being settled or confirmed may name in all before
            reading waits (one request alone may always be read).
        max_pending_bytes: bytes of events the call's subscription holds at
            most (one event larger than this is still delivered, alone);
            None: no bound in bytes.
    """

    first_message_timeout: float = 5.0
    max_ids: int = 10_000
    max_pending_bytes: int | None = 4 * 1024 * 1024


#: Settles held events of the call, one outcome each (a Subscription's ``*_many``).
Settle = Callable[[list[Event]], Awaitable[list[WindshiftError | None]]]


class _Settling:
    """A request being settled: its confirmation to be, and how many ids it names."""

    __slots__ = ("ids", "task")

    def __init__(self, task: asyncio.Task[pb.EventsResponse], ids: int) -> None:
        self.task = task
        self.ids = ids


_Outgoing = Event | _Settling


async def events_call(
    client: windshift.Client,
    requests: AsyncIterator[pb.EventsRequest],
    stopping: asyncio.Event,
    limits: CallLimits | None = None,
    call: EventsCall | None = None,
) -> AsyncGenerator[pb.EventsResponse, None]:
    """Serve one Events call: yields the responses to send.

    Args:
        client: the library client.
        requests: the client's messages.
        stopping: set when the server shuts down; the call then ends with OK.
        limits: what the call may hold (None: the defaults).
        call: its place among the open Events calls (taken before the
            subscription opens, given back when it ends); through it a
            reload of the tokens file ends the call. None: not counted.

    Raises:
        ValidationError: the first message is not a Subscribe or does not
            come within ``limits.first_message_timeout``, or a later one is
            a Subscribe, empty or names more than ``limits.max_ids`` ids; the
            Subscribe's ``max_batch`` is negative or above :data:`MAX_BATCH`.
        NotFoundError: the stream or the consumer does not exist (or the
            consumer is deleted during the call).
        TooManyCallsError: the server, or the call's token, has as many open
            Events calls as allowed.
        UnavailableError: NATS did not answer.
    """
    limits = limits or CallLimits()
    first = await _first_request(requests, stopping, limits.first_message_timeout)
    if first is None:
        return
    kind = first.WhichOneof("request")
    if kind != "subscribe":
        raise ValidationError(
            f"the first message of an Events call must be a subscribe, got {kind or 'an empty one'}"
        )
    subscribe = first.subscribe
    max_batch = subscribe.max_batch
    if not 0 <= max_batch <= MAX_BATCH:
        raise ValidationError(
            f"subscribe.max_batch must be 0 to {MAX_BATCH} (0 or 1: one event per message), "
            f"got {max_batch}"
        )
    limit = min(
        subscribe.max_processing_events or DEFAULT_MAX_PROCESSING_EVENTS, MAX_PROCESSING_EVENTS
    )
    subscription = client.subscribe(
        subscribe.stream,
        subscribe.consumer,
        max_pending_events=limit,
        max_pending_bytes=limits.max_pending_bytes,
        auto_ping=False,
    )
    # Counted from here: the Subscribe passed authentication, the consume
    # check and validation; a refused call never opens a subscription (which
    # could take events and hand them back, one delivery attempt spent).
    if call is not None:
        call.enter()
    try:
        await subscription.__aenter__()
    except BaseException:
        if call is not None:
            call.leave()
        await _close(subscription)  # whatever the opening left behind
        raise
    try:
        logger.debug(
            "subscribed to %s/%s (at most %d events out)",
            subscribe.stream,
            subscribe.consumer,
            limit,
        )
        yield pb.EventsResponse(
            subscribed=pb.EventsResponse.Subscribed(
                processing_timeout=convert.to_duration(subscription.processing_timeout)
            )
        )
        running = _Call(subscription, requests, stopping, limits.max_ids, call, max_batch)
        async with contextlib.aclosing(running.run()) as responses:
            async for response in responses:
                yield response
    finally:
        if call is not None:
            call.leave()
        await _close(subscription)


# Closings that outlive their call (kept referenced until done).
_closing: set[asyncio.Task[None]] = set()


async def _close(subscription: windshift.Subscription) -> None:
    """Close the subscription to the end, even when the call is cancelled meanwhile.

    gRPC cancels a call's task when the client goes away, possibly while the
    call is already ending; the closing (hand back buffered events, drain the
    NATS subscription) then goes on in its own task.
    """
    task = asyncio.ensure_future(subscription.close())
    _closing.add(task)
    task.add_done_callback(_closed)
    await asyncio.shield(task)


def _closed(task: asyncio.Task[None]) -> None:
    _closing.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("closing a subscription failed: %r", task.exception())


async def _first_request(
    requests: AsyncIterator[pb.EventsRequest], stopping: asyncio.Event, timeout: float
) -> pb.EventsRequest | None:
    """The first message, or None when the server stops before it arrives.

    Raises:
        ValidationError: it did not arrive within ``timeout`` seconds, or the
            client half-closed without sending it.
    """
    read = asyncio.ensure_future(anext(requests, None))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((read, stop), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not read.done():
            read.cancel()
            with contextlib.suppress(BaseException):
                await read
    if read.cancelled():
        if stopping.is_set():
            return None
        raise ValidationError(
            f"no subscribe within {timeout:g}s of the Events call's start "
            "(WINDSHIFT_EVENTS_FIRST_MESSAGE_TIMEOUT): send it as the first message"
        )
    first = read.result()
    if first is None:
        raise ValidationError("the Events call ended before its first message, a subscribe")
    return first


class _Call:
    """The running part of an Events call, after Subscribed was sent."""

    def __init__(
        self,
        subscription: windshift.Subscription,
        requests: AsyncIterator[pb.EventsRequest],
        stopping: asyncio.Event,
        max_ids: int,
        call: EventsCall | None,
        max_batch: int = 0,
    ) -> None:
        self._subscription = subscription
        self._max_batch = max_batch
        self._requests = requests
        self._stopping = stopping
        self._max_ids = max_ids
        self._call = call
        self._outbox: deque[_Outgoing] = deque()
        self._wakeup = asyncio.Event()
        # Requests read and not yet confirmed (sent), and the ids they name.
        self._in_flight = 0
        self._in_flight_ids = 0
        self._room = asyncio.Event()
        self._ended = False
        self._error: BaseException | None = None

    async def run(self) -> AsyncGenerator[pb.EventsResponse, None]:
        if self._call is not None:
            self._call.on_end(self._end)  # a reload withdrew the token: end now
        workers = [
            asyncio.create_task(self._pump(), name="windshift-grpc-events-pump"),
            asyncio.create_task(self._read(), name="windshift-grpc-events-read"),
            asyncio.create_task(self._watch_stop(), name="windshift-grpc-events-stop"),
        ]
        unsent: list[Event] = []
        try:
            while not self._ended:
                if not self._outbox:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                item = self._outbox.popleft()
                if isinstance(item, Event):
                    if self._max_batch > 1:
                        batch = self._batch(item)
                        if batch is not None:
                            yield batch
                    elif item.settled is None:  # not given up while queued
                        yield pb.EventsResponse(event=convert.event(item))
                else:
                    yield await item.task
                    self._confirmed(item)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if self._error is None:
                # Ending cleanly: answer what the client already asked for.
                while self._outbox:
                    item = self._outbox.popleft()
                    if isinstance(item, Event):
                        unsent.append(item)
                    else:
                        yield await item.task
                        self._confirmed(item)
        finally:
            if self._call is not None:
                self._call.on_end(None)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._give_back(unsent)
        if self._error is not None:
            raise self._error

    def _batch(self, first: Event) -> pb.EventsResponse | None:
        """``first`` and the events queued right behind it, as one batch (see the module docstring).

        Takes events from the head of the outbox only, so a confirmation
        queued between two events still goes out between them. An event
        that would take the batch past :data:`MAX_BATCH_BYTES` stays queued
        for the next one. None when every event taken was given up meanwhile.
        """
        outbox = self._outbox
        response = pb.EventsResponse()
        batch = response.events.events
        size = 0
        event = first
        while True:
            if event.settled is None:  # not given up while queued
                # Written in place (no copy of each event into the batch).
                converted = batch.add()
                convert.fill_event(converted, event)
                size += converted.ByteSize()
                if len(batch) > 1 and size > MAX_BATCH_BYTES:
                    del batch[-1]
                    outbox.appendleft(event)
                    return response
            if len(batch) >= self._max_batch or not outbox:
                return response if batch else None
            following = outbox[0]
            if not isinstance(following, Event):
                return response if batch else None
            outbox.popleft()
            event = following

    def _confirmed(self, settling: _Settling) -> None:
        """Count a request out: its confirmation is sent (the yield returned), not just made."""
        self._in_flight -= 1
        self._in_flight_ids -= settling.ids
        self._room.set()

    async def _give_back(self, unsent: list[Event]) -> None:
        """Hand events that never reached the client back to NATS, and stop confirmations."""
        for item in self._outbox:
            if isinstance(item, Event):
                unsent.append(item)
            else:
                item.task.cancel()
        self._outbox.clear()
        for event in unsent:
            if event.settled is None:
                with contextlib.suppress(WindshiftError):
                    await event.reject()

    def _end(self, error: Exception | None = None) -> None:
        if not self._ended:
            self._ended = True
            self._error = error
            self._wakeup.set()

    def _send(self, item: _Outgoing) -> None:
        self._outbox.append(item)
        self._wakeup.set()

    async def _watch_stop(self) -> None:
        await self._stopping.wait()
        self._end()

    async def _pump(self) -> None:
        """Move events from the subscription to the outbox."""
        try:
            async for event in self._subscription:
                self._send(event)
        except Exception as exc:
            self._end(exc)
        else:
            self._end()

    async def _read(self) -> None:
        """Read the client's requests and start settling each, while there is room."""
        try:
            async for request in self._requests:
                settle, ids = self._settlement(request)
                self._in_flight += 1
                self._in_flight_ids += ids
                self._send(_Settling(asyncio.create_task(settle), ids))
                while (
                    self._in_flight >= MAX_REQUESTS_IN_FLIGHT
                    or self._in_flight_ids >= self._max_ids
                ):
                    self._room.clear()
                    await self._room.wait()
        except Exception as exc:
            self._end(exc)
        else:
            self._end()

    def _settlement(
        self, request: pb.EventsRequest
    ) -> tuple[Coroutine[Any, Any, pb.EventsResponse], int]:
        """The settling of one request, and how many ids it names.

        Raises:
            ValidationError: not an ack, reject or ping; more ids than allowed;
                a negative delay.
        """
        kind = request.WhichOneof("request")
        if kind == "ack":
            ids = self._ids(kind, request.ack.ids)
            return self._ack(ids), len(ids)
        if kind == "reject":
            reject = request.reject
            ids = self._ids(kind, reject.ids)
            if reject.permanently:
                reason = reject.reason if reject.HasField("reason") else None
                return self._reject(ids, None, permanently=True, reason=reason), len(ids)
            delay = (
                convert.duration(reject.delay, "reject.delay") if reject.HasField("delay") else None
            )
            if delay is not None and delay < timedelta(0):
                raise ValidationError(f"reject.delay must not be negative, got {delay}")
            return self._reject(ids, delay, permanently=False), len(ids)
        if kind == "ping":
            ids = self._ids(kind, request.ping.ids)
            return self._ping(ids), len(ids)
        if kind == "subscribe":
            raise ValidationError(
                "this Events call is already subscribed: subscribe may only be the first message"
            )
        raise ValidationError("an Events request must set one of ack, reject or ping; got none")

    def _ids(self, kind: str, ids: Any) -> list[int]:
        """The ids of one request, refused before they are copied when there are too many."""
        if len(ids) > self._max_ids:
            raise ValidationError(
                f"{kind} names {len(ids)} ids, more than the {self._max_ids} one request may "
                "name (WINDSHIFT_EVENTS_MAX_IDS_PER_REQUEST); send them in several requests"
            )
        return list(ids)

    async def _ack(self, ids: list[int]) -> pb.EventsResponse:
        subscription = self._subscription
        done, invalid, failed = await self._settle_ids(
            ids, lambda events: subscription.ack_many(events, confirm=True)
        )
        return pb.EventsResponse(
            ack_confirmation=pb.EventsResponse.AckConfirmation(
                ids=done, invalid_ids=invalid, temporary_failed_ids=failed
            )
        )

    async def _reject(
        self,
        ids: list[int],
        delay: timedelta | None,
        *,
        permanently: bool,
        reason: str | None = None,
    ) -> pb.EventsResponse:
        def reject(events: list[Event]) -> Awaitable[list[WindshiftError | None]]:
            return self._subscription.reject_many(
                events, delay=delay, permanently=permanently, reason=reason, confirm=True
            )

        done, invalid, failed = await self._settle_ids(ids, reject)
        return pb.EventsResponse(
            reject_confirmation=pb.EventsResponse.RejectConfirmation(
                ids=done, invalid_ids=invalid, temporary_failed_ids=failed
            )
        )

    async def _ping(self, ids: list[int]) -> pb.EventsResponse:
        subscription = self._subscription
        done, invalid, failed = await self._settle_ids(
            ids, lambda events: subscription.ping_many(events, confirm=True)
        )
        return pb.EventsResponse(
            ping_confirmation=pb.EventsResponse.PingConfirmation(
                ids=done, invalid_ids=invalid, temporary_failed_ids=failed
            )
        )

    async def _settle_ids(
        self, ids: list[int], settle: Settle
    ) -> tuple[list[int], list[int], list[int]]:
        """Apply ``settle`` to the held events with these ids, all in one go.

        A final settlement (ack, reject) marks its events settled before its
        first await, so that a later request naming the same id finds it gone;
        one NATS did not confirm leaves it unsettled, for the client to retry.

        Returns:
            The ids done, the invalid ones and the ones that failed for now.
        """
        invalid: list[int] = []
        targets: list[Event] = []
        seen: set[int] = set()
        for event_id in ids:
            event = self._subscription.held_event(event_id)
            if event is None or event_id in seen:
                invalid.append(event_id)
                continue
            seen.add(event_id)
            targets.append(event)
        outcomes = await settle(targets) if targets else []
        done: list[int] = []
        failed: list[int] = []
        for event, outcome in zip(targets, outcomes, strict=True):
            if outcome is None:
                done.append(event.id)
            elif isinstance(outcome, EventSettledError):
                invalid.append(event.id)
            elif isinstance(outcome, UnavailableError):
                failed.append(event.id)
            else:
                logger.error("settling event %d failed: %s", event.id, outcome)
                failed.append(event.id)
        return done, invalid, failed


__all__ = [
    "DEFAULT_MAX_PROCESSING_EVENTS",
    "MAX_BATCH",
    "MAX_BATCH_BYTES",
    "MAX_PROCESSING_EVENTS",
    "MAX_REQUESTS_IN_FLIGHT",
    "CallLimits",
    "events_call",
]
