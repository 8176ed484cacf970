"""The least serve can spend: its cost per call and per event beside the work it cannot skip.

Every PublishEvent that serve answers costs gRPC's own work for one unary
call (what the no-op server of ``grpc_noop_server.py`` spends) plus one
JetStream publish with its acknowledgement: a write to NATS and an answer
read back, because calls reach serve one at a time. Every event of an Events
call costs a delivery plus an acknowledgement that serve confirms (an Ack
is answered once NATS has it). This script measures those parts apart, in
alternating rounds on one embedded nats-server:

- ``PublishEvent``: server CPU per call of serve and of the no-op server
  (the Python client of ``grpc_workloads``, 128 calls in flight), and the
  CPU of this process per ``client.publish`` awaited one at a time (the
  library's least cost of one publish with its own write and answer).
  ``floor`` is ``(no-op + library publish) / no-op``: the serve/no-op ratio
  a serve would have that added nothing of its own to those two.
- ``Events``: events/s and CPU per event of the library's consume + ack
  (``event.ack()`` unconfirmed, as ``bench.py``'s consume + ack), of the
  library's consume + ``ack_many(confirm=True)`` by 64 (what serve does per
  event under gRPC), and of serve's Events with ``max_batch`` 100 (server
  CPU; the client's own CPU beside it).

Serve and this process's library rounds run on asyncio's own loop
(``WINDSHIFT_EVENT_LOOP=asyncio``), or with ``--uvloop`` both on uvloop
(serve's default where installed); the no-op server stays on asyncio's own
loop, as the reference. It prints the medians, and exits 1 when a round lost or duplicated an event
(the stream's count after the publish rounds, the consumer's pending and
unsettled counts after each consume round).

    .venv/bin/python benchmarks/grpc_floor.py --calls 4000 --events 20000 --rounds 3 [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from collections.abc import Awaitable

from google.protobuf.wrappers_pb2 import StringValue
from grpc_workloads import (
    ACK_BATCH,
    MAX_BATCH,
    CountMismatch,
    Target,
    consume_events,
    publish_events,
    serve,
    serve_noop,
    server_cpu,
)
from settle_many import CountMismatch as SettleMismatch
from settle_many import fill, one_round

import windshift
from windshift import EmbeddedNats

BODY = StringValue(value="x" * 100)
PUBLISH_WAYS = ("serve", "no-op", "library publish")
CONSUME_WAYS = ("library consume + ack", "library + ack_many confirmed", "serve max_batch")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _server_round(
    target: Target, count: int, drive: Awaitable[float]
) -> tuple[float, float, float]:
    """Rate, server CPU µs per event and this process's CPU µs per event of ``drive``."""
    server, own = server_cpu(target), _cpu()
    rate = await drive
    after = server_cpu(target)
    if server is None or after is None:
        raise RuntimeError(f"cannot read the CPU time of process {target.pid}")
    return rate, (after - server) / count * 1e6, (_cpu() - own) / count * 1e6


async def _settled(client: windshift.Client, stream: str, count: int) -> None:
    info = await client.consumer_info(stream, "bench")
    if info.pending_events or info.unsettled_events:
        raise CountMismatch(
            f"serve max_batch: {info.pending_events} pending, {info.unsettled_events} "
            f"unsettled after {count} events"
        )


async def run(
    calls: int, events: int, rounds: int, serve_env: dict[str, str]
) -> dict[str, list[tuple[float, float, float]]]:
    """Every way's (rate, CPU µs per event, client CPU µs per event), one entry per round."""
    figures: dict[str, list[tuple[float, float, float]]] = {
        way: [] for way in PUBLISH_WAYS + CONSUME_WAYS
    }
    body = BODY.SerializeToString()
    async with (
        EmbeddedNats(sync_always=False) as nats,
        windshift.connect(nats.url) as client,
        serve(nats.url, serve_env) as target,
        serve_noop() as noop,
    ):
        await client.ensure_stream("floor", subjects=["floor.>"])
        for warm in (target, noop):
            await publish_events(warm, "floor.x", 200, body)
        published = 200
        for round_ in range(rounds):
            for way, server in (("serve", target), ("no-op", noop)):
                figure = await _server_round(
                    server, calls, publish_events(server, "floor.x", calls, body)
                )
                figures[way].append(figure)
                published += calls if server is target else 0
            own, started = _cpu(), time.perf_counter()
            for _ in range(calls):  # one at a time: each its own write and answer
                await client.publish("floor.x", BODY)
            elapsed = time.perf_counter() - started
            figures["library publish"].append((calls / elapsed, (_cpu() - own) / calls * 1e6, 0.0))
            published += calls
            stored = (await client.stream_info("floor")).events
            if stored != published:
                raise CountMismatch(f"PublishEvent: {stored} events stored, {published} published")
            for number, way in enumerate(CONSUME_WAYS):
                stream = f"floor{round_}x{number}"
                if way == "serve max_batch":
                    await fill(client, stream, events)
                    figure = await _server_round(
                        target, events, consume_events(target, stream, "bench", events, MAX_BATCH)
                    )
                    await _settled(client, stream, events)
                    await client.delete_stream(stream)
                else:  # (one_round fills the stream, checks the consumer and deletes it)
                    library_way = "ack" if way == "library consume + ack" else "ack_many"
                    rate, cpu = await one_round(client, stream, library_way, events, ACK_BATCH)
                    figure = (rate, cpu, 0.0)
                figures[way].append(figure)
            for way, runs in figures.items():
                rate, cpu, client_cpu = runs[-1]
                beside = f"  (client {client_cpu:.0f} µs)" if client_cpu else ""
                print(f"[{round_ + 1}] {way:<30} {rate:10,.0f} ev/s  {cpu:7.1f} µs CPU{beside}")
    return figures


def report(figures: dict[str, list[tuple[float, float, float]]]) -> None:
    """Print the medians of ``figures`` and the ratios they give."""
    medians = {
        way: tuple(statistics.median(run[i] for run in runs) for i in range(3))
        for way, runs in figures.items()
    }
    print("\n| way | events/s | CPU µs per event | client CPU µs per event |\n|---|--:|--:|--:|")
    for way, (rate, cpu, client_cpu) in medians.items():
        print(f"| {way} | {rate:,.0f} | {cpu:.1f} | {f'{client_cpu:.1f}' if client_cpu else '-'} |")
    serve_cpu, noop_cpu, publish_cpu = (medians[way][1] for way in PUBLISH_WAYS)
    print(
        f"PublishEvent: serve/no-op {serve_cpu / noop_cpu:.2f}; "
        f"floor (no-op + library publish)/no-op {(noop_cpu + publish_cpu) / noop_cpu:.2f}; "
        f"serve's own beyond both {serve_cpu - noop_cpu - publish_cpu:.0f} µs per call"
    )
    plain, confirmed, batched = (medians[way] for way in CONSUME_WAYS)
    print(
        f"Events: serve max_batch/library consume + ack {batched[0] / plain[0]:.2f} "
        f"(confirmed ack_many alone: {confirmed[0] / plain[0]:.2f}); serve CPU per event "
        f"{batched[1] / confirmed[1]:.2f}x the library's with confirmed acks"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, default=4000, help="PublishEvent calls a round (4,000)"
    )
    parser.add_argument("--events", type=int, default=20_000, help="Events a round (20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every way (3)")
    parser.add_argument("--uvloop", action="store_true", help="serve and this process on uvloop")
    args = parser.parse_args(argv)
    serve_env = {"WINDSHIFT_EVENT_LOOP": "uvloop" if args.uvloop else "asyncio"}
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            figures = runner.run(run(args.calls, args.events, args.rounds, serve_env))
    except (CountMismatch, SettleMismatch) as exc:
        print(f"count mismatch: {exc}", file=sys.stderr)
        return 1
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
