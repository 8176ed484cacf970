"""`windshift-grpc serve` starting and stopping: one-line failures, the embedded NATS's port, a terminal.

Every test runs the real command as a child process. Some run it as a shell
on a terminal would (on a pseudo-terminal that is its controlling terminal,
so that ^C is the terminal's SIGINT to the whole foreground process group),
and some with a module made unimportable, as on a machine without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import grpc
import pytest

from tests.grpc_fixtures import (
    READY,
    ServeProcess,
    StartServe,
    ensure_stream,
    run_command,
    serve_command,
    serve_env,
)
from windshift._embedded import EmbeddedNats, free_port
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.settings import Settings, SettingsError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and terminals")

START_TIMEOUT = 30.0

# Run the CLI with modules made unimportable (as if not installed); argv[1]
# names them, separated by commas, the rest are the CLI's arguments.
_WITHOUT = """\
import sys
for module in sys.argv.pop(1).split(","):
    sys.modules[module] = None
from windshift_grpc.cli import main
sys.exit(main())
"""

# Make the terminal on stdin the controlling terminal of this new session,
# then become the command in argv[1:] (serve).
_ON_TERMINAL = """\
import fcntl, os, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
os.execv(sys.argv[1], sys.argv[1:])
"""

# A readable log line (logs.READABLE), not JSON.
_READABLE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) +\S+: ")


def cli_without(modules: Sequence[str], *args: str) -> list[str]:
    """The ``windshift-grpc`` command with ``modules`` unimportable."""
    return [sys.executable, "-c", _WITHOUT, ",".join(modules), *args]


def embedded_env(data_dir: Path, **overrides: str | None) -> dict[str, str]:
    """serve on an embedded NATS in ``data_dir``, on a port of its own (never 4222)."""
    overrides.setdefault("WINDSHIFT_EMBEDDED_NATS_PORT", str(free_port()))
    return serve_env(None, WINDSHIFT_DATA_DIR=str(data_dir), **overrides)


def command_serve(env: dict[str, str], command: Sequence[str]) -> ServeProcess:
    """A serve process started by another command line (e.g. :func:`cli_without`)."""
    return ServeProcess(env, command=command)


class TerminalServe(ServeProcess):
    """serve as a shell on a terminal runs it (``make serve``).

    A pseudo-terminal is its stdin, stdout, stderr and controlling terminal;
    what it writes there becomes :attr:`lines`. :meth:`ctrl_c` types ^C: the
    terminal sends SIGINT to its foreground process group, serve's, and with
    it to every child that stayed in that group.
    """

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self._terminal = -1

    async def start(self) -> None:
        terminal, device = os.openpty()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ON_TERMINAL,
                *serve_command(),
                cwd=self.cwd,
                env=self.env,
                stdin=device,
                stdout=device,
                stderr=device,
                start_new_session=True,
            )
        finally:
            os.close(device)
        self._terminal = terminal
        output = asyncio.StreamReader()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(terminal, 65536)
            except OSError:  # EIO: the last process on the terminal has gone
                data = b""
            if data:
                output.feed_data(data.replace(b"\r\n", b"\n"))
            else:
                loop.remove_reader(terminal)
                output.feed_eof()

        loop.add_reader(terminal, readable)
        self._readers = [asyncio.create_task(self._collect(output, self.lines))]
        await self.wait_for_line(READY, timeout=START_TIMEOUT)

    async def ctrl_c(self) -> int:
        """Type ^C and wait for serve to exit; its exit code."""
        assert self.process is not None
        os.write(self._terminal, b"\x03")
        code = await asyncio.wait_for(self.process.wait(), 30)
        await asyncio.wait_for(asyncio.gather(*self._readers), 30)
        return code

    def close(self) -> None:
        if self._terminal >= 0:
            with contextlib.suppress(ValueError):
                asyncio.get_running_loop().remove_reader(self._terminal)
            os.close(self._terminal)
            self._terminal = -1


Started = Callable[[ServeProcess], ServeProcess]


@pytest.fixture
async def started() -> AsyncIterator[Started]:
    """Keep processes the test makes itself; stopped (their terminals closed) at its end."""
    processes: list[ServeProcess] = []

    def keep(process: ServeProcess) -> ServeProcess:
        processes.append(process)
        return process

    try:
        yield keep
    finally:
        for process in processes:
            await process.stop()
            if isinstance(process, TerminalServe):
                process.close()


# --- the terminal ---------------------------------------------------------------


async def test_on_a_terminal_serve_logs_readable_lines_even_in_production(
    started: Started, tmp_path: Path
) -> None:
    server = TerminalServe(embedded_env(tmp_path, DEVELOPMENT="false"))
    started(server)
    await server.start()
    ready = await server.wait_for_line(READY)
    assert _READABLE.match(ready), ready
    assert "INFO    windshift_grpc.server: windshift-grpc ready" in ready
    logged = [line for line in server.lines if line.strip()]
    assert all(_READABLE.match(line) for line in logged), server.log
    # still production's level: no DEBUG lines
    assert not [line for line in logged if " DEBUG " in line]


async def test_ctrl_c_stops_serve_without_a_false_disconnected_warning(
    started: Started, tmp_path: Path
) -> None:
    server = TerminalServe(embedded_env(tmp_path))
    started(server)
    await server.start()
    await server.wait_for_line("started an embedded NATS")
    assert await server.ctrl_c() == 0
    assert [line for line in server.lines if "SIGINT received" in line]
    assert [line for line in server.lines if "windshift-grpc stopped" in line]
    # The embedded nats-server is stopped by serve after its connection is
    # closed; it did not also take the ^C and go first.
    assert not [line for line in server.lines if "disconnected from NATS" in line], server.log
    assert not [line for line in server.lines if "WARNING" in line and "AUTHENTICATION" not in line]


# --- the embedded NATS keeps its port -------------------------------------------


async def test_the_embedded_nats_keeps_its_port_after_a_stop_with_a_client_connected(
    start_serve: StartServe, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "NATS_URL": None,
        "WINDSHIFT_DATA_DIR": str(tmp_path),
        "WINDSHIFT_EMBEDDED_NATS_PORT": str(port),
    }
    first = await start_serve(**env)
    assert f"nats://127.0.0.1:{port};" in await first.wait_for_line("started an embedded NATS")
    # A client of the embedded NATS, connected while serve stops: the
    # nats-server closes the connection first, so its end stays in TIME_WAIT.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()).startswith(b"INFO ")
    # Only serve's own user may connect to its embedded NATS.
    auth = json.loads((tmp_path / EmbeddedNats.AUTH_FILE).read_text())
    connect = {"verbose": False, "user": auth["user"], "pass": auth["password"]}
    writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
    assert await asyncio.wait_for(reader.readline(), 10) == b"PONG\r\n"
    assert await first.signal(signal.SIGINT) == 0
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    writer.close()
    await writer.wait_closed()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the TIME_WAIT is there: a bind without SO_REUSEADDR fails

    second = await start_serve(**env)
    assert f"nats://127.0.0.1:{port};" in await second.wait_for_line("started an embedded NATS")
    assert not [line for line in second.lines if "cannot have port" in line]


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.mark.parametrize("holder", ["another program, not NATS,", "another NATS server"])
async def test_a_port_another_listener_holds_moves_the_embedded_nats_and_says_why(
    start_serve: StartServe, nats_server: EmbeddedNats, tmp_path: Path, holder: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if holder == "another NATS server":
            port = nats_server.port
        else:
            listener = await asyncio.start_server(_close, "127.0.0.1", 0)
            stack.callback(listener.close)
            port = listener.sockets[0].getsockname()[1]
        server = await start_serve(
            NATS_URL=None, WINDSHIFT_DATA_DIR=str(tmp_path), WINDSHIFT_EMBEDDED_NATS_PORT=str(port)
        )
    warning = json.loads(await server.wait_for_line("cannot have port"))
    assert warning["level"] == "warning"
    assert warning["message"].startswith(
        f"the embedded NATS cannot have port {port} ({holder} listens there): it takes port "
    ), warning
    moved = re.search(r"takes port (\d+) instead", warning["message"])
    assert moved is not None and int(moved.group(1)) != port
    started_at = await server.wait_for_line("started an embedded NATS")
    assert f"nats://127.0.0.1:{moved.group(1)};" in started_at


# --- start-up errors: one line, the exit code of cli.py -----------------------------


@pytest.mark.parametrize("variable", ["GRPC_PORT", "HEALTH_PORT"])
async def test_a_port_in_use_fails_the_start_before_the_embedded_nats_starts(
    tmp_path: Path, variable: str
) -> None:
    data_dir = tmp_path / "data"
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        env = embedded_env(data_dir, **{variable: str(port)})
        code, out, err = await run_command(*serve_command(), env=env)
    assert code == 1
    [line] = err.strip().splitlines()
    assert json.loads(line)["message"] == (
        f"windshift-grpc could not start: {variable} {port} is already in use "
        "(another program listens on it)"
    )
    assert not data_dir.exists()  # nothing was started, nothing made
    assert out == ""


async def test_a_nats_url_that_is_not_nats_ends_with_the_reason() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    web = await asyncio.start_server(http, "127.0.0.1", 0)
    try:
        port = web.sockets[0].getsockname()[1]
        code, out, err = await run_command(
            *serve_command(), env=serve_env(f"nats://127.0.0.1:{port}")
        )
    finally:
        web.close()
    assert code == 1
    assert out == ""
    [line] = err.strip().splitlines()
    message = json.loads(line)["message"]
    head = f"windshift-grpc could not start: cannot connect to NATS at nats://127.0.0.1:{port}: "
    assert message.startswith(head)
    assert message.removeprefix(head).strip(), message  # a reason, not nothing


def _bad_data_dirs(tmp_path: Path) -> list[tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    cases = [
        (a_file, f"{str(a_file)!r} is not a directory"),
        (a_file / "below", f"{str(a_file / 'below')!r} cannot be created: {str(a_file)!r}"),
    ]
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases += [
            (locked, f"{str(locked)!r} is not writable"),
            (locked / "data", f"{str(locked / 'data')!r} cannot be created: {str(locked)!r}"),
        ]
    return cases


async def test_a_data_dir_that_cannot_be_used_names_the_setting(tmp_path: Path) -> None:
    for data_dir, complaint in _bad_data_dirs(tmp_path):
        with pytest.raises(SettingsError) as error:
            Settings.from_env({"WINDSHIFT_DATA_DIR": str(data_dir)})
        assert error.value.name == "WINDSHIFT_DATA_DIR"
        assert complaint in str(error.value)
        code, out, err = await run_command(*serve_command(), env=embedded_env(data_dir))
        assert code == 2, err
        [line] = err.strip().splitlines()
        assert line.startswith("windshift-grpc: invalid WINDSHIFT_DATA_DIR: "), line
        assert complaint in line
        assert out == ""
    # With NATS_URL there is no embedded server and nothing to check.
    settings = Settings.from_env(
        {"NATS_URL": "nats://n:4222", "WINDSHIFT_AUTH": "none", "WINDSHIFT_DATA_DIR": "/dev/null"}
    )
    assert settings.data_dir == Path("/dev/null")


@pytest.mark.parametrize("module", ["grpc", "grpc_health", "grpc_reflection"])
async def test_without_the_grpc_extra_serve_says_what_to_install(module: str) -> None:
    code, out, err = await run_command(*cli_without([module], "serve"), env=serve_env(None))
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"windshift-grpc: serve needs the grpc extra ({module} is not installed): "
        "pip install 'windshift[grpc]'"
    ]


async def test_without_the_grpc_extra_tokens_are_still_made() -> None:
    code, out, err = await run_command(*cli_without(["grpc"], "token"), env=serve_env(None))
    assert (code, err) == (0, "")
    assert out.startswith("token:  ")


async def test_with_only_the_opentelemetry_api_serve_warns_and_serves(
    started: Started, name: str, nats_server: EmbeddedNats
) -> None:
    env = serve_env(nats_server.url, OTEL_TRACES_EXPORTER="console")
    server = started(command_serve(env, cli_without(["opentelemetry.sdk"], "serve")))
    await server.start()
    line = json.loads(await server.wait_for_line("opentelemetry-sdk is not installed"))
    assert line["level"] == "warning"
    assert line["message"].startswith("OTEL_TRACES_EXPORTER=console, but opentelemetry-sdk")
    async with grpc.aio.insecure_channel(server.target) as channel:
        await ensure_stream(pb_grpc.EventsServiceStub(channel), name)  # type: ignore[arg-type]
    await server.wait_for_line("EnsureStream OK")
    assert await server.signal(signal.SIGTERM) == 0
    assert server.stdout == []  # no spans: nothing records them


# --- the event loop (WINDSHIFT_EVENT_LOOP) ------------------------------------------


@pytest.mark.parametrize(
    ("setting", "loop"),
    [(None, "uvloop"), ("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")],
)
async def test_serve_runs_on_the_event_loop_the_setting_names(
    start_serve: StartServe, name: str, setting: str | None, loop: str
) -> None:
    # (None: unset, so the default, auto, which takes uvloop where installed.)
    server = await start_serve(WINDSHIFT_EVENT_LOOP=setting)
    ready = await server.wait_for_line(READY)
    assert f", event loop {loop}, NATS at " in ready, ready
    async with grpc.aio.insecure_channel(server.target) as channel:
        await ensure_stream(pb_grpc.EventsServiceStub(channel), name)  # type: ignore[arg-type]
    await server.wait_for_line("EnsureStream OK")


async def test_without_uvloop_the_default_loop_is_asyncios_and_uvloop_is_refused(
    started: Started, nats_server: EmbeddedNats, name: str
) -> None:
    env = serve_env(nats_server.url, WINDSHIFT_EVENT_LOOP=None)
    server = started(command_serve(env, cli_without(["uvloop"], "serve")))
    await server.start()
    ready = await server.wait_for_line(READY)
    assert ", event loop asyncio, NATS at " in ready, ready
    async with grpc.aio.insecure_channel(server.target) as channel:
        await ensure_stream(pb_grpc.EventsServiceStub(channel), name)  # type: ignore[arg-type]
    await server.wait_for_line("EnsureStream OK")

    code, out, err = await run_command(
        *cli_without(["uvloop"], "serve"),
        env=serve_env(nats_server.url, WINDSHIFT_EVENT_LOOP="uvloop"),
    )
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "windshift-grpc: invalid WINDSHIFT_EVENT_LOOP: 'uvloop' is not installed here "
        "(pip install uvloop, or windshift[grpc] on a platform uvloop supports)"
    ]


async def test_an_unknown_event_loop_is_refused_by_name(nats_server: EmbeddedNats) -> None:
    code, out, err = await run_command(
        *serve_command(), env=serve_env(nats_server.url, WINDSHIFT_EVENT_LOOP="trio")
    )
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "windshift-grpc: invalid WINDSHIFT_EVENT_LOOP: 'trio' is not one of auto, asyncio, uvloop"
    ]
