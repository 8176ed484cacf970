"""Consume OrderCreated events from the stream "orders" with a durable consumer.

Run it from the repository root:

    python examples/consume.py                      # on an embedded NATS of its own
    python examples/consume.py --nats-url nats://127.0.0.1:4222 --count 5
    NATS_URL=nats://127.0.0.1:4222 python examples/consume.py

The durable consumer "order-printer" reads ``orders.created`` from the start
of the stream. It remembers its position, so a second run against the same
server continues where the first one stopped. When fewer than ``--count``
events are waiting for it (a fresh server, or everything already read), the
script publishes the missing ones itself, so that it always has something to
show. It acknowledges each event, prints it, and exits after ``--count``
events (or with an error after ``--timeout`` seconds without them).

The script can also be imported (with ``examples/`` on ``sys.path``):
``await main(nats_url)`` returns what was consumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from orders_pb2 import OrderCreated

import windshift
from windshift import EmbeddedNats, StreamPointer

STREAM = "orders"
SUBJECT = "orders.created"
CONSUMER = "order-printer"


@dataclass(frozen=True, slots=True)
class ConsumedOrder:
    """One event the script consumed and acknowledged."""

    id: int
    """The event's id: its sequence in the stream, as ``publish`` returned it."""
    subject: str
    delivery_attempt: int
    order: OrderCreated


@contextlib.asynccontextmanager
async def nats_url_or_embedded(nats_url: str | None) -> AsyncIterator[str]:
    """Yield ``nats_url``, or the URL of an embedded nats-server started for the occasion."""
    if nats_url:
        yield nats_url
        return
    async with EmbeddedNats() as server:  # a temporary store, removed on exit
        print(f"started an embedded NATS at {server.url}", flush=True)
        yield server.url


async def publish_orders(client: windshift.Client, count: int) -> None:
    """Publish ``count`` new orders, so the consumer has something to read."""
    for _ in range(count):
        order = OrderCreated(
            id=f"ord-{uuid.uuid4().hex[:12]}",
            customer=random.choice(("alice", "bob", "carol", "dave")),
            total_cents=random.randint(100, 50_000),
        )
        event = await client.publish(SUBJECT, order, idempotency_key=f"order-created-{order.id}")
        print(f"published event {event.id}: order {order.id}", flush=True)


async def main(
    nats_url: str | None = None,
    *,
    count: int = 3,
    timeout: timedelta = timedelta(seconds=30),
) -> list[ConsumedOrder]:
    """Consume and acknowledge ``count`` orders, publishing them first if need be.

    Args:
        nats_url: the NATS server to use; an embedded one when None.
        count: how many events to consume before returning (1 or more).
        timeout: give up when the events have not all arrived by then.

    Returns:
        The events consumed, in the order they arrived.

    Raises:
        TimeoutError: fewer than ``count`` events arrived within ``timeout``.
    """
    if count < 1:
        raise ValueError(f"count must be 1 or more, got {count}")
    async with (
        nats_url_or_embedded(nats_url) as url,
        windshift.connect(url, name="windshift-example-consume") as client,
    ):
        await client.ensure_stream(STREAM, subjects=["orders.>"], max_age=timedelta(days=30))
        consumer = await client.ensure_consumer(
            STREAM,
            CONSUMER,
            subjects=[SUBJECT],
            start=StreamPointer.start(),  # only used when the consumer is created
            processing_timeout=timedelta(seconds=10),
        )
        waiting = consumer.pending_events
        print(f"consumer {consumer.id}: events waiting: {waiting}", flush=True)
        if waiting < count:
            await publish_orders(client, count - waiting)

        consumed: list[ConsumedOrder] = []
        try:
            async with (
                asyncio.timeout(timeout.total_seconds()),
                # Ask for no more than we mean to handle: the rest stays in NATS.
                client.subscribe(STREAM, consumer.id, max_pending_events=count) as events,
            ):
                async for event in events:
                    try:
                        order = event.unpack(OrderCreated)
                    except windshift.ValidationError as exc:
                        # Not an order: it would fail the same way every time.
                        print(f"event {event.id}: {exc}; rejecting it for good", flush=True)
                        await event.reject(permanently=True)
                        continue
                    await event.ack()
                    consumed.append(
                        ConsumedOrder(event.id, event.subject, event.delivery_attempt, order)
                    )
                    print(
                        f"consumed event {event.id} on {event.subject} "
                        f"(delivery attempt {event.delivery_attempt}): order {order.id} "
                        f"for {order.customer}, total {order.total_cents / 100:.2f}",
                        flush=True,
                    )
                    if len(consumed) >= count:
                        break
        except TimeoutError:
            raise TimeoutError(
                f"consumed {len(consumed)} of {count} events within {timeout.total_seconds():g}s"
            ) from None
        print(f"done: acknowledged {len(consumed)} events", flush=True)
        return consumed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL"),
        help="NATS server to use (default: $NATS_URL, else an embedded nats-server)",
    )
    parser.add_argument(
        "--count", type=int, default=3, help="exit after this many events (default 3)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="give up after this many seconds without all the events (default 30)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be 1 or more")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()
    try:
        asyncio.run(main(args.nats_url, count=args.count, timeout=timedelta(seconds=args.timeout)))
    except (windshift.WindshiftError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
