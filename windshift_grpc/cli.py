"""``windshift-grpc``: the command line.

Example:
    Run the gRPC API on an embedded NATS (data in ./.windshift)::

        windshift-grpc serve

    or against a NATS server::

        NATS_URL=nats://127.0.0.1:4222 GRPC_PORT=9090 windshift-grpc serve

Exit codes: 0 after a graceful stop, 1 when the server could not start
(NATS unreachable, port taken), 2 for bad usage or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Sequence

from windshift_grpc import logs
from windshift_grpc.settings import Settings, SettingsError, describe

_DESCRIPTION = "The Windshift gRPC API (windshift.events.v1alpha1.EventsService) on NATS JetStream."
_SERVE_DESCRIPTION = (
    "Serve the gRPC API, the gRPC health and reflection services and the HTTP probes "
    "/healthz and /readyz until SIGTERM or SIGINT. Configured by the environment "
    "variables below."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="windshift-grpc",
        description=_DESCRIPTION,
        epilog=describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run the server (see `windshift-grpc serve --help`)",
        description=textwrap.fill(_SERVE_DESCRIPTION, 79),
        epilog=describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``windshift-grpc``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"windshift-grpc: {exc}", file=sys.stderr)
        return 2
    logs.configure(development=settings.development)
    from windshift_grpc.server import serve  # after logging is set up

    return asyncio.run(serve(settings))


__all__ = ["main"]
