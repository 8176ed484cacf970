"""The acknowledgement inbox: every request times out at its own deadline.

Publishes and confirmed settlements share one inbox and one expiry timer
(windshift._acks). Most replies here never come: a raw nats-py subscriber
receives the requests and stays silent (a subject nobody subscribes to would
get a no-responders answer at once instead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from windshift import EmbeddedNats
from windshift._acks import AckInbox

# As a publish (an HPUB with headers) and as a confirmed settlement (a plain PUB).
_STYLES = [{"WS-Data-Type": "google.protobuf.StringValue"}, None]


@dataclass
class _Peer:
    """The other side: answers requests to ``<name>.answered``, and none to the rest."""

    nc: NATS
    name: str
    received: asyncio.Queue[Msg]

    @property
    def silent(self) -> str:
        return f"{self.name}.silent"

    @property
    def answered(self) -> str:
        return f"{self.name}.answered"

    @classmethod
    async def start(cls, nc: NATS, name: str) -> _Peer:
        peer = cls(nc, name, asyncio.Queue())
        await nc.subscribe(f"{name}.*", cb=peer._on_message)
        # Its subscription is in place once the server routes the peer's own
        # message back to it (the SUB went out first, on the same
        # connection). nats-py's flush() is no proof: it writes its PING to
        # the socket at once, possibly ahead of a SUB still in the buffer.
        await nc.publish(f"{name}.probe", b"")
        assert (await peer.received.get()).subject == f"{name}.probe"
        return peer

    async def _on_message(self, msg: Msg) -> None:
        if msg.subject == self.answered:
            await msg.respond(b"ok")
        else:
            await self.received.put(msg)


@pytest.fixture
async def connections(nats_server: EmbeddedNats) -> AsyncIterator[tuple[NATS, NATS]]:
    ours, theirs = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    try:
        yield ours, theirs
    finally:
        await ours.close()
        await theirs.close()


@pytest.mark.parametrize("headers", _STYLES, ids=["publish", "settlement"])
async def test_a_shorter_timeout_queued_behind_a_longer_one_fires_at_its_own_deadline(
    connections: tuple[NATS, NATS], name: str, headers: dict[str, str] | None
) -> None:
    ours, theirs = connections
    peer = await _Peer.start(theirs, name)
    inbox = AckInbox(ours)
    loop = asyncio.get_running_loop()
    long = asyncio.create_task(inbox.request(peer.silent, b"long", headers, 5.0))
    assert (await peer.received.get()).data == b"long"  # sent, and its deadline queued
    started = loop.time()
    with pytest.raises(TimeoutError):
        await inbox.request(peer.silent, b"short", headers, 0.2)
    waited = loop.time() - started
    # About 0.2 s; swept after the 5 s one it would take 5 s. A bound loose
    # enough for a busy machine: this is about order, not speed.
    assert 0.19 <= waited < 1.5, waited
    assert not long.done(), "the longer request must keep waiting for its own deadline"
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long


async def _fail_in_turn(
    inbox: AckInbox, peer: _Peer, timeouts: list[float], *, stall: float = 0.0
) -> list[tuple[float, float]]:
    """Send a request per timeout in turn; (timeout, seconds until it failed) as they fail.

    With ``stall``, the event loop is then blocked that long (a busy process),
    so that deadlines pass while nothing can run.
    """
    loop = asyncio.get_running_loop()
    failed: list[tuple[float, float]] = []

    async def wait(timeout: float) -> None:
        started = loop.time()
        with pytest.raises(TimeoutError):
            await inbox.request(peer.silent, str(timeout).encode(), None, timeout)
        failed.append((timeout, loop.time() - started))

    tasks = []
    for timeout in timeouts:
        tasks.append(asyncio.create_task(wait(timeout)))
        await peer.received.get()  # each sent before the next
    if stall:
        time.sleep(stall)  # noqa: ASYNC251 (the stall is the point: nothing else may run)
    await asyncio.gather(*tasks)
    return failed


async def test_mixed_timeouts_fail_in_deadline_order_none_early(
    connections: tuple[NATS, NATS], name: str
) -> None:
    ours, theirs = connections
    timeouts = [1.2, 0.3, 0.9, 0.2, 0.6]
    failed = await _fail_in_turn(AckInbox(ours), await _Peer.start(theirs, name), timeouts)
    assert [timeout for timeout, _ in failed] == sorted(timeouts)
    for timeout, waited in failed:
        assert timeout - 0.01 <= waited < timeout + 1.0, (timeout, waited)


async def test_deadlines_passed_during_a_stall_fail_in_deadline_order(
    connections: tuple[NATS, NATS], name: str
) -> None:
    # All three deadlines pass while the loop is blocked, so one sweep finds
    # them all due; it must still fail them earliest first.
    ours, theirs = connections
    timeouts = [0.3, 0.1, 0.2]
    inbox, peer = AckInbox(ours), await _Peer.start(theirs, name)
    failed = await _fail_in_turn(inbox, peer, timeouts, stall=0.5)
    assert [timeout for timeout, _ in failed] == sorted(timeouts)
    assert all(waited >= 0.5 for _, waited in failed), failed


@pytest.mark.parametrize(
    ("live", "answered"),
    [
        ([30.0], 30.0),  # the usual: all with the same timeout, one never answered
        ([30.0, 10.0], 20.0),  # behind one with a shorter timeout than the first's
    ],
    ids=["in-order", "out-of-order"],
)
async def test_answered_requests_do_not_pile_up_behind_a_long_one(
    connections: tuple[NATS, NATS], name: str, live: list[float], answered: float
) -> None:
    ours, theirs = connections
    peer = await _Peer.start(theirs, name)
    inbox = AckInbox(ours)
    waiting = []
    for timeout in live:
        waiting.append(asyncio.create_task(inbox.request(peer.silent, b"", None, timeout)))
        await peer.received.get()
    for _ in range(2_000):
        assert (await inbox.request(peer.answered, b"x", None, answered)).data == b"ok"
    # The live requests keep their places, but the answered ones behind them
    # are dropped once they outnumber the live ones.
    kept = len(inbox._in_order) + len(inbox._out_of_order)
    assert kept <= 300, kept
    for task in waiting:
        assert not task.done()
        task.cancel()
    for task in waiting:
        with pytest.raises(asyncio.CancelledError):
            await task
