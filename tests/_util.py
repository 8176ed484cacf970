"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


async def run_command(*command: str, cwd: str | Path, timeout: float) -> tuple[int, str, str]:
    """Run ``command`` in ``cwd`` to its end: its exit code, stdout and stderr (fails after ``timeout``)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=str(cwd),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{command} did not finish within {timeout}s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
