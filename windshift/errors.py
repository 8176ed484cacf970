"""The exception hierarchy of windshift.

Every error the library raises on purpose derives from :class:`WindshiftError`.
The gRPC façade maps each class onto one status code (see
``windshift_grpc.status``), so the class says *what kind* of failure happened
and the message says *what* and *with which value*.

Example:
    >>> try:
    ...     await client.publish("orders.created", msg, expected_last_id=41)
    ... except windshift.ConflictError as e:
    ...     print("someone else wrote first:", e)
"""

from __future__ import annotations


class WindshiftError(Exception):
    """Base class of every error windshift raises on purpose."""


class ValidationError(WindshiftError, ValueError):
    """A bad name, subject, option combination or missing data.

    Raised before anything reaches NATS.
    """


class NotFoundError(WindshiftError, LookupError):
    """A stream, consumer, store or key does not exist.

    Also raised when a published subject is bound to no stream.
    """


class ConflictError(WindshiftError):
    """An optimistic concurrency check failed.

    ``expected_last_id`` / ``expected_last_stream_id`` on publish, or
    ``last_revision`` on a state store write, did not match.
    """


class AlreadyExistsError(WindshiftError):
    """A ``create_only`` write found the key already there."""


class ConfigurationConflictError(WindshiftError):
    """JetStream refuses a change.

    For example a stream's storage type cannot change, a subject can be
    bound to only one stream, and a stream with ``discard="new"`` refuses
    events once it is full.
    """


class UnavailableError(WindshiftError):
    """NATS (or JetStream) cannot be reached or did not answer in time.

    The operation may be retried.
    """


class EventSettledError(WindshiftError):
    """An event was acknowledged or rejected a second time."""


__all__ = [
    "AlreadyExistsError",
    "ConfigurationConflictError",
    "ConflictError",
    "EventSettledError",
    "NotFoundError",
    "UnavailableError",
    "ValidationError",
    "WindshiftError",
]
