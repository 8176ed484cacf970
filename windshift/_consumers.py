"""Consumers: who reads which subjects of a stream, from where, and how patiently."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from windshift._core import ClientBase
from windshift._deadletters import METADATA_ATTEMPTS, METADATA_STREAM, DeadLetterPolicy
from windshift._jsapi import CONSUMER_NOT_FOUND, STREAM_NAME_IN_USE, STREAM_NOT_FOUND, ApiError
from windshift._names import quote_value, validate_name, validate_subjects
from windshift._pointers import StreamPointer
from windshift._streams import DEFAULT_DEDUPLICATION_WINDOW, build_stream_config
from windshift._wire import duration_to_nanos, nanos_to_duration
from windshift.errors import NotFoundError, ValidationError

logger = logging.getLogger("windshift.consumers")

DEFAULT_PROCESSING_TIMEOUT = timedelta(seconds=30)
EPHEMERAL_INACTIVE_THRESHOLD = timedelta(hours=1)

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
        subjects: the subjects it reads (empty: all of the stream's).
        processing_timeout: how long an event may stay unsettled before it
            is redelivered.
        max_delivery_attempts: how often an event is delivered at most
            (None: no limit).
        pending_events: events not yet delivered to anyone.
        unsettled_events: events delivered and not yet settled.
        redelivered_events: events delivered more than once and not yet settled.
        inactive_threshold: the consumer is removed after this long unread
            (None: never).
        dead_letter_stream: where events it gives up on are moved (None: they
            are dropped).
    """

    id: str
    stream: str
    durable: bool
    subjects: list[str]
    processing_timeout: timedelta
    max_delivery_attempts: int | None
    pending_events: int
    unsettled_events: int
    redelivered_events: int
    inactive_threshold: timedelta | None
    dead_letter_stream: str | None

    @classmethod
    def from_api(cls, answer: dict[str, Any]) -> ConsumerInfo:
        config = answer["config"]
        subjects = list(config.get("filter_subjects") or [])
        if not subjects and config.get("filter_subject"):
            subjects = [config["filter_subject"]]
        max_deliver = int(config.get("max_deliver", -1))
        policy = DeadLetterPolicy.of(config)
        if policy is not None and policy.max_delivery_attempts:
            max_deliver = policy.max_delivery_attempts
        return cls(
            id=answer["name"],
            stream=answer["stream_name"],
            durable=bool(config.get("durable_name")),
            subjects=subjects,
            processing_timeout=nanos_to_duration(int(config.get("ack_wait", 0))),
            max_delivery_attempts=max_deliver if max_deliver > 0 else None,
            pending_events=int(answer.get("num_pending", 0)),
            unsettled_events=int(answer.get("num_ack_pending", 0)),
            redelivered_events=int(answer.get("num_redelivered", 0)),
            inactive_threshold=nanos_to_duration(int(config["inactive_threshold"]))
            if config.get("inactive_threshold")
            else None,
            dead_letter_stream=policy.stream if policy else None,
        )


def build_consumer_config(
    stream: str,
    name: str | None,
    *,
    subjects: Sequence[str] | None,
    start: StreamPointer | None,
    processing_timeout: timedelta,
    max_delivery_attempts: int | None,
    inactive_threshold: timedelta | None,
    dead_letter_stream: str | None = None,
) -> dict[str, Any]:
    """Validate Windshift's consumer options and build the JetStream configuration."""
    validate_name("stream", stream)
    if name is not None:
        validate_name("consumer", name)
    filters = validate_subjects(subjects, what="consumer subject")
    if start is None:
        start = StreamPointer.end()
    if not isinstance(start, StreamPointer):
        raise ValidationError(f"start must be a StreamPointer, got {quote_value(start)}")
    ack_wait = duration_to_nanos(processing_timeout, "processing_timeout")
    if ack_wait < 1_000_000:
        raise ValidationError(
            f"processing_timeout must be at least 1 millisecond, got {processing_timeout}"
        )
    if max_delivery_attempts is not None and (
        isinstance(max_delivery_attempts, bool)
        or not isinstance(max_delivery_attempts, int)
        or max_delivery_attempts < 1
    ):
        raise ValidationError(
            f"max_delivery_attempts must be 1 or more, got {quote_value(max_delivery_attempts)}"
        )
    metadata: dict[str, str] = {}
    if dead_letter_stream is not None:
        validate_name("dead-letter stream", dead_letter_stream)
        if dead_letter_stream == stream:
            raise ValidationError(
                f"dead_letter_stream must differ from the stream, got {dead_letter_stream!r}"
            )
        # The library counts the attempts itself, so that the delivery after
        # the last one can still be moved (JetStream would just stop).
        metadata[METADATA_STREAM] = dead_letter_stream
        if max_delivery_attempts is not None:
            metadata[METADATA_ATTEMPTS] = str(max_delivery_attempts)
        max_delivery_attempts = None
    config: dict[str, Any] = {
        "ack_policy": "explicit",
        "ack_wait": ack_wait,
        "max_deliver": max_delivery_attempts or -1,
        "metadata": metadata,
        "replay_policy": "instant",
        "filter_subjects": filters,
        **start.consumer_fields(),
    }
    if name is not None:
        config["name"] = name
        config["durable_name"] = name
        if inactive_threshold is not None:
            config["inactive_threshold"] = duration_to_nanos(
                inactive_threshold, "inactive_threshold"
            )
    else:
        config["inactive_threshold"] = duration_to_nanos(
            inactive_threshold or EPHEMERAL_INACTIVE_THRESHOLD, "inactive_threshold"
        )
    return config


class ConsumersMixin(ClientBase):
    """Consumer management methods of :class:`~windshift.Client`."""

    async def ensure_consumer(
        self,
        stream: str,
        name: str | None = None,
        *,
        subjects: Sequence[str] | None = None,
        start: StreamPointer | None = None,
        processing_timeout: timedelta = DEFAULT_PROCESSING_TIMEOUT,
        max_delivery_attempts: int | None = None,
        inactive_threshold: timedelta | None = None,
        dead_letter_stream: str | None = None,
    ) -> ConsumerInfo:
        """Create a consumer of ``stream``, or update a durable one.

        Example:
            >>> consumer = await client.ensure_consumer(
            ...     "orders", "order-processor", subjects=["orders.created"],
            ...     start=StreamPointer.start())
            >>> consumer.id
            'order-processor'

        Without a name the consumer is ephemeral: the server names it, and
        removes it after an hour nobody reads it (``inactive_threshold``
        changes that). With a name it is durable and never expires unless
        ``inactive_threshold`` is given. Updating a durable consumer (its
        subjects, timeout, attempts) keeps its position; ``start`` only
        matters when it is created.

        Args:
            stream: the stream to read.
            name: the durable consumer's name; None for an ephemeral one.
            subjects: read only these subjects (wildcards allowed); all when empty.
            start: where reading starts; new events only by default.
            processing_timeout: how long an event may stay unsettled before
                it is delivered again (default 30 s).
            max_delivery_attempts: deliver an event at most this often.
            inactive_threshold: remove the consumer after this long unread.
            dead_letter_stream: move events rejected permanently, or out of
                attempts, to this stream (created, collecting
                ``<name>.>``, if missing). See :mod:`windshift.deadletters`.

        Raises:
            ValidationError: a bad name, subject or option.
            NotFoundError: the stream does not exist.
            UnavailableError: NATS did not answer.
        """
        config = build_consumer_config(
            stream,
            name,
            subjects=subjects,
            start=start,
            processing_timeout=processing_timeout,
            max_delivery_attempts=max_delivery_attempts,
            inactive_threshold=inactive_threshold,
            dead_letter_stream=dead_letter_stream,
        )
        if dead_letter_stream is not None:
            await self._ensure_dead_letter_stream(dead_letter_stream)
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
                raise NotFoundError(f"{context}: stream {stream!r} does not exist") from None
            raise exc.to_windshift(context) from None
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
                raise exc.to_windshift(f"dead-letter stream {name!r}") from None
        config = build_stream_config(
            name,
            subjects=[f"{name}.>"],
            mirror=None,
            sources=None,
            max_age=None,
            max_events=None,
            max_events_per_subject=None,
            max_bytes=None,
            discard="old",
            discard_new_per_subject=False,
            storage="file",
            replicas=1,
            deduplication_window=DEFAULT_DEDUPLICATION_WINDOW,
            max_event_size=None,
        )
        try:
            await self._api.request(f"STREAM.CREATE.{name}", config)
        except ApiError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise exc.to_windshift(f"create dead-letter stream {name!r}") from None
            return  # created meanwhile by someone else
        logger.info("created dead-letter stream %s", name, extra={"stream": name})

    async def consumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        """Describe a consumer.

        Raises:
            NotFoundError: the stream or the consumer does not exist.
        """
        validate_name("stream", stream)
        validate_name("consumer", consumer)
        try:
            return ConsumerInfo.from_api(
                await self._api.request(f"CONSUMER.INFO.{stream}.{consumer}")
            )
        except ApiError as exc:
            raise exc.to_windshift(f"consumer {consumer!r} on stream {stream!r}") from None

    async def delete_consumer(self, stream: str, consumer: str) -> None:
        """Delete a consumer (its position is lost).

        Raises:
            NotFoundError: the stream or the consumer does not exist.
        """
        validate_name("stream", stream)
        validate_name("consumer", consumer)
        try:
            await self._api.request(f"CONSUMER.DELETE.{stream}.{consumer}")
        except ApiError as exc:
            if exc.code == 404:
                raise NotFoundError(
                    f"consumer {consumer!r} on stream {stream!r} does not exist"
                ) from None
            raise exc.to_windshift(f"delete consumer {consumer!r} on {stream!r}") from None
        logger.info(
            "deleted consumer %s on %s",
            consumer,
            stream,
            extra={"stream": stream, "consumer": consumer},
        )


__all__ = [
    "DEFAULT_PROCESSING_TIMEOUT",
    "EPHEMERAL_INACTIVE_THRESHOLD",
    "ConsumerInfo",
    "ConsumersMixin",
]
