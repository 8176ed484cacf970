"""The options of a stream and of a consumer: one frozen dataclass each, and one place per option.

Each class is what the library, the gRPC façade and the read-back of
:class:`~windshift.StreamInfo` / :class:`~windshift.ConsumerInfo` share:

* ``to_config`` validates the options and builds the JetStream configuration;
* ``from_config`` reads them back from a JetStream configuration (one made by
  windshift, by a Go Windshift service or by hand);
* the ``*OptionArgs`` TypedDicts type the keyword arguments of
  ``Client.ensure_stream`` and ``Client.ensure_consumer`` (a test keeps them
  equal to the dataclass fields).

Adding an option is one field here, with its JetStream key in both
directions (see CONTRIBUTING.md, "Add an option").

:class:`Limits` bounds what one configuration may ask of nats-server (how
many subjects, sources and filters, how long and deep a filter); ``to_config``
enforces the client's limits (``ClientSettings.limits``).

Example:
    >>> options = StreamOptions(subjects=["orders.>"], max_age=timedelta(days=30))
    >>> await client.ensure_stream("orders", options)
    >>> await client.ensure_stream("orders", subjects=["orders.>"], max_age=timedelta(days=30))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypedDict

from windshift._names import (
    MAX_SUBJECT_LENGTH,
    quote_value,
    subject_list,
    validate_name,
    validate_subject,
)
from windshift._pointers import StreamPointer
from windshift._wire import duration_to_nanos, nanos_to_duration, parse_time
from windshift.errors import ValidationError

Discard = Literal["old", "new"]
Storage = Literal["file", "memory"]
Compression = Literal["none", "s2"]

DEFAULT_DEDUPLICATION_WINDOW = timedelta(minutes=2)
DEFAULT_PROCESSING_TIMEOUT = timedelta(seconds=30)
EPHEMERAL_INACTIVE_THRESHOLD = timedelta(hours=1)

# Where a consumer keeps its dead-letter settings (JetStream consumer metadata).
METADATA_DEAD_LETTER_STREAM = "windshift.dead_letter_stream"
METADATA_MAX_DELIVERY_ATTEMPTS = "windshift.max_delivery_attempts"

# A limit above this protects nothing; it only has to stay a number.
_MOST_OF_A_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How much one stream or consumer configuration may ask of nats-server.

    nats-server checks every subject of a stream against the stream's other
    subjects and against those of every other stream, and a consumer's or a
    source's filters against each other: the cost grows with the square of
    their number and with their length. A stream of 20,000 subjects costs it
    ten CPU-seconds and more, during which other clients' JetStream requests
    stall. These limits keep each configuration cheap; anything beyond them
    is refused with a :class:`~windshift.ValidationError` naming the limit
    and the count, before anything reaches NATS. The defaults leave real
    configurations plenty of room (a stream of 256 subjects is created in
    milliseconds).

    Set them per client with ``windshift.connect(..., limits=Limits(...))``;
    ``windshift-grpc serve`` takes them from its ``WINDSHIFT_MAX_*`` settings.

    Example:
        >>> client = await windshift.connect(url, limits=Limits(max_stream_subjects=1000))

    Raises:
        ValidationError: a limit is not a whole number in its range.
    """

    max_stream_subjects: int = 256
    """Subjects one stream may collect."""
    max_stream_sources: int = 64
    """Sources one aggregate stream may copy from."""
    max_filter_subjects: int = 256
    """Subjects one consumer may read, and filter subjects of a mirror or of all the
    sources of an aggregate together."""
    max_subject_length: int = 256
    """Characters in each subject of those lists (at most ``MAX_SUBJECT_LENGTH``, 3072)."""
    max_subject_tokens: int = 16
    """``.``-separated tokens in each subject of those lists."""

    def __post_init__(self) -> None:
        for what, highest in (
            ("max_stream_subjects", _MOST_OF_A_LIMIT),
            ("max_stream_sources", _MOST_OF_A_LIMIT),
            ("max_filter_subjects", _MOST_OF_A_LIMIT),
            ("max_subject_length", MAX_SUBJECT_LENGTH),
            ("max_subject_tokens", MAX_SUBJECT_LENGTH // 2),
        ):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= highest:
                raise ValidationError(
                    f"{what} must be a whole number from 1 to {highest}, got {quote_value(value)}"
                )


def _filters(
    limits: Limits, subjects: Iterable[str] | None, *, owner: str, what: str, limit: str
) -> list[str]:
    """Check a list of subject filters against ``limits`` and the rules of subjects.

    Args:
        limits: the client's limits.
        subjects: the list.
        owner: whose list it is, for messages ("stream 'orders'").
        what: what one subject is, for messages ("stream subject").
        limit: the field of :class:`Limits` that bounds the list's length.

    Raises:
        ValidationError: too many subjects, one too long or too deep, or malformed.
    """
    values = subject_list(subjects, what=what)
    _count(limits, len(values), owner=owner, what=f"{what}s", limit=limit)
    for value in values:
        if isinstance(value, str):  # anything else is refused by validate_subject
            _check_size(limits, value, what)
        validate_subject(value, wildcards=True, what=what)
    return values


def _count(limits: Limits, count: int, *, owner: str, what: str, limit: str) -> None:
    """Refuse ``count`` things of ``owner`` when more than the limit ``limit`` allows."""
    most: int = getattr(limits, limit)
    if count > most:
        raise ValidationError(f"{owner}: {count} {what}, more than the limit of {most} ({limit})")


def _check_size(limits: Limits, subject: str, what: str) -> None:
    if len(subject) > limits.max_subject_length:
        raise ValidationError(
            f"{what} {quote_value(subject)} is {len(subject)} characters long, more than "
            f"the limit of {limits.max_subject_length} (max_subject_length)"
        )
    tokens = subject.count(".") + 1
    if tokens > limits.max_subject_tokens:
        raise ValidationError(
            f"{what} {quote_value(subject)} has {tokens} tokens, more than the limit of "
            f"{limits.max_subject_tokens} (max_subject_tokens)"
        )


#: The limits of a client that is not given any.
DEFAULT_LIMITS = Limits()


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

    def to_config(self, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
        """The JetStream ``StreamSource`` JSON for this source.

        Raises:
            ValidationError: a bad name, start or filter subject, or more
                filter subjects than ``limits.max_filter_subjects``.
        """
        validate_name("source stream", self.name)
        filters = _filters(
            limits,
            self.filter_subjects,
            owner=f"source stream {self.name!r}",
            what="filter subject",
            limit="max_filter_subjects",
        )
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

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StreamSource:
        """Read a source back from its JetStream JSON."""
        start: StreamPointer | None = None
        if config.get("opt_start_seq"):
            start = StreamPointer.offset(int(config["opt_start_seq"]))
        elif config.get("opt_start_time"):
            start = StreamPointer.time(parse_time(config["opt_start_time"]))
        filters: list[str] = []
        if config.get("filter_subject"):
            filters.append(config["filter_subject"])
        filters.extend(t["src"] for t in config.get("subject_transforms") or () if "src" in t)
        return cls(str(config["name"]), start=start, filter_subjects=tuple(filters))


def _limit(value: int | None, what: str) -> int:
    """A limit for JetStream: -1 when unset."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(
            f"{what} must be a whole number of 1 or more, got {quote_value(value)}"
        )
    return value


def _read_limit(config: Mapping[str, Any], key: str) -> int | None:
    value = int(config.get(key, -1) or -1)
    return value if value > 0 else None


def _read_duration(config: Mapping[str, Any], key: str) -> timedelta | None:
    value = int(config.get(key, 0) or 0)
    return nanos_to_duration(value) if value > 0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOptions:
    """How a stream collects and keeps events.

    Every :meth:`~windshift.Client.ensure_stream` states the whole
    configuration: an option left out takes its default (a limit that was
    set is removed).

    Example:
        >>> StreamOptions(subjects=["orders.>"], max_age=timedelta(days=30), replicas=3)
    """

    subjects: Sequence[str] | None = None
    """Subjects the stream collects (``*`` and ``>`` allowed); exclusive with ``mirror`` and ``sources``."""
    mirror: StreamSource | None = None
    """Copy another stream, event for event (ids included)."""
    sources: Sequence[StreamSource] | None = None
    """Aggregate several streams into this one."""
    max_age: timedelta | None = None
    """Remove events older than this (None: keep them forever)."""
    max_events: int | None = None
    """Keep at most this many events."""
    max_events_per_subject: int | None = None
    """Keep at most this many events per subject."""
    max_bytes: int | None = None
    """Keep at most this many bytes."""
    discard: Discard = "old"
    """At a limit, drop the oldest events ("old") or refuse new ones ("new")."""
    discard_new_per_subject: bool = False
    """Refuse new events on a subject that holds ``max_events_per_subject`` (needs ``discard="new"``)."""
    storage: Storage = "file"
    """"file" or "memory"; cannot change once the stream exists."""
    replicas: int = 1
    """Copies kept in a NATS cluster (1 to 5)."""
    deduplication_window: timedelta = DEFAULT_DEDUPLICATION_WINDOW
    """How long idempotency keys are remembered (at most ``max_age``)."""
    max_event_size: int | None = None
    """Refuse events larger than this many bytes (headers included)."""
    compression: Compression = "none"
    """How the stream's storage is compressed: "none" or "s2" (S2, fast, often 2-4x smaller
    for text and JSON payloads; may change on an existing stream)."""

    def to_config(self, name: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
        """Validate the options and build the JetStream configuration of stream ``name``.

        Args:
            name: the stream's name.
            limits: how many subjects, sources and filters it may have.

        Raises:
            ValidationError: a bad name, subject, value or combination, or
                more than ``limits`` allows.
        """
        validate_name("stream", name)
        chosen = [
            what
            for what, value in (
                ("subjects", self.subjects),
                ("mirror", self.mirror),
                ("sources", self.sources),
            )
            if value
        ]
        if len(chosen) != 1:
            raise ValidationError(
                f"stream {name!r} needs exactly one of subjects, mirror or sources, got "
                + (", ".join(chosen) if chosen else "none")
            )
        if self.discard not in ("old", "new"):
            raise ValidationError(
                f"discard must be 'old' or 'new', got {quote_value(self.discard)}"
            )
        if self.storage not in ("file", "memory"):
            raise ValidationError(
                f"storage must be 'file' or 'memory', got {quote_value(self.storage)}"
            )
        if self.compression not in ("none", "s2"):
            raise ValidationError(
                f"compression must be 'none' or 's2', got {quote_value(self.compression)}"
            )
        replicas = self.replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
            raise ValidationError(f"replicas must be between 1 and 5, got {quote_value(replicas)}")
        if not isinstance(self.discard_new_per_subject, bool):
            raise ValidationError(
                "discard_new_per_subject must be True or False, got "
                + quote_value(self.discard_new_per_subject)
            )
        if self.discard_new_per_subject and self.max_events_per_subject is None:
            raise ValidationError("discard_new_per_subject needs max_events_per_subject to be set")
        if self.discard_new_per_subject and self.discard != "new":
            raise ValidationError("discard_new_per_subject needs discard='new'")
        window = duration_to_nanos(self.deduplication_window, "deduplication_window")
        age = 0 if self.max_age is None else duration_to_nanos(self.max_age, "max_age")
        config: dict[str, Any] = {
            "name": name,
            "retention": "limits",
            "max_consumers": -1,
            "max_msgs": _limit(self.max_events, "max_events"),
            "max_bytes": _limit(self.max_bytes, "max_bytes"),
            "max_age": age,
            "max_msgs_per_subject": _limit(self.max_events_per_subject, "max_events_per_subject"),
            "max_msg_size": _limit(self.max_event_size, "max_event_size"),
            "discard": self.discard,
            "discard_new_per_subject": self.discard_new_per_subject,
            "storage": self.storage,
            "num_replicas": replicas,
            "duplicate_window": window if not age else min(window, age),
            "compression": self.compression,
        }
        if self.subjects:
            config["subjects"] = _filters(
                limits,
                self.subjects,
                owner=f"stream {name!r}",
                what="stream subject",
                limit="max_stream_subjects",
            )
        elif self.mirror:
            if not isinstance(self.mirror, StreamSource):
                raise ValidationError(
                    f"mirror must be a StreamSource, got {quote_value(self.mirror)}"
                )
            config["mirror"] = self.mirror.to_config(limits)
        else:
            config["sources"] = _sources_config(name, self.sources, limits)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StreamOptions:
        """The options of an existing stream, from its JetStream configuration."""
        mirror = config.get("mirror")
        sources = config.get("sources")
        return cls(
            subjects=tuple(config.get("subjects") or ()) or None,
            mirror=StreamSource.from_config(mirror) if mirror else None,
            sources=tuple(StreamSource.from_config(s) for s in sources) if sources else None,
            max_age=_read_duration(config, "max_age"),
            max_events=_read_limit(config, "max_msgs"),
            max_events_per_subject=_read_limit(config, "max_msgs_per_subject"),
            max_bytes=_read_limit(config, "max_bytes"),
            discard="new" if config.get("discard") == "new" else "old",
            discard_new_per_subject=bool(config.get("discard_new_per_subject")),
            storage="memory" if config.get("storage") == "memory" else "file",
            replicas=int(config.get("num_replicas") or 1),
            deduplication_window=nanos_to_duration(int(config.get("duplicate_window") or 0)),
            max_event_size=_read_limit(config, "max_msg_size"),
            compression="s2" if config.get("compression") == "s2" else "none",
        )


def _sources_config(
    name: str, sources: Sequence[StreamSource] | None, limits: Limits
) -> list[dict[str, Any]]:
    """The JetStream ``sources`` of stream ``name``, within ``limits``."""
    checked = _sources(sources)
    owner = f"stream {name!r}"
    _count(limits, len(checked), owner=owner, what="sources", limit="max_stream_sources")
    # Each source's filters are checked on their own (to_config); together
    # they are one list for nats-server to check as well.
    filters = sum(
        len(subject_list(source.filter_subjects, what="filter subject")) for source in checked
    )
    _count(
        limits,
        filters,
        owner=owner,
        what="filter subjects in its sources together",
        limit="max_filter_subjects",
    )
    return [source.to_config(limits) for source in checked]


def _sources(sources: Sequence[StreamSource] | None) -> Sequence[StreamSource]:
    if isinstance(sources, StreamSource):
        raise ValidationError("sources must be a list of StreamSource, got a single one")
    if not isinstance(sources, Sequence) or isinstance(sources, str | bytes):
        raise ValidationError(f"sources must be a list of StreamSource, got {quote_value(sources)}")
    for source in sources:
        if not isinstance(source, StreamSource):
            raise ValidationError(
                f"sources must hold StreamSource values, got {quote_value(source)}"
            )
    return sources


class StreamOptionArgs(TypedDict, total=False):
    """The keyword arguments of ``Client.ensure_stream``: the fields of :class:`StreamOptions`."""

    subjects: Sequence[str] | None
    mirror: StreamSource | None
    sources: Sequence[StreamSource] | None
    max_age: timedelta | None
    max_events: int | None
    max_events_per_subject: int | None
    max_bytes: int | None
    discard: Discard
    discard_new_per_subject: bool
    storage: Storage
    replicas: int
    deduplication_window: timedelta
    max_event_size: int | None
    compression: Compression


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerOptions:
    """What a consumer reads, from where, and how patiently.

    Example:
        >>> ConsumerOptions(subjects=["orders.created"], start=StreamPointer.start(),
        ...                 max_delivery_attempts=5, dead_letter_stream="orders-dead")
    """

    subjects: Sequence[str] | None = None
    """Read only these subjects of the stream (wildcards allowed); all of them when empty."""
    start: StreamPointer | None = None
    """Where a new consumer starts reading; new events only by default (ignored on update)."""
    processing_timeout: timedelta = DEFAULT_PROCESSING_TIMEOUT
    """How long an event may stay unsettled (and unpinged) before it is delivered again."""
    max_delivery_attempts: int | None = None
    """Deliver an event at most this often (None: no limit)."""
    inactive_threshold: timedelta | None = None
    """Remove the consumer after this long without readers (None: never for a durable one,
    an hour for an ephemeral one)."""
    dead_letter_stream: str | None = None
    """Move events rejected permanently, or out of attempts, to this stream (created,
    collecting ``<name>.>``, if missing). See :class:`~windshift.DeadLetterQueue`."""

    def to_config(
        self, stream: str, name: str | None, limits: Limits = DEFAULT_LIMITS
    ) -> dict[str, Any]:
        """Validate the options and build the JetStream configuration of a consumer.

        Args:
            stream: the consumer's stream.
            name: its durable name; None for an ephemeral consumer.
            limits: how many subjects it may read, and how long and deep they may be.

        Raises:
            ValidationError: a bad name, subject, value or combination, or
                more than ``limits`` allows.
        """
        validate_name("stream", stream)
        if name is not None:
            validate_name("consumer", name)
        filters = _filters(
            limits,
            self.subjects,
            owner=f"consumer {name or '(ephemeral)'!r} on stream {stream!r}",
            what="consumer subject",
            limit="max_filter_subjects",
        )
        start = StreamPointer.end() if self.start is None else self.start
        if not isinstance(start, StreamPointer):
            raise ValidationError(f"start must be a StreamPointer, got {quote_value(start)}")
        ack_wait = duration_to_nanos(self.processing_timeout, "processing_timeout")
        if ack_wait < 1_000_000:
            raise ValidationError(
                f"processing_timeout must be at least 1 millisecond, got {self.processing_timeout}"
            )
        attempts = self.max_delivery_attempts
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            raise ValidationError(
                f"max_delivery_attempts must be 1 or more, got {quote_value(attempts)}"
            )
        metadata: dict[str, str] = {}
        if self.dead_letter_stream is not None:
            validate_name("dead-letter stream", self.dead_letter_stream)
            if self.dead_letter_stream == stream:
                raise ValidationError(
                    "dead_letter_stream must differ from the stream, got "
                    f"{self.dead_letter_stream!r}"
                )
            # The library counts the attempts itself, so that the delivery after
            # the last one can still be moved (JetStream would just stop).
            metadata[METADATA_DEAD_LETTER_STREAM] = self.dead_letter_stream
            if attempts is not None:
                metadata[METADATA_MAX_DELIVERY_ATTEMPTS] = str(attempts)
            attempts = None
        config: dict[str, Any] = {
            "ack_policy": "explicit",
            "ack_wait": ack_wait,
            "max_deliver": attempts or -1,
            "metadata": metadata,
            "replay_policy": "instant",
            "filter_subjects": filters,
            **start.consumer_fields(),
        }
        threshold = self.inactive_threshold
        if name is not None:
            config["name"] = name
            config["durable_name"] = name
            if threshold is not None:
                config["inactive_threshold"] = duration_to_nanos(threshold, "inactive_threshold")
        else:
            config["inactive_threshold"] = duration_to_nanos(
                threshold or EPHEMERAL_INACTIVE_THRESHOLD, "inactive_threshold"
            )
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConsumerOptions:
        """The options of an existing consumer, from its JetStream configuration."""
        subjects = list(config.get("filter_subjects") or [])
        if not subjects and config.get("filter_subject"):
            subjects = [config["filter_subject"]]
        metadata = config.get("metadata") or {}
        dead_letter_stream = metadata.get(METADATA_DEAD_LETTER_STREAM) or None
        attempts = _read_limit(config, "max_deliver")
        if dead_letter_stream and metadata.get(METADATA_MAX_DELIVERY_ATTEMPTS):
            attempts = int(metadata[METADATA_MAX_DELIVERY_ATTEMPTS])
        return cls(
            subjects=tuple(subjects) or None,
            start=_start_of(config),
            processing_timeout=nanos_to_duration(int(config.get("ack_wait") or 0)),
            max_delivery_attempts=attempts,
            inactive_threshold=_read_duration(config, "inactive_threshold"),
            dead_letter_stream=dead_letter_stream,
        )


def _start_of(config: Mapping[str, Any]) -> StreamPointer | None:
    policy = config.get("deliver_policy")
    if policy == "all":
        return StreamPointer.start()
    if policy == "new":
        return StreamPointer.end()
    if policy == "by_start_sequence" and config.get("opt_start_seq"):
        return StreamPointer.offset(int(config["opt_start_seq"]))
    if policy == "by_start_time" and config.get("opt_start_time"):
        return StreamPointer.time(parse_time(config["opt_start_time"]))
    return None  # "last", "last_per_subject": no pointer says it


class ConsumerOptionArgs(TypedDict, total=False):
    """The keyword arguments of ``Client.ensure_consumer``: the fields of :class:`ConsumerOptions`."""

    subjects: Sequence[str] | None
    start: StreamPointer | None
    processing_timeout: timedelta
    max_delivery_attempts: int | None
    inactive_threshold: timedelta | None
    dead_letter_stream: str | None


__all__ = [
    "DEFAULT_DEDUPLICATION_WINDOW",
    "DEFAULT_LIMITS",
    "DEFAULT_PROCESSING_TIMEOUT",
    "EPHEMERAL_INACTIVE_THRESHOLD",
    "METADATA_DEAD_LETTER_STREAM",
    "METADATA_MAX_DELIVERY_ATTEMPTS",
    "Compression",
    "ConsumerOptionArgs",
    "ConsumerOptions",
    "Discard",
    "Limits",
    "Storage",
    "StreamOptionArgs",
    "StreamOptions",
    "StreamSource",
]
