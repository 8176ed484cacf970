"""The server's samples of consumer lag: what a round records, and the hour it keeps."""

from __future__ import annotations

from datetime import timedelta

import windshift
from tests._util import publish_many, take
from windshift import StreamPointer
from windshift_grpc.sampling import Sampler


async def test_a_round_records_every_consumer_that_processes_events(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(
        name,
        "worker",
        start=StreamPointer.start(),
        max_delivery_attempts=2,
        dead_letter_stream=f"{name}_dead",
    )
    await client.ensure_store(f"{name}store")
    ids = await publish_many(client, f"{name}.x", 4)
    await client.ensure_consumer(name, "idle", start=StreamPointer.end())
    sampler = Sampler(client, interval=1.0)
    async with client.tail(name, start=StreamPointer.start()):  # an ack-none consumer
        await sampler.sample_once()
    mine = {key: sample for key, sample in sampler.latest.items() if key[0] == name}
    assert set(mine) == {(name, "worker"), (name, "idle")}
    worker = mine[(name, "worker")]
    assert (worker.pending, worker.unsettled, worker.lag_events) == (4, 0, 4)
    assert worker.lag_seconds >= 0 and worker.dead_letter_stream == f"{name}_dead"
    assert (mine[(name, "idle")].lag_events, mine[(name, "idle")].lag_seconds) == (0, 0.0)
    assert sampler.dead_letters[f"{name}_dead"] == 0

    async with client.subscribe(name, "worker") as events:
        received = await take(events, 4)
        await received[0].reject(delay=timedelta(0), confirm=True)
        for event in received[1:]:
            await event.ack(confirm=True)
        again = await take(events, 1)
        assert again[0].id == ids[0]
        await sampler.sample_once()
        worker = sampler.latest[(name, "worker")]
        assert (worker.pending, worker.unsettled, worker.redelivered) == (0, 1, 1)
        assert worker.ack_floor == ids[0] - 1
        assert worker.lag_events == 1
    history = sampler.history(name, "worker")
    assert [sample.lag_events for sample in history] == [4, 1]
    assert history[0].at <= history[1].at


async def test_the_history_is_bounded_and_forgets_deleted_consumers(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await client.ensure_consumer(name, "c", start=StreamPointer.start())
    sampler = Sampler(client, interval=10.0, keep=20.0)  # three samples
    for _ in range(5):
        await sampler.sample_once()
    assert len(sampler.history(name, "c")) == 3
    await client.delete_consumer(name, "c")
    await sampler.sample_once()
    assert sampler.history(name, "c") == []
    assert (name, "c") not in sampler.latest
