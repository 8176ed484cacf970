"""OpenTelemetry metrics of the library: every instrument, in one place.

Example:
    Install any OpenTelemetry SDK meter provider, before or after importing
    windshift, and the instruments below report through it::

        >>> from opentelemetry import metrics
        >>> from opentelemetry.sdk.metrics import MeterProvider
        >>> metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

The library depends on ``opentelemetry-api`` only. Its instruments are created
once, at import, from the meter ``windshift``; until a meter provider is
installed they are no-ops (the API's proxy meter hands them to the provider
installed later). Counters are observable counters reading plain integer
tallies, and attribute sets are built once per stream and per consumer, so
that counting an event costs an integer increment and timing one a single
call into the SDK.

Instruments (attribute keys are ``windshift.stream``, ``windshift.consumer``,
``windshift.outcome`` and ``windshift.reject.permanent``):

* ``windshift.events.published`` (Counter, ``{event}``; stream)
* ``windshift.publish.duration`` (Histogram, ``s``; stream)
* ``windshift.events.acknowledged`` (Counter, ``{event}``; stream, consumer)
* ``windshift.events.rejected`` (Counter, ``{event}``; stream, consumer, reject.permanent)
* ``windshift.events.redelivered`` (Counter, ``{event}``; stream, consumer)
* ``windshift.events.dead_lettered`` (Counter, ``{event}``; stream, consumer)
* ``windshift.process.duration`` (Histogram, ``s``; stream, consumer, outcome)
* ``windshift.events.in_flight`` (UpDownCounter, ``{event}``; stream, consumer)
* ``windshift.handler.duration`` (Histogram, ``s``; stream, consumer, handler, outcome)
* ``windshift.handler.running`` (UpDownCounter, ``{call}``; stream, consumer, handler)
* ``windshift.handler.queued`` (UpDownCounter, ``{event}``; stream, consumer, handler)

Counters and the UpDownCounter are asynchronous (observed when the SDK
collects); readers see monotonic and non-monotonic sums as from any counter.
See docs/observability.md for what each one counts.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Observation

#: The instrumentation scope of every instrument below.
METER_NAME = "windshift"

#: Attribute keys.
HANDLER = "windshift.handler"
STREAM = "windshift.stream"
CONSUMER = "windshift.consumer"
OUTCOME = "windshift.outcome"
PERMANENT = "windshift.reject.permanent"

# Bucket boundaries (seconds), given to the SDK as advice (a View overrides them).
PUBLISH_BOUNDARIES = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
PROCESS_BOUNDARIES = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

_METER = metrics.get_meter(METER_NAME)

# Counting is the hot path: an SDK measurement costs microseconds (its
# attributes are checked and hashed every time), a Python integer increment
# tens of nanoseconds. So the counters are *observable* counters: events are
# tallied in plain integers, per stream and per consumer, and the SDK reads
# the totals when it collects (a periodic exporter does, in its own thread).
# For whoever reads the metrics they are counters like any other: monotonic
# sums, cumulative or delta as the exporter asks. Only the histograms, which
# need every value, call into the SDK per measurement.

# At most this many streams, and this many (stream, consumer) pairs, are
# tallied apart; more (ephemeral consumers come and go) share one tally
# marked ``otel.metric.overflow``, as the SDK does past its cardinality limit.
MAX_TALLIES = 2000
_OVERFLOW: Mapping[str, str | bool] = {"otel.metric.overflow": True}


class _StreamTally:
    __slots__ = ("attributes", "published")

    def __init__(self, attributes: Mapping[str, str | bool]) -> None:
        self.attributes = attributes
        self.published = 0


class _ConsumerTally:
    __slots__ = (
        "acknowledged",
        "again",
        "attributes",
        "dead_lettered",
        "never",
        "redelivered",
        "rejected_again",
        "rejected_never",
    )

    def __init__(self, attributes: Mapping[str, str | bool]) -> None:
        self.attributes = attributes
        self.again: Mapping[str, str | bool] = {**attributes, PERMANENT: False}
        self.never: Mapping[str, str | bool] = {**attributes, PERMANENT: True}
        self.acknowledged = 0
        self.rejected_again = 0
        self.rejected_never = 0
        self.redelivered = 0
        self.dead_lettered = 0


_streams: dict[str, _StreamTally] = {}
_consumers: dict[tuple[str, str], _ConsumerTally] = {}
_stream_overflow = _StreamTally(_OVERFLOW)
_consumer_overflow = _ConsumerTally(_OVERFLOW)


def _stream_tally(stream: str) -> _StreamTally:
    tally = _streams.get(stream)
    if tally is None:
        if len(_streams) >= MAX_TALLIES:
            return _stream_overflow
        tally = _streams.setdefault(stream, _StreamTally({STREAM: stream}))
    return tally


def _consumer_tally(stream: str, consumer: str) -> _ConsumerTally:
    key = (stream, consumer)
    tally = _consumers.get(key)
    if tally is None:
        if len(_consumers) >= MAX_TALLIES:
            return _consumer_overflow
        tally = _consumers.setdefault(key, _ConsumerTally({STREAM: stream, CONSUMER: consumer}))
    return tally


def _snapshot(tallies: dict[Any, Any], overflow: Any) -> list[Any]:
    # The collecting thread copies while the event loop may add a tally.
    for _ in range(3):
        try:
            found = list(tallies.values())
            break
        except RuntimeError:  # dictionary changed size during iteration
            continue
    else:
        found = []
    return [*found, overflow]


def _observe_published(options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(tally.published, tally.attributes)
        for tally in _snapshot(_streams, _stream_overflow)
        if tally.published or tally is not _stream_overflow
    ]


def _consumer_counter(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(getattr(tally, field), tally.attributes)
            for tally in _snapshot(_consumers, _consumer_overflow)
            if getattr(tally, field) or tally is not _consumer_overflow
        ]

    return observe


def _observe_rejected(options: CallbackOptions) -> Iterable[Observation]:
    observations = []
    for tally in _snapshot(_consumers, _consumer_overflow):
        if tally.rejected_again or tally is not _consumer_overflow:
            observations.append(Observation(tally.rejected_again, tally.again))
        if tally.rejected_never or tally is not _consumer_overflow:
            observations.append(Observation(tally.rejected_never, tally.never))
    return observations


def _histogram(name: str, description: str, boundaries: tuple[float, ...]) -> Histogram:
    try:
        return _METER.create_histogram(
            name,
            unit="s",
            description=description,
            explicit_bucket_boundaries_advisory=boundaries,
        )
    except TypeError:  # opentelemetry-api before 1.30 takes no advice
        return _METER.create_histogram(name, unit="s", description=description)


EVENTS_PUBLISHED = _METER.create_observable_counter(
    "windshift.events.published",
    callbacks=[_observe_published],
    unit="{event}",
    description="Events stored by publish (and by dead-letter replays); duplicates not counted.",
)
PUBLISH_DURATION = _histogram(
    "windshift.publish.duration",
    "Time from sending a publish to JetStream's acknowledgement, "
    "including the wait for a free publish slot.",
    PUBLISH_BOUNDARIES,
)
EVENTS_ACKNOWLEDGED = _METER.create_observable_counter(
    "windshift.events.acknowledged",
    callbacks=[_consumer_counter("acknowledged")],
    unit="{event}",
    description="Events a subscriber acknowledged.",
)
EVENTS_REJECTED = _METER.create_observable_counter(
    "windshift.events.rejected",
    callbacks=[_observe_rejected],
    unit="{event}",
    description="Events a subscriber rejected, to be redelivered or permanently.",
)
EVENTS_REDELIVERED = _METER.create_observable_counter(
    "windshift.events.redelivered",
    callbacks=[_consumer_counter("redelivered")],
    unit="{event}",
    description="Deliveries received with a delivery attempt above 1.",
)
EVENTS_DEAD_LETTERED = _METER.create_observable_counter(
    "windshift.events.dead_lettered",
    callbacks=[_consumer_counter("dead_lettered")],
    unit="{event}",
    description="Events stored in their consumer's dead-letter stream (once per event).",
)
PROCESS_DURATION = _histogram(
    "windshift.process.duration",
    "Time from handing an event to the application to its acknowledgement or rejection.",
    PROCESS_BOUNDARIES,
)


def published(stream: str, seconds: float, *, duplicate: bool) -> None:
    """Record one acknowledged publish into ``stream`` that took ``seconds``."""
    tally = _stream_tally(stream)
    PUBLISH_DURATION.record(seconds, tally.attributes)
    if not duplicate:
        tally.published += 1


class SubscriptionMetrics:
    """The measurements of one subscription, with its attribute sets built once.

    Args:
        stream: the consumer's stream.
        consumer: the consumer's id.
        held: the subscription's events delivered and not yet settled (its
            size is what ``windshift.events.in_flight`` reports).
    """

    __slots__ = ("__weakref__", "_acknowledged", "_held", "_rejected", "_tally", "attributes")

    def __init__(self, stream: str, consumer: str, held: Sized) -> None:
        self._tally = _consumer_tally(stream, consumer)
        self.attributes = self._tally.attributes
        self._acknowledged = {**self.attributes, OUTCOME: "acknowledged"}
        self._rejected = {**self.attributes, OUTCOME: "rejected"}
        self._held = held

    @property
    def in_flight(self) -> int:
        """Events delivered to the subscription and not yet settled."""
        return len(self._held)

    def track(self) -> None:
        """Report this subscription's events in flight from now on (until it is collected)."""
        with _tracked_lock:
            _tracked.add(self)

    def redelivered(self) -> None:
        """An event arrived again (delivery attempt above 1)."""
        self._tally.redelivered += 1

    def acknowledged(self, seconds: float) -> None:
        """An event was acknowledged ``seconds`` after it was handed out."""
        self._tally.acknowledged += 1
        PROCESS_DURATION.record(seconds, self._acknowledged)

    def rejected(self, seconds: float, *, permanently: bool) -> None:
        """An event was rejected ``seconds`` after it was handed out."""
        if permanently:
            self._tally.rejected_never += 1
        else:
            self._tally.rejected_again += 1
        PROCESS_DURATION.record(seconds, self._rejected)

    def dead_lettered(self) -> None:
        """An event was stored in the dead-letter stream."""
        self._tally.dead_lettered += 1


# Subscriptions entered and not yet garbage-collected. Read by the SDK's
# collection, which may run in another thread (a periodic exporter).
_tracked: weakref.WeakSet[SubscriptionMetrics] = weakref.WeakSet()
_tracked_lock = threading.Lock()


def _observe_in_flight(options: CallbackOptions) -> Iterable[Observation]:
    for _ in range(3):
        try:
            with _tracked_lock:
                tracked = list(_tracked)
            break
        except RuntimeError:  # a subscription collected during the copy: copy again
            continue
    else:
        return []
    # one observation per consumer (its subscriptions share one attribute set)
    totals: dict[int, tuple[int, Mapping[str, str | bool]]] = {}
    for subscription in tracked:
        key = id(subscription.attributes)
        count, attributes = totals.get(key, (0, subscription.attributes))
        totals[key] = (count + subscription.in_flight, attributes)
    return [Observation(count, attributes) for count, attributes in totals.values()]


EVENTS_IN_FLIGHT = _METER.create_observable_up_down_counter(
    "windshift.events.in_flight",
    callbacks=[_observe_in_flight],
    unit="{event}",
    description="Events delivered to this process's subscriptions and not yet settled "
    "(including those fetched and not yet handed out).",
)


class HandlerMetrics:
    """The measurements of one :class:`~windshift.Worker` handler.

    Args:
        stream: the handler's stream.
        consumer: its consumer.
        handler: its name (the function's qualified name).
        running: how many calls run right now (read at collection).
        queued: how many events wait to start (read at collection).
    """

    __slots__ = ("__weakref__", "_outcomes", "attributes", "queued", "running")

    def __init__(
        self,
        stream: str,
        consumer: str,
        handler: str,
        running: Callable[[], int],
        queued: Callable[[], int],
    ) -> None:
        self.attributes: Mapping[str, str | bool] = {
            STREAM: stream,
            CONSUMER: consumer,
            HANDLER: handler,
        }
        self._outcomes: dict[str, Mapping[str, str | bool]] = {}
        self.running = running
        self.queued = queued
        with _tracked_lock:
            _handlers.add(self)

    def called(self, seconds: float, outcome: str) -> None:
        """A call of the handler ended after ``seconds`` with ``outcome``."""
        attributes = self._outcomes.get(outcome)
        if attributes is None:
            attributes = self._outcomes.setdefault(outcome, {**self.attributes, OUTCOME: outcome})
        HANDLER_DURATION.record(seconds, attributes)

    def close(self) -> None:
        """Stop reporting this handler's running and queued counts."""
        with _tracked_lock:
            _handlers.discard(self)


_handlers: weakref.WeakSet[HandlerMetrics] = weakref.WeakSet()


def _handler_counts(read: Callable[[HandlerMetrics], int]) -> Callable[..., Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        with _tracked_lock:
            handlers = list(_handlers)
        return [Observation(read(handler), handler.attributes) for handler in handlers]

    return observe


HANDLER_DURATION = _histogram(
    "windshift.handler.duration",
    "Time a Worker handler call took, by its outcome (acknowledged, retried, given_up, "
    "settled_by_handler, cancelled).",
    PROCESS_BOUNDARIES,
)
HANDLER_RUNNING = _METER.create_observable_up_down_counter(
    "windshift.handler.running",
    callbacks=[_handler_counts(lambda handler: handler.running())],
    unit="{call}",
    description="Worker handler calls running right now.",
)
HANDLER_QUEUED = _METER.create_observable_up_down_counter(
    "windshift.handler.queued",
    callbacks=[_handler_counts(lambda handler: handler.queued())],
    unit="{event}",
    description="Events a Worker received and has not started yet (waiting for a free call, "
    "for an earlier event of their ordering key, or for their retry delay).",
)


__all__ = [
    "CONSUMER",
    "EVENTS_ACKNOWLEDGED",
    "EVENTS_DEAD_LETTERED",
    "EVENTS_IN_FLIGHT",
    "EVENTS_PUBLISHED",
    "EVENTS_REDELIVERED",
    "EVENTS_REJECTED",
    "HANDLER",
    "HANDLER_DURATION",
    "HANDLER_QUEUED",
    "HANDLER_RUNNING",
    "MAX_TALLIES",
    "METER_NAME",
    "OUTCOME",
    "PERMANENT",
    "PROCESS_DURATION",
    "PUBLISH_DURATION",
    "STREAM",
    "HandlerMetrics",
    "SubscriptionMetrics",
    "published",
]
