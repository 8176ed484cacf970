"""The settings of ``windshift-grpc serve``, read from environment variables.

Example:
    >>> settings = Settings.from_env({"NATS_URL": "nats://nats:4222", "GRPC_PORT": "9090"})
    >>> settings.grpc_port
    9090

Every variable, its default and meaning is listed in :data:`SETTINGS` (which
``windshift-grpc serve --help`` prints). A bad value raises
:class:`SettingsError`, whose message is one line naming the variable.
"""

from __future__ import annotations

import os
import ssl
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

#: (variable, default as shown, meaning), in the order ``--help`` lists them.
SETTINGS: tuple[tuple[str, str, str], ...] = (
    (
        "NATS_URL",
        "(unset)",
        "NATS server(s) to use, e.g. nats://nats:4222; several separated by commas. "
        "Unset: start an embedded nats-server with JetStream, keeping its data in "
        "WINDSHIFT_DATA_DIR.",
    ),
    ("GRPC_PORT", "8080", "TCP port of the gRPC API (all interfaces)."),
    ("HEALTH_PORT", "8088", "TCP port of the HTTP probes /healthz and /readyz."),
    (
        "DEVELOPMENT",
        "false",
        "true: human-readable DEBUG logs; false: one JSON object per log line at INFO.",
    ),
    (
        "WINDSHIFT_MAX_EVENTS_CALLS",
        "1000",
        "How many Events calls may be open at once; beyond it a new one is answered "
        "RESOURCE_EXHAUSTED.",
    ),
    (
        "NATS_PUBLISH_ASYNC_MAX_PENDING",
        "256",
        "How many publishes may await their JetStream acknowledgement at once.",
    ),
    (
        "WINDSHIFT_DATA_DIR",
        "./.windshift",
        "Where the embedded nats-server keeps its data (only without NATS_URL).",
    ),
    (
        "WINDSHIFT_AUTH_FILE",
        "(unset)",
        "A JSON or TOML file of API tokens and their permissions (docs/security.md). "
        "Set: every EventsService and StateService call needs the metadata "
        "'authorization: Bearer <token>'. Unset: see WINDSHIFT_AUTH.",
    ),
    (
        "WINDSHIFT_AUTH",
        "auto",
        "auto: require tokens when WINDSHIFT_AUTH_FILE is set; without it, serve "
        "without authentication (with a loud warning) only in DEVELOPMENT or on the "
        "embedded NATS (NATS_URL unset), and otherwise refuse to start unless "
        "GRPC_TLS_CLIENT_CA authenticates the clients. none: serve without "
        "authentication on purpose (also warned about).",
    ),
    (
        "GRPC_TLS_CERT",
        "(unset)",
        "PEM certificate (chain) of the gRPC port; with GRPC_TLS_KEY the port speaks "
        "TLS only. Unset: plaintext.",
    ),
    ("GRPC_TLS_KEY", "(unset)", "PEM private key of GRPC_TLS_CERT (not encrypted)."),
    (
        "GRPC_TLS_CLIENT_CA",
        "(unset)",
        "PEM CA certificate(s): clients must present a certificate signed by one "
        "(mutual TLS). Needs GRPC_TLS_CERT and GRPC_TLS_KEY.",
    ),
    ("NATS_USER", "(unset)", "NATS user name, with NATS_PASSWORD."),
    ("NATS_PASSWORD", "(unset)", "NATS password, with NATS_USER. Never logged."),
    ("NATS_TOKEN", "(unset)", "NATS authentication token. Never logged."),
    (
        "NATS_CREDS",
        "(unset)",
        "NATS credentials file (.creds: user JWT and NKey seed), e.g. from nsc.",
    ),
    ("NATS_NKEY_SEED", "(unset)", "File holding a NATS user NKey seed (SU...)."),
    (
        "NATS_TLS_CA",
        "(unset)",
        "PEM CA certificate(s) to verify the NATS servers with (instead of the "
        "system's). TLS is used when the server requires it or NATS_URL says tls://.",
    ),
    (
        "NATS_TLS_CERT",
        "(unset)",
        "PEM client certificate for NATS servers that verify clients, with NATS_TLS_KEY.",
    ),
    ("NATS_TLS_KEY", "(unset)", "PEM private key of NATS_TLS_CERT (not encrypted)."),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "(unset)",
        "Send traces and metrics there over OTLP (needs opentelemetry-sdk and an OTLP "
        "exporter installed). Unset: tracing only propagates context and metrics are not "
        "exported. The other standard OTEL_EXPORTER_OTLP_* variables (also the "
        "_TRACES_ and _METRICS_ ones) apply as usual.",
    ),
    (
        "OTEL_TRACES_EXPORTER",
        "otlp",
        "otlp, console (spans as JSON lines on stdout) or none.",
    ),
    # metrics (docs/observability.md)
    (
        "OTEL_METRICS_EXPORTER",
        "otlp",
        "otlp, console (metrics as JSON lines on stdout) or none.",
    ),
    (
        "OTEL_METRIC_EXPORT_INTERVAL",
        "60000",
        "Milliseconds between two metric exports.",
    ),
    ("OTEL_SERVICE_NAME", "windshift-grpc", "service.name of the spans and metrics."),
    ("OTEL_SDK_DISABLED", "false", "true: never configure the OpenTelemetry SDK."),
)


class SettingsError(ValueError):
    """A setting has a value that cannot be used.

    Attributes:
        name: the environment variable.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"invalid {name}: {message}")
        self.name = name


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``windshift-grpc serve`` can be told (see :data:`SETTINGS`)."""

    nats_url: str | None = None
    grpc_port: int = 8080
    health_port: int = 8088
    development: bool = False
    nats_publish_async_max_pending: int = 256
    max_events_calls: int = 1000
    data_dir: Path = Path(".windshift")
    otel_exporter_otlp_endpoint: str | None = None
    otel_traces_exporter: str = "otlp"
    otel_service_name: str = "windshift-grpc"
    otel_sdk_disabled: bool = False
    # metrics (docs/observability.md)
    otel_metrics_exporter: str = "otlp"
    otel_exporter_otlp_metrics_endpoint: str | None = None
    otel_metric_export_interval: int = 60_000
    auth_file: Path | None = None
    auth: str = "auto"
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    grpc_tls_client_ca: Path | None = None
    nats_user: str | None = None
    nats_password: str | None = field(default=None, repr=False)
    nats_token: str | None = field(default=None, repr=False)
    nats_creds: Path | None = None
    nats_nkey_seed: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None

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
    def nats_servers(self) -> list[str]:
        """``NATS_URL`` split into its URLs (empty without one)."""
        if not self.nats_url:
            return []
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (``os.environ`` by default).

        Raises:
            SettingsError: a value is malformed or out of range.
        """
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        nats_url = text("NATS_URL")
        if nats_url is not None:
            for url in nats_url.split(","):
                url = url.strip()
                scheme, sep, rest = url.partition("://")
                if not sep or scheme not in ("nats", "tls", "ws", "wss") or not rest:
                    raise SettingsError(
                        "NATS_URL",
                        f"{url!r} is not a NATS URL (expected e.g. nats://host:4222)",
                    )
        grpc_port = _port(env, "GRPC_PORT", 8080)
        health_port = _port(env, "HEALTH_PORT", 8088)
        if grpc_port == health_port:
            raise SettingsError(
                "HEALTH_PORT", f"{health_port} is also GRPC_PORT; the two need different ports"
            )
        max_pending = _integer(env, "NATS_PUBLISH_ASYNC_MAX_PENDING", 256, 1, 1_000_000)
        exporter = (text("OTEL_TRACES_EXPORTER") or "otlp").lower()
        if exporter not in ("otlp", "console", "none"):
            raise SettingsError(
                "OTEL_TRACES_EXPORTER", f"{exporter!r} is not one of otlp, console, none"
            )
        # metrics (docs/observability.md)
        metrics_exporter = (text("OTEL_METRICS_EXPORTER") or "otlp").lower()
        if metrics_exporter not in ("otlp", "console", "none"):
            raise SettingsError(
                "OTEL_METRICS_EXPORTER", f"{metrics_exporter!r} is not one of otlp, console, none"
            )
        metric_interval = _integer(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000, 1, 86_400_000)
        development = _flag(env, "DEVELOPMENT")
        auth = (text("WINDSHIFT_AUTH") or "auto").lower()
        if auth not in ("auto", "none"):
            raise SettingsError("WINDSHIFT_AUTH", f"{auth!r} is not one of auto, none")
        auth_file = _file(env, "WINDSHIFT_AUTH_FILE")
        if auth == "none" and auth_file is not None:
            raise SettingsError(
                "WINDSHIFT_AUTH", "'none' contradicts WINDSHIFT_AUTH_FILE; unset one of them"
            )
        tls_cert, tls_key, client_ca = _server_tls(env)
        if (
            auth == "auto"
            and auth_file is None
            and client_ca is None
            and nats_url is not None
            and not development
        ):
            raise SettingsError(
                "WINDSHIFT_AUTH_FILE",
                "not set, and a production server (NATS_URL set, DEVELOPMENT not true) "
                "does not serve its API to anyone: set WINDSHIFT_AUTH_FILE to a tokens file "
                "(docs/security.md), or WINDSHIFT_AUTH=none to serve without authentication",
            )
        nats = _nats_credentials(env, external=nats_url is not None)
        return cls(
            nats_url=nats_url,
            grpc_port=grpc_port,
            health_port=health_port,
            development=development,
            nats_publish_async_max_pending=max_pending,
            max_events_calls=_integer(env, "WINDSHIFT_MAX_EVENTS_CALLS", 1000, 1, 1_000_000),
            data_dir=Path(text("WINDSHIFT_DATA_DIR") or ".windshift"),
            otel_exporter_otlp_endpoint=text("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or text("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otel_traces_exporter=exporter,
            otel_service_name=text("OTEL_SERVICE_NAME") or "windshift-grpc",
            otel_sdk_disabled=_flag(env, "OTEL_SDK_DISABLED"),
            otel_metrics_exporter=metrics_exporter,
            otel_exporter_otlp_metrics_endpoint=text("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            or text("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otel_metric_export_interval=metric_interval,
            auth_file=auth_file,
            auth=auth,
            grpc_tls_cert=tls_cert,
            grpc_tls_key=tls_key,
            grpc_tls_client_ca=client_ca,
            **nats,
        )

    def nats_tls(self) -> ssl.SSLContext | None:
        """The TLS context for NATS from ``NATS_TLS_*``, or None (nats-py's default)."""
        return _nats_tls(self.nats_tls_ca, self.nats_tls_cert, self.nats_tls_key)

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


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(name, f"{raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(name, f"{value} is not between {low} and {high}")
    return value


def _file(env: Mapping[str, str], name: str) -> Path | None:
    """A setting naming a file that must exist and be readable."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise SettingsError(name, f"{raw!r} is not a file")
    if not os.access(path, os.R_OK):
        raise SettingsError(name, f"{raw!r} cannot be read")
    return path


def _pair(env: Mapping[str, str], first: str, second: str) -> tuple[Path | None, Path | None]:
    """Two file settings that go together (a certificate and its key)."""
    one, two = _file(env, first), _file(env, second)
    if (one is None) != (two is None):
        missing = second if two is None else first
        given = first if two is None else second
        raise SettingsError(missing, f"not set, but {given} is; the two go together")
    return one, two


def _no_password() -> bytes:
    raise ValueError("encrypted private keys are not supported")


def _server_tls(env: Mapping[str, str]) -> tuple[Path | None, Path | None, Path | None]:
    """``GRPC_TLS_*``: checked by loading them as the server will."""
    cert, key = _pair(env, "GRPC_TLS_CERT", "GRPC_TLS_KEY")
    client_ca = _file(env, "GRPC_TLS_CLIENT_CA")
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
    return cert, key, client_ca


def _nats_tls(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if ca is None and cert is None:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca)
    )
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key, password=_no_password)
    return context


_NATS_SECRETS = ("NATS_USER", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY_SEED")


def _nats_credentials(env: Mapping[str, str], *, external: bool) -> dict[str, Any]:
    """``NATS_USER`` ... ``NATS_TLS_KEY``, checked; keyword arguments of :class:`Settings`."""

    def secret(name: str) -> str | None:
        value = env.get(name)
        return value if value else None  # secrets are taken as they are, spaces included

    user, password = secret("NATS_USER"), secret("NATS_PASSWORD")
    if (user is None) != (password is None):
        missing = "NATS_PASSWORD" if password is None else "NATS_USER"
        given = "NATS_USER" if password is None else "NATS_PASSWORD"
        raise SettingsError(missing, f"not set, but {given} is; the two go together")
    options: dict[str, Any] = {
        "nats_user": user,
        "nats_password": password,
        "nats_token": secret("NATS_TOKEN"),
        "nats_creds": _file(env, "NATS_CREDS"),
        "nats_nkey_seed": _file(env, "NATS_NKEY_SEED"),
        "nats_tls_ca": _file(env, "NATS_TLS_CA"),
    }
    options["nats_tls_cert"], options["nats_tls_key"] = _pair(env, "NATS_TLS_CERT", "NATS_TLS_KEY")
    methods = [
        variable
        for variable, value in zip(
            _NATS_SECRETS,
            (user, options["nats_token"], options["nats_creds"], options["nats_nkey_seed"]),
            strict=True,
        )
        if value is not None
    ]
    if len(methods) > 1:
        raise SettingsError(
            methods[1], f"{methods[0]} is set too; NATS takes one way of authenticating"
        )
    present = [
        variable
        for variable in (*_NATS_SECRETS, "NATS_TLS_CA", "NATS_TLS_CERT")
        if env.get(variable, "").strip()
    ]
    if present and not external:
        raise SettingsError(
            present[0], "only applies to the NATS of NATS_URL, which is not set (embedded NATS)"
        )
    try:
        _nats_tls(options["nats_tls_ca"], options["nats_tls_cert"], options["nats_tls_key"])
    except (ssl.SSLError, ValueError) as exc:
        name = "NATS_TLS_KEY" if options["nats_tls_cert"] is not None else "NATS_TLS_CA"
        raise SettingsError(name, f"cannot be loaded as PEM ({exc})") from None
    return options


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    return _integer(env, name, default, 1, 65535)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(name, f"{env[name]!r} is not true or false")


def describe() -> str:
    """The settings as a text table, for ``--help``."""
    lines = ["environment variables:"]
    for name, default, meaning in SETTINGS:
        lines.append(f"  {name} (default: {default})")
        lines.extend(textwrap.wrap(meaning, 76, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


__all__ = ["SETTINGS", "Settings", "SettingsError", "describe"]
