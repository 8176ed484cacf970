"""Exposure: where serve listens. An API that needs no token is for this machine alone.

Each test reads the kernel's own table of listening sockets (/proc/net/tcp and
tcp6) for the serve process's ports: what address it really bound, not what
its log says.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from pathlib import Path

import pytest

from tests.grpc_fixtures import StartServe, run_command, serve_command, serve_env
from windshift import EmbeddedNats

_LISTEN = "0A"


def listening_on(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port``, as the kernel lists them."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.partition(":")
            if state != _LISTEN or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # The kernel writes each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(words if width == 32 else words[:4])
            mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4's loopback
            found.add(str(mapped or ip))
    return found


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "svc", "token": secrets.token_urlsafe(24)}]}))
    path.chmod(0o600)
    return path


async def test_an_open_api_listens_on_loopback_alone(
    start_serve: StartServe, nats_server: EmbeddedNats
) -> None:
    # Before: gRPC and the probes listened on every interface, tokens or not.
    server = await start_serve()  # WINDSHIFT_AUTH=none: anyone who reaches it may do anything
    assert listening_on(server.grpc_port) == {"127.0.0.1"}
    assert listening_on(server.health_port) == {"127.0.0.1"}
    assert "gRPC on port" in server.log and "on 127.0.0.1 only" in server.log


async def test_a_server_with_tokens_listens_on_every_interface(
    start_serve: StartServe, nats_server: EmbeddedNats, tokens_file: Path
) -> None:
    server = await start_serve(WINDSHIFT_AUTH_FILE=str(tokens_file))
    assert listening_on(server.grpc_port) == {"::"}  # IPv6 and IPv4, dual stack
    assert listening_on(server.health_port) <= {"::", "0.0.0.0"}
    assert listening_on(server.health_port)


async def test_the_addresses_can_be_set(start_serve: StartServe, nats_server: EmbeddedNats) -> None:
    # An open API on purpose, published by a gateway or a container's port mapping.
    server = await start_serve(GRPC_HOST="0.0.0.0", HEALTH_HOST="127.0.0.1")
    assert listening_on(server.grpc_port) in ({"0.0.0.0"}, {"::"})  # gRPC: every interface
    assert listening_on(server.health_port) == {"127.0.0.1"}


async def test_a_bad_address_names_the_setting(nats_server: EmbeddedNats) -> None:
    code, _, err = await run_command(
        *serve_command(), env=serve_env(nats_server.url, GRPC_HOST="everywhere")
    )
    assert code == 2
    assert "invalid GRPC_HOST: 'everywhere' is not an IP address" in err
