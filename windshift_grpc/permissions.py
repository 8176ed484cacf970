"""Which permission each RPC needs, and the checks of a call's token against them.

Example:
    >>> access = Access(Tokens.load(Path("tokens.json")))
    >>> token = access.authenticate(metadata)
    >>> access.check(token, needs(method, request), method)

:mod:`windshift_grpc.calls` makes the checks, once per call (and, for Events,
on every message), and answers :class:`~windshift_grpc.auth.AuthenticationError`
and :class:`~windshift_grpc.auth.PermissionDeniedError` with UNAUTHENTICATED and
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
(and reloaded with SIGHUP, see :meth:`Access.reload`) stops open Events calls
at their next message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

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


class Access:
    """The tokens in use, and the checks made with them (see :mod:`windshift_grpc.calls`).

    Args:
        tokens: the tokens file's contents; replaced by :meth:`reload`.
    """

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def reload(self, tokens: Tokens) -> None:
        """Use these tokens from now on, also for the next message of open Events calls."""
        self.tokens = tokens

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> bytes:
        """The digest of the call's bearer token, which the tokens file must hold.

        Raises:
            AuthenticationError: no bearer token, or one the file does not hold.
        """
        token_digest = digest(bearer(metadata))
        self.grant(token_digest)
        return token_digest

    def grant(self, token_digest: bytes) -> Grant:
        """The entry of this token now (it may have been removed by a reload).

        Raises:
            AuthenticationError: the file no longer holds it.
        """
        grant = self.tokens.find(token_digest)
        if grant is None:
            raise AuthenticationError("the bearer token is not valid")
        return grant

    def check(self, token_digest: bytes, needs: Iterable[Need], method: str) -> Grant:
        """The token's entry, if it grants every need.

        Raises:
            AuthenticationError: the token is no longer valid.
            PermissionDeniedError: it does not grant one of the needs.
        """
        grant = self.grant(token_digest)
        for permission, name in needs:
            try:
                grant.require(permission, name)
            except PermissionDeniedError as denied:
                logger.info("%s denied: %s", method, denied)
                raise
        return grant


def needs(method: str, request: Any) -> list[Need]:
    """What a unary RPC needs for this request.

    Raises:
        PermissionDeniedError: the method is one no permission grants (closed by default).
    """
    rule = RULES.get(method)
    if rule is None:
        raise PermissionDeniedError(f"no permission grants {method}")
    return rule(request)


__all__ = ["EVENTS_METHOD", "PROTECTED", "RULES", "Access", "Need", "needs"]
