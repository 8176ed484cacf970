"""``windshift-grpc serve --workers N``: a supervisor process and N workers.

Example:
    >>> asyncio.run(supervise(Settings.from_env({"WINDSHIFT_WORKERS": "4"})))

One Python process serves the API on one core at a time (one event loop, one
GIL). With ``WINDSHIFT_WORKERS`` above 1, ``serve`` becomes a supervisor (this
module) that starts that many worker processes. Each runs the whole server of
:mod:`windshift_grpc.server`, with its own NATS connection; they share
``GRPC_PORT`` through ``SO_REUSEPORT``, so that the kernel hands each new
connection to one of them, and every call stays with the worker of its
connection. Durable consumers live on NATS, so the Events clients of one
consumer share its events whichever worker took their connection.

What the supervisor does, and the workers leave to it:

* It checks ``GRPC_PORT`` and ``HEALTH_PORT`` before anything starts: a port
  another program holds fails the start (exit code 1). The workers then
  share ``GRPC_PORT`` among themselves.
* Without ``NATS_URL`` it starts the embedded nats-server, once; every
  worker connects to it with its user and password, which the supervisor
  sends over the worker's link (never in the environment or the command
  line, which other users of the machine may read).
* It alone serves ``HEALTH_PORT`` (:class:`~windshift_grpc.http.HttpServer`,
  its routes added by :func:`~windshift_grpc.http.add_routes` as one
  process adds them): ``/healthz``, and ``/readyz``, which asks every worker
  afresh and is ready only when all are (``503 not ready: worker 2 of 4: not
  connected to NATS``). The gRPC health service of each worker reports that
  worker.
* With ``WINDSHIFT_METRICS`` it serves ``/metrics`` too, with the same
  tokens and per-stream views as one process. It has a NATS connection of
  its own and the server's one :class:`~windshift_grpc.sampling.Sampler`
  (the workers sample nothing), whose gauges it serves unlabelled; at each
  scrape it asks every worker for its registry (``"metrics"``, at most
  :data:`METRICS_WAIT` seconds) and serves each worker's series with a
  ``worker`` label (:class:`~windshift_grpc.metrics.WorkerSeries`). A worker
  that does not answer (stopped, restarting, stuck) is left out of that
  scrape, and ``windshift_worker_up{worker="2"}`` is 0.
* With ``WINDSHIFT_CONSOLE`` it serves the web console too
  (:mod:`windshift_grpc.console`), on the same connection, sampler and tokens.
* Signals: SIGTERM and SIGINT are passed on to every worker as SIGTERM; each
  stops gracefully as :mod:`windshift_grpc.server` describes, and the
  supervisor exits 0 once all have. SIGHUP is passed on: every worker
  reloads the tokens file (and so does the supervisor, for ``/metrics``).
  The workers run in process groups of their own,
  so that a Ctrl-C on the terminal reaches the supervisor alone.
* Crashes: a worker that exits without being asked to (a crash, a kill, an
  exit of its own) is started again after :data:`RESTART_DELAY` seconds,
  doubled for each further exit of the same worker within
  :data:`CRASH_WINDOW` seconds, at most :data:`RESTART_DELAY_MAX`. Its
  :data:`MAX_CRASHES`\\ th exit within the window stops the whole server (exit
  code 1): a worker that keeps crashing has a cause that restarts do not
  cure, and the orchestrator should see it. A worker that cannot start the
  first time stops the server at once (exit code 1), as a single process
  that cannot start does.
* A worker whose supervisor is gone (killed: it could pass nothing on) sees
  its link close and stops gracefully.

The link of each worker is a Unix socket pair, one JSON object per line:

* supervisor to worker, first: ``{"nats": [servers, options]}`` (the
  embedded nats-server's) or ``{"nats": null}`` (``NATS_URL``);
* worker to supervisor: ``{"started": pid}`` once it serves, its signal
  handlers in place;
* supervisor to worker: a question, ``{"ask": "check", "id": n}``, answered
  ``{"id": n, "answer": ...}`` (or ``{"id": n, "failed": why}``): for
  ``check`` (``/readyz``), null when the worker is ready, else why not; for
  ``metrics`` (``/metrics``), the OpenMetrics text of its registry
  (:meth:`_Worker.ask`).

The questions a worker answers are the ``answers`` the server gives
:meth:`WorkerLink.serve`; whatever the HTTP port serves later that needs
every worker's figures is one more. The worker process is ``python -m
windshift_grpc.supervisor INDEX COUNT FD``, a command for the supervisor
alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import windshift
from windshift import UnavailableError
from windshift_grpc import event_loop, logs, metrics, telemetry
from windshift_grpc.auth import Tokens
from windshift_grpc.http import HttpServer, add_routes
from windshift_grpc.permissions import Access, Inventory
from windshift_grpc.sampling import Sampler
from windshift_grpc.server import (
    SHUTDOWN_GRACE,
    _announce_access,
    _check_port,
    _could_not_start,
    _start_embedded,
    _transport,
    _where,
    serve,
)
from windshift_grpc.settings import Settings, SettingsError

logger = logging.getLogger("windshift_grpc.supervisor")

#: Seconds before a crashed worker is started again, the first time.
RESTART_DELAY = 0.5
#: The longest delay before a restart (it doubles with each exit within the window).
RESTART_DELAY_MAX = 10.0
#: The exits of one worker within :data:`CRASH_WINDOW` that stop the whole server.
MAX_CRASHES = 5
#: Seconds over which a worker's exits are counted.
CRASH_WINDOW = 60.0
#: Seconds ``/readyz`` waits for a worker's answer (its own check takes at most 1).
CHECK_WAIT = 1.5
#: Seconds a scrape of ``/metrics`` waits for a worker's metrics (then it is left out).
METRICS_WAIT = 1.5
#: The longest line the supervisor reads from a link (a worker's metrics are one line).
LINE_LIMIT = 64 * 2**20
#: Seconds a worker gets to stop after SIGTERM before it is killed.
STOP_WAIT = SHUTDOWN_GRACE + 5.0

#: The settings of a worker's NATS connection: the servers and the keywords of ``connect``.
Nats = tuple[list[str], dict[str, str]]
#: How a worker answers a question of its supervisor (the answer goes as JSON).
Answer = Callable[[], Awaitable[Any]]


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


# --- the worker's side ----------------------------------------------------------


class WorkerLink:
    """A worker's end of its link to the supervisor (see the module docstring).

    Attributes:
        index: which worker this is, from 1.
        count: how many workers the supervisor runs.
        nats: the embedded nats-server to connect to; None: ``NATS_URL``.
    """

    def __init__(
        self,
        index: int,
        count: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        nats: Nats | None,
    ) -> None:
        self.index = index
        self.count = count
        self.nats = nats
        self._reader = reader
        self._writer = writer

    @property
    def name(self) -> str:
        """``worker 2 of 4``: how the log and ``/readyz`` name it."""
        return f"worker {self.index} of {self.count}"

    @classmethod
    async def open(cls, index: int, count: int, fd: int) -> WorkerLink:
        """The link on the inherited socket ``fd``, once the supervisor's first line is read.

        Raises:
            UnavailableError: the supervisor went away first.
        """
        reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
        first = await reader.readline()
        if not first:
            writer.close()
            raise UnavailableError("the supervisor went away before the worker started")
        nats = json.loads(first)["nats"]
        return cls(index, count, reader, writer, None if nats is None else (nats[0], nats[1]))

    async def serve(self, answers: Mapping[str, Answer], *, lost: Callable[[], None]) -> None:
        """Say that this worker serves, then answer questions until the link closes (then ``lost``).

        Args:
            answers: what answers each question (``"check"``: the readiness check).
            lost: called when the supervisor is gone.
        """
        self._send({"started": os.getpid()})
        answering: set[asyncio.Task[None]] = set()
        try:
            while line := await self._reader.readline():
                request = json.loads(line)
                task = asyncio.create_task(self._answer(request["id"], answers.get(request["ask"])))
                answering.add(task)
                task.add_done_callback(answering.discard)
        except (OSError, ValueError, KeyError):  # (a broken link is a closed one)
            pass
        finally:
            for task in answering:
                task.cancel()
        lost()

    async def _answer(self, ident: int, answer: Answer | None) -> None:
        if answer is None:
            self._send({"id": ident, "failed": "it does not know the question"})
            return
        try:
            value = await answer()
        except Exception as exc:
            logger.exception("answering the supervisor failed")
            self._send({"id": ident, "failed": f"its answer failed: {type(exc).__name__}"})
            return
        self._send({"id": ident, "answer": value})

    def _send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(_line(message))

    def close(self) -> None:
        self._writer.close()


class _WorkerField(logging.Filter):
    """Adds ``worker`` (its number) to every line a worker logs."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._index
        return True


def _label_logs(index: int) -> None:
    """Mark a worker's lines: a ``worker`` field in JSON, ``[worker N]`` in readable lines."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(index))
        if not isinstance(handler.formatter, logs.JsonFormatter):
            readable = logs.READABLE.replace("%(name)s:", "%(name)s [worker %(worker)s]:")
            handler.setFormatter(logging.Formatter(readable))


def _worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m windshift_grpc.supervisor",
        description="A worker of windshift-grpc serve --workers (started by its supervisor).",
    )
    parser.add_argument("index", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("fd", type=int, help="the inherited socket of the link")
    args = parser.parse_args(argv)
    try:  # (the supervisor read the same environment: this fails only if a file changed since)
        settings = Settings.from_env()
        logs.configure(development=settings.development)
        _label_logs(args.index)
        tokens = None if settings.auth_file is None else Tokens.load(settings.auth_file)
        factory = event_loop.loop_factory(settings.event_loop)  # WINDSHIFT_EVENT_LOOP
    except SettingsError as exc:
        print(f"windshift-grpc worker {args.index}: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_worker(settings, tokens, args.index, args.count, args.fd))


async def _worker(
    settings: Settings, tokens: Tokens | None, index: int, count: int, fd: int
) -> int:
    try:
        link = await WorkerLink.open(index, count, fd)
    except (OSError, ValueError, KeyError, UnavailableError) as exc:
        return _could_not_start(OSError(f"the link to the supervisor: {exc}"))
    try:
        return await serve(settings, tokens=tokens, worker=link)
    finally:
        link.close()


# --- the supervisor's side ------------------------------------------------------


def _how(code: int) -> str:
    """How a process ended, for the log and ``/readyz``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Unanswered(Exception):
    """A worker gave no answer; the message says why, for ``/readyz``."""


class _Worker:
    """The supervisor's view of one worker: its process, its link, why it does not serve."""

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count
        self.name = f"worker {index} of {count}"
        self.process: asyncio.subprocess.Process | None = None
        #: Why it does not serve now; None while it does.
        self.down: str | None = "starting"
        #: Set to its pid when it says it serves.
        self.started: asyncio.Future[int] | None = None
        #: The SIGHUPs it has been sent (or started after).
        self.hangups = 0
        #: When it exited unasked, within the last :data:`CRASH_WINDOW`.
        self.crashes: collections.deque[float] = collections.deque()
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def spawn(self, first: bytes, env: dict[str, str]) -> None:
        """Start its process and send it the link's first line."""
        ours, theirs = socket.socketpair()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "windshift_grpc.supervisor",
                str(self.index),
                str(self.count),
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                # Its own process group: a Ctrl-C on the terminal goes to the
                # supervisor alone, which stops the workers (and then the
                # embedded NATS) in order.
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours, limit=LINE_LIMIT)
        self._writer.write(first)
        self.down = "starting"
        self.started = asyncio.get_running_loop().create_future()
        self._reading = asyncio.create_task(self._read(reader, self.started))

    async def _read(self, reader: asyncio.StreamReader, started: asyncio.Future[int]) -> None:
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if "started" in message:
                    self.down = None
                    if not started.done():
                        started.set_result(int(message["started"]))
                elif "id" in message:
                    answer = self._pending.pop(message["id"], None)
                    if answer is None or answer.done():
                        continue
                    if "answer" in message:
                        answer.set_result(message["answer"])
                    else:
                        answer.set_exception(_Unanswered(str(message.get("failed"))))
        except (OSError, ValueError):
            pass
        finally:
            if self.down is None:
                self.down = "not running"
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(_Unanswered("not running"))

    async def ask(self, question: str, timeout: float) -> Any:
        """The worker's answer to ``question`` (see the module docstring).

        Raises:
            _Unanswered: it does not serve now, or gave no answer in time.
        """
        if self.down is not None or self._writer is None or self._writer.is_closing():
            raise _Unanswered(self.down or "not running")
        ident = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = answer
        self._writer.write(_line({"ask": question, "id": ident}))
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise _Unanswered(f"did not answer within {timeout:g} s") from None
        finally:
            self._pending.pop(ident, None)

    async def check(self) -> str | None:
        """None when it is ready, else why not (asked afresh)."""
        try:
            reason = await self.ask("check", CHECK_WAIT)
        except _Unanswered as exc:
            return str(exc)
        return None if reason is None else str(reason)

    async def metrics(self) -> str | None:
        """Its metrics as OpenMetrics text, asked now; None when it gave none in time."""
        try:
            answer = await self.ask("metrics", METRICS_WAIT)
        except _Unanswered as exc:
            logger.info("/metrics leaves %s out: it %s", self.name, exc)
            return None
        if not isinstance(answer, str):
            logger.warning("/metrics leaves %s out: its answer is not text", self.name)
            return None
        return answer

    async def close(self) -> None:
        """Close the link (after the process has ended)."""
        if self._writer is not None:
            self._writer.close()
        if self._reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading


class _Group:
    """The workers: started, watched, restarted, checked and stopped together."""

    def __init__(
        self, settings: Settings, count: int, nats: Nats | None, access: Access | None = None
    ) -> None:
        self._settings = settings
        self._access = access
        self.workers = [_Worker(index, count) for index in range(1, count + 1)]
        self._first = _line({"nats": None if nats is None else list(nats)})
        # A worker is one process of the group: it never starts workers of its own.
        self._env = {**os.environ, "WINDSHIFT_WORKERS": "1"}
        self._stop = asyncio.Event()
        self.stopping = False
        #: Why the group stopped on its own (exit code 1); None: a signal stopped it.
        self.failure: str | None = None
        self._hangups = 0

    async def check(self) -> str | None:
        """``/readyz``: None when every worker is ready, else which are not and why."""
        if self.stopping:
            return "shutting down"
        reasons = await asyncio.gather(*(worker.check() for worker in self.workers))
        down = [
            f"{worker.name}: {reason}"
            for worker, reason in zip(self.workers, reasons, strict=True)
            if reason is not None
        ]
        return "; ".join(down) or None

    async def metrics(self) -> list[tuple[int, str | None]]:
        """Every worker's number and metrics, asked at once (None: it gave none in time)."""
        answers = await asyncio.gather(*(worker.metrics() for worker in self.workers))
        return [(worker.index, text) for worker, text in zip(self.workers, answers, strict=True)]

    # -- signals

    def on_signal(self, signum: int) -> None:
        if self._stop.is_set():
            logger.warning("%s again: already shutting down", signal.Signals(signum).name)
            return
        logger.info(
            "%s received: stopping %d workers", signal.Signals(signum).name, len(self.workers)
        )
        self._stop.set()

    def on_hangup(self) -> None:
        if self._settings.auth_file is None:
            logger.warning("SIGHUP received: no WINDSHIFT_AUTH_FILE to reload")
            return
        self._hangups += 1
        if self._access is not None:  # the supervisor's own, for /metrics and the console
            try:
                self._access.reload(Tokens.load(self._settings.auth_file))
            except SettingsError as exc:
                logger.error("SIGHUP received: the supervisor keeps the tokens in use: %s", exc)
        serving = [worker for worker in self.workers if worker.down is None and worker.alive]
        for worker in serving:
            self._hang_up(worker)
        logger.info(
            "SIGHUP received: passed on to %d worker(s), each reloads %s%s",
            len(serving),
            self._settings.auth_file,
            "" if len(serving) == len(self.workers) else " (the others when they serve)",
        )

    def _hang_up(self, worker: _Worker) -> None:
        """Pass on the SIGHUPs ``worker`` has not had (it loaded the file before them)."""
        if worker.hangups < self._hangups and worker.alive:
            worker.hangups = self._hangups
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGHUP)

    # -- running

    async def run(self) -> int:
        """Start the workers, keep them running until a signal or a worker that keeps crashing."""
        keepers: list[asyncio.Task[None]] = []
        try:
            if await self._start():
                self._ready()
                keepers = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
                await self._stop.wait()
        finally:
            self.stopping = True
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            clean = await self._stop_all()
        if self.failure is not None:
            return 1
        return 0 if clean else 1

    async def _spawn(self, worker: _Worker) -> None:
        worker.hangups = self._hangups  # it loads the tokens file as it is now
        await worker.spawn(self._first, self._env)

    async def _serving(self, worker: _Worker) -> bool:
        """Wait until ``worker`` serves (True) or exits (False)."""
        assert worker.process is not None and worker.started is not None
        exited = asyncio.ensure_future(worker.process.wait())
        try:
            await asyncio.wait((worker.started, exited), return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if worker.started.done() and worker.alive:
            self._hang_up(worker)
            return True
        return False

    async def _start(self) -> bool:
        """Start every worker; True once all serve, False when one exited first or a signal came."""
        for worker in self.workers:
            await self._spawn(worker)
        waiting = {asyncio.ensure_future(self._serving(worker)): worker for worker in self.workers}
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while waiting:
                done, _ = await asyncio.wait({*waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    return False
                for task in done:
                    worker = waiting.pop(task)
                    if not task.result():
                        assert worker.process is not None
                        how = _how(await worker.process.wait())
                        self.failure = f"{worker.name} {how} before it served"
                        logger.error(
                            "windshift-grpc could not start: %s; stopping the others",
                            self.failure,
                        )
                        return False
            return True
        finally:
            stop.cancel()
            for task in waiting:
                task.cancel()

    def _ready(self) -> None:
        settings = self._settings
        logger.info(
            "windshift-grpc ready: %d workers (pids %s), gRPC on port %d (%s, %s, shared by the "
            "workers), health on port %d (%s)",
            len(self.workers),
            ", ".join(str(worker.pid) for worker in self.workers),
            settings.grpc_port,
            _transport(settings),
            _where(settings.grpc_bind),
            settings.health_port,
            _where(settings.health_bind),
        )

    async def _keep(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it exits unasked; stop the group when it keeps exiting."""
        loop = asyncio.get_running_loop()
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            await worker.close()
            how = _how(code)
            now = loop.time()
            worker.crashes.append(now)
            while worker.crashes[0] < now - CRASH_WINDOW:
                worker.crashes.popleft()
            if len(worker.crashes) >= MAX_CRASHES:
                self.failure = f"{worker.name} {how}"
                worker.down = f"{how}; not restarted"
                logger.error(
                    "%s (pid %d) %s, its exit %d within %g s: stopping the server",
                    worker.name,
                    worker.pid,
                    how,
                    len(worker.crashes),
                    CRASH_WINDOW,
                )
                self._stop.set()
                return
            delay = min(RESTART_DELAY * 2 ** (len(worker.crashes) - 1), RESTART_DELAY_MAX)
            worker.down = f"{how}; restarting"
            logger.warning(
                "%s (pid %d) %s; starting it again in %g s", worker.name, worker.pid, how, delay
            )
            await asyncio.sleep(delay)
            try:
                await self._spawn(worker)
            except OSError as exc:
                self.failure = f"{worker.name} cannot be started again: {exc}"
                logger.error("%s: stopping the server", self.failure)
                self._stop.set()
                return
            if await self._serving(worker):
                logger.info("%s started again (pid %d)", worker.name, worker.pid)

    async def _stop_all(self) -> bool:
        """SIGTERM every worker and wait for them; True when all stopped cleanly."""
        alive = [worker for worker in self.workers if worker.alive]
        for worker in alive:
            worker.down = "shutting down"
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        stopped = await asyncio.gather(*(self._stopped(worker) for worker in alive))
        for worker in self.workers:
            await worker.close()
        return all(stopped)

    async def _stopped(self, worker: _Worker) -> bool:
        assert worker.process is not None
        try:
            code = await asyncio.wait_for(worker.process.wait(), STOP_WAIT)
        except TimeoutError:
            logger.error(
                "%s (pid %d) did not stop within %g s: killing it",
                worker.name,
                worker.pid,
                STOP_WAIT,
            )
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
            return False
        # (SIGTERM ends a worker at once until its graceful stop is in place: it served nothing)
        if code not in (0, -signal.SIGTERM):
            logger.warning("%s (pid %d) %s as it stopped", worker.name, worker.pid, _how(code))
            return False
        return True


class _Scraped:
    """What the supervisor's ``/metrics`` serves: its own registry and its workers' answers."""

    def __init__(self, exporter: metrics.Exporter, group: _Group) -> None:
        self._exporter = exporter
        self._group = group

    async def collector(self) -> metrics.WorkerSeries:
        return metrics.WorkerSeries(self._exporter.registry, await self._group.metrics())


async def supervise(settings: Settings, *, tokens: Tokens | None = None) -> int:
    """Run ``settings.workers`` workers until SIGTERM or SIGINT (see the module docstring).

    Args:
        settings: what to serve, where; ``settings.workers`` says how many.
        tokens: the loaded ``WINDSHIFT_AUTH_FILE``; read here when not given
            (each worker loads the file itself, and again on SIGHUP).

    Returns:
        The process exit code: 0 after a graceful stop of every worker, 1
        when the server could not start or a worker kept crashing.
    """
    if tokens is None and settings.auth_file is not None:
        tokens = Tokens.load(settings.auth_file)
    try:
        # The workers share GRPC_PORT with each other, never with another program.
        _check_port("GRPC_PORT", settings.grpc_bind, settings.grpc_port)
        _check_port("HEALTH_PORT", settings.health_bind, settings.health_port)
    except OSError as exc:
        return _could_not_start(exc)
    try:
        exporter = metrics.Exporter() if settings.metrics else None
    except RuntimeError as exc:
        return _could_not_start(exc)
    # The supervisor's own telemetry: its sampler's gauges (the workers' go their own ways).
    tracing = None if exporter is None else telemetry.configure(metric_readers=[exporter.reader])
    loop = asyncio.get_running_loop()
    try:
        async with contextlib.AsyncExitStack() as stack:
            nats: Nats | None = None
            servers, options = settings.nats_servers, settings.nats_options()
            if not servers:
                nats_server = await _start_embedded(settings, clients="the workers of this server")
                stack.push_async_callback(nats_server.stop, remove_data=False)
                nats = ([nats_server.url], nats_server.connect_options())
                servers, options = nats
            client: windshift.Client | None = None
            sampler: Sampler | None = None
            if exporter is not None or settings.console:  # the consumers, sampled once
                client = await windshift.connect(
                    servers, name="windshift-grpc supervisor", limits=settings.limits(), **options
                )
                stack.push_async_callback(client.close)
                sampler = Sampler(client, interval=settings.sample_interval)
                if exporter is not None:
                    metrics.observe(sampler)
                await sampler.start()  # the first round now: a first scrape finds the consumers
                stack.push_async_callback(sampler.stop)
            access = None
            if tokens is not None and client is not None:
                access = Access(tokens, inventory=None if client is None else Inventory(client))
            group = _Group(settings, settings.workers, nats, access)
            # The HTTP port is the supervisor's: /readyz asks every worker, /metrics too.
            http = HttpServer(settings.health_port, host=settings.health_bind)
            add_routes(
                http.app,
                readiness=group,
                client=client,
                access=access,
                sampler=sampler,
                scraped=None if exporter is None else _Scraped(exporter, group),
                console=settings,
            )
            try:
                await http.start()
            except OSError as exc:
                raise OSError(
                    f"cannot listen on HEALTH_PORT {settings.health_port}: {exc}"
                ) from None
            stack.push_async_callback(http.stop)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, group.on_signal, signum)
            loop.add_signal_handler(signal.SIGHUP, group.on_hangup)
            stack.callback(_remove_signal_handlers, loop)
            _announce_access(settings, tokens, _transport(settings))
            code = await group.run()
    except (UnavailableError, OSError, RuntimeError) as exc:
        return _could_not_start(exc)
    finally:
        if tracing is not None:
            tracing.shutdown()
    if code == 0:
        logger.info("windshift-grpc stopped")
    else:
        logger.error("windshift-grpc stopped: %s", group.failure or "a worker did not stop cleanly")
    return code


def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(signum)


__all__ = [
    "CHECK_WAIT",
    "CRASH_WINDOW",
    "LINE_LIMIT",
    "MAX_CRASHES",
    "METRICS_WAIT",
    "RESTART_DELAY",
    "RESTART_DELAY_MAX",
    "STOP_WAIT",
    "WorkerLink",
    "supervise",
]

if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
