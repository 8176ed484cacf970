"""Ordered reads: a stream read in order, acknowledging nothing, that outlives lost consumers.

:class:`OrderedRead` is the one reader behind everything that looks at a
stream without processing it: a state store's watch, its keys and a key's
history, and ``Client.tail``. It reads through an ephemeral push consumer
that it treats as disposable, as JetStream's ordered consumers do: it
remembers the stream sequence of the last message it handed on and the
consumer sequence of the last message it received, and whenever the consumer
may have lost something (a gap in the consumer sequence, no heartbeat for a
while, a reconnection, a consumer that is gone) it throws the consumer away
and creates a new one that starts right after that message. So a read
outlives restarts of the nats-server and skips or repeats nothing.

A read that does not follow ends once it has handed on every message that
matched when it caught up (the message whose delivery says nothing more is
pending), or at once when nothing matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from windshift import _wire as wire
from windshift._connection import Connection
from windshift._jsapi import STREAM_NOT_FOUND, ApiError
from windshift.errors import (
    NotFoundError,
    StreamNotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)

logger = logging.getLogger("windshift.reading")

T = TypeVar("T")

# A read's consumer proves it is alive with a heartbeat this often (seconds)
# when there is nothing to deliver; a read that hears nothing for
# _SILENT_HEARTBEATS of them (plus some slack) takes the consumer as lost.
_HEARTBEAT = 1.0
_SILENT_HEARTBEATS = 2
_SILENCE_SLACK = 0.5
# How often the read looks at its consumer's health (seconds).
_CHECK_EVERY = 0.25
# A restarting server may not know a stream for a moment: only a stream
# missing for this long (seconds) ends a read.
_MISSING_GRACE = 3.0
# The server removes a consumer nobody listens to after this long (nanoseconds):
# the consumers a read gives up on, and those of a process that died.
_INACTIVE_THRESHOLD = 60_000_000_000
# The status headers of a push consumer's control messages.
_LAST_CONSUMER = "Nats-Last-Consumer"
_CONSUMER_STALLED = "Nats-Consumer-Stalled"
# How many messages a read keeps received and not yet handed on; past it, the
# consumer is told to wait (flow control is answered only once there is room).
_BUFFERED = 1024


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One message of a stream, as an ordered read hands it on.

    Attributes:
        subject: the subject it was published to.
        sequence: its stream sequence (an event's id, a key's revision).
        timestamp_ns: when the stream stored it, in nanoseconds since the epoch.
        headers: its headers.
        data: its body (empty when the read asked for headers only).
        size: the size of its body (also when only the headers were read).
    """

    subject: str
    sequence: int
    timestamp_ns: int
    headers: Mapping[str, str]
    data: bytes
    size: int


class OrderedRead:
    """An async iterator of :class:`StoredRecord`, in stream order; use it with ``async with``.

    Args:
        connection: the client's connection.
        stream: the stream to read.
        subjects: the subject filters (empty: every subject of the stream).
        start: the consumer's start fields (``{"deliver_policy": "all"}``, see
            :meth:`~windshift.StreamPointer.consumer_fields`);
            ``last_per_subject`` reads the last message of each subject first.
        follow: keep reading new messages; otherwise end once caught up.
        headers_only: read headers without bodies (:attr:`StoredRecord.size` still says
            how large each body is).
        missing: the error for a stream that does not exist (a store's reads
            name the store).
        what: what is read, for log lines ("watch of store carts").
    """

    def __init__(
        self,
        connection: Connection,
        stream: str,
        *,
        subjects: Sequence[str] = (),
        start: Mapping[str, Any],
        follow: bool = True,
        headers_only: bool = False,
        missing: Callable[[], WindshiftError] | None = None,
        what: str = "",
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._subjects = list(subjects)
        self._start = dict(start)
        self._follow = follow
        self._headers_only = headers_only
        self._missing = missing or (
            lambda: StreamNotFoundError(f"stream {stream!r} does not exist", stream=stream)
        )
        self._what = what or f"read of stream {stream}"
        self._buffer: deque[StoredRecord] = deque()
        self._waiters: set[asyncio.Future[None]] = set()  # tasks waiting in __anext__
        # The consumer of the moment: its inbox subscription, its name, and a
        # number that tells its messages from those of the ones before it.
        self._sub: NatsSubscription | None = None
        self._consumer: str | None = None
        self._generation = 0
        self._consumer_seq = 0  # of the last message of the current consumer
        # The stream sequence of the last message handed on; None until the
        # first (a read of new messages knows where it started).
        self._last: int | None = None
        # Whether everything that matched at the start was delivered. Until
        # then, a read of the last message per subject starts again with the
        # current ones (skipping those up to self._last) when it recovers.
        self._caught_up = False
        self._stalled: str | None = None  # flow control waiting for room in the buffer
        self._last_activity = 0.0
        self._reconnects = 0
        self._lost: str | None = None  # why the current consumer is taken as lost
        self._kick = asyncio.Event()
        self._missing_since: float | None = None
        self._maintainer: asyncio.Task[None] | None = None
        self._error: WindshiftError | None = None
        self._started = False
        self._closed = False

    @property
    def caught_up(self) -> bool:
        """Whether everything that matched when the read began has been received."""
        return self._caught_up

    async def __aenter__(self) -> Self:
        if self._started:
            raise ValidationError(f"a {self._what} can be entered only once")
        self._started = True
        self._reconnects = self._connection.nc.stats["reconnects"]
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise
        self._maintainer = asyncio.create_task(self._maintain(), name=f"windshift-{self._what}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StoredRecord:
        if not self._started:
            raise ValidationError(f"use the {self._what} with 'async with' before iterating")
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._closed or (self._caught_up and not self._follow):
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        record = self._buffer.popleft()
        if self._stalled is not None and len(self._buffer) < _BUFFERED // 2:
            stalled, self._stalled = self._stalled, None
            with contextlib.suppress(nats.errors.Error):
                await self._connection.nc.publish(stalled, b"")
        return record

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _policy(self) -> dict[str, Any]:
        if self._last is None or (
            not self._caught_up and self._start.get("deliver_policy") == "last_per_subject"
        ):
            return dict(self._start)
        return {"deliver_policy": "by_start_sequence", "opt_start_seq": self._last + 1}

    async def _open(self) -> None:
        """Replace the consumer (if any) by a new one that goes on after the last message."""
        nc = self._connection.nc
        api = self._connection.api
        stream = self._stream
        old_sub, old_consumer = self._sub, self._consumer
        self._sub = self._consumer = None
        self._generation += 1
        generation = self._generation
        self._consumer_seq = 0
        self._stalled = None
        if old_sub is not None:
            with contextlib.suppress(Exception):
                await old_sub.unsubscribe()
        if old_consumer is not None and nc.is_connected:
            # Best effort: a consumer nobody listens to goes away by itself.
            with contextlib.suppress(WindshiftError, ApiError):
                await api.request(f"CONSUMER.DELETE.{stream}.{old_consumer}", timeout=_HEARTBEAT)

        async def on_message(msg: Msg) -> None:
            if generation == self._generation and not self._closed:
                await self._on_message(msg)

        inbox = nc.new_inbox()
        self._sub = await nc.subscribe(inbox, cb=on_message)
        policy = self._policy()
        config: dict[str, Any] = {
            "deliver_subject": inbox,
            **policy,
            "ack_policy": "none",
            "flow_control": True,
            "idle_heartbeat": int(_HEARTBEAT * 1e9),
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": _INACTIVE_THRESHOLD,
        }
        if len(self._subjects) == 1:
            config["filter_subject"] = self._subjects[0]
        elif self._subjects:
            config["filter_subjects"] = self._subjects
        if self._headers_only:
            config["headers_only"] = True
        self._last_activity = asyncio.get_running_loop().time()
        try:
            answer = await api.request(
                f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config}
            )
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise self._missing() from None
            raise exc.to_windshift(self._what, stream=stream) from None
        self._consumer = str(answer["name"])
        if self._last is None and policy["deliver_policy"] != "last_per_subject":
            # Where the read starts: the message a recovery would go on after.
            delivered = int(answer.get("delivered", {}).get("stream_seq", 0))
            if policy["deliver_policy"] == "new" or delivered:
                self._last = delivered
        if int(answer.get("num_pending", 0)) == 0 and not self._caught_up:
            self._caught_up = True  # nothing matches (yet): there is nothing to catch up on
            self._wake()

    def _lose(self, reason: str) -> None:
        """Take the current consumer as lost: the maintenance task replaces it."""
        if self._lost is None:
            self._lost = reason
        self._kick.set()

    async def _on_message(self, msg: Msg) -> None:
        # Runs in nats-py's delivery task: nothing may escape from here, or
        # it would be lost there.
        self._last_activity = asyncio.get_running_loop().time()
        headers: Mapping[str, str] = msg.headers or {}
        reply = msg.reply
        if reply and reply.startswith("$JS.FC."):
            if len(self._buffer) >= _BUFFERED:
                self._stalled = reply  # answered once the reader made room
                return
            with contextlib.suppress(nats.errors.Error):
                await self._connection.nc.publish(reply, b"")  # flow control
            return
        if not reply:
            await self._on_status(headers)
            return
        delivery = wire.parse_reply(reply)
        if delivery is None:
            logger.error("%s: unreadable reply subject %r", self._what, reply)
            return
        if delivery.consumer_sequence != self._consumer_seq + 1:
            self._lose(f"consumer sequence {delivery.consumer_sequence} after {self._consumer_seq}")
            return
        self._consumer_seq = delivery.consumer_sequence
        if delivery.pending == 0 and not self._caught_up:
            self._caught_up = True
            self._wake()
        if self._last is not None and delivery.stream_sequence <= self._last:
            return  # handed on before a recovery started again from the current values
        self._last = delivery.stream_sequence
        size = len(msg.data)
        if self._headers_only:
            with contextlib.suppress(ValueError):
                size = int(headers.get("Nats-Msg-Size", "0"))
        self._buffer.append(
            StoredRecord(
                subject=msg.subject,
                sequence=delivery.stream_sequence,
                timestamp_ns=delivery.timestamp_ns,
                headers=headers,
                data=b"" if self._headers_only else msg.data,
                size=size,
            )
        )
        self._wake()

    async def _on_status(self, headers: Mapping[str, str]) -> None:
        stalled = headers.get(_CONSUMER_STALLED)
        if stalled and len(self._buffer) >= _BUFFERED:
            self._stalled = stalled  # the reader has not made room yet
        elif stalled:
            with contextlib.suppress(nats.errors.Error):
                await self._connection.nc.publish(stalled, b"")
        last = headers.get(_LAST_CONSUMER)
        if last is not None and last.isdigit() and int(last) != self._consumer_seq:
            # The heartbeat says the consumer sent more than reached us.
            self._lose(f"heartbeat after consumer sequence {last}, got {self._consumer_seq}")
        elif headers.get("Status") == "409":
            self._lose("the server ended the consumer")

    async def _maintain(self) -> None:
        while not self._closed and self._error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), _CHECK_EVERY)
            self._kick.clear()
            try:
                await self._maintain_once()
            except Exception:  # keep the loop alive whatever one round met
                logger.exception("%s: maintenance failed", self._what)

    async def _maintain_once(self) -> None:
        nc = self._connection.nc
        now = asyncio.get_running_loop().time()
        if nc.is_closed:
            # Nothing will ever arrive again: say so rather than wait forever.
            self._error = UnavailableError(f"{self._what}: the NATS connection is closed")
            self._wake()
            return
        if not nc.is_connected or self._stalled is not None:
            # Silence while disconnected, or while the reader has not made
            # room yet, says nothing of the consumer; a reconnection itself
            # is noticed below.
            self._last_activity = now
            if not nc.is_connected:
                return
        reconnects = nc.stats["reconnects"]
        if reconnects != self._reconnects:
            # The server may have restarted and forgotten the consumer, and
            # what it sent while the connection was down is gone.
            self._reconnects = reconnects
            self._lose("reconnected to NATS")
        silence = _SILENT_HEARTBEATS * _HEARTBEAT + _SILENCE_SLACK
        if now - self._last_activity > silence:
            self._lose(f"no heartbeat for {now - self._last_activity:.1f}s")
        reason = self._lost
        if reason is None:
            return
        self._lost = None  # a loss noticed while replacing calls for another round
        after = self._last
        try:
            await self._open()
        except Exception as exc:
            if self._lost is None:
                self._lost = reason  # try again in the next round
            if not isinstance(exc, NotFoundError):
                self._missing_since = None
                if not isinstance(exc, WindshiftError):
                    raise
                logger.warning("%s: cannot resume yet: %s", self._what, exc)
            elif self._missing_since is None:
                self._missing_since = now
            elif now - self._missing_since >= _MISSING_GRACE:
                self._error = exc
                self._wake()
            return
        self._missing_since = None
        logger.info(
            "%s resumed %s (%s)",
            self._what,
            "from the start" if after is None else f"after sequence {after}",
            reason,
            extra={"stream": self._stream},
        )

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._wake()  # a task waiting in __anext__ ends its iteration now
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        nc, api = self._connection.nc, self._connection.api
        if self._consumer is not None and nc.is_connected:
            with contextlib.suppress(WindshiftError, ApiError):
                await api.request(f"CONSUMER.DELETE.{self._stream}.{self._consumer}")


class RecordIterator(Generic[T]):
    """What the public read types share: an :class:`OrderedRead` whose records are converted.

    Entered once with ``async with``, then iterated; iterating first, or
    entering twice, is a ValidationError that names the :attr:`noun`.
    """

    noun = "read"

    def __init__(self, read: OrderedRead, convert: Callable[[StoredRecord], T]) -> None:
        self._read = read
        self._convert = convert
        self._started = False

    async def __aenter__(self) -> Self:
        if self._started:
            raise ValidationError(f"a {self.noun} can be entered only once")
        self._started = True
        await self._read.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._read.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if not self._started:
            raise ValidationError(f"use the {self.noun} with 'async with' before iterating")
        return self._convert(await self._read.__anext__())


__all__ = ["OrderedRead", "RecordIterator", "StoredRecord"]
