"""The connection core every part of a client shares: NATS, the JetStream API, settings, inboxes.

:class:`~windshift.Client` owns one :class:`Connection` and hands it to its
services (publishing, streams, consumers, stores, subscriptions); none of
them holds state of its own about the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from nats.aio.client import Client as NATS

from windshift._acks import AckInbox
from windshift._jsapi import JetStreamApi
from windshift._options import DEFAULT_LIMITS, Limits

logger = logging.getLogger("windshift.client")

ReconnectListener = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Settings of a :class:`~windshift.Client`, fixed at :func:`~windshift.connect`.

    Example:
        >>> client.settings.request_timeout
        datetime.timedelta(seconds=5)

    Attributes:
        request_timeout: how long to wait for NATS to answer a request
            (a publish acknowledgement, a stream or consumer change).
        publish_max_pending: how many publishes may await their
            acknowledgement at once; further ``publish`` calls wait for a slot.
        limits: how many subjects, sources and filters a stream or consumer
            this client ensures may have (see :class:`~windshift.Limits`).
    """

    request_timeout: timedelta = timedelta(seconds=5)
    publish_max_pending: int = 256
    limits: Limits = DEFAULT_LIMITS


class Connection:
    """One NATS connection and what is shared over it.

    Args:
        nc: the connected nats-py client.
        settings: the client's settings.
    """

    def __init__(self, nc: NATS, settings: ClientSettings) -> None:
        self.nc = nc
        self.settings = settings
        self.request_timeout = settings.request_timeout.total_seconds()
        self.api = JetStreamApi(nc, timeout=self.request_timeout)
        #: The reply inbox of publishes and confirmed settlements.
        self.acks = AckInbox(nc)
        #: At most ``publish_max_pending`` publishes await their acknowledgement.
        self.publish_slots = asyncio.Semaphore(settings.publish_max_pending)
        #: Called after every reconnect (subscriptions ask for events again).
        self.reconnect_listeners: set[ReconnectListener] = set()

    async def on_reconnect(self) -> None:
        """Tell every listener that the connection is back."""
        url = self.nc.connected_url
        # host and port only: a URL may carry a user and password
        logger.info("reconnected to NATS at %s", f"{url.hostname}:{url.port}" if url else "?")
        for listener in list(self.reconnect_listeners):
            try:
                await listener()
            except Exception:
                logger.exception("a subscription failed to resume after reconnecting")


__all__ = ["ClientSettings", "Connection", "ReconnectListener"]
