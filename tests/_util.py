"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio

from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift import Event


async def publish_many(client: windshift.Client, subject: str, count: int) -> list[int]:
    """Publish ``count`` StringValue events one by one and return their ids."""
    return [
        (await client.publish(subject, StringValue(value=f"{subject}#{i}"))).id
        for i in range(count)
    ]


async def take(events: windshift.Subscription, count: int, timeout: float = 10) -> list[Event]:
    """The next ``count`` events of a subscription (fails after ``timeout`` seconds)."""

    async def collect() -> list[Event]:
        return [await anext(events) for _ in range(count)]

    return await asyncio.wait_for(collect(), timeout)


def text(event: Event) -> str:
    return event.unpack(StringValue).value
