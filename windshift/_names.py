"""Validation of subjects and of stream, consumer and store names.

Everything a caller names is checked here, before anything reaches NATS, and
refused with a :class:`~windshift.errors.ValidationError` that quotes the bad
value.

* A subject is ``.``-separated tokens of ``A-Z a-z 0-9 _ -``. Where a filter is
  allowed (stream subjects, consumer subjects, mirror and source filters), a
  token may also be ``*`` (exactly one token) and the last token may be ``>``
  (one or more tokens).
* A stream, consumer or store name is one token of ``A-Z a-z 0-9 _ -``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from windshift.errors import ValidationError

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_MAX_NAME = 255
_MAX_SUBJECT = 4096


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
    if len(name) > _MAX_NAME:
        raise ValidationError(
            f"{kind} name {quote_value(name)} is longer than {_MAX_NAME} characters"
        )
    if not _TOKEN.fullmatch(name):
        raise ValidationError(
            f"invalid {kind} name {quote_value(name)}: use only A-Z, a-z, 0-9, '_' and '-'"
        )
    return name


def validate_subject(subject: object, *, wildcards: bool = False, what: str = "subject") -> str:
    """Check a subject (or, with ``wildcards``, a subject filter) and return it.

    Raises:
        ValidationError: the subject is empty, has an empty token, a character
            outside ``A-Z a-z 0-9 _ -``, or a wildcard where none is allowed.
    """
    if not isinstance(subject, str) or not subject:
        raise ValidationError(f"{what} must be a non-empty string, got {quote_value(subject)}")
    if len(subject) > _MAX_SUBJECT:
        raise ValidationError(
            f"{what} {quote_value(subject)} is longer than {_MAX_SUBJECT} characters"
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


def validate_subjects(subjects: Iterable[str] | None, *, what: str = "subject") -> list[str]:
    """Check a list of subject filters and return it as a list."""
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
    for value in values:
        validate_subject(value, wildcards=True, what=what)
    return values


__all__ = ["quote_value", "validate_name", "validate_subject", "validate_subjects"]
