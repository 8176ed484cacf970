"""`windshift-grpc serve` as a process: settings, probes, reflection, logs, traces, shutdown."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import windshift
from tests.grpc_fixtures import (
    ROOT,
    EventsClient,
    ServeProcess,
    StartServe,
    ensure_consumer,
    ensure_stream,
    http_get,
    publish,
    run_command,
    serve_command,
    serve_env,
    string_any,
    unpack_text,
)
from windshift._embedded import free_port
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.settings import SETTINGS, Settings, SettingsError, documented, markdown

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

EVENTS_SERVICE = "windshift.events.v1alpha1.EventsService"
STATE_SERVICE = "windshift.state.v1alpha1.StateService"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


# --- settings and the command line ----------------------------------------------


def test_settings_defaults_and_values() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings() == Settings(
        nats_url=None,
        grpc_port=8080,
        health_port=8088,
        development=False,
        nats_publish_async_max_pending=256,
        data_dir=Path(".windshift"),
        embedded_nats_port=4222,
    )
    settings = Settings.from_env(
        {
            "NATS_URL": "nats://a:4222, nats://b:4222",
            "GRPC_PORT": "9090",
            "HEALTH_PORT": "9091",
            "DEVELOPMENT": "TRUE",
            "NATS_PUBLISH_ASYNC_MAX_PENDING": "17",
            "WINDSHIFT_DATA_DIR": "/var/lib/windshift",
            "WINDSHIFT_EMBEDDED_NATS_PORT": "14222",
            "WINDSHIFT_MAX_EVENTS_CALLS": "5",
            "WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN": "2",
            "WINDSHIFT_EVENTS_FIRST_MESSAGE_TIMEOUT": "0.5",
            "WINDSHIFT_EVENTS_MAX_IDS_PER_REQUEST": "100",
            "WINDSHIFT_EVENTS_MAX_PENDING_BYTES": "65536",
            # not windshift's: the OpenTelemetry SDK reads them itself
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_SERVICE_NAME": "events-api",
        }
    )
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]
    assert (settings.grpc_port, settings.health_port) == (9090, 9091)
    assert settings.development is True
    assert settings.nats_publish_async_max_pending == 17
    assert settings.data_dir == Path("/var/lib/windshift")
    assert (settings.embedded_nats_port, settings.max_events_calls) == (14222, 5)
    assert settings.max_events_calls_per_token == 2
    assert settings.events_first_message_timeout == 0.5
    assert settings.events_max_ids_per_request == 100
    assert settings.events_max_pending_bytes == 65536
    assert not [name for name in vars(Settings) if name.startswith("otel")]
    with pytest.raises(AttributeError):
        settings.grpc_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GRPC_PORT", "http"),
        ("GRPC_PORT", "70000"),
        ("HEALTH_PORT", "0"),
        ("HEALTH_PORT", "8080"),  # the same as GRPC_PORT
        ("DEVELOPMENT", "maybe"),
        ("NATS_PUBLISH_ASYNC_MAX_PENDING", "0"),
        ("NATS_PUBLISH_ASYNC_MAX_PENDING", "many"),
        ("NATS_URL", "localhost:4222"),
        ("WINDSHIFT_EMBEDDED_NATS_PORT", "0"),
        ("WINDSHIFT_EMBEDDED_NATS_PORT", "8080"),  # the same as GRPC_PORT
        ("WINDSHIFT_MAX_EVENTS_CALLS", "lots"),
        ("WINDSHIFT_MAX_STREAM_SUBJECTS", "0"),
        ("WINDSHIFT_MAX_SUBJECT_LENGTH", "4000"),  # longer than NATS can carry
        ("WINDSHIFT_DEAD_LETTER_PAGE_BYTES", "1000"),
        ("WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS", "0"),
        ("WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS", "100001"),
        ("WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN", "0"),
        ("WINDSHIFT_EVENTS_FIRST_MESSAGE_TIMEOUT", "soon"),
        ("WINDSHIFT_EVENTS_FIRST_MESSAGE_TIMEOUT", "0"),
        ("WINDSHIFT_EVENTS_FIRST_MESSAGE_TIMEOUT", "nan"),
        ("WINDSHIFT_EVENTS_MAX_IDS_PER_REQUEST", "0"),
        ("WINDSHIFT_EVENTS_MAX_PENDING_BYTES", "4MiB"),
        ("WINDSHIFT_METRICS", "maybe"),
        ("WINDSHIFT_SAMPLE_INTERVAL", "0.5"),
        ("WINDSHIFT_SAMPLE_INTERVAL", "often"),
        ("WINDSHIFT_CONSOLE", "perhaps"),
        ("WINDSHIFT_CONSOLE_HOSTS", "console example.com"),
        ("WINDSHIFT_WORKERS", "many"),
    ],
)
async def test_bad_settings_stop_serve_with_one_line_naming_the_setting(
    variable: str, value: str
) -> None:
    env = serve_env(None, GRPC_PORT="8080", HEALTH_PORT="8088")
    env[variable] = value
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env)
    assert error.value.name == variable

    code, out, err = await run_command(*serve_command(), env=env)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert variable in lines[0]
    assert value in lines[0] or variable == "HEALTH_PORT"
    assert out == ""


async def test_help_documents_every_setting() -> None:
    env = serve_env(None)
    for command in ([*serve_command(), "--help"], [serve_command()[0], "--help"]):
        code, out, _ = await run_command(*command, env=env)
        assert code == 0
        for setting in SETTINGS:
            assert f"  {setting.variable} (default: {setting.shown_default})\n" in out
        flowing = " ".join(out.split())
        for setting in SETTINGS:
            assert " ".join(setting.help.replace("`", "").split()) in flowing
        assert "OTEL_TRACES_EXPORTER" in out  # where the OpenTelemetry variables went
        assert "`" not in out[out.index("environment variables") :]  # docs markup, dropped


async def test_without_a_command_the_cli_prints_short_usage() -> None:
    code, out, err = await run_command(serve_command()[0], env=serve_env(None))
    assert code == 2
    assert out == ""
    usage, complaint = err.strip().splitlines()
    assert usage == "usage: windshift-grpc [-h] [--version] {serve,token} ..."
    assert complaint.startswith("windshift-grpc: name a command")


def test_the_settings_tables_of_the_docs_are_the_declared_settings() -> None:
    document = (ROOT / "docs" / "grpc.md").read_text()
    assert documented(document) == markdown(), (
        "docs/grpc.md is out of date: python -m windshift_grpc.settings --update docs/grpc.md"
    )
    for setting in SETTINGS:
        assert f"| `{setting.variable}` |" in document


async def test_the_documented_command_rewrites_the_settings_tables(tmp_path: Path) -> None:
    stale = tmp_path / "grpc.md"
    current = (ROOT / "docs" / "grpc.md").read_text()
    stale.write_text(current.replace("| `GRPC_PORT` | `8080` |", "| `GRPC_PORT` | `9999` |"))
    assert documented(stale.read_text()) != markdown()
    code, out, err = await run_command(
        sys.executable, "-m", "windshift_grpc.settings", "--update", str(stale), env=serve_env(None)
    )
    assert (code, out, err) == (0, "", "")
    assert stale.read_text() == current


async def test_serve_exits_1_when_it_cannot_start(start_serve: StartServe) -> None:
    taken = await start_serve()
    env = serve_env(f"nats://127.0.0.1:{free_port()}")
    code, _, err = await run_command(*serve_command(), env=env)
    assert code == 1
    assert "could not start" in err
    assert "cannot connect to NATS" in err

    env = serve_env(taken.env["NATS_URL"], GRPC_PORT=str(taken.grpc_port))
    code, _, err = await run_command(*serve_command(), env=env)
    assert code == 1
    [line] = err.strip().splitlines()
    assert f"GRPC_PORT {taken.grpc_port} is already in use" in json.loads(line)["message"]


# --- probes, health, reflection -------------------------------------------------


async def test_healthz_and_readyz(grpc_server: ServeProcess) -> None:
    assert await http_get(grpc_server.health_port, "/healthz") == (200, "ok\n")
    assert await http_get(grpc_server.health_port, "/readyz") == (200, "ready\n")
    assert (await http_get(grpc_server.health_port, "/readyz?verbose=1"))[0] == 200
    assert (await http_get(grpc_server.health_port, "/metrics"))[0] == 404
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{grpc_server.health_port}"
        async with session.post(f"{url}/healthz") as posted:
            assert posted.status == 405
        async with session.head(f"{url}/readyz") as head:
            assert head.status == 200
            assert head.headers["Cache-Control"] == "no-store"
            assert await head.read() == b""
        async with session.get(f"{url}/nothing") as missing:
            assert missing.status == 404
            assert missing.headers["Cache-Control"] == "no-store"


async def test_grpc_health_service_reports_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", EVENTS_SERVICE, STATE_SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_server_streaming_call_with_bytes_that_are_no_request_is_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    # Health/Watch takes one request and streams answers: a request that does
    # not parse must be refused as such, not reach the handler.
    call = channel.unary_stream("/grpc.health.v1.Health/Watch")(b"\xff\xff\xff", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Watch" in str(raised.value.details())


async def test_reflection_lists_and_describes_the_services(channel: grpc.aio.Channel) -> None:
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=EVENTS_SERVICE),
    ]
    listed, described = [
        response async for response in reflect.ServerReflectionInfo(iter(requests))
    ]
    names = {service.name for service in listed.list_services_response.service}
    assert names == {
        EVENTS_SERVICE,
        STATE_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    events_file = next(f for f in files if f.package == "windshift.events.v1alpha1")
    assert events_file.name == "windshift/events/v1alpha1/service.proto"
    assert [method.name for method in events_file.service[0].method] == [
        "EnsureStream",
        "EnsureConsumer",
        "DeleteConsumer",
        "PublishEvent",
        "Events",
        "ListDeadLetters",
        "GetDeadLetter",
        "ReplayDeadLetter",
        "DeleteDeadLetter",
        "PurgeDeadLetters",
        "PublishEvents",
    ]


# --- logs and traces ------------------------------------------------------------


async def test_one_log_line_per_rpc_without_payloads(
    grpc_server: ServeProcess, stub: Stub, name: str
) -> None:
    secret = "payload-that-must-not-be-logged"
    await ensure_stream(stub, name)
    start = len(grpc_server.lines)
    await stub.PublishEvent(
        pb.PublishEventRequest(subject=f"{name}.a", data=string_any(secret), idempotency_key=secret)
    )
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.DeleteConsumer(pb.DeleteConsumerRequest(stream=name, id=secret))
    await grpc_server.wait_for_lines(r"DeleteConsumer NOT_FOUND \d+\.\dms$", 3, after=start)
    lines = grpc_server.lines[start:]
    rpc_lines = [line for line in lines if "windshift_grpc.rpc" in line]
    assert [re.sub(r".*rpc (\S+) (\w+) [\d.]+ms$", r"\1 \2", line) for line in rpc_lines] == [
        "/windshift.events.v1alpha1.EventsService/PublishEvent OK",
        *["/windshift.events.v1alpha1.EventsService/DeleteConsumer NOT_FOUND"] * 3,
    ]
    assert secret not in "\n".join(lines)


async def test_production_logs_are_json_lines(start_serve: StartServe, name: str) -> None:
    server = await start_serve(DEVELOPMENT="false")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
    line = await server.wait_for_line("EnsureStream OK")
    entry = json.loads(line)
    assert entry["logger"] == "windshift_grpc.rpc"
    assert entry["level"] == "info"
    assert all(json.loads(line) for line in server.lines)


def _spans(lines: list[str]) -> list[dict[str, Any]]:
    spans = []
    for line in lines:
        with_brace = line.strip()
        if with_brace.startswith("{"):
            spans.append(json.loads(with_brace))
    return spans


async def test_server_spans_continue_the_callers_trace_into_the_publish(
    start_serve: StartServe, client: windshift.Client, name: str
) -> None:
    server = await start_serve(OTEL_TRACES_EXPORTER="console")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        await client.ensure_consumer(name, "check", start=windshift.StreamPointer.start())
        await stub.PublishEvent(
            pb.PublishEventRequest(subject=f"{name}.a", data=string_any("traced")),
            metadata=[("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01")],
        )
    await server.wait_for_line(f"{name}.a publish", stdout=True)
    spans = [
        span for span in _spans(server.stdout) if span["context"]["trace_id"] == f"0x{TRACE_ID}"
    ]
    by_kind = {span["kind"]: span for span in spans}
    rpc = by_kind["SpanKind.SERVER"]
    assert rpc["resource"]["attributes"]["service.name"] == "windshift-grpc"
    assert rpc["name"] == f"{EVENTS_SERVICE}/PublishEvent"
    assert rpc["parent_id"] == f"0x{CALLER_SPAN}"
    assert rpc["attributes"]["rpc.grpc.status_code"] == 0
    publish_span = by_kind["SpanKind.PRODUCER"]
    assert publish_span["parent_id"] == rpc["context"]["span_id"]

    async with client.subscribe(name, "check") as events:
        event = await asyncio.wait_for(anext(events), 10)
        await event.ack()
    span_id = publish_span["context"]["span_id"].removeprefix("0x")
    assert event.headers["WS-Trace-Parent"] == f"00-{TRACE_ID}-{span_id}-01"


async def test_the_sdk_reads_the_service_name_and_resource_from_its_variables(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="events-api",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=staging",
    )
    await server.wait_for_line("exporting traces \\(console\\) as events-api")
    async with grpc.aio.insecure_channel(server.target) as channel:
        await ensure_stream(pb_grpc.EventsServiceStub(channel), name)  # type: ignore[arg-type]
    await server.wait_for_line("EnsureStream", stdout=True)
    [span] = [span for span in _spans(server.stdout) if span["name"].endswith("/EnsureStream")]
    attributes = span["resource"]["attributes"]
    assert attributes["service.name"] == "events-api"
    assert attributes["deployment.environment"] == "staging"


async def test_the_sdk_reads_the_metric_export_interval(start_serve: StartServe, name: str) -> None:
    server = await start_serve(OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="100")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        await publish(stub, f"{name}.a", "counted")
    # every 100 ms, not the default minute
    await server.wait_for_lines('"resource_metrics"', 3, stdout=True, timeout=20)
    assert all(json.loads(line) for line in server.stdout)  # one JSON object per line


async def test_otel_sdk_disabled_installs_nothing(start_serve: StartServe, name: str) -> None:
    server = await start_serve(OTEL_TRACES_EXPORTER="console", OTEL_SDK_DISABLED="true")
    await server.wait_for_line("OTEL_SDK_DISABLED is true")
    async with grpc.aio.insecure_channel(server.target) as channel:
        await ensure_stream(pb_grpc.EventsServiceStub(channel), name)  # type: ignore[arg-type]
    await server.wait_for_line("EnsureStream OK")
    assert await server.signal(signal.SIGTERM) == 0
    assert server.stdout == []


async def test_otlp_endpoint_without_an_exporter_installed_keeps_serving(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    installed = [
        entry.name
        for entry in importlib.metadata.entry_points(group="opentelemetry_traces_exporter")
        if entry.name == "otlp_proto_http"
    ]
    if not installed:
        line = await server.wait_for_line("traces exporter 'otlp_proto_http'")
        assert "pip install opentelemetry-exporter-otlp-proto-http" in line
        assert "spans are not exported" in line
    else:
        await server.wait_for_line("exporting traces")
    async with grpc.aio.insecure_channel(server.target) as channel:
        await ensure_stream(pb_grpc.EventsServiceStub(channel), name)  # type: ignore[arg-type]


async def test_an_exporter_that_no_package_provides_is_a_warning(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(OTEL_TRACES_EXPORTER="zipkin", OTEL_METRICS_EXPORTER="none")
    line = await server.wait_for_line("zipkin")
    assert "no installed package provides the traces exporter 'zipkin'" in line
    assert json.loads(line)["level"] == "warning"
    async with grpc.aio.insecure_channel(server.target) as channel:
        await ensure_stream(pb_grpc.EventsServiceStub(channel), name)  # type: ignore[arg-type]
    assert not [line for line in server.lines if "exporting" in line]


# --- embedded NATS and shutdown -------------------------------------------------


async def test_without_nats_url_an_embedded_nats_keeps_the_data_across_restarts(
    start_serve: StartServe, tmp_path: Path, name: str
) -> None:
    data_dir = tmp_path / "data"
    first = await start_serve(NATS_URL=None, WINDSHIFT_DATA_DIR=str(data_dir))
    line = await first.wait_for_line("started an embedded NATS")
    assert str(data_dir) in line
    async with grpc.aio.insecure_channel(first.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        assert await publish(stub, f"{name}.a", "kept") == [1]
    assert await first.signal(signal.SIGTERM) == 0
    assert (data_dir / "jetstream").is_dir()

    second = await start_serve(NATS_URL=None, WINDSHIFT_DATA_DIR=str(data_dir))
    async with grpc.aio.insecure_channel(second.target) as channel:
        stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_consumer(stub, name)
        assert await publish(stub, f"{name}.a", "new") == [2]
        call = EventsClient(stub)
        try:
            await call.subscribe(name, "worker")
            events = await call.events(2)
            assert [unpack_text(event) for event in events] == ["kept", "new"]
        finally:
            await call.cancel()
    assert await second.signal(signal.SIGINT) == 0


async def test_the_default_data_dir_is_dot_windshift(
    start_serve: StartServe, tmp_path: Path
) -> None:
    server = await start_serve(cwd=tmp_path, NATS_URL=None)
    assert str(tmp_path / ".windshift") in await server.wait_for_line("started an embedded NATS")
    assert await server.signal() == 0
    assert (tmp_path / ".windshift" / "jetstream").is_dir()


async def test_sigterm_ends_events_calls_cleanly_and_nothing_is_lost(
    stub: Stub, start_serve: StartServe, name: str
) -> None:
    await ensure_stream(stub, name)
    await ensure_consumer(stub, name, timeout=1.0)
    ids = await publish(stub, f"{name}.a", "a", "b", "c")
    leaving = await start_serve()
    async with grpc.aio.insecure_channel(leaving.target) as channel:
        call = EventsClient(pb_grpc.EventsServiceStub(channel))  # type: ignore[arg-type]
        await call.subscribe(name, "worker")
        held = await call.events(3)
        assert list((await call.ack(held[0].id)).ids) == [ids[0]]

        exit_code = asyncio.ensure_future(leaving.signal(signal.SIGTERM))
        assert await call.finish() == grpc.StatusCode.OK
        assert await exit_code == 0
    await leaving.wait_for_line("SIGTERM received")

    after = EventsClient(stub)
    try:
        await after.subscribe(name, "worker")
        redelivered = await after.events(2)
        assert sorted(event.id for event in redelivered) == ids[1:]
        assert {event.delivery_attempt for event in redelivered} == {2}
        assert sorted((await after.ack(*ids[1:])).ids) == ids[1:]
    finally:
        await after.cancel()


async def test_sigterm_lets_unary_calls_in_flight_finish(
    stub: Stub, client: windshift.Client, start_serve: StartServe, name: str
) -> None:
    await ensure_stream(stub, name)
    leaving = await start_serve()
    async with grpc.aio.insecure_channel(leaving.target) as channel:
        busy: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await busy.PublishEvent(pb.PublishEventRequest(subject=f"{name}.a", data=string_any("0")))

        async def one(i: int) -> grpc.StatusCode:
            try:
                await busy.PublishEvent(
                    pb.PublishEventRequest(subject=f"{name}.a", data=string_any(str(i)))
                )
            except grpc.aio.AioRpcError as failure:
                return failure.code()
            return grpc.StatusCode.OK

        calls = [asyncio.ensure_future(one(i)) for i in range(300)]
        await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        exit_code = await leaving.signal(signal.SIGTERM)
        codes = await asyncio.gather(*calls)
    assert exit_code == 0
    # In flight: finished. Not yet started: refused as UNAVAILABLE (to retry elsewhere).
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, set(codes)
    assert grpc.StatusCode.OK in codes
    # Every call answered OK was stored; none was cut off half way.
    assert (await client.stream_info(name)).events == 1 + codes.count(grpc.StatusCode.OK)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_sigterm_stops_the_embedded_nats_server(
    start_serve: StartServe, tmp_path: Path
) -> None:
    server = await start_serve(NATS_URL=None, WINDSHIFT_DATA_DIR=str(tmp_path))
    assert server.process is not None
    url = re.search(r"nats://[\d.]+:\d+", await server.wait_for_line("started an embedded NATS"))
    assert url is not None
    assert await server.signal() == 0
    # The embedded nats-server went with it.
    with pytest.raises(windshift.UnavailableError):
        await windshift.connect(url.group(0), connect_timeout=timedelta(seconds=0.5))
