"""Admission of calls: counted while they run, refused with UNAVAILABLE once the server drains.

A graceful stop drains before it stops the gRPC server: calls already
running finish, and calls that arrive meanwhile (including those a busy
client had already sent) are answered UNAVAILABLE, which clients retry
against another instance, instead of being cut off as CANCELLED by the
transport. See :meth:`Admission.drain`.

Events calls hold a subscription for as long as the client likes, so they
are also counted on their own (:class:`EventsCalls`): in all
(``WINDSHIFT_MAX_EVENTS_CALLS``) and per token
(``WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN``). A call takes its place only once
its Subscribe passed authentication, validation and the consume check, so
calls that send nothing, or nothing their token allows, never keep a
subscriber out. The same register is where a reload of the tokens file
finds the open calls whose token it withdrew (:meth:`EventsCalls.recheck`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from windshift_grpc.auth import AccessError
from windshift_grpc.status import TooManyCallsError

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


class EventsCall:
    """One Events call, as :class:`EventsCalls` counts it and a reload may end it.

    Made by the call layer for every Events call; the call itself (the
    servicer) takes its place with :meth:`enter` once the Subscribe is
    validated, and registers with :meth:`on_end` how it is ended from outside.

    Args:
        register: where it is counted.
        token: the call's bearer token, as the call layer keys it (None
            without a tokens file).
        name: the token's name, for messages.
        verify: raises the call's :class:`~windshift_grpc.auth.AccessError`
            when its token no longer may consume the subscribed stream.
    """

    __slots__ = ("_on_end", "_register", "error", "name", "stream", "token", "verify")

    def __init__(
        self,
        register: EventsCalls,
        token: str | None = None,
        name: str | None = None,
        verify: Callable[[], None] | None = None,
    ) -> None:
        self._register = register
        self.token = token
        self.name = name
        self.verify = verify
        self.stream: str | None = None  # set when its Subscribe passes the check
        self.error: Exception | None = None
        self._on_end: Callable[[Exception], None] | None = None

    def enter(self) -> None:
        """Take this call's place among the open ones (see :meth:`EventsCalls.enter`)."""
        self._register.enter(self)

    def leave(self) -> None:
        """Give the place back (nothing when it was not taken)."""
        self._register.leave(self)

    def on_end(self, callback: Callable[[Exception], None] | None) -> None:
        """Have :meth:`end` call ``callback`` (at once, if the call was ended already)."""
        self._on_end = callback
        if callback is not None and self.error is not None:
            callback(self.error)

    def end(self, error: Exception) -> None:
        """End the call with ``error``, through the call's own task (its status is mapped there)."""
        if self.error is None:
            self.error = error
            if self._on_end is not None:
                self._on_end(error)


class EventsCalls:
    """The Events calls holding a subscription: counted, limited, and rechecked on reload.

    Args:
        max_calls: at most this many at once (``WINDSHIFT_MAX_EVENTS_CALLS``).
        max_per_token: at most this many of one token
            (``WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN``); calls without a
            token are only counted in all.
    """

    def __init__(self, max_calls: int = 1000, max_per_token: int = 100) -> None:
        self.max_calls = max_calls
        self.max_per_token = max_per_token
        self._open: set[EventsCall] = set()
        self._per_token: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def enter(self, call: EventsCall) -> None:
        """Count ``call`` in, after checking its token once more.

        The check repeats the one its Subscribe passed: a reload in between
        would otherwise miss the call, as it was not counted yet.

        Raises:
            AccessError: its token is gone, or no longer may consume the stream.
            TooManyCallsError: a limit is reached.
        """
        if call in self._open:
            return
        if call.verify is not None:
            call.verify()
        if len(self._open) >= self.max_calls:
            raise TooManyCallsError(
                f"this server already serves {len(self._open)} Events calls, its limit "
                "(WINDSHIFT_MAX_EVENTS_CALLS); retry later or on another replica"
            )
        token = call.token
        if token is not None and self._per_token[token] >= self.max_per_token:
            raise TooManyCallsError(
                f"token {call.name!r} already has {self._per_token[token]} open Events calls, "
                f"its limit (WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN is {self.max_per_token}); "
                "end one first"
            )
        self._open.add(call)
        if token is not None:
            self._per_token[token] += 1

    def leave(self, call: EventsCall) -> None:
        """Count ``call`` out (it ended); nothing when it was not counted."""
        if call not in self._open:
            return
        self._open.discard(call)
        token = call.token
        if token is not None:
            self._per_token[token] -= 1
            if self._per_token[token] <= 0:
                del self._per_token[token]

    def recheck(self) -> int:
        """End every open call whose token no longer may consume its stream; how many.

        Called after the tokens file is reloaded. Each such call ends with the
        error its check raises (UNAUTHENTICATED for a token that is gone,
        PERMISSION_DENIED for a withdrawn consume), through its own task.
        """
        ended = 0
        for call in list(self._open):
            if call.verify is None or call.error is not None:
                continue
            try:
                call.verify()
            except AccessError as exc:
                call.end(type(exc)(f"{exc} (the tokens file was reloaded)"))
                ended += 1
        return ended


__all__ = ["REFUSAL", "Admission", "EventsCall", "EventsCalls"]
