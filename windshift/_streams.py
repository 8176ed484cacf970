"""Streams: Windshift's stream options and their JetStream configuration."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from windshift._core import ClientBase
from windshift._jsapi import STREAM_NAME_IN_USE, STREAM_NOT_FOUND, ApiError
from windshift._names import quote_value, validate_name, validate_subjects
from windshift._pointers import StreamPointer
from windshift._wire import duration_to_nanos, nanos_to_duration, parse_time
from windshift.errors import ConfigurationConflictError, NotFoundError, ValidationError

logger = logging.getLogger("windshift.streams")

DEFAULT_DEDUPLICATION_WINDOW = timedelta(minutes=2)

Discard = Literal["old", "new"]
Storage = Literal["file", "memory"]


@dataclass(frozen=True, slots=True)
class StreamSource:
    """Another stream to copy events from (for ``mirror`` or ``sources``).

    Args:
        name: the stream to copy from.
        start: where copying starts; every event the stream holds by default.
        filter_subjects: copy only events on these subjects (wildcards allowed).

    Example:
        >>> StreamSource("orders", start=StreamPointer.offset(100), filter_subjects=["orders.eu.>"])
    """

    name: str
    start: StreamPointer | None = None
    filter_subjects: Sequence[str] = ()

    def to_config(self) -> dict[str, Any]:
        """The JetStream ``StreamSource`` JSON for this source."""
        validate_name("source stream", self.name)
        filters = validate_subjects(self.filter_subjects, what="filter subject")
        if self.start is not None and not isinstance(self.start, StreamPointer):
            raise ValidationError(
                f"source start must be a StreamPointer, got {quote_value(self.start)}"
            )
        config: dict[str, Any] = {"name": self.name}
        if self.start is not None:
            config.update(self.start.source_fields())
        if len(filters) == 1:
            config["filter_subject"] = filters[0]
        elif filters:
            config["subject_transforms"] = [{"src": f, "dest": f} for f in filters]
        return config


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a stream holds and how it is configured.

    Attributes:
        name: the stream's name.
        subjects: subjects it collects (empty for a mirror).
        events: number of events it holds.
        bytes: bytes it holds.
        first_id: id of the oldest event held (0 when empty).
        last_id: id of the newest event held (0 when nothing was ever published).
        consumers: number of consumers.
        created: when the stream was created.
        storage: "file" or "memory".
        replicas: number of replicas.
        max_age: events older than this are removed (None: kept forever).
        deduplication_window: how long idempotency keys are remembered.
        config: the raw JetStream configuration.
    """

    name: str
    subjects: list[str]
    events: int
    bytes: int
    first_id: int
    last_id: int
    consumers: int
    created: datetime | None
    storage: Storage
    replicas: int
    max_age: timedelta | None
    deduplication_window: timedelta
    config: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, answer: dict[str, Any]) -> StreamInfo:
        config = answer["config"]
        state = answer.get("state", {})
        created = answer.get("created")
        return cls(
            name=config["name"],
            subjects=list(config.get("subjects") or []),
            events=int(state.get("messages", 0)),
            bytes=int(state.get("bytes", 0)),
            first_id=int(state.get("first_seq", 0)) if state.get("messages") else 0,
            last_id=int(state.get("last_seq", 0)),
            consumers=int(state.get("consumer_count", 0)),
            created=parse_time(created) if created else None,
            storage=config.get("storage", "file"),
            replicas=int(config.get("num_replicas", 1)),
            max_age=nanos_to_duration(config["max_age"]) if config.get("max_age") else None,
            deduplication_window=nanos_to_duration(config.get("duplicate_window", 0)),
            config=config,
        )


def _optional_limit(value: int | None, what: str) -> int:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(
            f"{what} must be a whole number of 1 or more, got {quote_value(value)}"
        )
    return value


def build_stream_config(
    name: str,
    *,
    subjects: Sequence[str] | None,
    mirror: StreamSource | None,
    sources: Sequence[StreamSource] | None,
    max_age: timedelta | None,
    max_events: int | None,
    max_events_per_subject: int | None,
    max_bytes: int | None,
    discard: Discard,
    discard_new_per_subject: bool,
    storage: Storage,
    replicas: int,
    deduplication_window: timedelta,
    max_event_size: int | None,
) -> dict[str, Any]:
    """Validate Windshift's stream options and build the JetStream configuration."""
    validate_name("stream", name)
    chosen = [
        what
        for what, value in (("subjects", subjects), ("mirror", mirror), ("sources", sources))
        if value
    ]
    if len(chosen) != 1:
        raise ValidationError(
            f"stream {name!r} needs exactly one of subjects, mirror or sources, got "
            + (", ".join(chosen) if chosen else "none")
        )
    if discard not in ("old", "new"):
        raise ValidationError(f"discard must be 'old' or 'new', got {quote_value(discard)}")
    if storage not in ("file", "memory"):
        raise ValidationError(f"storage must be 'file' or 'memory', got {quote_value(storage)}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
        raise ValidationError(f"replicas must be between 1 and 5, got {quote_value(replicas)}")
    if discard_new_per_subject and max_events_per_subject is None:
        raise ValidationError("discard_new_per_subject needs max_events_per_subject to be set")
    if discard_new_per_subject and discard != "new":
        raise ValidationError("discard_new_per_subject needs discard='new'")
    window = duration_to_nanos(deduplication_window, "deduplication_window")
    age = 0 if max_age is None else duration_to_nanos(max_age, "max_age")
    config: dict[str, Any] = {
        "name": name,
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": _optional_limit(max_events, "max_events"),
        "max_bytes": _optional_limit(max_bytes, "max_bytes"),
        "max_age": age,
        "max_msgs_per_subject": _optional_limit(max_events_per_subject, "max_events_per_subject"),
        "max_msg_size": _optional_limit(max_event_size, "max_event_size"),
        "discard": discard,
        "discard_new_per_subject": discard_new_per_subject,
        "storage": storage,
        "num_replicas": replicas,
        "duplicate_window": window if not age else min(window, age),
    }
    if subjects:
        config["subjects"] = validate_subjects(subjects, what="stream subject")
    elif mirror:
        if not isinstance(mirror, StreamSource):
            raise ValidationError(f"mirror must be a StreamSource, got {quote_value(mirror)}")
        config["mirror"] = mirror.to_config()
    else:
        assert sources is not None
        if isinstance(sources, StreamSource):
            raise ValidationError("sources must be a list of StreamSource, got a single one")
        if not isinstance(sources, Sequence) or isinstance(sources, str | bytes):
            raise ValidationError(
                f"sources must be a list of StreamSource, got {quote_value(sources)}"
            )
        for source in sources:
            if not isinstance(source, StreamSource):
                raise ValidationError(
                    f"sources must hold StreamSource values, got {quote_value(source)}"
                )
        config["sources"] = [source.to_config() for source in sources]
    return config


_SOURCE_KEYS = ("subjects", "mirror", "sources")


class StreamsMixin(ClientBase):
    """Stream management methods of :class:`~windshift.Client`."""

    async def ensure_stream(
        self,
        name: str,
        *,
        subjects: Sequence[str] | None = None,
        mirror: StreamSource | None = None,
        sources: Sequence[StreamSource] | None = None,
        max_age: timedelta | None = None,
        max_events: int | None = None,
        max_events_per_subject: int | None = None,
        max_bytes: int | None = None,
        discard: Discard = "old",
        discard_new_per_subject: bool = False,
        storage: Storage = "file",
        replicas: int = 1,
        deduplication_window: timedelta = DEFAULT_DEDUPLICATION_WINDOW,
        max_event_size: int | None = None,
    ) -> StreamInfo:
        """Create a stream, or update it to match these options.

        Example:
            >>> await client.ensure_stream("orders", subjects=["orders.>"],
            ...                            max_age=timedelta(days=30))

        Every call states the whole configuration: an option left out is
        reset to its default (a retention limit that was set is removed).
        Safe to call from many tasks or processes at once.

        Args:
            name: the stream's name (``A-Z a-z 0-9 _ -``).
            subjects: subjects the stream collects (``*`` and ``>`` allowed).
            mirror: copy another stream (exclusive with ``subjects`` and ``sources``).
            sources: aggregate several streams.
            max_age: remove events older than this.
            max_events: keep at most this many events.
            max_events_per_subject: keep at most this many events per subject.
            max_bytes: keep at most this many bytes.
            discard: when a limit is hit, drop the oldest events ("old") or
                refuse new ones ("new").
            discard_new_per_subject: refuse new events on a subject that holds
                ``max_events_per_subject`` (needs ``discard="new"``).
            storage: "file" (default) or "memory"; cannot change later.
            replicas: copies kept in a NATS cluster (1 to 5).
            deduplication_window: how long idempotency keys are remembered.
            max_event_size: refuse events larger than this many bytes.

        Raises:
            ValidationError: a bad name, subject or option combination.
            ConfigurationConflictError: JetStream refuses the change (storage
                type, a subject already bound to another stream).
            UnavailableError: NATS did not answer.
        """
        config = build_stream_config(
            name,
            subjects=subjects,
            mirror=mirror,
            sources=sources,
            max_age=max_age,
            max_events=max_events,
            max_events_per_subject=max_events_per_subject,
            max_bytes=max_bytes,
            discard=discard,
            discard_new_per_subject=discard_new_per_subject,
            storage=storage,
            replicas=replicas,
            deduplication_window=deduplication_window,
            max_event_size=max_event_size,
        )
        context = f"ensure stream {name!r}"
        for _ in range(5):
            try:
                current = await self._api.request(f"STREAM.INFO.{name}")
            except ApiError as exc:
                if exc.err_code != STREAM_NOT_FOUND:
                    raise exc.to_windshift(context) from None
                try:
                    created = await self._api.request(f"STREAM.CREATE.{name}", config)
                except ApiError as create_exc:
                    if create_exc.err_code == STREAM_NAME_IN_USE:
                        continue  # created meanwhile by someone else: update it instead
                    raise create_exc.to_windshift(context) from None
                logger.info("created stream %s", name, extra={"stream": name})
                return StreamInfo.from_api(created)
            return await self._update_stream(name, current, config, context)
        raise ConfigurationConflictError(f"{context}: the stream kept changing; try again")

    async def _update_stream(
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
            raise exc.to_windshift(context) from None
        logger.info("updated stream %s", name, extra={"stream": name})
        return StreamInfo.from_api(updated)

    async def stream_info(self, name: str) -> StreamInfo:
        """Describe a stream.

        Raises:
            NotFoundError: no stream has this name.
        """
        validate_name("stream", name)
        try:
            return StreamInfo.from_api(await self._api.request(f"STREAM.INFO.{name}"))
        except ApiError as exc:
            raise exc.to_windshift(f"stream {name!r}") from None

    async def delete_stream(self, name: str) -> None:
        """Delete a stream with all its events and consumers.

        Raises:
            NotFoundError: no stream has this name.
        """
        validate_name("stream", name)
        try:
            await self._api.request(f"STREAM.DELETE.{name}")
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise NotFoundError(f"stream {name!r} does not exist") from None
            raise exc.to_windshift(f"delete stream {name!r}") from None
        logger.info("deleted stream %s", name, extra={"stream": name})


def _same_config(wanted: dict[str, Any], existing: dict[str, Any]) -> bool:
    # JetStream leaves zero values out of the configuration it reports
    # (``discard_new_per_subject: false``...): a missing key equals a falsy one.
    return all(
        wanted.get(key) == existing.get(key) or (not wanted.get(key) and not existing.get(key))
        for key in wanted.keys() | existing.keys()
    )


__all__ = ["DEFAULT_DEDUPLICATION_WINDOW", "StreamInfo", "StreamSource", "StreamsMixin"]
