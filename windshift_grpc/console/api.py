"""The console's JSON API (``/console/api/...``): what the page shows, as the token may see it.

Every handler checks the token's permission on the names the request gives
before it asks NATS anything (a refused name says nothing of whether it
exists), and every answer is built from the library's public calls:
:meth:`windshift.Client.streams`, :meth:`~windshift.Client.read_events`,
:meth:`~windshift.Client.dead_letters`, :meth:`~windshift.Client.stores`, and
the server's :class:`~windshift_grpc.sampling.Sampler` for lag over time.

=============================================  ===================================
route                                          needs
=============================================  ===================================
``GET session``                                a valid token
``GET streams``, ``GET streams/{s}``           lists the streams the token may
                                               consume, manage or read metrics of
``GET streams/{s}/events``                     consume ``s``
``GET consumers``                              as ``streams``, per stream
``GET dead-letters``                           lists those the token may consume
``GET dead-letters/{d}``, ``.../{id}``         consume ``d``
``POST dead-letters/{d}/{id}/replay``          manage ``d``, publish on the
                                               letter's subject
``DELETE dead-letters/{d}/{id}``               manage ``d``
``POST dead-letters/{d}/purge``                manage ``d``
``GET stores``, ``stores/{st}/keys``,          read_state ``st``
``stores/{st}/entry?key=``
=============================================  ===================================
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web

# The well-known types, in protobuf's default pool: data of these types is
# shown decoded (with the types of every generated module the server imports).
from google.protobuf import (  # noqa: F401
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor_pool import DescriptorPool

import windshift
from windshift import (
    DeadLetter,
    NotFoundError,
    StoredEvent,
    StreamInfo,
    UnavailableError,
    ValidationError,
    WindshiftError,
)
from windshift_grpc.auth import Permission, internal_stream
from windshift_grpc.console.auth import Refused, Viewer
from windshift_grpc.sampling import ConsumerSample, Sampler

logger = logging.getLogger("windshift_grpc.console")

#: Events per page of a stream, and dead letters per page (at most).
MAX_PAGE = 100
#: Keys listed at most for one pattern.
MAX_KEYS = 1000
#: A body larger than this is not decoded for the page (its size is shown).
MAX_SHOWN_BYTES = 64 * 1024
#: The bytes of a page of dead letters (their data included), at most.
DEAD_LETTER_PAGE_BYTES = 4 * 1024 * 1024

#: Where the guard of the API leaves the request's :class:`Viewer`.
VIEWER = "windshift_console_viewer"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _answer(document: object, status: int = 200) -> web.Response:
    return web.json_response(
        document, status=status, dumps=functools.partial(json.dumps, default=str)
    )


def _viewer(request: web.Request) -> Viewer:
    viewer: Viewer = request[VIEWER]
    return viewer


def _integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Refused(400, f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise Refused(400, f"{name} must be from {low} to {high}, got {value}")
    return value


def _id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 20:
        raise Refused(400, f"a dead letter's id is a whole number, got {raw!r}")
    return int(raw)


def _data(
    to_json: Callable[[DescriptorPool | None], object | None],
    body: bytes,
    data_type: str,
    pool: DescriptorPool | None,
) -> dict[str, object]:
    """How the page shows an event's data: decoded, or why not and its first bytes.

    Decoded with ``pool`` (``WINDSHIFT_CONSOLE_DESCRIPTORS``) first, then with
    protobuf's default pool.
    """
    if len(body) > MAX_SHOWN_BYTES:
        return {"decoded": False, "note": f"{len(body)} bytes: too large to show here"}
    document = None if pool is None else to_json(pool)
    if document is None:
        document = to_json(None)
    if document is not None:
        return {"decoded": True, "json": document}
    note = f"type {data_type!r} is unknown to the server" if data_type else "no data type"
    return {"decoded": False, "note": note, "base64": base64.b64encode(body[:1024]).decode()}


def _stream(info: StreamInfo, viewer: Viewer, dead: set[str]) -> dict[str, object]:
    return {
        "name": info.name,
        "subjects": info.subjects,
        "events": info.events,
        "bytes": info.bytes,
        "first_id": info.first_id,
        "last_id": info.last_id,
        "first_time": _time(info.first_time),
        "last_time": _time(info.last_time),
        "consumers": info.consumers,
        "retention": info.retention,
        "storage": info.storage,
        "max_age": None if info.max_age is None else info.max_age.total_seconds(),
        "dead_letter_stream": info.name in dead,
        "may_read": viewer.may(Permission.CONSUME, info.name),
        "may_manage": viewer.may(Permission.MANAGE, info.name),
    }


def _sample(sample: ConsumerSample) -> dict[str, object]:
    return {
        "stream": sample.stream,
        "consumer": sample.consumer,
        "at": sample.at,
        "pending": sample.pending,
        "unacknowledged": sample.unsettled,
        "redelivered": sample.redelivered,
        "ack_floor": sample.ack_floor,
        "lag_events": sample.lag_events,
        "lag_seconds": sample.lag_seconds,
        "dead_letter_stream": sample.dead_letter_stream,
    }


def _event(event: StoredEvent, pool: DescriptorPool | None) -> dict[str, object]:
    return {
        "id": event.id,
        "subject": event.subject,
        "time": _time(event.timestamp),
        "stored": _time(event.stored),
        "type": event.data_type or None,
        "size": event.size,
        "idempotency_key": event.idempotency_key,
        "headers": dict(event.headers),
        "data": _data(event.to_json, event.body, event.data_type, pool),
    }


def _letter(
    letter: DeadLetter, *, full: bool, pool: DescriptorPool | None = None
) -> dict[str, object]:
    data_type = letter.headers.get("WS-Data-Type", "")
    shown: dict[str, object] = {
        "id": letter.id,
        "subject": letter.subject,
        "stream": letter.stream,
        "consumer": letter.consumer,
        "event_id": letter.event_id,
        "attempts": letter.attempts,
        "reason": letter.reason,
        "dead_since": _time(letter.dead_since),
        "published": _time(letter.timestamp),
        "type": data_type or None,
        "size": len(letter.body),
    }
    if full:
        shown["headers"] = dict(letter.headers)
        shown["data"] = _data(letter.to_json, letter.body, data_type, pool)
    return shown


class ConsoleApi:
    """The handlers of ``/console/api``.

    Args:
        client: the server's library client.
        sampler: the process' sampler of consumer lag.
        pool: more message types to decode data with (None: the default pool's only).
    """

    def __init__(
        self, client: windshift.Client, sampler: Sampler, pool: DescriptorPool | None = None
    ) -> None:
        self._client = client
        self._sampler = sampler
        self._pool = pool

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/session", self.session),
            web.get("/streams", self.streams),
            web.get("/streams/{stream}", self.stream),
            web.get("/streams/{stream}/events", self.events),
            web.get("/consumers", self.consumers),
            web.get("/dead-letters", self.dead_letter_streams),
            web.get("/dead-letters/{stream}", self.dead_letters),
            web.post("/dead-letters/{stream}/purge", self.purge),
            web.get("/dead-letters/{stream}/{id}", self.dead_letter),
            web.post("/dead-letters/{stream}/{id}/replay", self.replay),
            web.delete("/dead-letters/{stream}/{id}", self.delete),
            web.get("/stores", self.stores),
            web.get("/stores/{store}/keys", self.keys),
            web.get("/stores/{store}/entry", self.entry),
        ]

    # --- streams and consumers ------------------------------------------------------

    def _dead_letter_names(self) -> set[str]:
        """The streams some consumer moves its dead letters to, at the sampler's last round.

        (Not asked of JetStream on each call: the pages poll, and listing every
        stream's consumers would cost a request per stream each time.)
        """
        return {
            sample.dead_letter_stream
            for sample in self._sampler.latest.values()
            if sample.dead_letter_stream is not None
        }

    async def session(self, request: web.Request) -> web.Response:
        summary = _viewer(request).summary()
        summary["sample_interval"] = self._sampler.interval
        return _answer(summary)

    async def streams(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        infos = [
            info
            for info in await self._client.streams()
            if not internal_stream(info.name) and viewer.sees_stream(info.name)
        ]
        dead = self._dead_letter_names()
        return _answer({"streams": [_stream(info, viewer, dead) for info in infos]})

    async def stream(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        name = request.match_info["stream"]
        if not viewer.sees_stream(name):
            raise Refused(403, f"token {viewer.name!r} may not see stream {name!r}")
        info = await self._client.stream_info(name)
        consumers = await self._client.consumers(name)
        latest = self._sampler.latest
        shown = []
        for consumer in consumers:
            sample = latest.get((name, consumer.id))
            shown.append(
                {
                    "id": consumer.id,
                    "durable": consumer.durable,
                    "subjects": consumer.subjects,
                    "pending": consumer.pending_events,
                    "unacknowledged": consumer.unsettled_events,
                    "redelivered": consumer.redelivered_events,
                    "ack_floor": consumer.acknowledged_id,
                    "dead_letter_stream": consumer.dead_letter_stream,
                    "max_delivery_attempts": consumer.max_delivery_attempts,
                    "lag_seconds": None if sample is None else sample.lag_seconds,
                }
            )
        dead = {c.dead_letter_stream for c in consumers if c.dead_letter_stream}
        return _answer({"stream": _stream(info, viewer, dead), "consumers": shown})

    async def events(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        name = request.match_info["stream"]
        viewer.require(Permission.CONSUME, name, f"read the events of {name!r}")
        before = _integer(request, "before", 0, 0, 2**64 - 1)
        limit = _integer(request, "limit", 25, 1, MAX_PAGE)
        events = await self._client.read_events(name, before_id=before or None, limit=limit)
        return _answer({"stream": name, "events": [_event(event, self._pool) for event in events]})

    async def consumers(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        only = request.query.get("stream") or None
        if only is not None and not viewer.sees_stream(only):
            raise Refused(403, f"token {viewer.name!r} may not see stream {only!r}")
        shown = []
        for (stream, consumer), sample in sorted(self._sampler.latest.items()):
            if not viewer.sees_stream(stream) or (only is not None and stream != only):
                continue
            document = _sample(sample)
            document["history"] = [
                [kept.at, kept.lag_events, kept.lag_seconds]
                for kept in self._sampler.history(stream, consumer)
            ]
            shown.append(document)
        return _answer(
            {
                "interval": self._sampler.interval,
                "sampled_at": self._sampler.sampled_at or None,
                "consumers": shown,
            }
        )

    # --- dead letters ---------------------------------------------------------------

    async def dead_letter_streams(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        infos = await self._client.streams()
        dead = self._dead_letter_names()
        shown = [
            {
                "name": info.name,
                "letters": info.events,
                "bytes": info.bytes,
                "may_manage": viewer.may(Permission.MANAGE, info.name),
            }
            for info in infos
            if info.name in dead and viewer.may(Permission.CONSUME, info.name)
        ]
        return _answer({"dead_letter_streams": shown})

    async def dead_letters(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        name = request.match_info["stream"]
        viewer.require(Permission.CONSUME, name, f"read the dead letters of {name!r}")
        after = _integer(request, "after", 0, 0, 2**64 - 1)
        limit = _integer(request, "limit", 50, 1, MAX_PAGE)
        queue = self._client.dead_letters(name)
        letters = await queue.list(after_id=after, limit=limit, max_bytes=DEAD_LETTER_PAGE_BYTES)
        return _answer(
            {
                "stream": name,
                "may_manage": viewer.may(Permission.MANAGE, name),
                "letters": [_letter(letter, full=False) for letter in letters],
            }
        )

    async def dead_letter(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        name = request.match_info["stream"]
        viewer.require(Permission.CONSUME, name, f"read the dead letters of {name!r}")
        letter = await self._client.dead_letters(name).get(_id(request))
        return _answer(
            {
                "stream": name,
                "may_manage": viewer.may(Permission.MANAGE, name),
                "letter": _letter(letter, full=True, pool=self._pool),
            }
        )

    async def replay(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        name = request.match_info["stream"]
        dead_letter_id = _id(request)
        viewer.require(Permission.MANAGE, name, f"replay the dead letters of {name!r}")

        def check(letter: DeadLetter) -> None:
            # Read, not yet published: the token must also reach the letter's subject.
            viewer.require(
                Permission.PUBLISH, letter.subject, f"publish the letter on {letter.subject!r}"
            )

        published = await self._client.dead_letters(name).replay(dead_letter_id, check=check)
        logger.info(
            "console: token %r replayed dead letter %d of %s as event %d of %s",
            viewer.name,
            dead_letter_id,
            name,
            published.id,
            published.stream,
        )
        return _answer({"replayed": dead_letter_id, "stream": published.stream, "id": published.id})

    async def delete(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        name = request.match_info["stream"]
        dead_letter_id = _id(request)
        viewer.require(Permission.MANAGE, name, f"delete the dead letters of {name!r}")
        queue = self._client.dead_letters(name)
        await queue.get(dead_letter_id)  # only a dead letter: not any message of the stream
        await queue.delete(dead_letter_id)
        logger.info(
            "console: token %r deleted dead letter %d of %s", viewer.name, dead_letter_id, name
        )
        return _answer({"deleted": dead_letter_id})

    async def purge(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        name = request.match_info["stream"]
        viewer.require(Permission.MANAGE, name, f"purge the dead letters of {name!r}")
        if name not in self._dead_letter_names():
            raise Refused(
                400,
                f"{name!r} is no consumer's dead-letter stream (at the last sample): not purged",
            )
        purged = await self._client.dead_letters(name).purge()
        logger.info("console: token %r purged %d dead letters of %s", viewer.name, purged, name)
        return _answer({"purged": purged})

    # --- state stores ---------------------------------------------------------------

    async def stores(self, request: web.Request) -> web.Response:
        viewer = _viewer(request)
        names = [
            name for name in await self._client.stores() if viewer.may(Permission.READ_STATE, name)
        ]
        return _answer({"stores": names})

    def _store(self, request: web.Request) -> windshift.StateStore:
        viewer = _viewer(request)
        name = request.match_info["store"]
        viewer.require(Permission.READ_STATE, name, f"read state store {name!r}")
        return self._client.store(name)

    async def keys(self, request: web.Request) -> web.Response:
        store = self._store(request)
        pattern = request.query.get("pattern") or ">"
        keys = await store.keys(pattern)
        return _answer(
            {
                "store": store.name,
                "pattern": pattern,
                "keys": keys[-MAX_KEYS:][::-1],  # the last written first
                "truncated": len(keys) > MAX_KEYS,
            }
        )

    async def entry(self, request: web.Request) -> web.Response:
        store = self._store(request)
        key = request.query.get("key")
        if not key:
            raise Refused(400, "the query needs key=<a key of the store>")
        history = await store.history(key)
        changes = [
            {
                "revision": change.revision,
                "operation": change.operation,
                "updated": _time(change.updated),
                "type": None if change.value is None else change.value.type_url,
                "json": self._state_json(change),
            }
            for change in reversed(history)
        ]
        return _answer({"store": store.name, "key": key, "history": changes})

    def _state_json(self, change: windshift.StateChange) -> object | None:
        document = None if self._pool is None else change.to_json(self._pool)
        return change.to_json() if document is None else document


def status_of(exc: WindshiftError) -> int:
    """The HTTP status of a library error."""
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UnavailableError):
        return 503
    return 409


__all__ = ["MAX_PAGE", "VIEWER", "ConsoleApi", "status_of"]
