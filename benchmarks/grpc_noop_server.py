"""A grpc.aio EventsService that does no work: the ceiling of gRPC in Python on this machine.

``PublishEvent`` answers at once with the next id; ``Events`` answers the
Subscribe, then streams made-up events of the benchmark's size (at most
``max_processing_events`` unsettled, as the real server) and confirms every
Ack. No NATS, no library. bench.py measures it with the very clients it
points at ``windshift-grpc serve``, so the ratio of the two shows what the
façade costs on top of gRPC itself, and the ratio to the library what gRPC
in Python costs at all.

Run as ``python benchmarks/grpc_noop_server.py PORT``.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.timestamp_pb2 import Timestamp

from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc

_DATA = AnyProto(type_url="type.googleapis.com/google.protobuf.StringValue", value=b"x" * 100)


class NoopEvents(pb_grpc.EventsServiceServicer):
    """PublishEvent and Events without anything behind them."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def PublishEvent(
        self, request: pb.PublishEventRequest, context: Any
    ) -> pb.PublishEventResponse:
        return pb.PublishEventResponse(id=next(self._ids))

    async def Events(
        self, request_iterator: AsyncIterator[pb.EventsRequest], context: Any
    ) -> AsyncIterator[pb.EventsResponse]:
        first = await anext(request_iterator)
        credit = asyncio.Semaphore(first.subscribe.max_processing_events or 50)
        answers: asyncio.Queue[pb.EventsResponse] = asyncio.Queue()

        async def read() -> None:
            async for request in request_iterator:
                ids = list(request.ack.ids)
                for _ in ids:
                    credit.release()
                confirmation = pb.EventsResponse.AckConfirmation(ids=ids)
                answers.put_nowait(pb.EventsResponse(ack_confirmation=confirmation))

        reader = asyncio.create_task(read())
        try:
            yield pb.EventsResponse(subscribed=pb.EventsResponse.Subscribed())
            for event_id in itertools.count(1):
                while not answers.empty():
                    yield answers.get_nowait()
                await credit.acquire()
                stamp = Timestamp()
                stamp.GetCurrentTime()
                yield pb.EventsResponse(
                    event=pb.Event(
                        id=event_id,
                        subject="bench.noop",
                        headers=pb.Headers(timestamp=stamp),
                        data=_DATA,
                        delivery_attempt=1,
                    )
                )
        finally:
            reader.cancel()


async def main(port: int) -> None:
    server = grpc.aio.server()
    # The other RPCs stay unimplemented (UNIMPLEMENTED), which the stubs call abstract.
    pb_grpc.add_EventsServiceServicer_to_server(NoopEvents(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
