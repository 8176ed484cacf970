"""Which permission each RPC needs, and the checks of a call's token against them.

Example:
    >>> access = Access(Tokens.load(Path("tokens.json")), inventory=Inventory(client))
    >>> credential = await access.authenticate(metadata)
    >>> async with access.authorized(credential, method, request):
    ...     ...  # run the call

:mod:`windshift_grpc.calls` makes the checks, once per call (and, for Events,
on every message), and answers :class:`~windshift_grpc.auth.AuthenticationError`,
:class:`~windshift_grpc.auth.PermissionDeniedError` and
:class:`~windshift_grpc.auth.QuotaExceededError` with UNAUTHENTICATED,
PERMISSION_DENIED and RESOURCE_EXHAUSTED through the one status table. Health
and reflection stay open; every method of EventsService and StateService
needs a token, and a method the table below does not know is refused (closed
by default).

=====================================  ========================================
RPC                                    needs
=====================================  ========================================
EnsureStream                           manage the stream; publish on every
                                       subject filter it collects (one
                                       pattern must cover each); for a mirror
                                       or aggregate, consume each source
EnsureConsumer                         manage the stream; with a
                                       dead_letter_stream, also manage that
                                       and publish on ``<it>.>`` (it may be
                                       created, collecting those subjects)
DeleteConsumer                         manage the stream
PublishEvent                           publish on the subject
PublishEvents                          publish on the subject of every
                                       event (each distinct subject checked
                                       once); one the token may not publish
                                       on refuses the whole call before
                                       anything is published, naming the
                                       first event on it
Events                                 consume the stream, checked on the
                                       subscribe and again on every later
                                       message (ack, reject, ping)
ListDeadLetters, GetDeadLetter         consume the dead-letter stream
ReplayDeadLetter                       manage the dead-letter stream, and
                                       publish on the letter's original
                                       subject (known once the letter is
                                       read: :func:`check_replay`, before
                                       anything is published)
DeleteDeadLetter, PurgeDeadLetters     manage the dead-letter stream
EnsureStore, Set, Delete               write state of the store
Get                                    read state of the store
=====================================  ========================================

``GET /metrics`` on ``HEALTH_PORT`` is no RPC: it needs the ``metrics``
permission, whose stream patterns choose the series shown
(:func:`windshift_grpc.metrics.http_routes`, through :meth:`Access.authenticate`).

Stream permissions never match the streams behind stores (``KV_*``,
``OBJ_*``), and publish never reaches NATS' internal subjects, whatever the
pattern (:mod:`windshift_grpc.auth`). A token with ``max_streams`` or
``max_consumers`` is also held to them on EnsureStream and EnsureConsumer,
counted in JetStream (:class:`Inventory`; the server keeps no state).

Tokens are looked up by an HMAC of the presented token under a key made at
start (never stored): the slow hash of the file is checked once per distinct
token per process, and each later call costs one HMAC and one dictionary
lookup. Each check looks the call's entry up again, and a reload of the file
(SIGHUP, see :meth:`Access.reload`) has the call layer check every open
Events call at once (:meth:`windshift_grpc.calls.CallLayer.recheck`): a
withdrawn token ends its calls, silent ones included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import windshift
from windshift._jsapi import CONSUMER_NOT_FOUND, STREAM_NOT_FOUND, ApiError, JetStreamApi
from windshift_grpc._proto.windshift.events.v1alpha1 import service_pb2 as events_pb
from windshift_grpc._proto.windshift.state.v1alpha1 import service_pb2 as state_pb
from windshift_grpc.auth import (
    AuthenticationError,
    Grant,
    Permission,
    PermissionDeniedError,
    QuotaExceededError,
    Tokens,
    bearer,
)

logger = logging.getLogger("windshift_grpc.auth")

Need = tuple[Permission, str]
Rule = Callable[[Any], list[Need]]

_EVENTS = "/" + events_pb.DESCRIPTOR.services_by_name["EventsService"].full_name + "/"
_STATE = "/" + state_pb.DESCRIPTOR.services_by_name["StateService"].full_name + "/"
#: The services whose every call needs a token.
PROTECTED = (_EVENTS, _STATE)

#: Presented tokens whose entry is remembered (an HMAC each, never the token).
KNOWN_TOKENS = 4096
#: Presented tokens remembered as invalid (until the next reload).
UNKNOWN_TOKENS = 1024


def _ensure_stream(request: events_pb.EnsureStreamRequest) -> list[Need]:
    needs = [(Permission.MANAGE, request.name)]
    source = request.WhichOneof("source")
    if source == "subjects":
        # The stream will hold whatever is published there: it claims those subjects.
        needs.extend((Permission.PUBLISH, subject) for subject in request.subjects.subjects)
    elif source == "mirror":
        needs.append((Permission.CONSUME, request.mirror.name))
    elif source == "aggregate":
        needs.extend((Permission.CONSUME, s.name) for s in request.aggregate.sources)
    return needs


def _ensure_consumer(request: events_pb.EnsureConsumerRequest) -> list[Need]:
    needs = [(Permission.MANAGE, request.stream)]
    if request.dead_letter_stream:  # "" removes it: nothing to manage
        dead = request.dead_letter_stream
        # Created when missing, collecting <dead>.>: the same claim as EnsureStream's.
        needs += [(Permission.MANAGE, dead), (Permission.PUBLISH, f"{dead}.>")]
    return needs


def _publish_events(request: events_pb.PublishEventsRequest) -> list[Need]:
    # Each subject once, in the order of its first event: a batch on one
    # subject costs one check, and the denial names the first event at fault.
    subjects = dict.fromkeys(event.subject for event in request.events)
    return [(Permission.PUBLISH, subject) for subject in subjects]


def _publish_events_denied(request: events_pb.PublishEventsRequest, need: Need) -> str:
    index = next(i for i, event in enumerate(request.events) if event.subject == need[1])
    return f"event {index} of {len(request.events)}, nothing was published"


#: The unary RPCs: method -> what a request needs. (Events is checked per message.)
RULES: dict[str, Rule] = {
    _EVENTS + "EnsureStream": _ensure_stream,
    _EVENTS + "EnsureConsumer": _ensure_consumer,
    _EVENTS + "DeleteConsumer": lambda r: [(Permission.MANAGE, r.stream)],
    _EVENTS + "PublishEvent": lambda r: [(Permission.PUBLISH, r.subject)],
    _EVENTS + "PublishEvents": _publish_events,
    _EVENTS + "ListDeadLetters": lambda r: [(Permission.CONSUME, r.dead_letter_stream)],
    _EVENTS + "GetDeadLetter": lambda r: [(Permission.CONSUME, r.dead_letter_stream)],
    # ... and publish on the letter's subject: check_replay, once it is read.
    _EVENTS + "ReplayDeadLetter": lambda r: [(Permission.MANAGE, r.dead_letter_stream)],
    _EVENTS + "DeleteDeadLetter": lambda r: [(Permission.MANAGE, r.dead_letter_stream)],
    _EVENTS + "PurgeDeadLetters": lambda r: [(Permission.MANAGE, r.dead_letter_stream)],
    _STATE + "EnsureStore": lambda r: [(Permission.WRITE_STATE, r.store)],
    _STATE + "Get": lambda r: [(Permission.READ_STATE, r.store)],
    _STATE + "Set": lambda r: [(Permission.WRITE_STATE, r.store)],
    _STATE + "Delete": lambda r: [(Permission.WRITE_STATE, r.store)],
}
#: For rules whose needs come from several parts of a request: which part
#: (and what became of the call), added to a denial's message.
DENIED_WHERE: dict[str, Callable[[Any, Need], str]] = {
    _EVENTS + "PublishEvents": _publish_events_denied,
}
#: The bidirectional Events call, checked message by message.
EVENTS_METHOD = _EVENTS + "Events"


class Inventory:
    """The streams and consumers that exist, read from JetStream for the quotas.

    Args:
        client: the server's connected client (its NATS connection is used).
    """

    def __init__(self, client: windshift.Client) -> None:
        timeout = client.settings.request_timeout.total_seconds()
        self._api = JetStreamApi(client.nats, timeout=timeout)

    async def streams(self) -> dict[str, int]:
        """Every stream's name and its number of consumers."""
        found: dict[str, int] = {}
        while True:
            try:
                page = await self._api.request("STREAM.LIST", {"offset": len(found)})
            except ApiError as exc:
                raise exc.to_windshift("list streams for a quota") from None
            infos = page.get("streams") or []
            for info in infos:
                found[info["config"]["name"]] = int(info.get("state", {}).get("consumer_count", 0))
            if not infos or len(found) >= int(page.get("total", 0)):
                return found

    async def has_consumer(self, stream: str, consumer: str) -> bool:
        """Whether ``stream`` has the consumer ``consumer``."""
        try:
            await self._api.request(f"CONSUMER.INFO.{stream}.{consumer}")
        except ApiError as exc:
            if exc.err_code in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND):
                return False
            raise exc.to_windshift(f"consumer {consumer!r} of {stream!r}") from None
        return True


def _managed(grant: Grant, streams: dict[str, int]) -> list[str]:
    return [name for name in streams if grant.allows(Permission.MANAGE, name)]


def _one_more_stream(grant: Grant, streams: dict[str, int], name: str, method: str) -> None:
    if grant.max_streams is None or name in streams:
        return
    managed = _managed(grant, streams)
    if len(managed) >= grant.max_streams:
        raise QuotaExceededError(
            f"token {grant.name!r} may have at most {grant.max_streams} streams (max_streams) "
            f"and its manage patterns match {len(managed)}: {method} would create {name!r}"
        )


async def _ensure_stream_quota(
    grant: Grant, request: events_pb.EnsureStreamRequest, inventory: Inventory
) -> None:
    if grant.max_streams is not None:
        _one_more_stream(grant, await inventory.streams(), request.name, "EnsureStream")


async def _ensure_consumer_quota(
    grant: Grant, request: events_pb.EnsureConsumerRequest, inventory: Inventory
) -> None:
    streams = await inventory.streams()
    if request.dead_letter_stream:
        _one_more_stream(grant, streams, request.dead_letter_stream, "EnsureConsumer")
    if grant.max_consumers is None:
        return
    if request.HasField("name") and await inventory.has_consumer(request.stream, request.name):
        return  # an update
    consumers = sum(streams[name] for name in _managed(grant, streams))
    if consumers >= grant.max_consumers:
        raise QuotaExceededError(
            f"token {grant.name!r} may have at most {grant.max_consumers} consumers "
            f"(max_consumers) on the streams it manages, and they have {consumers}"
        )


Quota = Callable[[Grant, Any, Inventory], Awaitable[None]]
#: The RPCs that may create streams or consumers: method -> its quota check.
QUOTAS: dict[str, Quota] = {
    _EVENTS + "EnsureStream": _ensure_stream_quota,
    _EVENTS + "EnsureConsumer": _ensure_consumer_quota,
}


@dataclass(frozen=True, slots=True)
class _Caller:
    access: Access
    credential: str
    method: str


# The call being served in this task (set by Access.authorized), for checks
# that need what the call itself finds out (check_replay).
_CALLER: ContextVar[_Caller | None] = ContextVar("windshift_grpc_caller", default=None)


class Access:
    """The tokens in use, and the checks made with them (see :mod:`windshift_grpc.calls`).

    Args:
        tokens: the tokens file's contents; replaced by :meth:`reload`.
        inventory: where quotas are counted; None: quotas are not checked
            (a server always gives one).
    """

    def __init__(self, tokens: Tokens, *, inventory: Inventory | None = None) -> None:
        self.tokens = tokens
        self.inventory = inventory
        #: How many presented tokens were checked against the file (not found in a cache).
        self.verifications = 0
        self._key = secrets.token_bytes(32)
        self._known: OrderedDict[bytes, str] = OrderedDict()
        self._unknown: OrderedDict[bytes, None] = OrderedDict()
        self._verifying = asyncio.Lock()  # one slow check at a time
        self._quota_locks: dict[str, asyncio.Lock] = {}

    def reload(self, tokens: Tokens) -> None:
        """Use these tokens from now on (the call layer then rechecks the open Events calls)."""
        self.tokens = tokens
        self._unknown.clear()  # a token refused before may be in the new file

    async def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> str:
        """The credential of the call's bearer token: how the tokens file stores it.

        Raises:
            AuthenticationError: no bearer token, or one the file does not hold.
        """
        token = bearer(metadata)
        index = hmac.new(self._key, token.encode(), hashlib.sha256).digest()
        credential = self._cached(index)
        if credential is None and index not in self._unknown:
            if self.tokens.slow:
                async with self._verifying:
                    credential = self._cached(index)  # checked while this call waited?
                    if credential is None and index not in self._unknown:
                        credential = await self._verify(index, token, thread=True)
            else:
                credential = await self._verify(index, token, thread=False)
        if credential is None:
            raise AuthenticationError("the bearer token is not valid")
        self.grant(credential)  # still there after a reload meanwhile
        return credential

    def _cached(self, index: bytes) -> str | None:
        credential = self._known.get(index)
        if credential is None or self.tokens.get(credential) is None:
            return None
        self._known.move_to_end(index)
        return credential

    async def _verify(self, index: bytes, token: str, *, thread: bool) -> str | None:
        tokens = self.tokens
        self.verifications += 1
        if thread:  # scrypt: off the event loop
            credential = await asyncio.to_thread(tokens.credential_of, token)
        else:
            credential = tokens.credential_of(token)
        if credential is not None:
            self._known[index] = credential
            if len(self._known) > KNOWN_TOKENS:
                self._known.popitem(last=False)
        elif tokens is self.tokens:  # not reloaded meanwhile
            self._unknown[index] = None
            if len(self._unknown) > UNKNOWN_TOKENS:
                self._unknown.popitem(last=False)
        return credential

    def grant(self, credential: str) -> Grant:
        """The entry of this token now (it may have been removed by a reload).

        Raises:
            AuthenticationError: the file no longer holds it.
        """
        grant = self.tokens.get(credential)
        if grant is None:
            raise AuthenticationError("the bearer token is not valid")
        return grant

    def check(
        self,
        credential: str,
        needs: Iterable[Need],
        method: str,
        where: Callable[[Need], str] | None = None,
    ) -> Grant:
        """The token's entry, if it grants every need.

        Args:
            credential: the token's credential.
            needs: what the call needs.
            method: the RPC, for the log line.
            where: which part of the request a refused need comes from, for
                the message (None: the need says it all).

        Raises:
            AuthenticationError: the token is no longer valid.
            PermissionDeniedError: it does not grant one of the needs.
        """
        grant = self.grant(credential)
        for need in needs:
            try:
                grant.require(*need)
            except PermissionDeniedError as denied:
                if where is not None:
                    denied = PermissionDeniedError(f"{denied} ({where(need)})")
                logger.info("%s denied: %s", method, denied)
                raise denied from None
        return grant

    @contextlib.asynccontextmanager
    async def authorized(self, credential: str, method: str, request: Any) -> AsyncIterator[Grant]:
        """Check a unary call's needs and quota; hold what the call needs while it runs.

        While the call runs, :func:`check_replay` (and :func:`require`) check
        against its token; a call that may create a stream or consumer for a
        token with a quota runs alone among that token's such calls in this
        process, so that calls at once cannot all pass the count.

        Raises:
            AuthenticationError, PermissionDeniedError: see :meth:`check`.
            QuotaExceededError: the call would go past the token's quota.
        """
        located = DENIED_WHERE.get(method)
        where = None if located is None else functools.partial(located, request)
        grant = self.check(credential, needs(method, request), method, where)
        quota = QUOTAS.get(method)
        limited = grant.max_streams is not None or grant.max_consumers is not None
        lock = None
        if quota is not None and limited and self.inventory is not None:
            lock = self._quota_locks.setdefault(grant.name, asyncio.Lock())
            await lock.acquire()
        caller = _CALLER.set(_Caller(self, credential, method))
        try:
            if lock is not None and quota is not None and self.inventory is not None:
                try:
                    await quota(grant, request, self.inventory)
                except QuotaExceededError as exceeded:
                    logger.info("%s refused: %s", method, exceeded)
                    raise
            yield grant
        finally:
            # A streaming handler may be closed from another context; the
            # value then dies with the call's own.
            with contextlib.suppress(ValueError):
                _CALLER.reset(caller)
            if lock is not None:
                lock.release()


def needs(method: str, request: Any) -> list[Need]:
    """What a unary RPC needs for this request.

    Raises:
        PermissionDeniedError: the method is one no permission grants (closed by default).
    """
    rule = RULES.get(method)
    if rule is None:
        raise PermissionDeniedError(f"no permission grants {method}")
    return rule(request)


def require(permission: Permission, name: str) -> None:
    """Check a need the request does not show, against the token of the call being served.

    For what a call learns as it runs (the subject a dead letter goes back
    to). Outside :meth:`Access.authorized` (a server without tokens) there
    is nothing to check.

    Raises:
        AuthenticationError, PermissionDeniedError: see :meth:`Access.check`.
    """
    caller = _CALLER.get()
    if caller is not None:
        caller.access.check(caller.credential, [(permission, name)], caller.method)


def check_replay(letter: windshift.DeadLetter) -> None:
    """ReplayDeadLetter's second need: publish on the subject the letter goes back to.

    Given to :meth:`windshift.DeadLetterQueue.replay` as its ``check``, so it
    runs after the letter is read and before anything is published.
    """
    require(Permission.PUBLISH, letter.subject)


__all__ = [
    "DENIED_WHERE",
    "EVENTS_METHOD",
    "KNOWN_TOKENS",
    "PROTECTED",
    "QUOTAS",
    "RULES",
    "UNKNOWN_TOKENS",
    "Access",
    "Inventory",
    "Need",
    "check_replay",
    "needs",
    "require",
]
