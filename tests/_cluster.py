"""A three-node JetStream cluster on loopback, for tests that kill nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import windshift
from windshift._embedded import EmbeddedNats, free_port
from windshift.errors import WindshiftError


@asynccontextmanager
async def nats_cluster(root: Path, size: int = 3) -> AsyncIterator[list[EmbeddedNats]]:
    """Start ``size`` routed nats-servers with JetStream, each with its own store."""
    cluster_ports = [free_port() for _ in range(size)]
    routes = [f"nats-route://127.0.0.1:{port}" for port in cluster_ports]
    nodes = [
        EmbeddedNats(
            store_dir=root / f"n{i}",
            server_name=f"n{i}",
            cluster_port=cluster_ports[i],
            routes=[route for j, route in enumerate(routes) if j != i],
        )
        for i in range(size)
    ]
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)


async def ensure_replicated_stream(
    client: windshift.Client, name: str, subjects: list[str], *, timeout: float = 30
) -> None:
    """Create a 3-replica stream, waiting while the cluster elects its leaders."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await client.ensure_stream(name, subjects=subjects, replicas=3)
            return
        except WindshiftError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def stream_leader(client: windshift.Client, name: str) -> str:
    """The server name of the stream's current leader."""
    answer = await client._connection.api.request(f"STREAM.INFO.{name}")
    return str(answer["cluster"]["leader"])
