"""OpenTelemetry: a producer span per publish, a consumer span per event, one trace."""

from __future__ import annotations

import nats
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import windshift
from tests._util import take
from windshift import EmbeddedNats, StreamPointer


async def test_publish_and_receive_spans_form_one_trace(
    client: windshift.Client,
    nats_server: EmbeddedNats,
    name: str,
    spans: InMemorySpanExporter,
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, start=StreamPointer.start())
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as outer:
        published = await client.publish(f"{name}.a", StringValue(value="traced"))

    producer = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert len(producer) == 1, [s.attributes for s in producer]
    publish_span = producer[0]
    assert publish_span.context is not None
    assert publish_span.parent is not None
    assert publish_span.parent.span_id == outer.get_span_context().span_id
    assert publish_span.attributes is not None
    assert publish_span.attributes["messaging.message.id"] == str(published.id)

    raw = await nats.connect(nats_server.url)
    try:
        stored = await raw.jetstream().get_msg(name, published.id)
    finally:
        await raw.close()
    headers = stored.headers or {}
    trace_id = f"{publish_span.context.trace_id:032x}"
    span_id = f"{publish_span.context.span_id:016x}"
    assert headers["WS-Trace-Parent"].startswith(f"00-{trace_id}-{span_id}-")

    async with client.subscribe(name, consumer.id) as events:
        [event] = await take(events, 1)
        assert trace.get_current_span(event.trace_context).get_span_context().trace_id == (
            publish_span.context.trace_id
        )
        assert not [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
        await event.ack()

    [receive_span] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert receive_span.context is not None
    assert receive_span.context.trace_id == publish_span.context.trace_id
    assert receive_span.parent is not None
    assert receive_span.parent.span_id == publish_span.context.span_id
    assert receive_span.attributes is not None
    assert receive_span.attributes["windshift.outcome"] == "acknowledged"


async def test_trace_state_travels_in_ws_trace_state(
    client: windshift.Client,
    nats_server: EmbeddedNats,
    name: str,
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    await client.ensure_stream(name, subjects=[f"{name}.>"])
    parent = SpanContext(
        trace_id=0x1234,
        span_id=0x5678,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value")]),
    )
    with trace.use_span(NonRecordingSpan(parent)):
        published = await client.publish(f"{name}.a", StringValue(value="x"))
    raw = await nats.connect(nats_server.url)
    try:
        stored = await raw.jetstream().get_msg(name, published.id)
    finally:
        await raw.close()
    headers = stored.headers or {}
    assert headers["WS-Trace-State"] == "vendor=value"
    assert headers["WS-Trace-Parent"].startswith(f"00-{0x1234:032x}-")
