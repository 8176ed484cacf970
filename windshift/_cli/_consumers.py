"""``windshift consumers STREAM``: per consumer, what waits and for how long, and its dead letters."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from windshift._cli._connection import NatsOptions, connection_options, with_client
from windshift._cli._output import (
    JsonOption,
    Output,
    iso,
    reports_failures,
    shown_seconds,
    shown_time,
    table,
)
from windshift._client import Client
from windshift._consumers import ConsumerLag

# How many consumers' lags are read at once.
_IN_FLIGHT = 16


def lag_document(lag: ConsumerLag) -> dict[str, Any]:
    """One consumer in ``windshift consumers --json``."""
    info = lag.info
    return {
        "id": info.id,
        "durable": info.durable,
        "subjects": info.subjects,
        "pending": info.pending_events,
        "unacknowledged": info.unsettled_events,
        "redelivered": info.redelivered_events,
        "ack_floor": info.acknowledged_id,
        "delivered_id": info.delivered_id,
        "lag_events": lag.events,
        "lag_seconds": lag.seconds,
        "oldest_unprocessed_id": lag.oldest_id,
        "oldest_unprocessed_stored": iso(lag.oldest_stored),
        "processing_timeout_seconds": info.processing_timeout.total_seconds(),
        "max_delivery_attempts": info.max_delivery_attempts,
        "dead_letter_stream": info.dead_letter_stream,
    }


def _dead_letters_text(lag: ConsumerLag) -> str:
    info = lag.info
    attempts = info.max_delivery_attempts
    limit = "no attempt limit" if attempts is None else f"after {attempts} attempts"
    if info.dead_letter_stream is None:
        return "dropped " + limit if attempts is not None else "-"
    return f"{info.dead_letter_stream}, {limit}"


@reports_failures
@connection_options
def consumers(
    stream: Annotated[str, typer.Argument(metavar="STREAM", help="The stream.")],
    *,
    json_output: JsonOption = False,
    nats: NatsOptions,
) -> None:
    """Show each consumer of a stream: pending, unacknowledged, redelivered, ack floor, lag.

    The lag is in events (not yet delivered, or delivered and not settled)
    and in time: the age of the oldest event the consumer has not processed.
    """
    out = Output(json_output=json_output)

    async def work(client: Client) -> None:
        found = await client.consumers(stream)
        slots = asyncio.Semaphore(_IN_FLIGHT)

        async def lag_of(info: Any) -> ConsumerLag:
            async with slots:
                return await client.consumer_lag(stream, info)

        lags = await asyncio.gather(*(lag_of(info) for info in found))
        rows = (
            [
                lag.info.id,
                lag.info.pending_events,
                lag.info.unsettled_events,
                lag.info.redelivered_events,
                lag.info.acknowledged_id,
                lag.events,
                shown_seconds(lag.seconds) if lag.events else "-",
                shown_time(lag.oldest_stored) if lag.oldest_id is not None else "-",
                _dead_letters_text(lag),
            ]
            for lag in lags
        )
        columns = [
            "Consumer",
            "#Pending",
            "#Unacked",
            "#Redelivered",
            "#Ack floor",
            "#Lag",
            "#Behind",
            "Oldest unprocessed",
            "Dead letters",
        ]
        out.result(
            [lag_document(lag) for lag in lags],
            table(f"Consumers of {stream}", columns, rows) if lags else f"no consumers on {stream}",
        )

    with_client(nats, work, name="windshift consumers")


__all__ = ["consumers", "lag_document"]
