"""``windshift-grpc serve --workers N``: a supervisor and N worker processes on shared ports.

Every test runs the real command; which worker served a call is read from
the ``worker`` field of the call's log line, and which processes run from
``/proc``. The faults (a worker killed under load, one that keeps crashing,
a killed supervisor) are in tests/faults/test_serve_workers_faults.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.grpc.test_serve_startup import TerminalServe
from tests.grpc_fixtures import (
    READY,
    EventsClient,
    ServeProcess,
    StartServe,
    alive,
    channels_on_every_worker,
    child_pids,
    command_line,
    ensure_consumer,
    ensure_stream,
    expected_event_loop,
    http_get,
    log_records,
    publish,
    run_command,
    serve_command,
    serve_env,
    unpack_text,
    worker_pids,
)
from windshift._embedded import EmbeddedNats, free_port
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.auth import hashed
from windshift_grpc.settings import WORKERS_PER_CORE, Settings, SettingsError, cpu_count
from windshift_grpc.supervisor import CHECK_WAIT

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT sharing and /proc"
)

GROUP_READY = r"windshift-grpc ready: (\d+) workers \(pids ([\d, ]+)\)"


def stub_of(channel: grpc.aio.Channel) -> Stub:
    return pb_grpc.EventsServiceStub(channel)  # type: ignore[return-value]


def _proc(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


# --- one process unless told ----------------------------------------------------


@pytest.mark.parametrize("workers", [None, 1])
async def test_one_worker_is_the_single_process_of_old(
    start_serve: StartServe, workers: int | None
) -> None:
    server = await start_serve(workers=workers)
    assert server.process is not None
    # No supervisor, no worker: the process itself serves (it has no children).
    assert child_pids(server.process.pid) == set()
    ready = await server.wait_for_line(READY)
    assert "windshift-grpc ready: gRPC on port" in ready
    assert "worker" not in ready
    assert all("worker" not in record for record in log_records(server)), server.log


# --- sharing the ports ----------------------------------------------------------


async def test_the_workers_share_the_grpc_port_and_each_serves_calls(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(workers=2)
    assert server.process is not None
    ready = re.search(GROUP_READY, await server.wait_for_line(GROUP_READY))
    assert ready is not None
    pids = {int(pid) for pid in ready[2].split(", ")}
    # Two processes of their own, the supervisor's children (NATS_URL: no embedded server).
    assert len(pids) == 2 and server.process.pid not in pids
    assert child_pids(server.process.pid) == pids
    assert set(worker_pids(server).values()) == pids
    for pid in pids:
        assert command_line(pid)[1:3] == ["-m", "windshift_grpc.supervisor"]

    # Connections to the one port land on both workers, and each serves calls.
    channels = await channels_on_every_worker(server, 2, name)
    try:
        await ensure_consumer(stub_of(channels[1]), name, "shared")
        before = len(server.lines)
        ids = [
            *(await publish(stub_of(channels[1]), f"{name}.one", "from the first")),
            *(await publish(stub_of(channels[2]), f"{name}.two", "from the second")),
        ]
        await server.wait_for_lines(r"PublishEvent OK", 2, after=before)
        served = [
            record["worker"]
            for record in log_records(server, before)
            if record.get("method", "").endswith("/PublishEvent")
        ]
        assert served == [1, 2]
        # One stream behind both: what one worker published, the other delivers.
        call = EventsClient(stub_of(channels[2]))
        await call.subscribe(name, "shared")
        events = await call.events(2)
        assert sorted(event.id for event in events) == sorted(ids)
        assert {unpack_text(event) for event in events} == {"from the first", "from the second"}
        await call.cancel()
    finally:
        for channel in channels.values():
            await channel.close()


async def test_the_embedded_nats_is_started_once_and_every_worker_uses_it(
    start_serve: StartServe, tmp_path: Path, name: str
) -> None:
    server = await start_serve(
        workers=2,
        NATS_URL=None,
        WINDSHIFT_DATA_DIR=str(tmp_path),
        WINDSHIFT_EMBEDDED_NATS_PORT=str(free_port()),
    )
    assert server.process is not None
    started = [line for line in server.lines if "started an embedded NATS" in line]
    assert len(started) == 1, server.log
    assert "only the workers of this server may connect" in started[0]
    url = re.search(r"nats://127\.0\.0\.1:(\d+)", started[0])
    assert url is not None
    children = child_pids(server.process.pid)
    servers = [pid for pid in children if Path(command_line(pid)[0]).name == "nats-server"]
    assert len(servers) == 1 and len(children) == 3
    # Every worker connected to it, with the user and password that only the
    # files of the data directory and the link hold: never the command line
    # or the environment of a process.
    password = json.loads((tmp_path / EmbeddedNats.AUTH_FILE).read_text())["password"]
    for worker, pid in worker_pids(server).items():
        [ready] = [
            record["message"]
            for record in log_records(server)
            if f"worker {worker} of 2 ready" in record["message"]
        ]
        assert ready.endswith(f"event loop {expected_event_loop()}, NATS at 127.0.0.1:{url[1]}")
        assert password.encode() not in _proc(pid, "cmdline")
        assert password.encode() not in _proc(pid, "environ")
    channels = await channels_on_every_worker(server, 2, name)
    try:
        await ensure_consumer(stub_of(channels[1]), name, "shared")
        [event_id] = await publish(stub_of(channels[1]), f"{name}.one", "hello")
        call = EventsClient(stub_of(channels[2]))
        await call.subscribe(name, "shared")
        assert (await call.next_event()).id == event_id
        await call.cancel()
    finally:
        for channel in channels.values():
            await channel.close()


async def test_a_port_another_program_holds_is_refused_by_the_group(
    nats_server: EmbeddedNats,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        # Another program that even allows sharing (SO_REUSEPORT, same user)
        # still does not get the group's workers beside it.
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        env = serve_env(
            nats_server.url, WINDSHIFT_WORKERS="2", GRPC_PORT=str(other.getsockname()[1])
        )
        code, _, err = await run_command(*serve_command(), env=env)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"GRPC_PORT {env['GRPC_PORT']} is already in use" in lines[0]
    assert "worker" not in err


# --- readiness ------------------------------------------------------------------


async def test_readyz_is_ready_only_when_every_worker_is(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(workers=2)
    pids = worker_pids(server)
    assert await http_get(server.health_port, "/readyz") == (200, "ready\n")
    # A worker that cannot answer (stopped, as a stuck process would be):
    # the server is not ready, and says which worker is not.
    os.kill(pids[2], signal.SIGSTOP)
    try:
        status, body = await http_get(server.health_port, "/readyz")
    finally:
        os.kill(pids[2], signal.SIGCONT)
    assert status == 503
    assert body == f"not ready: worker 2 of 2: did not answer within {CHECK_WAIT:g} s\n"
    assert await http_get(server.health_port, "/readyz") == (200, "ready\n")
    assert await http_get(server.health_port, "/healthz") == (200, "ok\n")

    # Each worker's gRPC health service reports that worker.
    channels = await channels_on_every_worker(server, 2, name)
    try:
        for channel in channels.values():
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for channel in channels.values():
            await channel.close()


async def test_a_killed_worker_is_started_again_and_the_server_is_ready_again(
    start_serve: StartServe, name: str
) -> None:
    server = await start_serve(workers=2)
    assert server.process is not None
    old = worker_pids(server)[1]
    before = len(server.lines)
    os.kill(old, signal.SIGKILL)
    line = await server.wait_for_line(r"worker 1 of 2 started again \(pid (\d+)\)", after=before)
    new = int(re.findall(r"\(pid (\d+)\)", line)[0])
    assert new != old and not alive(old)
    crash = await server.wait_for_line(r"worker 1 of 2 \(pid", after=before)
    assert f"worker 1 of 2 (pid {old}) was killed by SIGKILL; starting it again in 0.5 s" in crash
    assert child_pids(server.process.pid) == {new, worker_pids(server)[2]}
    assert await http_get(server.health_port, "/readyz") == (200, "ready\n")
    # And the new process serves calls.
    channels = await channels_on_every_worker(server, 2, name)
    for channel in channels.values():
        await channel.close()


# --- signals --------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_every_worker_gracefully(
    start_serve: StartServe, name: str, signum: signal.Signals
) -> None:
    server = await start_serve(workers=2)
    assert server.process is not None
    pids = worker_pids(server)
    channels = await channels_on_every_worker(server, 2, name)
    try:
        await ensure_consumer(stub_of(channels[1]), name, "shared")
        calls = [EventsClient(stub_of(channel)) for channel in channels.values()]
        for call in calls:
            await call.subscribe(name, "shared")
        assert await server.signal(signum) == 0
        # Each worker stopped as one server does: its Events call ended OK.
        for call in calls:
            assert await call.finish() == grpc.StatusCode.OK
    finally:
        for channel in channels.values():
            await channel.close()
    assert not [pid for pid in pids.values() if alive(pid)]
    records = log_records(server)
    assert {r["worker"] for r in records if r["message"] == "SIGTERM received: shutting down"} == {
        1,
        2,
    }
    # each worker, then the supervisor
    assert {r.get("worker") for r in records if r["message"] == "windshift-grpc stopped"} == {
        1,
        2,
        None,
    }
    assert records[-1]["logger"] == "windshift_grpc.supervisor"
    assert records[-1]["message"] == "windshift-grpc stopped"
    troubles = [r for r in records if r["level"] in ("warning", "error")]
    assert not [r for r in troubles if "AUTHENTICATION IS OFF" not in r["message"]], server.log


async def test_ctrl_c_on_a_terminal_reaches_the_supervisor_which_stops_the_workers(
    tmp_path: Path,
) -> None:
    env = serve_env(
        None,
        WINDSHIFT_WORKERS="2",
        WINDSHIFT_DATA_DIR=str(tmp_path),
        WINDSHIFT_EMBEDDED_NATS_PORT=str(free_port()),
    )
    server = TerminalServe(env)
    try:
        await server.start()
        assert await server.ctrl_c() == 0
    finally:
        await server.stop()
        server.close()
    # The workers are in process groups of their own: the ^C reached only
    # the supervisor, which stopped them (SIGTERM), then the embedded NATS.
    assert [line for line in server.lines if "supervisor: SIGINT received" in line]
    assert len([line for line in server.lines if "SIGTERM received: shutting down" in line]) == 2
    assert not [line for line in server.lines if "SIGINT received: shutting down" in line]
    assert not [line for line in server.lines if "disconnected from NATS" in line], server.log


async def test_sighup_reloads_the_tokens_in_every_worker(
    start_serve: StartServe, tmp_path: Path, name: str
) -> None:
    first, second = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path = tmp_path / "tokens.json"

    def write(token: str) -> None:
        everything = {"publish": [">"], "consume": [">"], "manage": [">"]}
        path.write_text(
            json.dumps({"tokens": [{"name": "app", "token": hashed(token), **everything}]})
        )

    write(first)
    server = await start_serve(workers=2, WINDSHIFT_AUTH_FILE=str(path))
    assert server.process is not None
    with_first = [("authorization", f"Bearer {first}")]
    with_second = [("authorization", f"Bearer {second}")]
    channels = await channels_on_every_worker(server, 2, name, with_first)
    try:
        write(second)
        before = len(server.lines)
        server.process.send_signal(signal.SIGHUP)
        await server.wait_for_lines(r"SIGHUP received: reloaded 1 token\(s\)", 2, after=before)
        reloaded = [r["worker"] for r in log_records(server, before) if "reloaded" in r["message"]]
        assert sorted(reloaded) == [1, 2]
        for channel in channels.values():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ensure_stream(stub_of(channel), name, with_first)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await ensure_stream(stub_of(channel), name, with_second)
    finally:
        for channel in channels.values():
            await channel.close()
    assert first not in server.log and second not in server.log


# --- how many -------------------------------------------------------------------


@pytest.mark.parametrize(("how", "value"), [("env", "auto"), ("flag", "0")])
async def test_auto_and_0_start_one_worker_per_core(
    nats_server: EmbeddedNats, how: str, value: str
) -> None:
    # At most two of this machine's cores: serve runs with its CPU affinity
    # limited to them, and counts the cores it may use.
    cores = sorted(os.sched_getaffinity(0))[:2]
    command = ["taskset", "-c", ",".join(map(str, cores)), *serve_command()]
    env = serve_env(nats_server.url)
    if how == "env":
        env["WINDSHIFT_WORKERS"] = value
    else:  # the flag overrides the variable, even a bad one
        env["WINDSHIFT_WORKERS"] = "abc"
        command += ["--workers", value]
    server = ServeProcess(env, command=command)
    try:
        await server.start()
        ready = re.search(GROUP_READY, await server.wait_for_line(GROUP_READY))
        assert ready is not None and int(ready[1]) == len(cores)
        assert sorted(worker_pids(server)) == list(range(1, len(cores) + 1))
    finally:
        await server.stop()


@pytest.mark.parametrize("value", ["0", "auto", "AUTO", "1", "3"])
def test_the_number_of_workers(value: str) -> None:
    expected = cpu_count() if value.lower() in ("0", "auto") else int(value)
    if expected > WORKERS_PER_CORE * cpu_count():
        pytest.skip("more than this machine allows")
    env = serve_env(None, WINDSHIFT_WORKERS=value)
    assert Settings.from_env(env).workers == expected
    assert cpu_count() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("how", ["env", "flag"])
@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "too many"])
async def test_a_bad_number_of_workers_stops_serve_with_one_line(how: str, value: str) -> None:
    if value == "too many":
        value = str(WORKERS_PER_CORE * cpu_count() + 1)
    env = serve_env(None)
    command = serve_command()
    if how == "env":
        env["WINDSHIFT_WORKERS"] = value
        with pytest.raises(SettingsError) as error:
            Settings.from_env(env)
        assert error.value.name == "WINDSHIFT_WORKERS"
    else:
        env["WINDSHIFT_WORKERS"] = "2"  # the flag overrides it
        command = [*command, f"--workers={value}"]
    code, out, err = await run_command(*command, env=env)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "WINDSHIFT_WORKERS" in lines[0] and value in lines[0]
    if how == "flag":
        assert lines[0].startswith("windshift-grpc: invalid --workers (WINDSHIFT_WORKERS): ")
    assert out == ""
