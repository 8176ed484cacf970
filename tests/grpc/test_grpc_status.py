"""The one table: windshift errors -> gRPC status codes, row by row.

Each row is checked on the table itself, and, where an EventsService call can
provoke the error, end to end through a real serve process.
(``AlreadyExistsError`` and ``EventSettledError`` cannot arise from an
EventsService call: a twice-settled id is answered in ``invalid_ids``.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.grpc_fixtures import (
    EventsClient,
    StartServe,
    ensure_consumer,
    ensure_stream,
    http_get,
    publish,
    string_any,
)
from windshift import (
    AlreadyExistsError,
    ConfigurationConflictError,
    ConflictError,
    EmbeddedNats,
    EventSettledError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.auth import AuthenticationError, PermissionDeniedError, QuotaExceededError
from windshift_grpc.status import STATUS_CODES, TooManyCallsError, status_for

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )

ESR = pb.EnsureStreamRequest
TABLE = [
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ConflictError, grpc.StatusCode.ABORTED),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (ConfigurationConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (EventSettledError, grpc.StatusCode.FAILED_PRECONDITION),
    # The façade's own access errors (end to end in test_auth.py).
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    # A token's quota of streams and consumers (end to end in test_attacks_access.py).
    (QuotaExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # The limit on open Events calls (end to end in test_grpc_resilience.py).
    (TooManyCallsError, grpc.StatusCode.RESOURCE_EXHAUSTED),
]


async def _code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    return failure.value.code(), str(failure.value.details())


# --- the table ------------------------------------------------------------------


@pytest.mark.parametrize(("error", "code"), TABLE, ids=[error.__name__ for error, _ in TABLE])
def test_table_row(error: type[Exception], code: grpc.StatusCode) -> None:
    assert STATUS_CODES[error] == code
    assert status_for(error("what was wrong, with 'value'")) == (
        code,
        "what was wrong, with 'value'",
    )


def test_the_table_is_complete_and_never_unknown_or_internal() -> None:
    assert set(STATUS_CODES) == {error for error, _ in TABLE}
    assert not set(STATUS_CODES.values()) & {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def test_unexpected_errors_are_logged_and_never_unknown(caplog: pytest.LogCaptureFixture) -> None:
    class Surprise(WindshiftError):
        pass

    with caplog.at_level(logging.ERROR, logger="windshift_grpc.status"):
        assert status_for(Surprise("odd"))[0] == grpc.StatusCode.FAILED_PRECONDITION
        assert status_for(OverflowError("too big"), "M")[0] == grpc.StatusCode.INVALID_ARGUMENT
        code, message = status_for(RuntimeError("bug"), "/svc/Method")
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "bug" in message
    failures = [r for r in caplog.records if r.name == "windshift_grpc.status"]
    assert len(failures) == 2
    assert all(record.exc_info for record in failures)  # with the traceback


# --- through the server ---------------------------------------------------------


async def test_validation_error_is_invalid_argument(stub: Stub) -> None:
    code, details = await _code_of(
        stub.EnsureStream(ESR(name="bad name", subjects=ESR.Subjects(subjects=["x.>"])))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'bad name'" in details  # says which value was wrong
    code, details = await _code_of(stub.EnsureStream(ESR(name="no-source")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "subjects, mirror or sources" in details


async def test_not_found_error_is_not_found(stub: Stub, name: str) -> None:
    code, details = await _code_of(
        stub.PublishEvent(pb.PublishEventRequest(subject=f"{name}.x", data=string_any("x")))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert f"{name}.x" in details
    code, _ = await _code_of(
        stub.EnsureConsumer(pb.EnsureConsumerRequest(stream=name, subjects=[f"{name}.>"]))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_conflict_error_is_aborted(stub: Stub, name: str) -> None:
    await ensure_stream(stub, name)
    await publish(stub, f"{name}.a", "first")
    code, _ = await _code_of(
        stub.PublishEvent(
            pb.PublishEventRequest(subject=f"{name}.a", data=string_any("x"), expected_last_id=0)
        )
    )
    assert code == grpc.StatusCode.ABORTED


async def test_configuration_conflict_is_failed_precondition(stub: Stub, name: str) -> None:
    await ensure_stream(stub, name)
    code, details = await _code_of(
        stub.EnsureStream(
            ESR(
                name=name,
                subjects=ESR.Subjects(subjects=[f"{name}.>"]),
                storage=ESR.Storage(type=ESR.STORAGE_TYPE_MEMORY),
            )
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "storage" in details
    code, _ = await _code_of(
        stub.EnsureStream(ESR(name=f"{name}-2", subjects=ESR.Subjects(subjects=[f"{name}.a"])))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # subject bound to another stream


async def test_an_update_jetstream_refuses_is_failed_precondition(stub: Stub, name: str) -> None:
    # Not INVALID_ARGUMENT: the request is fine for a new stream; it clashes
    # with the stream that exists (mapped by JetStream's err_code).
    for source in ("a", "b"):
        await stub.EnsureStream(
            ESR(name=f"{name}{source}", subjects=ESR.Subjects(subjects=[f"{name}{source}.>"]))
        )
    await stub.EnsureStream(ESR(name=f"{name}m", mirror=ESR.StreamSource(name=f"{name}a")))
    code, details = await _code_of(
        stub.EnsureStream(ESR(name=f"{name}m", mirror=ESR.StreamSource(name=f"{name}b")))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "mirror configuration can not be updated" in details


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server of this test alone, to stop and start."""
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(remove_data=False)


async def _watch_health(channel: grpc.aio.Channel, wanted: int, timeout: float = 15) -> None:
    """Wait (on the Watch stream, not by polling) until the server reports ``wanted``."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    try:
        async with asyncio.timeout(timeout):
            async for response in watch:
                if response.status == wanted:
                    return
    finally:
        watch.cancel()


async def test_unavailable_error_is_unavailable_and_the_server_recovers(
    own_nats: EmbeddedNats, start_serve: StartServe, name: str
) -> None:
    server = await start_serve(NATS_URL=own_nats.url)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        await ensure_consumer(stub, name)
        (event_id,) = await publish(stub, f"{name}.a", "held")
        call = EventsClient(stub)
        try:
            await call.subscribe(name, "worker")
            await call.next_event()

            await own_nats.stop(remove_data=False)
            assert (await http_get(server.health_port, "/readyz"))[0] == 503
            ensured, confirmation = await asyncio.gather(
                _code_of(
                    stub.EnsureStream(ESR(name=name, subjects=ESR.Subjects(subjects=[f"{name}.>"])))
                ),
                call.ack(event_id),
            )
            assert ensured[0] == grpc.StatusCode.UNAVAILABLE
            # NATS did not confirm: the id stays valid, to be sent again.
            assert list(confirmation.temporary_failed_ids) == [event_id]
            await _watch_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)

            await own_nats.start()
            await _watch_health(channel, health_pb2.HealthCheckResponse.SERVING)
            assert (await http_get(server.health_port, "/readyz"))[0] == 200
            assert list((await call.ack(event_id)).ids) == [event_id]
            await ensure_stream(stub, name)
        finally:
            await call.cancel()
