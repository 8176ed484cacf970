"""``/metrics`` of a real ``windshift-grpc serve``: what it carries, who may read it, the dashboard.

Every server here is the real command on an embedded NATS of its own (so
that its sampler sees only this module's streams), sampling every second.
Waiting is polling ``/metrics`` until a scrape shows what is awaited (a new
sampling round, a counted dead letter), never a sleep for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests._pki import Pki
from tests.grpc.test_serve_startup import cli_without
from tests.grpc_fixtures import (
    ROOT,
    EventsClient,
    ServeProcess,
    StartServe,
    duration,
    ensure_stream,
    publish,
    run_command,
    serve_env,
    string_any,
)
from windshift._embedded import free_port
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.auth import Permission
from windshift_grpc.settings import Settings, SettingsError

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

DASHBOARD = ROOT / "docs" / "grafana" / "windshift.json"
CONSUMER = "worker"
POLL = 0.05  # seconds between two scrapes while waiting for a round
WAIT = 30.0


# --- scraping ----------------------------------------------------------------------


@dataclass
class Scrape:
    """One answer of ``/metrics``, parsed by prometheus_client's own parser."""

    status: int
    headers: dict[str, str]
    text: str

    def samples(self) -> Iterator[Sample]:
        for family in text_string_to_metric_families(self.text):
            yield from family.samples

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample ``name`` whose labels include ``labels`` (None: absent)."""
        found = [
            sample.value
            for sample in self.samples()
            if sample.name == name and labels.items() <= sample.labels.items()
        ]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    @property
    def names(self) -> set[str]:
        return {sample.name for sample in self.samples()}

    @property
    def labels(self) -> set[str]:
        return {label for sample in self.samples() for label in sample.labels}


async def scrape(server: ServeProcess, token: str | None = None, **headers: str) -> Scrape:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{server.health_port}/metrics",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response,
    ):
        return Scrape(response.status, dict(response.headers), await response.text())


async def until(
    server: ServeProcess, wanted: Callable[[Scrape], bool], token: str | None = None
) -> Scrape:
    """Scrape until ``wanted`` holds for an answer; that answer."""
    deadline = time.monotonic() + WAIT
    while True:
        answer = await scrape(server, token)
        assert answer.status == 200, answer.text
        if wanted(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no scrape within {WAIT}s was as wanted; the last:\n{answer.text}"
            )
        await asyncio.sleep(POLL)


def of(stream: str, consumer: str = CONSUMER) -> dict[str, str]:
    return {"windshift_stream": stream, "windshift_consumer": consumer}


# --- servers -----------------------------------------------------------------------


def metered_serve(tmp: Path, **env: str | None) -> ServeProcess:
    """A serve with WINDSHIFT_METRICS on, sampling every second, on an embedded NATS of its own."""
    return ServeProcess(
        serve_env(
            None,
            WINDSHIFT_DATA_DIR=str(tmp),
            WINDSHIFT_EMBEDDED_NATS_PORT=str(free_port()),
            WINDSHIFT_METRICS="on",
            WINDSHIFT_SAMPLE_INTERVAL="1",
            **env,
        )
    )


@pytest.fixture(scope="module")
async def metered(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServeProcess]:
    server = metered_serve(tmp_path_factory.mktemp("metered"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def stub(metered: ServeProcess) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(metered.target) as channel:
        yield pb_grpc.EventsServiceStub(channel)  # type: ignore[misc]


def dead_of(stream: str) -> str:
    return f"{stream}dead"


async def lettered_consumer(
    stub: Stub, stream: str, metadata: list[tuple[str, str]] | None = None
) -> None:
    """A stream and a consumer of it, from its start, with a dead-letter stream and two attempts."""
    await stub.EnsureStream(
        pb.EnsureStreamRequest(
            name=stream, subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{stream}.>"])
        ),
        metadata=metadata,
    )
    request = pb.EnsureConsumerRequest(
        stream=stream,
        name=CONSUMER,
        subjects=[f"{stream}.>"],
        processing_timeout=duration(60),
        max_delivery_attempts=2,
        dead_letter_stream=dead_of(stream),
    )
    getattr(request, "from").start = True
    await stub.EnsureConsumer(request, metadata=metadata)


async def _redeliver_then_dead_letter(
    server: ServeProcess, stub: Stub, stream: str, *, observe: bool
) -> None:
    """One event acknowledged, one rejected once, redelivered, then rejected for good.

    With ``observe``, scrapes in between until the redelivery shows.
    """
    ids = await publish(stub, f"{stream}.a", "kept", "refused")
    call = EventsClient(stub)
    try:
        await call.subscribe(stream, CONSUMER)
        first, second = await call.events(2)
        assert [first.id, second.id] == ids
        await call.ack(first.id)
        await call.reject(second.id)  # again, at once
        again = await call.next_event()
        assert (again.id, again.delivery_attempt) == (second.id, 2)
        if observe:
            answer = await until(
                server,
                lambda s: s.value("windshift_consumer_redelivered", **of(stream)) == 1,
            )
            assert answer.value("windshift_consumer_unacknowledged", **of(stream)) == 1
            assert answer.value("windshift_consumer_pending", **of(stream)) == 0
        await call.reject(second.id, permanently=True, reason="cannot be processed")
    finally:
        await call.cancel()


# --- what it carries ---------------------------------------------------------------


async def test_lag_grows_while_nothing_consumes(
    metered: ServeProcess, stub: Stub, name: str
) -> None:
    await lettered_consumer(stub, name)
    await publish(stub, f"{name}.a", "one", "two", "three")

    first = await until(
        metered, lambda s: s.value("windshift_consumer_lag_events", **of(name)) == 3
    )
    assert first.value("windshift_consumer_pending", **of(name)) == 3
    assert first.value("windshift_consumer_unacknowledged", **of(name)) == 0
    first_age = first.value("windshift_consumer_lag_seconds", **of(name))
    first_round = first.value("windshift_sample_timestamp_seconds")
    assert first_age is not None and first_round is not None

    await publish(stub, f"{name}.a", "four", "five")
    later = await until(
        metered, lambda s: s.value("windshift_consumer_lag_events", **of(name)) == 5
    )
    later_age = later.value("windshift_consumer_lag_seconds", **of(name))
    later_round = later.value("windshift_sample_timestamp_seconds")
    assert later_round is not None and later_round > first_round
    # The oldest unprocessed event is the same one, older by the time between the rounds.
    assert later_age is not None and later_age > first_age
    assert later_age - first_age == pytest.approx(later_round - first_round, abs=1.0)
    assert later.value("windshift_consumer_ack_floor", **of(name)) == 0


async def test_redeliveries_and_dead_letters_are_counted(
    metered: ServeProcess, stub: Stub, name: str
) -> None:
    dead = {"windshift_dead_letter_stream": dead_of(name)}
    await lettered_consumer(stub, name)
    empty = await until(metered, lambda s: s.value("windshift_dead_letters", **dead) is not None)
    assert empty.value("windshift_dead_letters", **dead) == 0

    await _redeliver_then_dead_letter(metered, stub, name, observe=True)

    counted = {"windshift_stream": name, "windshift_consumer": CONSUMER}
    # The gauge is sampled from JetStream, the counter counted as the letter is stored.
    answer = await until(
        metered,
        lambda s: (
            s.value("windshift_dead_letters", **dead) == 1
            and s.value("windshift_events_dead_lettered_total", **counted) == 1
        ),
    )
    assert answer.value("windshift_events_redelivered_total", **counted) == 1
    assert answer.value("windshift_events_acknowledged_total", **counted) == 1
    assert answer.value("windshift_events_published_total", windshift_stream=name) == 2
    settled = await until(
        metered, lambda s: s.value("windshift_consumer_lag_events", **of(name)) == 0
    )
    assert settled.value("windshift_consumer_redelivered", **of(name)) == 0
    assert settled.value("windshift_consumer_ack_floor", **of(name)) == 2


async def test_the_rpcs_are_timed_by_method_and_status(
    metered: ServeProcess, stub: Stub, name: str
) -> None:
    await ensure_stream(stub, name)
    await publish(stub, f"{name}.a", "x")
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # no stream collects the subject
        await stub.PublishEvent(pb.PublishEventRequest(subject=f"{name}nowhere.a"))
    code = refused.value.code()
    assert code is not grpc.StatusCode.OK
    publishes = {
        "rpc_system": "grpc",
        "rpc_service": "windshift.events.v1alpha1.EventsService",
        "rpc_method": "PublishEvent",
    }

    def counted(answer: Scrape, status: grpc.StatusCode) -> bool:
        count = answer.value(
            "rpc_server_call_duration_seconds_count",
            **publishes,
            rpc_grpc_status_code=str(status.value[0]),
        )
        return count is not None and count >= 1

    # The client may have its status a moment before the server counts the call.
    answer = await until(metered, lambda s: counted(s, grpc.StatusCode.OK) and counted(s, code))
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert answer.headers["Cache-Control"] == "no-store"


async def test_openmetrics_when_the_scraper_asks_for_it(metered: ServeProcess) -> None:
    answer = await scrape(metered, Accept="application/openmetrics-text; version=1.0.0")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")


async def test_metrics_is_404_when_off(grpc_server: ServeProcess) -> None:
    answer = await scrape(grpc_server)
    assert answer.status == 404
    assert "windshift" not in answer.text


async def test_otlp_and_prometheus_at_once(start_serve: StartServe, tmp_path: Path) -> None:
    server = await start_serve(
        NATS_URL=None,
        WINDSHIFT_DATA_DIR=str(tmp_path),
        WINDSHIFT_EMBEDDED_NATS_PORT=str(free_port()),
        WINDSHIFT_METRICS="on",
        OTEL_METRICS_EXPORTER="console",
        OTEL_METRIC_EXPORT_INTERVAL="200",
    )
    await server.wait_for_line(r"exporting metrics \(/metrics, console\)")
    # The sampler's gauges go out through both readers.
    line = await server.wait_for_line("windshift.sample.timestamp", stdout=True, timeout=20)
    assert json.loads(line)["resource_metrics"]
    answer = await scrape(server)
    assert answer.status == 200
    assert answer.value("windshift_sample_timestamp_seconds") is not None


async def test_otel_sdk_disabled_leaves_only_the_process_metrics(
    start_serve: StartServe, tmp_path: Path
) -> None:
    server = await start_serve(
        NATS_URL=None,
        WINDSHIFT_DATA_DIR=str(tmp_path),
        WINDSHIFT_EMBEDDED_NATS_PORT=str(free_port()),
        WINDSHIFT_METRICS="on",
        OTEL_SDK_DISABLED="true",
    )
    await server.wait_for_line("OTEL_SDK_DISABLED is true")
    answer = await scrape(server)
    assert answer.status == 200
    assert "process_cpu_seconds_total" in answer.names
    assert not {name for name in answer.names if not name.startswith("process_")}
    assert await server.signal() == 0
    assert "collect" not in server.log  # the SDK's complaint about an unregistered reader


def _empty(directory: Path) -> bool:
    return not any(directory.iterdir())


@pytest.mark.parametrize("module", ["opentelemetry.exporter.prometheus", "prometheus_client"])
async def test_without_the_exporter_metrics_on_stops_serve_with_one_line(
    module: str, tmp_path: Path
) -> None:
    env = serve_env(
        None,
        WINDSHIFT_DATA_DIR=str(tmp_path),
        WINDSHIFT_EMBEDDED_NATS_PORT=str(free_port()),
        WINDSHIFT_METRICS="on",
    )
    code, out, err = await run_command(*cli_without([module], "serve"), env=env)
    assert (code, out) == (1, "")
    [line] = err.strip().splitlines()
    assert "WINDSHIFT_METRICS is on" in line
    assert f"{module} cannot be imported" in line
    assert "opentelemetry-exporter-prometheus" in line
    assert _empty(tmp_path)  # nothing started: no embedded NATS, no data


# --- who may read it ---------------------------------------------------------------


@dataclass
class Secured:
    server: ServeProcess
    admin: str  # every permission, metrics on every stream
    scraper: str  # metrics on every stream, nothing else
    tenant: str  # everything on its own stream, but no metrics
    tenant_metrics: str  # metrics on its own stream only
    mine: str  # the tenant's stream
    theirs: str  # another tenant's
    tokens_file: Path


@contextlib.asynccontextmanager
async def secured_serve(tmp: Path, **env: str) -> AsyncIterator[Secured]:
    """A metered serve with a tokens file (``env``: more of its environment), sampled once."""
    mine, theirs = f"mine{secrets.token_hex(3)}", f"theirs{secrets.token_hex(3)}"
    tokens = {role: secrets.token_urlsafe(24) for role in ("admin", "scraper", "tenant", "tm")}
    own = [mine, dead_of(mine)]
    entries: list[dict[str, Any]] = [
        {"name": "admin", "token": tokens["admin"], **{p.value: [">"] for p in Permission}},
        {"name": "prometheus", "token": tokens["scraper"], "metrics": [">"]},
        {
            "name": "tenant",
            "token": tokens["tenant"],
            "publish": [f"{mine}.>", f"{dead_of(mine)}.>"],
            "consume": own,
            "manage": own,
            "read_state": [mine],
            "write_state": [mine],
        },
        {"name": "tenant-metrics", "token": tokens["tm"], "metrics": own},
    ]
    path = tmp / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}))
    path.chmod(0o600)
    server = metered_serve(tmp / "data", WINDSHIFT_AUTH_FILE=str(path), **env)
    await server.start()
    try:
        as_admin = [("authorization", f"Bearer {tokens['admin']}")]
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
            for stream in (mine, theirs):
                await lettered_consumer(stub, stream, as_admin)
                await stub.PublishEvent(
                    pb.PublishEventRequest(subject=f"{stream}.a", data=string_any("x")),
                    metadata=as_admin,
                )
        # Until a round has seen both.
        await until(
            server,
            lambda s: all(
                s.value("windshift_consumer_lag_events", **of(stream)) == 1
                for stream in (mine, theirs)
            ),
            token=tokens["scraper"],
        )
        yield Secured(
            server,
            tokens["admin"],
            tokens["scraper"],
            tokens["tenant"],
            tokens["tm"],
            mine,
            theirs,
            path,
        )
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    async with secured_serve(tmp_path_factory.mktemp("secured")) as secured:
        yield secured


@pytest.mark.parametrize("token", [None, "not-a-token-of-the-file"])
async def test_a_scrape_without_a_valid_token_is_401(secured: Secured, token: str | None) -> None:
    answer = await scrape(secured.server, token)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert "metrics permission" in answer.text
    assert secured.mine not in answer.text and secured.theirs not in answer.text


async def test_a_tenants_ordinary_token_cannot_read_metrics(secured: Secured) -> None:
    answer = await scrape(secured.server, secured.tenant)
    assert answer.status == 403
    assert answer.text == "token 'tenant' may not read /metrics (no metrics permission)\n"
    assert secured.theirs not in answer.text
    await secured.server.wait_for_line("/metrics denied: token 'tenant' has no metrics permission")


async def test_a_tenants_metrics_token_reads_its_own_streams_and_nothing_else(
    secured: Secured,
) -> None:
    answer = await scrape(secured.server, secured.tenant_metrics)
    assert answer.status == 200
    assert answer.value("windshift_consumer_lag_events", **of(secured.mine)) == 1
    dead = {"windshift_dead_letter_stream": dead_of(secured.mine)}
    assert answer.value("windshift_dead_letters", **dead) == 0
    assert secured.theirs not in answer.text
    # Nothing that names no stream: not the server's totals, the process or the resource.
    for sample in answer.samples():
        assert {"windshift_stream", "windshift_dead_letter_stream"} & set(sample.labels), sample
    assert not answer.names & {"target_info", "process_cpu_seconds_total"}


async def test_a_token_with_metrics_on_every_stream_reads_everything(secured: Secured) -> None:
    for token in (secured.scraper, secured.admin):
        answer = await scrape(secured.server, token)
        assert answer.status == 200
        for stream in (secured.mine, secured.theirs):
            assert answer.value("windshift_consumer_lag_events", **of(stream)) == 1
        assert {"target_info", "process_cpu_seconds_total"} <= answer.names
        assert "rpc_server_call_duration_seconds_count" in answer.names


def test_under_client_certificates_alone_metrics_stays_on_loopback(pki: Pki) -> None:
    mutual = {
        "GRPC_TLS_CERT": str(pki.server_cert),
        "GRPC_TLS_KEY": str(pki.server_key),
        "GRPC_TLS_CLIENT_CA": str(pki.ca),
        "WINDSHIFT_METRICS": "on",
    }
    with pytest.raises(SettingsError) as error:
        Settings.from_env(mutual)
    assert error.value.name == "WINDSHIFT_METRICS"
    assert "HEALTH_HOST=127.0.0.1" in str(error.value)
    for host in ("127.0.0.1", "::1"):
        assert Settings.from_env({**mutual, "HEALTH_HOST": host}).metrics
    assert not Settings.from_env({**mutual, "WINDSHIFT_METRICS": "off"}).metrics


# --- the dashboard -----------------------------------------------------------------

# PromQL words that are not metric names.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the panels' targets and of the template variables."""
    found = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def _names_in(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names one PromQL expression uses."""
    labels: set[str] = set()
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals hold no names
    for matchers in _MATCHERS.findall(expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    expr = _MATCHERS.sub(" ", expr)
    for grouping in _GROUPING.findall(expr):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    expr = _GROUPING.sub(" ", expr)
    variable = re.match(r"\s*label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*$", expr)
    if variable:
        return {variable.group(1)}, labels | {variable.group(2)}
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # Grafana's variables
    metrics = {
        match.group()
        for match in _IDENTIFIER.finditer(expr)
        if not expr[match.end() :].lstrip().startswith("(")  # a function
        and match.group() not in _KEYWORDS
        and not (match.start() > 0 and expr[match.start() - 1].isdigit())  # 1e3, 5m
    }
    return metrics, labels


def test_the_dashboard_is_grafana_json_on_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [source] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    uid = "${" + source["name"] + "}"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert _names_in('sum by (le, a) (rate(x_bucket{b="1", c=~"$c"}[5m])) / 1e3') == (
        {"x_bucket"},
        {"le", "a", "b", "c"},
    )


async def test_every_metric_and_label_the_dashboard_uses_is_served(
    metered: ServeProcess, stub: Stub, name: str
) -> None:
    await lettered_consumer(stub, name)
    await _redeliver_then_dead_letter(metered, stub, name, observe=False)
    answer = await until(
        metered,
        lambda s: (
            s.value("windshift_dead_letters", windshift_dead_letter_stream=dead_of(name)) == 1
            and "windshift_events_dead_lettered_total" in s.names
        ),
    )
    served_names, served_labels = answer.names, answer.labels | {"le"}
    used_names: set[str] = set()
    used_labels: set[str] = set()
    for expr in _queries(json.loads(DASHBOARD.read_text())):
        names, labels = _names_in(expr)
        assert names, expr
        used_names |= names
        used_labels |= labels
    assert used_names - served_names == set()
    assert used_labels - served_labels == set()
    # The three questions of docs/metrics.md.
    assert {
        "windshift_consumer_lag_seconds",
        "windshift_consumer_lag_events",
        "windshift_consumer_redelivered",
        "windshift_events_redelivered_total",
        "windshift_dead_letters",
        "windshift_events_dead_lettered_total",
    } <= used_names
