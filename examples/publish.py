"""Publish a few OrderCreated events to the stream "orders".

Run it from the repository root:

    python examples/publish.py                      # on an embedded NATS of its own
    python examples/publish.py --nats-url nats://127.0.0.1:4222
    NATS_URL=nats://127.0.0.1:4222 python examples/publish.py

Each order is published with an idempotency key derived from its id, so a
retried publish (a timeout, a restarted process) stores nothing new: the
script shows this by publishing the first order a second time, and JetStream
answers with the id of the event it already holds.

The script can also be imported (with ``examples/`` on ``sys.path``):
``await main(nats_url)`` returns what was published.
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
from datetime import timedelta

from orders_pb2 import OrderCreated

import windshift
from windshift import EmbeddedNats, PublishedEvent

STREAM = "orders"
SUBJECT = "orders.created"
CUSTOMERS = ("alice", "bob", "carol", "dave")


@contextlib.asynccontextmanager
async def nats_url_or_embedded(nats_url: str | None) -> AsyncIterator[str]:
    """Yield ``nats_url``, or the URL of an embedded nats-server started for the occasion."""
    if nats_url:
        yield nats_url
        return
    async with EmbeddedNats() as server:  # a temporary store, removed on exit
        print(f"started an embedded NATS at {server.url}", flush=True)
        yield server.url


async def ensure_orders_stream(client: windshift.Client) -> None:
    """The stream "orders" collects every subject under ``orders.``, for 30 days."""
    await client.ensure_stream(STREAM, subjects=["orders.>"], max_age=timedelta(days=30))


def new_order() -> OrderCreated:
    """An order with a fresh id, so that every run publishes new events."""
    return OrderCreated(
        id=f"ord-{uuid.uuid4().hex[:12]}",
        customer=random.choice(CUSTOMERS),
        total_cents=random.randint(100, 50_000),
    )


async def publish_order(client: windshift.Client, order: OrderCreated) -> PublishedEvent:
    """Publish one order; the idempotency key makes a retry of it harmless."""
    return await client.publish(SUBJECT, order, idempotency_key=f"order-created-{order.id}")


async def main(nats_url: str | None = None, *, count: int = 3) -> list[PublishedEvent]:
    """Publish ``count`` new orders and return what JetStream acknowledged.

    Args:
        nats_url: the NATS server to use; an embedded one when None.
        count: how many orders to publish.

    Returns:
        The acknowledgement of each new order, in publish order (the
        repeated first publish is printed, not returned).
    """
    async with (
        nats_url_or_embedded(nats_url) as url,
        windshift.connect(url, name="windshift-example-publish") as client,
    ):
        await ensure_orders_stream(client)
        orders = [new_order() for _ in range(count)]
        published: list[PublishedEvent] = []
        for order in orders:
            event = await publish_order(client, order)
            published.append(event)
            print(
                f"published event {event.id}: order {order.id} for {order.customer}, "
                f"total {order.total_cents / 100:.2f}",
                flush=True,
            )
        if orders:
            # What a retry after a lost acknowledgement would do: same order, same key.
            again = await publish_order(client, orders[0])
            print(
                f"published order {orders[0].id} again: "
                + (f"duplicate of event {again.id}" if again.duplicate else f"event {again.id}"),
                flush=True,
            )
        return published


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL"),
        help="NATS server to use (default: $NATS_URL, else an embedded nats-server)",
    )
    parser.add_argument(
        "--count", type=int, default=3, help="how many orders to publish (default 3)"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be 1 or more")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()
    try:
        asyncio.run(main(args.nats_url, count=args.count))
    except windshift.WindshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
