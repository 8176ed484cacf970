"""Confirmed acknowledgements in batches: ``asyncio.gather`` of ``event.ack`` vs ``ack_many``.

One embedded nats-server; each round fills a fresh stream with ``--events``
events of 100 bytes, then one subscription (``max_pending_events`` 256)
receives them and acknowledges every ``--batch`` events with
``confirm=True``, either one task per event (``gather``: the usual way) or
one call for the batch (``ack_many``). Both ways alternate, ``--rounds``
times each. It prints, per way, the median events/s and the median CPU time
of this process per event (the library's own cost; nats-server is apart),
and the ratio of ``ack_many`` to ``gather``.

After each round it checks the consumer: nothing pending, nothing unsettled,
and every outcome None; a difference stops it with exit status 1.

    .venv/bin/python benchmarks/settle_many.py --events 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time

from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift import EmbeddedNats, OutgoingEvent, StreamPointer

WAYS = ("gather", "ack_many")


class CountMismatch(RuntimeError):
    """A round left events unacknowledged: its figure would mean nothing."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def fill(client: windshift.Client, stream: str, count: int) -> None:
    """A new stream ``stream`` with ``count`` events of 100 bytes, and its consumer ``bench``."""
    await client.ensure_stream(stream, subjects=[f"{stream}.>"])
    body = StringValue(value="x" * 100)
    for start in range(0, count, 1000):
        await client.publish_many(
            [OutgoingEvent(f"{stream}.x", body) for _ in range(min(1000, count - start))]
        )
    await client.ensure_consumer(stream, "bench", start=StreamPointer.start())


async def one_round(
    client: windshift.Client, stream: str, way: str, count: int, batch_size: int
) -> tuple[float, float]:
    """Events per second and CPU µs per event of one way over ``count`` events.

    ``way`` is one of :data:`WAYS`, or ``ack``: ``event.ack()`` unconfirmed,
    one event at a time (the library's consume + ack of ``bench.py``).
    """
    await fill(client, stream, count)
    received = 0
    batch: list[windshift.Event] = []
    cpu, started = _cpu(), time.perf_counter()
    async with client.subscribe(stream, "bench", max_pending_events=256) as events:
        async for event in events:
            received += 1
            if way == "ack":
                await event.ack()
            else:
                batch.append(event)
                if len(batch) == batch_size or received == count:
                    if way == "ack_many":
                        outcomes = await events.ack_many(batch, confirm=True)
                        if any(outcome is not None for outcome in outcomes):
                            raise CountMismatch(f"ack_many failed some: {outcomes}")
                    else:
                        await asyncio.gather(*(each.ack(confirm=True) for each in batch))
                    batch = []
            if received >= count:
                break
    elapsed, used = time.perf_counter() - started, _cpu() - cpu
    await client.nats.flush()  # (unconfirmed acks: the server has them all after this)
    info = await client.consumer_info(stream, "bench")
    if (info.pending_events, info.unsettled_events) != (0, 0) or received != count:
        raise CountMismatch(
            f"{way}: {received} received of {count}; {info.pending_events} pending, "
            f"{info.unsettled_events} unsettled afterwards"
        )
    await client.delete_stream(stream)
    return count / elapsed, used / count * 1e6


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per round (20,000)")
    parser.add_argument("--batch", type=int, default=64, help="events per acknowledgement (64)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each way (5)")
    args = parser.parse_args(argv)
    figures: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    async with EmbeddedNats(sync_always=False) as server, windshift.connect(server.url) as client:
        number = 0
        for round_ in range(args.rounds):
            for way in WAYS:
                number += 1
                try:
                    rate, cpu = await one_round(
                        client, f"settle{number}", way, args.events, args.batch
                    )
                except CountMismatch as exc:
                    print(f"count mismatch: {exc}", file=sys.stderr)
                    return 1
                figures[way].append((rate, cpu))
                print(f"[{round_ + 1}] {way:<8} {rate:10,.0f} ev/s  {cpu:6.1f} µs CPU/event")
    medians = {
        way: (
            statistics.median(rate for rate, _ in runs),
            statistics.median(cpu for _, cpu in runs),
        )
        for way, runs in figures.items()
    }
    print(f"\n{args.events:,} events per round, {args.batch} per acknowledgement, confirmed")
    print("| way | events/s | CPU µs/event |\n|---|--:|--:|")
    for way, (rate, cpu) in medians.items():
        print(f"| {way} | {rate:,.0f} | {cpu:.1f} |")
    (gather_rate, gather_cpu), (many_rate, many_cpu) = medians["gather"], medians["ack_many"]
    print(
        f"ack_many/gather: {many_rate / gather_rate:.2f}x the events/s, "
        f"{many_cpu / gather_cpu:.2f}x the CPU per event"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
