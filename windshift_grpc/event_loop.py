"""The event loop ``serve`` and its workers run on: asyncio's own or uvloop's.

Example:
    >>> with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
    ...     runner.run(serve(settings))

``WINDSHIFT_EVENT_LOOP`` (:attr:`~windshift_grpc.settings.Settings.event_loop`)
names it. grpc.aio is written against asyncio's default loop; uvloop runs
its calls too, streaming included (the gRPC tests pass on both), and spends
less CPU on NATS' traffic. docs/performance.md ("The server path") has the
figures of both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from windshift_grpc.settings import SettingsError

#: The names ``WINDSHIFT_EVENT_LOOP`` takes.
EVENT_LOOPS = ("asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop ``name`` stands for; None: asyncio's default.

    Raises:
        SettingsError: ``uvloop`` when it is not installed (it comes with the
            ``grpc`` extra, except on Windows), or an unknown name.
    """
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SettingsError(
                "WINDSHIFT_EVENT_LOOP",
                "'uvloop' is not installed here (pip install uvloop, or "
                "windshift[grpc] on a platform uvloop supports)",
            ) from None
        return uvloop.new_event_loop
    raise SettingsError("WINDSHIFT_EVENT_LOOP", f"{name!r} is not one of {', '.join(EVENT_LOOPS)}")


__all__ = ["EVENT_LOOPS", "loop_factory"]
