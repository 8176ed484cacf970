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
from windshift import (
    ConsumerOptions,
    Limits,
    StreamOptions,
    StreamPointer,
    StreamSource,
    ValidationError,
)
from windshift._names import MAX_SUBJECT_LENGTH
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


# --- Limits: how much one configuration may ask of nats-server ---------------------


def _subjects(count: int, prefix: str = "s") -> list[str]:
    return [f"{prefix}.{i}" for i in range(count)]


def test_the_default_limits() -> None:
    assert Limits() == Limits(
        max_stream_subjects=256,
        max_stream_sources=64,
        max_filter_subjects=256,
        max_subject_length=256,
        max_subject_tokens=16,
    )
    assert windshift.ClientSettings().limits == Limits()


@pytest.mark.parametrize(
    ("field", "value", "highest"),
    [
        ("max_stream_subjects", 0, 1_000_000),
        ("max_stream_sources", -1, 1_000_000),
        ("max_filter_subjects", True, 1_000_000),
        ("max_filter_subjects", "10", 1_000_000),
        ("max_subject_length", MAX_SUBJECT_LENGTH + 1, MAX_SUBJECT_LENGTH),
        ("max_subject_tokens", 10_000, MAX_SUBJECT_LENGTH // 2),
    ],
)
def test_a_limit_out_of_its_range_is_refused_naming_it(
    field: str, value: object, highest: int
) -> None:
    with pytest.raises(
        ValidationError, match=f"{field} must be a whole number from 1 to {highest}"
    ):
        Limits(**{field: value})  # type: ignore[arg-type]


def test_stream_subjects_up_to_the_limit_and_not_one_more() -> None:
    config = StreamOptions(subjects=_subjects(256)).to_config("orders")
    assert len(config["subjects"]) == 256
    with pytest.raises(
        ValidationError,
        match=r"stream 'orders': 20001 stream subjects, more than the limit of 256 "
        r"\(max_stream_subjects\)",
    ):
        StreamOptions(subjects=_subjects(20_001)).to_config("orders")
    limits = Limits(max_stream_subjects=2)
    assert StreamOptions(subjects=_subjects(2)).to_config("orders", limits)["subjects"]
    with pytest.raises(ValidationError, match="3 stream subjects, more than the limit of 2"):
        StreamOptions(subjects=_subjects(3)).to_config("orders", limits)


def test_sources_up_to_the_limit_and_not_one_more() -> None:
    def aggregate(count: int) -> StreamOptions:
        return StreamOptions(sources=[StreamSource(f"s{i}") for i in range(count)])

    assert len(aggregate(64).to_config("all")["sources"]) == 64
    with pytest.raises(
        ValidationError,
        match=r"stream 'all': 65 sources, more than the limit of 64 \(max_stream_sources\)",
    ):
        aggregate(65).to_config("all")
    with pytest.raises(ValidationError, match="3 sources, more than the limit of 2"):
        aggregate(3).to_config("all", Limits(max_stream_sources=2))


def test_filter_subjects_of_a_mirror_and_of_all_sources_together() -> None:
    mirror = StreamOptions(mirror=StreamSource("orders", filter_subjects=_subjects(257)))
    with pytest.raises(
        ValidationError,
        match=r"source stream 'orders': 257 filter subjects, more than the limit of 256 "
        r"\(max_filter_subjects\)",
    ):
        mirror.to_config("copy")
    # Each source within the limit, all of them together beyond it.
    sources = StreamOptions(
        sources=[StreamSource(f"s{i}", filter_subjects=_subjects(100, f"s{i}")) for i in range(3)]
    )
    with pytest.raises(
        ValidationError,
        match=r"stream 'all': 300 filter subjects in its sources together, more than the "
        r"limit of 256 \(max_filter_subjects\)",
    ):
        sources.to_config("all")
    assert len(sources.to_config("all", Limits(max_filter_subjects=300))["sources"]) == 3


def test_consumer_subjects_up_to_the_limit_and_not_one_more() -> None:
    assert len(ConsumerOptions(subjects=_subjects(256)).to_config("s", "c")["filter_subjects"]) == (
        256
    )
    with pytest.raises(
        ValidationError,
        match=r"consumer 'c' on stream 's': 20001 consumer subjects, more than the limit of "
        r"256 \(max_filter_subjects\)",
    ):
        ConsumerOptions(subjects=_subjects(20_001)).to_config("s", "c")
    with pytest.raises(ValidationError, match="consumer '\\(ephemeral\\)' on stream 's': 2"):
        ConsumerOptions(subjects=_subjects(2)).to_config("s", None, Limits(max_filter_subjects=1))


@pytest.mark.parametrize(
    "options",
    [
        lambda subject: StreamOptions(subjects=[subject]),
        lambda subject: StreamOptions(mirror=StreamSource("o", filter_subjects=[subject])),
        lambda subject: StreamOptions(sources=[StreamSource("o", filter_subjects=[subject])]),
    ],
    ids=["stream", "mirror", "source"],
)
def test_each_subject_of_a_stream_is_bounded_in_length_and_tokens(options: Any) -> None:
    longest, deepest = "a" * 256, ".".join("a" * 16)
    assert options(longest).to_config("x") and options(deepest).to_config("x")
    with pytest.raises(
        ValidationError, match=r"is 257 characters long, more than the limit of 256 \(max_subject"
    ):
        options(longest + "a").to_config("x")
    with pytest.raises(
        ValidationError, match=r"has 17 tokens, more than the limit of 16 \(max_subject_tokens\)"
    ):
        options(deepest + ".a").to_config("x")
    roomy = Limits(max_subject_length=300, max_subject_tokens=17)
    assert options(longest + "a").to_config("x", roomy)
    assert options(deepest + ".a").to_config("x", roomy)


def test_each_subject_of_a_consumer_is_bounded_in_length_and_tokens() -> None:
    with pytest.raises(ValidationError, match=r"consumer subject 'aaa.*\.\.\. is 300 characters"):
        ConsumerOptions(subjects=["a" * 300]).to_config("s", "c")
    with pytest.raises(ValidationError, match="has 3 tokens, more than the limit of 2"):
        ConsumerOptions(subjects=["a.b.c"]).to_config("s", "c", Limits(max_subject_tokens=2))
