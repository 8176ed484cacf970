"""Key-value state stores on JetStream KV, shared with the Go Windshift.

A store named ``settings`` is the JetStream KV bucket ``settings`` (the stream
``KV_settings``, subjects ``$KV.settings.<key>``). Each value is a serialized
``google.protobuf.Any``, exactly as the original service stores it, so Go
services and this library read each other's stores. A key is ``.``-separated
tokens of ``A-Z a-z 0-9 _ -``.

Example:
    >>> store = await client.ensure_store("carts")
    >>> revision = await store.set("cart.42", Cart(items=3))
    >>> entry = await store.get("cart.42")
    >>> entry.unpack(Cart).items, entry.revision
    (3, 1)
    >>> await store.set("cart.42", Cart(items=4), last_revision=entry.revision)

A watch reads the bucket through an ephemeral push consumer that it treats
as disposable, as JetStream's ordered consumers do: it remembers the
revision of the last change it handed on and the consumer sequence of the
last message, and whenever the consumer may have lost something (a gap in
the consumer sequence, no heartbeat for a while, a reconnection, a consumer
that is gone) it throws the consumer away and creates a new one that starts
right after that revision. So a watch outlives restarts of the nats-server
and skips or repeats no change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self, TypeVar
from typing import Any as AnyType

import nats.errors
from google.protobuf.any_pb2 import Any
from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from windshift import _payloads as payloads
from windshift import _wire as wire
from windshift._connection import Connection
from windshift._jsapi import NO_MESSAGE_FOUND, STREAM_NAME_IN_USE, STREAM_NOT_FOUND, ApiError
from windshift._names import validate_name, validate_subject
from windshift._payloads import Payload
from windshift._publishing import Publisher
from windshift.errors import (
    AlreadyExistsError,
    ConflictError,
    KeyNotFoundError,
    NotFoundError,
    StoreNotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

logger = logging.getLogger("windshift.state")

M = TypeVar("M", bound="Message | BaseModel")

_KV_OPERATION = "KV-Operation"
_DELETED = ("DEL", "PURGE")

# A watch's consumer proves it is alive with a heartbeat this often (seconds)
# when there is nothing to deliver; a watch that hears nothing for
# _SILENT_HEARTBEATS of them (plus some slack) takes the consumer as lost.
_HEARTBEAT = 1.0
_SILENT_HEARTBEATS = 2
_SILENCE_SLACK = 0.5
# How often the watch looks at its consumer's health (seconds).
_CHECK_EVERY = 0.25
# A restarting server may not know a store for a moment: only a store missing
# for this long (seconds) ends a watch.
_MISSING_GRACE = 3.0
# The server removes a consumer nobody listens to after this long (nanoseconds):
# the consumers a watch gives up on, and those of a process that died.
_INACTIVE_THRESHOLD = 60_000_000_000
# The status headers of a push consumer's control messages.
_LAST_CONSUMER = "Nats-Last-Consumer"
_CONSUMER_STALLED = "Nats-Consumer-Stalled"


def _unpack_as(key: str, value: Any, message_type: type[M]) -> M:
    return payloads.unpack_state(message_type, value, f"key {key!r}")


@dataclass(frozen=True, slots=True)
class StateEntry:
    """The current value of a key.

    Attributes:
        key: the key.
        value: the value, a ``google.protobuf.Any``.
        revision: the revision this value was written with.
        updated: when it was written.
    """

    key: str
    value: Any
    revision: int
    updated: datetime

    def unpack(self, message_type: type[M]) -> M:
        """Parse the value as ``message_type``.

        Raises:
            ValidationError: the value holds another type of message.
        """
        return _unpack_as(self.key, self.value, message_type)


@dataclass(frozen=True, slots=True)
class StateChange:
    """One change seen by :meth:`StateStore.watch`.

    Attributes:
        key: the key that changed.
        operation: "set" or "delete".
        value: the new value (None for a delete).
        revision: the revision of the change.
        updated: when it happened.
    """

    key: str
    operation: Literal["set", "delete"]
    value: Any | None
    revision: int
    updated: datetime

    def unpack(self, message_type: type[M]) -> M:
        """Parse the new value as ``message_type``.

        Raises:
            ValidationError: the value holds another type of message, or the
                change is a delete, which has no value.
        """
        if self.value is None:
            raise ValidationError(
                f"key {self.key!r} was deleted at revision {self.revision}: "
                f"a delete has no value to unpack as {message_type.__name__!r}"
            )
        return _unpack_as(self.key, self.value, message_type)


def validate_key(key: object) -> str:
    """Check a state key: ``.``-separated tokens of ``A-Z a-z 0-9 _ -``."""
    return validate_subject(key, what="key")


def _pack(value: Payload) -> bytes:
    return payloads.pack_state(value)


def _unpack(store: str, key: str, revision: int, data: bytes) -> Any:
    """Read a stored value, a serialized ``Any`` with a type URL.

    An ``Any`` without a type URL (empty data, say) is refused too: nothing
    can tell what its bytes are, and :meth:`StateStore.set` never writes one.
    """
    value = Any()
    try:
        value.ParseFromString(data)
    except DecodeError:
        pass
    else:
        if value.type_url:
            return value
    raise ValidationError(
        f"key {key!r} in store {store!r} at revision {revision} does not hold a protobuf Any "
        f"(a serialized google.protobuf.Any with a type URL; {len(data)} bytes)"
    )


def _check_revision(value: int | None, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValidationError(f"{what} must be 0 or a positive revision, got {value!r}")


class StateStore:
    """A key-value store; get one from :meth:`windshift.Client.ensure_store`."""

    def __init__(self, client: Stores, name: str) -> None:
        self._client = client
        self.name = name
        self._stream = f"KV_{name}"
        self._prefix = f"$KV.{name}."

    def __repr__(self) -> str:
        return f"StateStore({self.name!r})"

    def _not_found(self) -> StoreNotFoundError:
        return StoreNotFoundError(f"store {self.name!r} does not exist", store=self.name)

    async def exists(self) -> bool:
        """Whether the store exists.

        Raises:
            UnavailableError: NATS did not answer, so nobody knows.
        """
        try:
            await self._client._api.request(f"STREAM.INFO.{self._stream}")
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return False
            raise exc.to_windshift(f"store {self.name!r}") from None
        return True

    async def get(self, key: str) -> StateEntry:
        """The current value of ``key``.

        Raises:
            ValidationError: a bad key, or a stored value that is not a
                serialized ``google.protobuf.Any`` (written by something else).
            KeyNotFoundError: the key does not exist (or was deleted).
            StoreNotFoundError: the store does not exist.
        """
        validate_key(key)
        try:
            stored = await self._client._api.get_message(
                self._stream, {"last_by_subj": self._prefix + key}
            )
        except ApiError as exc:
            if exc.err_code == NO_MESSAGE_FOUND:
                raise KeyNotFoundError(
                    f"key {key!r} does not exist in store {self.name!r}", store=self.name, key=key
                ) from None
            if exc.err_code == STREAM_NOT_FOUND:
                raise self._not_found() from None
            raise exc.to_windshift(f"get {key!r} from store {self.name!r}") from None
        if stored.headers.get(_KV_OPERATION) in _DELETED:
            raise KeyNotFoundError(
                f"key {key!r} does not exist in store {self.name!r} (deleted)",
                store=self.name,
                key=key,
            )
        return StateEntry(
            key=key,
            value=_unpack(self.name, key, stored.sequence, stored.data),
            revision=stored.sequence,
            updated=wire.parse_time(stored.time),
        )

    async def set(
        self,
        key: str,
        value: Payload,
        *,
        create_only: bool = False,
        last_revision: int | None = None,
    ) -> int:
        """Write ``value`` (a protobuf message or an ``Any``) under ``key``; return its revision.

        Args:
            create_only: fail if the key exists.
            last_revision: write only if the key's current revision is this;
                0 means "only if the key does not exist".

        Raises:
            ValidationError: a bad key or value, or both options at once.
            AlreadyExistsError: ``create_only`` and the key exists.
            ConflictError: ``last_revision`` does not match.
            StoreNotFoundError: the store does not exist.
        """
        validate_key(key)
        _check_revision(last_revision, "last_revision")
        if create_only and last_revision is not None:
            raise ValidationError("set takes either create_only or last_revision, not both")
        body = _pack(value)
        if create_only:
            return await self._create(key, body)
        headers = {}
        if last_revision is not None:
            headers[wire.HEADER_EXPECTED_LAST_SUBJECT_SEQ] = str(last_revision)
        return await self._write(key, body, headers)

    async def _create(self, key: str, body: bytes) -> int:
        expected = 0
        for _ in range(3):
            try:
                return await self._write(
                    key, body, {wire.HEADER_EXPECTED_LAST_SUBJECT_SEQ: str(expected)}
                )
            except ConflictError:
                # A deleted key leaves a marker behind: creating over it is allowed.
                marker = await self._deletion_marker(key)
                if marker is None:
                    raise AlreadyExistsError(
                        f"key {key!r} already exists in store {self.name!r}"
                    ) from None
                expected = marker
        raise ConflictError(f"key {key!r} in store {self.name!r} kept changing; try again")

    async def _deletion_marker(self, key: str) -> int | None:
        try:
            stored = await self._client._api.get_message(
                self._stream, {"last_by_subj": self._prefix + key}
            )
        except ApiError:
            return None
        return stored.sequence if stored.headers.get(_KV_OPERATION) in _DELETED else None

    async def _write(self, key: str, body: bytes, headers: dict[str, str]) -> int:
        try:
            published = await self._client._send(self._prefix + key, body, headers)
        except NotFoundError:
            raise self._not_found() from None
        except ConflictError:
            raise ConflictError(
                f"key {key!r} in store {self.name!r} is not at the expected revision "
                f"({headers.get(wire.HEADER_EXPECTED_LAST_SUBJECT_SEQ)})"
            ) from None
        return published.id

    async def delete(self, key: str, *, last_revision: int | None = None) -> None:
        """Delete ``key`` (deleting a missing key succeeds).

        Raises:
            ValidationError: a bad key.
            ConflictError: ``last_revision`` does not match.
            StoreNotFoundError: the store does not exist.
        """
        validate_key(key)
        _check_revision(last_revision, "last_revision")
        headers = {_KV_OPERATION: "DEL"}
        if last_revision is not None:
            headers[wire.HEADER_EXPECTED_LAST_SUBJECT_SEQ] = str(last_revision)
        await self._write(key, b"", headers)

    def watch(self, key: str = ">", *, include_current: bool = True) -> StateWatch:
        """Follow the changes of a key, or of every key matching a filter.

        Example:
            >>> async with store.watch("cart.*") as changes:
            ...     async for change in changes:
            ...         print(change.key, change.operation, change.revision)

        The watch recovers by itself from restarts of the nats-server,
        reconnections and a consumer that went away, and goes on right after
        the last change it yielded. A value that is not a serialized
        ``google.protobuf.Any`` makes ``__anext__`` raise a ValidationError
        naming the store, key and revision; the next ``__anext__`` goes on
        with the change after it.

        Args:
            key: a key, or a filter with ``*`` (one token) and ``>`` (the rest).
            include_current: first yield the current value of every matching key.

        Raises:
            ValidationError: a bad key or filter.
        """
        validate_subject(key, wildcards=True, what="key")
        return StateWatch(self, key, include_current=include_current)


class StateWatch:
    """An async iterator of :class:`StateChange`; use it with ``async with``.

    Get one from :meth:`StateStore.watch`. Iterating it before entering the
    ``async with`` raises ValidationError; after leaving it, iteration ends
    (StopAsyncIteration), in this task and in any other one waiting on it. A
    watch can be entered once.
    """

    def __init__(self, store: StateStore, key: str, *, include_current: bool) -> None:
        self._store = store
        self._filter = key
        self._buffer: deque[StateChange | ValidationError] = deque()
        self._waiters: set[asyncio.Future[None]] = set()  # tasks waiting in __anext__
        # The consumer of the moment: its inbox subscription, its name, and a
        # number that tells its messages from those of the ones before it.
        self._sub: NatsSubscription | None = None
        self._consumer: str | None = None
        self._generation = 0
        self._consumer_seq = 0  # of the last message of the current consumer
        # The revision (stream sequence) of the last change handed on; None
        # until the first (a watch of new changes knows where it started).
        self._last: int | None = None
        # Whether the current values were all delivered: from then on, a new
        # consumer starts right after self._last; before, it delivers the
        # current values again (and those up to self._last are skipped).
        self._caught_up = not include_current
        self._last_activity = 0.0
        self._reconnects = 0
        self._lost: str | None = None  # why the current consumer is taken as lost
        self._kick = asyncio.Event()
        self._missing_since: float | None = None
        self._maintainer: asyncio.Task[None] | None = None
        self._error: WindshiftError | None = None
        self._started = False
        self._closed = False

    async def __aenter__(self) -> Self:
        if self._started:
            raise ValidationError("a watch can be entered only once")
        self._started = True
        self._reconnects = self._store._client._nc.stats["reconnects"]
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise
        self._maintainer = asyncio.create_task(
            self._maintain(), name=f"windshift-watch-{self._store.name}"
        )
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

    async def __anext__(self) -> StateChange:
        if not self._started:
            raise ValidationError("use the watch with 'async with' before iterating")
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        item = self._buffer.popleft()
        if isinstance(item, ValidationError):
            raise item
        return item

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _deliver_policy(self) -> dict[str, AnyType]:
        if not self._caught_up:
            return {"deliver_policy": "last_per_subject"}
        if self._last is None:
            return {"deliver_policy": "new"}
        return {"deliver_policy": "by_start_sequence", "opt_start_seq": self._last + 1}

    async def _open(self) -> None:
        """Replace the consumer (if any) by a new one that goes on after the last change."""
        client = self._store._client
        nc = client._nc
        stream = self._store._stream
        old_sub, old_consumer = self._sub, self._consumer
        self._sub = self._consumer = None
        self._generation += 1
        generation = self._generation
        self._consumer_seq = 0
        if old_sub is not None:
            with contextlib.suppress(Exception):
                await old_sub.unsubscribe()
        if old_consumer is not None and nc.is_connected:
            # Best effort: a consumer nobody listens to goes away by itself.
            with contextlib.suppress(WindshiftError, ApiError):
                await client._api.request(
                    f"CONSUMER.DELETE.{stream}.{old_consumer}", timeout=_HEARTBEAT
                )

        async def on_message(msg: Msg) -> None:
            if generation == self._generation and not self._closed:
                await self._on_message(msg)

        inbox = nc.new_inbox()
        self._sub = await nc.subscribe(inbox, cb=on_message)
        policy = self._deliver_policy()
        config: dict[str, AnyType] = {
            "deliver_subject": inbox,
            **policy,
            "ack_policy": "none",
            "filter_subject": self._store._prefix + self._filter,
            "flow_control": True,
            "idle_heartbeat": int(_HEARTBEAT * 1e9),
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": _INACTIVE_THRESHOLD,
        }
        self._last_activity = asyncio.get_running_loop().time()
        try:
            answer = await client._api.request(
                f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config}
            )
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise self._store._not_found() from None
            raise exc.to_windshift(f"watch store {self._store.name!r}") from None
        self._consumer = str(answer["name"])
        if policy["deliver_policy"] == "new" and self._last is None:
            # Where "new" starts: the revision a recovery would go on after.
            self._last = int(answer.get("delivered", {}).get("stream_seq", 0))

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
        nc = self._store._client._nc
        reply = msg.reply
        if reply and reply.startswith("$JS.FC."):
            with contextlib.suppress(nats.errors.Error):
                await nc.publish(reply, b"")  # flow control
            return
        if not reply:
            await self._on_status(headers)
            return
        delivery = wire.parse_reply(reply)
        if delivery is None:
            logger.error("watch of store %s: unreadable reply subject %r", self._store.name, reply)
            return
        stream_seq, consumer_seq = delivery.stream_sequence, delivery.consumer_sequence
        stamp, pending = delivery.timestamp_ns, delivery.pending
        if consumer_seq != self._consumer_seq + 1:
            self._lose(f"consumer sequence {consumer_seq} after {self._consumer_seq}")
            return
        self._consumer_seq = consumer_seq
        if pending == 0:
            self._caught_up = True
        if self._last is not None and stream_seq <= self._last:
            return  # handed on before a recovery started again from the current values
        self._last = stream_seq
        key = msg.subject[len(self._store._prefix) :]
        deleted = headers.get(_KV_OPERATION) in _DELETED
        item: StateChange | ValidationError
        try:
            item = StateChange(
                key=key,
                operation="delete" if deleted else "set",
                value=None if deleted else _unpack(self._store.name, key, stream_seq, msg.data),
                revision=stream_seq,
                updated=wire.time_from_nanos(stamp),
            )
        except ValidationError as exc:
            item = exc
        self._buffer.append(item)
        self._wake()

    async def _on_status(self, headers: Mapping[str, str]) -> None:
        stalled = headers.get(_CONSUMER_STALLED)
        if stalled:
            with contextlib.suppress(nats.errors.Error):
                await self._store._client._nc.publish(stalled, b"")
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
                logger.exception("watch of store %s: maintenance failed", self._store.name)

    async def _maintain_once(self) -> None:
        nc = self._store._client._nc
        now = asyncio.get_running_loop().time()
        if nc.is_closed:
            # Nothing will ever arrive again: say so rather than wait forever.
            self._error = UnavailableError(
                f"watch of store {self._store.name!r}: the NATS connection is closed"
            )
            self._wake()
            return
        if not nc.is_connected:
            # Silence while disconnected says nothing of the consumer; the
            # reconnection itself is noticed below.
            self._last_activity = now
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
        after = self._last if self._caught_up else None
        try:
            await self._open()
        except Exception as exc:
            if self._lost is None:
                self._lost = reason  # try again in the next round
            if not isinstance(exc, StoreNotFoundError):
                self._missing_since = None
                if not isinstance(exc, WindshiftError):
                    raise
                logger.warning("watch of store %s: cannot resume yet: %s", self._store.name, exc)
            elif self._missing_since is None:
                self._missing_since = now
            elif now - self._missing_since >= _MISSING_GRACE:
                self._error = exc
                self._wake()
            return
        self._missing_since = None
        logger.info(
            "watch of store %s resumed %s (%s)",
            self._store.name,
            "with the current values" if after is None else f"after revision {after}",
            reason,
            extra={"store": self._store.name},
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
        client = self._store._client
        if self._consumer is not None and client._nc.is_connected:
            with contextlib.suppress(WindshiftError, ApiError):
                await client._api.request(f"CONSUMER.DELETE.{self._store._stream}.{self._consumer}")


class Stores:
    """State stores over one connection (behind ``Client.ensure_store`` and ``Client.store``).

    Its stores write through the client's :class:`~windshift._publishing.Publisher`.
    """

    def __init__(self, connection: Connection, publisher: Publisher) -> None:
        self._nc = connection.nc
        self._api = connection.api
        self._send = publisher.send

    async def ensure_store(self, name: str) -> StateStore:
        """Create the state store ``name`` if it does not exist, and return it.

        Safe to call from many tasks or processes at once.

        Raises:
            ValidationError: a bad name.
            UnavailableError: NATS did not answer.
        """
        validate_name("store", name)
        stream = f"KV_{name}"
        try:
            await self._api.request(f"STREAM.INFO.{stream}")
        except ApiError as exc:
            if exc.err_code != STREAM_NOT_FOUND:
                raise exc.to_windshift(f"ensure store {name!r}") from None
            config = {
                "name": stream,
                "subjects": [f"$KV.{name}.>"],
                "retention": "limits",
                "max_consumers": -1,
                "max_msgs": -1,
                "max_bytes": -1,
                "max_age": 0,
                "max_msgs_per_subject": 1,
                "max_msg_size": -1,
                "discard": "new",
                "storage": "file",
                "num_replicas": 1,
                "duplicate_window": 120_000_000_000,
                "allow_rollup_hdrs": True,
                "deny_delete": True,
                "allow_direct": True,
            }
            try:
                await self._api.request(f"STREAM.CREATE.{stream}", config)
            except ApiError as create_exc:
                if create_exc.err_code != STREAM_NAME_IN_USE:
                    raise create_exc.to_windshift(f"ensure store {name!r}") from None
            else:
                logger.info("created state store %s", name, extra={"store": name})
        return StateStore(self, name)

    def store(self, name: str) -> StateStore:
        """A handle on the existing state store ``name`` (no request is made)."""
        validate_name("store", name)
        return StateStore(self, name)


__all__ = ["StateChange", "StateEntry", "StateStore", "StateWatch", "Stores", "validate_key"]
