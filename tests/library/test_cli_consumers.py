"""``windshift consumers STREAM`` against a real nats-server: counts, lag, dead-letter settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import windshift
from tests._cli import run_in_process
from tests._util import publish_many, take
from windshift import EmbeddedNats, StreamPointer


async def test_each_consumer_with_its_counts_lag_in_events_and_time_and_dead_letters(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name,
        "billing",
        start=StreamPointer.start(),
        max_delivery_attempts=3,
        dead_letter_stream=f"{name}-dead",
    )
    await client.ensure_consumer(name, "idle", start=StreamPointer.start())
    await publish_many(client, f"{name}.a", 4)
    async with client.subscribe(name, "billing", max_pending_events=2) as events:
        # Settled with confirmation: the counts read below are the server's
        # after every settlement, not before the last one has arrived.
        first, second = sorted(await take(events, 2), key=lambda event: event.id)
        await first.ack(confirm=True)
        # delivered again: redelivered, not settled
        await second.reject(delay=timedelta(0), confirm=True)
        # Then 3 and 4 (acknowledged) and 2 once more (held), in any order.
        held = None
        for _ in range(3):
            [event] = await take(events, 1)  # each settled before the next can come
            if event.id == 2:
                held = event
            else:
                await event.ack(confirm=True)
        assert held is not None and held.delivery_attempt == 2
        billing = await client.consumer_info(name, "billing")
        oldest = await client.get_event(name, 2)
        before = datetime.now(UTC)
        code, out, err = await run_in_process(
            "consumers", name, "--json", "--server", nats_server.url
        )
        after = datetime.now(UTC)
    assert (code, err) == (0, "")
    found = {consumer["id"]: consumer for consumer in json.loads(out)}
    assert set(found) == {"billing", "idle"}
    shown = found["billing"]
    assert shown["ack_floor"] == 1
    assert shown["redelivered"] == 1
    assert shown["unacknowledged"] == billing.unsettled_events == 1  # event 2
    assert shown["pending"] == billing.pending_events == 0
    assert shown["lag_events"] == 1
    assert shown["oldest_unprocessed_id"] == 2
    assert datetime.fromisoformat(shown["oldest_unprocessed_stored"]) == oldest.stored
    # how long event 2 had waited when the command read it
    assert (before - oldest.stored).total_seconds() - 1 <= shown["lag_seconds"]
    assert shown["lag_seconds"] <= (after - oldest.stored).total_seconds()
    assert (shown["dead_letter_stream"], shown["max_delivery_attempts"]) == (f"{name}-dead", 3)
    idle = found["idle"]
    assert (idle["pending"], idle["unacknowledged"], idle["lag_events"]) == (4, 0, 4)
    assert (idle["oldest_unprocessed_id"], idle["dead_letter_stream"]) == (1, None)


async def test_an_up_to_date_consumer_has_no_lag_and_the_table_says_so(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name,
        "worker",
        start=StreamPointer.start(),
        dead_letter_stream=f"{name}-dlq",
        max_delivery_attempts=5,
    )
    await publish_many(client, f"{name}.a", 2)
    async with client.subscribe(name, "worker") as events:
        for event in await take(events, 2):
            await event.ack()
    code, out, _ = await run_in_process("consumers", name, "--json", "--server", nats_server.url)
    assert code == 0
    [shown] = json.loads(out)
    assert (shown["lag_events"], shown["lag_seconds"], shown["oldest_unprocessed_id"]) == (
        0,
        0.0,
        None,
    )
    assert shown["ack_floor"] == 2

    code, out, _ = await run_in_process("consumers", name, "--server", nats_server.url)
    assert code == 0
    header = next(line for line in out.splitlines() if "Consumer" in line and "Pending" in line)
    for column in ("Unacked", "Redelivered", "Ack floor", "Lag", "Behind", "Dead letters"):
        assert column in header, out
    [row] = [line for line in out.splitlines() if " worker " in line]
    assert f"{name}-dlq, after 5 attempts" in row, row


async def test_a_missing_stream_exits_3(nats_server: EmbeddedNats, name: str) -> None:
    code, out, err = await run_in_process("consumers", name, "--server", nats_server.url)
    assert (code, out) == (3, "")
    assert err.splitlines() == [f"windshift: consumers of stream {name!r}: stream not found"]
