"""Handle the OrderCreated events of the stream "orders" with a windshift.Worker.

Run it from the repository root with the ``windshift`` command (the ``cli``
extra), against a NATS server that has the stream (``examples/publish.py``
makes it and publishes a few orders):

    python examples/publish.py --nats-url nats://127.0.0.1:4222
    windshift run examples.worker:worker --server nats://127.0.0.1:4222

It handles what is there and what comes, until SIGTERM or Ctrl-C (a second
one stops it at once). ``examples.worker:make_worker`` is the same worker
behind a function of the client, which first makes the stream: it runs on a
server that has never seen it.

Or run it as a script, which publishes a few orders itself, runs the worker
until they are handled, and stops:

    python examples/worker.py                      # on an embedded NATS of its own
    python examples/worker.py --nats-url nats://127.0.0.1:4222 --count 5

The durable consumer "order-fulfilment" reads ``orders.created`` from the
start of the stream; a second run continues where the first one stopped.
Orders of one customer are handled one at a time, in the order they were
placed; a handler that raises is retried after 1 s, 2 s, 4 s, ..., and after
the fifth attempt the order goes to the dead-letter stream "orders-dead".

The script can also be imported (with ``examples/`` on ``sys.path``):
``await main(nats_url)`` returns the orders it published, once handled.
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
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path

import windshift
from windshift import EmbeddedNats, Retry, StreamPointer

# `windshift run examples.worker:worker` imports this file as the module
# examples.worker: its generated neighbour is found here, as when it is a script.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from orders_pb2 import OrderCreated  # noqa: E402

STREAM = "orders"
SUBJECT = "orders.created"
CONSUMER = "order-fulfilment"
DEAD_LETTERS = "orders-dead"

worker = windshift.Worker(grace_period=timedelta(seconds=10))

#: Called with each order handled; main() listens here to know when its orders are done.
on_handled: list[Callable[[OrderCreated], None]] = []


def customer_of(event: windshift.Event) -> str:
    """The ordering key: one customer's orders one at a time, in stream order."""
    try:
        return event.unpack(OrderCreated).customer
    except windshift.ValidationError:
        return ""  # not an order: the handler rejects it


@worker.handler(
    STREAM,
    CONSUMER,
    subjects=[SUBJECT],
    start=StreamPointer.start(),  # only used when the consumer is created
    concurrency=4,
    ordering_key=customer_of,
    retry=Retry(delay=timedelta(seconds=1), max_delay=timedelta(seconds=30)),
    max_delivery_attempts=5,
    dead_letter_stream=DEAD_LETTERS,
)
async def fulfil_order(event: windshift.Event) -> None:
    """Fulfil one order; returning acknowledges it, raising retries it."""
    try:
        order = event.unpack(OrderCreated)
    except windshift.ValidationError as exc:
        # Not an order: it would fail the same way every time. Settled here,
        # so the worker leaves it as it is.
        await event.reject(permanently=True, reason=str(exc))
        return
    print(
        f"handled event {event.id} (delivery attempt {event.delivery_attempt}): "
        f"order {order.id} for {order.customer}, total {order.total_cents / 100:.2f}",
        flush=True,
    )
    for listener in on_handled:
        listener(order)


async def ensure_orders_stream(client: windshift.Client) -> None:
    """The stream "orders" collects every subject under ``orders.``, for 30 days."""
    await client.ensure_stream(STREAM, subjects=["orders.>"], max_age=timedelta(days=30))


async def make_worker(client: windshift.Client) -> windshift.Worker:
    """The worker, once the stream exists (``windshift run examples.worker:make_worker``)."""
    await ensure_orders_stream(client)
    return worker


@contextlib.asynccontextmanager
async def nats_url_or_embedded(nats_url: str | None) -> AsyncIterator[str]:
    """Yield ``nats_url``, or the URL of an embedded nats-server started for the occasion."""
    if nats_url:
        yield nats_url
        return
    async with EmbeddedNats() as server:  # a temporary store, removed on exit
        print(f"started an embedded NATS at {server.url}", flush=True)
        yield server.url


async def publish_orders(client: windshift.Client, count: int) -> list[OrderCreated]:
    """Publish ``count`` new orders (idempotently: a retried publish stores nothing new)."""
    orders = []
    for _ in range(count):
        order = OrderCreated(
            id=f"ord-{uuid.uuid4().hex[:12]}",
            customer=random.choice(("alice", "bob", "carol", "dave")),
            total_cents=random.randint(100, 50_000),
        )
        event = await client.publish(SUBJECT, order, idempotency_key=f"order-created-{order.id}")
        print(f"published event {event.id}: order {order.id}", flush=True)
        orders.append(order)
    return orders


async def main(
    nats_url: str | None = None,
    *,
    count: int = 3,
    timeout: timedelta = timedelta(seconds=30),
) -> list[OrderCreated]:
    """Publish ``count`` orders, run the worker until they are handled, stop it.

    Args:
        nats_url: the NATS server to use; an embedded one when None.
        count: how many orders to publish (1 or more).
        timeout: give up when they have not all been handled by then.

    Returns:
        The orders published, in the order they were handled (older orders
        still waiting for the consumer are handled too, not returned).

    Raises:
        TimeoutError: not all of them were handled within ``timeout``.
    """
    if count < 1:
        raise ValueError(f"count must be 1 or more, got {count}")
    async with (
        nats_url_or_embedded(nats_url) as url,
        windshift.connect(url, name="windshift-example-worker") as client,
    ):
        await ensure_orders_stream(client)
        published = {order.id for order in await publish_orders(client, count)}
        handled: list[OrderCreated] = []
        all_handled = asyncio.Event()

        def tally(order: OrderCreated) -> None:
            if order.id in published:
                handled.append(order)
                if len(handled) == len(published):
                    all_handled.set()

        on_handled.append(tally)
        running = asyncio.ensure_future(worker.run(client))
        waiting = asyncio.ensure_future(all_handled.wait())
        try:
            await asyncio.wait(
                [running, waiting],
                timeout=timeout.total_seconds(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiting.cancel()
            on_handled.remove(tally)
            await worker.stop()  # what the worker holds goes back to NATS
            await running  # raises what stopped the worker, if anything did
        if not all_handled.is_set():
            raise TimeoutError(
                f"handled {len(handled)} of {count} orders within {timeout.total_seconds():g}s"
            )
        print(f"done: handled {len(handled)} orders, worker stopped", flush=True)
        return handled


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL"),
        help="NATS server to use (default: $NATS_URL, else an embedded nats-server)",
    )
    parser.add_argument(
        "--count", type=int, default=3, help="how many orders to publish and handle (default 3)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="give up after this many seconds without all of them handled (default 30)",
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
