"""The examples run as documented: real processes, real nats-servers.

Each script is started the way docs/getting-started.md says
(``python examples/publish.py [--nats-url URL]`` from the repository root),
once on the embedded NATS it starts itself and once against the session's
nats-server, and must exit 0 on its own with the output it promises. The
worker example also runs as ``windshift run examples.worker:worker``, until
SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

import windshift
from tests._cli import RunProcess, run_env
from windshift import EmbeddedNats

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 60.0  # seconds one example may take, embedded nats-server start included

STREAM = "orders"  # the examples' stream: shared by every test here, reset around each
PUBLISHED = re.compile(r"^published event (\d+): order (ord-[0-9a-f]+)", re.MULTILINE)
DUPLICATE = re.compile(r"^published order (ord-[0-9a-f]+) again: duplicate of event (\d+)$", re.M)
CONSUMED = re.compile(
    r"^consumed event (\d+) on orders\.created \(delivery attempt (\d+)\): order (ord-[0-9a-f]+)",
    re.MULTILINE,
)
HANDLED = re.compile(
    r"^handled event (\d+) \(delivery attempt (\d+)\): order (ord-[0-9a-f]+)", re.MULTILINE
)
WAITING = re.compile(r"^consumer order-printer: events waiting: (\d+)$", re.MULTILINE)
EMBEDDED = "started an embedded NATS at nats://"


async def run_example(script: str, *args: str, nats_url_env: str | None = None) -> str:
    """Run ``python examples/<script> <args>`` from the repository root; return its stdout.

    ``NATS_URL`` is removed from the child's environment unless ``nats_url_env`` is given.
    """
    env = {key: value for key, value in os.environ.items() if key != "NATS_URL"}
    if nats_url_env is not None:
        env["NATS_URL"] = nats_url_env
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        f"examples/{script}",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        out, err = await process.communicate()
        pytest.fail(
            f"{script} {' '.join(args)} did not exit within {RUN_TIMEOUT:g}s\n"
            f"stdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        )
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 0, (
        f"{script} {' '.join(args)} exited with {process.returncode}\n"
        f"stdout:\n{stdout}\nstderr:\n{stderr}"
    )
    assert "Traceback" not in stderr, stderr
    return stdout


def published_in(output: str) -> list[tuple[int, str]]:
    """(event id, order id) of every "published event" line."""
    return [(int(event_id), order_id) for event_id, order_id in PUBLISHED.findall(output)]


def consumed_in(output: str) -> list[tuple[int, str]]:
    """(event id, order id) of every "consumed event" line, checking it was a first delivery."""
    found = CONSUMED.findall(output)
    assert all(attempt == "1" for _, attempt, _ in found), output
    return [(int(event_id), order_id) for event_id, _, order_id in found]


def handled_in(output: str) -> list[tuple[int, str]]:
    """(event id, order id) of every "handled event" line, sorted, checking first deliveries."""
    found = HANDLED.findall(output)
    assert all(attempt == "1" for _, attempt, _ in found), output
    return sorted((int(event_id), order_id) for event_id, _, order_id in found)


@pytest.fixture
async def fresh_orders_stream(client: windshift.Client) -> AsyncIterator[None]:
    """No stream "orders" on the session's server before and after the test."""
    with contextlib.suppress(windshift.NotFoundError):
        await client.delete_stream(STREAM)
    yield
    with contextlib.suppress(windshift.NotFoundError):
        await client.delete_stream(STREAM)


# -- on their own embedded nats-server (a fresh machine) ---------------------------


async def test_publish_starts_its_own_nats() -> None:
    output = await run_example("publish.py")

    assert EMBEDDED in output
    published = published_in(output)
    assert [event_id for event_id, _ in published] == [1, 2, 3]
    assert len({order_id for _, order_id in published}) == 3
    # The first order is published again with the same idempotency key: not stored twice.
    assert DUPLICATE.findall(output) == [(published[0][1], "1")]


async def test_consume_starts_its_own_nats_and_feeds_itself() -> None:
    output = await run_example("consume.py")

    assert EMBEDDED in output
    assert WAITING.findall(output) == ["0"]
    published = published_in(output)
    assert [event_id for event_id, _ in published] == [1, 2, 3]
    assert consumed_in(output) == published
    assert "done: acknowledged 3 events" in output


async def test_consume_count() -> None:
    output = await run_example("consume.py", "--count", "5")

    assert consumed_in(output) == published_in(output)
    assert [event_id for event_id, _ in consumed_in(output)] == [1, 2, 3, 4, 5]


async def test_worker_starts_its_own_nats_and_handles_what_it_publishes() -> None:
    output = await run_example("worker.py")

    assert EMBEDDED in output
    published = published_in(output)
    assert [event_id for event_id, _ in published] == [1, 2, 3]
    # Handled (in any order: four at once, one customer at a time), then stopped.
    assert handled_in(output) == published
    assert output.rstrip().endswith("done: handled 3 orders, worker stopped")


# -- against a running nats-server (--nats-url, NATS_URL) --------------------------


@pytest.mark.usefixtures("fresh_orders_stream")
async def test_publish_then_consume_on_a_shared_server(nats_server: EmbeddedNats) -> None:
    output = await run_example("publish.py", "--nats-url", nats_server.url)
    assert EMBEDDED not in output
    published = published_in(output)
    assert [event_id for event_id, _ in published] == [1, 2, 3]
    assert DUPLICATE.findall(output) == [(published[0][1], "1")]

    # The durable consumer starts at the stream's start: it reads what publish.py wrote.
    output = await run_example("consume.py", "--nats-url", nats_server.url)
    assert EMBEDDED not in output
    assert WAITING.findall(output) == ["3"]
    assert published_in(output) == []
    assert consumed_in(output) == published

    # A second run continues after the acknowledged events: none is delivered twice.
    output = await run_example("consume.py", "--nats-url", nats_server.url, "--count", "2")
    assert WAITING.findall(output) == ["0"]
    more = published_in(output)
    assert [event_id for event_id, _ in more] == [4, 5]
    assert consumed_in(output) == more


@pytest.mark.usefixtures("fresh_orders_stream")
async def test_nats_url_from_the_environment(
    nats_server: EmbeddedNats, client: windshift.Client
) -> None:
    output = await run_example("publish.py", "--count", "2", nats_url_env=nats_server.url)

    assert EMBEDDED not in output
    assert [event_id for event_id, _ in published_in(output)] == [1, 2]
    info = await client.stream_info(STREAM)
    assert info.events == 2  # the repeated publish was deduplicated


@contextlib.asynccontextmanager
async def windshift_run_example(
    target: str, nats_server: EmbeddedNats
) -> AsyncIterator[RunProcess]:
    """``windshift run examples.worker:<target>`` from the repository root, as documented."""
    run = RunProcess(
        ["run", f"examples.worker:{target}", "--server", nats_server.url], cwd=ROOT, env=run_env()
    )
    try:
        await run.start()
        yield run
    finally:
        await run.close()


@pytest.mark.usefixtures("fresh_orders_stream")
async def test_windshift_run_runs_the_worker_example(nats_server: EmbeddedNats) -> None:
    published = published_in(await run_example("publish.py", "--nats-url", nats_server.url))

    async with windshift_run_example("worker", nats_server) as run:
        lines = await run.wait_for_lines(r"^handled event ", 3, stdout=True)
        assert handled_in("\n".join(lines)) == published
        run.send(signal.SIGTERM)
        assert await run.exited() == 0
    assert handled_in("\n".join(run.stdout)) == published  # each once


@pytest.mark.usefixtures("fresh_orders_stream")
async def test_windshift_run_make_worker_makes_the_stream_first(
    nats_server: EmbeddedNats, client: windshift.Client
) -> None:
    async with windshift_run_example("make_worker", nats_server) as run:
        await run.wait_for_line(r"worker handler fulfil_order on orders/order-fulfilment started")
        assert (await client.stream_info(STREAM)).subjects == ["orders.>"]
        output = await run_example("publish.py", "--nats-url", nats_server.url, "--count", "2")
        lines = await run.wait_for_lines(r"^handled event ", 2, stdout=True)
        assert handled_in("\n".join(lines)) == published_in(output)
        run.send(signal.SIGTERM)
        assert await run.exited() == 0


# -- imported: main() returns what it published / consumed -------------------------


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``examples/<name>.py`` (which imports ``orders_pb2`` from its directory)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(
        f"windshift_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("fresh_orders_stream")
async def test_main_functions_return_what_they_did(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish = load_example("publish", monkeypatch)
    consume = load_example("consume", monkeypatch)

    published: list[windshift.PublishedEvent] = await publish.main(nats_server.url, count=2)
    assert [(event.id, event.stream, event.duplicate) for event in published] == [
        (1, STREAM, False),
        (2, STREAM, False),
    ]

    consumed = await consume.main(nats_server.url, count=2)
    assert [order.id for order in consumed] == [1, 2]
    assert all(order.subject == "orders.created" for order in consumed)
    assert all(order.delivery_attempt == 1 for order in consumed)
    assert all(order.order.id.startswith("ord-") for order in consumed)

    worker = load_example("worker", monkeypatch)
    handled = await worker.main(nats_server.url, count=2)
    assert len({order.id for order in handled}) == 2
    assert all(order.id.startswith("ord-") for order in handled)


# -- the committed generated code matches examples/orders.proto --------------------


async def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    scripts = str(Path(sys.executable).parent)  # where protoc-gen-mypy is installed
    env = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-Iexamples",
        f"--python_out={tmp_path}",
        f"--mypy_out={tmp_path}",
        "examples/orders.proto",
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    assert process.returncode == 0, (out + err).decode()
    for generated in ("orders_pb2.py", "orders_pb2.pyi"):
        assert (tmp_path / generated).read_text() == (EXAMPLES / generated).read_text(), (
            f"examples/{generated} is out of date: regenerate it as examples/orders.proto says"
        )
