"""The server behind ``windshift-grpc serve``: start, run until SIGTERM/SIGINT, stop gracefully.

Example:
    >>> asyncio.run(serve(Settings.from_env()))

What runs: the EventsService and StateService, the gRPC health service and server reflection
on ``GRPC_PORT``, each handler wrapped by :class:`~windshift_grpc.calls.CallLayer` (which,
with a tokens file, also checks every call's token); ``/healthz`` and ``/readyz`` on
``HEALTH_PORT``, with ``WINDSHIFT_METRICS`` also ``/metrics``
(:mod:`windshift_grpc.metrics`, fed by a :class:`~windshift_grpc.sampling.Sampler`),
with ``WINDSHIFT_CONSOLE`` the web console under ``/console/``
(:mod:`windshift_grpc.console`, reading the same Sampler); and, without ``NATS_URL``, an embedded nats-server keeping its data in
``WINDSHIFT_DATA_DIR``, on ``WINDSHIFT_EMBEDDED_NATS_PORT`` (kept across restarts; another
port, with a WARNING saying why, only when another program listens there), accepting only
this process (a random user and password, made at each start, in files only the owner may
read; see :class:`~windshift._embedded.EmbeddedNats`). With
``GRPC_TLS_CERT`` and ``GRPC_TLS_KEY`` the gRPC port speaks TLS only, and with
``GRPC_TLS_CLIENT_CA`` it requires client certificates signed by that CA. An API left
without authentication is announced with a WARNING at start.

A ``GRPC_PORT`` or ``HEALTH_PORT`` that is taken fails the start before anything else
starts (exit code 1, one line naming the setting and the port).

SIGHUP reloads the tokens file (a file that no longer loads is logged and the
tokens in use are kept); open Events calls of tokens it removed, or whose
consume on their stream it withdrew, end at once.

The server keeps no state of its own: every serve process on the same NATS
serves the same streams and shares the same durable consumers.

With ``WINDSHIFT_WORKERS`` above 1 this runs in each worker process of
:mod:`windshift_grpc.supervisor` (``worker``): the supervisor has checked the
ports and keeps ``HEALTH_PORT`` and the embedded nats-server; the worker shares
``GRPC_PORT`` with the others and answers the supervisor's readiness checks
(and, with ``WINDSHIFT_METRICS``, its questions for the worker's metrics).

On SIGTERM or SIGINT it reports not ready, answers new calls with
UNAVAILABLE, ends open Events calls cleanly (status OK; NATS redelivers their
unsettled events after the processing timeout), gives unary calls in flight up
to :data:`SHUTDOWN_GRACE` seconds to finish, stops the gRPC server, closes the
NATS connection, stops the embedded nats-server and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE
from grpc_reflection.v1alpha import reflection

import windshift
from windshift import UnavailableError
from windshift._embedded import EmbeddedNats, free_port
from windshift_grpc import event_loop, metrics, telemetry
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as events_pb2
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as events_grpc
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb2
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as state_grpc
from windshift_grpc.admission import Admission, EventsCalls
from windshift_grpc.auth import Tokens
from windshift_grpc.calls import CallLayer
from windshift_grpc.events_service import EventsService
from windshift_grpc.events_stream import CallLimits
from windshift_grpc.health import GrpcHealth, Readiness
from windshift_grpc.http import HttpServer, add_routes
from windshift_grpc.permissions import Access, Inventory
from windshift_grpc.sampling import Sampler
from windshift_grpc.settings import Settings, SettingsError
from windshift_grpc.state_service import StateService

if TYPE_CHECKING:
    from windshift_grpc.supervisor import Answer, WorkerLink

logger = logging.getLogger("windshift_grpc.server")

#: Seconds calls in flight get to finish after SIGTERM before they are cancelled.
SHUTDOWN_GRACE = 10.0
# After the calls in flight ended: how long late calls are still answered
# UNAVAILABLE before the transport closes (and again given to stop()).
_SETTLE = 0.25
#: The address of the embedded nats-server (only this machine reaches it).
EMBEDDED_NATS_HOST = "127.0.0.1"

EVENTS_SERVICE = events_pb2.DESCRIPTOR.services_by_name["EventsService"].full_name
STATE_SERVICE = state_pb2.DESCRIPTOR.services_by_name["StateService"].full_name


async def serve(
    settings: Settings, *, tokens: Tokens | None = None, worker: WorkerLink | None = None
) -> int:
    """Run the server until SIGTERM or SIGINT.

    Args:
        settings: what to serve, where.
        tokens: the loaded ``WINDSHIFT_AUTH_FILE``; read here when not given.
        worker: this process is a worker of ``serve --workers`` (see the
            module docstring); None: it is the whole server.

    Returns:
        The process exit code: 0 after a graceful stop, 1 when it could not start.
    """
    if tokens is None and settings.auth_file is not None:
        tokens = Tokens.load(settings.auth_file)
    if worker is None:  # (a worker's supervisor checked them, and its siblings hold them)
        try:
            # A port that is taken fails the start now: before the embedded NATS
            # starts and before its data directory is made.
            _check_port("GRPC_PORT", settings.grpc_bind, settings.grpc_port)
            _check_port("HEALTH_PORT", settings.health_bind, settings.health_port)
        except OSError as exc:
            return _could_not_start(exc)
    try:
        exporter = metrics.Exporter() if settings.metrics else None
    except RuntimeError as exc:
        return _could_not_start(exc)
    tracing = telemetry.configure(metric_readers=[exporter.reader] if exporter else [])
    try:
        async with contextlib.AsyncExitStack() as stack:
            servers = settings.nats_servers
            options = settings.nats_options()
            if worker is not None and worker.nats is not None:  # the supervisor's embedded NATS
                servers, options = worker.nats
            elif not servers:
                nats_server = await _start_embedded(settings)
                stack.push_async_callback(nats_server.stop, remove_data=False)
                servers = [nats_server.url]
                options = nats_server.connect_options()
            client = await windshift.connect(
                servers,
                name="windshift-grpc" if worker is None else f"windshift-grpc {worker.name}",
                publish_max_pending=settings.nats_publish_async_max_pending,
                limits=settings.limits(),
                **options,
            )
            stack.push_async_callback(client.close)
            access = None if tokens is None else Access(tokens, inventory=Inventory(client))
            await _run(settings, client, access, exporter, worker)
    except (UnavailableError, OSError, RuntimeError) as exc:
        return _could_not_start(exc)
    finally:
        if tracing is not None:
            tracing.shutdown()
    logger.info("windshift-grpc stopped")
    return 0


def _could_not_start(exc: Exception) -> int:
    logger.error("windshift-grpc could not start: %s", exc)
    return 1


def _check_port(variable: str, host: str, port: int) -> None:
    """Raise OSError, naming ``variable``, when nothing could listen on ``host``:``port`` now.

    It binds as the gRPC server and the probes will (``::`` or ``0.0.0.0``:
    on all interfaces, IPv4 and IPv6), with SO_REUSEADDR (so connections of
    an earlier run, still in TIME_WAIT, do not count). It cannot keep another
    program from taking the port a moment later; the real listen then fails
    with its own message.
    """
    if host in ("::", "0.0.0.0"):
        candidates = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
    elif ":" in host:
        candidates = [(socket.AF_INET6, host)]
    else:
        candidates = [(socket.AF_INET, host)]
    for family, address in candidates:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this machine: IPv4 alone, as gRPC does then
            continue
        with sock:
            if family == socket.AF_INET6 and address == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(
                        f"{variable} {port} is already in use (another program listens on it)"
                    ) from None
                if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and address == "::":
                    continue  # IPv6 switched off
                raise OSError(
                    f"cannot listen on {variable} {port} at {address}: {exc.strerror}"
                ) from None
            return


async def _start_embedded(settings: Settings, *, clients: str = "this process") -> EmbeddedNats:
    preferred = settings.embedded_nats_port
    port = preferred
    taken = await _taken(EMBEDDED_NATS_HOST, preferred)
    if taken is not None:
        port = free_port(EMBEDDED_NATS_HOST)
        logger.warning(
            "the embedded NATS cannot have port %d (%s): it takes port %d instead "
            "(WINDSHIFT_EMBEDDED_NATS_PORT chooses another)",
            preferred,
            taken,
            port,
        )
    # Only this server may connect: the API's tokens mean nothing if anyone on
    # the machine could reach the data in NATS directly.
    nats_server = EmbeddedNats(
        store_dir=settings.data_dir, port=port, host=EMBEDDED_NATS_HOST, authenticate=True
    )
    try:
        await nats_server.start()
    except OSError as exc:  # the directory went away or turned read-only since the settings
        raise OSError(
            f"cannot use WINDSHIFT_DATA_DIR {str(settings.data_dir)!r}: {exc.strerror or exc}"
        ) from None
    logger.info(
        "NATS_URL is not set: started an embedded NATS with JetStream at %s; "
        "its data is kept in %s; only %s may connect (user and password in %s)",
        nats_server.url,
        nats_server.store_dir.absolute(),
        clients,
        nats_server.AUTH_FILE,
    )
    return nats_server


async def _taken(host: str, port: int) -> str | None:
    """Why nats-server could not listen on ``host:port``, or None when it could.

    The bind uses SO_REUSEADDR, as nats-server does: what an earlier run left
    in TIME_WAIT (its clients' connections, which the server closed as it
    stopped) does not keep the port from it; only another listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return f"it cannot be bound: {exc.strerror}"
        else:
            return None
    # Who has it? A NATS server greets every client with INFO at once.
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return "it is in use, but does not accept connections"
    try:
        greeting = await asyncio.wait_for(reader.read(5), 1.0)
    except (OSError, TimeoutError):
        greeting = b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if greeting == b"INFO ":
        return "another NATS server listens there"
    return "another program, not NATS, listens there"


def _where(host: str) -> str:
    """How a listening address reads in the log."""
    if host in ("::", "0.0.0.0"):
        return "all interfaces"
    return f"on {host} only"


def _transport(settings: Settings) -> str:
    """How the gRPC port is secured, for the log."""
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        return "plaintext"
    return "TLS" if settings.grpc_tls_client_ca is None else "mutual TLS"


def _listen(server: grpc.aio.Server, settings: Settings) -> str:
    """Add the gRPC port, with TLS when configured; how it is secured, for the log."""
    host = settings.grpc_bind
    address = f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"
    try:
        if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
            server.add_insecure_port(address)
            return _transport(settings)
        client_ca = settings.grpc_tls_client_ca
        credentials = grpc.ssl_server_credentials(
            [(settings.grpc_tls_key.read_bytes(), settings.grpc_tls_cert.read_bytes())],
            root_certificates=None if client_ca is None else client_ca.read_bytes(),
            require_client_auth=client_ca is not None,
        )
        server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen on GRPC_PORT {settings.grpc_port}: {exc}") from None
    return _transport(settings)


def _announce_access(settings: Settings, tokens: Tokens | None, transport: str) -> None:
    """Say how the API is protected; loudly when it is not."""
    reason = settings.open_api_reason
    if tokens is not None:
        logger.info(
            "API calls need a bearer token: %d token(s) from %s",
            len(tokens),
            settings.auth_file,
        )
    elif reason is None:
        logger.info("API callers are authenticated by their client certificates (mutual TLS)")
    else:
        logger.warning(
            "API AUTHENTICATION IS OFF (%s): anyone who reaches gRPC port %d may publish, "
            "consume, manage streams and read and write state. Set WINDSHIFT_AUTH_FILE to "
            "require tokens (docs/security.md)",
            reason,
            settings.grpc_port,
        )
    if tokens is not None and transport == "plaintext" and not settings.development:
        logger.warning(
            "bearer tokens travel unencrypted: gRPC port %d has no TLS (set GRPC_TLS_CERT "
            "and GRPC_TLS_KEY unless a TLS proxy is in front)",
            settings.grpc_port,
        )


def _reload(settings: Settings, access: Access | None, layer: CallLayer) -> None:
    if access is None or settings.auth_file is None:
        logger.warning("SIGHUP received: no WINDSHIFT_AUTH_FILE to reload")
        return
    try:
        tokens = Tokens.load(settings.auth_file)
    except SettingsError as exc:
        logger.error("SIGHUP received: keeping the tokens in use: %s", exc)
        return
    access.reload(tokens)
    # Open Events calls whose token is gone or lost consume end now, not at
    # their next message (a silent subscriber would otherwise keep receiving).
    ended = layer.recheck()
    logger.info(
        "SIGHUP received: reloaded %d token(s) from %s; ended %d Events call(s) they no "
        "longer allow",
        len(tokens),
        settings.auth_file,
        ended,
    )


async def _run(
    settings: Settings,
    client: windshift.Client,
    access: Access | None,
    exporter: metrics.Exporter | None,
    worker: WorkerLink | None,
) -> None:
    stopping = asyncio.Event()
    # The process' one Sampler: /metrics' consumer gauges and the console's charts read it.
    # (With several workers the supervisor serves HEALTH_PORT, and they sample nothing.)
    sampler = (
        Sampler(client, interval=settings.sample_interval)
        if (settings.metrics or settings.console) and worker is None
        else None
    )
    if sampler is not None:
        if settings.metrics:
            metrics.observe(sampler)
        await sampler.start()  # the first round now: a first scrape finds the consumers
    readiness = Readiness(client)
    grpc_health = GrpcHealth(readiness, [EVENTS_SERVICE, STATE_SERVICE])

    admission = Admission()
    limits = CallLimits(
        first_message_timeout=settings.events_first_message_timeout,
        max_ids=settings.events_max_ids_per_request,
        max_pending_bytes=settings.events_max_pending_bytes,
    )
    events = EventsService(
        client,
        stopping=stopping,
        limits=limits,
        dead_letter_page_bytes=settings.dead_letter_page_bytes,
        publish_events_max_events=settings.publish_events_max_events,
    )
    layer = CallLayer(
        admission,
        access,
        EventsCalls(settings.max_events_calls, settings.max_events_calls_per_token),
        guards=events.guards,
        log_calls=settings.rpc_log == "calls",
    )
    server = grpc.aio.server(
        interceptors=[layer],
        # Refuse to start when the port is taken, rather than share it; the
        # workers of one supervisor share it (which checked that no other
        # program has it).
        options=[("grpc.so_reuseport", 0 if worker is None else 1)],
    )
    events_grpc.add_EventsServiceServicer_to_server(events, server)
    state_grpc.add_StateServiceServicer_to_server(StateService(client), server)
    health_pb2_grpc.add_HealthServicer_to_server(grpc_health.servicer, server)
    reflection.enable_server_reflection(
        [EVENTS_SERVICE, STATE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME], server
    )
    transport = _listen(server, settings)

    http: HttpServer | None = None
    if worker is None:  # (a worker's supervisor serves HEALTH_PORT)
        http = HttpServer(settings.health_port, host=settings.health_bind)
        add_routes(
            http.app,
            readiness=readiness,
            client=client,
            access=access,
            sampler=sampler,
            scraped=exporter,
            console=settings,
        )
        try:
            await http.start()
        except OSError as exc:
            raise OSError(f"cannot listen on HEALTH_PORT {settings.health_port}: {exc}") from None
    await server.start()
    await grpc_health.start()

    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, signalled)
    loop.add_signal_handler(signal.SIGHUP, _reload, settings, access, layer)
    connected = client.nats.connected_url
    # host and port only: a URL may carry a user and password
    nats_at = f"{connected.hostname}:{connected.port}" if connected else "?"
    link: asyncio.Task[None] | None = None
    if worker is None:
        _announce_access(settings, None if access is None else access.tokens, transport)
        logger.info(
            "windshift-grpc ready: gRPC on port %d (%s, %s), health on port %d (%s), "
            "event loop %s, NATS at %s",
            settings.grpc_port,
            transport,
            _where(settings.grpc_bind),
            settings.health_port,
            _where(settings.health_bind),
            event_loop.running_loop_name(),
            nats_at,
        )
    else:  # the supervisor announces the server as a whole
        logger.info(
            "windshift-grpc %s ready (pid %d): gRPC on port %d (%s, %s, shared), "
            "event loop %s, NATS at %s",
            worker.name,
            os.getpid(),
            settings.grpc_port,
            transport,
            _where(settings.grpc_bind),
            event_loop.running_loop_name(),
            nats_at,
        )
        # From now on a SIGHUP reloads: the supervisor passes them on once it is told.
        # (and answers "metrics" with its own registry: the supervisor serves /metrics)
        answers: dict[str, Answer] = {"check": readiness.check}
        if exporter is not None:
            answers["metrics"] = exporter.openmetrics
        link = asyncio.create_task(worker.serve(answers, lost=_lost(signalled)))
    try:
        await signalled.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        readiness.shutting_down = True
        await grpc_health.stop()
        stopping.set()  # open Events calls end
        await admission.drain(grace=SHUTDOWN_GRACE, settle=_SETTLE)
        await server.stop(_SETTLE)
        if http is not None:
            await http.stop()
        if sampler is not None:
            await sampler.stop()
        if link is not None:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link


def _on_signal(signum: int, signalled: asyncio.Event) -> None:
    if signalled.is_set():
        logger.warning("%s again: already shutting down", signal.Signals(signum).name)
        return
    logger.info("%s received: shutting down", signal.Signals(signum).name)
    signalled.set()


def _lost(signalled: asyncio.Event) -> Callable[[], None]:
    """What a worker does when its supervisor is gone (killed: it cannot pass a SIGTERM on)."""

    def lost() -> None:
        if not signalled.is_set():
            logger.warning("the supervisor is gone: shutting down")
            signalled.set()

    return lost


__all__ = ["EMBEDDED_NATS_HOST", "EVENTS_SERVICE", "SHUTDOWN_GRACE", "STATE_SERVICE", "serve"]
