"""The settings of ``windshift-grpc serve``, read from environment variables.

Example:
    >>> settings = Settings.from_env({"NATS_URL": "nats://nats:4222", "GRPC_PORT": "9090"})
    >>> settings.grpc_port
    9090

Each setting is declared once, as a field of :class:`Settings` made by
:func:`_setting`: its variable, default, parser, meaning and group. That one
declaration drives :meth:`Settings.from_env`, the list that ``windshift-grpc
serve --help`` prints (:func:`describe`) and the settings tables of
docs/grpc.md (:func:`markdown`). Regenerate those after a change with::

    python -m windshift_grpc.settings --update docs/grpc.md

(``--markdown`` prints them instead); a test fails while the docs differ.
Checks that concern several settings at once (pairs that go together,
contradictions, files that must load) are in :meth:`Settings._check`.

A bad value raises :class:`SettingsError`, whose message is one line naming
the variable. The ``OTEL_*`` variables are not settings of windshift's: the
OpenTelemetry SDK reads them itself (:mod:`windshift_grpc.telemetry`).
"""

# Every field is declared by a call of _setting (dataclasses.field with metadata), which
# ruff cannot tell from a call that makes a shared mutable default.
# ruff: noqa: RUF009

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import ssl
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from windshift import Limits
from windshift._names import MAX_SUBJECT_LENGTH

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_METADATA = "windshift_grpc.setting"


class SettingsError(ValueError):
    """A setting has a value that cannot be used.

    Attributes:
        name: the environment variable.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"invalid {name}: {message}")
        self.name = name
        #: The complaint without the variable's name (``serve --workers`` names its flag).
        self.detail = message


class _Invalid(ValueError):
    """What a parser says about a value it refuses; the variable's name is added to it."""


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable of ``serve``, as declared on :class:`Settings`.

    Attributes:
        variable: the environment variable.
        attribute: the :class:`Settings` attribute it sets.
        default: the value when the variable is unset or blank.
        parse: the value from the variable's text; raises ``ValueError`` with
            the complaint (without the variable's name).
        help: what it means, for ``--help`` and the docs; `backquotes` mark
            literal text (kept in the docs, dropped in ``--help``).
        group: the heading it is listed under.
        shown_default: the default as ``--help`` and the docs show it.
        exact: taken as it is, spaces included (secrets); otherwise stripped.
    """

    variable: str
    attribute: str
    default: T
    parse: Callable[[str], T]
    help: str
    group: str
    shown_default: str
    exact: bool = False

    def read(self, env: Mapping[str, str]) -> T:
        """The value in ``env`` (the default when unset or blank).

        Raises:
            SettingsError: the parser refused the text.
        """
        raw = env.get(self.variable)
        text = raw if raw is None or self.exact else raw.strip()
        if not text:
            return self.default
        try:
            return self.parse(text)
        except _Invalid as exc:
            raise SettingsError(self.variable, str(exc)) from None


@dataclass(frozen=True)
class _Declared:
    """What :func:`_setting` keeps in a field's metadata."""

    variable: str
    parse: Callable[[str], Any]
    help: str
    group: str
    shown_default: str | None
    exact: bool


def _setting(
    variable: str,
    default: T,
    parse: Callable[[str], T],
    help: str,
    *,
    group: str,
    shown: str | None = None,
    exact: bool = False,
    secret: bool = False,
) -> T:
    """Declare a field of :class:`Settings` as read from ``variable``.

    ``shown`` is the default as listed (``str(default)`` when not given,
    ``unset`` for None); ``exact`` keeps the value's spaces; a ``secret`` is
    also left out of the ``repr``.
    """
    declared = _Declared(variable, parse, help, group, shown, exact or secret)
    return field(default=default, repr=not secret, metadata={_METADATA: declared})


# --- parsers: the text (stripped unless exact, never blank) -> the value ---------


def _text(raw: str) -> str:
    return raw


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise _Invalid(f"{raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise _Invalid(f"{value} is not between {low} and {high}")
        return value

    return parse


_port = _integer(1, 65535)

#: ``WINDSHIFT_WORKERS`` takes at most this many processes per core.
WORKERS_PER_CORE = 4


def cpu_count() -> int:
    """The cores this process may run on: its CPU affinity, not the machine's count.

    In a container limited to a few cores (``--cpuset-cpus``, a CPU manager
    policy) the affinity is what the processes can really use.
    """
    counted = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if counted is not None:
        count: int | None = counted()
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # macOS: no affinity to ask
        count = os.cpu_count()
    return count or 1


def _workers(raw: str) -> int:
    """A number of processes: ``0`` or ``auto`` for one per core."""
    if raw.lower() in ("0", "auto"):
        return cpu_count()
    try:
        value = int(raw)
    except ValueError:
        raise _Invalid(f"{raw!r} is not a whole number, 0 or auto") from None
    if value < 0:
        raise _Invalid(f"{value} is not a number of processes (0 or auto: one per core)")
    cores = cpu_count()
    most = WORKERS_PER_CORE * cores
    if value > most:
        raise _Invalid(
            f"{value} is more than {WORKERS_PER_CORE} per core of the {cores} this process "
            f"may use (at most {most})"
        )
    return value


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise _Invalid(f"{raw!r} is not a number of seconds") from None
        if not low <= value <= high:  # NaN fails too
            raise _Invalid(f"{raw} is not between {low:g} and {high:g} seconds")
        return value

    return parse


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _Invalid(f"{raw!r} is not true or false")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise _Invalid(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _host(raw: str) -> str:
    """``auto`` or an IP address to listen on."""
    if raw.lower() == "auto":
        return "auto"
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        raise _Invalid(
            f"{raw!r} is not an IP address (e.g. 0.0.0.0, ::, 127.0.0.1) or auto"
        ) from None


_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def _hostnames(raw: str) -> tuple[str, ...]:
    """Host names separated by commas (lowercased)."""
    names: list[str] = []
    for name in raw.split(","):
        name = name.strip().lower().rstrip(".")
        if not name:
            continue
        if len(name) > 253 or not _HOSTNAME.fullmatch(name):
            raise _Invalid(f"{name!r} is not a host name (e.g. console.example.com)")
        names.append(name)
    return tuple(names)


def _descriptor_set(raw: str) -> Path:
    """A file of a ``FileDescriptorSet`` that loads into a descriptor pool."""
    path = _file(raw)
    try:
        descriptor_pool_of(path)
    except ValueError as exc:
        raise _Invalid(f"{raw!r}: {exc}") from None
    return path


def descriptor_pool_of(path: Path) -> Any:
    """A ``DescriptorPool`` holding the files of the ``FileDescriptorSet`` in ``path``.

    Make one with ``protoc --include_imports --descriptor_set_out=FILE``.

    Raises:
        ValueError: the file is no descriptor set, or a file in it does not load.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool
    from google.protobuf.message import DecodeError

    files = descriptor_pb2.FileDescriptorSet()
    try:
        files.ParseFromString(path.read_bytes())
    except DecodeError:
        raise ValueError("not a protobuf FileDescriptorSet (protoc --descriptor_set_out)") from None
    if not files.file:
        raise ValueError("the descriptor set holds no file")
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        try:
            pool.Add(file)
            pool.FindFileByName(file.name)  # (what it lacks shows only once it is built)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(
                f"{file.name!r} does not load ({exc}); make the set with --include_imports"
            ) from None
    return pool


def _file(raw: str) -> Path:
    """A file that must exist and be readable."""
    path = Path(raw)
    if not path.is_file():
        raise _Invalid(f"{raw!r} is not a file")
    if not os.access(path, os.R_OK):
        raise _Invalid(f"{raw!r} cannot be read")
    return path


def _nats_url(raw: str) -> str:
    for url in raw.split(","):
        url = url.strip()
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("nats", "tls", "ws", "wss") or not rest:
            raise _Invalid(f"{url!r} is not a NATS URL (expected e.g. nats://host:4222)")
    return raw


# --- the settings ---------------------------------------------------------------

_SERVING = "Serving"
_EMBEDDED = "The embedded NATS (without `NATS_URL`)"
_AUTH = "API authentication (docs/security.md)"
_TLS = "TLS of the gRPC port"
_NATS = "Credentials and TLS for the NATS of `NATS_URL`"
_LIMITS = "Limits"
_METRICS = "Metrics (docs/metrics.md)"
_CONSOLE = "Web console (docs/console.md)"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``windshift-grpc serve`` can be told (see :data:`SETTINGS`)."""

    nats_url: str | None = _setting(
        "NATS_URL",
        None,
        _nats_url,
        "NATS server(s) to use, e.g. `nats://nats:4222`; several separated by commas. "
        "Unset: start an embedded nats-server with JetStream (see below).",
        group=_SERVING,
    )
    grpc_port: int = _setting(
        "GRPC_PORT", 8080, _port, "TCP port of the gRPC API (see `GRPC_HOST`).", group=_SERVING
    )
    grpc_host: str = _setting(
        "GRPC_HOST",
        "auto",
        _host,
        "Address the gRPC port listens on: an IP address (`0.0.0.0` or `::` for every "
        "interface, `127.0.0.1` for this machine alone), or `auto`: loopback while the API "
        "is open (no `WINDSHIFT_AUTH_FILE`, no `GRPC_TLS_CLIENT_CA`), every interface "
        "otherwise.",
        group=_SERVING,
    )
    health_port: int = _setting(
        "HEALTH_PORT",
        8088,
        _port,
        "TCP port of the HTTP probes `/healthz` and `/readyz` (see `HEALTH_HOST`); "
        "not the same as `GRPC_PORT`.",
        group=_SERVING,
    )
    health_host: str = _setting(
        "HEALTH_HOST",
        "auto",
        _host,
        "Address the HTTP probes listen on, as `GRPC_HOST` (`auto`: loopback while the "
        "API is open, every interface otherwise).",
        group=_SERVING,
    )
    workers: int = _setting(
        "WINDSHIFT_WORKERS",
        1,
        _workers,
        "How many processes serve the API (`serve --workers N` overrides it). `1`: one "
        "process. More: a supervisor process starts that many workers sharing `GRPC_PORT` "
        "(`SO_REUSEPORT`); it keeps `HEALTH_PORT` and the embedded NATS to itself, restarts "
        "a worker that crashes and passes `SIGTERM`, `SIGINT` and `SIGHUP` on to every "
        "worker (docs/grpc.md, Several processes). `0` or `auto`: one per core this process "
        f"may use. At most {WORKERS_PER_CORE} per core.",
        group=_SERVING,
    )
    metrics: bool = _setting(
        "WINDSHIFT_METRICS",
        False,
        _flag,
        "`on`: serve `/metrics` on `HEALTH_PORT`, in Prometheus' text format: the "
        "OpenTelemetry metrics of the library and the server, and every consumer's "
        "counts and lag, sampled every `WINDSHIFT_SAMPLE_INTERVAL`. With "
        "`WINDSHIFT_AUTH_FILE`, a scrape needs a bearer token with the `metrics` "
        "permission (docs/security.md). `off`: `/metrics` is 404.",
        group=_METRICS,
        shown="off",
    )
    sample_interval: float = _setting(
        "WINDSHIFT_SAMPLE_INTERVAL",
        15.0,
        _seconds(1, 3600),
        "Seconds between two samples of every consumer's counts and lag (each costs "
        "JetStream one request per stream, one per consumer and one more per consumer "
        "that is behind): the consumer gauges of `/metrics` and the console's lag charts "
        "are at most this old.",
        group=_METRICS,
        shown="15",
    )
    console: bool = _setting(
        "WINDSHIFT_CONSOLE",
        False,
        _flag,
        "`on`: serve the web console under `/console/` on `HEALTH_PORT`: streams, events, "
        "consumers with an hour of lag (sampled every `WINDSHIFT_SAMPLE_INTERVAL`), dead "
        "letters and state stores. With `WINDSHIFT_AUTH_FILE`, it is behind the same tokens "
        "as the API, and a token's permissions decide what it shows and allows "
        "(docs/console.md). `off`: `/console` is 404.",
        group=_CONSOLE,
        shown="off",
    )
    console_hosts: tuple[str, ...] = _setting(
        "WINDSHIFT_CONSOLE_HOSTS",
        (),
        _hostnames,
        "Host names the console answers to, separated by commas (the name in the browser's "
        "address bar), besides IP addresses and `localhost`. A request naming any other "
        "`Host` is refused, so that a web page cannot reach the console through a name it "
        "controls (DNS rebinding).",
        group=_CONSOLE,
        shown="unset",
    )
    console_descriptors: Path | None = _setting(
        "WINDSHIFT_CONSOLE_DESCRIPTORS",
        None,
        _descriptor_set,
        "A protobuf descriptor set (`protoc --include_imports --descriptor_set_out=FILE`): "
        "the console shows event data, dead letters and state values of its message types "
        "decoded, as JSON. Without it: JSON data and protobuf's well-known types only.",
        group=_CONSOLE,
    )
    development: bool = _setting(
        "DEVELOPMENT",
        False,
        _flag,
        "`true`: logs from DEBUG up, as readable lines. `false`: logs from INFO up, "
        "one JSON object per line, or readable lines when stderr is a terminal.",
        group=_SERVING,
    )
    rpc_log: str = _setting(
        "WINDSHIFT_RPC_LOG",
        "errors",
        _choice("calls", "errors"),
        "Which calls get a line of the `windshift_grpc.rpc` log at INFO. `errors`: only "
        "calls that end with a status other than OK; those that end OK are logged at "
        "DEBUG (shown with `DEVELOPMENT=true`), as the Go original does, which spares a "
        "busy server the cost of a line per call (docs/performance.md, The server path). "
        "`calls`: every call, at INFO.",
        group=_SERVING,
    )
    event_loop: str = _setting(
        "WINDSHIFT_EVENT_LOOP",
        "auto",
        _choice("auto", "asyncio", "uvloop"),
        "The event loop `serve` and each of its workers run on. `auto`: uvloop's where it "
        "is installed (with the `grpc` extra, except on Windows), Python's own otherwise. "
        "`uvloop`: uvloop's, or refuse to start without it. `asyncio`: Python's own. uvloop "
        "spends less CPU per call (docs/performance.md, The server path); the ready line of "
        "the log names the loop in use.",
        group=_SERVING,
    )
    data_dir: Path = _setting(
        "WINDSHIFT_DATA_DIR",
        Path(".windshift"),
        Path,
        "Directory where the embedded nats-server keeps its data (created when "
        "missing; it must be writable). The data survives restarts.",
        group=_EMBEDDED,
        shown="./.windshift",
    )
    embedded_nats_port: int = _setting(
        "WINDSHIFT_EMBEDDED_NATS_PORT",
        4222,
        _port,
        "TCP port of the embedded nats-server, on 127.0.0.1. When another program "
        "listens there, it takes a free port instead and the log says why.",
        group=_EMBEDDED,
    )
    auth_file: Path | None = _setting(
        "WINDSHIFT_AUTH_FILE",
        None,
        _file,
        "JSON or TOML file of API tokens and their permissions (docs/security.md). "
        "Set: every EventsService and StateService call needs the metadata "
        "`authorization: Bearer <token>`; `SIGHUP` reloads the file. "
        "Unset: see `WINDSHIFT_AUTH`.",
        group=_AUTH,
    )
    auth: str = _setting(
        "WINDSHIFT_AUTH",
        "auto",
        _choice("auto", "none"),
        "`auto`: require tokens when `WINDSHIFT_AUTH_FILE` is set; without it, serve "
        "without authentication (with a loud warning) only in `DEVELOPMENT` or on the "
        "embedded NATS (`NATS_URL` unset), and otherwise refuse to start unless "
        "`GRPC_TLS_CLIENT_CA` authenticates the clients. `none`: serve without "
        "authentication on purpose (also warned about).",
        group=_AUTH,
    )
    grpc_tls_cert: Path | None = _setting(
        "GRPC_TLS_CERT",
        None,
        _file,
        "PEM certificate (chain) of the gRPC port; with `GRPC_TLS_KEY` the port speaks "
        "TLS only. Unset: plaintext.",
        group=_TLS,
    )
    grpc_tls_key: Path | None = _setting(
        "GRPC_TLS_KEY",
        None,
        _file,
        "PEM private key of `GRPC_TLS_CERT` (not encrypted).",
        group=_TLS,
    )
    grpc_tls_client_ca: Path | None = _setting(
        "GRPC_TLS_CLIENT_CA",
        None,
        _file,
        "PEM CA certificate(s): clients must present a certificate signed by one "
        "(mutual TLS). Needs `GRPC_TLS_CERT` and `GRPC_TLS_KEY`.",
        group=_TLS,
    )
    nats_user: str | None = _setting(
        "NATS_USER",
        None,
        _text,
        "NATS user name, with `NATS_PASSWORD`. NATS takes one way of authenticating: "
        "a user and password, `NATS_TOKEN`, `NATS_CREDS` or `NATS_NKEY_SEED`.",
        group=_NATS,
        exact=True,
    )
    nats_password: str | None = _setting(
        "NATS_PASSWORD",
        None,
        _text,
        "NATS password, with `NATS_USER`. Never logged.",
        group=_NATS,
        secret=True,
    )
    nats_token: str | None = _setting(
        "NATS_TOKEN",
        None,
        _text,
        "NATS authentication token. Never logged.",
        group=_NATS,
        secret=True,
    )
    nats_creds: Path | None = _setting(
        "NATS_CREDS",
        None,
        _file,
        "NATS credentials file (`.creds`: user JWT and NKey seed), e.g. from `nsc`.",
        group=_NATS,
    )
    nats_nkey_seed: Path | None = _setting(
        "NATS_NKEY_SEED",
        None,
        _file,
        "File holding a NATS user NKey seed (`SU...`).",
        group=_NATS,
    )
    nats_tls_ca: Path | None = _setting(
        "NATS_TLS_CA",
        None,
        _file,
        "PEM CA certificate(s) to verify the NATS servers with (instead of the "
        "system's). TLS is used when the server requires it or `NATS_URL` says `tls://`.",
        group=_NATS,
    )
    nats_tls_cert: Path | None = _setting(
        "NATS_TLS_CERT",
        None,
        _file,
        "PEM client certificate for NATS servers that verify clients, with `NATS_TLS_KEY`.",
        group=_NATS,
    )
    nats_tls_key: Path | None = _setting(
        "NATS_TLS_KEY",
        None,
        _file,
        "PEM private key of `NATS_TLS_CERT` (not encrypted).",
        group=_NATS,
    )
    max_events_calls: int = _setting(
        "WINDSHIFT_MAX_EVENTS_CALLS",
        1000,
        _integer(1, 1_000_000),
        "How many Events calls one server serves at once; a further one ends "
        "`RESOURCE_EXHAUSTED` at once (clients retry later or on another replica). "
        "A call counts once its subscribe is accepted (valid token, consume "
        "permission, existing consumer).",
        group=_LIMITS,
    )
    max_events_calls_per_token: int = _setting(
        "WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN",
        100,
        _integer(1, 1_000_000),
        "How many of those one API token may hold at once (with `WINDSHIFT_AUTH_FILE`); "
        "a further one of the same token ends `RESOURCE_EXHAUSTED`.",
        group=_LIMITS,
    )
    events_first_message_timeout: float = _setting(
        "WINDSHIFT_EVENTS_FIRST_MESSAGE_TIMEOUT",
        5.0,
        _seconds(0.1, 3600),
        "Seconds an Events call may take to send its subscribe; later, it ends `INVALID_ARGUMENT`.",
        group=_LIMITS,
        shown="5",
    )
    events_max_ids_per_request: int = _setting(
        "WINDSHIFT_EVENTS_MAX_IDS_PER_REQUEST",
        10_000,
        _integer(1, 1_000_000),
        "How many ids one ack, reject or ping of an Events call may name (a call "
        "holds at most 10000 events); more end the call `INVALID_ARGUMENT`. Also how "
        "many ids a call's requests may name in all while they are settled or their "
        "confirmations wait to be sent: beyond, its requests are not read until the "
        "client reads its confirmations.",
        group=_LIMITS,
    )
    events_max_pending_bytes: int = _setting(
        "WINDSHIFT_EVENTS_MAX_PENDING_BYTES",
        4 * 1024 * 1024,
        _integer(1, 2**40),
        "Bytes of events (subject, headers and data) one Events call holds at most, "
        "sent or not, until they are settled; with `max_processing_events` whichever "
        "is reached first. A single larger event is still delivered, alone.",
        group=_LIMITS,
        shown="4194304 (4 MiB)",
    )
    nats_publish_async_max_pending: int = _setting(
        "NATS_PUBLISH_ASYNC_MAX_PENDING",
        256,
        _integer(1, 1_000_000),
        "How many publishes may await their JetStream acknowledgement at once (the "
        "publish pipeline's depth); further PublishEvent calls wait for a slot.",
        group=_LIMITS,
    )
    max_stream_subjects: int = _setting(
        "WINDSHIFT_MAX_STREAM_SUBJECTS",
        256,
        _integer(1, 1_000_000),
        "How many subjects one EnsureStream may give a stream; more is refused "
        "`INVALID_ARGUMENT`. nats-server checks a stream's subjects against each other "
        "in time that grows with the square of their number (docs/security.md).",
        group=_LIMITS,
    )
    max_stream_sources: int = _setting(
        "WINDSHIFT_MAX_STREAM_SOURCES",
        64,
        _integer(1, 1_000_000),
        "How many sources one aggregate stream may copy from (each is a consumer "
        "nats-server keeps running); more is refused `INVALID_ARGUMENT`.",
        group=_LIMITS,
    )
    max_filter_subjects: int = _setting(
        "WINDSHIFT_MAX_FILTER_SUBJECTS",
        256,
        _integer(1, 1_000_000),
        "How many subjects one consumer may read, and how many filter subjects a "
        "mirror, or all the sources of an aggregate together, may have; more is "
        "refused `INVALID_ARGUMENT`.",
        group=_LIMITS,
    )
    max_subject_length: int = _setting(
        "WINDSHIFT_MAX_SUBJECT_LENGTH",
        256,
        _integer(1, MAX_SUBJECT_LENGTH),
        "Characters in each subject of a stream, of a consumer and of a mirror's or "
        f"source's filter; longer is refused `INVALID_ARGUMENT` (at most {MAX_SUBJECT_LENGTH}, "
        "the bound of any subject or key).",
        group=_LIMITS,
    )
    max_subject_tokens: int = _setting(
        "WINDSHIFT_MAX_SUBJECT_TOKENS",
        16,
        _integer(1, MAX_SUBJECT_LENGTH // 2),
        "`.`-separated tokens in each subject of a stream, of a consumer and of a "
        "mirror's or source's filter; more is refused `INVALID_ARGUMENT`.",
        group=_LIMITS,
    )
    publish_events_max_events: int = _setting(
        "WINDSHIFT_PUBLISH_EVENTS_MAX_EVENTS",
        1000,
        _integer(1, 100_000),
        "How many events one PublishEvents call may carry; more are refused "
        "`INVALID_ARGUMENT` before anything is published. Their bytes are bounded "
        "by gRPC's 4 MiB per message as well.",
        group=_LIMITS,
    )
    dead_letter_page_bytes: int = _setting(
        "WINDSHIFT_DEAD_LETTER_PAGE_BYTES",
        1024 * 1024,
        _integer(64 * 1024, 64 * 1024 * 1024),
        "Most bytes of dead letters in one ListDeadLetters answer (well under the 4 MiB "
        "gRPC clients receive by default): a page ends before it would grow larger, so "
        "it may hold fewer letters than asked for while more follow (the end is an "
        "empty page). A single larger letter comes alone.",
        group=_LIMITS,
    )

    @property
    def production(self) -> bool:
        """An external NATS (``NATS_URL``) and not ``DEVELOPMENT``."""
        return self.nats_url is not None and not self.development

    @property
    def open_api_reason(self) -> str | None:
        """Why the API runs without any authentication, or None when it has one.

        Tokens (``WINDSHIFT_AUTH_FILE``) and client certificates
        (``GRPC_TLS_CLIENT_CA``) both authenticate callers.
        """
        if self.auth_file is not None or self.grpc_tls_client_ca is not None:
            return None
        if self.auth == "none":
            return "WINDSHIFT_AUTH=none"
        if self.development:
            return "DEVELOPMENT=true"
        return "embedded NATS, NATS_URL is unset"

    @property
    def grpc_bind(self) -> str:
        """The address the gRPC port listens on (``GRPC_HOST``, ``auto`` resolved)."""
        return self._bind(self.grpc_host)

    @property
    def health_bind(self) -> str:
        """The address the HTTP probes listen on (``HEALTH_HOST``, ``auto`` resolved)."""
        return self._bind(self.health_host)

    def _bind(self, host: str) -> str:
        if host != "auto":
            return host
        # An API anyone may call is for this machine alone, unless told otherwise.
        return "127.0.0.1" if self.open_api_reason is not None else "::"

    @property
    def nats_servers(self) -> list[str]:
        """``NATS_URL`` split into its URLs (empty without one)."""
        if not self.nats_url:
            return []
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (``os.environ`` by default).

        Raises:
            SettingsError: a value is malformed or out of range, or does not
                go with the others.
        """
        env = os.environ if env is None else env
        settings = cls(**{setting.attribute: setting.read(env) for setting in SETTINGS})
        settings._check()
        return settings

    def _check(self) -> None:
        """What no single value shows: pairs, contradictions, files that must load."""
        if self.grpc_port == self.health_port:
            raise SettingsError(
                "HEALTH_PORT", f"{self.health_port} is also GRPC_PORT; the two need different ports"
            )
        if self.nats_url is None:
            for other, port in (("GRPC_PORT", self.grpc_port), ("HEALTH_PORT", self.health_port)):
                if self.embedded_nats_port == port:
                    raise SettingsError(
                        "WINDSHIFT_EMBEDDED_NATS_PORT",
                        f"{port} is also {other}; the two need different ports",
                    )
            _check_data_dir(self.data_dir)
        if self.auth == "none" and self.auth_file is not None:
            raise SettingsError(
                "WINDSHIFT_AUTH", "'none' contradicts WINDSHIFT_AUTH_FILE; unset one of them"
            )
        self._check_server_tls()
        self._check_metrics()
        if (
            self.auth == "auto"
            and self.auth_file is None
            and self.grpc_tls_client_ca is None
            and self.production
        ):
            raise SettingsError(
                "WINDSHIFT_AUTH_FILE",
                "not set, and a production server (NATS_URL set, DEVELOPMENT not true) "
                "does not serve its API to anyone: set WINDSHIFT_AUTH_FILE to a tokens file "
                "(docs/security.md), or WINDSHIFT_AUTH=none to serve without authentication",
            )
        self._check_nats()

    def _check_metrics(self) -> None:
        """``/metrics`` and the console name every stream: never to callers the API would refuse."""
        if self.auth_file is not None or self.grpc_tls_client_ca is None:
            return
        # Client certificates protect the gRPC port only; the HTTP port has no TLS.
        if ipaddress.ip_address(self.health_bind).is_loopback:
            return
        if self.metrics:
            raise SettingsError(
                "WINDSHIFT_METRICS",
                "on, but /metrics would be open to anyone who reaches HEALTH_PORT, while the "
                "API requires client certificates (GRPC_TLS_CLIENT_CA), which the HTTP port "
                "does not check: set WINDSHIFT_AUTH_FILE (a token with the metrics permission "
                "reads /metrics) or HEALTH_HOST=127.0.0.1",
            )
        if self.console:
            raise SettingsError(
                "WINDSHIFT_CONSOLE",
                "on, but the console would be open to anyone who reaches HEALTH_PORT, while "
                "the API requires client certificates (GRPC_TLS_CLIENT_CA), which the HTTP "
                "port does not check: set WINDSHIFT_AUTH_FILE (the console then asks for a "
                "token) or HEALTH_HOST=127.0.0.1",
            )

    def _check_server_tls(self) -> None:
        """``GRPC_TLS_*``: checked by loading them as the server will."""
        cert, key = self.grpc_tls_cert, self.grpc_tls_key
        _pair(("GRPC_TLS_CERT", cert), ("GRPC_TLS_KEY", key))
        client_ca = self.grpc_tls_client_ca
        if client_ca is not None and cert is None:
            raise SettingsError(
                "GRPC_TLS_CLIENT_CA", "needs GRPC_TLS_CERT and GRPC_TLS_KEY (mutual TLS is TLS)"
            )
        if cert is not None and key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(cert, key, password=_no_password)
            except (ssl.SSLError, ValueError) as exc:
                raise SettingsError(
                    "GRPC_TLS_KEY",
                    f"{str(cert)!r} and {str(key)!r} are not a PEM certificate and its key ({exc})",
                ) from None
        if client_ca is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=client_ca)
            except ssl.SSLError as exc:
                raise SettingsError(
                    "GRPC_TLS_CLIENT_CA", f"{str(client_ca)!r} is not a PEM certificate ({exc})"
                ) from None

    def _check_nats(self) -> None:
        """``NATS_USER`` ... ``NATS_TLS_KEY``: one way of authenticating, only with NATS_URL."""
        _pair(("NATS_USER", self.nats_user), ("NATS_PASSWORD", self.nats_password))
        _pair(("NATS_TLS_CERT", self.nats_tls_cert), ("NATS_TLS_KEY", self.nats_tls_key))
        ways = [
            variable
            for variable, value in (
                ("NATS_USER", self.nats_user),
                ("NATS_TOKEN", self.nats_token),
                ("NATS_CREDS", self.nats_creds),
                ("NATS_NKEY_SEED", self.nats_nkey_seed),
            )
            if value is not None
        ]
        if len(ways) > 1:
            raise SettingsError(
                ways[1], f"{ways[0]} is set too; NATS takes one way of authenticating"
            )
        present = [
            *ways,
            *(["NATS_TLS_CA"] if self.nats_tls_ca is not None else []),
            *(["NATS_TLS_CERT"] if self.nats_tls_cert is not None else []),
        ]
        if present and self.nats_url is None:
            raise SettingsError(
                present[0], "only applies to the NATS of NATS_URL, which is not set (embedded NATS)"
            )
        try:
            self.nats_tls()
        except (ssl.SSLError, ValueError) as exc:
            name = "NATS_TLS_KEY" if self.nats_tls_cert is not None else "NATS_TLS_CA"
            raise SettingsError(name, f"cannot be loaded as PEM ({exc})") from None

    def nats_tls(self) -> ssl.SSLContext | None:
        """The TLS context for NATS from ``NATS_TLS_*``, or None (nats-py's default)."""
        ca, cert, key = self.nats_tls_ca, self.nats_tls_cert, self.nats_tls_key
        if ca is None and cert is None:
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca)
        )
        if cert is not None and key is not None:
            context.load_cert_chain(cert, key, password=_no_password)
        return context

    def limits(self) -> Limits:
        """The :class:`windshift.Limits` of ``WINDSHIFT_MAX_*``, for :func:`windshift.connect`."""
        return Limits(
            max_stream_subjects=self.max_stream_subjects,
            max_stream_sources=self.max_stream_sources,
            max_filter_subjects=self.max_filter_subjects,
            max_subject_length=self.max_subject_length,
            max_subject_tokens=self.max_subject_tokens,
        )

    def nats_options(self) -> dict[str, Any]:
        """The credentials and TLS keywords of :func:`windshift.connect` (only those set)."""
        options: dict[str, Any] = {
            "user": self.nats_user,
            "password": self.nats_password,
            "token": self.nats_token,
            "credentials_file": None if self.nats_creds is None else str(self.nats_creds),
            "nkey_seed_file": None if self.nats_nkey_seed is None else str(self.nats_nkey_seed),
            "tls": self.nats_tls(),
        }
        return {key: value for key, value in options.items() if value is not None}


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


#: Every setting, in the order ``--help`` and the docs list them.
SETTINGS: tuple[Setting[Any], ...] = tuple(
    Setting(
        variable=declared.variable,
        attribute=spec.name,
        default=spec.default,
        parse=declared.parse,
        help=declared.help,
        group=declared.group,
        shown_default=declared.shown_default or _shown(spec.default),
        exact=declared.exact,
    )
    for spec in fields(Settings)
    for declared in [spec.metadata[_METADATA]]
)


def _pair(first: tuple[str, object], second: tuple[str, object]) -> None:
    """Two settings that go together (a certificate and its key, a user and password)."""
    (one, one_value), (two, two_value) = first, second
    if (one_value is None) != (two_value is None):
        missing, given = (two, one) if two_value is None else (one, two)
        raise SettingsError(missing, f"not set, but {given} is; the two go together")


def _no_password() -> bytes:
    raise ValueError("encrypted private keys are not supported")


def _check_data_dir(path: Path) -> None:
    """``WINDSHIFT_DATA_DIR`` is, or can be made, a directory serve can write in."""
    name, shown = "WINDSHIFT_DATA_DIR", str(path)
    try:
        if path.exists():
            if not path.is_dir():
                raise SettingsError(name, f"{shown!r} is not a directory")
            if not os.access(path, os.W_OK | os.X_OK):
                raise SettingsError(name, f"{shown!r} is not writable")
            return
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
    except OSError as exc:
        raise SettingsError(name, f"{shown!r} cannot be used ({exc.strerror})") from None
    if not parent.is_dir():
        raise SettingsError(
            name, f"{shown!r} cannot be created: {str(parent)!r} is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SettingsError(name, f"{shown!r} cannot be created: {str(parent)!r} is not writable")


# --- the lists: --help and docs/grpc.md -----------------------------------------

#: After the list: the variables that are not windshift's own.
OTEL_NOTE = (
    "OpenTelemetry: the SDK (when installed) reads its own `OTEL_*` variables, "
    "e.g. `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`, `OTEL_EXPORTER_OTLP_ENDPOINT`, "
    "`OTEL_SERVICE_NAME` (default here: `windshift-grpc`); see docs/observability.md."
)


def _groups() -> list[tuple[str, list[Setting[Any]]]]:
    groups: dict[str, list[Setting[Any]]] = {}
    for setting in SETTINGS:
        groups.setdefault(setting.group, []).append(setting)
    return list(groups.items())


def _plain(text: str) -> str:
    return text.replace("`", "")


def describe() -> str:
    """The settings as text, for ``--help``."""
    lines = ["environment variables (a bad value stops serve at once, with exit code 2):"]
    for group, settings in _groups():
        lines += ["", f"{_plain(group)}:"]
        for setting in settings:
            lines.append(f"  {setting.variable} (default: {setting.shown_default})")
            lines += textwrap.wrap(
                _plain(setting.help),
                79,
                initial_indent=" " * 6,
                subsequent_indent=" " * 6,
                break_on_hyphens=False,
            )
    lines += ["", *textwrap.wrap(_plain(OTEL_NOTE), 79, break_on_hyphens=False)]
    return "\n".join(lines)


MARKDOWN_BEGIN = (
    "<!-- settings: generated from windshift_grpc/settings.py by "
    "`python -m windshift_grpc.settings --update docs/grpc.md`; edit them there -->"
)
MARKDOWN_END = "<!-- end of settings -->"


def _markdown_text(text: str) -> str:
    """Help text for a table cell: docs/ paths become links (the tables are in docs/)."""
    text = text.replace("|", "\\|")
    return re.sub(r"\bdocs/([\w-]+\.md)", r"[\1](\1)", text)


def markdown() -> str:
    """The settings tables of docs/grpc.md, between :data:`MARKDOWN_BEGIN` and ``_END``."""
    lines = [MARKDOWN_BEGIN]
    for group, settings in _groups():
        lines += ["", f"**{_markdown_text(group)}**", ""]
        lines += ["| Variable | Default | Meaning |", "|---|---|---|"]
        for setting in settings:
            default = "unset" if setting.default is None else f"`{setting.shown_default}`"
            lines.append(f"| `{setting.variable}` | {default} | {_markdown_text(setting.help)} |")
    lines += ["", _markdown_text(OTEL_NOTE), "", MARKDOWN_END]
    return "\n".join(lines)


def documented(document: str) -> str:
    """The settings tables in ``document`` (a markdown text), markers included.

    Raises:
        ValueError: the markers are missing.
    """
    begin, end = document.find(MARKDOWN_BEGIN), document.find(MARKDOWN_END)
    if begin < 0 or end < begin:
        raise ValueError("no generated settings tables (their markers are missing)")
    return document[begin : end + len(MARKDOWN_END)]


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m windshift_grpc.settings",
        description="Print or update the settings tables of docs/grpc.md.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--markdown", action="store_true", help="print the tables")
    what.add_argument(
        "--update", metavar="FILE", type=Path, help="rewrite the tables in FILE in place"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown())
        return 0
    document = args.update.read_text()
    try:
        old = documented(document)
    except ValueError as exc:
        print(f"{args.update}: {exc}", file=sys.stderr)
        return 1
    args.update.write_text(document.replace(old, markdown()))
    return 0


__all__ = [
    "SETTINGS",
    "WORKERS_PER_CORE",
    "Setting",
    "Settings",
    "SettingsError",
    "cpu_count",
    "describe",
    "descriptor_pool_of",
    "markdown",
]

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
