"""Dead-letter queues: events given up on are moved once, with their story, and can be replayed."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

import nats
import pytest
from google.protobuf.wrappers_pb2 import BytesValue, StringValue
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import windshift
from tests._util import take, text
from windshift import EmbeddedNats, StreamPointer
from windshift import _deadletters as deadletters
from windshift.errors import NotFoundError, ValidationError


async def _setup(
    client: windshift.Client, name: str, *, attempts: int | None = 3, timeout: float = 30
) -> tuple[str, str]:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    dead = f"{name}dead"
    consumer = await client.ensure_consumer(
        name,
        "worker",
        start=StreamPointer.start(),
        max_delivery_attempts=attempts,
        dead_letter_stream=dead,
        processing_timeout=timedelta(seconds=timeout),
    )
    assert consumer.dead_letter_stream == dead
    assert consumer.max_delivery_attempts == attempts
    return consumer.id, dead


async def test_rejected_permanently_is_dead_lettered_with_its_story(
    client: windshift.Client, name: str
) -> None:
    consumer, dead = await _setup(client, name)
    published = await client.publish(f"{name}.orders", StringValue(value="poison"))
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        await event.reject(permanently=True, reason="cannot parse\nthe order")
    [letter] = await client.dead_letters(dead).list()
    assert letter.subject == f"{name}.orders"
    assert (letter.stream, letter.consumer, letter.event_id) == (name, consumer, published.id)
    assert letter.attempts == 1
    assert letter.reason == "cannot parse the order"
    assert letter.dead_since.tzinfo is not None
    assert letter.unpack(StringValue).value == "poison"
    assert await client.dead_letters(dead).get(letter.id) == letter
    info = await client.consumer_info(name, consumer)
    assert (info.pending_events, info.unsettled_events) == (0, 0)


async def test_events_out_of_attempts_are_dead_lettered(
    client: windshift.Client, name: str
) -> None:
    consumer, dead = await _setup(client, name, attempts=2)
    published = await client.publish(f"{name}.orders", StringValue(value="flaky"))
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        assert event.delivery_attempt == 1
        await event.reject()
        [event] = await take(events, 1)
        assert event.delivery_attempt == 2
        # Rejected on its last attempt: moved at once, not after the delay and
        # one more delivery that would never be handed out.
        await event.reject(delay=timedelta(minutes=10))
        [letter] = await client.dead_letters(dead).list()
        assert events.held_events == 0
    assert letter.event_id == published.id
    assert letter.attempts == 2  # the deliveries handed out
    assert "attempts" in letter.reason
    info = await client.consumer_info(name, consumer)
    assert (info.pending_events, info.unsettled_events) == (0, 0)


_CRASHING_SUBSCRIBER = """
import asyncio, os, sys
import windshift

async def main(url, stream):
    client = await windshift.connect(url)
    async with client.subscribe(stream, "worker") as events:
        async for event in events:
            print(event.id, event.delivery_attempt, flush=True)
            if event.delivery_attempt == 2:
                os._exit(9)  # dies during the last attempt, holding the event
            await event.reject()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_subscriber_dying_on_the_last_attempt_still_dead_letters_once(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    consumer, dead = await _setup(client, name, attempts=2, timeout=1)
    published = await client.publish(f"{name}.orders", StringValue(value="fatal"))
    crashing = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHING_SUBSCRIBER,
        nats_server.url,
        name,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(crashing.communicate(), 60)
    assert crashing.returncode == 9
    assert stdout.decode().split() == [str(published.id), "1", str(published.id), "2"]

    # Another subscriber gets the delivery after the last one: it is moved, not handed out.
    queue = client.dead_letters(dead)
    async with client.subscribe(name, consumer) as events:
        for _ in range(300):
            letters = await queue.list()
            if letters:
                break
            await asyncio.sleep(0.02)
        later = await client.publish(f"{name}.orders", StringValue(value="fine"))
        [event] = await take(events, 1)
        assert event.id == later.id  # the dead one never reached the caller
        await event.ack(confirm=True)
    [letter] = await queue.list()
    # Two deliveries were handed out (to the crashed subscriber); the third was not.
    assert (letter.event_id, letter.attempts) == (published.id, 2)


async def test_moving_again_stores_nothing_twice(client: windshift.Client, name: str) -> None:
    consumer, dead = await _setup(client, name)
    await client.publish(f"{name}.orders", StringValue(value="once"))
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        # As if the first move's answer was lost and the event came back: move it again.
        await events.dead_letter(event, "first try", event.delivery_attempt)
        await events.dead_letter(event, "second try", event.delivery_attempt)
        await event.reject(permanently=True, reason="third try")
    letters = await client.dead_letters(dead).list()
    assert len(letters) == 1
    assert letters[0].reason == "first try"


async def test_replay_publishes_to_the_original_subject_and_is_processed(
    client: windshift.Client, name: str, spans: InMemorySpanExporter
) -> None:
    consumer, dead = await _setup(client, name)
    with trace.get_tracer("test").start_as_current_span("origin"):
        original = await client.publish(f"{name}.orders", StringValue(value="retry me later"))
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        original_trace = event.headers["WS-Trace-Parent"]
        await event.reject(permanently=True)
        queue = client.dead_letters(dead)
        [letter] = await queue.list()
        replayed = await queue.replay(letter.id)
        assert replayed.id > original.id
        [again] = await take(events, 1)
        assert again.id == replayed.id
        assert again.subject == f"{name}.orders"
        assert text(again) == "retry me later"
        assert again.data_type == "google.protobuf.StringValue"
        assert again.headers["WS-Trace-Parent"] == original_trace
        await again.ack(confirm=True)
    assert await queue.list() == []
    with pytest.raises(NotFoundError):
        await queue.get(letter.id)


async def test_purge_and_delete(client: windshift.Client, name: str) -> None:
    consumer, dead = await _setup(client, name)
    for i in range(3):
        await client.publish(f"{name}.orders", StringValue(value=str(i)))
    async with client.subscribe(name, consumer) as events:
        for event in await take(events, 3):
            await event.reject(permanently=True)
    queue = client.dead_letters(dead)
    letters = await queue.list()
    assert len(letters) == 3
    assert [letter.id for letter in await queue.list(after_id=letters[0].id, limit=1)] == [
        letters[1].id
    ]
    await queue.delete(letters[0].id)
    with pytest.raises(NotFoundError):
        await queue.delete(letters[0].id)
    assert await queue.purge() == 2
    assert await queue.list() == []


async def test_the_dead_letter_stream_is_plain_jetstream(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    consumer, dead = await _setup(client, name)
    published = await client.publish(f"{name}.orders", StringValue(value="raw"))
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        await event.reject(permanently=True, reason="why")
    raw = await nats.connect(nats_server.url)
    try:
        stored = await raw.jetstream().get_last_msg(dead, f"{dead}.>")
    finally:
        await raw.close()
    headers = stored.headers or {}
    assert stored.subject == f"{dead}.{name}.{consumer}.{published.id}"
    assert stored.data == StringValue(value="raw").SerializeToString()
    assert headers["WS-Data-Type"] == "google.protobuf.StringValue"
    assert headers["WS-Dead-Reason"] == "why"
    assert headers["WS-Dead-Event-Id"] == str(published.id)


async def test_without_a_dead_letter_stream_rejecting_permanently_just_drops(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, start=StreamPointer.start())
    assert consumer.dead_letter_stream is None
    await client.publish(f"{name}.a", StringValue(value="x"))
    async with client.subscribe(name, consumer.id) as events:
        [event] = await take(events, 1)
        assert events.dead_letters is None
        await event.reject(permanently=True, confirm=True)


async def test_bad_dead_letter_options(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    with pytest.raises(ValidationError, match="'bad name'"):
        await client.ensure_consumer(name, "w", dead_letter_stream="bad name")
    with pytest.raises(ValidationError, match="differ"):
        await client.ensure_consumer(name, "w", dead_letter_stream=name)
    with pytest.raises(NotFoundError, match="ghost"):
        await client.dead_letters("ghost").list()
    assert deadletters.DeadLetterPolicy.of({}) is None


async def test_ids_no_dead_letter_can_have_are_simply_not_there(
    client: windshift.Client, name: str
) -> None:
    _, dead = await _setup(client, name)
    queue = client.dead_letters(dead)
    for missing in (0, 2**64 - 1):
        with pytest.raises(NotFoundError, match=f"dead letter {missing} is not in"):
            await queue.get(missing)
    assert await queue.list(after_id=2**64 - 1) == []


async def test_a_dead_letter_naming_no_valid_subject_is_not_replayed(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    # Dead letters are plain JetStream messages anyone may write; one whose
    # subject header holds a space must not reach the NATS protocol as is.
    _, dead = await _setup(client, name)
    raw = await nats.connect(nats_server.url)
    try:
        stored = await raw.jetstream().publish(
            f"{dead}.{name}.worker.1",
            b"",
            headers={
                "WS-Dead-Subject": f"{name}.a b",
                "WS-Dead-Stream": name,
                "WS-Dead-Consumer": "worker",
                "WS-Dead-Event-Id": "1",
                "WS-Data-Type": "google.protobuf.StringValue",
            },
        )
    finally:
        await raw.close()
    queue = client.dead_letters(dead)
    with pytest.raises(ValidationError, match=f"'{name}.a b' is not a subject NATS accepts"):
        await queue.replay(stored.seq)
    assert [letter.id for letter in await queue.list()] == [stored.seq]
    assert (await client.publish(f"{name}.a", StringValue(value="still connected"))).id == 1


async def test_only_dead_letters_are_read_or_replayed(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    # A stream of ordinary events is no dead-letter queue: "replaying" its
    # events would publish them again (through a mirror: into someone's stream).
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    original = await client.publish(f"{name}.a", StringValue(value="an event"))
    queue = client.dead_letters(name)
    for attempt in (queue.get, queue.replay):
        with pytest.raises(ValidationError) as refused:
            await attempt(original.id)
        assert str(refused.value) == (
            f"message {original.id} of {name!r} is not a dead letter: "
            "it carries no WS-Dead-Subject header"
        )
    assert await queue.list() == []
    assert (await client.stream_info(name)).events == 1  # nothing was published again

    # Nor is a message on a dead-letter subject whose headers say otherwise.
    _, dead = await _setup(client, f"{name}d")
    raw = await nats.connect(nats_server.url)
    try:
        forged = await raw.jetstream().publish(
            f"{dead}.{name}d.worker.7",
            b"",
            headers={
                "WS-Dead-Subject": f"{name}.a",
                "WS-Dead-Stream": f"{name}d",
                "WS-Dead-Consumer": "worker",
                "WS-Dead-Event-Id": "8",
            },
        )
    finally:
        await raw.close()
    dead_queue = client.dead_letters(dead)
    with pytest.raises(ValidationError, match=f"message {forged.seq} of .* is stored on"):
        await dead_queue.replay(forged.seq)
    assert await dead_queue.list() == []


async def test_a_replay_check_that_raises_publishes_nothing(
    client: windshift.Client, name: str
) -> None:
    consumer, dead = await _setup(client, name)
    await client.publish(f"{name}.orders", StringValue(value="held back"))
    async with client.subscribe(name, consumer) as events:
        [event] = await take(events, 1)
        await event.reject(permanently=True, confirm=True)
    queue = client.dead_letters(dead)
    [letter] = await queue.list()
    seen: list[windshift.DeadLetter] = []

    def refuse(checked: windshift.DeadLetter) -> None:
        seen.append(checked)
        raise PermissionError(f"not {checked.subject}")

    with pytest.raises(PermissionError, match=f"not {name}.orders"):
        await queue.replay(letter.id, check=refuse)
    assert [checked.id for checked in seen] == [letter.id]
    assert (await client.stream_info(name)).events == 1
    assert [kept.id for kept in await queue.list()] == [letter.id]
    replayed = await queue.replay(letter.id, check=seen.append)
    assert replayed.stream == name and len(seen) == 2
    assert await queue.list() == []


async def test_pages_bounded_in_bytes_end_early_and_reach_every_letter(
    client: windshift.Client, name: str
) -> None:
    consumer, dead = await _setup(client, name)
    sizes = [10_000, 10_000, 10_000, 50_000, 10_000]
    for size in sizes:
        await client.publish(f"{name}.orders", BytesValue(value=b"x" * size))
    async with client.subscribe(name, consumer, max_pending_events=len(sizes)) as events:
        for event in await take(events, len(sizes)):
            await event.reject(permanently=True)
    queue = client.dead_letters(dead)
    letters = await queue.list()
    assert [len(letter.unpack(BytesValue).value) for letter in letters] == sizes
    for letter in letters:  # a size counts the data and more, never less
        assert deadletters._size(letter) > len(letter.data.value) + len(letter.reason)

    pages: list[list[int]] = []
    after = 0
    while page := await queue.list(after_id=after, max_bytes=25_000):
        pages.append([letter.id for letter in page])
        assert len(page) == 1 or sum(map(deadletters._size, page)) <= 25_000
        after = page[-1].id
    ids = [letter.id for letter in letters]
    # Two small ones fit; the third would pass the budget; the large one comes
    # alone; every page but the empty last is shorter than the limit of 100.
    assert pages == [ids[0:2], ids[2:3], ids[3:4], ids[4:5]]
    assert await queue.list(max_bytes=10**9) == letters
    assert await queue.list(limit=2, max_bytes=10**9) == letters[:2]


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
async def test_max_bytes_must_be_a_positive_whole_number(
    client: windshift.Client, name: str, bad: object
) -> None:
    _, dead = await _setup(client, name)
    with pytest.raises(ValidationError, match=f"max_bytes must be 1 or more, got {bad!r}"):
        await client.dead_letters(dead).list(max_bytes=bad)  # type: ignore[arg-type]
