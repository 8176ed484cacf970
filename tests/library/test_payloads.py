"""Pydantic models as payloads: JSON on NATS, told apart from protobuf, read back checked."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import nats
import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.wrappers_pb2 import StringValue
from pydantic import BaseModel, ConfigDict

import windshift
from tests._util import take
from windshift import EmbeddedNats, Event, StreamPointer, ValidationError
from windshift.testing import run_handler


class OrderCreated(BaseModel):
    id: str
    total_cents: int
    tags: list[str] = []


class Renamed(BaseModel):
    model_config = ConfigDict(title="acme.orders.v1.OrderShipped")
    id: str


NAME = f"{OrderCreated.__module__}.OrderCreated"


async def _stored(nats_url: str, stream: str, seq: int) -> tuple[bytes, dict[str, str]]:
    raw = await nats.connect(nats_url)
    try:
        message = await raw.jetstream().get_msg(stream, seq)
    finally:
        await raw.close()
    return message.data or b"", dict(message.headers or {})


async def test_a_model_is_published_as_json_with_its_type_and_content_type(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    published = await client.publish(f"{name}.created", OrderCreated(id="1", total_cents=500))
    body, headers = await _stored(nats_server.url, name, published.id)
    assert json.loads(body) == {"id": "1", "total_cents": 500, "tags": []}
    assert headers["WS-Data-Type"] == NAME
    assert headers["Content-Type"] == "application/json"
    renamed = await client.publish(f"{name}.shipped", Renamed(id="1"))
    assert (await _stored(nats_server.url, name, renamed.id))[1]["WS-Data-Type"] == (
        "acme.orders.v1.OrderShipped"
    )


async def test_events_unpack_as_their_model_and_refuse_the_other_format(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "c", start=StreamPointer.start())
    await client.publish(f"{name}.json", OrderCreated(id="7", total_cents=1, tags=["a"]))
    await client.publish(f"{name}.proto", StringValue(value="protobuf"))
    async with client.subscribe(name, consumer.id) as events:
        as_json, as_proto = await take(events, 2)
        assert as_json.unpack(OrderCreated) == OrderCreated(id="7", total_cents=1, tags=["a"])
        assert as_json.content_type == "application/json"
        assert as_proto.content_type is None
        with pytest.raises(
            ValidationError, match=rf"event {as_json.id} holds JSON .* not protobuf"
        ):
            as_json.unpack(StringValue)
        with pytest.raises(
            ValidationError, match=rf"event {as_proto.id} holds protobuf .* not JSON for"
        ):
            as_proto.unpack(OrderCreated)
        with pytest.raises(ValidationError, match=f"holds '{NAME}', not 'acme.orders.v1"):
            as_json.unpack(Renamed)
        # The data as an Any is a Struct, which any protobuf reader can open.
        document = Struct()
        assert as_json.data.Unpack(document)
        assert document["id"] == "7"
        for event in (as_json, as_proto):
            await event.ack()


async def test_bad_json_for_the_model_names_the_event_and_the_field(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    consumer = await client.ensure_consumer(name, "c", start=StreamPointer.start())
    raw = await nats.connect(nats_server.url)
    try:
        await raw.jetstream().publish(
            f"{name}.x",
            b'{"id": "1", "total_cents": "lots"}',
            headers={"WS-Data-Type": NAME, "Content-Type": "application/json"},
        )
    finally:
        await raw.close()
    async with client.subscribe(name, consumer.id) as events:
        [event] = await take(events, 1)
        with pytest.raises(
            ValidationError, match=rf"event {event.id} is not a valid .*total_cents"
        ):
            event.unpack(OrderCreated)
        await event.ack()


async def test_state_keeps_a_model_as_a_struct(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    await store.set("order.1", OrderCreated(id="1", total_cents=250))
    entry = await store.get("order.1")
    assert entry.unpack(OrderCreated) == OrderCreated(id="1", total_cents=250)
    assert entry.value.type_url.endswith("google.protobuf.Struct")
    with pytest.raises(ValidationError, match=r"key 'order\.1' holds"):
        entry.unpack(StringValue)
    await store.set("plain", StringValue(value="x"))
    with pytest.raises(ValidationError, match=r"holds protobuf 'google\.protobuf\.StringValue'"):
        (await store.get("plain")).unpack(OrderCreated)


async def test_a_dead_json_event_unpacks_and_replays_as_json(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    dead = f"{name}dead"
    consumer = await client.ensure_consumer(
        name, "c", start=StreamPointer.start(), dead_letter_stream=dead
    )
    order = OrderCreated(id="9", total_cents=900)
    await client.publish(f"{name}.x", order)
    async with client.subscribe(name, consumer.id) as events:
        [event] = await take(events, 1)
        await event.reject(permanently=True, reason="cannot ship")
    queue = client.dead_letters(dead)
    [letter] = await queue.list()
    assert letter.unpack(OrderCreated) == order
    replayed = await queue.replay(letter.id)
    body, headers = await _stored(nats_server.url, name, replayed.id)
    assert json.loads(body) == order.model_dump()
    assert headers["Content-Type"] == "application/json"


async def test_a_worker_handler_and_run_handler_read_models(
    client: windshift.Client, name: str
) -> None:
    seen: list[OrderCreated] = []

    async def handle(event: Event) -> None:
        order = event.unpack(OrderCreated)
        if order.total_cents < 0:
            raise ValueError("a negative total")
        seen.append(order)

    result = await run_handler(handle, OrderCreated(id="1", total_cents=-5))
    assert result.rejected and isinstance(result.error, ValueError)
    assert (await run_handler(handle, OrderCreated(id="2", total_cents=5))).acknowledged

    await client.ensure_stream(name, subjects=[f"{name}.>"])
    worker = windshift.Worker(client)
    worker.handler(name, "w", subjects=[f"{name}.>"], start=StreamPointer.start())(handle)
    await client.publish(f"{name}.x", OrderCreated(id="3", total_cents=3))
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(15):
        while OrderCreated(id="3", total_cents=3) not in seen:  # noqa: ASYNC110 (a handler's list)
            await asyncio.sleep(0.01)
    await worker.stop(grace_period=timedelta(seconds=5))
    await task
