"""State stores on JetStream KV: values, revisions, compare-and-swap, watches, the raw bucket."""

from __future__ import annotations

import asyncio
import re

import nats
import pytest
from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import Int64Value, StringValue

import windshift
from windshift import EmbeddedNats
from windshift.errors import AlreadyExistsError, ConflictError, NotFoundError, ValidationError


async def test_set_then_get(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    revision = await store.set("cart.42", Int64Value(value=3))
    entry = await store.get("cart.42")
    assert entry.revision == revision
    assert entry.unpack(Int64Value).value == 3
    assert entry.value.type_url == "type.googleapis.com/google.protobuf.Int64Value"
    assert entry.updated.tzinfo is not None
    newer = await store.set("cart.42", Int64Value(value=4))
    assert newer > revision
    assert (await store.get("cart.42")).unpack(Int64Value).value == 4
    with pytest.raises(ValidationError, match="StringValue"):
        entry.unpack(StringValue)


async def test_ensure_store_is_idempotent_under_concurrency(
    client: windshift.Client, name: str
) -> None:
    stores = await asyncio.gather(*(client.ensure_store(name) for _ in range(10)))
    assert {store.name for store in stores} == {name}
    await stores[0].set("k", StringValue(value="v"))


async def test_missing_keys_and_stores_are_not_found(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    with pytest.raises(NotFoundError, match="'nothing'"):
        await store.get("nothing")
    ghost = client.store(f"{name}ghost")
    with pytest.raises(NotFoundError, match="store"):
        await ghost.get("k")
    with pytest.raises(NotFoundError, match="store"):
        await ghost.set("k", StringValue(value="v"))


async def test_create_only(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    first = await store.set("k", StringValue(value="a"), create_only=True)
    with pytest.raises(AlreadyExistsError, match="'k'"):
        await store.set("k", StringValue(value="b"), create_only=True)
    await store.delete("k")
    again = await store.set("k", StringValue(value="c"), create_only=True)
    assert again > first
    assert (await store.get("k")).unpack(StringValue).value == "c"


async def test_last_revision(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    created = await store.set("k", StringValue(value="a"), last_revision=0)
    with pytest.raises(ConflictError):
        await store.set("k", StringValue(value="b"), last_revision=0)
    updated = await store.set("k", StringValue(value="b"), last_revision=created)
    with pytest.raises(ConflictError, match=re.escape(f"({created})")):
        await store.set("k", StringValue(value="c"), last_revision=created)
    assert (await store.get("k")).revision == updated


async def test_delete(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    revision = await store.set("k", StringValue(value="a"))
    with pytest.raises(ConflictError):
        await store.delete("k", last_revision=revision + 100)
    await store.delete("k", last_revision=revision)
    with pytest.raises(NotFoundError, match="deleted"):
        await store.get("k")
    await store.delete("never-there")


async def test_compare_and_swap_race_has_exactly_one_winner(
    client: windshift.Client, name: str
) -> None:
    store = await client.ensure_store(name)
    base = await store.set("counter", Int64Value(value=0))

    async def writer(i: int) -> bool:
        try:
            await store.set("counter", Int64Value(value=i), last_revision=base)
        except ConflictError:
            return False
        return True

    results = await asyncio.gather(*(writer(i) for i in range(1, 21)))
    assert results.count(True) == 1
    winner = results.index(True) + 1
    assert (await store.get("counter")).unpack(Int64Value).value == winner


async def test_watch_yields_current_values_then_changes(
    client: windshift.Client, name: str
) -> None:
    store = await client.ensure_store(name)
    await store.set("cart.1", Int64Value(value=1))
    await store.set("other.1", Int64Value(value=9))
    async with store.watch("cart.*") as changes:
        current = await asyncio.wait_for(anext(changes), 10)
        assert (current.key, current.operation) == ("cart.1", "set")
        assert current.value is not None
        revision = await store.set("cart.2", Int64Value(value=2))
        await store.set("other.2", Int64Value(value=8))
        await store.delete("cart.1")
        added = await asyncio.wait_for(anext(changes), 10)
        assert (added.key, added.operation, added.revision) == ("cart.2", "set", revision)
        removed = await asyncio.wait_for(anext(changes), 10)
        assert (removed.key, removed.operation, removed.value) == ("cart.1", "delete", None)


async def test_raw_bucket_is_shared_both_ways(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    store = await client.ensure_store(name)
    raw = await nats.connect(nats_server.url)
    try:
        kv = await raw.jetstream().key_value(name)
        written = await store.set("from.python", StringValue(value="py"))
        raw_entry = await kv.get("from.python")
        assert raw_entry.revision == written
        stored = Any()
        stored.ParseFromString(raw_entry.value or b"")
        assert stored.type_url == "type.googleapis.com/google.protobuf.StringValue"
        unpacked = StringValue()
        assert stored.Unpack(unpacked)
        assert unpacked.value == "py"

        packed = Any()
        packed.Pack(StringValue(value="go"))
        revision = await kv.put("from.go", packed.SerializeToString())
        entry = await store.get("from.go")
        assert entry.revision == revision
        assert entry.unpack(StringValue).value == "go"
    finally:
        await raw.close()


@pytest.mark.parametrize("key", ["", "a..b", "a b", "a.*", "a.>", "ä"])
async def test_bad_keys_are_refused(client: windshift.Client, name: str, key: str) -> None:
    store = client.store(name)
    with pytest.raises(ValidationError, match="key"):
        await store.get(key)
    with pytest.raises(ValidationError, match="key"):
        await store.set(key, StringValue(value="v"))


async def test_bad_values_and_options(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    with pytest.raises(ValidationError, match="protobuf"):
        await store.set("k", b"raw")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="not both"):
        await store.set("k", StringValue(), create_only=True, last_revision=1)
    with pytest.raises(ValidationError, match="last_revision"):
        await store.set("k", StringValue(), last_revision=-1)
    with pytest.raises(ValidationError, match="store name"):
        client.store("bad name")
