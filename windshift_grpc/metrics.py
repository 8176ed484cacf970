"""``/metrics`` of ``windshift-grpc serve`` (``WINDSHIFT_METRICS=on``), and the server's instruments.

Example:
    >>> exporter = Exporter()
    >>> telemetry.configure(metric_readers=[exporter.reader])
    >>> observe(sampler)
    >>> http.app.add_routes(http_routes(exporter, access))

What a scrape returns is the text that ``prometheus_client`` makes of one
registry (:attr:`Exporter.registry`), in the format the scraper's ``Accept``
header asks for (Prometheus text, or OpenMetrics):

- the OpenTelemetry metrics of the process, through the OpenTelemetry
  Prometheus exporter's :class:`PrometheusMetricReader`, which joins the SDK
  meter provider beside any exporter ``OTEL_METRICS_EXPORTER`` names (OTLP
  and Prometheus at once): the library's instruments (``windshift/_metrics.py``),
  :data:`RPC_DURATION`, and the gauges :func:`observe` makes of the
  :class:`~windshift_grpc.sampling.Sampler`'s latest round (every consumer's
  counts and lag, every dead-letter stream's size);
- the process' own CPU, memory and file descriptors (``process_*``, from
  ``prometheus_client``).

The registry is the exporter's own, not ``prometheus_client``'s global one, so
that ``OTEL_METRICS_EXPORTER=prometheus`` (which serves the global one on its
own port) does not double anything. :func:`exposition` is the one function
that turns a registry into a scrape's answer, for whatever serves it.

With ``serve --workers N`` the supervisor serves ``/metrics``: its own
registry (its sampler's gauges, its process) and, asked afresh at each scrape,
every worker's (:meth:`Exporter.openmetrics`), merged by :class:`WorkerSeries`
with a :data:`WORKER` label on each worker's series and
:data:`WORKER_UP` telling which workers answered.

Who may read it: the series name every stream, consumer and dead-letter
stream of every tenant. Without a tokens file the port is as open as the API
(``HEALTH_HOST`` is loopback while the API is open; under client certificates
alone ``/metrics`` must stay on loopback, see
:meth:`~windshift_grpc.settings.Settings._check_metrics`). With one, a scrape
needs ``Authorization: Bearer <token>`` of a token with the ``metrics``
permission (401 without a valid token, 403 without the permission). Its
patterns match streams: a series that carries a stream (``windshift_stream``,
``windshift_dead_letter_stream``) is shown when they match it, and one that
carries none (RPCs, the process, the resource) only to a token whose patterns
include ``*`` or ``>``: a tenant reads its own streams' series and nothing
about anyone else's, not even the server's totals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from windshift._metrics import CONSUMER, STREAM
from windshift_grpc.auth import AuthenticationError, Grant, Permission
from windshift_grpc.permissions import Access
from windshift_grpc.sampling import ConsumerSample, Sampler

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

logger = logging.getLogger("windshift_grpc.metrics")

#: The instrumentation scope of the server's own instruments.
METER_NAME = "windshift_grpc"
#: The attribute of the dead-letter gauge.
DEAD_LETTER_STREAM = "windshift.dead_letter_stream"
#: The Prometheus labels that hold a stream's name (what the ``metrics`` patterns match).
STREAM_LABELS = tuple(key.replace(".", "_") for key in (STREAM, DEAD_LETTER_STREAM))
#: The path on ``HEALTH_PORT``.
PATH = "/metrics"
#: The label of a worker's series in the supervisor's ``/metrics`` (its number, from 1).
WORKER = "worker"
#: The supervisor's gauge of each worker: 1 when it answered this scrape, 0 when its
#: series are left out (stopped, restarting, or too slow to answer).
WORKER_UP = "windshift_worker_up"
#: The content type a worker answers in (OpenMetrics keeps units and info families).
_OPENMETRICS = "application/openmetrics-text; version=1.0.0"

_METER = metrics.get_meter(METER_NAME)

# The semantic conventions' advice for RPC durations (seconds). An Events call
# lasts as long as its subscriber stays: it lands past the last bucket.
_RPC_BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

#: Every call of the gRPC port, by service, method and status (recorded by
#: :mod:`windshift_grpc.calls` as it writes the call's log line; attributes as its span's).
RPC_DURATION = _METER.create_histogram(
    "rpc.server.call.duration",
    unit="s",
    description="Time from the start of a gRPC call to its status, by method and status code "
    "(an Events call: as long as it stays open).",
    explicit_bucket_boundaries_advisory=_RPC_BOUNDARIES,
)


def rpc_attributes(service: str, method: str, code: int) -> dict[str, str | int]:
    """The attributes of one :data:`RPC_DURATION` value (the span's keys)."""
    return {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": method,
        "rpc.grpc.status_code": code,
    }


class Exporter:
    """The Prometheus side of ``/metrics``: a reader for the meter provider, and its registry.

    Give :attr:`reader` to :func:`windshift_grpc.telemetry.configure`
    (``metric_readers``) before anything is measured; serve :attr:`registry`
    with :func:`exposition`.

    Raises:
        RuntimeError: the exporter is not installed.
    """

    def __init__(self) -> None:
        # Imported only when /metrics is on: the calls' histogram needs the API alone.
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry, ProcessCollector
        except ImportError as exc:
            raise RuntimeError(
                f"WINDSHIFT_METRICS is on, but {exc.name or 'a module'} cannot be imported: "
                "install opentelemetry-exporter-prometheus (pip install 'windshift[grpc]')"
            ) from None

        self.registry = CollectorRegistry(auto_describe=False)
        # Collected at each scrape: what it reads is the SDK's state at that moment.
        self.reader = PrometheusMetricReader(registry=self.registry)
        ProcessCollector(registry=self.registry)

    async def collector(self) -> Collector:
        """What a scrape of this process serves: its registry (see :class:`Source`)."""
        return self.registry

    async def openmetrics(self) -> str:
        """The registry now, as OpenMetrics text: a worker's answer to its supervisor's ``"metrics"``."""
        body, _ = exposition(self.registry, _OPENMETRICS)
        return body.decode()


class Source(Protocol):
    """What ``/metrics`` serves: :class:`Exporter`, or a supervisor's merge of its workers."""

    async def collector(self) -> Collector:
        """The collector of one scrape (asked afresh at each)."""
        ...


class WorkerSeries:
    """A supervisor's scrape: its own registry, and every worker's series labelled :data:`WORKER`.

    Families of the same name are merged into one (a family is declared once
    in an exposition): the supervisor's own samples carry no :data:`WORKER`
    label, each worker's carry its number. :data:`WORKER_UP` says, for each
    worker, whether its series are in (an answer that cannot be parsed counts
    as none).

    Args:
        own: the supervisor's registry.
        answers: each worker's number and its answer to ``"metrics"``
            (:meth:`Exporter.openmetrics`), or None when it gave none.
    """

    def __init__(self, own: Collector, answers: Sequence[tuple[int, str | None]]) -> None:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families

        self._own = own
        self._workers: list[tuple[str, list[Metric] | None]] = []
        for index, text in answers:
            families: list[Metric] | None = None
            if text is not None:
                try:
                    families = list(text_string_to_metric_families(text))  # type: ignore[no-untyped-call]
                except ValueError as exc:
                    logger.warning("worker %d answered metrics that do not parse: %s", index, exc)
            self._workers.append((str(index), families))

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily, Metric

        merged: dict[str, Metric] = {}

        def add(family: Metric, samples: list[Any]) -> None:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            elif into.type != family.type:
                logger.warning(
                    "metric %s is a %s in one process and a %s in another: the %s is left out",
                    family.name,
                    into.type,
                    family.type,
                    family.type,
                )
                return
            into.samples.extend(samples)

        for family in self._own.collect():
            add(family, list(family.samples))
        up = GaugeMetricFamily(
            WORKER_UP,
            "Whether the worker answered this scrape (0: its series are left out).",
            labels=[WORKER],
        )
        for worker, families in self._workers:
            up.add_metric([worker], 0.0 if families is None else 1.0)
            for family in families or ():
                add(
                    family,
                    [
                        sample._replace(labels={**sample.labels, WORKER: worker})
                        for sample in family.samples
                    ],
                )
        yield from merged.values()
        yield up


def observe(sampler: Sampler, meter: Meter | None = None) -> None:
    """Report ``sampler``'s latest round as observable gauges (through every metric reader).

    The callbacks read the round's dictionaries, which a round replaces
    whole and never changes, so a reader in another thread (a periodic OTLP
    export) sees one round or the next, never half of one.

    Args:
        sampler: the process' one sampler.
        meter: where the gauges are made (the server's meter by default).
    """
    meter = _METER if meter is None else meter

    def consumers(read: Callable[[ConsumerSample], float]) -> Any:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(read(sample), {STREAM: sample.stream, CONSUMER: sample.consumer})
                for sample in sampler.latest.values()
            ]

        return callback

    def dead_letters(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {DEAD_LETTER_STREAM: stream})
            for stream, count in sampler.dead_letters.items()
        ]

    def sampled(options: CallbackOptions) -> Iterable[Observation]:
        at = sampler.sampled_at
        return [Observation(at)] if at else []

    gauges: Sequence[tuple[str, str, Any, str]] = (
        (
            "windshift.consumer.lag",
            "s",
            consumers(lambda sample: sample.lag_seconds),
            "How long the oldest event the consumer has not processed has been in its "
            "stream (0: none waits).",
        ),
        (
            "windshift.consumer.lag.events",
            "{event}",
            consumers(lambda sample: sample.lag_events),
            "Events the consumer has not processed yet: pending plus unacknowledged.",
        ),
        (
            "windshift.consumer.pending",
            "{event}",
            consumers(lambda sample: sample.pending),
            "Events of the consumer's subjects not delivered yet.",
        ),
        (
            "windshift.consumer.unacknowledged",
            "{event}",
            consumers(lambda sample: sample.unsettled),
            "Events delivered and not yet acknowledged or rejected.",
        ),
        (
            "windshift.consumer.redelivered",
            "{event}",
            consumers(lambda sample: sample.redelivered),
            "Events delivered more than once and not yet settled.",
        ),
        (
            "windshift.consumer.ack_floor",
            "",
            consumers(lambda sample: sample.ack_floor),
            "The id up to which every event of the consumer is settled.",
        ),
        (
            "windshift.dead_letters",
            "{event}",
            dead_letters,
            "Events held by a dead-letter stream that a consumer names.",
        ),
        (
            "windshift.sample.timestamp",
            "s",
            sampled,
            "When the consumer gauges were sampled last (seconds since the epoch).",
        ),
    )
    for name, unit, callback, description in gauges:
        meter.create_observable_gauge(name, [callback], unit=unit, description=description)


class _Filtered:
    """The families of ``collector`` with only the samples ``shown`` lets through."""

    def __init__(self, collector: Collector, shown: Callable[[Mapping[str, str]], bool]) -> None:
        self._collector = collector
        self._shown = shown

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.metrics_core import Metric

        for family in self._collector.collect():
            samples = [sample for sample in family.samples if self._shown(sample.labels)]
            if samples:
                kept = Metric(family.name, family.documentation, family.type, family.unit)
                kept.samples = samples
                yield kept


def visible(grant: Grant) -> Callable[[Mapping[str, str]], bool] | None:
    """Which series ``grant``'s ``metrics`` patterns show (None: all of them).

    A series that names streams is shown when every stream it names matches;
    one that names none only to patterns that match every stream.
    """
    patterns = grant.permissions.get(Permission.METRICS, ())
    if "*" in patterns or ">" in patterns:
        return None

    def shown(labels: Mapping[str, str]) -> bool:
        named = [labels[label] for label in STREAM_LABELS if label in labels]
        return bool(named) and all(grant.allows(Permission.METRICS, name) for name in named)

    return shown


def exposition(
    collector: Collector,
    accept: str | None = None,
    shown: Callable[[Mapping[str, str]], bool] | None = None,
) -> tuple[bytes, str]:
    """A scrape's body and content type: ``collector`` collected now, encoded by prometheus_client.

    Args:
        collector: a registry (or anything with ``collect()``).
        accept: the scraper's ``Accept`` header: OpenMetrics when it asks for it,
            Prometheus' text format otherwise.
        shown: which series to keep, by their labels (None: all).
    """
    from prometheus_client.exposition import choose_encoder

    encode, content_type = choose_encoder(accept or "")
    return encode(collector if shown is None else _Filtered(collector, shown)), content_type


_UNAUTHENTICATED = (
    "no valid bearer token: send 'Authorization: Bearer <token>' with a token that has the "
    "metrics permission\n"
)


def http_routes(source: Source, access: Access | None) -> list[web.RouteDef]:
    """``GET /metrics`` (HEAD too) for :class:`~windshift_grpc.http.HttpServer`.

    Args:
        source: what is served (:class:`Exporter`, or a supervisor's workers).
        access: the tokens in use (None: no tokens file, the port is as open as the API).
    """

    async def scrape(request: web.Request) -> web.Response:
        shown = None
        if access is not None:
            try:
                grant = access.grant(await access.authenticate(request.headers.items()))
            except AuthenticationError:
                raise web.HTTPUnauthorized(
                    text=_UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"}
                ) from None
            if not grant.permissions.get(Permission.METRICS):
                logger.info("%s denied: token %r has no metrics permission", PATH, grant.name)
                raise web.HTTPForbidden(
                    text=f"token {grant.name!r} may not read {PATH} (no metrics permission)\n"
                )
            shown = visible(grant)
        collector = await source.collector()
        body, content_type = exposition(collector, request.headers.get("Accept"), shown)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    return [web.get(PATH, scrape)]


__all__ = [
    "DEAD_LETTER_STREAM",
    "METER_NAME",
    "PATH",
    "RPC_DURATION",
    "STREAM_LABELS",
    "WORKER",
    "WORKER_UP",
    "Exporter",
    "Source",
    "WorkerSeries",
    "exposition",
    "http_routes",
    "observe",
    "rpc_attributes",
    "visible",
]
