"""The ``windshift`` command: its subcommands, ``--version``, and its exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from windshift import __version__
from windshift._cli import _consumers, _dead_letters, _run, _state, _streams, _tail

app = typer.Typer(
    name="windshift",
    help="Windshift on NATS JetStream: run workers; look at streams, consumers, events, "
    "dead letters and state.",
    no_args_is_help=True,
    add_completion=False,
    # Tracebacks as Python prints them: the expected failures are one line each.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("run", no_args_is_help=True)(_run.run)
app.command("streams")(_streams.streams)
app.command("stream", no_args_is_help=True)(_streams.stream)
app.command("consumers", no_args_is_help=True)(_consumers.consumers)
app.command("tail", no_args_is_help=True)(_tail.tail)
app.add_typer(_dead_letters.app)
app.add_typer(_state.app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"windshift {__version__}")
        raise typer.Exit()


@app.callback()
def windshift(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Windshift on NATS JetStream: run workers, and operate what they work on.

    Exit codes: 0 ok; 1 the command could not do its work (NATS unreachable, a
    refusal); 2 bad usage or input; 3 not found (stream, consumer, store, key,
    dead letter); 130 interrupted (Ctrl-C, SIGTERM). --json on every operator
    command gives machine-readable output.
    """


def run_app(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (sys.argv[1:] by default); its exit code."""
    try:
        app(args=None if argv is None else list(argv), prog_name="windshift")
    except SystemExit as exc:  # how click ends, always
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


__all__ = ["app", "run_app"]
