"""ack_many, reject_many, ping_many: a batch of events settled at once, one outcome each."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests._util import publish_many, take, text
from windshift import StreamPointer
from windshift.errors import EventSettledError, UnavailableError, ValidationError


async def _setup(client: windshift.Client, name: str, **options: object) -> str:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    info = await client.ensure_consumer(
        name,
        "worker",
        start=StreamPointer.start(),
        **options,  # type: ignore[arg-type]
    )
    return info.id


@contextlib.asynccontextmanager
async def _subscribed(
    client: windshift.Client,
    name: str,
    count: int,
    consumer_options: dict[str, Any] | None = None,
    **subscribe_options: Any,
) -> AsyncIterator[tuple[windshift.Subscription, list[int]]]:
    """A fresh stream and consumer with ``count`` events published, subscribed: it and their ids."""
    consumer = await _setup(client, name, **(consumer_options or {}))
    ids = await publish_many(client, f"{name}.a", count)
    async with client.subscribe(name, consumer, **subscribe_options) as events:
        yield events, ids


@pytest.mark.parametrize("confirm", [True, False])
async def test_ack_many_acknowledges_every_event(
    client: windshift.Client, name: str, confirm: bool
) -> None:
    async with _subscribed(client, name, 20, max_pending_events=20) as (events, _):
        batch = await take(events, 20)
        assert await events.ack_many(batch, confirm=confirm) == [None] * 20
        assert [event.settled for event in batch] == ["acknowledged"] * 20
        assert events.held_events == 0
        await client.nats.flush()
    info = await client.consumer_info(name, events.consumer)
    assert (info.pending_events, info.unsettled_events) == (0, 0)


async def test_ack_many_makes_room_for_the_next_events(client: windshift.Client, name: str) -> None:
    async with _subscribed(client, name, 6, max_pending_events=3) as (events, _):
        first = await take(events, 3)
        assert await events.ack_many(first, confirm=True) == [None] * 3
        rest = await take(events, 3)
        assert [text(event) for event in rest] == [f"{name}.a#{i}" for i in range(3, 6)]
        assert await events.ack_many(rest, confirm=True) == [None] * 3


async def test_ack_many_reports_each_event_it_cannot_settle(
    client: windshift.Client, name: str
) -> None:
    async with _subscribed(client, name, 3) as (events, _):
        one, two, three = await take(events, 3)
        await two.ack()
        outcomes = await events.ack_many([one, two, three, one], confirm=True)
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], EventSettledError)
        assert f"event {two.id} was already acknowledged" in str(outcomes[1])
        assert isinstance(outcomes[3], EventSettledError)  # named twice: settled once
        assert (one.settled, three.settled) == ("acknowledged", "acknowledged")


async def test_ack_many_takes_only_events_of_its_subscription(
    client: windshift.Client, name: str
) -> None:
    consumer = await _setup(client, name)
    other = await client.ensure_consumer(name, "other", start=StreamPointer.start())
    await publish_many(client, f"{name}.a", 2)
    async with (
        client.subscribe(name, consumer) as events,
        client.subscribe(name, other.id) as others,
    ):
        mine = await take(events, 2)
        [foreign] = await take(others, 1)
        with pytest.raises(ValidationError, match="item 1 is not an event of this subscription"):
            await events.ack_many([mine[0], foreign, mine[1]])
        with pytest.raises(ValidationError, match=r"item 1 is not an event.*got 'id-7'"):
            await events.ack_many([mine[0], "id-7"])  # type: ignore[list-item]
        with pytest.raises(ValidationError, match="ack_many takes a list of events"):
            await events.ack_many(mine[0])  # type: ignore[arg-type]
        # Refused before anything was sent: all still unsettled, and settle fine.
        assert [event.settled for event in (*mine, foreign)] == [None, None, None]
        assert await events.ack_many(mine, confirm=True) == [None, None]
        await foreign.ack()


async def test_unconfirmed_settlements_leave_the_events_to_settle_again(
    client: windshift.Client, name: str
) -> None:
    async with _subscribed(client, name, 3) as (events, _):
        batch = await take(events, 3)
        # With its consumer gone, nobody answers the acknowledgements.
        await client.delete_consumer(name, events.consumer)
        outcomes = await events.ack_many(batch, confirm=True)
        assert all(isinstance(outcome, UnavailableError) for outcome in outcomes), outcomes
        assert f"settling event {batch[0].id}" in str(outcomes[0])
        assert [event.settled for event in batch] == [None, None, None]
        assert events.held_events == 3


async def test_reject_many_redelivers_with_the_same_ids(
    client: windshift.Client, name: str
) -> None:
    async with _subscribed(client, name, 4) as (events, ids):
        first = await take(events, 4)
        assert await events.reject_many(first, confirm=True) == [None] * 4
        assert [event.settled for event in first] == ["rejected"] * 4
        again = await take(events, 4)
        assert sorted(event.id for event in again) == ids
        assert {event.delivery_attempt for event in again} == {2}
        assert await events.ack_many(again, confirm=True) == [None] * 4


async def test_reject_many_permanently_without_dead_letters_drops_them(
    client: windshift.Client, name: str
) -> None:
    async with _subscribed(client, name, 3) as (events, _):
        batch = await take(events, 3)
        assert await events.reject_many(batch, permanently=True, confirm=True) == [None] * 3
    info = await client.consumer_info(name, events.consumer)
    assert (info.pending_events, info.unsettled_events) == (0, 0)


async def test_reject_many_moves_to_the_dead_letters_what_reject_would(
    client: windshift.Client, name: str
) -> None:
    dead = f"{name}dead"
    options = {"max_delivery_attempts": 2, "dead_letter_stream": dead}
    async with _subscribed(client, name, 3, options) as (events, _):
        one, two, three = await take(events, 3)
        assert await events.reject_many([one], confirm=True) == [None]  # attempt 1 of 2
        [one] = await take(events, 1)
        assert one.delivery_attempt == 2
        # one is on its last attempt: moved; two and three only rejected permanently
        # are moved too, with the reason.
        outcomes = await events.reject_many([one], reason="last try")
        assert outcomes == [None]
        assert await events.reject_many([two, three], permanently=True, reason="poison") == [
            None,
            None,
        ]
        assert events.held_events == 0
    letters = await client.dead_letters(dead).list()
    assert sorted((letter.event_id, letter.reason) for letter in letters) == [
        (one.id, "last try"),
        (two.id, "poison"),
        (three.id, "poison"),
    ]


async def test_reject_many_mixes_moves_and_plain_rejects(
    client: windshift.Client, name: str
) -> None:
    dead = f"{name}dead"
    options = {"max_delivery_attempts": 2, "dead_letter_stream": dead}
    async with _subscribed(client, name, 2, options) as (events, (first_id, second_id)):
        first, second = await take(events, 2)
        assert await events.reject_many([first]) == [None]
        [first] = await take(events, 1)
        # first is on its last attempt (moved); second on its first (redelivered).
        assert await events.reject_many([first, second], confirm=True) == [None, None]
        [second] = await take(events, 1)
        assert (second.id, second.delivery_attempt) == (second_id, 2)
        await second.ack(confirm=True)
    [letter] = await client.dead_letters(dead).list()
    assert letter.event_id == first_id


async def test_reject_many_refuses_bad_arguments_before_sending(
    client: windshift.Client, name: str
) -> None:
    async with _subscribed(client, name, 1) as (events, _):
        batch = await take(events, 1)
        with pytest.raises(ValidationError, match="either delay or permanently"):
            await events.reject_many(batch, delay=timedelta(seconds=1), permanently=True)
        with pytest.raises(ValidationError, match="delay must not be negative"):
            await events.reject_many(batch, delay=timedelta(seconds=-1))
        assert batch[0].settled is None
        assert await events.ack_many(batch, confirm=True) == [None]


async def test_ping_many_keeps_events_held_and_records_the_ping(
    client: windshift.Client, name: str
) -> None:
    async with _subscribed(client, name, 3, auto_ping=False) as (events, _):
        one, two, three = await take(events, 3)
        await three.ack()
        before = one.last_ping
        outcomes = await events.ping_many([one, two, three, one], confirm=True)
        assert outcomes[0] is None and outcomes[1] is None and outcomes[3] is None
        assert isinstance(outcomes[2], EventSettledError)
        assert one.last_ping > before
        assert (one.settled, two.settled) == (None, None)
        assert events.held_events == 2
        assert await events.ack_many([one, two], confirm=True) == [None, None]


async def test_an_empty_batch_sends_nothing(client: windshift.Client, name: str) -> None:
    async with _subscribed(client, name, 0) as (events, _):
        assert await events.ack_many([], confirm=True) == []
        assert await events.reject_many([]) == []
        assert await events.ping_many([]) == []


async def test_ack_many_of_many_events_in_one_call(client: windshift.Client, name: str) -> None:
    consumer = await _setup(client, name)
    await client.publish_many(
        [windshift.OutgoingEvent(f"{name}.a", StringValue(value=str(n))) for n in range(500)]
    )
    async with client.subscribe(name, consumer, max_pending_events=500) as events:
        batch = await take(events, 500)
        assert await events.ack_many(batch, confirm=True) == [None] * 500
    info = await client.consumer_info(name, consumer)
    assert (info.pending_events, info.unsettled_events) == (0, 0)
