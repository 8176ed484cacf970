"""``windshift streams`` and ``windshift stream NAME``: what the streams hold."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group

from windshift._cli._connection import NatsOptions, connection_options, with_client
from windshift._cli._output import (
    JsonOption,
    Output,
    fields,
    iso,
    reports_failures,
    shown_bytes,
    shown_seconds,
    shown_time,
    table,
)
from windshift._client import Client
from windshift._streams import StreamInfo


def retention(info: StreamInfo) -> dict[str, Any]:
    """How long a stream keeps its events: JetStream's policy and the limits."""
    options = info.options
    return {
        "policy": info.retention,
        "max_age_seconds": None if options.max_age is None else options.max_age.total_seconds(),
        "max_events": options.max_events,
        "max_events_per_subject": options.max_events_per_subject,
        "max_bytes": options.max_bytes,
        "discard": options.discard,
    }


def _retention_text(info: StreamInfo) -> str:
    options = info.options
    parts = [info.retention]
    if options.max_age is not None:
        parts.append(f"max age {shown_seconds(options.max_age.total_seconds())}")
    if options.max_events is not None:
        parts.append(f"max {options.max_events} events")
    if options.max_events_per_subject is not None:
        parts.append(f"max {options.max_events_per_subject} per subject")
    if options.max_bytes is not None:
        parts.append(f"max {shown_bytes(options.max_bytes)}")
    return ", ".join(parts)


def summary(info: StreamInfo) -> dict[str, Any]:
    """A stream in ``windshift streams --json``."""
    return {
        "name": info.name,
        "subjects": info.subjects,
        "events": info.events,
        "bytes": info.bytes,
        "first_id": info.first_id,
        "last_id": info.last_id,
        "first_time": iso(info.first_time),
        "last_time": iso(info.last_time),
        "retention": retention(info),
        "consumers": info.consumers,
    }


def _subjects_text(info: StreamInfo) -> str:
    if info.subjects:
        return " ".join(info.subjects)
    if info.options.mirror is not None:
        return f"(mirror of {info.options.mirror.name})"
    if info.options.sources:
        return "(aggregate of " + ", ".join(source.name for source in info.options.sources) + ")"
    return "-"


@reports_failures
@connection_options
def streams(*, json_output: JsonOption = False, nats: NatsOptions) -> None:
    """List the streams: subjects, events, bytes, first and last event time, retention."""
    out = Output(json_output=json_output)

    async def work(client: Client) -> None:
        found = await client.streams()
        out.result(
            [summary(info) for info in found],
            table(
                None,
                [
                    "Stream",
                    "Subjects",
                    "#Events",
                    "#Bytes",
                    "First event",
                    "Last event",
                    "Retention",
                ],
                (
                    [
                        info.name,
                        _subjects_text(info),
                        info.events,
                        shown_bytes(info.bytes),
                        shown_time(info.first_time),
                        shown_time(info.last_time),
                        _retention_text(info),
                    ]
                    for info in found
                ),
            )
            if found
            else "no streams",
        )

    with_client(nats, work, name="windshift streams")


@reports_failures
@connection_options
def stream(
    name: Annotated[str, typer.Argument(metavar="STREAM", help="The stream's name.")],
    *,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Show one stream in full: its state, its options and its JetStream configuration."""
    out = Output(json_output=json_output)

    async def work(client: Client) -> None:
        info = await client.stream_info(name)
        options = info.options
        document = {
            **summary(info),
            "created": iso(info.created),
            "storage": info.storage,
            "replicas": info.replicas,
            "deduplication_window_seconds": info.deduplication_window.total_seconds(),
            "max_event_size": options.max_event_size,
            "compression": options.compression,
            "mirror": None if options.mirror is None else options.mirror.name,
            "sources": [source.name for source in options.sources or ()],
            "config": info.config,
        }
        rows = [
            ("Stream", info.name),
            ("Subjects", _subjects_text(info)),
            ("Events", info.events),
            ("Bytes", f"{shown_bytes(info.bytes)} ({info.bytes})"),
            ("First event", f"{info.first_id} at {shown_time(info.first_time)}"),
            ("Last event", f"{info.last_id} at {shown_time(info.last_time)}"),
            ("Retention", _retention_text(info)),
            ("Discard", options.discard),
            ("Consumers", info.consumers),
            (
                "Storage",
                f"{info.storage}, {info.replicas} replica(s), compression {options.compression}",
            ),
            ("Deduplication window", shown_seconds(info.deduplication_window.total_seconds())),
            ("Max event size", options.max_event_size),
            ("Created", shown_time(info.created)),
        ]
        out.result(document, Group(fields(f"Stream {info.name}", rows)))

    with_client(nats, work, name="windshift stream")


__all__ = ["retention", "stream", "streams", "summary"]
