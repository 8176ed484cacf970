"""OpenTelemetry spans and W3C trace context carried in ``WS-Trace-*`` headers.

Publishing opens a ``PRODUCER`` span and writes its context into the
``WS-Trace-Parent`` / ``WS-Trace-State`` headers; receiving opens a
``CONSUMER`` span per event, child of that context, which ends when the event
is settled. Without an OpenTelemetry SDK configured these are no-ops and no
headers are written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from windshift._wire import HEADER_TRACE_PARENT, HEADER_TRACE_STATE

_TO_HEADER = {"traceparent": HEADER_TRACE_PARENT, "tracestate": HEADER_TRACE_STATE}
_PROPAGATOR = TraceContextTextMapPropagator()
# A proxy: it follows whatever tracer provider is installed, even later.
_TRACER = trace.get_tracer("windshift")


class _HeaderSetter(Setter[MutableMapping[str, str]]):
    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[_TO_HEADER.get(key, key)] = value


class _HeaderGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(_TO_HEADER.get(key, key))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_SETTER = _HeaderSetter()
_GETTER = _HeaderGetter()


# Whether the environment names a tracer provider for OpenTelemetry to load.
_PROVIDER_IN_ENVIRONMENT = OTEL_PYTHON_TRACER_PROVIDER in os.environ


def _tracing_off() -> bool:
    # Until an SDK installs a provider, spans are no-ops: skip building them
    # (attributes, context) on every event. trace.get_tracer_provider() looks
    # the environment up on every call while none is installed (a KeyError
    # raised and caught each time); OpenTelemetry's own global says it sooner.
    if getattr(trace, "_TRACER_PROVIDER", trace) is None and not _PROVIDER_IN_ENVIRONMENT:
        return True
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def start_publish_span(subject: str, headers: MutableMapping[str, str]) -> Span:
    """Start the producer span of one publish and write its context into ``headers``."""
    if _tracing_off():
        # Without an SDK there is no span of our own, but a caller's context
        # (e.g. a gRPC call's traceparent) still travels with the event.
        current = trace.get_current_span().get_span_context()
        if not current.is_valid:
            return trace.INVALID_SPAN
        carried: Span = trace.NonRecordingSpan(current)
        _PROPAGATOR.inject(headers, context=trace.set_span_in_context(carried), setter=_SETTER)
        return carried
    span = _TRACER.start_span(
        f"{subject} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "publish",
            "messaging.destination.name": subject,
        },
    )
    if span.get_span_context().is_valid:
        _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span), setter=_SETTER)
    return span


def start_receive_span(
    stream: str, consumer: str, subject: str, event_id: int, headers: Mapping[str, str]
) -> Span:
    """Start the consumer span of one received event, child of the publisher's context."""
    if _tracing_off():
        if HEADER_TRACE_PARENT not in headers:
            return trace.INVALID_SPAN
        context = _PROPAGATOR.extract(headers, getter=_GETTER)
        return trace.NonRecordingSpan(trace.get_current_span(context).get_span_context())
    parent = (
        _PROPAGATOR.extract(headers, getter=_GETTER)
        if HEADER_TRACE_PARENT in headers
        else otel_context.Context()
    )
    return _TRACER.start_span(
        f"{stream} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": subject,
            "messaging.consumer.group.name": consumer,
            "messaging.message.id": str(event_id),
        },
    )


def extract_context(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context an event was published under (empty when it has none)."""
    return _PROPAGATOR.extract(headers, getter=_GETTER)


__all__ = ["extract_context", "start_publish_span", "start_receive_span"]
