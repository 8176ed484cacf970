"""Why a request's bytes did not decode, in words a client can act on.

protobuf's own parser says only "String field had bad UTF-8" or "Error
parsing message", without naming the field. When a request does not decode,
:func:`explain` walks its bytes against the message's descriptor and names
the first field at fault (``subscribe.stream``, say) and what is wrong with
it. The walk reads the protobuf wire format only: tags, varints, fixed-size
values and length-delimited blocks.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

# Wire types of the protobuf encoding.
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = range(6)
_SHOWN_BYTES = 16  # how many of a bad string's bytes the message quotes
# The walk is Python, the parser C: fields looked at before giving up (and
# leaving the parser's message), so that a large request made of many tiny
# fields costs no more than about a millisecond to explain.
_MAX_FIELDS = 10_000


class _Bad(Exception):
    """The first fault found; its message is the explanation."""


class _TooLong(Exception):
    """More fields than the walk looks at."""


def explain(descriptor: Descriptor, data: bytes) -> str | None:
    """What is wrong with ``data`` as a ``descriptor`` message, or None if nothing is found.

    Only faults of the encoding are looked for (a string that is not UTF-8,
    a truncated value, a wire type that does not fit its field); a None
    leaves the parser's own message to be shown.
    """
    try:
        _walk(descriptor, data, "", [_MAX_FIELDS])
    except _Bad as fault:
        return str(fault)
    except _TooLong:
        pass
    return None


def count_fields(data: bytes, number: int, most: int) -> int | None:
    """How many times field ``number`` occurs at the top level of the encoded message ``data``.

    Cheap enough to run before decoding: only the top level is walked (each
    field is a tag and a length or a value, whatever it holds), and at most
    ``most`` fields of any number.

    Returns:
        The count; ``most + 1`` when the top level holds more than ``most``
        fields in all; None when the encoding is broken (the parser will say
        why).
    """
    at = seen = count = 0
    try:
        while at < len(data):
            if seen == most:
                return most + 1
            seen += 1
            tag, at = _varint(data, at, "")
            wire = tag & 7
            if wire == _VARINT:
                _, at = _varint(data, at, "")
            elif wire in (_I64, _I32):
                at += 8 if wire == _I64 else 4
            elif wire == _LEN:
                size, at = _varint(data, at, "")
                at += size
            else:
                return None
            if at > len(data):
                return None
            if tag >> 3 == number:
                count += 1
    except _Bad:
        return None
    return count


def _varint(data: bytes, at: int, path: str) -> tuple[int, int]:
    value = shift = 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift >= 70:
            break
    raise _Bad(f"{path or 'the message'}: a number is cut short or too long")


def _walk(descriptor: Descriptor, data: bytes, prefix: str, budget: list[int]) -> None:
    at = 0
    while at < len(data):
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLong
        tag, at = _varint(data, at, prefix.rstrip("."))
        number, wire = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number)
        path = f"{prefix}{field.name}" if field is not None else f"{prefix}<field {number}>"
        if wire == _VARINT:
            _, at = _varint(data, at, path)
        elif wire in (_I64, _I32):
            at += 8 if wire == _I64 else 4
            if at > len(data):
                raise _Bad(f"{path}: the value is cut short")
        elif wire == _LEN:
            size, at = _varint(data, at, path)
            block, at = data[at : at + size], at + size
            if at > len(data):
                raise _Bad(f"{path}: {size} bytes announced, {len(block)} sent")
            if field is not None:
                _check_block(field, block, path, budget)
        else:
            raise _Bad(f"{path}: wire type {wire} is not one a request may use")


def _check_block(field: FieldDescriptor, block: bytes, path: str, budget: list[int]) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            shown = block[:_SHOWN_BYTES].hex(" ")
            more = " …" if len(block) > _SHOWN_BYTES else ""
            raise _Bad(f"{path} is not valid UTF-8 (bytes {shown}{more})") from None
    elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        _walk(field.message_type, block, f"{path}.", budget)
