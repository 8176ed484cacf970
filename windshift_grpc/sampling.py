"""Samples of every consumer's lag, taken by the server at an interval, and an hour of them kept.

``/metrics`` reports the latest sample of each consumer as gauges; the web
console draws the hour as a chart. One :class:`Sampler` per process serves
both, so JetStream is asked once per interval whatever reads the samples.

A round lists the streams, then the consumers of each, and asks for the lag
of those behind (:meth:`windshift.Client.consumer_lag`: one request more per
consumer that is behind). Left out: state stores' streams (``KV_*``,
``OBJ_*``) and consumers that acknowledge nothing (tails, watches): nothing
they read waits to be processed. Each dead-letter stream a consumer names is
counted as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

import windshift
from windshift import WindshiftError

logger = logging.getLogger("windshift_grpc.sampling")

#: How long samples are kept (seconds): the console's chart shows this much.
KEEP = 3600.0
_INTERNAL_PREFIXES = ("KV_", "OBJ_")


@dataclass(frozen=True, slots=True)
class ConsumerSample:
    """One consumer at one moment.

    Attributes:
        stream: the consumer's stream.
        consumer: its id.
        at: when the sample was taken (seconds since the epoch).
        pending: events not yet delivered.
        unsettled: events delivered and not yet settled.
        redelivered: events delivered more than once and not yet settled.
        ack_floor: every event up to this id is settled.
        lag_events: events not processed yet (pending + unsettled).
        lag_seconds: how long the oldest of them has waited.
        dead_letter_stream: where it moves events it gives up on (None: nowhere).
    """

    stream: str
    consumer: str
    at: float
    pending: int
    unsettled: int
    redelivered: int
    ack_floor: int
    lag_events: int
    lag_seconds: float
    dead_letter_stream: str | None


class Sampler:
    """Takes a sample of every consumer every ``interval`` seconds, and keeps an hour of them.

    Args:
        client: the server's library client.
        interval: seconds between rounds.
        keep: seconds of samples kept per consumer.
    """

    def __init__(self, client: windshift.Client, *, interval: float, keep: float = KEEP) -> None:
        self._client = client
        self.interval = interval
        self._length = max(2, int(keep / interval) + 1)
        self._history: dict[tuple[str, str], deque[ConsumerSample]] = {}
        #: The latest sample of every consumer seen in the last round.
        self.latest: dict[tuple[str, str], ConsumerSample] = {}
        #: Events held by each dead-letter stream a consumer names, at the last round.
        self.dead_letters: dict[str, int] = {}
        #: When the last round ended (seconds since the epoch; 0.0: none yet).
        self.sampled_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._round = asyncio.Lock()

    def history(self, stream: str, consumer: str) -> list[ConsumerSample]:
        """The samples kept of one consumer, oldest first (empty: never seen)."""
        return list(self._history.get((stream, consumer), ()))

    async def start(self) -> None:
        """Take a first round now, then one every interval in the background."""
        await self.sample_once()
        self._task = asyncio.create_task(self._loop(), name="windshift-grpc-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sample_once()
            except WindshiftError as exc:
                logger.warning("sampling the consumers failed: %s", exc)
            except Exception:
                logger.exception("sampling the consumers failed")

    async def sample_once(self) -> None:
        """One round: every consumer's counts and lag, every dead-letter stream's size."""
        async with self._round:
            latest: dict[tuple[str, str], ConsumerSample] = {}
            dead_letter_streams: set[str] = set()
            sizes: dict[str, int] = {}
            for stream in await self._client.streams():
                sizes[stream.name] = stream.events
                if stream.name.startswith(_INTERNAL_PREFIXES):
                    continue
                try:
                    consumers = await self._client.consumers(stream.name)
                except windshift.StreamNotFoundError:
                    continue  # deleted since the list
                for info in consumers:
                    if info.config.get("ack_policy") == "none":
                        continue
                    try:
                        lag = await self._client.consumer_lag(stream.name, info)
                    except windshift.NotFoundError:
                        continue
                    sample = ConsumerSample(
                        stream=stream.name,
                        consumer=info.id,
                        at=time.time(),
                        pending=info.pending_events,
                        unsettled=info.unsettled_events,
                        redelivered=info.redelivered_events,
                        ack_floor=info.acknowledged_id,
                        lag_events=lag.events,
                        lag_seconds=lag.seconds,
                        dead_letter_stream=info.dead_letter_stream,
                    )
                    latest[(stream.name, info.id)] = sample
                    if info.dead_letter_stream is not None:
                        dead_letter_streams.add(info.dead_letter_stream)
            for key, sample in latest.items():
                kept = self._history.get(key)
                if kept is None:
                    kept = self._history[key] = deque(maxlen=self._length)
                kept.append(sample)
            for gone in self._history.keys() - latest.keys():
                del self._history[gone]
            self.latest = latest
            self.dead_letters = {
                name: sizes[name] for name in sorted(dead_letter_streams) if name in sizes
            }
            self.sampled_at = time.time()


__all__ = ["KEEP", "ConsumerSample", "Sampler"]
