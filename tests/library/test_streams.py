"""ensure_stream and friends, against a real JetStream."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift import EmbeddedNats, Limits, StreamPointer, StreamSource
from windshift._names import MAX_NAME_LENGTH
from windshift.errors import (
    ConfigurationConflictError,
    NotFoundError,
    StreamNotFoundError,
    ValidationError,
)


async def _publish(client: windshift.Client, subject: str, count: int) -> list[int]:
    return [
        (await client.publish(subject, StringValue(value=f"{subject}-{i}"))).id
        for i in range(count)
    ]


async def _wait_for_events(client: windshift.Client, stream: str, count: int) -> None:
    # Mirrors and sources copy asynchronously; poll the stream's own count.
    for _ in range(200):
        if (await client.stream_info(stream)).events >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{stream} never held {count} events")


async def test_create_with_several_wildcard_subjects(client: windshift.Client, name: str) -> None:
    info = await client.ensure_stream(name, subjects=[f"{name}.orders.*", f"{name}.audit.>"])
    assert info.subjects == [f"{name}.orders.*", f"{name}.audit.>"]
    assert info.deduplication_window == timedelta(minutes=2)
    assert info.storage == "file"
    assert info.replicas == 1
    await client.publish(f"{name}.orders.created", StringValue(value="a"))
    await client.publish(f"{name}.audit.x.y", StringValue(value="b"))
    with pytest.raises(NotFoundError):
        await client.publish(f"{name}.other.deleted", StringValue(value="c"))
    assert (await client.stream_info(name)).events == 2


async def test_retention_options_can_be_added_changed_and_removed(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    info = await client.ensure_stream(
        name,
        subjects=[f"{name}.>"],
        max_age=timedelta(hours=1),
        max_events=100,
        max_events_per_subject=10,
        max_bytes=1_000_000,
        discard="new",
        discard_new_per_subject=True,
        max_event_size=1024,
        deduplication_window=timedelta(seconds=30),
    )
    config = info.config
    assert info.max_age == timedelta(hours=1)
    assert config["max_msgs"] == 100
    assert config["max_msgs_per_subject"] == 10
    assert config["max_bytes"] == 1_000_000
    assert config["discard"] == "new"
    assert config["discard_new_per_subject"] is True
    assert config["max_msg_size"] == 1024
    assert info.deduplication_window == timedelta(seconds=30)

    changed = await client.ensure_stream(
        name, subjects=[f"{name}.>"], max_age=timedelta(hours=2), max_events=50
    )
    assert changed.max_age == timedelta(hours=2)
    assert changed.config["max_msgs"] == 50
    assert changed.config["max_msgs_per_subject"] == -1
    assert changed.config["discard"] == "old"

    removed = await client.ensure_stream(name, subjects=[f"{name}.>"])
    assert removed.max_age is None
    assert removed.config["max_msgs"] == -1
    assert removed.config["max_bytes"] == -1
    assert removed.config["max_msg_size"] == -1
    assert removed.deduplication_window == timedelta(minutes=2)


async def test_limits_are_enforced(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"], max_events_per_subject=2)
    await _publish(client, f"{name}.a", 5)
    await _publish(client, f"{name}.b", 1)
    info = await client.stream_info(name)
    assert info.events == 3  # two kept on .a, one on .b


async def test_discard_new_per_subject_refuses_new_events(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(
        name,
        subjects=[f"{name}.>"],
        max_events_per_subject=1,
        discard="new",
        discard_new_per_subject=True,
    )
    await client.publish(f"{name}.a", StringValue(value="first"))
    with pytest.raises(ConfigurationConflictError, match="per subject exceeded"):
        await client.publish(f"{name}.a", StringValue(value="second"))
    await client.publish(f"{name}.b", StringValue(value="other subject"))


async def test_full_stream_with_discard_new_refuses_clearly(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"], max_events=1, discard="new")
    await client.publish(f"{name}.a", StringValue(value="first"))
    with pytest.raises(ConfigurationConflictError, match="discards new events"):
        await client.publish(f"{name}.b", StringValue(value="second"))


async def test_discard_new_per_subject_needs_a_per_subject_limit(
    client: windshift.Client, name: str
) -> None:
    with pytest.raises(ValidationError, match="max_events_per_subject"):
        await client.ensure_stream(
            name, subjects=[f"{name}.>"], discard="new", discard_new_per_subject=True
        )


async def test_storage_cannot_change(client: windshift.Client, name: str) -> None:
    info = await client.ensure_stream(name, subjects=[f"{name}.>"], storage="memory")
    assert info.storage == "memory"
    with pytest.raises(ConfigurationConflictError, match="storage"):
        await client.ensure_stream(name, subjects=[f"{name}.>"], storage="file")


async def test_subject_bound_to_another_stream_is_refused(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    with pytest.raises(ConfigurationConflictError, match="overlap"):
        await client.ensure_stream(f"{name}b", subjects=[f"{name}.orders"])


async def test_concurrent_ensure_succeeds_for_all(client: windshift.Client, name: str) -> None:
    results = await asyncio.gather(
        *(
            client.ensure_stream(name, subjects=[f"{name}.>"], max_age=timedelta(days=1))
            for _ in range(20)
        )
    )
    assert {info.name for info in results} == {name}
    assert (await client.stream_info(name)).max_age == timedelta(days=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of"),
        ({"subjects": ["a"], "mirror": StreamSource("x")}, "exactly one of"),
        ({"subjects": ["a..b"]}, "empty token"),
        ({"subjects": ["a"], "discard": "middle"}, "'middle'"),
        ({"subjects": ["a"], "storage": "disk"}, "'disk'"),
        ({"subjects": ["a"], "replicas": 0}, "replicas"),
        ({"subjects": ["a"], "max_events": 0}, "max_events"),
        ({"subjects": ["a"], "max_age": timedelta(seconds=-1)}, "max_age"),
        ({"subjects": ["a"], "deduplication_window": 5}, "deduplication_window"),
        ({"mirror": StreamSource("bad name")}, "'bad name'"),
    ],
)
async def test_bad_options_are_refused_before_nats(
    client: windshift.Client, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await client.ensure_stream("valid", **options)  # type: ignore[arg-type]


async def test_mirror_copies_existing_events_with_filters(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await _publish(client, f"{name}.a", 3)
    await _publish(client, f"{name}.b", 2)
    await _publish(client, f"{name}.c", 2)
    mirror = f"{name}m"
    await client.ensure_stream(
        mirror, mirror=StreamSource(name, filter_subjects=[f"{name}.a", f"{name}.b"])
    )
    await _wait_for_events(client, mirror, 5)
    assert (await client.stream_info(mirror)).events == 5


async def test_mirror_from_a_pointer(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    ids = await _publish(client, f"{name}.a", 5)
    mirror = f"{name}m"
    await client.ensure_stream(
        mirror, mirror=StreamSource(name, start=StreamPointer.offset(ids[3]))
    )
    await _wait_for_events(client, mirror, 2)
    info = await client.stream_info(mirror)
    assert info.events == 2
    assert info.first_id == ids[3]


async def test_sources_aggregate_several_streams(client: windshift.Client, name: str) -> None:
    first, second, total = f"{name}a", f"{name}b", f"{name}all"
    await client.ensure_stream(first, subjects=[f"{first}.>"])
    await client.ensure_stream(second, subjects=[f"{second}.>"])
    await _publish(client, f"{first}.x", 2)
    await _publish(client, f"{first}.y", 2)
    await _publish(client, f"{second}.x", 3)
    await client.ensure_stream(
        total,
        sources=[
            StreamSource(first, filter_subjects=[f"{first}.x"]),
            StreamSource(second, start=StreamPointer.offset(2)),
        ],
    )
    await _wait_for_events(client, total, 4)
    await asyncio.sleep(0.2)  # nothing more may arrive: the filters hold
    assert (await client.stream_info(total)).events == 4


async def test_source_from_end_copies_only_new_events(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    await _publish(client, f"{name}.old", 3)
    total = f"{name}all"
    await client.ensure_stream(total, sources=[StreamSource(name, start=StreamPointer.end())])
    await _publish(client, f"{name}.new", 2)
    await _wait_for_events(client, total, 2)
    assert (await client.stream_info(total)).events == 2


async def test_stream_info_and_delete(client: windshift.Client, name: str) -> None:
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    ids = await _publish(client, f"{name}.a", 3)
    info = await client.stream_info(name)
    assert (info.events, info.first_id, info.last_id) == (3, ids[0], ids[-1])
    await client.delete_stream(name)
    with pytest.raises(NotFoundError, match=name):
        await client.stream_info(name)
    with pytest.raises(NotFoundError, match=name):
        await client.delete_stream(name)


async def test_the_limits_of_a_client_hold_before_nats(
    nats_server: EmbeddedNats, name: str
) -> None:
    limits = Limits(max_stream_subjects=2, max_filter_subjects=1)
    async with windshift.connect(nats_server.url, limits=limits) as client:
        assert client.settings.limits == limits
        with pytest.raises(ValidationError, match="3 stream subjects, more than the limit of 2"):
            await client.ensure_stream(name, subjects=[f"{name}.a", f"{name}.b", f"{name}.c"])
        with pytest.raises(StreamNotFoundError):
            await client.stream_info(name)  # nothing reached NATS
        await client.ensure_stream(name, subjects=[f"{name}.a", f"{name}.b"])
        with pytest.raises(ValidationError, match="2 consumer subjects, more than the limit of 1"):
            await client.ensure_consumer(name, "c", subjects=[f"{name}.a", f"{name}.b"])
        await client.ensure_consumer(name, "c", subjects=[f"{name}.a"])


async def test_a_stream_at_the_default_limits_is_created(
    client: windshift.Client, name: str
) -> None:
    subjects = [f"{name}.{i}.{'x' * 200}" for i in range(256)]
    info = await client.ensure_stream(name, subjects=subjects, storage="memory")
    assert info.subjects == subjects
    with pytest.raises(ValidationError, match="257 stream subjects"):
        await client.ensure_stream(name, subjects=[*subjects, f"{name}.more"])
    assert (await client.stream_info(name)).subjects == subjects  # unchanged


async def test_names_as_long_as_nats_takes(client: windshift.Client, name: str) -> None:
    longest = name + "x" * (MAX_NAME_LENGTH - len(name))
    await client.ensure_stream(longest, subjects=[f"{name}.>"], storage="memory")
    consumer = await client.ensure_consumer(longest, longest)
    assert (consumer.id, consumer.stream) == (longest, longest)
    with pytest.raises(ValidationError, match="256 characters long, longer than NATS allows"):
        await client.ensure_stream(longest + "x", subjects=[f"{name}.b"])


async def test_connect_refuses_limits_of_another_kind(nats_server: EmbeddedNats) -> None:
    with pytest.raises(ValidationError, match=r"limits must be a windshift\.Limits, got 5"):
        windshift.connect(nats_server.url, limits=5)  # type: ignore[arg-type]
