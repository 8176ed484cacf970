"""Streams: create, update, describe and delete them (the Streams service of a client)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from windshift._connection import Connection
from windshift._jsapi import STREAM_NAME_IN_USE, STREAM_NOT_FOUND, ApiError
from windshift._names import validate_name
from windshift._options import Storage, StreamOptions
from windshift._wire import parse_time
from windshift.errors import ConfigurationConflictError, StreamNotFoundError

logger = logging.getLogger("windshift.streams")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a stream holds and how it is configured.

    Attributes:
        name: the stream's name.
        options: its options, read back from JetStream (see :class:`StreamOptions`).
        events: number of events it holds.
        bytes: bytes it holds.
        first_id: id of the oldest event held (0 when empty).
        last_id: id of the newest event held (0 when nothing was ever published).
        consumers: number of consumers.
        created: when the stream was created.
        first_time: when the oldest event held was stored (None when empty).
        last_time: when the newest event was stored (None when nothing was
            ever published).
        config: the raw JetStream configuration.
    """

    name: str
    options: StreamOptions
    events: int
    bytes: int
    first_id: int
    last_id: int
    consumers: int
    created: datetime | None
    config: dict[str, Any] = field(repr=False)
    first_time: datetime | None = None
    last_time: datetime | None = None

    @property
    def subjects(self) -> list[str]:
        """Subjects it collects (empty for a mirror or an aggregate)."""
        return list(self.options.subjects or ())

    @property
    def storage(self) -> Storage:
        """ "file" or "memory"."""
        return self.options.storage

    @property
    def replicas(self) -> int:
        """Number of replicas."""
        return self.options.replicas

    @property
    def retention(self) -> str:
        """JetStream's retention policy: "limits" (Windshift's), "interest" or "workqueue"."""
        return str(self.config.get("retention", "limits"))

    @property
    def max_age(self) -> timedelta | None:
        """Events older than this are removed (None: kept forever)."""
        return self.options.max_age

    @property
    def deduplication_window(self) -> timedelta:
        """How long idempotency keys are remembered."""
        return self.options.deduplication_window

    @classmethod
    def from_api(cls, answer: dict[str, Any]) -> StreamInfo:
        config = answer["config"]
        state = answer.get("state", {})
        created = answer.get("created")
        return cls(
            name=config["name"],
            options=StreamOptions.from_config(config),
            events=int(state.get("messages", 0)),
            bytes=int(state.get("bytes", 0)),
            first_id=int(state.get("first_seq", 0)) if state.get("messages") else 0,
            last_id=int(state.get("last_seq", 0)),
            consumers=int(state.get("consumer_count", 0)),
            created=parse_time(created) if created else None,
            config=config,
            first_time=_state_time(state, "first_ts") if state.get("messages") else None,
            last_time=_state_time(state, "last_ts") if state.get("last_seq") else None,
        )


def _state_time(state: dict[str, Any], key: str) -> datetime | None:
    # JetStream writes Go's zero time (year 1) when there is no such event.
    text = state.get(key)
    if not text:
        return None
    try:
        moment = parse_time(text)
    except ValueError:
        return None
    return None if moment.year == 1 else moment


_SOURCE_KEYS = ("subjects", "mirror", "sources")


class Streams:
    """Stream management over one connection (behind ``Client.ensure_stream`` and friends)."""

    def __init__(self, connection: Connection) -> None:
        self._api = connection.api
        self._limits = connection.settings.limits

    async def ensure(self, name: str, options: StreamOptions) -> StreamInfo:
        """Create the stream, or update it to match ``options``; see ``Client.ensure_stream``."""
        config = options.to_config(name, self._limits)
        context = f"ensure stream {name!r}"
        for _ in range(5):
            try:
                current = await self._api.request(f"STREAM.INFO.{name}")
            except ApiError as exc:
                if exc.err_code != STREAM_NOT_FOUND:
                    raise exc.to_windshift(context, stream=name) from None
                try:
                    created = await self._api.request(f"STREAM.CREATE.{name}", config)
                except ApiError as create_exc:
                    if create_exc.err_code == STREAM_NAME_IN_USE:
                        continue  # created meanwhile by someone else: update it instead
                    raise create_exc.to_windshift(context, stream=name) from None
                logger.info("created stream %s", name, extra={"stream": name})
                return StreamInfo.from_api(created)
            return await self._update(name, current, config, context)
        raise ConfigurationConflictError(f"{context}: the stream kept changing; try again")

    async def _update(
        self, name: str, current: dict[str, Any], config: dict[str, Any], context: str
    ) -> StreamInfo:
        existing: dict[str, Any] = current["config"]
        if existing.get("storage", "file") != config["storage"]:
            raise ConfigurationConflictError(
                f"{context}: storage cannot change from {existing.get('storage')!r} "
                f"to {config['storage']!r} on an existing stream"
            )
        merged = {k: v for k, v in existing.items() if k not in _SOURCE_KEYS}
        merged.update(config)
        if _same_config(merged, existing):
            return StreamInfo.from_api(current)
        try:
            updated = await self._api.request(f"STREAM.UPDATE.{name}", merged)
        except ApiError as exc:
            raise exc.to_windshift(context, stream=name, update=True) from None
        logger.info("updated stream %s", name, extra={"stream": name})
        return StreamInfo.from_api(updated)

    async def info(self, name: str) -> StreamInfo:
        """Describe a stream; see ``Client.stream_info``."""
        validate_name("stream", name)
        try:
            return StreamInfo.from_api(await self._api.request(f"STREAM.INFO.{name}"))
        except ApiError as exc:
            raise exc.to_windshift(f"stream {name!r}", stream=name) from None

    async def list(self) -> list[StreamInfo]:
        """Every stream, sorted by name; see ``Client.streams``."""
        streams: list[StreamInfo] = []
        while True:
            answer = await self._api.request("STREAM.LIST", {"offset": len(streams)})
            page = answer.get("streams") or []
            streams.extend(StreamInfo.from_api(item) for item in page)
            if not page or len(streams) >= int(answer.get("total", 0)):
                return sorted(streams, key=lambda stream: stream.name)

    async def delete(self, name: str) -> None:
        """Delete a stream; see ``Client.delete_stream``."""
        validate_name("stream", name)
        try:
            await self._api.request(f"STREAM.DELETE.{name}")
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise StreamNotFoundError(f"stream {name!r} does not exist", stream=name) from None
            raise exc.to_windshift(f"delete stream {name!r}", stream=name) from None
        logger.info("deleted stream %s", name, extra={"stream": name})


def _same_config(wanted: dict[str, Any], existing: dict[str, Any]) -> bool:
    # JetStream leaves zero values out of the configuration it reports
    # (``discard_new_per_subject: false``...): a missing key equals a falsy one.
    return all(
        wanted.get(key) == existing.get(key) or (not wanted.get(key) and not existing.get(key))
        for key in wanted.keys() | existing.keys()
    )


__all__ = ["StreamInfo", "Streams"]
