"""TLS and mutual TLS on the gRPC port, with certificates the tests create (``_pki``)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests._pki import Pki
from tests.grpc_fixtures import StartServe, serve_command, serve_env
from windshift import EmbeddedNats
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.auth import hashed
from windshift_grpc.settings import Settings, SettingsError

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

# Handshakes that fail surface as UNAVAILABLE; do not wait for reconnects.
_QUICK = 5.0


def credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=None if key is None else key.read_bytes(),
        certificate_chain=None if cert is None else cert.read_bytes(),
    )


@asynccontextmanager
async def tls_channel(
    target: str, ca: Path, cert: Path | None = None, key: Path | None = None
) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.secure_channel(target, credentials(ca, cert, key)) as channel:
        yield channel


def stream_request(name: str) -> pb.EnsureStreamRequest:
    return pb.EnsureStreamRequest(
        name=name, subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{name}.>"])
    )


async def code_of(
    channel: grpc.aio.Channel, name: str, token: str | None = None
) -> grpc.StatusCode:
    stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
    md = None if token is None else [("authorization", f"Bearer {token}")]
    try:
        await stub.EnsureStream(stream_request(name), metadata=md, timeout=_QUICK)
    except grpc.aio.AioRpcError as failure:
        return failure.code()
    return grpc.StatusCode.OK


async def test_tls_with_tokens(
    start_serve: StartServe, pki: Pki, tmp_path: Path, name: str
) -> None:
    token = secrets.token_urlsafe(24)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\nname = "ci"\ntoken = "{hashed(token)}"\nmanage = [">"]\npublish = [">"]\n'
    )
    server = await start_serve(
        GRPC_TLS_CERT=str(pki.server_cert),
        GRPC_TLS_KEY=str(pki.server_key),
        WINDSHIFT_AUTH_FILE=str(tokens),
    )
    assert f"gRPC on port {server.grpc_port} (TLS, " in await server.wait_for_line("ready")
    async with tls_channel(server.target, pki.ca) as channel:
        assert await code_of(channel, name, token) == grpc.StatusCode.OK
        assert await code_of(channel, name) == grpc.StatusCode.UNAUTHENTICATED
    # Plaintext, or a server certificate the client does not trust: no connection.
    async with grpc.aio.insecure_channel(server.target) as channel:
        assert await code_of(channel, name, token) == grpc.StatusCode.UNAVAILABLE
    async with tls_channel(server.target, pki.directory / "rogue-ca.crt") as channel:
        assert await code_of(channel, name, token) == grpc.StatusCode.UNAVAILABLE
    assert "tokens travel unencrypted" not in server.log


async def test_tokens_without_tls_in_production_are_warned_about(
    start_serve: StartServe, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "a", "token": secrets.token_hex(16)}]}))
    tokens.chmod(0o600)  # it holds a plain token
    server = await start_serve(WINDSHIFT_AUTH_FILE=str(tokens))
    assert "(plaintext, " in await server.wait_for_line("ready")
    line = await server.wait_for_line("tokens travel unencrypted")
    assert json.loads(line)["level"] == "warning"


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    start_serve: StartServe, pki: Pki, name: str
) -> None:
    # A production server (NATS_URL set) without a tokens file may start:
    # the client certificates authenticate the callers.
    server = await start_serve(
        WINDSHIFT_AUTH=None,
        GRPC_TLS_CERT=str(pki.server_cert),
        GRPC_TLS_KEY=str(pki.server_key),
        GRPC_TLS_CLIENT_CA=str(pki.ca),
    )
    assert "(mutual TLS, " in await server.wait_for_line("ready")
    await server.wait_for_line("authenticated by their client certificates")
    assert "AUTHENTICATION IS OFF" not in server.log

    async with tls_channel(server.target, pki.ca, pki.client_cert, pki.client_key) as channel:
        assert await code_of(channel, name) == grpc.StatusCode.OK
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    async with tls_channel(server.target, pki.ca) as channel:  # no client certificate
        assert await code_of(channel, name) == grpc.StatusCode.UNAVAILABLE
    async with tls_channel(server.target, pki.ca, pki.rogue_cert, pki.rogue_key) as channel:
        assert await code_of(channel, name) == grpc.StatusCode.UNAVAILABLE


def test_tls_settings(pki: Pki) -> None:
    settings = Settings.from_env(
        {
            "GRPC_TLS_CERT": str(pki.server_cert),
            "GRPC_TLS_KEY": str(pki.server_key),
            "GRPC_TLS_CLIENT_CA": str(pki.ca),
        }
    )
    assert (settings.grpc_tls_cert, settings.grpc_tls_key) == (pki.server_cert, pki.server_key)
    assert settings.grpc_tls_client_ca == pki.ca
    cases = [
        ({"GRPC_TLS_CERT": str(pki.server_cert)}, "GRPC_TLS_KEY", "go together"),
        ({"GRPC_TLS_KEY": str(pki.server_key)}, "GRPC_TLS_CERT", "go together"),
        (
            {"GRPC_TLS_CERT": str(pki.server_cert), "GRPC_TLS_KEY": str(pki.client_key)},
            "GRPC_TLS_KEY",
            "not a PEM certificate and its key",
        ),
        ({"GRPC_TLS_CLIENT_CA": str(pki.ca)}, "GRPC_TLS_CLIENT_CA", "needs GRPC_TLS_CERT"),
        (
            {
                "GRPC_TLS_CERT": str(pki.server_cert),
                "GRPC_TLS_KEY": str(pki.server_key),
                "GRPC_TLS_CLIENT_CA": str(pki.directory / "ca.key"),
            },
            "GRPC_TLS_CLIENT_CA",
            "not a PEM certificate",
        ),
        ({"GRPC_TLS_CERT": str(pki.directory / "nope.crt")}, "GRPC_TLS_CERT", "not a file"),
    ]
    for env, variable, complaint in cases:
        with pytest.raises(SettingsError) as error:
            Settings.from_env(env)
        assert error.value.name == variable, env
        assert complaint in str(error.value), env


async def test_a_bad_certificate_stops_serve_with_one_line(
    nats_server: EmbeddedNats, pki: Pki
) -> None:

    env = serve_env(
        nats_server.url, GRPC_TLS_CERT=str(pki.server_cert), GRPC_TLS_KEY=str(pki.client_key)
    )
    process = await asyncio.create_subprocess_exec(
        *serve_command(),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err
    assert "GRPC_TLS_KEY" in lines[0]
    assert out == b""
