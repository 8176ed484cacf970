"""Use Windshift through its gRPC API, with the Python stubs of windshift_grpc.proto.

Start a server first (on an embedded NATS, in another terminal)::

    windshift-grpc serve

then, from the repository root::

    python examples/grpc_client.py --target 127.0.0.1:8080

It ensures the stream ``greetings`` (subjects ``greetings.>``) and the durable
consumer ``python-greeter``, publishes three events (the first with
``PublishEvent``, the others together with ``PublishEvents``), receives them
through the bidirectional ``Events`` call (with ``max_batch``, so that events
that are ready together come in one message), acknowledges them and exits 0.
Run it again: the consumer remembers its position, so it sees only the new
events.

Any language works the same way: generate a client from ``proto/`` (see
docs/grpc.md) and make these calls. The event data is a
``google.protobuf.Any``; here it holds a ``google.protobuf.StringValue``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator

import grpc
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import StringValue

from windshift_grpc.proto import events_pb2 as pb
from windshift_grpc.proto import events_pb2_grpc as pb_grpc

STREAM = "greetings"
CONSUMER = "python-greeter"
TIMEOUT = 20.0  # seconds to wait for the events before giving up
STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


async def run(target: str, count: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EventsServiceStub(channel)

        # 1. A stream that collects every subject under greetings.
        await stub.EnsureStream(
            pb.EnsureStreamRequest(
                name=STREAM,
                subjects=pb.EnsureStreamRequest.Subjects(subjects=[f"{STREAM}.>"]),
            )
        )
        # 2. A durable consumer. Created before publishing, it starts with the
        #    events published from now on (the default start is "end").
        consumer = await stub.EnsureConsumer(
            pb.EnsureConsumerRequest(
                stream=STREAM,
                name=CONSUMER,
                subjects=[f"{STREAM}.>"],
                processing_timeout=Duration(seconds=30),
            )
        )
        print(f"stream {STREAM} and consumer {consumer.id} are ready")

        # 3. Publish: the data is any protobuf message, packed in an Any.
        #    One event: PublishEvent answers with its id (or fails the call).
        requests = [
            pb.PublishEventRequest(subject=f"{STREAM}.hello", data=greeting(number))
            for number in range(1, count + 1)
        ]
        answer = await stub.PublishEvent(requests[0])
        published = [answer.id]
        print(f"published event {answer.id}")
        #    Several: PublishEvents publishes them in one call and answers one
        #    result per event, in order: its id, or its own status. One event
        #    refused (say, a wrong expected_last_id) does not stop the others.
        if len(requests) > 1:
            batch = await stub.PublishEvents(pb.PublishEventsRequest(events=requests[1:]))
            print(f"published {len(batch.results)} events in one PublishEvents call")
            for result in batch.results:
                if result.WhichOneof("result") == "id":
                    published.append(result.id)
                    print(f"published event {result.id}")
                else:
                    code = STATUS_NAMES.get(result.error.code, str(result.error.code))
                    print(f"an event was refused: {code}: {result.error.message}")

        # 4. Consume: subscribe, then acknowledge each event as it arrives.
        await asyncio.wait_for(consume(stub, consumer.id, set(published)), TIMEOUT)


def greeting(number: int) -> Any:
    data = Any()
    data.Pack(StringValue(value=f"hello #{number}"))
    return data


async def consume(stub: pb_grpc.EventsServiceStub, consumer: str, waiting: set[int]) -> None:
    outgoing: asyncio.Queue[pb.EventsRequest | None] = asyncio.Queue()
    # max_batch: events that are ready together may come in one message
    # (`events`), at most 10 here; the server never waits to fill a batch.
    outgoing.put_nowait(
        pb.EventsRequest(
            subscribe=pb.EventsRequest.Subscribe(
                stream=STREAM, consumer=consumer, max_processing_events=10, max_batch=10
            )
        )
    )

    async def requests() -> AsyncIterator[pb.EventsRequest]:
        while (request := await outgoing.get()) is not None:
            yield request

    call = stub.Events(requests())
    async for response in call:
        kind = response.WhichOneof("response")
        if kind == "subscribed":
            timeout = response.subscribed.processing_timeout.ToTimedelta()
            print(f"subscribed; each event must be settled within {timeout.total_seconds():g}s")
        elif kind in ("event", "events"):
            # With max_batch set every event comes in `events`; `event` is what
            # a client that leaves max_batch out receives. Handling both is cheap.
            events = [response.event] if kind == "event" else list(response.events.events)
            if kind == "events":
                print(f"received a batch of {len(events)} event(s)")
            for event in events:
                text = StringValue()
                event.data.Unpack(text)
                print(
                    f"received event {event.id} on {event.subject} "
                    f"(delivery attempt {event.delivery_attempt}): {text.value}"
                )
            # One ack for the whole batch: each id is settled on its own.
            ids = [event.id for event in events]
            outgoing.put_nowait(pb.EventsRequest(ack=pb.EventsRequest.Ack(ids=ids)))
        elif kind == "ack_confirmation":
            confirmation = response.ack_confirmation
            for event_id in confirmation.ids:
                print(f"acknowledged event {event_id}")
                waiting.discard(event_id)
            if confirmation.temporary_failed_ids:  # NATS did not answer: try again
                again = pb.EventsRequest.Ack(ids=confirmation.temporary_failed_ids)
                outgoing.put_nowait(pb.EventsRequest(ack=again))
            if not waiting:
                outgoing.put_nowait(None)  # done: half-close, the server ends the call
    print("all events acknowledged")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target", default="127.0.0.1:8080", help="host:port of windshift-grpc (%(default)s)"
    )
    parser.add_argument("--count", type=int, default=3, help="events to publish (%(default)s)")
    args = parser.parse_args()
    try:
        asyncio.run(run(args.target, args.count))
    except grpc.aio.AioRpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"error: the events did not arrive within {TIMEOUT:g}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
