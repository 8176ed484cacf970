"""The error tree: JetStream's answers mapped by err_code, and leaves that carry their names."""

from __future__ import annotations

import pytest
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from windshift import (
    ConfigurationConflictError,
    ConsumerNotFoundError,
    NotFoundError,
    StreamNotFoundError,
    StreamSource,
    UnavailableError,
    ValidationError,
)
from windshift._jsapi import ApiError


@pytest.mark.parametrize(
    ("code", "err_code", "update", "expected"),
    [
        (503, 10008, False, UnavailableError),  # JetStream temporarily unavailable
        (500, 10023, False, UnavailableError),  # insufficient resources
        (500, 10052, True, ConfigurationConflictError),  # "can not unseal a sealed stream"
        (400, 10055, True, ConfigurationConflictError),  # mirror configuration not updatable
        (400, 10052, True, ConfigurationConflictError),  # an update the stream cannot take
        (400, 10052, False, ValidationError),  # the same refusal of a new stream's config
        (400, 10058, False, ConfigurationConflictError),  # name in use, other configuration
        (400, 10065, False, ConfigurationConflictError),  # subjects overlap another stream's
        (404, 10059, False, StreamNotFoundError),
        (404, 10014, False, ConsumerNotFoundError),
        (404, 99999, False, NotFoundError),
    ],
)
def test_jetstream_errors_map_by_err_code(
    code: int, err_code: int, update: bool, expected: type[Exception]
) -> None:
    error = ApiError(code, err_code, "what JetStream said").to_windshift(
        "ensure stream 'orders'", stream="orders", consumer="billing", update=update
    )
    assert type(error) is expected
    assert str(error) == "ensure stream 'orders': what JetStream said"


async def test_changing_a_mirrors_source_is_a_configuration_conflict(
    client: windshift.Client, name: str
) -> None:
    await client.ensure_stream(f"{name}a", subjects=[f"{name}a.>"])
    await client.ensure_stream(f"{name}b", subjects=[f"{name}b.>"])
    await client.ensure_stream(f"{name}m", mirror=StreamSource(f"{name}a"))
    with pytest.raises(ConfigurationConflictError, match="mirror configuration"):
        await client.ensure_stream(f"{name}m", mirror=StreamSource(f"{name}b"))


async def test_missing_streams_and_consumers_carry_their_names(
    client: windshift.Client, name: str
) -> None:
    with pytest.raises(StreamNotFoundError) as stream_missing:
        await client.stream_info(name)
    assert stream_missing.value.stream == name
    with pytest.raises(StreamNotFoundError) as no_stream:
        await client.ensure_consumer(name, "billing")
    assert no_stream.value.stream == name
    await client.ensure_stream(name, subjects=[f"{name}.>"])
    for missing in (client.consumer_info(name, "billing"), client.delete_consumer(name, "billing")):
        with pytest.raises(ConsumerNotFoundError) as consumer_missing:
            await missing
        assert (consumer_missing.value.stream, consumer_missing.value.consumer) == (
            name,
            "billing",
        )
    with pytest.raises(ConsumerNotFoundError) as on_entering:
        async with client.subscribe(name, "billing"):
            pass
    assert on_entering.value.consumer == "billing"
    with pytest.raises(NotFoundError, match="no stream collects"):
        await client.publish(f"{name}x.y", StringValue(value="nowhere"))
