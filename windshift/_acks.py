"""The way out for publishes and the way back for JetStream's acknowledgements.

Every publish, and every settlement of an event that waits for NATS to
confirm it, carries a reply subject in one inbox of the client; JetStream
answers there, and a future per request receives the answer. That is cheaper
than ``nc.request`` each time (no ``wait_for`` task machinery, no random
inbox token): a counter token, one dict entry, and one timer for all of them,
set for the earliest deadline. Requests mostly share the client's
``request_timeout``, so their deadlines come in order and queue at the cost of
an append; one with a shorter timeout than those before it goes to a heap,
and times out at its own deadline all the same.

The publish itself is written straight into nats-py's outgoing buffer as one
``HPUB`` command whose header block is encoded in one go. nats-py's
``publish`` checks and encodes header by header in Python, which costs about
as much as everything else windshift does per event (measured with
``benchmarks/bench.py``, see docs/performance.md). The bytes are the same.
This uses nats-py internals (its buffer and flusher, the same ones its
``publish`` uses); :func:`direct_send_supported` checks once per client that
they are there, and without them every publish goes through ``nc.publish``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from heapq import heapify, heappop, heappush

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

# What the direct send uses of a nats-py client (nats-py 2.x).
_INTERNALS = (
    "_send_command",
    "_flush_pending",
    "_flush_queue",
    "_pending_data_size",
    "_max_pending_size",
    "stats",
)


def direct_send_supported(nc: NATS) -> bool:
    """Whether ``nc`` has the nats-py internals the direct send relies on."""
    return all(hasattr(nc, name) for name in _INTERNALS) and isinstance(
        getattr(nc, "stats", None), dict
    )


def header_block(headers: Mapping[str, str]) -> bytes:
    """The NATS header block of ``headers``, byte for byte as nats-py writes it.

    Values are stripped, and line breaks in them become spaces (they would
    end the header). Names are windshift's own and taken as they are.
    """
    lines = "".join([f"{name}: {value.strip()}\r\n" for name, value in headers.items()])
    if lines.count("\r") != len(headers) or lines.count("\n") != len(headers):
        lines = "".join(
            f"{name}: {value.strip().replace(chr(13), ' ').replace(chr(10), ' ')}\r\n"
            for name, value in headers.items()
        )
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def _check_size(nc: NATS, size: int) -> None:
    # nats-py checks only the body against the server's max_payload, but the
    # server counts the headers too, and answers a message over the limit by
    # closing the whole connection (every subscription of the client with
    # it). Such a message never leaves.
    if nc.max_payload and size > nc.max_payload:
        raise nats.errors.MaxPayloadError


def _direct_subject(subject: str) -> bool:
    """Whether the direct send may write ``subject`` as it is.

    A subject with whitespace or unprintable characters takes nats-py's
    publish instead, which refuses it with its own error.
    """
    return " " not in subject and subject.isprintable()


async def _write(nc: NATS, command: bytes) -> None:
    """Queue ``command`` in nats-py's outgoing buffer and have it flushed, as its publish does."""
    await nc._send_command(command)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


# Below this many entries the deadlines are never tidied: answered entries
# cost only their memory, and tidying that often would cost more.
_TIDY_AT = 256


class AckInbox:
    """Publishes with a reply subject in one inbox, and hands each its acknowledgement."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._direct = direct_send_supported(nc)
        self._prefix = ""
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count(1)
        self._ready: asyncio.Future[None] | None = None
        # The deadlines of the requests waiting (see _expire_at): those that
        # came in order, and a heap of the others, whose entries carry the
        # request's number to break ties (futures do not compare).
        self._in_order: deque[tuple[float, asyncio.Future[Msg]]] = deque()
        self._out_of_order: list[tuple[float, int, asyncio.Future[Msg]]] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf  # when the sweeper runs; never while there is none
        self._tidy_at = _TIDY_AT  # the length at which answered entries are dropped

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        prefix = self._nc.new_inbox() + "."
        try:
            await self._nc.subscribe(prefix + "*", cb=self._on_ack)
        except BaseException as exc:
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: the caller sees it raised
            self._ready = None
            raise
        self._prefix = prefix
        self._ready.set_result(None)

    def _expire_at(
        self,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        number: int,
        waiter: asyncio.Future[Msg],
    ) -> None:
        # One timer for all requests instead of one each, set for the
        # earliest deadline. Requests mostly share the client's
        # request_timeout, so their deadlines come in order and a FIFO holds
        # them sorted at the cost of an append; a deadline earlier than the
        # last one queued goes to a heap instead, so that it is not swept
        # behind the longer ones. Answered requests leave from the front (no
        # search on the hot path); those behind a live request with a long
        # timeout would pile up, so both are tidied when they have grown to
        # twice what they held after the last tidying.
        in_order = self._in_order
        while in_order and in_order[0][1].done():
            in_order.popleft()  # answered: nothing left to expire
        if not in_order or deadline >= in_order[-1][0]:
            in_order.append((deadline, waiter))
            if len(in_order) >= self._tidy_at:
                self._tidy()
        else:
            out_of_order = self._out_of_order
            while out_of_order and out_of_order[0][2].done():
                heappop(out_of_order)
            heappush(out_of_order, (deadline, number, waiter))
            if len(out_of_order) >= self._tidy_at:
                self._tidy()
        if deadline < self._sweep_at:
            if self._sweeper is not None:
                self._sweeper.cancel()
            self._sweep_at = deadline
            self._sweeper = loop.call_at(deadline, self._sweep, loop)

    def _tidy(self) -> None:
        in_order = deque(entry for entry in self._in_order if not entry[1].done())
        out_of_order = [entry for entry in self._out_of_order if not entry[2].done()]
        heapify(out_of_order)
        self._in_order, self._out_of_order = in_order, out_of_order
        self._tidy_at = max(_TIDY_AT, 2 * len(in_order), 2 * len(out_of_order))

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # Expire in deadline order across both queues, so that after a stall
        # of the loop the requests still fail (and their callers resume) in
        # the order of their deadlines.
        now = loop.time()
        in_order, out_of_order = self._in_order, self._out_of_order
        while True:
            if in_order and (not out_of_order or in_order[0][0] <= out_of_order[0][0]):
                deadline, waiter = in_order[0]
                if deadline > now and not waiter.done():
                    break
                in_order.popleft()
            elif out_of_order:
                deadline, _, waiter = out_of_order[0]
                if deadline > now and not waiter.done():
                    break
                heappop(out_of_order)
            else:
                break
            if not waiter.done():
                waiter.set_exception(TimeoutError())
        self._sweeper, self._sweep_at = None, math.inf
        if in_order or out_of_order:
            self._sweep_at = min(
                in_order[0][0] if in_order else math.inf,
                out_of_order[0][0] if out_of_order else math.inf,
            )
            self._sweeper = loop.call_at(self._sweep_at, self._sweep, loop)

    async def _on_ack(self, msg: Msg) -> None:
        waiter = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)

    async def _send_direct(
        self, subject: str, reply: str, body: bytes, headers: Mapping[str, str] | None
    ) -> None:
        # The checks and bookkeeping of nats-py's publish, in its order; the
        # subject has no whitespace (a subject with some takes nats-py's
        # publish, which refuses it) and the reply is this inbox's own.
        nc = self._nc
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        size = len(body)
        if not nc.is_connected and (
            nc._max_pending_size <= 0 or size + nc._pending_data_size > nc._max_pending_size
        ):
            raise nats.errors.OutboundBufferLimitError
        if headers is None:
            _check_size(nc, size)
            command = b"%b%b\r\n" % (f"PUB {subject} {reply} {size}\r\n".encode(), body)
        else:
            block = header_block(headers)
            _check_size(nc, len(block) + size)
            command = b"%b%b%b\r\n" % (
                f"HPUB {subject} {reply} {len(block)} {len(block) + size}\r\n".encode(),
                block,
                body,
            )
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += size
        await _write(nc, command)

    async def send(
        self, subject: str, body: bytes, headers: dict[str, str] | None, timeout: float
    ) -> tuple[str, asyncio.Future[Msg]]:
        """Publish with a reply subject of this inbox; the future receives the answer.

        The future fails with TimeoutError after ``timeout`` seconds without
        one. Whoever awaits it calls :meth:`forget` with the token afterwards.

        Raises:
            nats.errors.MaxPayloadError: body and headers are larger than the
                NATS server accepts.
            nats.errors.Error: the other refusals of ``nc.publish`` (such as
                BadSubjectError); nothing was sent.
        """
        if not self._prefix:
            if self._ready is None:
                await self._start()
            else:
                await asyncio.shield(self._ready)
        loop = asyncio.get_running_loop()
        number = next(self._tokens)
        token = str(number)
        waiter: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = waiter
        self._expire_at(loop, loop.time() + timeout, number, waiter)
        try:
            if self._direct and _direct_subject(subject):
                await self._send_direct(subject, self._prefix + token, body, headers)
            else:
                block_size = 0 if headers is None else len(header_block(headers))
                _check_size(self._nc, block_size + len(body))
                await self._nc.publish(subject, body, reply=self._prefix + token, headers=headers)
        except BaseException:
            self._waiting.pop(token, None)
            waiter.cancel()
            raise
        return token, waiter

    def forget(self, token: str) -> None:
        """Drop the request of ``token`` (answered, timed out or given up)."""
        self._waiting.pop(token, None)

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str] | None, timeout: float
    ) -> Msg:
        """Publish with a reply subject of this inbox and wait for the answer.

        Publishes (``headers`` given) and confirmed settlements of events
        (``headers`` None: a plain ``PUB`` to the event's reply subject) both
        come this way.

        Raises:
            nats.errors.NoRespondersError: nobody listens on ``subject``.
            nats.errors.MaxPayloadError: body and headers are larger than the
                NATS server accepts.
            TimeoutError: no answer within ``timeout`` seconds.
            nats.errors.Error: the other refusals of ``nc.publish`` (such as
                BadSubjectError).
        """
        token, waiter = await self.send(subject, body, headers, timeout)
        try:
            answer = await waiter
        finally:
            self._waiting.pop(token, None)
        return checked(answer)

    async def request_many(
        self, subjects: Sequence[str], body: bytes, timeout: float
    ) -> list[Msg | Exception]:
        """Publish ``body`` to each subject (plain ``PUB``s) and wait for every answer.

        All are sent before the first answer is awaited, with no task per
        request; each answer is checked as :meth:`request` checks it.

        Returns:
            Per subject, in order: the answer, or what failed it
            (``TimeoutError``, ``nats.errors.NoRespondersError``, or the
            ``nats.errors.Error`` that refused sending it).
        """
        outcomes: list[Msg | Exception | asyncio.Future[Msg]] = []
        tokens: list[str] = []
        try:
            try:
                together = await self._send_together(subjects, body, timeout)
            except nats.errors.Error as exc:  # the write itself failed: none was sent
                return [exc for _ in subjects]
            if together is not None:
                for token, waiter in together:
                    tokens.append(token)
                    outcomes.append(waiter)
            else:  # one by one, each refused or sent on its own
                for subject in subjects:
                    try:
                        token, waiter = await self.send(subject, body, None, timeout)
                    except (nats.errors.Error, TimeoutError) as exc:
                        outcomes.append(exc)
                        continue
                    tokens.append(token)
                    outcomes.append(waiter)
            results: list[Msg | Exception] = []
            for outcome in outcomes:
                if isinstance(outcome, asyncio.Future):
                    try:
                        outcome = checked(await outcome)
                    except (nats.errors.Error, TimeoutError) as exc:
                        outcome = exc
                results.append(outcome)
        except BaseException:
            for outcome in outcomes:  # given up: expiring them later would go unseen
                if isinstance(outcome, asyncio.Future):
                    outcome.cancel()
            raise
        finally:
            waiting = self._waiting
            for token in tokens:
                waiting.pop(token, None)
        return results

    async def _send_together(
        self, subjects: Sequence[str], body: bytes, timeout: float
    ) -> list[tuple[str, asyncio.Future[Msg]]] | None:
        """Send ``body`` to every subject in one write, each with its own reply token.

        None, with nothing sent, unless the direct send can take them all:
        then :meth:`send`, one by one, says what refuses which.
        """
        if not self._prefix:
            if self._ready is None:
                await self._start()
            else:
                await asyncio.shield(self._ready)
        nc = self._nc
        size = len(body)
        if (
            not self._direct
            or nc.is_closed
            or nc.is_draining_pubs
            or not nc.is_connected
            or (nc.max_payload and size > nc.max_payload)
            or not all(map(_direct_subject, subjects))
        ):
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reply = self._prefix
        tail = b"%b\r\n" % body
        commands: list[bytes] = []
        sent: list[tuple[str, asyncio.Future[Msg]]] = []
        for subject in subjects:
            number = next(self._tokens)
            token = str(number)
            waiter: asyncio.Future[Msg] = loop.create_future()
            self._waiting[token] = waiter
            self._expire_at(loop, deadline, number, waiter)
            commands.append(f"PUB {subject} {reply}{token} {size}\r\n".encode())
            commands.append(tail)
            sent.append((token, waiter))
        try:
            nc.stats["out_msgs"] += len(sent)
            nc.stats["out_bytes"] += size * len(sent)
            await _write(nc, b"".join(commands))
        except BaseException:
            for token, waiter in sent:
                self._waiting.pop(token, None)
                waiter.cancel()
            raise
        return sent


def checked(answer: Msg) -> Msg:
    """``answer``, unless it is NATS' "no responders" status (raised as such)."""
    if not answer.data and answer.headers and answer.headers.get("Status") == "503":
        raise nats.errors.NoRespondersError
    return answer


__all__ = ["AckInbox", "checked", "direct_send_supported", "header_block"]
