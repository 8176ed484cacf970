"""Windshift: event streams on NATS JetStream, for asyncio Python.

Example:
    >>> import windshift
    >>> async with windshift.connect("nats://127.0.0.1:4222") as client:
    ...     await client.ensure_stream("orders", subjects=["orders.>"])
    ...     consumer = await client.ensure_consumer("orders", "order-processor")
    ...     await client.publish("orders.created", OrderCreated(id="123"))
    ...     async with client.subscribe("orders", consumer.id) as events:
    ...         async for event in events:
    ...             await event.ack()

Every public name lives here, at the package root (its ``__module__`` says
``windshift``); the modules beside it are private (``windshift._client``,
...) and may change at any time. :mod:`windshift.errors` is the one public
submodule: it holds the exception tree, also exported here.
"""

import typing

from windshift._client import Client, connect
from windshift._connection import ClientSettings
from windshift._consumers import ConsumerInfo, ConsumerLag
from windshift._deadletters import DeadLetter, DeadLetterQueue
from windshift._embedded import EmbeddedNats
from windshift._events import Event
from windshift._options import ConsumerOptions, Limits, StreamOptions, StreamSource
from windshift._pointers import StreamPointer
from windshift._publishing import OutgoingEvent, PublishedEvent
from windshift._reading import EventTail, StoredEvent
from windshift._retry import Retry
from windshift._state import StateChange, StateEntry, StateStore, StateWatch
from windshift._streams import StreamInfo
from windshift._subscriptions import Subscription
from windshift._worker import Worker
from windshift.errors import (
    AlreadyExistsError,
    ConfigurationConflictError,
    ConflictError,
    ConsumerNotFoundError,
    EventSettledError,
    KeyNotFoundError,
    NotFoundError,
    StoreNotFoundError,
    StreamNotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "Client",
    "ClientSettings",
    "ConfigurationConflictError",
    "ConflictError",
    "ConsumerInfo",
    "ConsumerLag",
    "ConsumerNotFoundError",
    "ConsumerOptions",
    "DeadLetter",
    "DeadLetterQueue",
    "EmbeddedNats",
    "Event",
    "EventSettledError",
    "EventTail",
    "KeyNotFoundError",
    "Limits",
    "NotFoundError",
    "OutgoingEvent",
    "PublishedEvent",
    "Retry",
    "StateChange",
    "StateEntry",
    "StateStore",
    "StateWatch",
    "StoreNotFoundError",
    "StoredEvent",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamOptions",
    "StreamPointer",
    "StreamSource",
    "Subscription",
    "UnavailableError",
    "ValidationError",
    "WindshiftError",
    "Worker",
    "connect",
]


def _as_public(value: object) -> None:
    # Reprs, tracebacks and docs name ``windshift.Client``, not the private
    # module. A class's string annotations are resolved in the module named
    # by ``__module__``: resolve them first, where they were written, so that
    # typing.get_type_hints (pydantic, documentation tools) still works.
    if isinstance(value, type):
        value.__annotations__ = typing.get_type_hints(value)
    value.__module__ = "windshift"


for _name in __all__:
    _as_public(globals()[_name])
del _name
