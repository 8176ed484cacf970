"""The NATS connection options every ``windshift`` subcommand shares, in one place.

A command gets them by taking a keyword ``nats: NatsOptions`` and wearing
:func:`connection_options`: the decorator puts the options below on the
command's command line and hands the command one :class:`NatsOptions`.
Each option has the environment variable of the same setting of
``windshift-grpc serve`` (docs/grpc.md), so one environment serves both.

=====================  ===================  ==========================================
option                 environment          windshift.connect
=====================  ===================  ==========================================
``--server``           ``NATS_URL``         ``servers`` (several separated by commas)
``--user``             ``NATS_USER``        ``user``
``--password``         ``NATS_PASSWORD``    ``password``
``--token``            ``NATS_TOKEN``       ``token``
``--creds``            ``NATS_CREDS``       ``credentials_file``
``--nkey-seed``        ``NATS_NKEY_SEED``   ``nkey_seed_file``
``--tls-ca``           ``NATS_TLS_CA``      ``tls`` (the CA to verify servers with)
``--tls-cert``         ``NATS_TLS_CERT``    ``tls`` (a client certificate)
``--tls-key``          ``NATS_TLS_KEY``     ``tls`` (its key)
=====================  ===================  ==========================================
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

import windshift
from windshift._cli._output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Failure,
)
from windshift.errors import NotFoundError, ValidationError, WindshiftError

DEFAULT_SERVER = "nats://127.0.0.1:4222"
_PANEL = "NATS connection"
_SCHEMES = ("nats", "tls", "ws", "wss")

R = TypeVar("R")


def _file_option(*names: str, envvar: str, help: str) -> Any:
    return typer.Option(
        *names,
        envvar=envvar,
        help=help,
        exists=True,
        dir_okay=False,
        readable=True,
        rich_help_panel=_PANEL,
    )


# The options, as the parameters the decorator adds to a command (keyword-only,
# after the command's own). Names match NatsOptions' fields.
_PARAMETERS = [
    inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=annotation,
    )
    for name, default, annotation in [
        (
            "server",
            DEFAULT_SERVER,
            Annotated[
                str,
                typer.Option(
                    "--server",
                    envvar="NATS_URL",
                    help="NATS server URL; several (a cluster) separated by commas.",
                    rich_help_panel=_PANEL,
                ),
            ],
        ),
        (
            "user",
            None,
            Annotated[
                str | None,
                typer.Option(
                    envvar="NATS_USER",
                    help="NATS user name, with --password. NATS takes one way of "
                    "authenticating: a user and password, a token, a credentials file "
                    "or an NKey seed.",
                    rich_help_panel=_PANEL,
                ),
            ],
        ),
        (
            "password",
            None,
            Annotated[
                str | None,
                typer.Option(
                    envvar="NATS_PASSWORD",
                    help="NATS password, with --user; better given as NATS_PASSWORD "
                    "(a command line is visible to other users of the machine).",
                    show_default=False,
                    rich_help_panel=_PANEL,
                ),
            ],
        ),
        (
            "token",
            None,
            Annotated[
                str | None,
                typer.Option(
                    envvar="NATS_TOKEN",
                    help="NATS authentication token; better given as NATS_TOKEN.",
                    show_default=False,
                    rich_help_panel=_PANEL,
                ),
            ],
        ),
        (
            "creds",
            None,
            Annotated[
                Path | None,
                _file_option(
                    "--creds",
                    envvar="NATS_CREDS",
                    help="NATS credentials file (.creds: user JWT and NKey seed).",
                ),
            ],
        ),
        (
            "nkey_seed",
            None,
            Annotated[
                Path | None,
                _file_option(
                    "--nkey-seed",
                    envvar="NATS_NKEY_SEED",
                    help="File holding a NATS user NKey seed (SU...).",
                ),
            ],
        ),
        (
            "tls_ca",
            None,
            Annotated[
                Path | None,
                _file_option(
                    "--tls-ca",
                    envvar="NATS_TLS_CA",
                    help="PEM CA certificate(s) to verify the NATS servers with, instead "
                    "of the system's. TLS is used when the server requires it or the "
                    "URL says tls://.",
                ),
            ],
        ),
        (
            "tls_cert",
            None,
            Annotated[
                Path | None,
                _file_option(
                    "--tls-cert",
                    envvar="NATS_TLS_CERT",
                    help="PEM client certificate, with --tls-key, for servers that verify clients.",
                ),
            ],
        ),
        (
            "tls_key",
            None,
            Annotated[
                Path | None,
                _file_option(
                    "--tls-key",
                    envvar="NATS_TLS_KEY",
                    help="PEM private key of --tls-cert (not encrypted).",
                ),
            ],
        ),
    ]
]
_NAMES = [parameter.name for parameter in _PARAMETERS]


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """Where and how a command connects: the values of the connection options."""

    server: str = DEFAULT_SERVER
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: Path | None = None
    nkey_seed: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def servers(self) -> list[str]:
        """The URLs of ``--server``."""
        return [url.strip() for url in self.server.split(",") if url.strip()]

    def shown(self) -> str:
        """The servers as a log line may show them: without a user or password."""
        return ",".join(_without_userinfo(url) for url in self.servers)

    def check(self) -> None:
        """Raise :class:`typer.BadParameter` (exit 2) naming the option that is wrong."""
        if not self.servers:
            raise typer.BadParameter("no NATS URL given", param_hint="--server")
        for url in self.servers:
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in _SCHEMES or not rest:
                raise typer.BadParameter(
                    f"{url!r} is not a NATS URL (expected e.g. {DEFAULT_SERVER})",
                    param_hint="--server (NATS_URL)",
                )
        for (first, first_value), (second, second_value) in (
            (("--user", self.user), ("--password", self.password)),
            (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)),
        ):
            if (first_value is None) != (second_value is None):
                given, missing = (first, second) if second_value is None else (second, first)
                raise typer.BadParameter(f"needs {missing} as well", param_hint=given)
        ways = [
            option
            for option, value in (
                ("--user", self.user),
                ("--token", self.token),
                ("--creds", self.creds),
                ("--nkey-seed", self.nkey_seed),
            )
            if value is not None
        ]
        if len(ways) > 1:
            raise typer.BadParameter(
                f"{ways[0]} is given too; NATS takes one way of authenticating",
                param_hint=ways[1],
            )
        self.tls()

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context of ``--tls-*``, or None (nats-py's default)."""
        if self.tls_ca is None and self.tls_cert is None:
            return None
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=None if self.tls_ca is None else str(self.tls_ca)
            )
        except (ssl.SSLError, ValueError) as exc:
            raise typer.BadParameter(
                f"{str(self.tls_ca)!r} cannot be loaded as PEM ({exc})", param_hint="--tls-ca"
            ) from None
        if self.tls_cert is not None and self.tls_key is not None:
            try:
                context.load_cert_chain(self.tls_cert, self.tls_key, password=_no_password)
            except (ssl.SSLError, ValueError) as exc:
                raise typer.BadParameter(
                    f"{str(self.tls_cert)!r} and {str(self.tls_key)!r} are not a PEM "
                    f"certificate and its key ({exc})",
                    param_hint="--tls-key",
                ) from None
        return context

    async def connect(self, *, name: str) -> windshift.Client:
        """:func:`windshift.connect` with these options; the caller closes the client.

        Raises:
            UnavailableError: no server could be reached, or it refused the credentials.
        """
        return await windshift.connect(
            self.servers,
            name=name,
            user=self.user,
            password=self.password,
            token=self.token,
            credentials_file=None if self.creds is None else str(self.creds),
            nkey_seed_file=None if self.nkey_seed is None else str(self.nkey_seed),
            tls=self.tls(),
        )


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at else url


def _no_password() -> bytes:
    # Asked for only by an encrypted key: fail rather than prompt on the terminal.
    raise ValueError("encrypted private keys are not supported")


def connection_options(command: Callable[..., R]) -> Callable[..., R]:
    """Give ``command`` the connection options; it receives them as ``nats=NatsOptions(...)``.

    The options are checked (:meth:`NatsOptions.check`) before the command runs.
    """
    signature = inspect.signature(command, eval_str=True)
    if "nats" not in signature.parameters:
        raise TypeError(f"{command.__qualname__} must take a keyword argument nats: NatsOptions")
    own = [parameter for parameter in signature.parameters.values() if parameter.name != "nats"]

    @functools.wraps(command)
    def with_options(*args: Any, **kwargs: Any) -> R:
        nats = NatsOptions(**{name: kwargs.pop(name) for name in _NAMES})
        nats.check()
        return command(*args, nats=nats, **kwargs)

    # typer reads the parameters from the signature.
    with_options.__signature__ = signature.replace(parameters=[*own, *_PARAMETERS])  # type: ignore[attr-defined]
    with_options.__annotations__ = {
        **{parameter.name: parameter.annotation for parameter in own},
        **{parameter.name: parameter.annotation for parameter in _PARAMETERS},
        "return": signature.return_annotation,
    }
    return with_options


# After Ctrl-C, how long the work may take to end once cancelled (seconds),
# and how often it is cancelled again meanwhile: on Python 3.11 a cancellation
# that meets a finishing asyncio.wait_for can be swallowed.
_INTERRUPT_GRACE = 3.0
_CANCEL_AGAIN = 0.25


def with_client(
    nats: NatsOptions,
    work: Callable[[windshift.Client], Coroutine[Any, Any, R]],
    *,
    name: str = "windshift",
) -> R:
    """Connect with ``nats``, run ``work(client)`` to its end, close; what ``work`` returns.

    SIGINT (Ctrl-C) and SIGTERM cancel the work and end the command with exit
    130 within a few seconds, whatever the work does with the cancellation.
    The library's errors become a :class:`~windshift._cli._output.Failure`:
    a ValidationError exits 2, a NotFoundError 3, any other (NATS
    unreachable, a refusal) 1, each with its one-line message.

    Raises:
        Failure: the work failed, or was interrupted.
    """
    try:
        return asyncio.run(_run_interruptibly(_connected(nats, work, name)))
    except KeyboardInterrupt:  # a SIGINT before the loop's own handler was in place
        raise Failure(EXIT_INTERRUPTED, "interrupted") from None


async def _connected(
    nats: NatsOptions,
    work: Callable[[windshift.Client], Coroutine[Any, Any, R]],
    name: str,
) -> R:
    try:
        client = await nats.connect(name=name)
    except WindshiftError as exc:
        raise _failure(exc) from None
    async with client:
        try:
            return await work(client)
        except WindshiftError as exc:
            raise _failure(exc) from None


def _failure(exc: WindshiftError) -> Failure:
    if isinstance(exc, ValidationError):
        return Failure(EXIT_USAGE, str(exc))
    if isinstance(exc, NotFoundError):
        return Failure(EXIT_NOT_FOUND, str(exc))
    return Failure(EXIT_FAILED, str(exc))


async def _run_interruptibly(main: Coroutine[Any, Any, R]) -> R:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    interrupted = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    handled = threading.current_thread() is threading.main_thread()
    if handled:
        for signum in signals:
            loop.add_signal_handler(signum, interrupted.set)
    try:
        waiter = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not interrupted.is_set():
            return task.result()
        deadline = loop.time() + _INTERRUPT_GRACE
        while not task.done() and loop.time() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_AGAIN)
        if not task.done():
            # The work will not end: leave without waiting for it.
            sys.stdout.flush()
            print("windshift: interrupted", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)
        if not task.cancelled():
            task.exception()  # retrieved: whatever it ended with, the interrupt decides
        raise Failure(EXIT_INTERRUPTED, "interrupted")
    finally:
        if handled:
            for signum in signals:
                loop.remove_signal_handler(signum)


__all__ = ["DEFAULT_SERVER", "NatsOptions", "connection_options", "with_client"]
