"""Retry: how long to wait before an event that failed is tried again."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta

from windshift._names import quote_value
from windshift.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry policy: exponential backoff, capped, with jitter.

    Example:
        >>> retry = Retry(delay=timedelta(seconds=1), backoff=2.0,
        ...               max_delay=timedelta(minutes=5), jitter=0.1)
        >>> retry.delay_for(3)        # about 4 s (1 s * 2**2, spread by ±10 %)
        >>> await event.reject(delay=retry.delay_for(event.delivery_attempt))

    :class:`~windshift.Worker` uses it for handlers that raise; it is as
    useful on its own, with a plain subscription.

    Attributes:
        delay: the wait after the first failed attempt.
        backoff: each further attempt waits this many times longer (1: always ``delay``).
        max_delay: the wait never grows past this (before the jitter is applied).
        jitter: the wait is spread at random by up to this fraction either way
            (0.1: ±10 %), so that many events failing together do not all
            come back at the same moment.
    """

    delay: timedelta = timedelta(seconds=1)
    backoff: float = 2.0
    max_delay: timedelta = timedelta(minutes=5)
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for what, value in (("delay", self.delay), ("max_delay", self.max_delay)):
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise ValidationError(
                    f"Retry.{what} must be a timedelta of 0 or more, got {quote_value(value)}"
                )
        if self.max_delay < self.delay:
            raise ValidationError(
                f"Retry.max_delay ({self.max_delay}) must not be shorter than delay ({self.delay})"
            )
        if (
            isinstance(self.backoff, bool)
            or not isinstance(self.backoff, int | float)
            or not math.isfinite(self.backoff)
            or self.backoff < 1
        ):
            raise ValidationError(
                f"Retry.backoff must be 1 or more, got {quote_value(self.backoff)}"
            )
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not 0 <= self.jitter <= 1
        ):
            raise ValidationError(
                f"Retry.jitter must be a fraction from 0 to 1, got {quote_value(self.jitter)}"
            )

    def delay_for(self, attempt: int) -> timedelta:
        """The wait before the attempt after ``attempt`` (the first attempt is 1).

        ``delay * backoff ** (attempt - 1)``, capped at ``max_delay``, then
        spread by ``±jitter``.

        Raises:
            ValidationError: ``attempt`` is not a whole number of 1 or more.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValidationError(
                f"attempt must be a whole number of 1 or more, got {quote_value(attempt)}"
            )
        seconds = self.delay.total_seconds()
        cap = self.max_delay.total_seconds()
        if seconds > 0 and self.backoff > 1:
            # backoff ** (attempt - 1) overflows a float long before it matters:
            # compare exponents instead of computing it.
            if (attempt - 1) * math.log(self.backoff) >= math.log(cap / seconds):
                seconds = cap
            else:
                seconds = min(seconds * self.backoff ** (attempt - 1), cap)
        if self.jitter:
            seconds *= 1 + random.uniform(-self.jitter, self.jitter)
        return timedelta(seconds=max(0.0, seconds))


__all__ = ["Retry"]
