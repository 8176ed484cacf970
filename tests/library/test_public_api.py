"""The package root is the public API; its names are pinned."""

from __future__ import annotations

import windshift


def test_public_names_are_pinned_and_sorted() -> None:
    assert windshift.__all__ == [
        "AlreadyExistsError",
        "Client",
        "ConfigurationConflictError",
        "ConflictError",
        "ConsumerInfo",
        "DeadLetter",
        "DeadLetterQueue",
        "Event",
        "EventSettledError",
        "NotFoundError",
        "PublishedEvent",
        "StateChange",
        "StateEntry",
        "StateStore",
        "StateWatch",
        "StreamInfo",
        "StreamPointer",
        "StreamSource",
        "Subscription",
        "UnavailableError",
        "ValidationError",
        "WindshiftError",
        "connect",
    ]
    assert windshift.__all__ == sorted(windshift.__all__)
    for public in windshift.__all__:
        assert getattr(windshift, public).__doc__, f"{public} has no docstring"


def test_every_error_derives_from_windshift_error() -> None:
    for public in windshift.__all__:
        value = getattr(windshift, public)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, windshift.WindshiftError)
