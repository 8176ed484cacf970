"""``windshift``: the command line of the library (the ``cli`` extra).

Example:
    Run the worker ``worker`` of the module ``myapp.workers`` until SIGTERM or Ctrl-C::

        windshift run myapp.workers:worker --server nats://127.0.0.1:4222

One module per subcommand (group), beside this one: ``_run.py`` for
``windshift run``, ``_streams.py`` (``streams``, ``stream``),
``_consumers.py``, ``_tail.py``, ``_dead_letters.py`` and ``_state.py`` for
the operator subcommands; what they share: the NATS connection options and
``with_client`` in ``_connection.py``, tables and ``--json`` and the exit
codes in ``_output.py``, ``--proto`` in ``_protos.py``; the command itself
in ``_app.py``. This module imports none of them until :func:`main` runs, so
that without the extra (typer) the command can still say what to install.

Exit codes (docs/cli.md): 0 ok (and after a clean stop of ``run``), 1 when
the command could not do its work (NATS unreachable, a refusal, a handler's
set-up failed), 2 for bad usage or input (options, ids, JSON, ``--proto``,
an import path that names no worker, and the extra not installed), 3 when
what it names does not exist, 130 when interrupted (Ctrl-C, SIGTERM) in an
operator subcommand.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# The top-level modules of the cli extra (pyproject.toml) the command imports.
_CLI_EXTRA = frozenset({"typer", "rich"})
_INSTALL_CLI = "pip install 'windshift[cli]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``windshift``; returns the exit code."""
    try:
        from windshift._cli._app import run_app
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in _CLI_EXTRA:
            raise  # not the extra: a bug worth its traceback
        print(
            f"windshift: the windshift command needs the cli extra ({missing} is not "
            f"installed): {_INSTALL_CLI}",
            file=sys.stderr,
        )
        return 2
    return run_app(argv)


__all__ = ["main"]
