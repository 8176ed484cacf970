"""OpenTelemetry set-up: SDK tracer and meter providers when asked for and installed, else no-op.

At runtime the façade needs only ``opentelemetry-api``: spans are created and
trace context is propagated (from the caller's ``traceparent`` metadata into
the events' ``WS-Trace-Parent``) whether or not anything records them, and
the library's instruments (``windshift._metrics``) are no-ops. When
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` is ``console``, or
``otlp`` (the default) with an OTLP endpoint set
(``OTEL_EXPORTER_OTLP_ENDPOINT``, or the ``_TRACES_`` / ``_METRICS_`` one),
and ``opentelemetry-sdk`` (plus, for OTLP,
``opentelemetry-exporter-otlp-proto-http`` or ``-grpc``) is importable,
:func:`configure` installs providers that export them. A missing package
is logged as a warning and the server runs on without exporting.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any, Protocol

from opentelemetry import metrics, trace

from windshift_grpc.settings import Settings

logger = logging.getLogger("windshift_grpc.telemetry")


class Shutdown(Protocol):
    def shutdown(self) -> Any: ...


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


def configure(settings: Settings) -> Shutdown | None:
    """Install an exporting tracer and meter provider if the settings ask for them.

    Returns:
        Something to shut down at exit (to flush the last spans and metrics),
        or None when both stay no-op.
    """
    if settings.otel_sdk_disabled:
        return None
    providers = [
        provider
        for provider in (_configure_traces(settings), _configure_metrics(settings))
        if provider is not None
    ]
    return _Providers(providers) if providers else None


def _resource(settings: Settings) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": settings.otel_service_name})


def _configure_traces(settings: Settings) -> Shutdown | None:
    exporter_name = settings.otel_traces_exporter
    if exporter_name == "none":
        return None
    if exporter_name == "otlp" and not settings.otel_exporter_otlp_endpoint:
        return None
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        logger.warning(
            "OTEL_TRACES_EXPORTER=%s is set but opentelemetry-sdk is not installed; "
            "spans are not exported",
            exporter_name,
        )
        return None
    provider = TracerProvider(resource=_resource(settings))
    if exporter_name == "console":
        console = ConsoleSpanExporter(
            out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
        provider.add_span_processor(SimpleSpanProcessor(console))
    else:
        exporter = _otlp_exporter("traces")
        if exporter is None:
            return None
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("exporting traces (%s) as %s", exporter_name, settings.otel_service_name)
    return provider


def _configure_metrics(settings: Settings) -> Shutdown | None:
    exporter_name = settings.otel_metrics_exporter
    if exporter_name == "none":
        return None
    if exporter_name == "otlp" and not settings.otel_exporter_otlp_metrics_endpoint:
        return None
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )
    except ImportError:
        logger.warning(
            "OTEL_METRICS_EXPORTER=%s is set but opentelemetry-sdk is not installed; "
            "metrics are not exported",
            exporter_name,
        )
        return None
    if exporter_name == "console":
        exporter: Any = ConsoleMetricExporter(
            out=sys.stdout, formatter=lambda data: data.to_json(indent=None) + "\n"
        )
    else:
        exporter = _otlp_exporter("metrics")
        if exporter is None:
            return None
    reader = PeriodicExportingMetricReader(
        exporter, export_interval_millis=settings.otel_metric_export_interval
    )
    provider = MeterProvider(resource=_resource(settings), metric_readers=[reader])
    metrics.set_meter_provider(provider)
    logger.info(
        "exporting metrics (%s) every %gs as %s",
        exporter_name,
        settings.otel_metric_export_interval / 1000,
        settings.otel_service_name,
    )
    return provider


# signal -> (module suffix, exporter class, what is lost without it)
_OTLP = {
    "traces": ("trace_exporter", "OTLPSpanExporter", "spans"),
    "metrics": ("metric_exporter", "OTLPMetricExporter", "metrics"),
}


def _otlp_exporter(signal: str) -> Any:
    suffix, class_name, what = _OTLP[signal]
    protocol = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    module = (
        f"opentelemetry.exporter.otlp.proto.grpc.{suffix}"
        if protocol == "grpc"
        else f"opentelemetry.exporter.otlp.proto.http.{suffix}"
    )
    try:
        exporter_class = getattr(importlib.import_module(module), class_name)
    except ImportError:
        logger.warning(
            "an OTLP endpoint is set but %s is not installed (pip install "
            "opentelemetry-exporter-otlp); %s are not exported",
            module,
            what,
        )
        return None
    return exporter_class()


__all__ = ["configure"]
