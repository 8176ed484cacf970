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
"""

from windshift.client import Client, connect
from windshift.consumers import ConsumerInfo
from windshift.deadletters import DeadLetter, DeadLetterQueue
from windshift.errors import (
    AlreadyExistsError,
    ConfigurationConflictError,
    ConflictError,
    EventSettledError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)
from windshift.events import Event
from windshift.pointers import StreamPointer
from windshift.publishing import PublishedEvent
from windshift.state import StateChange, StateEntry, StateStore, StateWatch
from windshift.streams import StreamInfo, StreamSource
from windshift.subscriptions import Subscription

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "Client",
    "ConfigurationConflictError",
    "ConflictError",
    "ConsumerInfo",
    "DeadLetter",
    "DeadLetterQueue",
    "Event",
    "EventSettledError",
    "NotFoundError",
    "PublishedEvent",
    "StateChange",
    "StateEntry",
    "StateStore",
    "StateWatch",
    "StreamInfo",
    "StreamPointer",
    "StreamSource",
    "Subscription",
    "UnavailableError",
    "ValidationError",
    "WindshiftError",
    "connect",
]
