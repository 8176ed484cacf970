"""Consumers: create, update, describe and delete them (the Consumers service of a client)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from windshift._connection import Connection
from windshift._jsapi import (
    CONSUMER_NOT_FOUND,
    NO_MESSAGE_FOUND,
    STREAM_NAME_IN_USE,
    STREAM_NOT_FOUND,
    ApiError,
    StoredMessage,
)
from windshift._names import validate_name
from windshift._options import ConsumerOptions, StreamOptions
from windshift._wire import parse_time
from windshift.errors import ConsumerNotFoundError, StreamNotFoundError

logger = logging.getLogger("windshift.consumers")

# Fields JetStream does not let an existing consumer change: kept from the
# current configuration when a durable consumer is updated.
_FIXED_FIELDS = ("deliver_policy", "opt_start_seq", "opt_start_time")


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """A consumer of a stream.

    Attributes:
        id: the consumer's id: its name when durable, the server-assigned
            name when ephemeral. Pass it to ``subscribe``.
        stream: the stream it reads.
        durable: whether it is kept while nobody reads it.
        options: its options, read back from JetStream (see :class:`ConsumerOptions`).
        pending_events: events not yet delivered to anyone.
        unsettled_events: events delivered and not yet settled.
        redelivered_events: events delivered more than once and not yet settled.
        delivered_id: the id of the last event delivered (0: none yet).
        acknowledged_id: the ack floor: every event up to this id is settled.
        config: the raw JetStream configuration.
    """

    id: str
    stream: str
    durable: bool
    options: ConsumerOptions
    pending_events: int
    unsettled_events: int
    redelivered_events: int
    delivered_id: int = 0
    acknowledged_id: int = 0
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def subjects(self) -> list[str]:
        """The subjects it reads (empty: all of the stream's)."""
        return list(self.options.subjects or ())

    @property
    def processing_timeout(self) -> timedelta:
        """How long an event may stay unsettled before it is redelivered."""
        return self.options.processing_timeout

    @property
    def max_delivery_attempts(self) -> int | None:
        """How often an event is delivered at most (None: no limit)."""
        return self.options.max_delivery_attempts

    @property
    def inactive_threshold(self) -> timedelta | None:
        """The consumer is removed after this long unread (None: never)."""
        return self.options.inactive_threshold

    @property
    def dead_letter_stream(self) -> str | None:
        """Where events it gives up on are moved (None: they are dropped)."""
        return self.options.dead_letter_stream

    @classmethod
    def from_api(cls, answer: dict[str, Any]) -> ConsumerInfo:
        config = answer["config"]
        return cls(
            id=answer["name"],
            stream=answer["stream_name"],
            durable=bool(config.get("durable_name")),
            options=ConsumerOptions.from_config(config),
            pending_events=int(answer.get("num_pending", 0)),
            unsettled_events=int(answer.get("num_ack_pending", 0)),
            redelivered_events=int(answer.get("num_redelivered", 0)),
            delivered_id=int((answer.get("delivered") or {}).get("stream_seq", 0)),
            acknowledged_id=int((answer.get("ack_floor") or {}).get("stream_seq", 0)),
            config=config,
        )


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """How far a consumer is behind its stream, in events and in time.

    Example:
        >>> lag = await client.consumer_lag("orders", "order-processor")
        >>> lag.events, lag.seconds
        (120, 4.2)

    Attributes:
        info: the consumer, as read for this lag.
        events: events it has not processed yet: not yet delivered, or
            delivered and not yet settled.
        oldest_id: the id of the oldest event it has not processed (None
            when it is up to date).
        oldest_stored: when the stream stored that event.
        seconds: how long that event has waited (0.0 when up to date).
    """

    info: ConsumerInfo
    events: int
    oldest_id: int | None
    oldest_stored: datetime | None
    seconds: float


class Consumers:
    """Consumer management over one connection (behind ``Client.ensure_consumer`` and friends)."""

    def __init__(self, connection: Connection) -> None:
        self._api = connection.api
        self._limits = connection.settings.limits

    async def ensure(self, stream: str, name: str | None, options: ConsumerOptions) -> ConsumerInfo:
        """Create a consumer, or update a durable one; see ``Client.ensure_consumer``."""
        config = options.to_config(stream, name, self._limits)
        if options.dead_letter_stream is not None:
            await self._ensure_dead_letter_stream(options.dead_letter_stream)
        context = f"ensure consumer {name or '(ephemeral)'!r} on stream {stream!r}"
        try:
            if name is None:
                answer = await self._api.request(
                    f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config}
                )
                logger.info(
                    "created ephemeral consumer %s on %s",
                    answer["name"],
                    stream,
                    extra={"stream": stream, "consumer": answer["name"]},
                )
                return ConsumerInfo.from_api(answer)
            try:
                current = await self._api.request(f"CONSUMER.INFO.{stream}.{name}")
            except ApiError as exc:
                if exc.err_code != CONSUMER_NOT_FOUND:
                    raise
                action = "create"
            else:
                action = "update"
                existing = current["config"]
                for key in _FIXED_FIELDS:
                    config.pop(key, None)
                    if key in existing:
                        config[key] = existing[key]
            answer = await self._api.request(
                f"CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": config}
            )
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise StreamNotFoundError(
                    f"{context}: stream {stream!r} does not exist", stream=stream
                ) from None
            raise exc.to_windshift(context, stream=stream) from None
        if action == "update" and answer.get("config") == current.get("config"):
            logger.debug("consumer %s on %s is unchanged", name, stream)
        else:
            logger.info(
                "%sd consumer %s on %s",
                action,
                name,
                stream,
                extra={"stream": stream, "consumer": name},
            )
        return ConsumerInfo.from_api(answer)

    async def _ensure_dead_letter_stream(self, name: str) -> None:
        try:
            await self._api.request(f"STREAM.INFO.{name}")
            return
        except ApiError as exc:
            if exc.err_code != STREAM_NOT_FOUND:
                raise exc.to_windshift(f"dead-letter stream {name!r}", stream=name) from None
        config = StreamOptions(subjects=[f"{name}.>"]).to_config(name)
        try:
            await self._api.request(f"STREAM.CREATE.{name}", config)
        except ApiError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise exc.to_windshift(f"create dead-letter stream {name!r}", stream=name) from None
            return  # created meanwhile by someone else
        logger.info("created dead-letter stream %s", name, extra={"stream": name})

    async def info(self, stream: str, consumer: str) -> ConsumerInfo:
        """Describe a consumer; see ``Client.consumer_info``."""
        validate_name("stream", stream)
        validate_name("consumer", consumer)
        try:
            return ConsumerInfo.from_api(
                await self._api.request(f"CONSUMER.INFO.{stream}.{consumer}")
            )
        except ApiError as exc:
            raise exc.to_windshift(
                f"consumer {consumer!r} on stream {stream!r}", stream=stream, consumer=consumer
            ) from None

    async def list(self, stream: str) -> list[ConsumerInfo]:
        """Every consumer of a stream; see ``Client.consumers``."""
        validate_name("stream", stream)
        consumers: list[ConsumerInfo] = []
        while True:
            try:
                answer = await self._api.request(
                    f"CONSUMER.LIST.{stream}", {"offset": len(consumers)}
                )
            except ApiError as exc:
                raise exc.to_windshift(f"consumers of stream {stream!r}", stream=stream) from None
            page = answer.get("consumers") or []
            consumers.extend(ConsumerInfo.from_api(item) for item in page)
            if not page or len(consumers) >= int(answer.get("total", 0)):
                return sorted(consumers, key=lambda consumer: consumer.id)

    async def lag(self, consumer: ConsumerInfo) -> ConsumerLag:
        """How far ``consumer`` is behind; see ``Client.consumer_lag``."""
        events = consumer.pending_events + consumer.unsettled_events
        oldest: StoredMessage | None = None
        if events:
            # Everything up to the ack floor is settled, so the oldest event
            # not processed is the first one after it that the consumer reads.
            after = consumer.acknowledged_id + 1
            for subject in consumer.subjects or [">"]:
                try:
                    found = await self._api.get_message(
                        consumer.stream, {"seq": after, "next_by_subj": subject}
                    )
                except ApiError as exc:
                    if exc.err_code == NO_MESSAGE_FOUND:
                        continue
                    raise exc.to_windshift(
                        f"lag of consumer {consumer.id!r} on stream {consumer.stream!r}",
                        stream=consumer.stream,
                    ) from None
                if oldest is None or found.sequence < oldest.sequence:
                    oldest = found
        if oldest is None:
            return ConsumerLag(consumer, events, None, None, 0.0)
        stored = parse_time(oldest.time)
        waited = max(0.0, (datetime.now(UTC) - stored).total_seconds())
        return ConsumerLag(consumer, events, oldest.sequence, stored, waited)

    async def delete(self, stream: str, consumer: str) -> None:
        """Delete a consumer; see ``Client.delete_consumer``."""
        validate_name("stream", stream)
        validate_name("consumer", consumer)
        try:
            await self._api.request(f"CONSUMER.DELETE.{stream}.{consumer}")
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise StreamNotFoundError(
                    f"consumer {consumer!r} on stream {stream!r} does not exist: "
                    f"stream {stream!r} does not exist",
                    stream=stream,
                ) from None
            if exc.code == 404:
                raise ConsumerNotFoundError(
                    f"consumer {consumer!r} on stream {stream!r} does not exist",
                    stream=stream,
                    consumer=consumer,
                ) from None
            raise exc.to_windshift(
                f"delete consumer {consumer!r} on {stream!r}", stream=stream, consumer=consumer
            ) from None
        logger.info(
            "deleted consumer %s on %s",
            consumer,
            stream,
            extra={"stream": stream, "consumer": consumer},
        )


__all__ = ["ConsumerInfo", "ConsumerLag", "Consumers"]
