"""Which permission each RPC needs, checked on every call and every Events message.

Example:
    >>> guard = Guard(Tokens.load(Path("tokens.json")))
    >>> server = grpc.aio.server(interceptors=[ServerInterceptor(admission), guard])

The guard is a server interceptor placed inside
:class:`~windshift_grpc.interceptor.ServerInterceptor`, which answers its
:class:`~windshift_grpc.auth.AuthenticationError` and
:class:`~windshift_grpc.auth.PermissionDeniedError` with UNAUTHENTICATED and
PERMISSION_DENIED through the one status table. Health and reflection stay
open; every method of EventsService and StateService needs a token, and a
method the table below does not know is refused (closed by default).

=====================================  ========================================
RPC                                    needs
=====================================  ========================================
EnsureStream                           manage the stream; for a mirror or
                                       aggregate, also consume each source
EnsureConsumer                         manage the stream; with a
                                       dead_letter_stream, also manage that
                                       (it may be created)
DeleteConsumer                         manage the stream
PublishEvent                           publish on the subject
Events                                 consume the stream, checked on the
                                       subscribe and again on every later
                                       message (ack, reject, ping)
ListDeadLetters, GetDeadLetter         consume the dead-letter stream
ReplayDeadLetter, DeleteDeadLetter,    manage the dead-letter stream (a
PurgeDeadLetters                       replay publishes the letter again, to
                                       its original subject)
EnsureStore, Set, Delete               write state of the store
Get                                    read state of the store
=====================================  ========================================

Each check looks the call's token up again, so a token removed from the file
(and reloaded with SIGHUP, see :meth:`Guard.reload`) stops open Events calls
at their next message.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as events_pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb
from windshift_grpc.auth import (
    AuthenticationError,
    Grant,
    Permission,
    PermissionDeniedError,
    Tokens,
    bearer,
    digest,
)

logger = logging.getLogger("windshift_grpc.auth")

Need = tuple[Permission, str]
Rule = Callable[[Any], list[Need]]

_EVENTS = "/" + events_pb.DESCRIPTOR.services_by_name["EventsService"].full_name + "/"
_STATE = "/" + state_pb.DESCRIPTOR.services_by_name["StateService"].full_name + "/"
#: The services whose every call needs a token.
PROTECTED = (_EVENTS, _STATE)


def _ensure_stream(request: events_pb.EnsureStreamRequest) -> list[Need]:
    needs = [(Permission.MANAGE, request.name)]
    source = request.WhichOneof("source")
    if source == "mirror":
        needs.append((Permission.CONSUME, request.mirror.name))
    elif source == "aggregate":
        needs.extend((Permission.CONSUME, s.name) for s in request.aggregate.sources)
    return needs


def _ensure_consumer(request: events_pb.EnsureConsumerRequest) -> list[Need]:
    needs = [(Permission.MANAGE, request.stream)]
    if request.dead_letter_stream:  # "" removes it: nothing to manage
        needs.append((Permission.MANAGE, request.dead_letter_stream))
    return needs


#: The unary RPCs: method -> what a request needs. (Events is checked per message.)
RULES: dict[str, Rule] = {
    _EVENTS + "EnsureStream": _ensure_stream,
    _EVENTS + "EnsureConsumer": _ensure_consumer,
    _EVENTS + "DeleteConsumer": lambda r: [(Permission.MANAGE, r.stream)],
    _EVENTS + "PublishEvent": lambda r: [(Permission.PUBLISH, r.subject)],
    _EVENTS + "ListDeadLetters": lambda r: [(Permission.CONSUME, r.dead_letter_stream)],
    _EVENTS + "GetDeadLetter": lambda r: [(Permission.CONSUME, r.dead_letter_stream)],
    _EVENTS + "ReplayDeadLetter": lambda r: [(Permission.MANAGE, r.dead_letter_stream)],
    _EVENTS + "DeleteDeadLetter": lambda r: [(Permission.MANAGE, r.dead_letter_stream)],
    _EVENTS + "PurgeDeadLetters": lambda r: [(Permission.MANAGE, r.dead_letter_stream)],
    _STATE + "EnsureStore": lambda r: [(Permission.WRITE_STATE, r.store)],
    _STATE + "Get": lambda r: [(Permission.READ_STATE, r.store)],
    _STATE + "Set": lambda r: [(Permission.WRITE_STATE, r.store)],
    _STATE + "Delete": lambda r: [(Permission.WRITE_STATE, r.store)],
}
#: The bidirectional Events call, checked message by message.
EVENTS_METHOD = _EVENTS + "Events"


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every API call by bearer token and checks its permissions.

    Args:
        tokens: the tokens file's contents; replaced by :meth:`reload`.
    """

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def reload(self, tokens: Tokens) -> None:
        """Use these tokens from now on, also for the next message of open Events calls."""
        self.tokens = tokens

    def _grant(self, token_digest: bytes) -> Grant:
        grant = self.tokens.find(token_digest)
        if grant is None:
            raise AuthenticationError("the bearer token is not valid")
        return grant

    def _check(self, grant: Grant, needs: Iterable[Need], method: str) -> None:
        for permission, name in needs:
            try:
                grant.require(permission, name)
            except PermissionDeniedError as denied:
                logger.info("%s denied: %s", method, denied)
                raise

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(PROTECTED):
            return handler
        # Authenticated before the request is even decoded.
        try:
            token_digest = digest(bearer(details.invocation_metadata))
            self._grant(token_digest)
        except AuthenticationError as exc:
            return _refusal(handler, exc)
        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if method == EVENTS_METHOD and handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._events(handler.stream_stream, method, token_digest), **options
            )
        rule = RULES.get(method)
        if rule is None or handler.unary_unary is None:
            return _refusal(handler, PermissionDeniedError(f"no permission grants {method}"))
        return grpc.unary_unary_rpc_method_handler(
            self._unary(handler.unary_unary, method, rule, token_digest), **options
        )

    def _unary(
        self, behavior: Callable[[Any, Any], Any], method: str, rule: Rule, token_digest: bytes
    ) -> Callable[[Any, Any], Any]:
        async def handle(request: Any, context: Any) -> Any:
            self._check(self._grant(token_digest), rule(request), method)
            return await behavior(request, context)

        return handle

    def _events(
        self, behavior: Callable[[Any, Any], Any], method: str, token_digest: bytes
    ) -> Callable[[Any, Any], Any]:
        async def checked(
            requests: AsyncIterator[events_pb.EventsRequest],
        ) -> AsyncIterator[events_pb.EventsRequest]:
            stream: str | None = None
            async for request in requests:
                grant = self._grant(token_digest)  # again: the token may have been revoked
                if stream is None and request.WhichOneof("request") == "subscribe":
                    stream = request.subscribe.stream
                if stream is not None:
                    self._check(grant, [(Permission.CONSUME, stream)], method)
                # else: not a subscribe first; the call itself refuses it.
                yield request

        async def handle(
            requests: AsyncIterator[events_pb.EventsRequest], context: Any
        ) -> AsyncIterator[events_pb.EventsResponse]:
            if inspect.isasyncgenfunction(behavior):
                responses = behavior(checked(requests), context)
                async with contextlib.aclosing(responses):
                    async for response in responses:
                        yield response
            else:  # a handler writing with context.write()
                await behavior(checked(requests), context)

        return handle


def _refusal(handler: Any, error: Exception) -> Any:
    """A handler of the same kind that answers every call with ``error``, reading nothing."""

    async def refuse(request: Any, context: Any) -> Any:
        raise error

    async def refuse_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        raise error
        yield  # an async generator, as streaming handlers are

    options = {
        "request_deserializer": _ignore,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **options)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **options)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **options)


def _ignore(data: bytes) -> None:
    return None


__all__ = ["EVENTS_METHOD", "PROTECTED", "RULES", "Guard"]
