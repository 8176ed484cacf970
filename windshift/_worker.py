"""Worker: handlers on consumers, with concurrency, per-key ordering, retries and a graceful stop.

How it works, per handler: one subscription fetches at most ``prefetch``
events (they are pinged while they wait, so none is redelivered for waiting);
a dispatcher hands them to ``concurrency`` worker tasks, keeping events of the
same ordering key one at a time and in stream order; each call's outcome
settles the event (see :func:`conclude`). Stopping closes the subscriptions
(nothing more is fetched, buffered events go back to NATS at once), hands back
every received event that has not started, lets running calls finish within
the grace period, and cancels the rest, handing their events back too.

Retries differ with ordering, on purpose:

* without an ordering key, a failed event is rejected with the retry's delay:
  NATS redelivers it later, and the worker's slots serve other events meanwhile;
* with an ordering key, the event stays held (pinged) and is called again
  after the delay, its ``delivery_attempt`` counted up by the worker: a later
  event of the same key must not overtake it, which a redelivery through NATS
  could not promise (the later events would hold the slots the redelivery
  needs). Events of other keys run meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeVar

from windshift._client import Client
from windshift._consumers import ConsumerInfo
from windshift._events import Event
from windshift._metrics import HandlerMetrics
from windshift._names import quote_value, validate_name
from windshift._options import DEFAULT_PROCESSING_TIMEOUT
from windshift._pointers import StreamPointer
from windshift._retry import Retry
from windshift._subscriptions import DEFAULT_MAX_PENDING_EVENTS, Subscription
from windshift.errors import ConsumerNotFoundError, ValidationError, WindshiftError

logger = logging.getLogger("windshift.worker")

Handler = Callable[[Event], Awaitable[object]]
H = TypeVar("H", bound=Handler)
OrderingKey = Callable[[Event], Hashable]

#: What became of one handler call.
CallOutcome = Literal["acknowledged", "retried", "given_up", "settled_by_handler", "cancelled"]

DEFAULT_GRACE_PERIOD = timedelta(seconds=30)
DEFAULT_RETRY = Retry()
# Events fetched beyond the running calls: enough to keep calls fed between
# pull requests (the library's default for a subscription); they are pinged
# while they wait, so none is redelivered for waiting.
_MIN_PREFETCH = DEFAULT_MAX_PENDING_EVENTS
_REASON_LENGTH = 300


@dataclass(frozen=True, slots=True)
class _Spec:
    """One handler as registered with :meth:`Worker.handler`."""

    function: Handler
    name: str
    stream: str
    consumer: str
    subjects: Sequence[str] | None
    start: StreamPointer | None
    concurrency: int
    ordering_key: OrderingKey | None
    retry: Retry
    max_delivery_attempts: int | None
    dead_letter_stream: str | None
    processing_timeout: timedelta | None
    prefetch: int


class Worker:
    """Runs handlers on consumers: the application layer on top of ``subscribe``.

    Example:
        >>> worker = Worker(client)
        >>> @worker.handler("orders", "order-processor", subjects=["orders.created"],
        ...                 concurrency=16, ordering_key=lambda e: e.subject,
        ...                 retry=Retry(delay=timedelta(seconds=1)),
        ...                 max_delivery_attempts=8, dead_letter_stream="orders_dead")
        ... async def handle(event: windshift.Event) -> None:
        ...     order = event.unpack(OrderCreated)
        >>> await worker.run()      # until await worker.stop()

    A handler that returns acknowledges its event; one that raises rejects
    it, to be delivered again after the retry's delay for that attempt (or
    dead-lettered after the last one); one that settled the event itself is
    left alone. See docs/worker.md.

    Args:
        client: the connected client the handlers' subscriptions use; may be
            given to :meth:`run` instead (``windshift run`` does).
        grace_period: on :meth:`stop`, how long running handler calls may
            take to finish before they are cancelled (their events handed back).
    """

    def __init__(
        self, client: Client | None = None, *, grace_period: timedelta = DEFAULT_GRACE_PERIOD
    ) -> None:
        if not isinstance(grace_period, timedelta) or grace_period < timedelta(0):
            raise ValidationError(
                f"grace_period must be a timedelta of 0 or more, got {quote_value(grace_period)}"
            )
        self.client = client
        self.grace_period = grace_period
        self._specs: list[_Spec] = []
        self._stopping: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._serving: asyncio.Event | None = None
        self._grace: timedelta | None = None
        # Set to cut a stop's grace period short (a later, shorter stop; run cancelled).
        self._hurry: asyncio.Event | None = None

    @property
    def handlers(self) -> list[str]:
        """The names of the registered handlers, as ``stream/consumer: function``."""
        return [f"{spec.stream}/{spec.consumer}: {spec.name}" for spec in self._specs]

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is running."""
        return self._stopped is not None and not self._stopped.is_set()

    def handler(
        self,
        stream: str,
        consumer: str,
        *,
        subjects: Sequence[str] | None = None,
        start: StreamPointer | None = None,
        concurrency: int = 1,
        ordering_key: OrderingKey | None = None,
        retry: Retry | None = None,
        max_delivery_attempts: int | None = None,
        dead_letter_stream: str | None = None,
        processing_timeout: timedelta | None = None,
        prefetch: int | None = None,
    ) -> Callable[[H], H]:
        """Register an ``async def handler(event)`` for a durable consumer.

        Args:
            stream: the consumer's stream.
            consumer: the durable consumer's name.
            subjects: given, the consumer is ensured at start with these
                subjects and the options below; left out, it must already
                exist (checked at start).
            start: where a new consumer starts reading (with ``subjects``).
            concurrency: at most this many calls of the handler at once.
            ordering_key: a function of the event; events with the same key
                run one at a time, in stream order, also across retries.
            retry: how long a failed event waits before it is tried again
                (default: ``Retry()``, 1 s doubling up to 5 minutes, ±10 %).
            max_delivery_attempts: give an event up after this many attempts
                (with ``subjects``): moved to ``dead_letter_stream`` if there
                is one, else dropped.
            dead_letter_stream: where events given up on are moved (with ``subjects``).
            processing_timeout: the consumer's processing timeout (with
                ``subjects``); a call running past it is pinged, never redelivered.
            prefetch: at most this many events fetched and not yet settled
                (default: twice ``concurrency``, at least 50, a subscription's
                default); they are pinged while they wait.

        Raises:
            ValidationError: a bad name or option, a handler that is not an
                ``async def``, or consumer options without ``subjects``.
        """
        validate_name("stream", stream)
        validate_name("consumer", consumer)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(
                f"concurrency must be a whole number of 1 or more, got {quote_value(concurrency)}"
            )
        if ordering_key is not None and not callable(ordering_key):
            raise ValidationError(
                f"ordering_key must be a function of the event, got {quote_value(ordering_key)}"
            )
        if retry is not None and not isinstance(retry, Retry):
            raise ValidationError(f"retry must be a windshift.Retry, got {quote_value(retry)}")
        depth = max(2 * concurrency, _MIN_PREFETCH) if prefetch is None else prefetch
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < concurrency:
            raise ValidationError(
                f"prefetch must be a whole number of at least concurrency ({concurrency}), "
                f"got {quote_value(prefetch)}"
            )
        consumer_options = {
            "start": start,
            "max_delivery_attempts": max_delivery_attempts,
            "dead_letter_stream": dead_letter_stream,
            "processing_timeout": processing_timeout,
        }
        if subjects is None and any(value is not None for value in consumer_options.values()):
            given = ", ".join(key for key, value in consumer_options.items() if value is not None)
            raise ValidationError(
                f"{given}: options of the consumer, which the worker sets only when it ensures "
                f"the consumer; give subjects= as well, or set them where {consumer!r} is made"
            )

        def register(function: H) -> H:
            is_async = inspect.iscoroutinefunction(function)
            if not is_async:
                raise ValidationError(
                    f"a handler must be an async def function, got {quote_value(function)}"
                )
            name = getattr(function, "__qualname__", repr(function))
            if any(spec.stream == stream and spec.consumer == consumer for spec in self._specs):
                raise ValidationError(
                    f"consumer {consumer!r} on stream {stream!r} already has a handler"
                )
            self._specs.append(
                _Spec(
                    function=function,
                    name=name,
                    stream=stream,
                    consumer=consumer,
                    subjects=None if subjects is None else list(subjects),
                    start=start,
                    concurrency=concurrency,
                    ordering_key=ordering_key,
                    retry=DEFAULT_RETRY if retry is None else retry,
                    max_delivery_attempts=max_delivery_attempts,
                    dead_letter_stream=dead_letter_stream,
                    processing_timeout=processing_timeout,
                    prefetch=depth,
                )
            )
            return function

        return register

    async def run(self, client: Client | None = None) -> None:
        """Run every handler until :meth:`stop`; returns once everything is handed back.

        Consumers are ensured (or checked) first, so a set-up error is raised
        here at start, not at the first event. A subscription that fails for
        good (its consumer deleted) stops the worker and is raised.

        Args:
            client: the client to use; the one given to the constructor by default.

        Raises:
            ValidationError: no client, no handler, or already running.
            ConsumerNotFoundError: a handler's consumer does not exist (and
                the handler has no ``subjects`` to ensure it).
        """
        client = client or self.client
        if client is None:
            raise ValidationError("the worker has no client: use Worker(client) or run(client)")
        if not self._specs:
            raise ValidationError("the worker has no handlers: register one with @worker.handler")
        if self.running:
            raise ValidationError("the worker is already running")
        self._stopping, self._stopped = asyncio.Event(), asyncio.Event()
        serving = self._serving = self._serving or asyncio.Event()
        self._grace = None
        hurry = self._hurry = asyncio.Event()
        runners = [_Runner(spec, client) for spec in self._specs]
        try:
            for runner in runners:
                await runner.prepare()
            tasks = [
                asyncio.create_task(runner.run(), name=f"windshift-worker-{runner.spec.name}")
                for runner in runners
            ]
            stop = asyncio.ensure_future(self._stopping.wait())
            announce = asyncio.ensure_future(
                asyncio.gather(*(runner.subscribed.wait() for runner in runners))
            )
            announce.add_done_callback(lambda done: None if done.cancelled() else serving.set())
            try:
                await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                self._grace = timedelta(0)  # cancelled: stop at once
                raise
            finally:
                stop.cancel()
                announce.cancel()
                grace = self.grace_period if self._grace is None else self._grace

                async def close() -> None:
                    await asyncio.gather(*(runner.shutdown(grace, hurry) for runner in runners))
                    await asyncio.gather(*tasks, return_exceptions=True)

                closing = asyncio.ensure_future(close())
                try:
                    await asyncio.shield(closing)
                except asyncio.CancelledError:
                    # Cancelled while stopping: stop at once, but still hand
                    # everything back before the cancellation goes on.
                    hurry.set()
                    await closing
                    raise
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for runner in runners:
                runner.close_metrics()
            self._stopped.set()
            self._serving = None

    async def serving(self) -> None:
        """Return once every handler has its consumer and is subscribed (after :meth:`run` started).

        Example:
            >>> task = asyncio.create_task(worker.run())
            >>> await worker.serving()     # consumers ensured, events flowing
        """
        if self._serving is None:
            self._serving = asyncio.Event()
        await self._serving.wait()

    async def stop(self, *, grace_period: timedelta | None = None) -> None:
        """Stop the worker and wait until :meth:`run` has handed everything back.

        Nothing more is fetched; events received and not started go back to
        NATS at once; running calls get the grace period to finish, then are
        cancelled (their events handed back). Safe to call more than once, and
        when the worker is not running.

        Args:
            grace_period: this stop's grace period, instead of the worker's.
                Given while a stop is already under way, it cuts that stop's
                grace period short when it ends sooner:
                ``stop(grace_period=timedelta(0))`` cancels the running calls
                at once (a second Ctrl-C).
        """
        if self._stopping is None or self._stopped is None or self._stopped.is_set():
            return
        if grace_period is not None:
            self._grace = grace_period
            if self._stopping.is_set() and self._hurry is not None:
                # Already stopping with the grace period it had: end it sooner.
                hurry = self._hurry
                asyncio.get_running_loop().call_later(grace_period.total_seconds(), hurry.set)
        self._stopping.set()
        await self._stopped.wait()


class _Runner:
    """One handler at work: its subscription, its calls, its keys."""

    def __init__(self, spec: _Spec, client: Client) -> None:
        self.spec = spec
        self._client = client
        #: Set once the handler's subscription is open.
        self.subscribed = asyncio.Event()
        self._max_attempts: int | None = None
        self._ready: asyncio.Queue[Event | None] = asyncio.Queue()
        self._keys: dict[int, Hashable] = {}  # event id -> its ordering key
        self._busy: set[Hashable] = set()  # keys with an event running or retrying
        self._waiting: dict[Hashable, deque[Event]] = {}  # behind a busy key
        self._retrying: dict[int, tuple[Event, asyncio.TimerHandle]] = {}
        self._running = 0
        self._subscription: Subscription | None = None
        self._closing = False
        self._workers: list[asyncio.Task[None]] = []
        self._metrics = HandlerMetrics(
            spec.stream, spec.consumer, spec.name, lambda: self._running, self._queued
        )
        self._clock = time.perf_counter

    def _queued(self) -> int:
        return (
            self._ready.qsize()
            + sum(len(waiting) for waiting in self._waiting.values())
            + len(self._retrying)
        )

    async def prepare(self) -> None:
        """Ensure the consumer (with subjects), or check that it exists."""
        spec = self.spec
        info: ConsumerInfo
        if spec.subjects is not None:
            info = await self._client.ensure_consumer(
                spec.stream,
                spec.consumer,
                processing_timeout=spec.processing_timeout or DEFAULT_PROCESSING_TIMEOUT,
                subjects=spec.subjects,
                start=spec.start,
                max_delivery_attempts=spec.max_delivery_attempts,
                dead_letter_stream=spec.dead_letter_stream,
            )
        else:
            try:
                info = await self._client.consumer_info(spec.stream, spec.consumer)
            except ConsumerNotFoundError:
                raise ConsumerNotFoundError(
                    f"handler {spec.name}: consumer {spec.consumer!r} on stream {spec.stream!r} "
                    "does not exist; create it, or give the handler subjects= so that the "
                    "worker ensures it",
                    stream=spec.stream,
                    consumer=spec.consumer,
                ) from None
        self._max_attempts = info.max_delivery_attempts

    async def run(self) -> None:
        """Fetch and dispatch until the subscription ends (closed by :meth:`shutdown`)."""
        spec = self.spec
        subscription = self._client.subscribe(
            spec.stream, spec.consumer, max_pending_events=spec.prefetch
        )
        self._subscription = subscription
        async with subscription:
            ordered = spec.ordering_key is not None
            # Unordered, the calls take events straight from the subscription
            # (several tasks may iterate it); ordered, a dispatcher keeps keys apart.
            work = self._work if ordered else self._take_and_work
            self._workers = [
                asyncio.create_task(work(), name=f"windshift-worker-{spec.name}-{n}")
                for n in range(spec.concurrency)
            ]
            self.subscribed.set()
            logger.info(
                "worker handler %s on %s/%s started (concurrency %d)",
                spec.name,
                spec.stream,
                spec.consumer,
                spec.concurrency,
                extra={"stream": spec.stream, "consumer": spec.consumer},
            )
            if not ordered:
                await asyncio.gather(*self._workers)
                return
            async for event in subscription:
                if self._closing:  # handed out while closing: give it back
                    await _hand_back(event)
                    continue
                self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        key_of = self.spec.ordering_key
        if key_of is None:
            self._ready.put_nowait(event)
            return
        try:
            key = key_of(event)
            hash(key)
        except Exception:
            logger.exception(
                "handler %s: the ordering key of event %d could not be made; it runs unordered",
                self.spec.name,
                event.id,
            )
            self._ready.put_nowait(event)
            return
        self._keys[event.id] = key
        if key in self._busy:
            self._waiting.setdefault(key, deque()).append(event)
        else:
            self._busy.add(key)
            self._ready.put_nowait(event)

    async def _take_and_work(self) -> None:
        """One unordered call slot: the next event of the subscription, then the next."""
        subscription = self._subscription
        assert subscription is not None
        async for event in subscription:
            if self._closing:
                await _hand_back(event)
                continue
            self._running += 1
            try:
                await self._call(event)
            finally:
                self._running -= 1

    async def _work(self) -> None:
        """One ordered call slot: the next event the dispatcher made ready."""
        while True:
            event = await self._ready.get()
            if event is None:
                return
            if self._closing:
                await _hand_back(event)
                continue
            self._running += 1
            try:
                outcome, delay = await self._call(event)
            finally:
                self._running -= 1
            if self._closing and event.settled is None:  # a retry in place, cut short
                await _hand_back(event)
            self._after(event, outcome, delay)

    async def _call(self, event: Event) -> tuple[CallOutcome, timedelta | None]:
        spec = self.spec
        clock = self._clock
        started = clock()
        outcome: CallOutcome = "cancelled"
        delay: timedelta | None = None
        try:
            try:
                await spec.function(event)
                # The usual end, inline (the hot path of every event).
                if event.settled is None:
                    await event.ack()
                    outcome = "acknowledged"
                else:
                    outcome = "settled_by_handler"
            except asyncio.CancelledError:
                await _hand_back(event)
                raise
            except Exception as failure:
                logger.error(
                    "handler %s failed on event %d of %s/%s (attempt %d)",
                    spec.name,
                    event.id,
                    spec.stream,
                    spec.consumer,
                    event.delivery_attempt,
                    exc_info=failure,
                    extra={"stream": spec.stream, "consumer": spec.consumer, "event_id": event.id},
                )
                outcome, delay = await conclude(
                    event,
                    failure,
                    spec.retry,
                    in_place=event.id in self._keys,
                    max_attempts=self._max_attempts,
                )
        except WindshiftError as exc:  # settling failed (NATS away): it comes back by itself
            logger.warning("handler %s: could not settle event %d: %s", spec.name, event.id, exc)
            outcome = "cancelled"
        finally:
            self._metrics.called(clock() - started, outcome)
        return outcome, delay

    def _after(self, event: Event, outcome: CallOutcome, delay: timedelta | None) -> None:
        """Release the event's key (or schedule its retry, for ordered handlers)."""
        if event.id not in self._keys:
            return
        if outcome == "retried" and delay is not None and event.settled is None:
            # Ordered: the event stays held (pinged) and runs again after the delay.
            loop = asyncio.get_running_loop()
            timer = loop.call_later(delay.total_seconds(), self._retry, event)
            self._retrying[event.id] = (event, timer)
            return
        key = self._keys.pop(event.id)
        waiting = self._waiting.get(key)
        if waiting:
            self._ready.put_nowait(waiting.popleft())
            if not waiting:
                del self._waiting[key]
        else:
            self._busy.discard(key)

    def _retry(self, event: Event) -> None:
        self._retrying.pop(event.id, None)
        if self._closing:
            return
        event.delivery_attempt += 1  # the worker counts the attempts it makes in place
        self._ready.put_nowait(event)

    async def shutdown(self, grace: timedelta, hurry: asyncio.Event) -> None:
        """Stop fetching, hand back what has not started, give running calls ``grace``.

        ``hurry`` set ends the grace period early.
        """
        self._closing = True
        subscription = self._subscription
        if subscription is not None:
            await subscription.close()
        unstarted: list[Event] = []
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if item is not None:
                unstarted.append(item)
        for waiting in self._waiting.values():
            unstarted.extend(waiting)
        self._waiting.clear()
        for event, timer in self._retrying.values():
            timer.cancel()
            unstarted.append(event)
        self._retrying.clear()
        await asyncio.gather(*(_hand_back(event) for event in unstarted))
        if self.spec.ordering_key is not None:
            for _ in self._workers:  # the dispatcher's slots wait on the queue
                self._ready.put_nowait(None)
        if self._workers:
            # asyncio.wait, not gather: cancelling the waiter leaves the calls running.
            finished = asyncio.ensure_future(asyncio.wait(self._workers))
            hurried = asyncio.ensure_future(hurry.wait())
            try:
                await asyncio.wait(
                    [finished, hurried],
                    timeout=grace.total_seconds(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                finished.cancel()
                hurried.cancel()
            late = [task for task in self._workers if not task.done()]
            for task in late:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            if late:
                logger.warning(
                    "handler %s: %d calls still running after the grace period; cancelled, "
                    "their events handed back",
                    self.spec.name,
                    len(late),
                )

    def close_metrics(self) -> None:
        self._metrics.close()


async def _hand_back(event: Event) -> None:
    """Give an unsettled event back to NATS now (delivered again at once)."""
    if event.settled is None:
        with contextlib.suppress(WindshiftError):
            await event.reject()


async def conclude(
    event: Event,
    failure: BaseException | None,
    retry: Retry,
    *,
    in_place: bool,
    max_attempts: int | None,
) -> tuple[CallOutcome, timedelta | None]:
    """Settle ``event`` after a handler call, by the worker's rules.

    * returned (``failure`` None): acknowledged, unless the handler settled it;
    * raised, and the handler settled it anyway: left as it is;
    * raised: rejected with ``retry.delay_for(attempt)``; after the last of
      ``max_attempts`` given up (moved to the dead letters when the consumer
      has a dead-letter stream, else dropped). With ``in_place`` (ordered
      handlers) a failure that is not the last is not rejected: the caller
      calls the handler again after the returned delay.

    Returns:
        What became of the call, and the retry delay when there is one.
    """
    if event.settled is not None:
        return "settled_by_handler", None
    if failure is None:
        await event.ack()
        return "acknowledged", None
    attempt = event.delivery_attempt
    if max_attempts is None or attempt < max_attempts:
        delay = retry.delay_for(attempt)
        if not in_place:
            await event.reject(delay=delay)
        return "retried", delay
    # The last attempt: moved to the dead letters at once when the consumer
    # has a dead-letter stream (the library does so for a reject on the last
    # attempt), else dropped for good.
    reason = f"handler failed: {type(failure).__name__}: {failure}"[:_REASON_LENGTH]
    if event._source.dead_letters is not None:
        await event.reject(reason=reason)
    else:
        await event.reject(permanently=True, reason=reason)
    return "given_up", None


__all__ = ["DEFAULT_GRACE_PERIOD", "CallOutcome", "Handler", "Worker", "conclude"]
