"""Validation of names and subjects happens before anything reaches NATS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from windshift._names import (
    MAX_STORE_NAME_LENGTH,
    MAX_SUBJECT_LENGTH,
    validate_name,
    validate_subject,
    validate_subjects,
)
from windshift.errors import ValidationError


@pytest.mark.parametrize("good", ["orders", "Orders_v1", "a-b", "0", "x" * 255])
def test_good_names(good: str) -> None:
    assert validate_name("stream", good) == good


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "a*", "a>", "ä", "x" * 256, None, 5])
def test_bad_names_are_refused_naming_the_value(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate_name("consumer", bad)
    assert "consumer" in str(info.value)
    if isinstance(bad, str) and bad and len(bad) < 50:
        assert repr(bad) in str(info.value)


def test_a_store_name_leaves_room_for_its_streams_prefix() -> None:
    # The store's stream is KV_<name>, and NATS takes stream names of 255 at most.
    assert MAX_STORE_NAME_LENGTH == 252
    assert validate_name("store", "s" * 252) == "s" * 252
    with pytest.raises(ValidationError, match="253 characters long, longer than NATS allows"):
        validate_name("store", "s" * 253)
    assert validate_name("stream", "s" * 253)


def test_a_subject_fits_a_publish_line_of_nats() -> None:
    longest = "a" * MAX_SUBJECT_LENGTH
    assert validate_subject(longest) == longest
    with pytest.raises(ValidationError, match="3073 characters long, longer than NATS can carry"):
        validate_subject(longest + "a")
    with pytest.raises(ValidationError, match="4096 characters long"):
        validate_subject("a" * 4096)  # what nats-server answers by closing the connection


@pytest.mark.parametrize("good", ["orders", "orders.created", "a.b-c.D_e.9"])
def test_good_subjects(good: str) -> None:
    assert validate_subject(good) == good


@pytest.mark.parametrize("good", ["orders.*", "orders.>", "*.created", ">", "a.*.c.>"])
def test_wildcards_allowed_in_filters(good: str) -> None:
    assert validate_subject(good, wildcards=True) == good


@pytest.mark.parametrize("bad", ["orders.*", "orders.>", ">"])
def test_wildcards_refused_where_no_filter_is_allowed(bad: str) -> None:
    with pytest.raises(ValidationError, match="wildcards are not allowed"):
        validate_subject(bad)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "non-empty"),
        ("a..b", "empty token"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a.>.b", "last token"),
        ("a b", "may use only"),
        ("a.b*", "may use only"),
        ("ä.b", "may use only"),
        ("a\r\nb", "may use only"),
    ],
)
def test_bad_subjects_are_refused_with_the_reason(bad: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as info:
        validate_subject(bad, wildcards=True)
    assert repr(bad) in str(info.value)


def test_subject_list_must_be_a_list() -> None:
    with pytest.raises(ValidationError, match="list"):
        validate_subjects("orders.>")
    with pytest.raises(ValidationError, match="list"):
        validate_subjects(42)  # type: ignore[arg-type]


_token = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=8)


@given(st.lists(_token, min_size=1, max_size=6))
def test_any_well_formed_subject_is_accepted(tokens: list[str]) -> None:
    subject = ".".join(tokens)
    assert validate_subject(subject) == subject


@given(st.text(max_size=40))
def test_arbitrary_text_is_accepted_or_refused_cleanly(text: str) -> None:
    try:
        validate_subject(text, wildcards=True)
    except ValidationError as exc:
        assert str(exc)
