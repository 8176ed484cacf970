"""``windshift state ...`` against a real nats-server: what a key holds, writing it, watching it."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.wrappers_pb2 import StringValue

import windshift
from tests import _protos
from tests._cli import STOP_TIMEOUT, Start, run_in_process
from windshift import EmbeddedNats


async def state(nats_server: EmbeddedNats, *args: str) -> tuple[int, Any, str]:
    """``windshift state ARGS --json``: exit code, the JSON printed, stderr."""
    code, out, err = await run_in_process("state", *args, "--json", "--server", nats_server.url)
    return code, json.loads(out) if out else None, err


async def test_set_json_then_get_shows_the_value_its_type_and_revision(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    store = await client.ensure_store(name)
    code, written, err = await state(
        nats_server, "set", name, "cart.1", '{"items": 3, "owner": "ann"}'
    )
    assert (code, err) == (0, "")
    assert written == {
        "store": name,
        "key": "cart.1",
        "revision": 1,
        "type": "google.protobuf.Struct",
    }
    assert dict((await store.get("cart.1")).unpack(Struct)) == {"items": 3.0, "owner": "ann"}

    code, entry, _ = await state(nats_server, "get", name, "cart.1")
    assert code == 0
    assert {k: entry[k] for k in ("store", "key", "revision", "type", "value")} == {
        "store": name,
        "key": "cart.1",
        "revision": 1,
        "type": "google.protobuf.Struct",
        "value": {"items": 3, "owner": "ann"},
    }
    code, out, _ = await run_in_process("state", "get", name, "cart.1", "--server", nats_server.url)
    assert code == 0 and "google.protobuf.Struct" in out and '"owner": "ann"' in out


async def test_set_with_a_type_writes_that_protobuf_message(
    client: windshift.Client, nats_server: EmbeddedNats, name: str, tmp_path: Path
) -> None:
    store = await client.ensure_store(name)
    code, written, _ = await state(
        nats_server, "set", name, "greeting", '"hello"', "--type", "google.protobuf.StringValue"
    )
    assert (code, written["type"]) == (0, "google.protobuf.StringValue")
    assert (await store.get("greeting")).unpack(StringValue).value == "hello"

    types = _protos.write_descriptor_set(tmp_path / "types.binpb")
    (tmp_path / "order.json").write_text('{"id": "o-1", "items": 4}')
    code, written, err = await state(
        nats_server,
        "set",
        name,
        "order.1",
        "--file",
        str(tmp_path / "order.json"),
        "--type",
        _protos.TYPE,
        "--proto",
        str(types),
    )
    assert (code, err) == (0, "")
    entry = await store.get("order.1")
    assert entry.value.type_url == f"type.googleapis.com/{_protos.TYPE}"
    assert entry.value.value == _protos.order("o-1", 4).SerializeToString()

    code, unknown, _ = await state(nats_server, "get", name, "order.1")
    assert (unknown["type"], unknown["value"]) == (_protos.TYPE, None)
    assert "value_base64" in unknown
    code, known, _ = await state(nats_server, "get", name, "order.1", "--proto", str(types))
    assert known["value"] == {"id": "o-1", "items": 4}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{bad"], "the value is not JSON: "),
        (["{}", "--type", "no.Such"], "--type 'no.Such' is not a protobuf message type"),
        (
            ['{"value": 1}', "--type", "google.protobuf.StringValue"],
            "the value is not a JSON google.protobuf.StringValue: ",
        ),
        ([], "give the value as JSON, or --file PATH (- for stdin), not both"),
        (
            ["{}", "--file", "x.json"],
            "give the value as JSON, or --file PATH (- for stdin), not both",
        ),
    ],
)
async def test_bad_values_exit_2_naming_them(
    client: windshift.Client, nats_server: EmbeddedNats, name: str, args: list[str], message: str
) -> None:
    await client.ensure_store(name)
    code, out, err = await state(nats_server, "set", name, "k", *args)
    assert (code, out) == (2, None)
    [line] = err.splitlines()
    assert line.startswith(f"windshift: {message}"), line
    assert await client.store(name).keys() == []


async def test_conditional_writes_refused_exit_1(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_store(name)
    assert (await state(nats_server, "set", name, "k", "1"))[0] == 0
    code, _, err = await state(nats_server, "set", name, "k", "2", "--create-only")
    assert code == 1 and err.splitlines() == [
        f"windshift: key 'k' already exists in store {name!r}"
    ]
    code, _, err = await state(nats_server, "set", name, "k", "2", "--last-revision", "7")
    assert code == 1 and "is not at the expected revision (7)" in err
    code, written, _ = await state(nats_server, "set", name, "k", "2", "--last-revision", "1")
    assert (code, written["revision"]) == (0, 2)


async def test_keys_history_delete_and_stores(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    await client.ensure_store(name, history=5)
    for key, value in (("cart.1", "1"), ("cart.2", "2"), ("user.1", "3"), ("cart.1", "4")):
        assert (await state(nats_server, "set", name, key, value))[0] == 0
    assert (await state(nats_server, "keys", name))[1] == ["cart.2", "user.1", "cart.1"]
    assert (await state(nats_server, "keys", name, "cart.*"))[1] == ["cart.2", "cart.1"]
    code, deleted, _ = await state(nats_server, "delete", name, "cart.1")
    assert (code, deleted) == (0, {"store": name, "key": "cart.1", "deleted": True})
    code, changes, _ = await state(nats_server, "history", name, "cart.1")
    assert [(c["operation"], c["revision"], c["value"]) for c in changes] == [
        ("set", 1, 1),
        ("set", 4, 4),
        ("delete", 5, None),
    ]
    code, _, err = await state(nats_server, "get", name, "cart.1")
    assert code == 3 and err.splitlines() == [
        f"windshift: key 'cart.1' does not exist in store {name!r} (deleted)"
    ]
    code, stores, _ = await state(nats_server, "stores")
    [mine] = [store for store in stores if store["name"] == name]
    assert (mine["history"], mine["values"]) == (5, 5)


async def test_missing_store_or_key_exits_3_and_a_bad_key_2(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    for args in (["get", name, "k"], ["set", name, "k", "1"], ["keys", name], ["watch", name]):
        code, out, err = await state(nats_server, *args)
        assert (code, out) == (3, None), args
        assert err.splitlines() == [f"windshift: store {name!r} does not exist"], args
    await client.ensure_store(name)
    code, _, err = await state(nats_server, "get", name, "nothing")
    assert code == 3 and "key 'nothing' does not exist" in err
    code, _, err = await state(nats_server, "history", name, "nothing")
    assert code == 3 and err.splitlines() == [
        f"windshift: key 'nothing' has no history in store {name!r}"
    ]
    code, _, err = await state(nats_server, "get", name, "bad key")
    assert code == 2 and err.startswith("windshift: invalid key 'bad key'")


async def test_watch_limit_shows_the_current_values_then_changes(
    client: windshift.Client, nats_server: EmbeddedNats, name: str
) -> None:
    store = await client.ensure_store(name)
    await store.set("a", StringValue(value="one"))
    await store.set("b", StringValue(value="two"))
    code, out, _ = await run_in_process(
        "state", "watch", name, "--limit", "2", "--json", "--server", nats_server.url
    )
    assert code == 0
    changes = [json.loads(line) for line in out.splitlines()]
    assert [(c["key"], c["operation"], c["value"]) for c in changes] == [
        ("a", "set", "one"),
        ("b", "set", "two"),
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and terminals")
@pytest.mark.parametrize("terminal", [False, True], ids=["sigint", "ctrl-c"])
async def test_watch_follows_changes_until_interrupted_with_130(
    client: windshift.Client, start_windshift: Start, name: str, terminal: bool
) -> None:
    store = await client.ensure_store(name)
    await store.set("cart.1", StringValue(value="first"))
    args = ["state", "watch", name, "cart.*"]
    watch = await start_windshift(*args, *([] if terminal else ["--json"]), terminal=terminal)
    await watch.wait_for_line(r'cart\.1.*"first"', stdout=not terminal)
    await store.set("cart.1", StringValue(value="second"))
    await store.delete("cart.1")
    await watch.wait_for_line(r"cart\.1.*delete", stdout=not terminal)
    if terminal:
        watch.ctrl_c()
    else:
        watch.send(signal.SIGINT)
    assert await watch.exited(timeout=STOP_TIMEOUT) == 130
    shown = watch.lines if terminal else watch.stdout
    assert [line for line in shown if '"second"' in line], watch.log
    if not terminal:
        changes = [json.loads(line) for line in watch.stdout]
        assert [(c["revision"], c["operation"]) for c in changes] == [
            (1, "set"),
            (2, "set"),
            (3, "delete"),
        ]
