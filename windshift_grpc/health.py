"""Health: is the process alive, is it ready, and telling HTTP and gRPC probes so.

Ready (:class:`Readiness`) means: not shutting down, connected to NATS, and
JetStream answers ``$JS.API.INFO`` within a second without an error.

* ``GET /healthz`` on ``HEALTH_PORT``: ``200 ok`` while the process runs
  (liveness).
* ``GET /readyz``: ``200 ready`` when ready, else ``503 not ready: <reason>``
  (``shutting down``, ``not connected to NATS``, ``JetStream did not answer:
  <error type>``, ...); checked afresh on every request.
* ``HEAD`` of either answers the same status without a body. Another method
  on these paths is 405. Bodies are ``text/plain``; every answer says
  ``Cache-Control: no-store``. The query string is ignored.
* The standard gRPC health service (``grpc.health.v1.Health``) reports
  SERVING or NOT_SERVING for the server as a whole (``""``) and for each
  service the server names (``windshift.events.v1alpha1.EventsService`` and
  ``windshift.state.v1alpha1.StateService``): all the same status, from the
  same check, repeated about once a second. From the start of a graceful
  stop on, all of them are NOT_SERVING.

The HTTP routes are served by :class:`~windshift_grpc.http.HttpServer`, with
whatever else the HTTP port offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Protocol

from aiohttp import web
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

import windshift

logger = logging.getLogger("windshift_grpc.health")

_CHECK_TIMEOUT = 1.0
_MONITOR_PERIOD = 1.0


class Check(Protocol):
    """What ``/readyz`` asks: :class:`Readiness`, or a supervisor's check of its workers."""

    async def check(self) -> str | None:
        """None when ready, else why not."""
        ...


class Readiness:
    """Answers "can this server do its work right now?".

    Set :attr:`shutting_down` when a graceful stop begins: from then on the
    answer is "shutting down".

    Args:
        client: the library client whose connection is checked.
    """

    def __init__(self, client: windshift.Client) -> None:
        self._client = client
        self.shutting_down = False

    async def check(self) -> str | None:
        """None when ready, else why not."""
        if self.shutting_down:
            return "shutting down"
        if not self._client.is_connected:
            return "not connected to NATS"
        nc = self._client.nats
        try:
            answer = await nc.request("$JS.API.INFO", b"", timeout=_CHECK_TIMEOUT)
        except Exception as exc:
            return f"JetStream did not answer: {type(exc).__name__}"
        try:
            error = json.loads(answer.data).get("error")
        except ValueError:
            return "JetStream answered with something unreadable"
        if error:
            return f"JetStream answered with an error: {error.get('description', error)}"
        return None


class GrpcHealth:
    """Keeps the gRPC health service in step with :class:`Readiness`.

    :meth:`start` sets the status once and then about every second; every
    name gets the same status.

    Args:
        readiness: the check to follow.
        services: the full names of the services to report, besides the
            server as a whole (``""``).
    """

    def __init__(self, readiness: Readiness, services: Sequence[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._readiness = readiness
        self._services = ["", *services]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._update()
        self._task = asyncio.create_task(self._monitor(), name="windshift-grpc-health")

    async def _update(self) -> None:
        reason = await self._readiness.check()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if reason is None
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in self._services:
            await self.servicer.set(service, status)

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(_MONITOR_PERIOD)
            try:
                await self._update()
            except Exception:
                logger.exception("updating the gRPC health status failed")

    async def stop(self) -> None:
        """Report NOT_SERVING from now on (the server is shutting down)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.servicer.enter_graceful_shutdown()


def http_routes(readiness: Check) -> list[web.RouteDef]:
    """``GET /healthz`` and ``GET /readyz`` (HEAD too) for :class:`~windshift_grpc.http.HttpServer`."""

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        reason = await readiness.check()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]


__all__ = ["Check", "GrpcHealth", "Readiness", "http_routes"]
