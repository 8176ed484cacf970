"""Fixtures and helpers of the gRPC tests: real ``windshift-grpc serve`` subprocesses.

Registered from conftest.py (``pytest_plugins``). Every server here is the
real command, started as a child process on free ports, against the
session's nats-server (``NATS_URL``) unless a test asks for an embedded one;
clients are real grpc.aio channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import StringValue

from windshift._embedded import EmbeddedNats, free_port
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
READY = "windshift-grpc ready"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


async def run_command(
    *command: str, env: Mapping[str, str], timeout: float = 60
) -> tuple[int, str, str]:
    """Run a command (``windshift-grpc ...``) to its end: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *command,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:  # (a serve that should have stopped at once, and serves)
        process.terminate()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def serve_command() -> list[str]:
    """The installed ``windshift-grpc`` console script, as a user would run it."""
    script = Path(sys.executable).parent / "windshift-grpc"
    if script.exists():
        return [str(script), "serve"]
    found = shutil.which("windshift-grpc")
    assert found, "windshift-grpc is not installed (pip install -e '.[dev]')"
    return [found, "serve"]


class ServeProcess:
    """One ``windshift-grpc serve`` child process on free ports.

    Its stderr (the log) and stdout are collected line by line; tests wait
    for lines with :meth:`wait_for_line` rather than sleeping.
    """

    def __init__(
        self, env: Mapping[str, str], cwd: Path = ROOT, command: Sequence[str] | None = None
    ) -> None:
        self.command = list(serve_command() if command is None else command)
        self.grpc_port = int(env["GRPC_PORT"])
        self.health_port = int(env["HEALTH_PORT"])
        self.env = dict(env)
        self.cwd = cwd
        self.lines: list[str] = []
        self.stdout: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._readers: list[asyncio.Task[None]] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            asyncio.create_task(self._collect(self.process.stderr, self.lines)),
            asyncio.create_task(self._collect(self.process.stdout, self.stdout)),
        ]
        await self.wait_for_line(READY, timeout=START_TIMEOUT)

    async def _collect(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        while True:
            line = await stream.readline()
            async with self._changed:
                if line:
                    into.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
            if not line:
                return

    async def wait_for_line(
        self, pattern: str, *, timeout: float = 10.0, stdout: bool = False, after: int = 0
    ) -> str:
        """The first line (from index ``after``) matching ``pattern`` (a regex)."""
        return (await self.wait_for_lines(pattern, 1, timeout=timeout, stdout=stdout, after=after))[
            0
        ]

    async def wait_for_lines(
        self,
        pattern: str,
        count: int,
        *,
        timeout: float = 10.0,
        stdout: bool = False,
        after: int = 0,
    ) -> list[str]:
        """The first ``count`` lines (from index ``after``) matching ``pattern``."""
        regex = re.compile(pattern)
        lines = self.stdout if stdout else self.lines

        def found() -> list[str]:
            return [line for line in lines[after:] if regex.search(line)][:count]

        async def wait() -> list[str]:
            async with self._changed:
                while len(matching := found()) < count:
                    exited = self.process is not None and self.process.returncode is not None
                    if exited and all(reader.done() for reader in self._readers):
                        raise AssertionError(
                            f"serve exited with {len(matching)} of {count} lines matching "
                            f"{pattern!r}; log:\n{self.log}"
                        )
                    await self._changed.wait()
                return matching

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"not {count} lines matching {pattern!r}; log:\n{self.log}"
            ) from None

    async def signal(self, signum: int = signal.SIGTERM, *, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``signum`` and wait for the process to exit; return its exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(
                f"serve did not exit within {timeout}s; log:\n{self.log}"
            ) from None
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(AssertionError):
                await self.signal(signal.SIGTERM)


# serve's own settings never pass from the developer's environment to the test
# servers (each test says what it sets); nor do the SDK's OTEL_* variables.
_SETTINGS = frozenset(setting.variable for setting in SETTINGS)


def _inherited(key: str) -> bool:
    """Whether a variable of ours passes to serve (its own settings do not)."""
    return key not in _SETTINGS and not key.startswith("OTEL_")


def serve_env(nats_url: str | None, **overrides: str | None) -> dict[str, str]:
    """The environment of a serve process: ours, minus settings, plus free ports.

    The API runs without authentication (``WINDSHIFT_AUTH=none``) unless the
    overrides say otherwise; an override of None removes the variable.
    Every call gets a log line (``WINDSHIFT_RPC_LOG=calls``) unless the
    overrides say otherwise. ``WINDSHIFT_TEST_EVENT_LOOP=asyncio`` (or ``uvloop``) in the tests'
    environment runs every serve on that ``WINDSHIFT_EVENT_LOOP`` (unless a test sets it);
    without it, serve takes its default, ``auto`` (uvloop, which the dev install has).
    """
    env = {key: value for key, value in os.environ.items() if _inherited(key)}
    grpc_port = free_port()
    health_port = free_port()
    while health_port == grpc_port:
        health_port = free_port()
    env.update(GRPC_PORT=str(grpc_port), HEALTH_PORT=str(health_port), PYTHONUNBUFFERED="1")
    if nats_url is not None:
        env["NATS_URL"] = nats_url
    if "WINDSHIFT_AUTH_FILE" not in overrides:
        env["WINDSHIFT_AUTH"] = "none"
    # A line for every call, OK or not: tests wait for the line of the call
    # they made (tests/grpc/test_logs.py checks the default, errors).
    env["WINDSHIFT_RPC_LOG"] = "calls"
    loop = os.environ.get("WINDSHIFT_TEST_EVENT_LOOP", "").strip()
    if loop:
        env["WINDSHIFT_EVENT_LOOP"] = loop
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def expected_event_loop() -> str:
    """The loop the ready line of a serve of :func:`serve_env` names (uvloop is installed here)."""
    loop = os.environ.get("WINDSHIFT_TEST_EVENT_LOOP", "").strip().lower()
    return "asyncio" if loop == "asyncio" else "uvloop"


StartServe = Callable[..., Awaitable[ServeProcess]]


@pytest.fixture(scope="session")
async def grpc_server(nats_server: EmbeddedNats) -> AsyncIterator[ServeProcess]:
    """The session's serve process, on the session's nats-server."""
    server = ServeProcess(serve_env(nats_server.url, DEVELOPMENT="true"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def start_serve(nats_server: EmbeddedNats) -> AsyncIterator[StartServe]:
    """Start extra serve processes for one test (stopped at its end).

    ``await start_serve(NATS_URL=None, WINDSHIFT_DATA_DIR=...)`` starts one on
    an embedded NATS; ``workers=2`` starts a supervisor and two workers
    (``WINDSHIFT_WORKERS``); other keywords become environment variables
    (None: unset, e.g. ``WINDSHIFT_AUTH=None`` for the default authentication).
    """
    started: list[ServeProcess] = []

    async def start(
        cwd: Path = ROOT, *, workers: int | None = None, **env: str | None
    ) -> ServeProcess:
        nats_url = env.pop("NATS_URL", nats_server.url)
        if workers is not None:
            env["WINDSHIFT_WORKERS"] = str(workers)
        server = ServeProcess(serve_env(nats_url, **env), cwd=cwd)
        started.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        await asyncio.gather(*(server.stop() for server in started))


@pytest.fixture
async def channel(grpc_server: ServeProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(grpc_server.target) as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.EventsServiceAsyncStub:
    return pb_grpc.EventsServiceStub(channel)  # type: ignore[return-value]


def string_any(value: str) -> AnyProto:
    """``value`` as a StringValue in an Any: the data of the tests' events."""
    data = AnyProto()
    data.Pack(StringValue(value=value))
    return data


def unpack_text(event: pb.Event) -> str:
    value = StringValue()
    assert event.data.Unpack(value)
    return value.value


def duration(seconds: float) -> Duration:
    result = Duration()
    result.FromTimedelta(timedelta(seconds=seconds))
    return result


async def ensure_stream(
    stub: pb_grpc.EventsServiceAsyncStub,
    name: str,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> None:
    """A stream ``name`` collecting ``name.>``."""
    await stub.EnsureStream(
        pb.EnsureStreamRequest(
            name=name, subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{name}.>"])
        ),
        metadata=metadata,
    )


async def ensure_consumer(
    stub: pb_grpc.EventsServiceAsyncStub,
    stream: str,
    name: str | None = "worker",
    *,
    timeout: float | None = None,
    start: bool = True,
) -> str:
    """A consumer of every subject of ``stream`` (from its start by default); its id."""
    request = pb.EnsureConsumerRequest(stream=stream, subjects=[f"{stream}.>"])
    if name is not None:
        request.name = name
    if start:
        getattr(request, "from").start = True
    if timeout is not None:
        request.processing_timeout.CopyFrom(duration(timeout))
    response: pb.EnsureConsumerResponse = await stub.EnsureConsumer(request)
    return response.id


async def publish(stub: pb_grpc.EventsServiceAsyncStub, subject: str, *texts: str) -> list[int]:
    """Publish StringValue events one by one; their ids."""
    return [
        (await stub.PublishEvent(pb.PublishEventRequest(subject=subject, data=string_any(t)))).id
        for t in texts
    ]


class EventsClient:
    """One Events call, driven like a client would: requests in, responses sorted.

    Events go to :meth:`next_event`, confirmations to the ``ack``/``reject``/
    ``ping`` methods that sent their request (the server answers in order).
    The events of a batch (``max_batch``) go to :meth:`next_event` one by
    one; :attr:`batches` keeps how many each batch held.
    """

    def __init__(
        self,
        stub: pb_grpc.EventsServiceAsyncStub,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self._requests: asyncio.Queue[pb.EventsRequest | None] = asyncio.Queue()
        self.call = stub.Events(self._request_stream(), metadata=metadata)
        self._events: asyncio.Queue[pb.Event] = asyncio.Queue()
        self._answers: asyncio.Queue[pb.EventsResponse] = asyncio.Queue()
        self.responses: list[pb.EventsResponse] = []
        self.batches: list[int] = []
        self.ended = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _request_stream(self) -> AsyncIterator[pb.EventsRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.responses.append(response)
                if response.HasField("event"):
                    self._events.put_nowait(response.event)
                elif response.HasField("events"):
                    self.batches.append(len(response.events.events))
                    for event in response.events.events:
                        self._events.put_nowait(event)
                else:
                    self._answers.put_nowait(response)
        except grpc.aio.AioRpcError:
            pass  # the status is read with code()
        finally:
            self.ended.set()
            self._requests.put_nowait(None)  # let gRPC's request reader finish

    def send(self, request: pb.EventsRequest) -> None:
        self._requests.put_nowait(request)

    def half_close(self) -> None:
        self._requests.put_nowait(None)

    async def answer(self, timeout: float = 10.0) -> pb.EventsResponse:
        """The next non-event response."""
        get = asyncio.ensure_future(self._answers.get())
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait((get, ended), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if get.done():
            return get.result()
        get.cancel()
        if self.ended.is_set():
            raise AssertionError(f"the call ended: {await self.code()} {await self.details()}")
        raise AssertionError(f"no answer within {timeout}s")

    async def subscribe(
        self,
        stream: str,
        consumer: str,
        max_processing_events: int | None = None,
        max_batch: int | None = None,
    ) -> pb.EventsResponse.Subscribed:
        subscribe = pb.EventsRequest.Subscribe(stream=stream, consumer=consumer)
        if max_processing_events is not None:
            subscribe.max_processing_events = max_processing_events
        if max_batch is not None:
            subscribe.max_batch = max_batch
        self.send(pb.EventsRequest(subscribe=subscribe))
        response = await self.answer()
        assert response.HasField("subscribed"), response
        return response.subscribed

    async def next_event(self, timeout: float = 10.0) -> pb.Event:
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no event within {timeout}s") from None

    async def events(self, count: int, timeout: float = 10.0) -> list[pb.Event]:
        return [await self.next_event(timeout) for _ in range(count)]

    def pending_events(self) -> int:
        """Events received and not yet taken with :meth:`next_event`."""
        return self._events.qsize()

    async def ack(self, *ids: int) -> pb.EventsResponse.AckConfirmation:
        self.send(pb.EventsRequest(ack=pb.EventsRequest.Ack(ids=ids)))
        response = await self.answer()
        assert response.HasField("ack_confirmation"), response
        return response.ack_confirmation

    async def reject(
        self,
        *ids: int,
        delay: float | None = None,
        permanently: bool | None = None,
        reason: str | None = None,
    ) -> pb.EventsResponse.RejectConfirmation:
        reject = pb.EventsRequest.Reject(ids=ids)
        if delay is not None:
            reject.delay.CopyFrom(duration(delay))
        if permanently is not None:
            reject.permanently = permanently
        if reason is not None:
            reject.reason = reason
        self.send(pb.EventsRequest(reject=reject))
        response = await self.answer()
        assert response.HasField("reject_confirmation"), response
        return response.reject_confirmation

    async def ping(self, *ids: int) -> pb.EventsResponse.PingConfirmation:
        self.send(pb.EventsRequest(ping=pb.EventsRequest.Ping(ids=ids)))
        response = await self.answer()
        assert response.HasField("ping_confirmation"), response
        return response.ping_confirmation

    async def code(self) -> grpc.StatusCode:
        return await asyncio.wait_for(self.call.code(), 20)

    async def details(self) -> str:
        return str(await asyncio.wait_for(self.call.details(), 20))

    async def finish(self, timeout: float = 20.0) -> grpc.StatusCode:
        """Wait for the call to end; its status code."""
        await asyncio.wait_for(self.ended.wait(), timeout)
        return await self.code()

    async def cancel(self) -> None:
        """Go away, as a client that crashes or disconnects would."""
        self.call.cancel()
        await asyncio.wait_for(self.ended.wait(), 10)


@pytest.fixture
async def events_client(
    stub: pb_grpc.EventsServiceAsyncStub,
) -> AsyncIterator[Callable[[], EventsClient]]:
    """Open Events calls on the session's server; all are cancelled at the end."""
    opened: list[EventsClient] = []

    def open_call() -> EventsClient:
        client = EventsClient(stub)
        opened.append(client)
        return client

    try:
        yield open_call
    finally:
        for client in opened:
            if not client.ended.is_set():
                await client.cancel()


# --- serve --workers: which process is which ------------------------------------

#: The line each worker logs once it serves: its number, the count, its pid.
WORKER_READY = r"windshift-grpc worker (\d+) of (\d+) ready \(pid (\d+)\)"


def worker_pids(server: ServeProcess) -> dict[int, int]:
    """Each worker's pid, by number, from the lines the workers logged as they became ready."""
    pids: dict[int, int] = {}
    for line in server.lines:
        found = re.search(WORKER_READY, line)
        if found:
            pids[int(found[1])] = int(found[3])  # a later line: the worker started again
    return pids


def child_pids(pid: int) -> set[int]:
    """The processes ``pid`` started and that still run (a supervisor's workers, its NATS)."""
    children: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                children.update(int(child) for child in (task / "children").read_text().split())
    return children


def command_line(pid: int) -> list[str]:
    return (Path(f"/proc/{pid}/cmdline").read_bytes().decode()).split("\0")[:-1]


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts: it has not been waited for)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_gone(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """Wait until process ``pid`` (not ours: a grandchild) has exited."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    exited = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(descriptor, exited.set)  # readable once the process has exited
    try:
        await asyncio.wait_for(exited.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"process {pid} still runs after {timeout}s") from None
    finally:
        loop.remove_reader(descriptor)
        os.close(descriptor)


def log_records(server: ServeProcess, after: int = 0) -> list[dict[str, Any]]:
    """The JSON lines of ``server``'s log (from index ``after``), as objects."""
    return [json.loads(line) for line in server.lines[after:] if line.startswith("{")]


def own_channel(target: str) -> grpc.aio.Channel:
    """A channel with a connection of its own (grpc shares one between equal channels)."""
    return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


async def worker_of(
    server: ServeProcess,
    channel: grpc.aio.Channel,
    stream: str,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> int:
    """The worker serving ``channel``'s connection: the ``worker`` field of a call's log line.

    The call (EnsureStream of ``stream``) is the only one in flight: its line
    is the next ``rpc`` line of the log.
    """
    before = len(server.lines)
    stub: pb_grpc.EventsServiceAsyncStub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
    await ensure_stream(stub, stream, metadata)
    line = await server.wait_for_line(r'"message": "rpc \S+/EnsureStream OK ', after=before)
    return int(json.loads(line)["worker"])


async def channels_on_every_worker(
    server: ServeProcess,
    workers: int,
    stream: str,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> dict[int, grpc.aio.Channel]:
    """One open channel to each worker, by number (the caller closes them).

    The kernel gives each new connection to one of the workers of the port
    (SO_REUSEPORT hashes its addresses); channels are opened, and those to a
    worker already had closed, until every worker has one. 64 tries fail
    for two workers only once in 2**63 runs.
    """
    found: dict[int, grpc.aio.Channel] = {}
    for _ in range(64 * workers):
        channel = own_channel(server.target)
        worker = await worker_of(server, channel, stream, metadata)
        if worker in found:
            await channel.close()
        else:
            found[worker] = channel
        if len(found) == workers:
            return found
    for channel in found.values():
        await channel.close()
    raise AssertionError(f"only workers {sorted(found)} of {workers} took connections")


async def http_get(port: int, path: str, **headers: str) -> tuple[int, str]:
    """A GET on 127.0.0.1; the status and body."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}{path}",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response,
    ):
        return response.status, await response.text()


__all__ = [
    "READY",
    "ROOT",
    "WORKER_READY",
    "EventsClient",
    "ServeProcess",
    "StartServe",
    "alive",
    "channel",
    "channels_on_every_worker",
    "child_pids",
    "command_line",
    "duration",
    "ensure_consumer",
    "ensure_stream",
    "events_client",
    "grpc_server",
    "http_get",
    "log_records",
    "own_channel",
    "publish",
    "serve_command",
    "serve_env",
    "start_serve",
    "string_any",
    "stub",
    "unpack_text",
    "wait_gone",
    "worker_of",
    "worker_pids",
]
