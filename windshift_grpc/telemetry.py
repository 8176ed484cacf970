"""OpenTelemetry set-up: an SDK tracer provider when asked for and installed, else no-op.

At runtime the façade needs only ``opentelemetry-api``: spans are created and
trace context is propagated (from the caller's ``traceparent`` metadata into
the events' ``WS-Trace-Parent``) whether or not anything records them. When
``OTEL_TRACES_EXPORTER`` is ``console``, or ``otlp`` (the default) with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, and ``opentelemetry-sdk`` (plus, for
OTLP, ``opentelemetry-exporter-otlp-proto-http`` or ``-grpc``) is
importable, :func:`configure` installs a tracer provider that exports them.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any, Protocol

from opentelemetry import trace

from windshift_grpc.settings import Settings

logger = logging.getLogger("windshift_grpc.telemetry")


class Shutdown(Protocol):
    def shutdown(self) -> Any: ...


def configure(settings: Settings) -> Shutdown | None:
    """Install an exporting tracer provider if the settings ask for one and it can be built.

    Returns:
        The provider (shut it down to flush the last spans), or None when
        tracing stays no-op.
    """
    exporter_name = settings.otel_traces_exporter
    if settings.otel_sdk_disabled or exporter_name == "none":
        return None
    if exporter_name == "otlp" and not settings.otel_exporter_otlp_endpoint:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
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
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    if exporter_name == "console":
        console = ConsoleSpanExporter(
            out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
        provider.add_span_processor(SimpleSpanProcessor(console))
    else:
        exporter = _otlp_exporter()
        if exporter is None:
            return None
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("exporting traces (%s) as %s", exporter_name, settings.otel_service_name)
    return provider


def _otlp_exporter() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    module = (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
        if protocol == "grpc"
        else "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    )
    try:
        exporter_class = importlib.import_module(module).OTLPSpanExporter
    except ImportError:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but %s is not installed (pip install "
            "opentelemetry-exporter-otlp); spans are not exported",
            module,
        )
        return None
    return exporter_class()


__all__ = ["configure"]
