"""``/metrics`` of a real ``windshift-grpc serve --workers 2``: the supervisor serves it.

What one process serves (tests/grpc/test_metrics_endpoint.py), the
supervisor serves for the group: its own sampler's gauges, unlabelled, and
each worker's series with a ``worker`` label, asked at every scrape. The
assertions of the single-process tests are reused where they hold as they
are (the lag, who may read what). Waiting is polling ``/metrics`` until a
scrape shows what is awaited, or waiting for a log line, never a sleep.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

import tests.grpc.test_metrics_endpoint as single
from tests.grpc.test_metrics_endpoint import (
    Scrape,
    Secured,
    metered_serve,
    of,
    scrape,
    secured_serve,
    until,
)
from tests.grpc_fixtures import (
    ServeProcess,
    channels_on_every_worker,
    publish,
    worker_pids,
)
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.supervisor import METRICS_WAIT

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT sharing")

WORKERS = {"WINDSHIFT_WORKERS": "2"}


def stub_of(channel: grpc.aio.Channel) -> Stub:
    return pb_grpc.EventsServiceStub(channel)  # type: ignore[return-value]


def workers_of(answer: Scrape, name: str, **labels: str) -> set[str]:
    """The ``worker`` labels of the samples ``name`` whose labels include ``labels``."""
    return {
        sample.labels.get("worker", "")
        for sample in answer.samples()
        if sample.name == name and labels.items() <= sample.labels.items()
    }


def up(answer: Scrape) -> dict[str, float]:
    return {
        sample.labels["worker"]: sample.value
        for sample in answer.samples()
        if sample.name == "windshift_worker_up"
    }


@pytest.fixture(scope="module")
async def group(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServeProcess]:
    """A supervisor and two workers, metered, on an embedded NATS of their own."""
    server = metered_serve(tmp_path_factory.mktemp("group"), **WORKERS)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def stub(group: ServeProcess) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(group.target) as channel:
        yield stub_of(channel)


# --- what it carries ---------------------------------------------------------------


async def test_a_scrape_has_every_workers_series_with_its_label(
    group: ServeProcess, name: str
) -> None:
    channels = await channels_on_every_worker(group, 2, name)
    try:
        for worker, channel in channels.items():
            await publish(stub_of(channel), f"{name}.a", *(["x"] * worker))
    finally:
        for channel in channels.values():
            await channel.close()
    stream = {"windshift_stream": name}
    # Worker 1 published one event, worker 2 two: each counted by the worker that did.
    answer = await until(
        group,
        lambda s: (
            s.value("windshift_events_published_total", **stream, worker="1") == 1
            and s.value("windshift_events_published_total", **stream, worker="2") == 2
        ),
    )
    assert workers_of(answer, "windshift_events_published_total", **stream) == {"1", "2"}
    ensured = {"rpc_method": "EnsureStream", "rpc_grpc_status_code": "0"}
    assert workers_of(answer, "rpc_server_call_duration_seconds_count", **ensured) == {"1", "2"}
    assert up(answer) == {"1": 1.0, "2": 1.0}
    # The process series of the supervisor (no label) and of each worker.
    assert workers_of(answer, "process_cpu_seconds_total") == {"", "1", "2"}
    # The sampler is the supervisor's alone: its gauges are there once, unlabelled.
    assert workers_of(answer, "windshift_sample_timestamp_seconds") == {""}
    # A family is declared once, its series from every process under it.
    types = re.findall(r"^# TYPE (\S+) ", answer.text, re.MULTILINE)
    assert len(types) == len(set(types))

    # OpenMetrics too: the strict parser of prometheus_client reads it whole.
    openmetrics = await scrape(group, Accept="application/openmetrics-text; version=1.0.0")
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    parsed = openmetrics_families(openmetrics.text)  # type: ignore[no-untyped-call]
    families = {family.name: family for family in parsed}
    assert families["rpc_server_call_duration_seconds"].unit == "seconds"
    assert families["windshift_worker_up"].type == "gauge"


async def test_lag_grows_while_nothing_consumes(group: ServeProcess, stub: Stub, name: str) -> None:
    # The single process' test as it is: each consumer gauge has one sample (no worker
    # samples any), growing from one round of the supervisor's sampler to the next.
    await single.test_lag_grows_while_nothing_consumes(group, stub, name)
    answer = await scrape(group)
    assert workers_of(answer, "windshift_consumer_lag_seconds", **of(name)) == {""}


async def test_every_metric_and_label_the_dashboard_uses_is_served(
    group: ServeProcess, stub: Stub, name: str
) -> None:
    await single.test_every_metric_and_label_the_dashboard_uses_is_served(group, stub, name)


# --- a worker that does not answer --------------------------------------------------


async def test_a_stopped_worker_is_left_out_and_does_not_hang_the_scrape(
    group: ServeProcess, name: str
) -> None:
    pids = worker_pids(group)
    before = len(group.lines)
    os.kill(pids[2], signal.SIGSTOP)  # as a stuck process would be
    try:
        answer = await scrape(group)
    finally:
        os.kill(pids[2], signal.SIGCONT)
    assert answer.status == 200
    assert up(answer) == {"1": 1.0, "2": 0.0}
    assert workers_of(answer, "process_cpu_seconds_total") == {"", "1"}
    assert answer.value("windshift_sample_timestamp_seconds") is not None
    await group.wait_for_line(
        f"/metrics leaves worker 2 of 2 out: it did not answer within {METRICS_WAIT:g} s",
        after=before,
    )
    # Going on, it is in again.
    again = await until(group, lambda s: up(s) == {"1": 1.0, "2": 1.0})
    assert workers_of(again, "process_cpu_seconds_total") == {"", "1", "2"}


async def test_a_killed_worker_is_left_out_until_it_serves_again(
    group: ServeProcess, name: str
) -> None:
    old = worker_pids(group)[1]
    before = len(group.lines)
    os.kill(old, signal.SIGKILL)
    # The supervisor saw it go, and waits before it starts it again.
    await group.wait_for_line(r"worker 1 of 2 \(pid \d+\) was killed by SIGKILL", after=before)
    answer = await scrape(group)
    assert answer.status == 200
    assert up(answer) == {"1": 0.0, "2": 1.0}
    assert workers_of(answer, "process_cpu_seconds_total") == {"", "2"}
    await group.wait_for_line(r"worker 1 of 2 started again", after=before, timeout=30)
    again = await until(group, lambda s: up(s) == {"1": 1.0, "2": 1.0})
    # The new process: its own start time.
    assert workers_of(again, "process_start_time_seconds") == {"", "1", "2"}


# --- who may read it ---------------------------------------------------------------


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    async with secured_serve(tmp_path_factory.mktemp("secured"), **WORKERS) as secured:
        yield secured


@pytest.mark.parametrize("token", [None, "not-a-token-of-the-file"])
async def test_a_scrape_without_a_valid_token_is_401(secured: Secured, token: str | None) -> None:
    await single.test_a_scrape_without_a_valid_token_is_401(secured, token)


async def test_a_tenants_ordinary_token_cannot_read_metrics(secured: Secured) -> None:
    await single.test_a_tenants_ordinary_token_cannot_read_metrics(secured)


async def test_a_tenants_metrics_token_reads_its_own_streams_and_nothing_else(
    secured: Secured,
) -> None:
    # Nothing that names no stream: not the workers' up gauge, processes or totals either.
    await single.test_a_tenants_metrics_token_reads_its_own_streams_and_nothing_else(secured)
    answer = await scrape(secured.server, secured.tenant_metrics)
    assert "windshift_worker_up" not in answer.names


async def test_a_token_with_metrics_on_every_stream_reads_everything(secured: Secured) -> None:
    await single.test_a_token_with_metrics_on_every_stream_reads_everything(secured)
    answer = await scrape(secured.server, secured.scraper)
    assert up(answer) == {"1": 1.0, "2": 1.0}


async def test_sighup_reloads_the_tokens_of_metrics_in_the_supervisor(secured: Secured) -> None:
    late = secrets.token_urlsafe(24)
    assert (await scrape(secured.server, late)).status == 401
    tokens = json.loads(secured.tokens_file.read_text())
    tokens["tokens"].append({"name": "late", "token": late, "metrics": [">"]})
    secured.tokens_file.write_text(json.dumps(tokens))
    before = len(secured.server.lines)
    assert secured.server.process is not None
    secured.server.process.send_signal(signal.SIGHUP)
    await secured.server.wait_for_line("SIGHUP received: passed on to 2 worker", after=before)
    answer = await scrape(secured.server, late)
    assert answer.status == 200
    assert answer.value("windshift_consumer_lag_events", **of(secured.mine)) == 1
