"""State stores on JetStream KV: values, revisions, compare-and-swap, watches, the raw bucket."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import Int64Value, StringValue

import windshift
from windshift import EmbeddedNats
from windshift.errors import (
    AlreadyExistsError,
    ConflictError,
    KeyNotFoundError,
    NotFoundError,
    StoreNotFoundError,
    UnavailableError,
    ValidationError,
)

# How long a test waits for a change that must come; waiting longer fails it.
CHANGE_TIMEOUT = 15


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


async def next_change(changes: windshift.StateWatch) -> windshift.StateChange:
    """The next change; a watch that yields none in time fails the test."""
    return await asyncio.wait_for(anext(changes), CHANGE_TIMEOUT)


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
async def test_watch_resumes_after_the_server_restarts(
    tmp_path: Path, name: str, kill: bool
) -> None:
    async with (
        EmbeddedNats(store_dir=tmp_path) as server,
        windshift.connect(server.url) as client,
    ):
        store = await client.ensure_store(name)
        current = await store.set("cart.1", Int64Value(value=1))
        async with store.watch("cart.*") as changes:
            assert (await next_change(changes)).revision == current
            before = await store.set("cart.2", Int64Value(value=2))
            assert (await next_change(changes)).revision == before
            await server.restart(kill=kill)
            after = await store.set("cart.3", Int64Value(value=3))
            change = await next_change(changes)
            assert (change.key, change.revision, change.unpack(Int64Value).value) == (
                "cart.3",
                after,
                3,
            )
            # Nothing delivered twice: the next change is the next write.
            last = await store.set("cart.1", Int64Value(value=4))
            assert (await next_change(changes)).revision == last


async def test_watch_replaces_a_consumer_that_is_gone(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    store = await client.ensure_store(name)
    async with store.watch(include_current=False) as changes:
        first = await store.set("k", StringValue(value="a"))
        assert (await next_change(changes)).revision == first
        raw = await nats.connect(nats_server.url)
        try:
            js = raw.jetstream()
            (consumer,) = await js.consumers_info(f"KV_{name}")
            await js.delete_consumer(f"KV_{name}", consumer.name)
        finally:
            await raw.close()
        # No consumer, so no heartbeats: the watch notices and makes another.
        second = await store.set("k", StringValue(value="b"))
        change = await next_change(changes)
        assert (change.revision, change.unpack(StringValue).value) == (second, "b")
        third = await store.set("k", StringValue(value="c"))
        assert (await next_change(changes)).revision == third


async def test_watch_of_a_deleted_store_ends_with_store_not_found(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    store = await client.ensure_store(name)
    async with store.watch() as changes:
        raw = await nats.connect(nats_server.url)
        try:
            await raw.jetstream().delete_stream(f"KV_{name}")
        finally:
            await raw.close()
        with pytest.raises(StoreNotFoundError) as gone:
            await next_change(changes)
        assert gone.value.store == name


async def test_watch_ends_with_unavailable_when_the_client_closes(
    nats_server: EmbeddedNats, name: str
) -> None:
    client = await windshift.connect(nats_server.url)
    store = await client.ensure_store(name)
    async with store.watch() as changes:
        await client.close()
        with pytest.raises(UnavailableError, match="connection is closed"):
            await next_change(changes)


async def test_watch_raises_for_a_value_that_is_no_any_and_goes_on(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    store = await client.ensure_store(name)
    async with store.watch() as changes:
        raw = await nats.connect(nats_server.url)
        try:
            garbage = await raw.jetstream().publish(f"$KV.{name}.bad", b"\xff\xff not an Any")
        finally:
            await raw.close()
        good = await store.set("good", StringValue(value="fine"))
        with pytest.raises(ValidationError) as failure:
            await next_change(changes)
        message = str(failure.value)
        assert repr(name) in message
        assert "'bad'" in message
        assert f"revision {garbage.seq}" in message
        change = await next_change(changes)
        assert (change.key, change.revision) == ("good", good)
    with pytest.raises(ValidationError, match=f"'bad' in store '{name}' at revision {garbage.seq}"):
        await store.get("bad")


async def test_iterating_after_the_watch_ends_stops(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    await store.set("k", StringValue(value="a"))
    async with store.watch() as changes:
        waiting = asyncio.create_task(anext(changes))
        assert (await asyncio.wait_for(waiting, CHANGE_TIMEOUT)).key == "k"

        async def drain() -> list[windshift.StateChange]:
            return [change async for change in changes]

        draining = [asyncio.create_task(drain()) for _ in range(2)]
        await asyncio.sleep(0)  # one loop round: the tasks run up to their wait
        assert not any(task.done() for task in draining)
    # Leaving the block ends the loops waiting in other tasks...
    drained = await asyncio.wait_for(asyncio.gather(*draining), CHANGE_TIMEOUT)
    assert drained == [[], []]
    # ... and any later iteration.
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(changes), CHANGE_TIMEOUT)


async def test_a_watch_must_be_entered_once_before_iterating(
    client: windshift.Client, name: str
) -> None:
    store = await client.ensure_store(name)
    with pytest.raises(ValidationError, match="use the watch with 'async with' before iterating"):
        async for _ in store.watch():
            pass
    watch = store.watch()
    with pytest.raises(ValidationError, match="'async with' before iterating"):
        await asyncio.wait_for(anext(watch), CHANGE_TIMEOUT)
    async with watch:
        with pytest.raises(ValidationError, match="entered only once"):
            async with watch:
                pass
    with pytest.raises(ValidationError, match="entered only once"):
        async with watch:
            pass


async def test_a_failed_watch_is_over(client: windshift.Client, name: str) -> None:
    watch = client.store(f"{name}ghost").watch()
    with pytest.raises(StoreNotFoundError):
        async with watch:
            pass
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(watch), CHANGE_TIMEOUT)


async def test_changes_unpack(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    async with store.watch(include_current=False) as changes:
        await store.set("k", Int64Value(value=7))
        await store.delete("k")
        written = await next_change(changes)
        assert written.unpack(Int64Value).value == 7
        with pytest.raises(ValidationError) as wrong:
            written.unpack(StringValue)
        assert "'k'" in str(wrong.value)
        assert "google.protobuf.Int64Value" in str(wrong.value)
        assert "google.protobuf.StringValue" in str(wrong.value)
        deleted = await next_change(changes)
        with pytest.raises(ValidationError, match=r"'k' was deleted .* no value"):
            deleted.unpack(Int64Value)


async def test_exists(client: windshift.Client, name: str) -> None:
    assert await (await client.ensure_store(name)).exists() is True
    assert await client.store(f"{name}ghost").exists() is False


async def test_not_found_errors_name_the_store_and_key(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name)
    with pytest.raises(KeyNotFoundError, match="'nothing'") as missing:
        await store.get("nothing")
    assert (missing.value.store, missing.value.key) == (name, "nothing")
    await store.set("gone", StringValue(value="v"))
    await store.delete("gone")
    with pytest.raises(KeyNotFoundError, match="deleted") as deleted:
        await store.get("gone")
    assert (deleted.value.store, deleted.value.key) == (name, "gone")

    ghost = client.store(f"{name}ghost")
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: ghost.get("k"),
        "set": lambda: ghost.set("k", StringValue(value="v")),
        "create": lambda: ghost.set("k", StringValue(value="v"), create_only=True),
        "delete": lambda: ghost.delete("k"),
    }
    for what, call in calls.items():
        with pytest.raises(StoreNotFoundError, match=f"store '{name}ghost' does not exist") as gone:
            await call()
        assert gone.value.store == f"{name}ghost", what
    with pytest.raises(StoreNotFoundError) as unwatchable:
        async with ghost.watch():
            pass
    assert unwatchable.value.store == f"{name}ghost"


async def test_values_and_changes_read_as_json(client: windshift.Client, name: str) -> None:
    store = await client.ensure_store(name, history=3)
    await store.set("cart.1", StringValue(value="two items"))
    await store.delete("cart.1")
    entry_store = await client.ensure_store(f"{name}b")
    await entry_store.set("k", Int64Value(value=7))
    assert (await entry_store.get("k")).to_json() == "7"  # protobuf's JSON mapping of int64
    changes = await store.history("cart.1")
    assert [change.to_json() for change in changes] == ["two items", None]
    unknown = Any(type_url="type.googleapis.com/acme.Unknown", value=b"\x08\x01")
    await entry_store.set("u", unknown)
    assert (await entry_store.get("u")).to_json() is None
