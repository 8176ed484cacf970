"""OpenTelemetry set-up of ``serve``: the SDK, configured by its own ``OTEL_*`` variables.

At runtime the façade needs only ``opentelemetry-api``: spans are created and
trace context is propagated (from the caller's ``traceparent`` metadata into
the events' ``WS-Trace-Parent``) whether or not anything records them, and
the library's instruments (``windshift._metrics``) are no-ops.

With ``opentelemetry-sdk`` installed, :func:`configure` installs an SDK tracer
provider and meter provider for the exporters that the standard variables
name, and leaves every other variable to the SDK:

- ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: exporter names,
  separated by commas, looked up as the SDK's own auto-configuration does, in
  the entry point groups ``opentelemetry_traces_exporter`` /
  ``opentelemetry_metrics_exporter`` (``console`` comes with the SDK; ``otlp``
  is ``otlp_proto_http``, or ``otlp_proto_grpc`` when
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` or its per-signal variable says ``grpc``).
  A metrics entry that is a reader (Prometheus) is used as one.
  ``none``: no exporter. Unset: ``otlp`` when an OTLP endpoint variable is set,
  and nothing otherwise, so that a server without a collector does not send
  to localhost and warn about every failed export.
- The exporters read ``OTEL_EXPORTER_OTLP_*``, the periodic metric reader
  ``OTEL_METRIC_EXPORT_INTERVAL`` and ``_TIMEOUT``, the batch span processor
  ``OTEL_BSP_*``, the tracer provider ``OTEL_TRACES_SAMPLER`` (``_ARG``) and
  the span limits, ``Resource.create`` ``OTEL_SERVICE_NAME`` and
  ``OTEL_RESOURCE_ATTRIBUTES``, and both providers ``OTEL_SDK_DISABLED``.

Windshift's own choices: ``service.name`` is ``windshift-grpc`` unless those
variables give one, and ``console`` writes one JSON object per line on stdout
(the SDK's console exporters indent theirs over many lines). A missing SDK or
exporter is logged as a warning and the server runs on without exporting.
``/metrics`` (``WINDSHIFT_METRICS``, :mod:`windshift_grpc.metrics`) adds its
Prometheus reader to the same meter provider, beside any exporter named here.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER

logger = logging.getLogger("windshift_grpc.telemetry")

#: ``service.name`` of the spans and metrics when the OTEL variables name none.
SERVICE_NAME = "windshift-grpc"

# What ``otlp`` means, by protocol (the entry point names of the OTLP packages);
# without a protocol variable: http/protobuf, the OTLP specification's default.
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_PACKAGES = {
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
}


class Shutdown(Protocol):
    def shutdown(self) -> Any: ...


@dataclass(frozen=True)
class _Signal:
    name: str  # traces, metrics
    what: str  # what is lost without an exporter
    variable: str  # the exporter names
    group: str  # of the exporters' entry points
    endpoint: str  # the per-signal OTLP endpoint variable
    protocol: str  # the per-signal OTLP protocol variable


_TRACES = _Signal(
    "traces",
    "spans",
    OTEL_TRACES_EXPORTER,
    "opentelemetry_traces_exporter",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)
_METRICS = _Signal(
    "metrics",
    "metrics",
    OTEL_METRICS_EXPORTER,
    "opentelemetry_metrics_exporter",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
)


class _Providers:
    """The providers :func:`configure` installed; shutting down flushes them all."""

    def __init__(self, providers: list[Shutdown]) -> None:
        self.providers = providers

    def shutdown(self) -> None:
        for provider in self.providers:
            try:
                provider.shutdown()
            except Exception:  # one failing exporter must not keep the others from flushing
                logger.exception("could not flush telemetry on shutdown")


def configure(*, metric_readers: Sequence[Any] = ()) -> Shutdown | None:
    """Install exporting SDK providers for the exporters the ``OTEL_*`` variables name.

    Args:
        metric_readers: SDK metric readers the meter provider gets besides
            those of ``OTEL_METRICS_EXPORTER`` (``/metrics``' Prometheus
            reader); with any, a meter provider is installed whatever the
            variables say.

    Returns:
        Something to shut down at exit (to flush the last spans and metrics),
        or None when both stay no-op.
    """
    wanted = [(signal, *_asked(signal)) for signal in (_TRACES, _METRICS)]
    wanted = [
        (signal, names, reason)
        for signal, names, reason in wanted
        if names or (signal is _METRICS and metric_readers)
    ]
    if not wanted:
        return None
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":  # as the SDK reads it
        logger.info("OTEL_SDK_DISABLED is true: no spans or metrics are exported")
        if metric_readers:  # registered, so that a scrape reads nothing rather than warns
            from opentelemetry.sdk.metrics import MeterProvider

            return MeterProvider(metric_readers=list(metric_readers))
        return None
    try:
        resource = _resource()
    except ImportError:
        for signal, _names, reason in wanted:
            logger.warning(
                "%s, but opentelemetry-sdk is not installed (pip install opentelemetry-sdk); "
                "%s are not exported",
                reason,
                signal.what,
            )
        return None
    providers = [
        provider
        for signal, names, reason in wanted
        if (
            provider := _install(
                signal, names, reason, resource, metric_readers if signal is _METRICS else ()
            )
        )
        is not None
    ]
    return _Providers(providers) if providers else None


def _asked(signal: _Signal) -> tuple[list[str], str]:
    """The exporter names for ``signal``, and what asked for them (for the log)."""
    raw = os.environ.get(signal.variable, "").strip()
    if not raw:
        for variable in (signal.endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT"):
            if os.environ.get(variable, "").strip():
                return ["otlp"], f"{variable} is set"
        return [], ""
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    return [name for name in names if name != "none"], f"{signal.variable}={raw}"


def _resource() -> Any:
    """The SDK's resource (from ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ...)."""
    from opentelemetry.sdk.resources import SERVICE_NAME as NAME
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create()
    # The SDK's name for a service that was given none: unknown_service:<executable>.
    if str(resource.attributes.get(NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({NAME: SERVICE_NAME}))
    return resource


def _entry_point(signal: _Signal, name: str, reason: str) -> Any:
    """The exporter (or reader) class that ``name`` stands for, or None (logged)."""
    entry = name
    if name == "otlp":
        protocol = (
            os.environ.get(signal.protocol)
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol not in _OTLP_BY_PROTOCOL:
            logger.warning(
                "%s, but the OTLP protocol %r is not one of %s; %s are not exported over OTLP",
                reason,
                protocol,
                ", ".join(_OTLP_BY_PROTOCOL),
                signal.what,
            )
            return None
        entry = _OTLP_BY_PROTOCOL[protocol]
    found = list(entry_points(group=signal.group, name=entry))
    if not found:
        package = _PACKAGES.get(entry)
        logger.warning(
            "%s, but no installed package provides the %s exporter %r%s; %s are not exported",
            reason,
            signal.name,
            entry,
            f" (pip install {package})" if package else f" (entry points {signal.group})",
            signal.what,
        )
        return None
    try:
        return found[0].load()
    except Exception as exc:  # a broken exporter package must not stop the server
        logger.warning(
            "%s, but the %s exporter %r does not load (%s); %s are not exported",
            reason,
            signal.name,
            entry,
            exc,
            signal.what,
        )
        return None


def _console() -> dict[str, Any]:
    """Keywords of the SDK's console exporters: one JSON object per line, on stdout."""
    return {"out": sys.stdout, "formatter": lambda item: item.to_json(indent=None) + "\n"}


def _install(
    signal: _Signal, names: list[str], reason: str, resource: Any, readers: Sequence[Any] = ()
) -> Shutdown | None:
    """The provider of ``signal`` with the exporters that load (and ``readers``), set globally."""
    if signal is _TRACES:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SimpleSpanProcessor,
            SpanExporter,
        )

        kinds: tuple[type, ...] = (SpanExporter,)
    else:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            MetricExporter,
            MetricReader,
            PeriodicExportingMetricReader,
        )

        kinds = (MetricExporter, MetricReader)
    parts: list[Any] = list(readers)  # span processors, or metric readers
    used: list[str] = ["/metrics"] if readers else []
    for name in names:
        found = _entry_point(signal, name, reason)
        if found is None:
            continue
        if not (isinstance(found, type) and issubclass(found, kinds)):
            logger.warning(
                "%s, but %r is not a %s exporter; %s are not exported by it",
                reason,
                name,
                signal.name,
                signal.what,
            )
            continue
        try:
            made: Any = found(**_console()) if name == "console" else found()
        except Exception as exc:  # e.g. a malformed OTEL_EXPORTER_OTLP_HEADERS
            logger.warning(
                "%s, but the %s exporter %r cannot be set up (%s); %s are not exported by it",
                reason,
                signal.name,
                name,
                exc,
                signal.what,
            )
            continue
        if signal is _TRACES:
            # console: at once, so that the lines show as calls end; others in batches.
            processor = SimpleSpanProcessor if name == "console" else BatchSpanProcessor
            parts.append(processor(made))
        else:
            parts.append(
                made if isinstance(made, MetricReader) else PeriodicExportingMetricReader(made)
            )
        used.append(name)
    if not parts:
        return None
    logger.info(
        "exporting %s (%s) as %s", signal.name, ", ".join(used), resource.attributes["service.name"]
    )
    if signal is _TRACES:
        tracer_provider = TracerProvider(resource=resource)
        for processor in parts:
            tracer_provider.add_span_processor(processor)
        trace.set_tracer_provider(tracer_provider)
        return tracer_provider
    meter_provider = MeterProvider(resource=resource, metric_readers=parts)
    metrics.set_meter_provider(meter_provider)
    return meter_provider


__all__ = ["SERVICE_NAME", "configure"]
