"""``windshift-grpc``: the command line.

Example:
    Run the gRPC API on an embedded NATS (data in ./.windshift)::

        windshift-grpc serve

    in one process per core::

        windshift-grpc serve --workers auto

    or against a NATS server, with API tokens::

        NATS_URL=nats://127.0.0.1:4222 WINDSHIFT_AUTH_FILE=tokens.json windshift-grpc serve

    Make an API token (and the hashed form for the tokens file)::

        windshift-grpc token
        windshift-grpc token --hash < token.txt

Exit codes: 0 after a graceful stop, 1 when the server could not start
(NATS unreachable, port taken), 2 for bad usage or settings (and for a
``serve`` without the ``grpc`` extra installed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import textwrap
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from windshift import __version__
from windshift_grpc import event_loop, logs
from windshift_grpc.auth import Tokens, hashed, weakness
from windshift_grpc.settings import Settings, SettingsError, describe

_DESCRIPTION = "The Windshift gRPC API (windshift.events.v1alpha1.EventsService) on NATS JetStream."
_SERVE_DESCRIPTION = (
    "Serve the gRPC API, the gRPC health and reflection services and the HTTP probes "
    "/healthz and /readyz until SIGTERM or SIGINT (SIGHUP reloads the tokens file), "
    "in one process or, with --workers, in several that share the port. "
    "Configured by the environment variables below. Authentication: with "
    "WINDSHIFT_AUTH_FILE every API call needs a bearer token; without it the API is "
    "open (with a loud warning) only in DEVELOPMENT or on the embedded NATS, and a "
    "production server refuses to start unless WINDSHIFT_AUTH=none says so (or "
    "GRPC_TLS_CLIENT_CA authenticates clients). See docs/security.md."
)
_TOKEN_DESCRIPTION = (
    "Print a new random API token and, for the tokens file, its hashed form "
    "(scrypt:n=...,r=...,p=...:<salt>:<hash>, salted: hashing the same token twice "
    "gives two different lines, both valid). With --hash: read a token from standard "
    "input and print only its hashed form (a weak token is refused)."
)


# The top-level modules of the grpc extra (pyproject.toml) that serve imports.
_GRPC_EXTRA = frozenset({"grpc", "grpc_health", "grpc_reflection"})
_INSTALL_GRPC = "pip install 'windshift[grpc]'"

Serve = Callable[..., Coroutine[Any, Any, int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="windshift-grpc",
        description=_DESCRIPTION,
        epilog=describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Also on `serve`: argparse hands an option after the command to the
    # command's parser, never back to the main one.
    version = f"windshift-grpc {__version__}"
    parser.add_argument("--version", action="version", version=version)
    commands = parser.add_subparsers(dest="command", title="commands")
    serve = commands.add_parser(
        "serve",
        help="run the server (see `windshift-grpc serve --help`)",
        description=textwrap.fill(_SERVE_DESCRIPTION, 79),
        epilog=describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--version", action="version", version=version)
    serve.add_argument(
        "--workers",
        metavar="N",
        help="how many processes serve: a number, or 0 or auto for one per core "
        "(overrides WINDSHIFT_WORKERS; see below)",
    )
    token = commands.add_parser(
        "token",
        help="make an API token and its hashed form for WINDSHIFT_AUTH_FILE",
        description=textwrap.fill(_TOKEN_DESCRIPTION, 79),
    )
    token.add_argument(
        "--hash", action="store_true", help="hash the token read from standard input"
    )
    return parser


def _token(hash_stdin: bool) -> int:
    if hash_stdin:
        token = sys.stdin.read().strip()
        why = weakness(token)
        if why is not None:
            print(f"windshift-grpc: the token is too weak: {why}", file=sys.stderr)
            return 2
        print(hashed(token))
        return 0
    token = secrets.token_urlsafe(32)
    print(f"token:  {token}")
    print(f"hashed: {hashed(token)}")
    return 0


def _serve_functions() -> tuple[Serve, Serve] | None:
    """What runs the server, or None (said why) without the grpc extra.

    :func:`windshift_grpc.server.serve` for one process, and
    :func:`windshift_grpc.supervisor.supervise` for several.
    """
    from google.protobuf import runtime_version

    try:
        from windshift_grpc.server import serve
        from windshift_grpc.supervisor import supervise
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in _GRPC_EXTRA:
            raise  # not the extra: a bug worth its traceback
        print(
            f"windshift-grpc: serve needs the grpc extra ({missing} is not installed): "
            f"{_INSTALL_GRPC}",
            file=sys.stderr,
        )
        return None
    except runtime_version.VersionError as exc:  # the generated code needs a newer protobuf
        reason = " ".join(str(exc).split())
        print(
            f"windshift-grpc: serve needs the grpc extra ({reason}): {_INSTALL_GRPC}",
            file=sys.stderr,
        )
        return None
    return serve, supervise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``windshift-grpc``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("windshift-grpc: name a command (windshift-grpc --help lists them)", file=sys.stderr)
        return 2
    if args.command == "token":
        return _token(args.hash)
    functions = _serve_functions()
    if functions is None:
        return 2
    env = None if args.workers is None else {**os.environ, "WINDSHIFT_WORKERS": args.workers}
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        if exc.name == "WINDSHIFT_WORKERS" and args.workers is not None:
            exc = SettingsError("--workers (WINDSHIFT_WORKERS)", exc.detail)
        print(f"windshift-grpc: {exc}", file=sys.stderr)
        return 2
    # One process is today's server as it was; several need the supervisor.
    serve = functions[0] if settings.workers == 1 else functions[1]
    logs.configure(development=settings.development)  # loading the tokens may warn
    try:
        tokens = None if settings.auth_file is None else Tokens.load(settings.auth_file)
        factory = event_loop.loop_factory(settings.event_loop)  # WINDSHIFT_EVENT_LOOP
    except SettingsError as exc:
        print(f"windshift-grpc: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(settings, tokens=tokens))


__all__ = ["main"]
