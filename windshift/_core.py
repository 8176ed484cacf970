"""What every part of the client shares: the NATS connection, the API and the settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from nats.aio.client import Client as NATS

from windshift._jsapi import JetStreamApi


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Settings of a :class:`~windshift.Client`, fixed at :func:`~windshift.connect`.

    Attributes:
        request_timeout: how long to wait for NATS to answer a request
            (a publish acknowledgement, a stream or consumer change).
        publish_max_pending: how many publishes may await their
            acknowledgement at once; further ``publish`` calls wait for a slot.
    """

    request_timeout: timedelta = timedelta(seconds=5)
    publish_max_pending: int = 256


class ClientBase:
    """State shared by the client's parts (streams, consumers, publishing, subscriptions)."""

    _nc: NATS
    _api: JetStreamApi
    _settings: ClientSettings

    @property
    def nats(self) -> NATS:
        """The underlying nats-py connection (for what windshift does not cover)."""
        return self._nc
