"""The EventsService servicer: each RPC converts the request, calls the library, converts the answer.

Everything else a call needs (authentication, admission, decoding,
authorization, the status of an error, the log line) is done once, by
:class:`~windshift_grpc.calls.CallLayer`: serve the servicer behind it.

Example:
    >>> service = EventsService(client, stopping=asyncio.Event())
    >>> server = grpc.aio.server(interceptors=[CallLayer(guards=service.guards)])
    >>> service_pb2_grpc.add_EventsServiceServicer_to_server(service, server)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

import windshift
from windshift_grpc import convert, permissions
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as pb
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2_grpc as pb_grpc
from windshift_grpc.calls import Guard, Requests
from windshift_grpc.events_stream import CallLimits, events_call

PUBLISH_EVENTS_METHOD = (
    f"/{pb.DESCRIPTOR.services_by_name['EventsService'].full_name}/PublishEvents"
)


class EventsService(pb_grpc.EventsServiceServicer):
    """``windshift.events.v1alpha1.EventsService`` on a :class:`windshift.Client`.

    Args:
        client: the connected library client all calls go through.
        stopping: set when the server shuts down; open Events calls then end
            cleanly (status OK).
        limits: what one Events call may hold (None: the defaults). How many
            calls may be open is the call layer's
            (:class:`~windshift_grpc.admission.EventsCalls`).
        dead_letter_page_bytes: the most bytes of dead letters one
            ListDeadLetters answer holds (a single larger letter comes alone).
        publish_events_max_events: the most events one PublishEvents call
            may carry.
    """

    def __init__(
        self,
        client: windshift.Client,
        *,
        stopping: asyncio.Event,
        limits: CallLimits | None = None,
        dead_letter_page_bytes: int = 1024 * 1024,
        publish_events_max_events: int = convert.DEFAULT_PUBLISH_EVENTS_MAX_EVENTS,
    ) -> None:
        self._client = client
        self._stopping = stopping
        self._limits = limits or CallLimits()
        self._dead_letter_page_bytes = dead_letter_page_bytes
        self._publish_events_max_events = publish_events_max_events

    @property
    def guards(self) -> dict[str, Guard]:
        """What the call layer checks in the bytes of a request before decoding it."""
        return {
            PUBLISH_EVENTS_METHOD: convert.publish_events_guard(self._publish_events_max_events)
        }

    async def EnsureStream(
        self, request: pb.EnsureStreamRequest, context: Any
    ) -> pb.EnsureStreamResponse:
        options = convert.stream_options(request)
        # A client that does not know the additions (any client generated
        # from the original protos) must not reset what another one set.
        kept = convert.unset_additions(request, windshift.StreamOptions)
        if kept:
            with contextlib.suppress(windshift.StreamNotFoundError):
                existing = await self._client.stream_info(request.name)
                options = _keep(options, existing.options, kept)
        await self._client.ensure_stream(request.name, options)
        return pb.EnsureStreamResponse()

    async def EnsureConsumer(
        self, request: pb.EnsureConsumerRequest, context: Any
    ) -> pb.EnsureConsumerResponse:
        options = convert.consumer_options(request)
        name = request.name if request.HasField("name") else None
        kept = convert.unset_additions(request, windshift.ConsumerOptions)
        if kept and name is not None:
            with contextlib.suppress(windshift.NotFoundError):
                existing = await self._client.consumer_info(request.stream, name)
                options = _keep(options, existing.options, kept)
        consumer = await self._client.ensure_consumer(request.stream, name, options)
        return pb.EnsureConsumerResponse(id=consumer.id)

    async def DeleteConsumer(
        self, request: pb.DeleteConsumerRequest, context: Any
    ) -> pb.DeleteConsumerResponse:
        await self._client.delete_consumer(request.stream, request.id)
        return pb.DeleteConsumerResponse()

    async def PublishEvent(
        self, request: pb.PublishEventRequest, context: Any
    ) -> pb.PublishEventResponse:
        published = await self._client.publish(
            request.subject, request.data, **convert.publish_options(request)
        )
        return pb.PublishEventResponse(id=published.id)

    async def PublishEvents(
        self, request: pb.PublishEventsRequest, context: Any
    ) -> pb.PublishEventsResponse:
        # The call layer has checked publish on every event's subject; the
        # library validates every event before it publishes the first, so a
        # refusal of either kind leaves nothing published.
        events = convert.outgoing_events(request, max_events=self._publish_events_max_events)
        results = await self._client.publish_many(events)
        return pb.PublishEventsResponse(results=map(convert.publish_result, results))

    async def Events(
        self, request_iterator: AsyncIterator[pb.EventsRequest], context: Any
    ) -> AsyncGenerator[pb.EventsResponse, None]:
        # Behind the call layer, the requests carry the call's place among the open ones.
        call = request_iterator.call if isinstance(request_iterator, Requests) else None
        calls = events_call(self._client, request_iterator, self._stopping, self._limits, call)
        async with contextlib.aclosing(calls) as responses:
            async for response in responses:
                yield response

    # Dead letters (additions of this implementation; see docs/deadletters.md).

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Any
    ) -> pb.ListDeadLettersResponse:
        # The page ends at the byte budget as well as at the limit: a client
        # continues from the last id it got, and only an empty page is the end.
        queue = self._client.dead_letters(request.dead_letter_stream)
        page = convert.dead_letter_page(request, max_bytes=self._dead_letter_page_bytes)
        letters = await queue.list(**page)
        return pb.ListDeadLettersResponse(dead_letters=map(convert.dead_letter, letters))

    async def GetDeadLetter(
        self, request: pb.GetDeadLetterRequest, context: Any
    ) -> pb.GetDeadLetterResponse:
        letter = await self._client.dead_letters(request.dead_letter_stream).get(request.id)
        return pb.GetDeadLetterResponse(dead_letter=convert.dead_letter(letter))

    async def ReplayDeadLetter(
        self, request: pb.ReplayDeadLetterRequest, context: Any
    ) -> pb.ReplayDeadLetterResponse:
        queue = self._client.dead_letters(request.dead_letter_stream)
        # The caller must also be allowed to publish where the letter goes back to.
        published = await queue.replay(request.id, check=permissions.check_replay)
        return pb.ReplayDeadLetterResponse(id=published.id, stream=published.stream)

    async def DeleteDeadLetter(
        self, request: pb.DeleteDeadLetterRequest, context: Any
    ) -> pb.DeleteDeadLetterResponse:
        await self._client.dead_letters(request.dead_letter_stream).delete(request.id)
        return pb.DeleteDeadLetterResponse()

    async def PurgeDeadLetters(
        self, request: pb.PurgeDeadLettersRequest, context: Any
    ) -> pb.PurgeDeadLettersResponse:
        purged = await self._client.dead_letters(request.dead_letter_stream).purge()
        return pb.PurgeDeadLettersResponse(purged=purged)


_O = TypeVar("_O", windshift.StreamOptions, windshift.ConsumerOptions)


def _keep(options: _O, existing: _O, names: set[str]) -> _O:
    """``options`` with the values ``existing`` has for ``names``."""
    return dataclasses.replace(options, **{name: getattr(existing, name) for name in names})


__all__ = ["PUBLISH_EVENTS_METHOD", "EventsService"]
