"""``windshift tail STREAM``: a stream's events as they come, acknowledging nothing.

The tail reads through :meth:`windshift.Client.tail` (an ordered consumer
of its own, ack policy none): it never moves or settles anything for the
stream's consumers. ``--consumer C`` looks at the stream as ``C`` does: its
subjects, from just after its ack floor, each event marked with where it
stands for ``C`` when the tail began (settled, delivered and not known to
be settled, or pending).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from google.protobuf.descriptor_pool import DescriptorPool
from rich.console import Group
from rich.text import Text

from windshift import _wire as wire
from windshift._cli._connection import NatsOptions, connection_options, with_client
from windshift._cli._output import (
    JsonOption,
    Output,
    iso,
    reports_failures,
    shown_bytes,
    shown_time,
    usage_error,
)
from windshift._cli._protos import load_pool
from windshift._client import Client
from windshift._consumers import ConsumerInfo
from windshift._pointers import StreamPointer
from windshift._reading import StoredEvent

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

#: The --proto option: descriptor sets or modules of generated code.
ProtoOption = Annotated[
    list[str] | None,
    typer.Option(
        "--proto",
        metavar="FILE|MODULE",
        help="Protobuf types to show data with: a descriptor set file (protoc "
        "--descriptor_set_out --include_imports, buf build -o) or a module of generated "
        "code (package.module or a .py file). Repeatable.",
        show_default=False,
    ),
]


def parse_start(text: str, *, now: datetime | None = None) -> StreamPointer:
    """``--from``: ``start``, ``end``, an event id, an ISO 8601 time, or a duration ago (``10m``).

    Raises:
        Failure: (exit 2) anything else, naming it.
    """
    value = text.strip()
    if value == "start":
        return StreamPointer.start()
    if value == "end":
        return StreamPointer.end()
    if value.isdigit():
        if int(value) < 1:
            raise usage_error(f"--from {text!r}: event ids start at 1")
        return StreamPointer.offset(int(value))
    duration = _DURATION.match(value)
    if duration:
        ago = timedelta(seconds=float(duration[1]) * _UNITS[duration[2]])
        return StreamPointer.time((now or datetime.now(UTC)) - ago)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise usage_error(
            f"--from {text!r} is not start, end, an event id, a time (2026-01-31T12:00:00Z) "
            "or a duration ago (90s, 10m, 2h, 1d)"
        ) from None
    if moment.tzinfo is None:
        raise usage_error(f"--from {text!r} has no time zone: add Z (UTC) or +HH:MM")
    return StreamPointer.time(moment)


def event_document(
    event: StoredEvent, pool: DescriptorPool | None, consumer_state: str | None = None
) -> dict[str, Any]:
    """One event as ``tail --json`` prints it (a line each)."""
    data = event.to_json(pool)
    document: dict[str, Any] = {
        "id": event.id,
        "subject": event.subject,
        "time": iso(event.timestamp),
        "stored": iso(event.stored),
        "type": event.data_type or None,
        "content_type": event.content_type,
        "size": event.size,
        "idempotency_key": event.idempotency_key,
        "delivery_attempts": _attempts(event),
        "data": data,
    }
    if data is None and event.body:
        document["data_base64"] = base64.b64encode(event.body).decode()
    if consumer_state is not None:
        document["consumer_state"] = consumer_state
    return document


def _attempts(event: StoredEvent) -> int | None:
    # Known for dead letters only: a stream does not record deliveries.
    text = event.headers.get(wire.HEADER_DEAD_ATTEMPTS)
    return int(text) if text and text.isdigit() else None


def event_renderable(document: dict[str, Any]) -> Group:
    """One event as ``tail`` shows it on a terminal: a heading line, then its data."""
    line = Text()
    line.append(f"#{document['id']}", style="bold cyan")
    line.append(f"  {document['subject']}", style="bold")
    line.append(f"  {shown_time(datetime.fromisoformat(document['time']))}")
    line.append(f"  {document['type'] or '(no type)'}", style="magenta")
    if document["content_type"]:
        line.append(f" ({document['content_type']})", style="magenta")
    line.append(f"  {shown_bytes(document['size'])}")
    if document["idempotency_key"]:
        line.append(f"  key={document['idempotency_key']}", style="yellow")
    if document["delivery_attempts"] is not None:
        line.append(f"  attempts={document['delivery_attempts']}", style="red")
    if "consumer_state" in document:
        line.append(f"  [{document['consumer_state']}]", style="green")
    if document["data"] is not None:
        body = Text("  " + json.dumps(document["data"], ensure_ascii=False))
    elif document["size"]:
        body = Text("  (data of an unknown type: give its --proto to see it)", style="dim")
    else:
        body = Text("  (no data)", style="dim")
    return Group(line, body)


def _state_for(consumer: ConsumerInfo, event_id: int) -> str:
    if event_id <= consumer.acknowledged_id:
        return "settled"
    if event_id <= consumer.delivered_id:
        return "delivered"
    return "pending"


@reports_failures
@connection_options
def tail(
    stream: Annotated[str, typer.Argument(metavar="STREAM", help="The stream.")],
    *,
    subject: Annotated[
        list[str] | None,
        typer.Option(
            "--subject",
            "-s",
            help="Only events on this subject (wildcards * and >). Repeatable.",
            show_default=False,
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="start|end|ID|TIME|AGO",
            help="Where to begin: start, end (new events only), an event id, a time "
            "(2026-01-31T12:00:00Z) or a duration ago (90s, 10m, 2h, 1d). Default: start, "
            "or end with --follow, or just after --consumer's ack floor.",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new events (Ctrl-C ends).")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", "-n", min=1, help="Stop after this many events.", show_default=False
        ),
    ] = None,
    consumer: Annotated[
        str | None,
        typer.Option(
            "--consumer",
            "-c",
            help="Look as this consumer does: its subjects, from just after its ack floor, "
            "each event marked settled, delivered or pending for it.",
            show_default=False,
        ),
    ] = None,
    proto: ProtoOption = None,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Print a stream's events as they come: id, subject, time, type, size, key, data.

    Never acknowledges anything: an ordered, ack-none view that no consumer notices.
    With --json, one JSON object per line.
    """
    out = Output(json_output=json_output)
    pointer = None if start is None else parse_start(start)
    pool = load_pool(proto or [])

    async def work(client: Client) -> None:
        subjects = list(subject or [])
        begin = pointer
        info: ConsumerInfo | None = None
        if consumer is not None:
            info = await client.consumer_info(stream, consumer)
            subjects = subjects or info.subjects
            if begin is None:
                begin = StreamPointer.offset(info.acknowledged_id + 1)
        if begin is None:
            begin = StreamPointer.end() if follow else StreamPointer.start()
        shown = 0
        async with client.tail(stream, subjects=subjects, start=begin, follow=follow) as events:
            async for event in events:
                state = None if info is None else _state_for(info, event.id)
                document = event_document(event, pool, state)
                out.item(document, event_renderable(document))
                shown += 1
                if limit is not None and shown >= limit:
                    return

    with_client(nats, work, name="windshift tail")


__all__ = ["ProtoOption", "event_document", "event_renderable", "parse_start", "tail"]
