"""Admission of calls: counted while they run, refused with UNAVAILABLE once the server drains.

A graceful stop drains before it stops the gRPC server: calls already
running finish, and calls that arrive meanwhile (including those a busy
client had already sent) are answered UNAVAILABLE, which clients retry
against another instance, instead of being cut off as CANCELLED by the
transport. See :meth:`Admission.drain`.
"""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("windshift_grpc.admission")

REFUSAL = "windshift-grpc is shutting down; try again"


class Admission:
    """Counts the calls in flight; refuses new ones once :meth:`drain` started."""

    def __init__(self) -> None:
        self.active = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> bool:
        """Admit one call; False when the server is draining (refuse it)."""
        if self.draining:
            return False
        self.active += 1
        self._idle.clear()
        return True

    def leave(self) -> None:
        """One admitted call ended."""
        self.active -= 1
        if self.active <= 0:
            self.active = 0
            self._idle.set()

    async def drain(self, *, grace: float, settle: float) -> None:
        """Refuse new calls and wait for the admitted ones to end.

        Args:
            grace: wait at most this many seconds for admitted calls.
            settle: afterwards, keep refusing for this long, so that calls
                already on their way get an answer before the transport closes.
        """
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            logger.warning("%d calls still running after %gs; cancelling them", self.active, grace)
        await asyncio.sleep(settle)


__all__ = ["REFUSAL", "Admission"]
