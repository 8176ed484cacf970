"""Validation of subjects and of stream, consumer and store names.

Everything a caller names is checked here, before anything reaches NATS, and
refused with a :class:`~windshift.errors.ValidationError` that quotes the bad
value.

* A subject is ``.``-separated tokens of ``A-Z a-z 0-9 _ -``. Where a filter is
  allowed (stream subjects, consumer subjects, mirror and source filters), a
  token may also be ``*`` (exactly one token) and the last token may be ``>``
  (one or more tokens).
* A stream, consumer or store name is one token of ``A-Z a-z 0-9 _ -``.

The lengths are NATS' own bounds, not a matter of taste:

* A stream or consumer name has at most 255 characters (nats-server's
  ``JSMaxNameLen``); a store name at most 252, since its stream is
  ``KV_<name>``.
* A subject (or a key) has at most :data:`MAX_SUBJECT_LENGTH` characters.
  nats-server reads a publish's subject, reply subject and sizes as one
  control line of at most 4096 bytes (its ``max_control_line``), and closes
  the connection of a client that sends a longer one: for a shared
  connection (``windshift-grpc serve``'s) that is every caller's connection.
  The bound leaves room for a state key's ``$KV.<store>.`` prefix and the
  rest of the line.

How many subjects a stream or consumer may list, and how long and deep its
filters may be, is a separate, configurable matter: see
:class:`~windshift.Limits`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from windshift.errors import ValidationError

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")

#: The longest stream or consumer name NATS takes (``JSMaxNameLen``).
MAX_NAME_LENGTH = 255
#: The longest store name: its stream, ``KV_<name>``, must be a valid stream name.
MAX_STORE_NAME_LENGTH = MAX_NAME_LENGTH - len("KV_")
#: The longest subject or key: with ``$KV.<store>.`` in front, a reply subject and
#: the sizes, a publish still fits nats-server's 4096-byte control line.
MAX_SUBJECT_LENGTH = 3072

_MAX_NAME_OF = {"store": MAX_STORE_NAME_LENGTH}


def quote_value(value: object) -> str:
    """``repr(value)``, cut to 80 characters: how error messages quote a bad value."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_name(kind: str, name: object) -> str:
    """Check a stream, consumer or store name and return it.

    Args:
        kind: what is named, for the message ("stream", "consumer", "store").
        name: the value to check.

    Raises:
        ValidationError: the name is empty, too long or has a character
            outside ``A-Z a-z 0-9 _ -``.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{kind} name must be a non-empty string, got {quote_value(name)}")
    longest = _MAX_NAME_OF.get(kind, MAX_NAME_LENGTH)
    if len(name) > longest:
        raise ValidationError(
            f"{kind} name {quote_value(name)} is {len(name)} characters long, "
            f"longer than NATS allows ({longest})"
        )
    if not _TOKEN.fullmatch(name):
        raise ValidationError(
            f"invalid {kind} name {quote_value(name)}: use only A-Z, a-z, 0-9, '_' and '-'"
        )
    return name


def validate_subject(subject: object, *, wildcards: bool = False, what: str = "subject") -> str:
    """Check a subject (or, with ``wildcards``, a subject filter) and return it.

    Raises:
        ValidationError: the subject is empty, longer than
            :data:`MAX_SUBJECT_LENGTH`, has an empty token, a character
            outside ``A-Z a-z 0-9 _ -``, or a wildcard where none is allowed.
    """
    if not isinstance(subject, str) or not subject:
        raise ValidationError(f"{what} must be a non-empty string, got {quote_value(subject)}")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise ValidationError(
            f"{what} {quote_value(subject)} is {len(subject)} characters long, "
            f"longer than NATS can carry ({MAX_SUBJECT_LENGTH})"
        )
    tokens = subject.split(".")
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if _TOKEN.fullmatch(token):
            continue
        if token in ("*", ">"):
            if not wildcards:
                raise ValidationError(
                    f"invalid {what} {quote_value(subject)}: wildcards are not allowed here"
                )
            if token == ">" and index != last:
                raise ValidationError(
                    f"invalid {what} {quote_value(subject)}: '>' may only be the last token"
                )
            continue
        if not token:
            raise ValidationError(f"invalid {what} {quote_value(subject)}: empty token")
        raise ValidationError(
            f"invalid {what} {quote_value(subject)}: token {quote_value(token)} may use only "
            "A-Z, a-z, 0-9, '_' and '-'" + (" or be '*' or '>'" if wildcards else "")
        )
    return subject


def subject_list(subjects: Iterable[str] | None, *, what: str = "subject") -> list[str]:
    """``subjects`` as a list, unchecked (None: empty); refuses a string or a non-iterable.

    Raises:
        ValidationError: ``subjects`` is a string, or not iterable.
    """
    if subjects is None:
        values: list[str] = []
    elif isinstance(subjects, str):
        raise ValidationError(
            f"{what}s must be a list of strings, got the string {quote_value(subjects)}"
        )
    else:
        try:
            values = list(subjects)
        except TypeError:  # not iterable: one value where a list belongs
            raise ValidationError(
                f"{what}s must be a list of strings, got {quote_value(subjects)}"
            ) from None
    return values


def validate_subjects(subjects: Iterable[str] | None, *, what: str = "subject") -> list[str]:
    """Check a list of subject filters and return it as a list."""
    values = subject_list(subjects, what=what)
    for value in values:
        validate_subject(value, wildcards=True, what=what)
    return values


__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_STORE_NAME_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "quote_value",
    "subject_list",
    "validate_name",
    "validate_subject",
    "validate_subjects",
]
