"""StreamPointer: where in a stream reading (or copying) starts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from windshift._names import quote_value
from windshift._wire import format_time
from windshift.errors import ValidationError

PointerKind = Literal["start", "end", "time", "offset"]


@dataclass(frozen=True, slots=True)
class StreamPointer:
    """A position in a stream.

    Example:
        >>> StreamPointer.start()                 # the first event still kept
        >>> StreamPointer.end()                   # only events published from now on
        >>> StreamPointer.time(datetime(2026, 1, 1, tzinfo=UTC))
        >>> StreamPointer.offset(1042)            # from the event with id 1042

    Use the class methods; the fields are read-only.
    """

    kind: PointerKind
    at_time: datetime | None = None
    at_id: int | None = None

    @classmethod
    def start(cls) -> StreamPointer:
        """The oldest event the stream still holds."""
        return cls("start")

    @classmethod
    def end(cls) -> StreamPointer:
        """New events only: those published after the consumer is created."""
        return cls("end")

    @classmethod
    def time(cls, moment: datetime) -> StreamPointer:
        """The first event published at or after ``moment`` (an aware datetime)."""
        if not isinstance(moment, datetime):
            raise ValidationError(f"StreamPointer.time needs a datetime, got {quote_value(moment)}")
        format_time(moment)  # refuses naive datetimes with a clear message
        return cls("time", at_time=moment)

    @classmethod
    def offset(cls, event_id: int) -> StreamPointer:
        """The event with this id (stream sequence) and everything after it."""
        if isinstance(event_id, bool) or not isinstance(event_id, int) or event_id < 1:
            raise ValidationError(
                f"StreamPointer.offset needs an event id of 1 or more, got {quote_value(event_id)}"
            )
        return cls("offset", at_id=event_id)

    def consumer_fields(self) -> dict[str, Any]:
        """The JetStream consumer configuration fields for this pointer."""
        if self.kind == "start":
            return {"deliver_policy": "all"}
        if self.kind == "end":
            return {"deliver_policy": "new"}
        if self.kind == "time":
            assert self.at_time is not None
            return {"deliver_policy": "by_start_time", "opt_start_time": format_time(self.at_time)}
        return {"deliver_policy": "by_start_sequence", "opt_start_seq": self.at_id}

    def source_fields(self) -> dict[str, Any]:
        """The JetStream mirror/source configuration fields for this pointer."""
        if self.kind == "start":
            return {}
        if self.kind == "end":
            return {"opt_start_time": format_time(None)}
        if self.kind == "time":
            assert self.at_time is not None
            return {"opt_start_time": format_time(self.at_time)}
        return {"opt_start_seq": self.at_id}


__all__ = ["StreamPointer"]
