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
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "(unset)",
        "Send traces there over OTLP (needs opentelemetry-sdk and an OTLP exporter "
        "installed). Unset: tracing only propagates context. The other standard "
        "OTEL_EXPORTER_OTLP_* variables apply as usual.",
    ),
    (
        "OTEL_TRACES_EXPORTER",
        "otlp",
        "otlp, console (spans as JSON lines on stdout) or none.",
    ),
    ("OTEL_SERVICE_NAME", "windshift-grpc", "service.name of the spans."),
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
    data_dir: Path = Path(".windshift")
    otel_exporter_otlp_endpoint: str | None = None
    otel_traces_exporter: str = "otlp"
    otel_service_name: str = "windshift-grpc"
    otel_sdk_disabled: bool = False

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
        return cls(
            nats_url=nats_url,
            grpc_port=grpc_port,
            health_port=health_port,
            development=_flag(env, "DEVELOPMENT"),
            nats_publish_async_max_pending=max_pending,
            data_dir=Path(text("WINDSHIFT_DATA_DIR") or ".windshift"),
            otel_exporter_otlp_endpoint=text("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or text("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otel_traces_exporter=exporter,
            otel_service_name=text("OTEL_SERVICE_NAME") or "windshift-grpc",
            otel_sdk_disabled=_flag(env, "OTEL_SDK_DISABLED"),
        )


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
