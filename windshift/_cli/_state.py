"""``windshift state stores|get|set|delete|keys|history|watch``: what state keys hold.

Values are shown as JSON when their type is known (protobuf's well-known
types, JSON values kept as ``google.protobuf.Struct``, and the types of
``--proto``). ``set`` writes JSON: as the protobuf message ``--type`` names,
or, without ``--type``, as a ``google.protobuf.Struct`` (an object) or
``google.protobuf.Value`` (anything else), as a pydantic model is kept.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format, struct_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message
from rich.text import Text

from windshift import _payloads as payloads
from windshift._cli._connection import NatsOptions, connection_options, with_client
from windshift._cli._output import (
    JsonOption,
    Output,
    fields,
    iso,
    pretty_json,
    reports_failures,
    shown_time,
    table,
    usage_error,
)
from windshift._cli._protos import load_pool, message_from_json
from windshift._cli._tail import ProtoOption
from windshift._client import Client
from windshift._state import StateChange, StateEntry
from windshift.errors import KeyNotFoundError, StoreNotFoundError

app = typer.Typer(
    name="state",
    help="State stores: list them, read, write, delete and watch keys, a key's history.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

StoreArgument = Annotated[str, typer.Argument(metavar="STORE", help="The state store.")]
KeyArgument = Annotated[str, typer.Argument(metavar="KEY", help="The key (dot-separated tokens).")]
RevisionOption = Annotated[
    int | None,
    typer.Option(
        "--last-revision",
        min=0,
        metavar="REVISION",
        help="Only if the key is at this revision now (0: only if it does not exist).",
        show_default=False,
    ),
]


def value_document(value: AnyProto | None, pool: DescriptorPool | None) -> dict[str, Any]:
    """A state value's type and JSON (None when its type is unknown, with its bytes)."""
    if value is None:
        return {"type": None, "value": None}
    document: dict[str, Any] = {
        "type": value.type_url.rpartition("/")[2],
        "value": payloads.any_to_json(value, pool),
    }
    if document["value"] is None and value.value:
        document["value_base64"] = base64.b64encode(value.value).decode()
    return document


def _entry_document(store: str, entry: StateEntry, pool: DescriptorPool | None) -> dict[str, Any]:
    return {
        "store": store,
        "key": entry.key,
        "revision": entry.revision,
        "updated": iso(entry.updated),
        **value_document(entry.value, pool),
    }


def _change_document(
    store: str, change: StateChange, pool: DescriptorPool | None
) -> dict[str, Any]:
    return {
        "store": store,
        "key": change.key,
        "operation": change.operation,
        "revision": change.revision,
        "updated": iso(change.updated),
        **value_document(change.value, pool),
    }


def _shown_value(document: dict[str, Any]) -> str:
    if document["type"] is None:
        return "(deleted)"
    if document["value"] is None:
        return f"({document['type']}, an unknown type: give its --proto to see it)"
    return json.dumps(document["value"], ensure_ascii=False)


@app.command("stores")
@reports_failures
@connection_options
def stores(*, json_output: JsonOption = False, nats: NatsOptions) -> None:
    """List the state stores: how many values and bytes each holds, how many it keeps per key."""
    out = Output(json_output=json_output)

    async def work(client: Client) -> None:
        found: list[dict[str, Any]] = []
        rows: list[list[object]] = []
        for name in await client.stores():
            info = await client.stream_info(f"KV_{name}")
            kept = int(info.config.get("max_msgs_per_subject", 1))
            found.append(
                {
                    "name": name,
                    "values": info.events,
                    "bytes": info.bytes,
                    "history": kept,
                    "last_time": iso(info.last_time),
                }
            )
            rows.append([name, info.events, info.bytes, kept, shown_time(info.last_time)])
        out.result(
            found,
            table(None, ["Store", "#Values", "#Bytes", "#History", "Last write"], rows)
            if found
            else "no state stores",
        )

    with_client(nats, work, name="windshift state stores")


@app.command("get")
@reports_failures
@connection_options
def get(
    store: StoreArgument,
    key: KeyArgument,
    *,
    proto: ProtoOption = None,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Show what a key holds now: its value, type, revision and when it was written."""
    out = Output(json_output=json_output)
    pool = load_pool(proto or [])

    async def work(client: Client) -> None:
        entry = await client.store(store).get(key)
        document = _entry_document(store, entry, pool)
        value = (
            pretty_json(document["value"])
            if document["value"] is not None
            else _shown_value(document)
        )
        out.result(
            document,
            fields(
                f"{store} / {key}",
                [
                    ("Revision", entry.revision),
                    ("Updated", shown_time(entry.updated)),
                    ("Type", document["type"]),
                    ("Value", value),
                ],
            ),
        )

    with_client(nats, work, name="windshift state get")


def _read_json(value: str | None, file: Path | None) -> str:
    if (value is None) == (file is None):
        raise usage_error("give the value as JSON, or --file PATH (- for stdin), not both")
    if file is None:
        assert value is not None
        return value
    if str(file) == "-":
        return sys.stdin.read()
    try:
        return file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"--file {str(file)!r} cannot be read: {exc}") from None


def _value_of(text: str, type_name: str | None, pool: DescriptorPool, what: str) -> Message:
    if type_name is not None:
        return message_from_json(pool, type_name, text, what)
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise usage_error(f"{what} is not JSON: {exc}") from None
    kept: Message = struct_pb2.Struct() if isinstance(document, dict) else struct_pb2.Value()
    json_format.ParseDict(document, kept)
    return kept


@app.command("set")
@reports_failures
@connection_options
def set_value(
    store: StoreArgument,
    key: KeyArgument,
    value: Annotated[
        str | None,
        typer.Argument(
            metavar="[JSON]", help="The value, as JSON (or give --file).", show_default=False
        ),
    ] = None,
    *,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="PATH",
            help="Read the JSON value from this file (- for stdin).",
            show_default=False,
        ),
    ] = None,
    type_name: Annotated[
        str | None,
        typer.Option(
            "--type",
            metavar="MESSAGE",
            help="Write the JSON as this protobuf message type (a full name, from --proto or "
            "a well-known type). Default: a google.protobuf.Struct (or Value).",
            show_default=False,
        ),
    ] = None,
    create_only: Annotated[
        bool, typer.Option("--create-only", help="Fail if the key exists.")
    ] = False,
    last_revision: RevisionOption = None,
    proto: ProtoOption = None,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Write a key from JSON: as a protobuf message with --type, else as a JSON Struct."""
    out = Output(json_output=json_output)
    pool = load_pool(proto or [])
    text = _read_json(value, file)
    message = _value_of(
        text, type_name, pool, "the value" if file is None else f"--file {str(file)!r}"
    )

    async def work(client: Client) -> None:
        revision = await client.store(store).set(
            key, message, create_only=create_only, last_revision=last_revision
        )
        out.result(
            {
                "store": store,
                "key": key,
                "revision": revision,
                "type": message.DESCRIPTOR.full_name,
            },
            f"{store} / {key} is at revision {revision}",
        )

    with_client(nats, work, name="windshift state set")


@app.command("delete")
@reports_failures
@connection_options
def delete(
    store: StoreArgument,
    key: KeyArgument,
    *,
    last_revision: RevisionOption = None,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Delete a key (deleting a key that does not exist succeeds)."""
    out = Output(json_output=json_output)

    async def work(client: Client) -> None:
        await client.store(store).delete(key, last_revision=last_revision)
        out.result({"store": store, "key": key, "deleted": True}, f"deleted {store} / {key}")

    with_client(nats, work, name="windshift state delete")


@app.command("keys")
@reports_failures
@connection_options
def keys(
    store: StoreArgument,
    pattern: Annotated[
        str,
        typer.Argument(
            metavar="[PATTERN]", help="Only keys matching this (* one token, > the rest)."
        ),
    ] = ">",
    *,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """List the keys that hold a value, in the order they were last written."""
    out = Output(json_output=json_output)

    async def work(client: Client) -> None:
        found = await client.store(store).keys(pattern)
        out.result(found, "\n".join(found) if found else f"no keys in {store} match {pattern}")

    with_client(nats, work, name="windshift state keys")


@app.command("history")
@reports_failures
@connection_options
def history(
    store: StoreArgument,
    key: KeyArgument,
    *,
    proto: ProtoOption = None,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Show the changes of a key the store still keeps, oldest first (deletes too)."""
    out = Output(json_output=json_output)
    pool = load_pool(proto or [])

    async def work(client: Client) -> None:
        changes = [
            _change_document(store, change, pool)
            for change in await client.store(store).history(key)
        ]
        if not changes:
            raise KeyNotFoundError(
                f"key {key!r} has no history in store {store!r}", store=store, key=key
            )
        out.result(
            changes,
            table(
                f"History of {store} / {key}",
                ["#Revision", "Operation", "Updated", "Type", "Value"],
                (
                    [
                        change["revision"],
                        change["operation"],
                        shown_time(datetime.fromisoformat(change["updated"])),
                        change["type"],
                        _shown_value(change),
                    ]
                    for change in changes
                ),
            ),
        )

    with_client(nats, work, name="windshift state history")


@app.command("watch")
@reports_failures
@connection_options
def watch(
    store: StoreArgument,
    key: Annotated[
        str, typer.Argument(metavar="[KEY]", help="A key, or a filter (* one token, > the rest).")
    ] = ">",
    *,
    current: Annotated[
        bool,
        typer.Option("--current/--no-current", help="First show the current value of each key."),
    ] = True,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", "-n", min=1, help="Stop after this many changes.", show_default=False
        ),
    ] = None,
    proto: ProtoOption = None,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Print each change of a key (or of the keys matching a filter) as it happens; Ctrl-C ends.

    With --json, one JSON object per line.
    """
    out = Output(json_output=json_output)
    pool = load_pool(proto or [])

    async def work(client: Client) -> None:
        shown = 0
        target = client.store(store)
        if not await target.exists():  # a watch would wait for the store to appear
            raise StoreNotFoundError(f"store {store!r} does not exist", store=store)
        async with target.watch(key, include_current=current) as changes:
            async for change in changes:
                document = _change_document(store, change, pool)
                line = Text()
                line.append(f"{shown_time(change.updated)}  ")
                line.append(change.key, style="bold")
                line.append(
                    f"  {change.operation}",
                    style="red" if change.operation == "delete" else "green",
                )
                line.append(f"  rev {change.revision}  ")
                if change.operation == "set":
                    line.append(_shown_value(document))
                out.item(document, line)
                shown += 1
                if limit is not None and shown >= limit:
                    return

    with_client(nats, work, name="windshift state watch")


__all__ = ["app", "value_document"]
