"""The web console of ``windshift-grpc serve`` (``WINDSHIFT_CONSOLE=on``), under ``/console/``.

Example:
    >>> http.app.add_subapp("/console", console_app(client, access, sampler))

Pages (``static/``: plain HTML, CSS and JavaScript shipped in the package, no
asset from the network) over a JSON API (:mod:`windshift_grpc.console.api`):
streams, a stream's events newest first, consumers with their lag over the
last hour (the :class:`~windshift_grpc.sampling.Sampler`'s samples), dead
letters (inspect, replay, delete, purge) and state stores (keys, values,
history). The page polls the API, so what it shows follows without reloads.

What guards it is in :mod:`windshift_grpc.console.auth`: the ``Host`` check on
every request, the ``X-Windshift-Console`` header and same-origin check on
every API call, and the tokens of ``WINDSHIFT_AUTH_FILE``. Every answer forbids
framing and inline scripts (``Content-Security-Policy``) and is not cached.

The application needs only a client, the tokens and a sampler, so any
process that owns ``HEALTH_PORT`` can mount it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Middleware
from google.protobuf.descriptor_pool import DescriptorPool

import windshift
from windshift import WindshiftError
from windshift_grpc.console.api import VIEWER, ConsoleApi, status_of
from windshift_grpc.console.auth import (
    CSRF_HEADER,
    Refused,
    host_allowed,
    same_origin,
    viewer_of,
)
from windshift_grpc.http import Handler
from windshift_grpc.permissions import Access
from windshift_grpc.sampling import Sampler

logger = logging.getLogger("windshift_grpc.console")

#: Where the console is mounted on ``HEALTH_PORT``.
PREFIX = "/console"

_SECURITY_HEADERS = {
    # No script, style or image from anywhere but this console; nothing inline.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_STATIC = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}


def _secured(response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _host_guard(hosts: tuple[str, ...]) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host"), hosts):
            logger.info("console refused a request naming host %r", request.headers.get("Host"))
            response: web.StreamResponse = web.Response(
                status=421,
                text="this console answers to IP addresses, localhost and "
                "WINDSHIFT_CONSOLE_HOSTS only\n",
            )
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _secured(exc)
                raise
        _secured(response)
        return response

    return guard


def _api_guard(access: Access | None) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get(CSRF_HEADER) != "1":
            raise Refused(403, f"an API call of the console needs the header {CSRF_HEADER}: 1")
        if not same_origin(request):
            raise Refused(403, "a request from another origin")
        request[VIEWER] = await viewer_of(request, access)
        try:
            return await handler(request)
        except WindshiftError as exc:
            raise Refused(status_of(exc), str(exc)) from None

    return guard


def _static(name: str) -> Handler:
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    content_type = _STATIC[name]

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return serve


def console_app(
    client: windshift.Client,
    access: Access | None,
    sampler: Sampler,
    *,
    hosts: Iterable[str] = (),
    pool: DescriptorPool | None = None,
) -> web.Application:
    """The console as an aiohttp application, to mount at :data:`PREFIX`.

    Args:
        client: the library client the pages read through (and replays publish with).
        access: the tokens in use (None: no tokens file; the console is as open as the API).
        sampler: the process' one sampler: the lag charts read its history.
        hosts: host names besides IP addresses and ``localhost`` that it answers to
            (``WINDSHIFT_CONSOLE_HOSTS``).
        pool: message types to show data of decoded, besides those of protobuf's
            default pool (``WINDSHIFT_CONSOLE_DESCRIPTORS``).
    """
    app = web.Application(middlewares=[_host_guard(tuple(h.lower() for h in hosts))])
    page = _static("index.html")
    app.add_routes([web.get("/", page)])
    app.add_routes([web.get(f"/{name}", _static(name)) for name in _STATIC if name != "index.html"])
    api = web.Application(middlewares=[_api_guard(access)])
    api.add_routes(ConsoleApi(client, sampler, pool).routes())
    app.add_subapp("/api", api)
    return app


def mount(
    parent: web.Application,
    client: windshift.Client,
    access: Access | None,
    sampler: Sampler,
    *,
    hosts: Iterable[str] = (),
    pool: DescriptorPool | None = None,
) -> None:
    """Mount :func:`console_app` at :data:`PREFIX` on ``parent`` (``/console`` goes to ``/console/``)."""

    async def to_console(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{PREFIX}/")

    parent.add_routes([web.get(PREFIX, to_console)])
    parent.add_subapp(PREFIX, console_app(client, access, sampler, hosts=hosts, pool=pool))


__all__ = ["PREFIX", "console_app", "mount"]
