"""The nats-py client windshift connects with: nats-py's own, reading headers faster.

Every delivered event carries a handful of headers, and nats-py reads each
header block in Python, testing every character of every name for
whitespace one by one: about 6 µs for an event's four headers, a good part
of what receiving an event costs (docs/performance.md, "Fewer steps per
event"). :class:`NatsClient`
reads them with the same rules and returns the same dicts (the tests compare
both on generated header blocks), testing a name with one ``str.split``.

Only the reading of header lines changes; status lines, the protocol and
everything else stay nats-py's. Should a later nats-py stop calling the
method, its own reading is used, and nothing else changes.
"""

from __future__ import annotations

from nats.aio.client import Client

_CRLF = b"\r\n"


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """The headers of ``raw`` (``Name: Value`` lines), exactly as nats-py 2.x reads them.

    Lines without a colon, and names that are not ASCII or hold whitespace,
    are skipped; names and values are stripped; values are UTF-8, with
    undecodable bytes replaced; a later line with the same name wins.
    """
    out: dict[str, str] = {}
    for line in raw.split(_CRLF):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        # str.split() splits at exactly the characters str.isspace() accepts,
        # so a name without whitespace is its own one piece (and "" none).
        if key and key.split() != [key]:
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


class NatsClient(Client):
    """nats-py's client with :func:`parse_header_lines` for header blocks."""

    _parse_header_lines = staticmethod(parse_header_lines)


__all__ = ["NatsClient", "parse_header_lines"]
