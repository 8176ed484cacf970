"""In a three-node cluster, a subscription survives the death of a node."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._cluster import ensure_replicated_stream, nats_cluster, stream_leader
from windshift import StreamPointer
from windshift.errors import WindshiftError


async def _publish_until_stored(client: windshift.Client, subject: str, key: str) -> int:
    while True:
        try:
            published = await client.publish(subject, StringValue(value=key), idempotency_key=key)
            return published.id
        except WindshiftError:
            await asyncio.sleep(0.05)


async def test_subscription_survives_killing_the_stream_leader(tmp_path: Path) -> None:
    async with nats_cluster(tmp_path) as nodes:
        urls = [node.url for node in nodes]
        async with windshift.connect(urls, request_timeout=timedelta(seconds=2)) as client:
            await ensure_replicated_stream(client, "orders", ["orders.>"])
            consumer = await client.ensure_consumer("orders", "worker", start=StreamPointer.start())
            leader = await stream_leader(client, "orders")
            victim = next(node for node in nodes if node.server_name == leader)

            total = 300
            published: list[int] = []
            received: set[int] = set()
            done = asyncio.Event()

            async def subscriber() -> None:
                async with client.subscribe("orders", consumer.id) as events:
                    async for event in events:
                        received.add(event.id)
                        await event.ack()
                        if len(published) == total and received >= set(published):
                            done.set()
                            return

            task = asyncio.create_task(subscriber())
            for i in range(total):
                if i == total // 2:
                    await victim.kill()
                published.append(await _publish_until_stored(client, "orders.a", f"k{i}"))
            await asyncio.wait_for(done.wait(), 60)
            await task
            assert received == set(published)
            assert len(set(published)) == total
            assert await stream_leader(client, "orders") != leader
