"""publish: ids, idempotency, optimistic concurrency, errors, the pipeline."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift import EmbeddedNats, OutgoingEvent, PublishedEvent
from windshift.errors import ConflictError, NotFoundError, ValidationError


async def test_publish_returns_the_stream_sequence(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    first = await client.publish(f"{name}.a", StringValue(value="1"))
    second = await client.publish(f"{name}.b", StringValue(value="2"))
    assert (first.id, second.id) == (1, 2)
    assert first.stream == name
    assert not first.duplicate


async def test_idempotency_key_deduplicates_within_the_window(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    original = await client.publish(f"{name}.a", StringValue(value="1"), idempotency_key="k")
    await client.publish(f"{name}.a", StringValue(value="other"))
    again = await client.publish(f"{name}.a", StringValue(value="1"), idempotency_key="k")
    assert again.duplicate
    assert again.id == original.id
    assert (await client.stream_info(name)).events == 2


async def test_idempotency_key_is_forgotten_after_the_window(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(
        name, subjects=[f"{name}.>"], deduplication_window=timedelta(milliseconds=100)
    )
    original = await client.publish(f"{name}.a", StringValue(value="1"), idempotency_key="k")
    for _ in range(100):
        await asyncio.sleep(0.05)
        later = await client.publish(f"{name}.a", StringValue(value="1"), idempotency_key="k")
        if not later.duplicate:
            assert later.id > original.id
            return
    raise AssertionError("the idempotency key was never forgotten")


async def test_expected_last_id_checks_the_subject(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    first = await client.publish(f"{name}.a", StringValue(value="1"), expected_last_id=0)
    await client.publish(f"{name}.b", StringValue(value="elsewhere"))
    with pytest.raises(ConflictError):
        await client.publish(f"{name}.a", StringValue(value="x"), expected_last_id=0)
    second = await client.publish(f"{name}.a", StringValue(value="2"), expected_last_id=first.id)
    with pytest.raises(ConflictError):
        await client.publish(f"{name}.a", StringValue(value="x"), expected_last_id=first.id)
    assert second.id == 3


async def test_expected_last_stream_id_checks_the_whole_stream(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    first = await client.publish(f"{name}.a", StringValue(value="1"), expected_last_stream_id=0)
    with pytest.raises(ConflictError):
        await client.publish(f"{name}.b", StringValue(value="x"), expected_last_stream_id=0)
    second = await client.publish(
        f"{name}.b", StringValue(value="2"), expected_last_stream_id=first.id
    )
    with pytest.raises(ConflictError):
        await client.publish(f"{name}.a", StringValue(value="x"), expected_last_stream_id=first.id)
    assert second.id == 2


async def test_unbound_subject_is_not_found_at_once(client: windshift.Client, name: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NotFoundError, match=f"{name}.nowhere"):
        await client.publish(f"{name}.nowhere", StringValue(value="x"))
    # a no-responders answer, not the 5 s request timeout
    assert loop.time() - started < client.settings.request_timeout.total_seconds()


async def test_event_larger_than_max_event_size_is_refused(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"], max_event_size=300)
    with pytest.raises(ValidationError) as refused:
        await client.publish(f"{name}.a", StringValue(value="x" * 500))
    # the message names the event's size and the stream's limit
    message = str(refused.value)
    assert re.search(r"the event is \d{3} bytes with its headers", message), message
    assert f"max_event_size of stream {name!r} (300 bytes)" in message, message
    assert (await client.publish(f"{name}.a", StringValue(value="small"))).id == 1
    assert (await client.stream_info(name)).events == 1


@pytest.mark.parametrize(
    ("subject", "message", "options", "match"),
    [
        ("a.*", StringValue(), {}, "wildcards"),
        ("a..b", StringValue(), {}, "empty token"),
        ("a.b", Any(), {}, "type_url"),
        ("a.b", Any(type_url="x/a.B\r\nX-Injected: 1"), {}, "message name"),
        ("a.b", Any(type_url="type.googleapis.com/"), {}, "message name"),
        ("a.b", Any(type_url="x/1a.B"), {}, "message name"),
        ("a.b", b"bytes", {}, "protobuf message"),
        ("a.b", StringValue(), {"idempotency_key": ""}, "idempotency_key"),
        ("a.b", StringValue(), {"idempotency_key": "a\nb"}, "line breaks"),
        ("a.b", StringValue(), {"expected_last_id": -1}, "expected_last_id"),
        ("a.b", StringValue(), {"expected_last_stream_id": "3"}, "expected_last_stream_id"),
    ],
)
async def test_bad_publish_input_is_refused(
    client: windshift.Client,
    subject: str,
    message: object,
    options: dict[str, object],
    match: str,
) -> None:
    with pytest.raises(ValidationError, match=match):
        await client.publish(subject, message, **options)  # type: ignore[arg-type]


async def test_concurrent_publishes_share_a_bounded_pipeline(
    nats_server: EmbeddedNats, name: str
) -> None:
    async with windshift.connect(nats_server.url, publish_max_pending=8) as client:
        await client.ensure_stream(name, subjects=[f"{name}.>"])
        slots = client._connection.publish_slots
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, 8 - slots._value)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        try:
            results = await asyncio.gather(
                *(client.publish(f"{name}.a", StringValue(value=str(i))) for i in range(500))
            )
        finally:
            watcher.cancel()
        assert sorted(r.id for r in results) == list(range(1, 501))
        assert most == 8, "publishes should overlap up to the limit, and never beyond it"
        assert (await client.stream_info(name)).events == 500


async def test_connect_refuses_bad_options() -> None:
    with pytest.raises(ValidationError, match="publish_max_pending"):
        windshift.connect("nats://127.0.0.1:1", publish_max_pending=0)
    with pytest.raises(ValidationError, match="request_timeout"):
        windshift.connect("nats://127.0.0.1:1", request_timeout=timedelta(0))


async def test_connect_to_nothing_is_unavailable() -> None:
    from windshift._embedded import free_port
    from windshift.errors import UnavailableError

    with pytest.raises(UnavailableError, match="cannot connect"):
        await windshift.connect(f"nats://127.0.0.1:{free_port()}")


async def test_publish_many_sends_a_batch_and_answers_per_event_in_order(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    first = await client.publish(f"{name}.a", StringValue(value="first"))
    events = [
        OutgoingEvent(f"{name}.b", StringValue(value=str(n)), idempotency_key=f"k{n}")
        for n in range(600)  # more than the pipeline's 256 slots
    ]
    events.append(OutgoingEvent(f"{name}.b", StringValue(value="again"), idempotency_key="k0"))
    events.append(OutgoingEvent(f"{name}.a", StringValue(value="late"), expected_last_id=0))
    events.append(OutgoingEvent(f"{name}.a", StringValue(value="ok"), expected_last_id=first.id))
    events.append(OutgoingEvent(f"{name}x.nowhere", StringValue(value="lost")))
    results = await client.publish_many(events)
    assert len(results) == len(events)
    stored = [r for r in results[:600] if isinstance(r, PublishedEvent)]
    assert [r.id for r in stored] == list(range(first.id + 1, first.id + 601))  # in order
    again, late, ok, lost = results[600:]
    assert isinstance(again, PublishedEvent) and again.duplicate and again.id == stored[0].id
    assert isinstance(late, ConflictError)  # its own error; the others went through
    assert isinstance(ok, PublishedEvent)
    assert isinstance(lost, NotFoundError)
    info = await client.stream_info(name)
    assert info.events == 602


async def test_publish_many_refuses_the_whole_batch_when_one_event_is_invalid(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    events = [
        OutgoingEvent(f"{name}.a", StringValue(value="fine")),
        OutgoingEvent(f"{name}.*", StringValue(value="wildcard")),
    ]
    with pytest.raises(ValidationError, match=r"event 1: .*wildcards are not allowed"):
        await client.publish_many(events)
    assert (await client.stream_info(name)).events == 0  # nothing was published
    with pytest.raises(ValidationError, match="a list of OutgoingEvent"):
        await client.publish_many(events[0])  # type: ignore[arg-type]
