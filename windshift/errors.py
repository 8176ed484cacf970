"""The exception hierarchy of windshift.

Every error the library raises on purpose derives from :class:`WindshiftError`.
The class says *what kind* of failure happened, the message says *what* and
*with which value*, and the leaves carry the names involved as attributes::

    WindshiftError
    ├── ValidationError              bad name, subject, option or data (also a ValueError)
    ├── NotFoundError                something does not exist (also a LookupError)
    │   ├── StreamNotFoundError      .stream
    │   ├── ConsumerNotFoundError    .stream, .consumer
    │   ├── StoreNotFoundError       .store
    │   └── KeyNotFoundError         .store, .key
    ├── ConflictError                an optimistic concurrency check failed
    ├── AlreadyExistsError           a create_only write found the key
    ├── ConfigurationConflictError   JetStream refuses the change (or a full stream)
    ├── UnavailableError             NATS unreachable, no answer, JetStream failing (5xx)
    └── EventSettledError            an event settled twice

The gRPC façade maps each class onto one status code (``windshift_grpc.status``);
subclasses map as their parents do.

Example:
    >>> try:
    ...     await client.publish("orders.created", msg, expected_last_id=41)
    ... except windshift.ConflictError as e:
    ...     print("someone else wrote first:", e)
    >>> try:
    ...     await client.consumer_info("orders", "billing")
    ... except windshift.ConsumerNotFoundError as e:
    ...     print(e.stream, e.consumer)
"""

from __future__ import annotations


class WindshiftError(Exception):
    """Base class of every error windshift raises on purpose."""


class ValidationError(WindshiftError, ValueError):
    """A bad name, subject, option combination or missing data.

    Raised before anything reaches NATS.
    """


class NotFoundError(WindshiftError, LookupError):
    """A stream, consumer, store, key or dead letter does not exist.

    Also raised when a published subject is bound to no stream. The
    subclasses below say which kind of thing is missing.
    """


class StreamNotFoundError(NotFoundError):
    """A stream does not exist.

    Attributes:
        stream: its name.
    """

    def __init__(self, message: str, *, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


class ConsumerNotFoundError(NotFoundError):
    """A consumer does not exist (or was deleted while it was read).

    Attributes:
        stream: the stream it belongs to.
        consumer: its id.
    """

    def __init__(self, message: str, *, stream: str, consumer: str) -> None:
        super().__init__(message)
        self.stream = stream
        self.consumer = consumer


class StoreNotFoundError(NotFoundError):
    """A state store does not exist.

    Attributes:
        store: its name.
    """

    def __init__(self, message: str, *, store: str) -> None:
        super().__init__(message)
        self.store = store


class KeyNotFoundError(NotFoundError):
    """A key of a state store does not exist (or was deleted).

    Attributes:
        store: the store's name.
        key: the key.
    """

    def __init__(self, message: str, *, store: str, key: str) -> None:
        super().__init__(message)
        self.store = store
        self.key = key


class ConflictError(WindshiftError):
    """An optimistic concurrency check failed.

    ``expected_last_id`` / ``expected_last_stream_id`` on publish, or
    ``last_revision`` on a state store write, did not match.
    """


class AlreadyExistsError(WindshiftError):
    """A ``create_only`` write found the key already there."""


class ConfigurationConflictError(WindshiftError):
    """JetStream refuses a change.

    For example a stream's storage type cannot change, a mirror's source
    cannot change, a subject can be bound to only one stream, and a stream
    with ``discard="new"`` refuses events once it is full.
    """


class UnavailableError(WindshiftError):
    """NATS (or JetStream) cannot be reached, did not answer in time, or failed.

    The operation may be retried.
    """


class EventSettledError(WindshiftError):
    """An event was acknowledged or rejected a second time."""


__all__ = [
    "AlreadyExistsError",
    "ConfigurationConflictError",
    "ConflictError",
    "ConsumerNotFoundError",
    "EventSettledError",
    "KeyNotFoundError",
    "NotFoundError",
    "StoreNotFoundError",
    "StreamNotFoundError",
    "UnavailableError",
    "ValidationError",
    "WindshiftError",
]
