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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any as AnyType
from typing import Literal, Self, TypeVar

from google.protobuf.any_pb2 import Any
from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from windshift import _wire as wire
from windshift._connection import Connection
from windshift._jsapi import NO_MESSAGE_FOUND, STREAM_NAME_IN_USE, STREAM_NOT_FOUND, ApiError
from windshift._names import validate_name, validate_subject
from windshift._publishing import Publisher
from windshift.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    ValidationError,
    WindshiftError,
)

logger = logging.getLogger("windshift.state")

M = TypeVar("M", bound=Message)

_KV_OPERATION = "KV-Operation"
_DELETED = ("DEL", "PURGE")


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
        message = message_type()
        if not self.value.Unpack(message):
            raise ValidationError(
                f"key {self.key!r} holds {self.value.type_url!r}, "
                f"not {message_type.DESCRIPTOR.full_name!r}"
            )
        return message


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


def validate_key(key: object) -> str:
    """Check a state key: ``.``-separated tokens of ``A-Z a-z 0-9 _ -``."""
    return validate_subject(key, what="key")


def _pack(value: Message) -> bytes:
    if isinstance(value, Any):
        if not value.type_url:
            raise ValidationError("state value is missing: the Any has no type_url")
        return value.SerializeToString()
    if not isinstance(value, Message):
        raise ValidationError(f"state value must be a protobuf message, got {type(value).__name__}")
    packed = Any()
    packed.Pack(value)
    return packed.SerializeToString()


def _unpack(key: str, data: bytes) -> Any:
    value = Any()
    try:
        value.ParseFromString(data)
    except DecodeError:
        raise ValidationError(f"key {key!r} does not hold a protobuf Any") from None
    return value


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

    async def exists(self) -> None:
        """Check that the store exists.

        Raises:
            NotFoundError: it does not.
        """
        try:
            await self._client._api.request(f"STREAM.INFO.{self._stream}")
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise NotFoundError(f"store {self.name!r} does not exist") from None
            raise exc.to_windshift(f"store {self.name!r}") from None

    async def get(self, key: str) -> StateEntry:
        """The current value of ``key``.

        Raises:
            ValidationError: a bad key.
            NotFoundError: the key does not exist (or was deleted), or the store does not.
        """
        validate_key(key)
        try:
            stored = await self._client._api.get_message(
                self._stream, {"last_by_subj": self._prefix + key}
            )
        except ApiError as exc:
            if exc.err_code == NO_MESSAGE_FOUND:
                raise NotFoundError(f"key {key!r} does not exist in store {self.name!r}") from None
            if exc.err_code == STREAM_NOT_FOUND:
                raise NotFoundError(f"store {self.name!r} does not exist") from None
            raise exc.to_windshift(f"get {key!r} from store {self.name!r}") from None
        if stored.headers.get(_KV_OPERATION) in _DELETED:
            raise NotFoundError(f"key {key!r} does not exist in store {self.name!r} (deleted)")
        return StateEntry(
            key=key,
            value=_unpack(key, stored.data),
            revision=stored.sequence,
            updated=wire.parse_time(stored.time),
        )

    async def set(
        self,
        key: str,
        value: Message,
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
            NotFoundError: the store does not exist.
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
            raise NotFoundError(f"store {self.name!r} does not exist") from None
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
            NotFoundError: the store does not exist.
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

        Args:
            key: a key, or a filter with ``*`` (one token) and ``>`` (the rest).
            include_current: first yield the current value of every matching key.
        """
        validate_subject(key, wildcards=True, what="key")
        return StateWatch(self, key, include_current=include_current)


class StateWatch:
    """An async iterator of :class:`StateChange`; use it with ``async with``."""

    def __init__(self, store: StateStore, key: str, *, include_current: bool) -> None:
        self._store = store
        self._filter = key
        self._include_current = include_current
        self._queue: asyncio.Queue[StateChange] = asyncio.Queue()
        self._sub: NatsSubscription | None = None
        self._consumer: str | None = None

    async def __aenter__(self) -> Self:
        client = self._store._client
        inbox = client._nc.new_inbox()
        self._sub = await client._nc.subscribe(inbox, cb=self._on_message)
        config: dict[str, AnyType] = {
            "deliver_subject": inbox,
            "deliver_policy": "last_per_subject" if self._include_current else "new",
            "ack_policy": "none",
            "filter_subject": self._store._prefix + self._filter,
            "flow_control": True,
            "idle_heartbeat": 5_000_000_000,
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": 60_000_000_000,
        }
        try:
            answer = await client._api.request(
                f"CONSUMER.CREATE.{self._store._stream}",
                {"stream_name": self._store._stream, "config": config},
            )
        except ApiError as exc:
            await self._sub.unsubscribe()
            if exc.err_code == STREAM_NOT_FOUND:
                raise NotFoundError(f"store {self._store.name!r} does not exist") from None
            raise exc.to_windshift(f"watch store {self._store.name!r}") from None
        self._consumer = str(answer["name"])
        return self

    async def _on_message(self, msg: Msg) -> None:
        headers: Mapping[str, str] = msg.headers or {}
        if not msg.reply and not msg.data and "Status" in headers:
            return  # heartbeat
        if msg.reply and msg.reply.startswith("$JS.FC."):
            await self._store._client._nc.publish(msg.reply, b"")  # flow control
            return
        tokens = msg.reply.split(".") if msg.reply else []
        if len(tokens) < 9:
            return
        sequence, stamp = (
            (int(tokens[5]), int(tokens[7]))
            if len(tokens) == 9
            else (
                int(tokens[7]),
                int(tokens[9]),
            )
        )
        key = msg.subject[len(self._store._prefix) :]
        deleted = headers.get(_KV_OPERATION) in _DELETED
        self._queue.put_nowait(
            StateChange(
                key=key,
                operation="delete" if deleted else "set",
                value=None if deleted else _unpack(key, msg.data),
                revision=sequence,
                updated=wire.time_from_nanos(stamp),
            )
        )

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StateChange:
        if self._sub is None:
            raise ValidationError("use the watch with 'async with' before iterating")
        return await self._queue.get()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self._store._client
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._consumer is not None:
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
