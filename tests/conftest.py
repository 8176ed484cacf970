"""Shared fixtures: a real nats-server for the session, clients, unique names.

The tests are split by area: ``library/`` (the windshift package), ``grpc/``
(``windshift-grpc serve`` subprocesses and real channels) and ``faults/``
(servers killed, clusters failing over, backlogs), whose every test is marked
``slow`` here, so that ``make test-quick`` (``pytest -m "not slow"``) leaves
them out.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import windshift
from tests._util import Background
from windshift import EmbeddedNats

# pytest-xdist's workers (`make test` runs the quick tests on one per core) set
# COLUMNS and LINES to 80x24; the CLI tests expect what a pipe gets, as without xdist.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

_counter = itertools.count(1)
_EXPORTER = InMemorySpanExporter()
_FAULTS = Path(__file__).parent / "faults"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _FAULTS in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
async def nats_server() -> AsyncIterator[EmbeddedNats]:
    """One nats-server with JetStream for the whole session (free port, temp store)."""
    server = EmbeddedNats(sync_always=os.environ.get("WINDSHIFT_TEST_SYNC", "0") == "1")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(nats_server: EmbeddedNats) -> AsyncIterator[windshift.Client]:
    async with windshift.connect(nats_server.url) as connected:
        yield connected


@pytest.fixture
async def background() -> AsyncIterator[Background]:
    """Start tasks with ``background.start``; those still running at teardown are cancelled."""
    tasks = Background()
    try:
        yield tasks
    finally:
        await tasks.cancel_all()


@pytest.fixture
def name() -> str:
    """A stream/consumer name no other test uses."""
    return f"t{os.getpid()}x{next(_counter)}"


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """An in-memory exporter behind the global tracer provider (installed once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    return _EXPORTER


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    span_exporter.clear()
    yield span_exporter
    span_exporter.clear()


# gRPC façade: `windshift-grpc serve` subprocesses, channels and Events helpers;
# certificates for the TLS tests.
pytest_plugins = ["tests.grpc_fixtures", "tests._pki", "tests._cli", "pytester"]


# Metrics: an in-memory reader behind the global meter provider (installed once;
# windshift's instruments, created at import, follow it through the API's proxy).
from opentelemetry import metrics  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

_METRIC_READER = InMemoryMetricReader()


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    """The in-memory reader of the global meter provider (installed once per session)."""
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[_METRIC_READER]))
    return _METRIC_READER
