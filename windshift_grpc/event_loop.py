"""The event loop ``serve`` and its workers run on: uvloop's where installed, or asyncio's own.

Example:
    >>> with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
    ...     runner.run(serve(settings))

``WINDSHIFT_EVENT_LOOP`` (:attr:`~windshift_grpc.settings.Settings.event_loop`)
names it: ``auto`` (the default) takes uvloop when it can be imported (it
comes with the ``grpc`` extra, except on Windows) and asyncio's loop
otherwise; ``uvloop`` insists on uvloop, ``asyncio`` on asyncio's loop.
grpc.aio runs on any asyncio loop; the whole gRPC and fault suites pass on
both, and uvloop spends less CPU on each call and on NATS' traffic
(docs/performance.md, "The server path"). The ready line of the log names
the loop in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from windshift_grpc.settings import SettingsError

#: The names ``WINDSHIFT_EVENT_LOOP`` takes.
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop ``name`` stands for; None: asyncio's default.

    Raises:
        SettingsError: ``uvloop`` when it is not installed, or an unknown name.
    """
    if name == "asyncio":
        return None
    if name not in ("auto", "uvloop"):
        raise SettingsError(
            "WINDSHIFT_EVENT_LOOP", f"{name!r} is not one of {', '.join(EVENT_LOOPS)}"
        )
    try:
        import uvloop
    except ImportError:
        if name == "auto":
            return None
        raise SettingsError(
            "WINDSHIFT_EVENT_LOOP",
            "'uvloop' is not installed here (pip install uvloop, or "
            "windshift[grpc] on a platform uvloop supports)",
        ) from None
    return uvloop.new_event_loop


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: which loop the caller runs on."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.partition(".")[0] == "uvloop" else "asyncio"


__all__ = ["EVENT_LOOPS", "loop_factory", "running_loop_name"]
