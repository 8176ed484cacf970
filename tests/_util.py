"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift import Event

T = TypeVar("T")


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


class Background:
    """Tasks a test starts and must not outlive (the ``background`` fixture).

    The tests share one event loop, so a task a failed test left running
    (a publisher retrying against a closed client, say) would go on into
    the tests after it. Whatever is still running at teardown is cancelled
    and awaited.
    """

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        return task

    async def cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
