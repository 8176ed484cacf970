"""StateService through a real channel to a real serve process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import nats
import pytest
from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import Int64Value, StringValue

from tests.grpc_fixtures import ServeProcess
from windshift import EmbeddedNats
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2_grpc as pb_grpc


@pytest.fixture
async def state(grpc_server: ServeProcess) -> AsyncIterator[pb_grpc.StateServiceAsyncStub]:
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        yield pb_grpc.StateServiceStub(channel)  # type: ignore[misc]


def packed(value: int) -> Any:
    data = Any()
    data.Pack(Int64Value(value=value))
    return data


def unpacked(data: Any) -> int:
    value = Int64Value()
    assert data.Unpack(value)
    return value.value


async def test_ensure_set_get_delete(state: pb_grpc.StateServiceAsyncStub, name: str) -> None:
    await state.EnsureStore(pb.EnsureStoreRequest(store=name))
    await state.EnsureStore(pb.EnsureStoreRequest(store=name))  # idempotent
    first = await state.Set(pb.SetRequest(store=name, key="cart.1", value=packed(3)))
    assert first.revision > 0
    got = await state.Get(pb.GetRequest(store=name, key="cart.1"))
    assert got.revision == first.revision
    assert unpacked(got.value) == 3
    assert got.HasField("last_updated")
    await state.Delete(pb.DeleteRequest(store=name, key="cart.1"))
    gone = await state.Get(pb.GetRequest(store=name, key="cart.1"))
    # As the original service answers: OK, revision 0, no value.
    assert gone.revision == 0
    assert not gone.HasField("value")
    assert not gone.HasField("last_updated")
    never = await state.Get(pb.GetRequest(store=name, key="cart.never"))
    assert never.revision == 0
    assert not never.HasField("value")


async def test_create_only_and_last_revision(
    state: pb_grpc.StateServiceAsyncStub, name: str
) -> None:
    await state.EnsureStore(pb.EnsureStoreRequest(store=name))
    created = await state.Set(pb.SetRequest(store=name, key="k", value=packed(1), create_only=True))
    with pytest.raises(grpc.aio.AioRpcError) as exists:
        await state.Set(pb.SetRequest(store=name, key="k", value=packed(2), create_only=True))
    assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await state.Set(
            pb.SetRequest(store=name, key="k", value=packed(2), last_revision=created.revision + 9)
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    updated = await state.Set(
        pb.SetRequest(store=name, key="k", value=packed(2), last_revision=created.revision)
    )
    with pytest.raises(grpc.aio.AioRpcError) as stale_delete:
        await state.Delete(pb.DeleteRequest(store=name, key="k", last_revision=created.revision))
    assert stale_delete.value.code() == grpc.StatusCode.ABORTED
    await state.Delete(pb.DeleteRequest(store=name, key="k", last_revision=updated.revision))


async def test_compare_and_swap_has_one_winner(
    state: pb_grpc.StateServiceAsyncStub, name: str
) -> None:
    await state.EnsureStore(pb.EnsureStoreRequest(store=name))
    base = await state.Set(pb.SetRequest(store=name, key="counter", value=packed(0)))

    async def write(i: int) -> bool:
        try:
            await state.Set(
                pb.SetRequest(
                    store=name, key="counter", value=packed(i), last_revision=base.revision
                )
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.ABORTED
            return False
        return True

    results = await asyncio.gather(*(write(i) for i in range(1, 11)))
    assert results.count(True) == 1


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.GetRequest(store="bad name", key="k"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.GetRequest(store="nostore", key="k"), grpc.StatusCode.NOT_FOUND),
        (pb.GetRequest(store="nostore", key="a..b"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.SetRequest(store="nostore", key="k"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.SetRequest(store="nostore", key="k", value=Any(type_url="x/a.B")),
            grpc.StatusCode.NOT_FOUND,
        ),
        (pb.DeleteRequest(store="nostore", key="k"), grpc.StatusCode.NOT_FOUND),
        (pb.EnsureStoreRequest(store=""), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_errors_go_through_the_table(
    state: pb_grpc.StateServiceAsyncStub, request_: object, code: grpc.StatusCode
) -> None:
    method = {
        pb.GetRequest: state.Get,
        pb.SetRequest: state.Set,
        pb.DeleteRequest: state.Delete,
        pb.EnsureStoreRequest: state.EnsureStore,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await method(request_)
    assert failure.value.code() == code
    assert failure.value.details()


async def test_values_are_shared_with_the_raw_bucket(
    state: pb_grpc.StateServiceAsyncStub, nats_server: EmbeddedNats, name: str
) -> None:
    await state.EnsureStore(pb.EnsureStoreRequest(store=name))
    data = Any()
    data.Pack(StringValue(value="via grpc"))
    written = await state.Set(pb.SetRequest(store=name, key="shared", value=data))
    raw = await nats.connect(nats_server.url)
    try:
        entry = await (await raw.jetstream().key_value(name)).get("shared")
    finally:
        await raw.close()
    assert entry.revision == written.revision
    assert entry.value == data.SerializeToString()
