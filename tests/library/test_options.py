"""The options dataclasses: one place per option, and the guardrails of adding one.

Adding a stream or consumer option means a field of StreamOptions or
ConsumerOptions (with its JetStream key both ways) and the same key in the
TypedDict that types ``Client.ensure_stream``/``ensure_consumer``'s keywords.
The tests here fail when one of those is forgotten (see CONTRIBUTING.md).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, get_type_hints

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift import ConsumerOptions, StreamOptions, StreamPointer, StreamSource, ValidationError
from windshift._options import ConsumerOptionArgs, StreamOptionArgs

# Every field set to something other than its default: the read-back must
# give each of them back. A new option needs a value here (a test checks).
STREAM_SAMPLE = StreamOptions(
    subjects=("orders.>", "refunds.*"),
    max_age=timedelta(days=3),
    max_events=1000,
    max_events_per_subject=10,
    max_bytes=1 << 20,
    discard="new",
    discard_new_per_subject=True,
    storage="memory",
    replicas=3,
    deduplication_window=timedelta(minutes=1),
    max_event_size=4096,
    compression="s2",
)
# mirror and sources exclude subjects: checked on their own samples.
STREAM_SOURCE_FIELDS = {"mirror", "sources"}
MIRROR_SAMPLE = StreamOptions(
    mirror=StreamSource("orders", start=StreamPointer.offset(7), filter_subjects=("orders.eu.>",))
)
SOURCES_SAMPLE = StreamOptions(
    sources=(
        StreamSource("orders", filter_subjects=("orders.a", "orders.b")),
        StreamSource("refunds", start=StreamPointer.time(datetime(2026, 1, 2, tzinfo=UTC))),
    )
)
CONSUMER_SAMPLE = ConsumerOptions(
    subjects=("orders.created",),
    start=StreamPointer.offset(42),
    processing_timeout=timedelta(seconds=7),
    max_delivery_attempts=4,
    inactive_threshold=timedelta(hours=5),
    dead_letter_stream="orders-dead",
)


@pytest.mark.parametrize(
    ("options", "arguments"),
    [(StreamOptions, StreamOptionArgs), (ConsumerOptions, ConsumerOptionArgs)],
)
def test_the_keyword_arguments_are_the_fields(options: type[Any], arguments: type[Any]) -> None:
    fields = get_type_hints(options)
    assert get_type_hints(arguments) == fields
    assert list(arguments.__annotations__) == [field.name for field in dataclasses.fields(options)]


@pytest.mark.parametrize(
    ("sample", "skipped"),
    [(STREAM_SAMPLE, STREAM_SOURCE_FIELDS), (CONSUMER_SAMPLE, set())],
    ids=["stream", "consumer"],
)
def test_the_samples_set_every_option(sample: Any, skipped: set[str]) -> None:
    for field in dataclasses.fields(sample):
        if field.name not in skipped:
            assert getattr(sample, field.name) != field.default, f"set {field.name} in the sample"


@pytest.mark.parametrize("sample", [STREAM_SAMPLE, MIRROR_SAMPLE, SOURCES_SAMPLE])
def test_stream_options_read_back_from_their_configuration(sample: StreamOptions) -> None:
    assert StreamOptions.from_config(sample.to_config("orders2")) == sample


def test_consumer_options_read_back_from_their_configuration() -> None:
    assert ConsumerOptions.from_config(CONSUMER_SAMPLE.to_config("orders", "billing")) == (
        CONSUMER_SAMPLE
    )


def test_defaults_read_back_as_defaults() -> None:
    assert StreamOptions.from_config(StreamOptions(subjects=["a"]).to_config("s")) == (
        StreamOptions(subjects=("a",))
    )
    # A new consumer starts at new events when no start is given.
    assert ConsumerOptions.from_config(ConsumerOptions().to_config("s", "c")) == ConsumerOptions(
        start=StreamPointer.end()
    )


async def test_the_client_takes_options_whole_or_field_by_field(
    client: windshift.Client, name: str
) -> None:
    whole = StreamOptions(subjects=[f"{name}.>"], max_events=5)
    info = await client.ensure_stream(name, whole)
    assert (info.options.max_events, info.subjects) == (5, [f"{name}.>"])
    # keywords replace the fields of the options given
    info = await client.ensure_stream(name, whole, max_events=9)
    assert info.options.max_events == 9
    info = await client.ensure_stream(name, subjects=[f"{name}.>"])
    assert info.options.max_events is None
    consumer = await client.ensure_consumer(
        name, "c", ConsumerOptions(max_delivery_attempts=2), start=StreamPointer.start()
    )
    assert consumer.options.max_delivery_attempts == 2
    assert consumer.options.start == StreamPointer.start()


async def test_options_of_the_wrong_kind_or_unknown_keywords_are_refused(
    client: windshift.Client, name: str
) -> None:
    with pytest.raises(ValidationError, match="options must be a StreamOptions"):
        await client.ensure_stream(name, ConsumerOptions())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="the fields of ConsumerOptions"):
        await client.ensure_consumer(name, "c", max_age=timedelta(1))  # type: ignore[call-arg]


async def test_compression_is_the_streams_storage_compression(
    client: windshift.Client, name: str
) -> None:
    info = await client.ensure_stream(name, subjects=[f"{name}.>"], compression="s2")
    assert (info.options.compression, info.config["compression"]) == ("s2", "s2")
    await client.publish(f"{name}.a", StringValue(value="x" * 1000))
    info = await client.ensure_stream(name, subjects=[f"{name}.>"])  # may change back
    assert (info.options.compression, info.config.get("compression", "none")) == ("none", "none")
    assert info.events == 1
    with pytest.raises(ValidationError, match="compression must be 'none' or 's2', got 'zip'"):
        await client.ensure_stream(name, subjects=[f"{name}.>"], compression="zip")  # type: ignore[arg-type]
