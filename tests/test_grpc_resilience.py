"""Issue 5 through the façade: a serve process killed mid-stream, and floods of Events calls."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

import grpc
from grpc_fixtures import (
    EventsClient,
    StartServe,
    ensure_consumer,
    ensure_stream,
    http_get,
    publish,
)

from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc

SERVICE = "/windshift.events.v1alpha1.EventsService/"

if TYPE_CHECKING:
    from windshift_grpc._proto.windshift.events.v1alpha1.service_pb2_grpc import (
        EventsServiceAsyncStub as Stub,
    )


async def test_killed_serve_loses_nothing_its_clients_held(
    start_serve: StartServe, name: str
) -> None:
    doomed, survivor = await start_serve(), await start_serve()
    async with (
        grpc.aio.insecure_channel(doomed.target) as doomed_channel,
        grpc.aio.insecure_channel(survivor.target) as survivor_channel,
    ):
        doomed_stub: Stub = pb_grpc.EventsServiceStub(doomed_channel)  # type: ignore[assignment]
        survivor_stub: Stub = pb_grpc.EventsServiceStub(survivor_channel)  # type: ignore[assignment]
        await ensure_stream(survivor_stub, name)
        await ensure_consumer(survivor_stub, name, "shared", timeout=1)
        published = await publish(survivor_stub, f"{name}.a", *(f"e{i}" for i in range(20)))

        holder = EventsClient(doomed_stub)
        await holder.subscribe(name, "shared", max_processing_events=8)
        held = await holder.events(8)  # received, never settled
        assert await doomed.signal(signal.SIGKILL) == -signal.SIGKILL
        await holder.cancel()

        ledger: dict[int, int] = {}  # independent record: id -> deliveries seen by the survivor
        taker = EventsClient(survivor_stub)
        try:
            await taker.subscribe(name, "shared", max_processing_events=8)
            while set(ledger) != set(published):
                event = await taker.next_event(timeout=30)
                ledger[event.id] = ledger.get(event.id, 0) + 1
                await taker.ack(event.id)
        finally:
            await taker.cancel()
    lost = set(published) - set(ledger)
    print(f"serve killed holding {len(held)} events: lost {len(lost)}, received {len(ledger)}")
    assert not lost
    assert {e.id for e in held} <= set(ledger)
    # The held ones came back redelivered, the others the first time.
    assert all(e.delivery_attempt >= 1 for e in held)


async def test_a_flood_of_events_calls_meets_the_limit(start_serve: StartServe, name: str) -> None:
    limited = await start_serve(WINDSHIFT_MAX_EVENTS_CALLS="3")
    async with grpc.aio.insecure_channel(limited.target) as channel:
        stub: Stub = pb_grpc.EventsServiceStub(channel)  # type: ignore[assignment]
        await ensure_stream(stub, name)
        await ensure_consumer(stub, name, "flooded")
        # Enough refusals that grpcio's client bug (see windshift_grpc.refusal)
        # would show: refused before the Subscribe is read, some clients saw INTERNAL.
        calls = [EventsClient(stub) for _ in range(60)]

        async def open_one(call: EventsClient) -> grpc.StatusCode | None:
            try:
                await call.subscribe(name, "flooded")
            except (AssertionError, grpc.aio.AioRpcError, TimeoutError):
                return await call.code()
            return None  # subscribed

        outcomes = await asyncio.gather(*(open_one(call) for call in calls))
        admitted = [call for call, outcome in zip(calls, outcomes, strict=True) if outcome is None]
        refused = [outcome for outcome in outcomes if outcome is not None]
        assert len(admitted) == 3
        assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 57
        assert (
            "WINDSHIFT_MAX_EVENTS_CALLS"
            in await next(
                call for call, outcome in zip(calls, outcomes, strict=True) if outcome is not None
            ).details()
        )

        # Room again once one ends (its log line is written when it has ended);
        # the server stayed ready throughout.
        before = len(limited.lines)
        await admitted[0].cancel()
        await limited.wait_for_line(rf"rpc {SERVICE}Events \w+ ", after=before)
        again = EventsClient(stub)
        await again.subscribe(name, "flooded")
        assert (await http_get(limited.health_port, "/readyz"))[0] == 200
        for call in [*admitted[1:], again]:
            await call.cancel()
