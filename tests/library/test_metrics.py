"""OpenTelemetry metrics, read back from the SDK's in-memory reader after real traffic.

The session installs one meter provider with an in-memory reader (the
``metric_reader`` fixture); windshift's instruments were created at import,
before it, and follow it through the API's proxy meter. Temporality is
cumulative and every test works on its own stream, so each reads absolute
values filtered by its stream's attributes.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)

import windshift
from tests._util import take, text
from tests.grpc_fixtures import EventsClient, StartServe, ensure_consumer, ensure_stream, publish
from windshift import StreamPointer
from windshift import _metrics as ws_metrics
from windshift.errors import NotFoundError
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc

STREAM = "windshift.stream"
CONSUMER = "windshift.consumer"
OUTCOME = "windshift.outcome"
PERMANENT = "windshift.reject.permanent"

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )


def _find(reader: InMemoryMetricReader, name: str) -> Metric | None:
    data = reader.get_metrics_data()
    assert data is not None, "nothing was collected"
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "windshift":
                continue
            for metric in scope.metrics:
                if metric.name == name:
                    return metric
    return None


def _metric(reader: InMemoryMetricReader, name: str) -> Metric:
    metric = _find(reader, name)
    assert metric is not None, f"no metric {name!r} was reported"
    return metric


def _points(reader: InMemoryMetricReader, name: str, attributes: Mapping[str, Any]) -> list[Any]:
    """The points of ``name`` whose attributes include ``attributes`` (none when unreported)."""
    metric = _find(reader, name)
    return [
        point
        for point in (metric.data.data_points if metric is not None else ())
        if all((point.attributes or {}).get(key) == value for key, value in attributes.items())
    ]


def _value(reader: InMemoryMetricReader, name: str, **attributes: Any) -> int:
    """The summed value of a counter's points matching ``attributes`` (0 without any)."""
    points = _points(reader, name, _keys(attributes))
    assert all(isinstance(point, NumberDataPoint) for point in points)
    return sum(int(point.value) for point in points)


def _histogram(reader: InMemoryMetricReader, name: str, **attributes: Any) -> HistogramDataPoint:
    [point] = _points(reader, name, _keys(attributes))
    assert isinstance(point, HistogramDataPoint)
    return point


def _keys(attributes: Mapping[str, Any]) -> dict[str, Any]:
    names = {"stream": STREAM, "consumer": CONSUMER, "outcome": OUTCOME, "permanent": PERMANENT}
    return {names[key]: value for key, value in attributes.items()}


async def _eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    assert check(), "not within the timeout"


async def test_publishes_are_counted_and_timed_by_stream(
    client: windshift.Client, name: str, metric_reader: InMemoryMetricReader
) -> None:
    other = f"{name}other"
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_stream(other, subjects=[f"{other}.>"])
    await client.publish(f"{name}.a", StringValue(value="1"))
    await client.publish(f"{name}.b", StringValue(value="2"), idempotency_key="once")
    duplicate = await client.publish(f"{name}.b", StringValue(value="2"), idempotency_key="once")
    assert duplicate.duplicate
    await client.publish(f"{other}.a", StringValue(value="3"))
    with pytest.raises(NotFoundError):
        await client.publish(f"{name}nostream.a", StringValue(value="4"))

    # a duplicate is acknowledged but not stored: it is timed, not counted
    assert _value(metric_reader, "windshift.events.published", stream=name) == 2
    assert _value(metric_reader, "windshift.events.published", stream=other) == 1
    published = _metric(metric_reader, "windshift.events.published")
    assert published.unit == "{event}"
    attributes = [dict(point.attributes or {}) for point in published.data.data_points]
    assert {entry[STREAM] for entry in attributes} >= {name, other}
    assert all(set(entry) == {STREAM} for entry in attributes)

    latency = _histogram(metric_reader, "windshift.publish.duration", stream=name)
    assert latency.count == 3
    assert 0 < latency.sum < 10
    assert tuple(latency.explicit_bounds) == ws_metrics.PUBLISH_BOUNDARIES
    assert _metric(metric_reader, "windshift.publish.duration").unit == "s"
    assert _histogram(metric_reader, "windshift.publish.duration", stream=other).count == 1


async def test_acks_processing_time_and_events_in_flight(
    client: windshift.Client, name: str, metric_reader: InMemoryMetricReader
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "worker", start=StreamPointer.start())
    for value in ("a", "b"):
        await client.publish(f"{name}.x", StringValue(value=value))
    ids = {"stream": name, "consumer": consumer.id}

    async with client.subscribe(name, consumer.id) as events:
        first, second = await take(events, 2)
        assert _value(metric_reader, "windshift.events.in_flight", **ids) == 2
        await asyncio.sleep(0.1)
        await first.ack()
        assert _value(metric_reader, "windshift.events.acknowledged", **ids) == 1
        assert _value(metric_reader, "windshift.events.in_flight", **ids) == 1
        await second.ack(confirm=True)
        assert _value(metric_reader, "windshift.events.in_flight", **ids) == 0

    assert _value(metric_reader, "windshift.events.acknowledged", **ids) == 2
    assert _metric(metric_reader, "windshift.events.acknowledged").unit == "{event}"
    assert _metric(metric_reader, "windshift.events.in_flight").unit == "{event}"
    processing = _histogram(
        metric_reader, "windshift.process.duration", outcome="acknowledged", **ids
    )
    assert processing.count == 2
    assert processing.max >= 0.1  # the first was held 0.1 s before its ack
    assert processing.sum < 10
    assert tuple(processing.explicit_bounds) == ws_metrics.PROCESS_BOUNDARIES
    assert _metric(metric_reader, "windshift.process.duration").unit == "s"
    assert not _points(
        metric_reader, "windshift.process.duration", {OUTCOME: "rejected", **_keys(ids)}
    )
    assert _value(metric_reader, "windshift.events.rejected", **ids) == 0
    assert _value(metric_reader, "windshift.events.redelivered", **ids) == 0


async def test_events_fetched_but_not_handed_out_are_in_flight_until_returned(
    client: windshift.Client, name: str, metric_reader: InMemoryMetricReader
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "worker", start=StreamPointer.start())
    for value in ("a", "b", "c"):
        await client.publish(f"{name}.x", StringValue(value=value))
    ids = {"stream": name, "consumer": consumer.id}

    events = client.subscribe(name, consumer.id, max_pending_events=3)
    async with events:
        [first] = await take(events, 1)
        await _eventually(lambda: events.held_events == 3)
        assert _value(metric_reader, "windshift.events.in_flight", **ids) == 3
    # leaving handed the two buffered ones back; the one handed out is still held
    assert _value(metric_reader, "windshift.events.in_flight", **ids) == 1
    await first.ack()
    assert _value(metric_reader, "windshift.events.in_flight", **ids) == 0


async def test_rejections_and_redeliveries_by_stream_and_consumer(
    client: windshift.Client, name: str, metric_reader: InMemoryMetricReader
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "worker", start=StreamPointer.start())
    await client.publish(f"{name}.x", StringValue(value="flaky"))
    ids = {"stream": name, "consumer": consumer.id}

    async with client.subscribe(name, consumer.id) as events:
        [event] = await take(events, 1)
        assert event.delivery_attempt == 1
        assert _value(metric_reader, "windshift.events.redelivered", **ids) == 0
        await event.reject()
        [event] = await take(events, 1)
        assert event.delivery_attempt == 2
        assert _value(metric_reader, "windshift.events.redelivered", **ids) == 1
        await event.reject(delay=timedelta(milliseconds=50))
        [event] = await take(events, 1)
        assert event.delivery_attempt == 3
        await event.reject(permanently=True, confirm=True)

    assert _value(metric_reader, "windshift.events.redelivered", **ids) == 2
    assert _value(metric_reader, "windshift.events.rejected", **ids) == 3
    assert _value(metric_reader, "windshift.events.rejected", permanent=False, **ids) == 2
    assert _value(metric_reader, "windshift.events.rejected", permanent=True, **ids) == 1
    assert _metric(metric_reader, "windshift.events.rejected").unit == "{event}"
    assert _metric(metric_reader, "windshift.events.redelivered").unit == "{event}"
    rejected = _histogram(metric_reader, "windshift.process.duration", outcome="rejected", **ids)
    assert rejected.count == 3
    assert _value(metric_reader, "windshift.events.acknowledged", **ids) == 0
    assert _value(metric_reader, "windshift.events.dead_lettered", **ids) == 0


async def test_dead_letters_are_counted_once_by_stream_and_consumer(
    client: windshift.Client, name: str, metric_reader: InMemoryMetricReader
) -> None:
    dead = f"{name}dead"
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(
        name,
        "worker",
        start=StreamPointer.start(),
        max_delivery_attempts=1,
        dead_letter_stream=dead,
    )
    for value in ("poison", "flaky"):
        await client.publish(f"{name}.x", StringValue(value=value))
    ids = {"stream": name, "consumer": consumer.id}

    async with client.subscribe(name, consumer.id) as events:
        poison, flaky = await take(events, 2)
        assert (text(poison), text(flaky)) == ("poison", "flaky")
        await poison.reject(permanently=True, reason="cannot parse")
        assert _value(metric_reader, "windshift.events.dead_lettered", **ids) == 1
        # rejected on its last attempt: moved at once, never delivered again
        await flaky.reject()
        assert _value(metric_reader, "windshift.events.dead_lettered", **ids) == 2
        assert events.held_events == 0
        # a move tried again stores nothing, and counts nothing
        await events.dead_letter(poison, "tried again", poison.delivery_attempt)

    assert _value(metric_reader, "windshift.events.dead_lettered", **ids) == 2
    assert _metric(metric_reader, "windshift.events.dead_lettered").unit == "{event}"
    assert len(await client.dead_letters(dead).list()) == 2
    assert _value(metric_reader, "windshift.events.redelivered", **ids) == 0
    # both rejections ended the events' processing: they count as permanent
    assert _value(metric_reader, "windshift.events.rejected", permanent=True, **ids) == 2
    assert _value(metric_reader, "windshift.events.rejected", permanent=False, **ids) == 0
    # nothing is counted against the dead-letter stream as if it were a consumer's
    assert _value(metric_reader, "windshift.events.dead_lettered", stream=dead) == 0
    assert _value(metric_reader, "windshift.events.published", stream=dead) == 0

    # a replay is published again to the original stream
    assert _value(metric_reader, "windshift.events.published", stream=name) == 2
    [letter, _] = await client.dead_letters(dead).list()
    await client.dead_letters(dead).replay(letter.id)
    assert _value(metric_reader, "windshift.events.published", stream=name) == 3


def _metric_points(lines: list[str], metric_name: str, stream: str) -> list[dict[str, Any]]:
    """The data points of ``metric_name`` for ``stream`` in console-exported JSON lines."""
    found: list[dict[str, Any]] = []
    for line in lines:
        if not line.startswith("{") or "resource_metrics" not in line:
            continue
        for resource in json.loads(line)["resource_metrics"]:
            for scope in resource["scope_metrics"]:
                for metric in scope["metrics"]:
                    if metric["name"] != metric_name:
                        continue
                    found.extend(
                        point
                        for point in metric["data"]["data_points"]
                        if point["attributes"].get(STREAM) == stream
                    )
    return found


async def test_serve_exports_metrics_as_the_otel_variables_say(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="200")
    await server.wait_for_line("exporting metrics \\(console\\)")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        await ensure_consumer(stub, name)
        await publish(stub, f"{name}.a", "one", "two")
        call = EventsClient(stub)
        try:
            await call.subscribe(name, "worker")
            [first, second] = await call.events(2)
            await call.ack(first.id)
            await call.reject(second.id, permanently=True)
        finally:
            await call.cancel()
    assert await server.signal(signal.SIGTERM) == 0  # flushes the last export

    def last(metric_name: str) -> dict[str, Any]:
        points = _metric_points(server.stdout, metric_name, name)
        assert points, f"{metric_name} for {name} not exported; stdout:\n" + "\n".join(
            server.stdout
        )
        return points[-1]

    assert last("windshift.events.published")["value"] == 2
    assert last("windshift.publish.duration")["count"] == 2
    assert last("windshift.events.acknowledged")["value"] == 1
    assert last("windshift.events.acknowledged")["attributes"][CONSUMER] == "worker"
    assert last("windshift.events.rejected")["value"] == 1
    assert last("windshift.process.duration")["count"] >= 1


async def test_serve_without_an_otlp_metric_exporter_warns_and_keeps_serving(
    start_serve: StartServe, name: str
) -> None:
    import importlib.util

    server = await start_serve(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://127.0.0.1:4318")
    try:
        installed = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        installed = False
    if installed:
        await server.wait_for_line("exporting metrics \\(otlp\\)")
    else:
        line = await server.wait_for_line("metrics exporter 'otlp_proto_http'")
        assert "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set" in line
        assert "metrics are not exported" in line
    # traces were not asked for
    assert not [line for line in server.lines if "exporting traces" in line]
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        assert await publish(stub, f"{name}.a", "kept") == [1]


async def test_consumers_past_the_limit_share_one_overflow_tally(
    name: str, metric_reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_metrics, "MAX_TALLIES", len(ws_metrics._consumers))
    before = _value_where(metric_reader, "windshift.events.acknowledged", OVERFLOW)
    for consumer in ("one", "two"):
        ws_metrics.SubscriptionMetrics(name, consumer, []).acknowledged(0.01)
    assert _value(metric_reader, "windshift.events.acknowledged", stream=name) == 0
    after = _value_where(metric_reader, "windshift.events.acknowledged", OVERFLOW)
    assert after == before + 2


OVERFLOW = {"otel.metric.overflow": True}


def _value_where(reader: InMemoryMetricReader, name: str, attributes: Mapping[str, Any]) -> int:
    return sum(int(point.value) for point in _points(reader, name, attributes))
