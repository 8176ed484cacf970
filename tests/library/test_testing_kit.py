"""windshift.testing: run_handler without a server, and the pytest plugin in a user's project."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from windshift import Event, Retry, ValidationError
from windshift.testing import make_event, run_handler

RETRY = Retry(delay=timedelta(seconds=2), backoff=3.0, jitter=0)


async def ok(event: Event) -> None:
    event.unpack(StringValue)


async def broken(event: Event) -> None:
    raise ValueError(f"cannot handle {event.unpack(StringValue).value}")


async def self_settling(event: Event) -> None:
    await event.ping()
    await event.reject(permanently=True)


async def test_a_handler_that_returns_is_acknowledged() -> None:
    result = await run_handler(ok, StringValue(value="x"))
    assert result.acknowledged and result.outcome == "acknowledged"
    assert (result.error, result.delay) == (None, None)


async def test_a_handler_that_raises_is_rejected_with_the_retry_delay_of_its_attempt() -> None:
    result = await run_handler(broken, StringValue(value="x"), attempt=2, retry=RETRY)
    assert result.outcome == "rejected"
    assert result.delay == timedelta(seconds=6)  # 2 s * 3 ** (2 - 1)
    assert isinstance(result.error, ValueError)


async def test_the_last_attempt_is_dead_lettered_with_the_attempts() -> None:
    result = await run_handler(
        broken,
        StringValue(value="poison"),
        attempt=3,
        max_delivery_attempts=3,
        dead_letter_stream="dead",
    )
    assert result.dead_lettered
    assert result.attempts == 3
    assert result.reason is not None and "ValueError: cannot handle poison" in result.reason


async def test_the_last_attempt_without_a_dead_letter_stream_is_dropped() -> None:
    result = await run_handler(broken, StringValue(value="x"), attempt=5, max_delivery_attempts=5)
    assert result.outcome == "rejected_permanently"


async def test_what_the_handler_settled_itself_is_left_alone() -> None:
    result = await run_handler(self_settling, make_event(StringValue(value="x")))
    assert result.outcome == "rejected_permanently"
    assert result.pings == 1


async def test_only_events_of_make_event_are_taken() -> None:
    event = make_event(StringValue(value="x"), subject="orders.created", event_id=42)
    assert (event.subject, event.id, event.unpack(StringValue).value) == (
        "orders.created",
        42,
        "x",
    )
    await event.ack()
    with pytest.raises(ValidationError, match="make_event"):
        foreign = Event.__new__(Event)
        foreign._source = object()  # type: ignore[assignment]
        await run_handler(ok, foreign)


def test_the_plugin_gives_a_users_tests_a_server_a_client_and_names(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            import asyncio
            import pytest
            from google.protobuf.wrappers_pb2 import StringValue
            import windshift

            @pytest.mark.asyncio
            async def test_publish_and_read(windshift_client, windshift_name):
                stream = windshift_name
                await windshift_client.ensure_stream(stream, subjects=[f"{stream}.>"])
                consumer = await windshift_client.ensure_consumer(
                    stream, "c", start=windshift.StreamPointer.start())
                await windshift_client.publish(f"{stream}.x", StringValue(value="hi"))
                async with windshift_client.subscribe(stream, consumer.id) as events:
                    event = await asyncio.wait_for(anext(events), 10)
                    assert event.unpack(StringValue).value == "hi"
                    await event.ack()

            @pytest.mark.asyncio
            async def test_the_server_is_shared(windshift_nats, windshift_client, windshift_name):
                assert windshift_client.is_connected
                assert windshift_nats.url.startswith("nats://127.0.0.1:")
                assert windshift_name
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "windshift.testing", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
