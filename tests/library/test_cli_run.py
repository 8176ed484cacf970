"""``windshift run module:worker``: the real console script, as child processes, on a real NATS.

Each test writes a small application module into its tmp_path and runs
``windshift run`` from there (the current directory is on the import path),
against the session's nats-server; the events it handles are printed on
stdout, its log is stderr. Some run it on a pseudo-terminal that is its
controlling terminal, as a shell would, so that ^C is the terminal's SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._cli import STOP_TIMEOUT, RunProcess, json_lines, run_env, run_windshift
from tests._util import publish_many, take, text
from tests.grpc_fixtures import run_command
from windshift import EmbeddedNats
from windshift._embedded import free_port

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and terminals")

MODULE = "app_worker"

# A readable log line (windshift._logging.READABLE), not JSON.
READABLE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) +\S+: ")

# Run the CLI with modules made unimportable (as if not installed); argv[1]
# names them, separated by commas, the rest are the CLI's arguments.
_WITHOUT = """\
import sys
for module in sys.argv.pop(1).split(","):
    sys.modules[module] = None
from windshift._cli import main
sys.exit(main())
"""


def write_app(directory: Path, *parts: str) -> None:
    """``app_worker.py`` in ``directory``: the imports the apps here use, then ``parts``."""
    header = """\
        import asyncio
        from datetime import timedelta

        from google.protobuf.wrappers_pb2 import StringValue

        import windshift
        from windshift import StreamPointer
    """
    text = "\n".join(textwrap.dedent(part) for part in (header, *parts))
    (directory / f"{MODULE}.py").write_text(text)


def handler_app(stream: str, *, handler: str, grace_period: float = 30, **options: str) -> str:
    """An app with one handler on ``stream``'s consumer ``worker`` (ensured, from the start).

    The handler prints ``started ID VALUE``, runs ``handler`` (code), prints
    ``handled ID VALUE`` and returns (acknowledging the event).
    """
    extra = "".join(f", {key}={value}" for key, value in options.items())
    body = textwrap.indent(textwrap.dedent(handler).strip(), "    ")
    return (
        f"worker = windshift.Worker(grace_period=timedelta(seconds={grace_period}))\n\n"
        "@worker.handler(\n"
        f"    {stream!r}, 'worker', subjects=[{stream + '.>'!r}], start=StreamPointer.start(),\n"
        f"    processing_timeout=timedelta(minutes=5){extra}\n"
        ")\n"
        "async def handle(event: windshift.Event) -> None:\n"
        "    value = event.unpack(StringValue).value\n"
        '    print(f"started {event.id} {value}", flush=True)\n'
        f"{body}\n"
        '    print(f"handled {event.id} {value}", flush=True)\n'
    )


Start = Callable[..., Awaitable[RunProcess]]


@pytest.fixture
async def start_run(tmp_path: Path, nats_server: EmbeddedNats) -> AsyncIterator[Start]:
    """Start ``windshift run ARGS`` in tmp_path on the session's NATS (killed at the end)."""
    started: list[RunProcess] = []

    async def start(*args: str, terminal: bool = False, **env: str) -> RunProcess:
        process = RunProcess(
            args,
            cwd=tmp_path,
            env=run_env(**{"NATS_URL": nats_server.url, **env}),
            terminal=terminal,
        )
        started.append(process)
        await process.start()
        return process

    try:
        yield start
    finally:
        for process in started:
            await process.close()


def the_error(err: str) -> str:
    """The message of the one error line of a failed run; no traceback anywhere."""
    entries = json_lines(err.splitlines())
    assert "Traceback" not in err, err
    assert not [entry for entry in entries if "exception" in entry], err
    errors = [entry for entry in entries if entry["level"] == "error"]
    assert len(errors) == 1, err
    assert entries[-1] is errors[0], err  # the last word
    assert errors[0]["logger"] == "windshift.cli"
    message = errors[0]["message"]
    assert isinstance(message, str) and "\n" not in message
    return message


async def info(client: windshift.Client, stream: str) -> windshift.ConsumerInfo:
    return await client.consumer_info(stream, "worker")


# --- running and stopping ---------------------------------------------------------

FACTORIES = {
    "a Worker": "worker",
    "a function of the client": "make_worker",
    "an async function of the client": "make_worker_async",
}


@pytest.mark.parametrize("form", FACTORIES)
async def test_run_handles_the_events_and_sigterm_stops_it_with_exit_0(
    start_run: Start, tmp_path: Path, client: windshift.Client, name: str, form: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.a", 3)
    write_app(
        tmp_path,
        handler_app(name, handler="pass", concurrency="2"),
        f"""
        def make_worker(client: windshift.Client) -> windshift.Worker:
            assert isinstance(client, windshift.Client)
            return worker

        async def make_worker_async(client: windshift.Client) -> windshift.Worker:
            await client.stream_info({name!r})  # connected already
            return worker
        """,
    )
    run = await start_run("run", f"{MODULE}:{FACTORIES[form]}")

    handled = await run.wait_for_lines(r"^handled ", 3, stdout=True)
    assert sorted(handled) == [f"handled {i + 1} {name}.a#{i}" for i in range(3)]
    # and one published while it runs
    await client.publish(f"{name}.a", StringValue(value="late"))
    await run.wait_for_line(r"^handled 4 late$", stdout=True)

    run.send(signal.SIGTERM)
    assert await run.exited() == 0
    entries = json_lines(run.lines)
    messages = [str(entry["message"]) for entry in entries]
    target = f"{MODULE}:{FACTORIES[form]}"
    running = f"running worker {target} on NATS at {run.env['NATS_URL']} ({name}/worker: handle)"
    assert [m for m in messages if m.startswith(running)], messages
    assert messages[-1] == f"worker {target} stopped"
    assert [entry for entry in entries if entry["level"] in ("warning", "error")] == []
    consumer = await info(client, name)
    assert (consumer.acknowledged_id, consumer.unsettled_events, consumer.pending_events) == (
        4,
        0,
        0,
    )


async def test_sigterm_hands_back_the_held_events_and_lets_the_running_call_finish(
    start_run: Start, tmp_path: Path, client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.a", 5)
    release = tmp_path / "release"
    os.mkfifo(release)
    # The first call waits until the test writes to the FIFO; the other four
    # events are fetched meanwhile (prefetch) and held, unstarted.
    write_app(
        tmp_path,
        handler_app(
            name,
            handler=f"""
            if event.id == 1:
                # blocks until a writer opens it: in a thread, not the loop
                await asyncio.to_thread(lambda: open({str(release)!r}).read())
            """,
        ),
    )
    run = await start_run("run", f"{MODULE}:worker")
    await run.wait_for_line(r"^started 1 ", stdout=True)

    run.send(signal.SIGTERM)
    await run.wait_for_line("SIGTERM received: stopping the worker")
    await asyncio.to_thread(release.write_text, "go")  # the running call may finish now
    assert await run.exited() == 0

    assert [line for line in run.stdout if line.startswith("handled")] == [f"handled 1 {name}.a#0"]
    consumer = await info(client, name)
    assert consumer.acknowledged_id == 1  # the running call finished and was acknowledged
    assert consumer.delivered_id == 5  # the other four were with the worker when it stopped
    assert consumer.pending_events == 0
    # Handed back: delivered again at once, not after the 5-minute processing timeout.
    async with client.subscribe(name, "worker") as events:
        again = sorted(
            await take(events, 4), key=lambda event: event.id
        )  # handed back at once, in any order
        assert [(event.id, event.delivery_attempt) for event in again] == [
            (2, 2),
            (3, 2),
            (4, 2),
            (5, 2),
        ]
        assert [text(event) for event in again] == [f"{name}.a#{i}" for i in range(1, 5)]
        for event in again:
            await event.ack()
    consumer = await info(client, name)
    assert (consumer.acknowledged_id, consumer.unsettled_events) == (5, 0)


async def test_a_second_signal_stops_at_once_during_the_grace_period(
    start_run: Start, tmp_path: Path, client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.a", 2)
    # A first call that would take an hour, in a worker that grants it 10
    # minutes; the second event waits behind it (concurrency 1).
    write_app(
        tmp_path,
        handler_app(
            name, handler="if event.id == 1:\n    await asyncio.sleep(3600)", grace_period=600
        ),
    )
    run = await start_run("run", f"{MODULE}:worker")
    await run.wait_for_line(r"^started 1 ", stdout=True)

    run.send(signal.SIGTERM)
    async with client.subscribe(name, "worker") as events:
        # The stop hands the waiting event back before it grants the running
        # call its grace period: once it is here, the grace period has begun.
        [waiting] = await take(events, 1)
        assert (waiting.id, waiting.delivery_attempt) == (2, 2)
        run.send(signal.SIGINT)
        # Far sooner than the grace period: the second signal cut it short.
        assert await run.exited(timeout=STOP_TIMEOUT) == 0
        # The cancelled call's event was handed back too: delivered again at once.
        [cancelled] = await take(events, 1)
        assert (cancelled.id, cancelled.delivery_attempt) == (1, 2)
        for event in (waiting, cancelled):
            await event.ack()
    assert [line for line in run.stdout if line.startswith("handled")] == []
    messages = [str(entry["message"]) for entry in json_lines(run.lines)]
    assert [
        m
        for m in messages
        if m.startswith("SIGTERM received: stopping the worker; running handler calls have 600s")
    ], messages
    assert [m for m in messages if m.startswith("SIGINT received again: stopping at once")], (
        messages
    )
    assert messages[-1] == f"worker {MODULE}:worker stopped"


async def test_grace_period_gives_this_stop_its_own_grace_period(
    start_run: Start, tmp_path: Path, client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.a", 1)
    write_app(tmp_path, handler_app(name, handler="await asyncio.sleep(3600)", grace_period=600))
    run = await start_run("run", f"{MODULE}:worker", "--grace-period", "0.5")
    await run.wait_for_line(r"^started 1 ", stdout=True)

    run.send(signal.SIGTERM)  # one signal only
    assert await run.exited() == 0
    messages = [str(entry["message"]) for entry in json_lines(run.lines)]
    assert [m for m in messages if "running handler calls have 0.5s to finish" in m], messages
    assert [m for m in messages if "1 calls still running after the grace period" in m], messages
    async with client.subscribe(name, "worker") as events:
        [again] = await take(events, 1)  # cancelled and handed back
        assert (again.id, again.delivery_attempt) == (1, 2)
        await again.ack()


async def test_a_signal_while_starting_exits_0(
    start_run: Start, tmp_path: Path, client: windshift.Client, name: str
) -> None:
    # The factory blocks until it is cancelled: the signal comes before the worker runs.
    write_app(
        tmp_path,
        """
        async def make_worker(client: windshift.Client) -> windshift.Worker:
            print("building", flush=True)
            await asyncio.Event().wait()
            raise AssertionError("unreachable")
        """,
    )
    run = await start_run("run", f"{MODULE}:make_worker")
    await run.wait_for_line("^building$", stdout=True)
    run.send(signal.SIGTERM)
    assert await run.exited() == 0
    messages = [entry["message"] for entry in json_lines(run.lines)]
    assert messages[-2:] == [
        "SIGTERM received while starting: stopping",
        "stopped before the worker started",
    ]


# --- log lines: JSON when not a terminal, readable on one ---------------------------


async def test_on_a_terminal_the_lines_are_readable_and_ctrl_c_stops_it(
    start_run: Start, tmp_path: Path, client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await publish_many(client, f"{name}.a", 1)
    write_app(tmp_path, handler_app(name, handler="pass"))
    run = await start_run("run", f"{MODULE}:worker", terminal=True)
    await run.wait_for_line(rf"^handled 1 {name}\.a#0$")  # stdout is the terminal too
    started = await run.wait_for_line(r"worker handler handle on .* started")
    assert READABLE.match(started), started

    run.ctrl_c()
    assert await run.exited() == 0
    # (the terminal echoes the ^C typed on it)
    output = [line.removeprefix("^C") for line in run.lines if line.strip()]
    logged = [line for line in output if not line.startswith(("started", "handled"))]
    assert logged, run.log
    assert all(READABLE.match(line) for line in logged), run.log
    assert [line for line in logged if "SIGINT received: stopping the worker" in line]
    assert f"windshift.cli: worker {MODULE}:worker stopped" in logged[-1]


async def test_the_log_format_can_be_forced(tmp_path: Path) -> None:
    code, out, err = await run_windshift(
        "run", "nowhere:worker", "--log-format", "readable", cwd=tmp_path
    )
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert READABLE.match(line) and " ERROR   windshift.cli: cannot import " in line, line

    env = run_env(WINDSHIFT_LOG_FORMAT="json")
    code, _, err = await run_windshift("run", "nowhere:worker", cwd=tmp_path, env=env)
    assert code == 2
    assert the_error(err).startswith("cannot import")


# --- failures: one line, an exit code ---------------------------------------------

BAD_TARGETS = [
    (
        "nowhere:worker",
        2,
        "cannot import 'nowhere:worker': there is no module 'nowhere' (looked in ",
    ),
    (
        f"{MODULE}.sub:worker",
        2,
        f"cannot import '{MODULE}.sub:worker': there is no module '{MODULE}.sub'",
    ),
    (f"{MODULE}:missing", 2, f"cannot load '{MODULE}:missing': module '{MODULE}' has no 'missing'"),
    (
        f"{MODULE}:number",
        2,
        f"'{MODULE}:number' is of type int, not a windshift.Worker nor a function",
    ),
    (
        f"{MODULE}:no_arguments",
        2,
        f"'{MODULE}:no_arguments' is a function that cannot be called with the client",
    ),
    (
        f"{MODULE}:returns_none",
        2,
        f"{MODULE}:returns_none(client) returned an object of type NoneType, not a "
        "windshift.Worker",
    ),
    (MODULE, 2, f"'{MODULE}' is not a worker's import path: expected package.module:attribute"),
    (
        "bad_options:worker",
        1,
        "importing 'bad_options' failed: ValidationError: concurrency must be a whole number",
    ),
    (
        f"{MODULE}:empty",
        1,
        f"worker {MODULE}:empty failed: ValidationError: the worker has no handlers",
    ),
]


@pytest.mark.parametrize(
    ("target", "code", "message"), BAD_TARGETS, ids=[t for t, _, _ in BAD_TARGETS]
)
async def test_a_target_that_names_no_worker_exits_with_one_line_naming_it(
    tmp_path: Path, nats_server: EmbeddedNats, target: str, code: int, message: str
) -> None:
    write_app(
        tmp_path,
        """
        number = 3
        empty = windshift.Worker()

        def no_arguments() -> windshift.Worker:
            return empty

        def returns_none(client: windshift.Client) -> None:
            return None
        """,
    )
    write_bad = """\
        import windshift
        worker = windshift.Worker()

        @worker.handler("orders", "worker", concurrency=0)
        async def handle(event: windshift.Event) -> None:
            pass
    """
    (tmp_path / "bad_options.py").write_text(textwrap.dedent(write_bad))
    exit_code, out, err = await run_windshift(
        "run", target, cwd=tmp_path, env=run_env(NATS_URL=nats_server.url)
    )
    assert (exit_code, out) == (code, "")
    assert the_error(err).startswith(message), err


async def test_unreachable_nats_exits_1_with_one_line_and_no_password(tmp_path: Path) -> None:
    write_app(tmp_path, handler_app("orders", handler="pass"))
    port = free_port()  # nothing listens there
    url = f"nats://someone:Sekr1t-pw@127.0.0.1:{port}"
    code, out, err = await run_windshift("run", f"{MODULE}:worker", "--server", url, cwd=tmp_path)
    assert (code, out) == (1, "")
    message = the_error(err)
    assert message.startswith(
        f"cannot run {MODULE}:worker: cannot connect to NATS at nats://***@127.0.0.1:{port}: "
    ), message
    assert "Sekr1t" not in err


async def test_a_handler_whose_consumer_does_not_exist_exits_1_with_one_line(
    tmp_path: Path, nats_server: EmbeddedNats, client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    write_app(
        tmp_path,
        f"""
        worker = windshift.Worker()

        @worker.handler({name!r}, "not-made")  # no subjects: it must exist already
        async def handle(event: windshift.Event) -> None:
            pass
        """,
    )
    code, out, err = await run_windshift(
        "run", f"{MODULE}:worker", cwd=tmp_path, env=run_env(NATS_URL=nats_server.url)
    )
    assert (code, out) == (1, "")
    message = the_error(err)
    assert message.startswith(
        f"worker {MODULE}:worker failed: ConsumerNotFoundError: handler handle: consumer "
        f"'not-made' on stream {name!r} does not exist"
    ), message


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--user", "someone"], "--user"),
        (["--token", "t", "--user", "u", "--password", "p"], "--token"),
        (["--server", "http://127.0.0.1:4222"], "--server"),
        (["--tls-cert", "missing.pem"], "--tls-cert"),
    ],
)
async def test_bad_connection_options_exit_2_naming_the_option(
    tmp_path: Path, args: list[str], named: str
) -> None:
    write_app(tmp_path, handler_app("orders", handler="pass"))
    code, _, err = await run_windshift("run", f"{MODULE}:worker", *args, cwd=tmp_path)
    assert code == 2, err
    assert named in err, err
    assert "Traceback" not in err


async def test_connection_options_come_from_the_environment(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    # NATS_USER without NATS_PASSWORD: refused before connecting, naming the option.
    write_app(tmp_path, handler_app("orders", handler="pass"))
    env = run_env(NATS_URL=nats_server.url, NATS_USER="someone")
    code, _, err = await run_windshift("run", f"{MODULE}:worker", cwd=tmp_path, env=env)
    assert code == 2
    assert "--user" in err and "--password" in err, err


# --- the command itself -------------------------------------------------------------


async def test_without_the_cli_extra_it_says_what_to_install(tmp_path: Path) -> None:
    code, out, err = await run_command(
        sys.executable, "-c", _WITHOUT, "typer", "run", f"{MODULE}:worker", env=run_env()
    )
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "windshift: the windshift command needs the cli extra (typer is not installed): "
        "pip install 'windshift[cli]'"
    ]


async def test_version_and_no_command(tmp_path: Path) -> None:
    code, out, _ = await run_windshift("--version", cwd=tmp_path)
    assert (code, out) == (0, f"windshift {windshift.__version__}\n")
    code, _, _ = await run_windshift(cwd=tmp_path)
    assert code == 2  # the help, and a usage error's exit code
