"""The unary RPCs of EventsService through a real channel to a real serve process.

What each RPC did is checked on NATS itself, through the library.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
import windshift._wire
from tests.grpc_fixtures import duration, ensure_stream, publish, string_any
from tests.library.test_options import CONSUMER_SAMPLE, STREAM_SAMPLE
from windshift import Event, NotFoundError, StreamPointer
from windshift_grpc import convert
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

ESR = pb.EnsureStreamRequest


async def _consumer_config(client: windshift.Client, stream: str, consumer: str) -> dict[str, Any]:
    answer = await client.nats.request(f"$JS.API.CONSUMER.INFO.{stream}.{consumer}", b"")
    config: dict[str, Any] = json.loads(answer.data)["config"]
    return config


async def _read(client: windshift.Client, stream: str, consumer: str, count: int) -> list[Event]:
    async with client.subscribe(stream, consumer) as events:
        taken = [await asyncio.wait_for(anext(events), 10) for _ in range(count)]
        for event in taken:
            await event.ack()
    return taken


# --- EnsureStream ---------------------------------------------------------------


async def test_ensure_stream_applies_every_option(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    request = ESR(
        name=name,
        subjects=ESR.Subjects(subjects=[f"{name}.a.*", f"{name}.b.>"]),
        retention_policy=ESR.RetentionPolicy(
            max_age=duration(3600),
            max_events=1000,
            max_events_per_subject=10,
            max_bytes=1_000_000,
            discard_policy=ESR.DISCARD_POLICY_NEW,
            discard_new_per_subject=True,
        ),
        storage=ESR.Storage(type=ESR.STORAGE_TYPE_MEMORY, replicas=1),
        deduplication_window=duration(30),
        max_event_size=4096,
    )
    assert await stub.EnsureStream(request) == pb.EnsureStreamResponse()

    info = await client.stream_info(name)
    config = info.config
    assert info.subjects == [f"{name}.a.*", f"{name}.b.>"]
    assert info.max_age == timedelta(hours=1)
    assert (config["max_msgs"], config["max_msgs_per_subject"], config["max_bytes"]) == (
        1000,
        10,
        1_000_000,
    )
    assert config["discard"] == "new"
    assert config["discard_new_per_subject"] is True
    assert info.storage == "memory"
    assert info.replicas == 1
    assert info.deduplication_window == timedelta(seconds=30)
    assert config["max_msg_size"] == 4096


async def test_ensure_stream_defaults_and_full_update(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    await ensure_stream(stub, name)
    info = await client.stream_info(name)
    assert info.storage == "file"
    assert info.config["discard"] == "old"
    assert info.deduplication_window == timedelta(minutes=2)
    assert info.max_age is None
    assert info.config["max_msgs"] == -1

    # Every call states the whole configuration.
    await stub.EnsureStream(
        ESR(
            name=name,
            subjects=ESR.Subjects(subjects=[f"{name}.>", f"{name}-extra.>"]),
            retention_policy=ESR.RetentionPolicy(max_events=5),
        )
    )
    info = await client.stream_info(name)
    assert info.subjects == [f"{name}.>", f"{name}-extra.>"]
    assert info.config["max_msgs"] == 5
    await stub.EnsureStream(ESR(name=name, subjects=ESR.Subjects(subjects=[f"{name}.>"])))
    assert (await client.stream_info(name)).config["max_msgs"] == -1


async def test_ensure_stream_mirror_with_start_and_filter(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    await ensure_stream(stub, name)
    mirror = ESR.StreamSource(name=name, filter_subjects=[f"{name}.eu.>"])
    getattr(mirror, "from").offset = 7
    await stub.EnsureStream(ESR(name=f"{name}-mirror", mirror=mirror))

    info = await client.stream_info(f"{name}-mirror")
    assert info.subjects == []
    assert info.config["mirror"] == {
        "name": name,
        "opt_start_seq": 7,
        "filter_subject": f"{name}.eu.>",
    }


async def test_ensure_stream_aggregate_with_pointers(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    for part in ("a", "b", "c"):
        await ensure_stream(stub, f"{name}{part}")
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = ESR.StreamSource(name=f"{name}a", filter_subjects=[f"{name}a.x", f"{name}a.y"])
    getattr(first, "from").start = True
    second = ESR.StreamSource(name=f"{name}b")
    getattr(second, "from").time.FromDatetime(moment)
    third = ESR.StreamSource(name=f"{name}c")
    getattr(third, "from").end = True
    before_end = datetime.now(UTC) - timedelta(seconds=1)
    await stub.EnsureStream(
        ESR(name=f"{name}all", aggregate=ESR.StreamSources(sources=[first, second, third]))
    )

    sources = (await client.stream_info(f"{name}all")).config["sources"]
    by_name = {source["name"]: source for source in sources}
    assert by_name[f"{name}a"]["subject_transforms"] == [
        {"src": f"{name}a.x", "dest": f"{name}a.x"},
        {"src": f"{name}a.y", "dest": f"{name}a.y"},
    ]
    assert "opt_start_seq" not in by_name[f"{name}a"]
    assert "opt_start_time" not in by_name[f"{name}a"]
    assert by_name[f"{name}b"]["opt_start_time"].startswith("2030-01-02T03:04:05")
    start_time = by_name[f"{name}c"]["opt_start_time"]
    assert windshift._wire.parse_time(start_time) >= before_end  # "end" = from now on


# --- EnsureConsumer -------------------------------------------------------------


async def test_ensure_consumer_durable(stub: Stub, client: windshift.Client, name: str) -> None:
    await ensure_stream(stub, name)
    request = pb.EnsureConsumerRequest(
        stream=name,
        name="billing",
        subjects=[f"{name}.orders.*", f"{name}.refunds.>"],
        processing_timeout=duration(7),
    )
    response = await stub.EnsureConsumer(request)
    assert response.id == "billing"

    info = await client.consumer_info(name, "billing")
    assert info.durable
    assert info.subjects == [f"{name}.orders.*", f"{name}.refunds.>"]
    assert info.processing_timeout == timedelta(seconds=7)
    assert info.inactive_threshold is None
    config = await _consumer_config(client, name, "billing")
    assert config["ack_policy"] == "explicit"
    assert config["deliver_policy"] == "new"

    # Updating rewrites subjects and timeout; zero means the 30 s default.
    request.subjects[:] = [f"{name}.orders.*"]
    request.processing_timeout.CopyFrom(duration(0))
    assert (await stub.EnsureConsumer(request)).id == "billing"
    info = await client.consumer_info(name, "billing")
    assert info.subjects == [f"{name}.orders.*"]
    assert info.processing_timeout == timedelta(seconds=30)


async def test_ensure_consumer_ephemeral(stub: Stub, client: windshift.Client, name: str) -> None:
    await ensure_stream(stub, name)
    response = await stub.EnsureConsumer(
        pb.EnsureConsumerRequest(stream=name, subjects=[f"{name}.>"])
    )
    assert re.fullmatch(r"[A-Za-z0-9_-]+", response.id)
    info = await client.consumer_info(name, response.id)
    assert not info.durable
    assert info.inactive_threshold == timedelta(hours=1)
    assert info.processing_timeout == timedelta(seconds=30)


@pytest.mark.parametrize("pointer", ["unset", "start", "end", "offset", "time", "offset0"])
async def test_ensure_consumer_from(
    stub: Stub, client: windshift.Client, name: str, pointer: str
) -> None:
    await ensure_stream(stub, name)
    early = await publish(stub, f"{name}.a", "one", "two")
    await asyncio.sleep(0.01)  # a distinct timestamp for the time pointer (not synchronisation)
    between = datetime.now(UTC)
    later = await publish(stub, f"{name}.a", "three")

    request = pb.EnsureConsumerRequest(stream=name, name="reader", subjects=[f"{name}.>"])
    start = getattr(request, "from")
    if pointer == "start":
        start.start = True
    elif pointer == "end":
        start.end = True
    elif pointer == "offset":
        start.offset = early[1]
    elif pointer == "offset0":
        start.offset = 0  # the original service reads it as "new events only"
    elif pointer == "time":
        start.time.FromDatetime(between)
    await stub.EnsureConsumer(request)
    newest = await publish(stub, f"{name}.a", "four")

    expected = {
        "unset": newest,
        "end": newest,
        "offset0": newest,
        "start": early + later + newest,
        "offset": early[1:] + later + newest,
        "time": later + newest,
    }[pointer]
    events = await _read(client, name, "reader", len(expected))
    assert [event.id for event in events] == expected


# --- DeleteConsumer -------------------------------------------------------------


async def test_delete_consumer(stub: Stub, client: windshift.Client, name: str) -> None:
    await ensure_stream(stub, name)
    consumer = (
        await stub.EnsureConsumer(
            pb.EnsureConsumerRequest(stream=name, name="gone", subjects=[f"{name}.>"])
        )
    ).id
    response = await stub.DeleteConsumer(pb.DeleteConsumerRequest(stream=name, id=consumer))
    assert response == pb.DeleteConsumerResponse()
    with pytest.raises(NotFoundError):
        await client.consumer_info(name, consumer)

    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.DeleteConsumer(pb.DeleteConsumerRequest(stream=name, id=consumer))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as no_stream:
        await stub.DeleteConsumer(pb.DeleteConsumerRequest(stream=f"{name}-none", id="x"))
    assert no_stream.value.code() == grpc.StatusCode.NOT_FOUND


# --- PublishEvent ---------------------------------------------------------------


async def test_publish_event_returns_the_stream_sequence_and_writes_the_headers(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    await ensure_stream(stub, name)
    await client.ensure_consumer(name, "check", start=StreamPointer.start())
    moment = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    request = pb.PublishEventRequest(
        subject=f"{name}.created", data=string_any("first"), idempotency_key="key-1"
    )
    request.timestamp.FromDatetime(moment)
    first = await stub.PublishEvent(request)
    plain = await stub.PublishEvent(
        pb.PublishEventRequest(subject=f"{name}.other", data=string_any("second"))
    )
    assert (first.id, plain.id) == (1, 2)

    one, two = await _read(client, name, "check", 2)
    assert (one.id, one.subject) == (1, f"{name}.created")
    assert one.unpack(StringValue).value == "first"
    assert one.headers["WS-Data-Type"] == "google.protobuf.StringValue"
    assert one.headers["WS-Published-Time"] == "2024-05-06T07:08:09.123456Z"
    assert one.idempotency_key == "key-1"
    assert two.idempotency_key is None
    assert abs(two.timestamp - datetime.now(UTC)) < timedelta(minutes=1)


async def test_publish_event_idempotency_key(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    await ensure_stream(stub, name)
    request = pb.PublishEventRequest(
        subject=f"{name}.a", data=string_any("once"), idempotency_key="order-7"
    )
    first = await stub.PublishEvent(request)
    again = await stub.PublishEvent(request)
    assert again.id == first.id
    assert (await client.stream_info(name)).events == 1


async def test_publish_event_expected_last_id(
    stub: Stub, client: windshift.Client, name: str
) -> None:
    await ensure_stream(stub, name)
    subject = f"{name}.order-1"
    first = await stub.PublishEvent(
        pb.PublishEventRequest(subject=subject, data=string_any("v1"), expected_last_id=0)
    )
    await publish(stub, f"{name}.order-2", "other subject")  # does not count
    second = await stub.PublishEvent(
        pb.PublishEventRequest(subject=subject, data=string_any("v2"), expected_last_id=first.id)
    )
    assert second.id == first.id + 2
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.PublishEvent(
            pb.PublishEventRequest(
                subject=subject, data=string_any("v3"), expected_last_id=first.id
            )
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert (await client.stream_info(name)).events == 3


# --- options added by this implementation ---------------------------------------


def _on_the_wire(value: object) -> object:
    """A library option value as its proto field takes it (for the added fields)."""
    if isinstance(value, timedelta):
        return duration(value.total_seconds())
    if isinstance(value, windshift.StreamPointer):
        raise NotImplementedError("add StreamPointer here when an added field carries one")
    return value


@pytest.mark.parametrize(
    ("request_type", "sample"),
    [(pb.EnsureStreamRequest, STREAM_SAMPLE), (pb.EnsureConsumerRequest, CONSUMER_SAMPLE)],
    ids=["stream", "consumer"],
)
async def test_every_added_option_is_set_over_grpc_and_kept_when_left_out(
    stub: Stub, client: windshift.Client, name: str, request_type: Any, sample: Any
) -> None:
    # Every field 100 and up carries the option of its name (convert.additions):
    # set it through serve, read it back through the library, then send the
    # request an old client would send, without it: the value stays.
    added = [f for f in request_type.DESCRIPTOR.fields if f.number >= convert.FIRST_ADDED_FIELD]

    def request(**fields: Any) -> Any:
        if request_type is pb.EnsureStreamRequest:
            return pb.EnsureStreamRequest(
                name=name,
                subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{name}.>"]),
                **fields,
            )
        return pb.EnsureConsumerRequest(stream=name, name="c", subjects=[f"{name}.>"], **fields)

    async def options() -> Any:
        if request_type is pb.EnsureStreamRequest:
            return (await client.stream_info(name)).options
        return (await client.consumer_info(name, "c")).options

    await ensure_stream(stub, name)
    for field in added:
        wanted = getattr(sample, field.name)
        await getattr(stub, request_type.__name__.removesuffix("Request"))(
            request(**{field.name: _on_the_wire(wanted)})
        )
        assert getattr(await options(), field.name) == wanted, field.name
        await getattr(stub, request_type.__name__.removesuffix("Request"))(request())
        assert getattr(await options(), field.name) == wanted, f"{field.name} was reset"
