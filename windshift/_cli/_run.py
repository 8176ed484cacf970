"""``windshift run package.module:worker``: run a :class:`windshift.Worker` until a signal.

The attribute named is a ``Worker`` or a function (plain or ``async``) that
takes the connected :class:`windshift.Client` and returns one. The command
connects, builds the worker if need be, and runs ``await worker.run(client)``.
SIGTERM or SIGINT (Ctrl-C) stops it gracefully (:meth:`Worker.stop`: nothing
more is fetched, what has not started is handed back, running calls get the
grace period); a second signal stops it at once (running calls are cancelled,
their events handed back too).

Every outcome is one log line (a JSON object unless stderr is a terminal)
and an exit code: 0 after a stop, 2 for a target that names no worker (and
for bad options), 1 when it could not run (NATS unreachable, a handler's
set-up failed, the worker failed).
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import inspect
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import Annotated

import typer

from windshift import _logging
from windshift._cli._connection import NatsOptions, connection_options
from windshift._client import Client
from windshift._worker import Worker
from windshift.errors import UnavailableError, ValidationError, WindshiftError

logger = logging.getLogger("windshift.cli")

#: Exit codes of ``windshift run`` (also documented in docs/worker.md).
EXIT_STOPPED = 0
EXIT_FAILED = 1  # could not run: NATS, a handler's set-up, the worker failed
EXIT_USAGE = 2  # the command line: options, a target that names no worker

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(enum.StrEnum):
    auto = "auto"
    json = "json"
    readable = "readable"


class _Failed(Exception):
    """Why the command ends early: a one-line reason and the exit code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@connection_options
def run(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTRIBUTE",
            help="Where the worker is, as package.module:attribute (imported with the "
            "current directory first on the path): a windshift.Worker, or a function, "
            "plain or async, that takes the connected windshift.Client and returns one.",
            show_default=False,
        ),
    ],
    *,
    grace_period: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="How long running handler calls may take to finish after the first "
            "SIGTERM or SIGINT. Default: the worker's grace_period.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        LogLevel,
        typer.Option(envvar="WINDSHIFT_LOG_LEVEL", help="Lines below this level are left out."),
    ] = LogLevel.info,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            envvar="WINDSHIFT_LOG_FORMAT",
            help="Log lines on stderr: one JSON object each, or readable text; auto: "
            "readable on a terminal, JSON otherwise.",
        ),
    ] = LogFormat.auto,
    nats: NatsOptions,
) -> None:
    """Run a windshift.Worker until SIGTERM or SIGINT; a second signal stops it at once.

    Exit codes: 0 after a stop; 1 when it could not run (NATS unreachable, a
    handler's set-up failed, the worker failed); 2 for bad usage or a target
    that names no worker.
    """
    _logging.configure(
        getattr(logging, log_level.upper()),
        readable=None if log_format is LogFormat.auto else log_format is LogFormat.readable,
    )
    grace = None if grace_period is None else timedelta(seconds=grace_period)
    code = asyncio.run(_Run(target, nats, grace).main())
    raise typer.Exit(code)


class _Run:
    """One ``windshift run``: load, connect, build, run, and the signals around it."""

    def __init__(self, spec: str, nats: NatsOptions, grace_period: timedelta | None) -> None:
        self.spec = spec
        self.nats = nats
        self.grace_period = grace_period
        self.worker: Worker | None = None
        self.signals = 0
        self._starting: asyncio.Task[int] | None = None
        self._stops: list[asyncio.Task[None]] = []

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._signalled, signum)
        try:
            return await self._outcome()
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)
            await asyncio.gather(*self._stops, return_exceptions=True)

    async def _outcome(self) -> int:
        """Run, and turn what ended it into its log line and exit code."""
        try:
            target = load(self.spec)
            self._starting = asyncio.ensure_future(self._start(target))
            try:
                return await self._starting
            except asyncio.CancelledError:
                if self.signals == 0:
                    raise
                logger.info("stopped before the worker started")
                return EXIT_STOPPED
        except _Failed as failed:
            logger.error("%s", failed.reason)
            return failed.code
        except Exception:  # the application's own bug: its traceback says where
            logger.exception("worker %s failed", self.spec)
            return EXIT_FAILED

    async def _start(self, target: Worker | object) -> int:
        try:
            client = await self.nats.connect(name=f"windshift run {self.spec}")
        except UnavailableError as exc:
            raise _Failed(EXIT_FAILED, f"cannot run {self.spec}: {exc}") from None
        except ValidationError as exc:  # options windshift.connect refuses
            raise _Failed(EXIT_USAGE, f"cannot run {self.spec}: {exc}") from None
        async with client:
            worker = await build(self.spec, target, client)
            self.worker = worker
            logger.info(
                "running worker %s on NATS at %s (%s); SIGTERM or SIGINT stops it",
                self.spec,
                self.nats.shown(),
                ", ".join(worker.handlers) or "no handlers",
            )
            # From here on a signal stops the worker; awaited at once (no
            # step in between), so worker.running is true for every signal.
            try:
                await worker.run(client)
            except WindshiftError as exc:
                raise _Failed(
                    EXIT_FAILED, f"worker {self.spec} failed: {type(exc).__name__}: {exc}"
                ) from None
        logger.info("worker %s stopped", self.spec)
        return EXIT_STOPPED

    def _signalled(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        worker = self.worker
        if worker is None:
            # Still connecting or building: nothing is held, nothing to hand back.
            logger.info("%s received while starting: stopping", name)
            if self._starting is not None:
                self._starting.cancel()
            return
        if not worker.running:  # it has stopped already: the connection is closing
            return
        if self.signals == 1:
            grace = worker.grace_period if self.grace_period is None else self.grace_period
            logger.info(
                "%s received: stopping the worker; running handler calls have %gs to finish "
                "(a second signal stops it at once)",
                name,
                grace.total_seconds(),
            )
            stop = worker.stop(grace_period=self.grace_period)
        else:
            logger.warning(
                "%s received again: stopping at once, cancelling the running handler calls "
                "(their events are handed back)",
                name,
            )
            stop = worker.stop(grace_period=timedelta(0))
        self._stops.append(asyncio.ensure_future(stop))


def load(spec: str) -> Worker | object:
    """Import ``package.module:attribute``; the Worker or the function that makes one.

    Raises:
        _Failed: ``spec`` names no module, no attribute, or neither a Worker
            nor a callable (exit 2); the module raised a WindshiftError as it
            was imported (exit 1, e.g. a handler's options).
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise _Failed(
            EXIT_USAGE,
            f"{spec!r} is not a worker's import path: expected package.module:attribute, "
            "e.g. myapp.workers:worker",
        )
    # As `python -m` would: the application's modules are found from where it is run.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing != module_name and not module_name.startswith(f"{missing}."):
            raise  # a module the application imports: its own bug, with its traceback
        raise _Failed(
            EXIT_USAGE,
            f"cannot import {spec!r}: there is no module {missing!r} "
            f"(looked in {here} and the installed packages)",
        ) from None
    except WindshiftError as exc:
        raise _Failed(
            EXIT_FAILED, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise _Failed(
                EXIT_USAGE, f"cannot load {spec!r}: module {module_name!r} has no {attribute!r}"
            ) from None
    if isinstance(found, Worker):
        return found
    if not callable(found):
        raise _Failed(
            EXIT_USAGE,
            f"{spec!r} is of type {type(found).__name__}, not a windshift.Worker nor a "
            "function that takes the client and returns one",
        )
    return found


async def build(spec: str, target: Worker | object, client: Client) -> Worker:
    """The worker ``target`` is, or the one it returns when called with ``client``."""
    if isinstance(target, Worker):
        return target
    assert callable(target)
    try:
        inspect.signature(target).bind(client)
    except TypeError:
        raise _Failed(
            EXIT_USAGE,
            f"{spec!r} is a function that cannot be called with the client as its one "
            "argument; a worker factory is def make_worker(client: windshift.Client) -> Worker",
        ) from None
    except ValueError:  # no signature to check (a builtin): just call it
        pass
    try:
        made = target(client)
        if inspect.isawaitable(made):
            made = await made
    except WindshiftError as exc:
        raise _Failed(EXIT_FAILED, f"{spec}(client) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(made, Worker):
        raise _Failed(
            EXIT_USAGE,
            f"{spec}(client) returned an object of type {type(made).__name__}, "
            "not a windshift.Worker",
        )
    return made


__all__ = ["EXIT_FAILED", "EXIT_STOPPED", "EXIT_USAGE", "build", "load", "run"]
