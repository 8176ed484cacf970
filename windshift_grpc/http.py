"""The HTTP port of ``windshift-grpc serve`` (``HEALTH_PORT``): one aiohttp application.

The probes (:func:`windshift_grpc.health.http_routes`) are always there;
``/metrics`` and the web console add their routes when their settings turn
them on. :func:`add_routes` adds them all, the same way for one process
(:mod:`windshift_grpc.server`) and for the supervisor of ``serve --workers``
(:mod:`windshift_grpc.supervisor`). Every answer says ``Cache-Control:
no-store`` unless its route set its own: what this port tells is about now.
Requests are not logged (a probe every few seconds would drown the log).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from windshift_grpc import health, metrics

if TYPE_CHECKING:
    import windshift
    from windshift_grpc.permissions import Access
    from windshift_grpc.sampling import Sampler
    from windshift_grpc.settings import Settings

logger = logging.getLogger("windshift_grpc.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _no_store(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.setdefault("Cache-Control", "no-store")
        raise
    response.headers.setdefault("Cache-Control", "no-store")
    return response


class HttpServer:
    """The application on ``HEALTH_PORT`` and its listener.

    Add routes or sub-applications to :attr:`app` before :meth:`start`.

    Args:
        port: the TCP port.
        host: the address to listen on; ``::`` or ``0.0.0.0``: every interface.
        reuse_port: share the port with other processes (``serve --workers``).
    """

    def __init__(self, port: int, *, host: str = "::", reuse_port: bool = False) -> None:
        self.app = web.Application(middlewares=[_no_store])
        self._port = port
        self._host = None if host in ("::", "0.0.0.0") else host
        self._reuse_port = reuse_port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen (raises OSError when the port cannot be had)."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, host=self._host, port=self._port, reuse_port=self._reuse_port or None
        )
        try:
            await site.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening and end the open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()


def add_routes(
    app: web.Application,
    *,
    readiness: health.Check,
    client: windshift.Client | None,
    access: Access | None,
    sampler: Sampler | None,
    scraped: metrics.Source | None,
    console: Settings | None = None,
) -> None:
    """Add everything ``HEALTH_PORT`` serves to ``app``: the probes, and what the settings turn on.

    Args:
        readiness: what ``/readyz`` asks.
        client: the process' library client (None: the supervisor has none,
            nothing it serves needs one); for what reads NATS on a request.
        access: the tokens in use (None: no tokens file).
        sampler: the process' one sampler of the consumers (None: nothing is sampled).
        scraped: what ``/metrics`` serves (None: ``WINDSHIFT_METRICS`` is off, 404).
        console: the settings of a process that serves the web console (it
            does with ``WINDSHIFT_CONSOLE``, a client and a sampler); None: it does not.
    """
    app.add_routes(health.http_routes(readiness))
    if scraped is not None:
        app.add_routes(metrics.http_routes(scraped, access))
    if console is not None and console.console and client is not None and sampler is not None:
        from windshift_grpc import console as web_console  # (it builds on this module)
        from windshift_grpc.settings import descriptor_pool_of

        descriptors = console.console_descriptors
        web_console.mount(
            app,
            client,
            access,
            sampler,
            hosts=console.console_hosts,
            pool=None if descriptors is None else descriptor_pool_of(descriptors),
        )


__all__ = ["Handler", "HttpServer", "add_routes"]
