"""connect() and Client: the NATS connection and everything done through it.

:class:`Client` is the one object users hold. It owns the connection core
(:class:`~windshift._connection.Connection`) and delegates to small services,
one per concern: :class:`~windshift._publishing.Publisher`,
:class:`~windshift._streams.Streams`, :class:`~windshift._consumers.Consumers`,
:class:`~windshift._state.Stores`, plus subscriptions and dead-letter queues
made on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import logging
import os
import ssl
from collections.abc import Generator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import nats
import nats.errors
from nats.aio.client import Client as NATS

from windshift._connection import ClientSettings, Connection
from windshift._consumers import ConsumerInfo, ConsumerLag, Consumers
from windshift._deadletters import DeadLetterQueue
from windshift._names import quote_value
from windshift._nats_client import NatsClient
from windshift._options import (
    ConsumerOptionArgs,
    ConsumerOptions,
    Limits,
    StreamOptionArgs,
    StreamOptions,
)
from windshift._payloads import Payload
from windshift._pointers import StreamPointer
from windshift._publishing import OutgoingEvent, PublishedEvent, Publisher
from windshift._reading import EventTail, Reader, StoredEvent
from windshift._state import StateStore, Stores
from windshift._streams import StreamInfo, Streams
from windshift._subscriptions import DEFAULT_MAX_PENDING_EVENTS, Subscription
from windshift.errors import UnavailableError, ValidationError, WindshiftError

logger = logging.getLogger("windshift.client")

_INITIAL_ATTEMPTS = 3

_O = TypeVar("_O", StreamOptions, ConsumerOptions)


class Client:
    """A connection to NATS JetStream and the Windshift API on top of it.

    Get one from :func:`connect`. Close it with :meth:`close`, or use it
    with ``async with``.

    Example:
        >>> async with windshift.connect("nats://127.0.0.1:4222") as client:
        ...     await client.ensure_stream("orders", subjects=["orders.>"])
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._publisher = Publisher(connection)
        self._streams = Streams(connection)
        self._consumers = Consumers(connection)
        self._stores = Stores(connection, self._publisher)
        self._reader = Reader(connection, self._streams)

    @property
    def settings(self) -> ClientSettings:
        """The settings this client was connected with."""
        return self._connection.settings

    @property
    def is_connected(self) -> bool:
        """Whether the NATS connection is up right now."""
        return bool(self._connection.nc.is_connected)

    @property
    def nats(self) -> NATS:
        """The underlying nats-py connection (for what windshift does not cover)."""
        return self._connection.nc

    # Streams

    async def ensure_stream(
        self,
        name: str,
        options: StreamOptions | None = None,
        **changes: Unpack[StreamOptionArgs],
    ) -> StreamInfo:
        """Create a stream, or update it to match these options.

        Example:
            >>> await client.ensure_stream("orders", subjects=["orders.>"],
            ...                            max_age=timedelta(days=30))
            >>> await client.ensure_stream("orders", StreamOptions(subjects=["orders.>"]))

        Every call states the whole configuration: an option left out is
        reset to its default (a retention limit that was set is removed).
        Safe to call from many tasks or processes at once.

        Args:
            name: the stream's name (``A-Z a-z 0-9 _ -``).
            options: the options as one :class:`StreamOptions`; the defaults
                when not given.
            **changes: options given one by one (the fields of
                :class:`StreamOptions`: ``subjects``, ``mirror``, ``sources``,
                ``max_age``, ``max_events``, ``max_events_per_subject``,
                ``max_bytes``, ``discard``, ``discard_new_per_subject``,
                ``storage``, ``replicas``, ``deduplication_window``,
                ``max_event_size``); they replace those of ``options``.

        Raises:
            ValidationError: a bad name, subject or option combination, or
                more subjects, sources or filters than the client's limits
                allow (see :class:`~windshift.Limits`).
            ConfigurationConflictError: JetStream refuses the change (storage
                type, a mirror's source, a subject already bound to another stream).
            UnavailableError: NATS did not answer.
        """
        return await self._streams.ensure(name, _options(StreamOptions, options, changes))

    async def stream_info(self, name: str) -> StreamInfo:
        """Describe a stream.

        Raises:
            StreamNotFoundError: no stream has this name.
        """
        return await self._streams.info(name)

    async def delete_stream(self, name: str) -> None:
        """Delete a stream with all its events and consumers.

        Raises:
            StreamNotFoundError: no stream has this name.
        """
        await self._streams.delete(name)

    async def streams(self) -> list[StreamInfo]:
        """Every stream of the account, sorted by name.

        State stores are streams too (``KV_<store>``); :meth:`stores` names them.

        Raises:
            UnavailableError: NATS did not answer.
        """
        return await self._streams.list()

    # Consumers

    async def ensure_consumer(
        self,
        stream: str,
        name: str | None = None,
        options: ConsumerOptions | None = None,
        **changes: Unpack[ConsumerOptionArgs],
    ) -> ConsumerInfo:
        """Create a consumer of ``stream``, or update a durable one.

        Example:
            >>> consumer = await client.ensure_consumer(
            ...     "orders", "order-processor", subjects=["orders.created"],
            ...     start=StreamPointer.start())
            >>> consumer.id
            'order-processor'

        Without a name the consumer is ephemeral: the server names it, and
        removes it after an hour nobody reads it (``inactive_threshold``
        changes that). With a name it is durable and never expires unless
        ``inactive_threshold`` is given. Updating a durable consumer (its
        subjects, timeout, attempts) keeps its position; ``start`` only
        matters when it is created.

        Args:
            stream: the stream to read.
            name: the durable consumer's name; None for an ephemeral one.
            options: the options as one :class:`ConsumerOptions`.
            **changes: options given one by one (the fields of
                :class:`ConsumerOptions`: ``subjects``, ``start``,
                ``processing_timeout`` (default 30 s), ``max_delivery_attempts``,
                ``inactive_threshold``, ``dead_letter_stream``); they replace
                those of ``options``.

        Raises:
            ValidationError: a bad name, subject or option, or more subjects
                than the client's limits allow (see :class:`~windshift.Limits`).
            StreamNotFoundError: the stream does not exist.
            UnavailableError: NATS did not answer.
        """
        return await self._consumers.ensure(
            stream, name, _options(ConsumerOptions, options, changes)
        )

    async def consumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        """Describe a consumer.

        Raises:
            StreamNotFoundError: the stream does not exist.
            ConsumerNotFoundError: the consumer does not exist.
        """
        return await self._consumers.info(stream, consumer)

    async def delete_consumer(self, stream: str, consumer: str) -> None:
        """Delete a consumer (its position is lost).

        Raises:
            StreamNotFoundError: the stream does not exist.
            ConsumerNotFoundError: the consumer does not exist.
        """
        await self._consumers.delete(stream, consumer)

    async def consumers(self, stream: str) -> list[ConsumerInfo]:
        """Every consumer of ``stream``, durable and ephemeral, sorted by id.

        Raises:
            ValidationError: a bad stream name.
            StreamNotFoundError: the stream does not exist.
        """
        return await self._consumers.list(stream)

    async def consumer_lag(self, stream: str, consumer: str | ConsumerInfo) -> ConsumerLag:
        """How far a consumer is behind: events not processed yet, and how long the oldest waits.

        Example:
            >>> lag = await client.consumer_lag("orders", "order-processor")
            >>> f"{lag.events} events, {lag.seconds:.1f}s behind"
            '120 events, 4.2s behind'

        The age is that of the oldest event the consumer reads and has not
        settled (the first one after its ack floor): how long it has been in
        the stream. One request more than :meth:`consumer_info`, none when
        the consumer is up to date.

        Args:
            stream: the consumer's stream.
            consumer: its id, or a :class:`ConsumerInfo` just read (saves a request).

        Raises:
            StreamNotFoundError, ConsumerNotFoundError: no such stream or consumer.
        """
        if isinstance(consumer, ConsumerInfo):
            if consumer.stream != stream:
                raise ValidationError(
                    f"consumer {consumer.id!r} reads stream {consumer.stream!r}, not {stream!r}"
                )
            info = consumer
        else:
            info = await self._consumers.info(stream, consumer)
        return await self._consumers.lag(info)

    # Reading streams without a consumer

    async def get_event(self, stream: str, event_id: int) -> StoredEvent:
        """Read one event of a stream by its id, settling nothing.

        Example:
            >>> event = await client.get_event("orders", 17)
            >>> event.subject, event.to_json()
            ('orders.created', {'id': '17'})

        Raises:
            ValidationError: a bad stream name or id.
            StreamNotFoundError: the stream does not exist.
            NotFoundError: the stream holds no event with this id.
        """
        return await self._reader.get(stream, event_id)

    async def read_events(
        self, stream: str, *, before_id: int | None = None, limit: int = 50
    ) -> list[StoredEvent]:
        """A page of a stream's events, newest first, settling nothing.

        Example:
            >>> page = await client.read_events("orders", limit=20)
            >>> older = await client.read_events("orders", before_id=page[-1].id, limit=20)

        Args:
            stream: the stream.
            before_id: only events with a smaller id (None: from the newest).
            limit: at most this many events (1 to 1000).

        A page looks at ``limit`` + 1000 ids at most: across a larger hole
        (events deleted one by one) it comes back short; ask again with the
        last id it looked at.

        Raises:
            ValidationError: a bad stream name, ``before_id`` or ``limit``.
            StreamNotFoundError: the stream does not exist.
        """
        return await self._reader.newest(stream, before_id=before_id, limit=limit)

    def tail(
        self,
        stream: str,
        *,
        subjects: Sequence[str] = (),
        start: StreamPointer | None = None,
        follow: bool = True,
    ) -> EventTail:
        """Read a stream's events in order as they come, acknowledging nothing.

        Example:
            >>> async with client.tail("orders", start=StreamPointer.start(), follow=False) as tail:
            ...     async for event in tail:
            ...         print(event.id, event.subject, event.to_json())

        The tail reads through an ordered consumer of its own (ack policy
        none, in memory, removed when the tail ends), so it never moves or
        settles anything for other consumers; it recovers from restarts of
        the nats-server without skipping or repeating events.

        Args:
            stream: the stream.
            subjects: only these subjects (filters with ``*`` and ``>``; empty: all).
            start: where to begin (default :meth:`StreamPointer.end`: new events only).
            follow: keep waiting for new events; otherwise end once every
                event that was there when the tail began was read.

        Raises:
            ValidationError: a bad stream name, subject or pointer.
            StreamNotFoundError: (on entering) the stream does not exist.
        """
        return self._reader.tail(
            stream, subjects=subjects, start=start or StreamPointer.end(), follow=follow
        )

    # Publishing and receiving

    async def publish(
        self,
        subject: str,
        message: Payload,
        *,
        timestamp: datetime | int | None = None,
        idempotency_key: str | None = None,
        expected_last_id: int | None = None,
        expected_last_stream_id: int | None = None,
    ) -> PublishedEvent:
        """Publish an event and wait until JetStream has stored it.

        Example:
            >>> published = await client.publish(
            ...     "orders.created", OrderCreated(id="123"), idempotency_key="order-123")
            >>> published.id
            17

        Many concurrent calls share one pipeline: up to
        ``publish_max_pending`` (see :func:`~windshift.connect`) publishes
        await their acknowledgement at once.

        Args:
            subject: the event's subject (no wildcards); a stream must collect it.
            message: a protobuf message, or a ``google.protobuf.Any`` holding
                one (the default, and the format Go services read); or a
                pydantic model, published as JSON (``windshift[pydantic]``).
            timestamp: the event's publication time: an aware datetime, or
                nanoseconds since the Unix epoch (an int, every digit kept);
                now by default.
            idempotency_key: publishing the same key again within the stream's
                deduplication window stores nothing and returns the first id.
            expected_last_id: refuse unless the last event on this *subject*
                has this id (0: no event on the subject yet).
            expected_last_stream_id: refuse unless the last event in the whole
                *stream* has this id (0: the stream is empty).

        Raises:
            ValidationError: bad subject, data, key or timestamp; event too large.
            NotFoundError: no stream collects this subject.
            ConflictError: an expected last id did not match.
            UnavailableError: NATS did not acknowledge in time.
        """
        return await self._publisher.publish(
            subject,
            message,
            timestamp=timestamp,
            idempotency_key=idempotency_key,
            expected_last_id=expected_last_id,
            expected_last_stream_id=expected_last_stream_id,
        )

    async def publish_many(
        self, events: Sequence[OutgoingEvent]
    ) -> list[PublishedEvent | WindshiftError]:
        """Publish many events pipelined, and return one result per event, in order.

        Example:
            >>> results = await client.publish_many(
            ...     [OutgoingEvent("orders.created", OrderCreated(id=str(n))) for n in range(100)])
            >>> [r.id for r in results if isinstance(r, PublishedEvent)]

        The fast way to publish a batch: every event is sent as soon as a
        slot of the publish pipeline is free (``publish_max_pending`` of
        :func:`~windshift.connect`), with no task or coroutine per event, and
        the acknowledgements are collected in order. Each event keeps its own
        idempotency key and expected ids.

        Returns:
            Per event, in order: its :class:`PublishedEvent`, or the
            WindshiftError that refused it (``ConflictError``,
            ``NotFoundError``, ``UnavailableError``, ...). One failure does
            not stop the others.

        Raises:
            ValidationError: an event fails validation (its index is named);
                raised before anything is published.
        """
        return await self._publisher.publish_many(events)

    def subscribe(
        self,
        stream: str,
        consumer: str,
        *,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        max_pending_bytes: int | None = None,
        auto_ping: bool = True,
    ) -> Subscription:
        """Receive the events of a consumer.

        Example:
            >>> async with client.subscribe("orders", consumer.id) as events:
            ...     async for event in events:
            ...         await event.ack()

        Args:
            stream: the consumer's stream.
            consumer: the consumer's id (see :meth:`ensure_consumer`).
            max_pending_events: at most this many events are delivered to this
                subscription and unsettled at any time (default 50).
            max_pending_bytes: at most this many bytes of events (subject,
                headers and data, as JetStream counts them) are delivered to
                this subscription and unsettled at any time; None (the
                default): no bound in bytes. An event larger than the bound
                is still delivered, alone: it waits until nothing else is held.
            auto_ping: ping held events every third of the processing timeout
                so they are not redelivered while being worked on. Without it,
                an event the holder does not ping within the processing
                timeout is given up (NATS delivers it again; settling the old
                delivery raises EventSettledError).

        Raises:
            ValidationError: bad names, ``max_pending_events`` or ``max_pending_bytes``.
            StreamNotFoundError, ConsumerNotFoundError: (on entering) the
                stream or consumer does not exist.
        """
        return Subscription(
            self._connection,
            self._publisher,
            stream,
            consumer,
            max_pending_events=max_pending_events,
            max_pending_bytes=max_pending_bytes,
            auto_ping=auto_ping,
        )

    # State stores and dead letters

    async def ensure_store(self, name: str, *, history: int = 1) -> StateStore:
        """Create the state store ``name`` if it does not exist, and return it.

        Safe to call from many tasks or processes at once.

        Args:
            name: the store's name (``A-Z a-z 0-9 _ -``).
            history: how many values of each key the store keeps (1 to 64;
                :meth:`StateStore.history` reads them). An existing store is
                changed to keep this many.

        Raises:
            ValidationError: a bad name or ``history``.
            UnavailableError: NATS did not answer.
        """
        return await self._stores.ensure_store(name, history=history)

    async def stores(self) -> list[str]:
        """The names of every state store, sorted.

        Raises:
            UnavailableError: NATS did not answer.
        """
        return await self._stores.list()

    def store(self, name: str) -> StateStore:
        """A handle on the existing state store ``name`` (no request is made)."""
        return self._stores.store(name)

    def dead_letters(self, stream: str) -> DeadLetterQueue:
        """The dead letters kept in ``stream`` (see :class:`~windshift.DeadLetterQueue`)."""
        return DeadLetterQueue(self._publisher, self._connection.api, stream)

    # Closing

    async def close(self) -> None:
        """Flush what is still buffered and close the connection."""
        nc = self._connection.nc
        if nc.is_closed:
            return
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
            await nc.drain()
        if not nc.is_closed:
            # a connection that broke (a server going away) closes all the same
            with contextlib.suppress(OSError):
                await nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _options(kind: type[_O], options: _O | None, changes: Mapping[str, Any]) -> _O:
    """``options`` (or the defaults) with ``changes`` applied, of the dataclass ``kind``."""
    if options is None:
        base = kind()
    elif isinstance(options, kind):
        base = options
    else:
        raise ValidationError(f"options must be a {kind.__name__}, got {quote_value(options)}")
    try:
        return dataclasses.replace(base, **changes)
    except TypeError as exc:  # an unknown keyword
        raise ValidationError(f"{exc}; the options are the fields of {kind.__name__}") from None


class _Connecting:
    """What :func:`connect` returns: await it, or use it with ``async with``."""

    def __init__(self, servers: list[str], settings: ClientSettings, options: dict[str, Any]):
        self._servers = servers
        self._settings = settings
        self._options = options
        self._client: Client | None = None

    async def _open(self) -> Client:
        nc = NatsClient()
        client_holder: list[Client] = []

        async def reconnected() -> None:
            if client_holder:
                await client_holder[0]._connection.on_reconnect()

        async def disconnected() -> None:
            if not nc.is_closed and not nc.is_draining:
                logger.warning("disconnected from NATS; reconnecting")

        errors: list[Exception] = []
        hopeless = asyncio.Event()

        async def error(exc: Exception) -> None:
            errors.append(exc)
            logger.debug("NATS connection error: %s", exc)
            if isinstance(exc, ssl.SSLCertVerificationError):
                # A server certificate that does not verify will not on a retry,
                # and nats-py then hangs closing the half-upgraded connection.
                hopeless.set()

        connecting = asyncio.ensure_future(
            nc.connect(
                servers=self._servers,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=error,
                **self._options,
                # A few tries for the first connection, so that a wrong URL
                # fails; once connected, reconnect forever.
                max_reconnect_attempts=_INITIAL_ATTEMPTS,
            )
        )
        given_up = asyncio.ensure_future(hopeless.wait())
        try:
            await asyncio.wait(
                (connecting, given_up),
                timeout=self._deadline(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            given_up.cancel()
            if not connecting.done():
                connecting.cancel()
                await asyncio.wait((connecting,))
        failure: BaseException | None = (
            TimeoutError("no connection in time")
            if connecting.cancelled()
            else connecting.exception()
        )
        if isinstance(failure, TimeoutError | nats.errors.Error | OSError):
            with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                await asyncio.wait_for(nc.close(), self._options["connect_timeout"])
            # "no servers available" hides why: say what the last attempt met
            # (an authorization violation, a TLS failure, a refused connection).
            reason: BaseException = failure
            if errors and (
                connecting.cancelled() or isinstance(failure, nats.errors.NoServersError)
            ):
                reason = _telling(errors)
            raise UnavailableError(
                f"cannot connect to NATS at {', '.join(map(_without_secrets, self._servers))}: "
                f"{str(reason) or type(reason).__name__}"
            ) from None
        if failure is not None:
            raise failure
        nc.options["max_reconnect_attempts"] = -1
        client = Client(Connection(nc, self._settings))
        client_holder.append(client)
        return client

    def _deadline(self) -> float:
        """Seconds the first connection may take in all (nats-py can hang on its own)."""
        attempt = 3 * self._options["connect_timeout"] + self._options["reconnect_time_wait"]
        return float(attempt * (_INITIAL_ATTEMPTS + 1) * len(self._servers))

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()


def _telling(errors: list[Exception]) -> Exception:
    """The error that says most about a failed connection.

    The server's own word (an authorization violation) or a TLS failure,
    rather than the reset or broken pipe that later attempts run into.
    """
    for error in reversed(errors):
        if isinstance(error, ssl.SSLError | nats.errors.Error):
            return error
    return errors[-1]


def _without_secrets(url: str) -> str:
    """``url`` with the user and password (or token) it may carry replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and userinfo else url


def _credentials_file(what: str, path: str) -> None:
    """Check a file of NKey credentials before nats-py reads it (on every connect)."""
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ValidationError(f"{what} must name an existing file, got {quote_value(path)}")
    if importlib.util.find_spec("nkeys") is None:
        raise ValidationError(f"{what} needs the nkeys package: pip install 'windshift[nkeys]'")


def connect(
    servers: str | Sequence[str] = "nats://127.0.0.1:4222",
    *,
    name: str | None = None,
    request_timeout: timedelta = timedelta(seconds=5),
    publish_max_pending: int = 256,
    connect_timeout: timedelta = timedelta(seconds=2),
    reconnect_wait: timedelta = timedelta(milliseconds=250),
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    credentials_file: str | None = None,
    nkey_seed_file: str | None = None,
    tls: ssl.SSLContext | None = None,
    limits: Limits | None = None,
) -> _Connecting:
    """Connect to NATS JetStream.

    Example:
        >>> client = await windshift.connect("nats://127.0.0.1:4222")
        >>> async with windshift.connect("nats://127.0.0.1:4222") as client:
        ...     ...

    The connection reconnects by itself, forever, trying every
    ``reconnect_wait``; subscriptions resume as soon as it is back.

    Args:
        servers: one NATS URL or several (a cluster).
        name: the connection's name, as NATS monitoring shows it.
        request_timeout: how long to wait for an answer from JetStream.
        publish_max_pending: how many publishes may await their
            acknowledgement at once (the publish pipeline's depth).
        connect_timeout: how long one connection attempt may take.
        reconnect_wait: pause between reconnection attempts to one server.
        user: user name, with ``password``.
        password: password, with ``user``.
        token: authentication token.
        credentials_file: a NATS ``.creds`` file (JWT and NKey seed).
        nkey_seed_file: a file holding an NKey seed. This and
            ``credentials_file`` need the ``nkeys`` package
            (``pip install 'windshift[nkeys]'``).
        tls: a TLS context: the CA to verify the servers with and, for
            servers that verify clients, a client certificate. TLS is used
            when a server requires it or the URL says ``tls://``.
        limits: how many subjects, sources and filters the streams and
            consumers this client ensures may have (see
            :class:`~windshift.Limits`); ``Limits()``'s defaults when not given.

    Give at most one of ``user``/``password``, ``token``,
    ``credentials_file`` and ``nkey_seed_file``. A server that refuses them
    makes ``connect`` raise UnavailableError naming the reason
    (``Authorization Violation``); secrets never appear in messages or logs.

    Raises:
        ValidationError: bad options.
        UnavailableError: no server could be reached.
    """
    urls = [servers] if isinstance(servers, str) else list(servers)
    if not urls or not all(isinstance(url, str) and url for url in urls):
        raise ValidationError(f"servers must be one or more NATS URLs, got {quote_value(servers)}")
    if (
        isinstance(publish_max_pending, bool)
        or not isinstance(publish_max_pending, int)
        or (publish_max_pending < 1)
    ):
        raise ValidationError(
            f"publish_max_pending must be 1 or more, got {quote_value(publish_max_pending)}"
        )
    for what, value in (
        ("request_timeout", request_timeout),
        ("connect_timeout", connect_timeout),
        ("reconnect_wait", reconnect_wait),
    ):
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise ValidationError(f"{what} must be a positive timedelta, got {quote_value(value)}")
    if (user is None) != (password is None):
        raise ValidationError("user and password go together")
    ways = [
        what
        for what, value in (
            ("user", user),
            ("token", token),
            ("credentials_file", credentials_file),
            ("nkey_seed_file", nkey_seed_file),
        )
        if value is not None
    ]
    if len(ways) > 1:
        raise ValidationError(f"{ways[0]} and {ways[1]} are two ways of authenticating; give one")
    if credentials_file is not None:
        _credentials_file("credentials_file", credentials_file)
    if nkey_seed_file is not None:
        _credentials_file("nkey_seed_file", nkey_seed_file)
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise ValidationError(f"tls must be an ssl.SSLContext, got {quote_value(tls)}")
    if limits is not None and not isinstance(limits, Limits):
        raise ValidationError(f"limits must be a windshift.Limits, got {quote_value(limits)}")
    options: dict[str, Any] = {
        "name": name,
        "connect_timeout": connect_timeout.total_seconds(),
        "reconnect_time_wait": reconnect_wait.total_seconds(),
        "allow_reconnect": True,
    }
    if user is not None:
        options.update(user=user, password=password)
    if token is not None:
        options["token"] = token
    if credentials_file is not None:
        options["user_credentials"] = credentials_file
    if nkey_seed_file is not None:
        options["nkeys_seed"] = nkey_seed_file
    if tls is not None:
        options["tls"] = tls
    settings = ClientSettings(
        request_timeout=request_timeout,
        publish_max_pending=publish_max_pending,
        limits=Limits() if limits is None else limits,
    )
    return _Connecting(urls, settings, options)


__all__ = ["Client", "connect"]
