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

A watch, the list of keys and a key's history read the bucket in order with
:class:`~windshift._ordered.OrderedRead`, which outlives restarts of the
nats-server and skips or repeats no change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, TypeVar

from google.protobuf.any_pb2 import Any
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import DecodeError, Message

from windshift import _payloads as payloads
from windshift import _wire as wire
from windshift._connection import Connection
from windshift._jsapi import NO_MESSAGE_FOUND, STREAM_NAME_IN_USE, STREAM_NOT_FOUND, ApiError
from windshift._names import quote_value, validate_name, validate_subject
from windshift._ordered import OrderedRead, RecordIterator, StoredRecord
from windshift._payloads import Payload
from windshift._publishing import Publisher
from windshift.errors import (
    AlreadyExistsError,
    ConflictError,
    KeyNotFoundError,
    NotFoundError,
    StoreNotFoundError,
    ValidationError,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

logger = logging.getLogger("windshift.state")

M = TypeVar("M", bound="Message | BaseModel")

_KV_OPERATION = "KV-Operation"
_DELETED = ("DEL", "PURGE")


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

    def to_json(self, pool: DescriptorPool | None = None) -> object | None:
        """The value as a JSON-ready document; None when its type is unknown.

        Decoded when ``pool`` (or protobuf's default pool: every generated
        module imported so far, and the well-known types) knows its type; a
        pydantic model's value (kept as a ``Struct``) always is.
        """
        return payloads.any_to_json(self.value, pool)


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

    def to_json(self, pool: DescriptorPool | None = None) -> object | None:
        """The new value as :meth:`StateEntry.to_json` reads it; None for a delete or an unknown type."""
        return None if self.value is None else payloads.any_to_json(self.value, pool)


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
        return StateWatch(self._read(key, follow=True, current=include_current), self._change)

    async def keys(self, pattern: str = ">") -> list[str]:
        """The keys that hold a value now, in the order they were last written.

        Example:
            >>> await store.keys("cart.*")
            ['cart.42', 'cart.7']

        Args:
            pattern: a key, or a filter with ``*`` (one token) and ``>`` (the rest).

        Raises:
            ValidationError: a bad filter.
            StoreNotFoundError: the store does not exist.
        """
        validate_subject(pattern, wildcards=True, what="key")
        read = self._read(pattern, follow=False, current=True, headers_only=True)
        async with read:
            return [
                record.subject[len(self._prefix) :]
                async for record in read
                if record.headers.get(_KV_OPERATION) not in _DELETED
            ]

    async def history(self, key: str) -> list[StateChange]:
        """The changes of ``key`` the store still keeps, oldest first.

        A store keeps the last ``history`` values of each key (see
        :meth:`windshift.Client.ensure_store`); a delete is a change too
        (``operation == "delete"``).

        Raises:
            ValidationError: a bad key, or a stored value that is not a
                serialized ``google.protobuf.Any``.
            StoreNotFoundError: the store does not exist.
        """
        validate_key(key)
        read = self._read(key, follow=False, current=False)
        async with read:
            return [self._change(record) async for record in read]

    def _read(
        self, key: str, *, follow: bool, current: bool, headers_only: bool = False
    ) -> OrderedRead:
        if current:
            start = {"deliver_policy": "last_per_subject"}
        else:
            start = {"deliver_policy": "new" if follow else "all"}
        return OrderedRead(
            self._client._connection,
            self._stream,
            subjects=[self._prefix + key],
            start=start,
            follow=follow,
            headers_only=headers_only,
            missing=self._not_found,
            what=f"watch of store {self.name!r}" if follow else f"read of store {self.name!r}",
        )

    def _change(self, record: StoredRecord) -> StateChange:
        key = record.subject[len(self._prefix) :]
        deleted = record.headers.get(_KV_OPERATION) in _DELETED
        return StateChange(
            key=key,
            operation="delete" if deleted else "set",
            value=None if deleted else _unpack(self.name, key, record.sequence, record.data),
            revision=record.sequence,
            updated=wire.time_from_nanos(record.timestamp_ns),
        )


class StateWatch(RecordIterator[StateChange]):
    """An async iterator of :class:`StateChange`; use it with ``async with``.

    Get one from :meth:`StateStore.watch`. Iterating it before entering the
    ``async with`` raises ValidationError; after leaving it, iteration ends
    (StopAsyncIteration), in this task and in any other one waiting on it. A
    watch can be entered once.
    """

    noun = "watch"


class Stores:
    """State stores over one connection (behind ``Client.ensure_store`` and ``Client.store``).

    Its stores write through the client's :class:`~windshift._publishing.Publisher`.
    """

    def __init__(self, connection: Connection, publisher: Publisher) -> None:
        self._connection = connection
        self._nc = connection.nc
        self._api = connection.api
        self._send = publisher.send

    async def ensure_store(self, name: str, *, history: int = 1) -> StateStore:
        """Create the state store ``name`` if it does not exist, and return it.

        An existing store keeping another number of values per key is
        changed to keep ``history``. Safe to call from many tasks or
        processes at once.

        Raises:
            ValidationError: a bad name, or ``history`` outside 1 to 64.
            UnavailableError: NATS did not answer.
        """
        validate_name("store", name)
        if isinstance(history, bool) or not isinstance(history, int) or not 1 <= history <= 64:
            raise ValidationError(
                f"history must be a number of values from 1 to 64, got {quote_value(history)}"
            )
        stream = f"KV_{name}"
        try:
            current = await self._api.request(f"STREAM.INFO.{stream}")
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
                "max_msgs_per_subject": history,
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
        config = current["config"]
        if int(config.get("max_msgs_per_subject", 1)) != history:
            try:
                await self._api.request(
                    f"STREAM.UPDATE.{stream}", {**config, "max_msgs_per_subject": history}
                )
            except ApiError as exc:
                raise exc.to_windshift(f"ensure store {name!r}") from None
            logger.info(
                "state store %s keeps %d values per key now", name, history, extra={"store": name}
            )
        return StateStore(self, name)

    async def list(self) -> list[str]:
        """The names of every state store, sorted."""
        names: list[str] = []
        offset = 0
        while True:
            answer = await self._api.request("STREAM.NAMES", {"offset": offset, "subject": "$KV.>"})
            page = answer.get("streams") or []
            names.extend(stream[3:] for stream in page if stream.startswith("KV_"))
            offset += len(page)
            if not page or offset >= int(answer.get("total", 0)):
                return sorted(names)

    def store(self, name: str) -> StateStore:
        """A handle on the existing state store ``name`` (no request is made)."""
        validate_name("store", name)
        return StateStore(self, name)


__all__ = ["StateChange", "StateEntry", "StateStore", "StateWatch", "Stores", "validate_key"]
