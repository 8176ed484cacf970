"""Refusing a client-streaming call so that the client sees the refusal's status.

grpcio's asyncio client (1.85 and earlier; grpc/grpc#36066) reports
``INTERNAL: Internal error from Core`` instead of the server's status when one
of its message writes fails because the server already ended the call. A
server that refuses an ``Events`` call before reading anything races the
client's first write (its Subscribe) and loses now and then. Reading that first
message before answering removes the race for a client that waits for
``Subscribed`` before sending more, which every client of ``Events`` does.

Example:
    >>> requests = RequestStream(request_iterator)
    >>> ...  # hand ``requests`` to the handler; on an early refusal:
    >>> await requests.read_first()
    >>> await context.abort(code, message)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import grpc

T = TypeVar("T")

FIRST_MESSAGE_WAIT = 1.0
"""Seconds a refusal waits at most for the first message before answering."""


class RequestStream(Generic[T], AsyncIterator[T]):
    """A client's request stream that knows whether it has been read from."""

    def __init__(self, requests: AsyncIterator[T]) -> None:
        self._requests = requests
        self.started = False

    def __aiter__(self) -> RequestStream[T]:
        return self

    async def __anext__(self) -> T:
        self.started = True
        return await anext(self._requests)

    async def read_first(self) -> None:
        """Read (and drop) the first message unless some was read already.

        Waits at most :data:`FIRST_MESSAGE_WAIT` seconds; whatever reading it
        raises is ignored, as the call is being refused anyway.
        """
        if self.started:
            return
        self.started = True
        try:
            async with asyncio.timeout(FIRST_MESSAGE_WAIT):
                await anext(self._requests)
        except grpc.aio.AbortError:
            raise
        except Exception:
            pass  # the refusal is the answer


__all__ = ["FIRST_MESSAGE_WAIT", "RequestStream"]
