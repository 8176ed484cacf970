"""API tokens and what each may do: the tokens file of ``windshift-grpc serve``.

Example:
    >>> tokens = Tokens.load(Path("tokens.json"))
    >>> grant = tokens.find(digest(bearer([("authorization", "Bearer 3q2-...")])))
    >>> grant.require(Permission.PUBLISH, "orders.created")

The file (``WINDSHIFT_AUTH_FILE``) is JSON, or TOML when its name ends in
``.toml``; it lists tokens, each with a name (for logs and messages) and
its permissions, lists of NATS-style patterns (``*`` one token, ``>`` one
or more at the end)::

    {"tokens": [{
        "name": "orders-service",
        "token": "sha256:9b1f...",
        "publish": ["orders.>"],
        "consume": ["orders"],
        "manage": ["orders"],
        "read_state": ["carts"],
        "write_state": ["carts"]
    }]}

``token`` is the token itself (16 characters or more) or, better,
``sha256:`` and the hex SHA-256 of it, so that the file does not give the
tokens away. Presented tokens are hashed and compared with every entry in
constant time (:func:`hmac.compare_digest`); no token ever appears in a log
line or an error message, only its name.

See docs/security.md for which call needs which permission.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from windshift_grpc.settings import SettingsError

#: Shortest plain token the file accepts (hashed entries: any token).
MIN_TOKEN_LENGTH = 16
_HASH_PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")
_SETTING = "WINDSHIFT_AUTH_FILE"


class AccessError(Exception):
    """A call the façade refuses before it reaches the library."""


class AuthenticationError(AccessError):
    """No valid bearer token (gRPC UNAUTHENTICATED)."""


class PermissionDeniedError(AccessError):
    """The token does not grant what the call needs (gRPC PERMISSION_DENIED)."""


class Permission(enum.Enum):
    """What a token may do, each scoped by patterns of one kind of name."""

    #: publish events on subjects (PublishEvent).
    PUBLISH = "publish"
    #: subscribe to the consumers of streams and settle their events (Events).
    CONSUME = "consume"
    #: create and change streams, create and delete their consumers.
    MANAGE = "manage"
    #: read keys of state stores (Get).
    READ_STATE = "read_state"
    #: create state stores, write and delete their keys (EnsureStore, Set, Delete).
    WRITE_STATE = "write_state"

    @property
    def scope(self) -> str:
        """What its patterns match: subjects, streams or stores."""
        return _SCOPES[self]


_SCOPES = {
    Permission.PUBLISH: "subject",
    Permission.CONSUME: "stream",
    Permission.MANAGE: "stream",
    Permission.READ_STATE: "store",
    Permission.WRITE_STATE: "store",
}
_VERBS = {
    Permission.PUBLISH: "publish on subject",
    Permission.CONSUME: "consume stream",
    Permission.MANAGE: "manage stream",
    Permission.READ_STATE: "read state store",
    Permission.WRITE_STATE: "write state store",
}


def matches(pattern: str, name: str) -> bool:
    """Whether ``name`` matches the NATS-style ``pattern`` (``*``: one token, ``>``: the rest).

    Example:
        >>> matches("orders.*", "orders.created"), matches("orders.>", "orders")
        (True, False)
    """
    wanted = pattern.split(".")
    given = name.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or (token != "*" and token != given[index]):
            return False
    return len(given) == len(wanted)


@dataclass(frozen=True, slots=True)
class Grant:
    """One entry of the tokens file: a token (as its digest), a name and permissions."""

    name: str
    digest: bytes = field(repr=False)
    permissions: Mapping[Permission, tuple[str, ...]]

    def allows(self, permission: Permission, name: str) -> bool:
        """Whether this token may do ``permission`` on the subject, stream or store ``name``."""
        return any(matches(pattern, name) for pattern in self.permissions.get(permission, ()))

    def require(self, permission: Permission, name: str) -> None:
        """Raise :class:`PermissionDeniedError` unless :meth:`allows`."""
        if not self.allows(permission, name):
            raise PermissionDeniedError(
                f"token {self.name!r} may not {_VERBS[permission]} {name!r}"
            )


def digest(token: str) -> bytes:
    """The SHA-256 of a token, as compared (and as ``sha256:<hex>`` in the file)."""
    return hashlib.sha256(token.encode()).digest()


def hashed(token: str) -> str:
    """The ``sha256:<hex>`` form of a token for the tokens file."""
    return _HASH_PREFIX + digest(token).hex()


def bearer(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The token of the ``authorization: Bearer <token>`` metadata.

    Raises:
        AuthenticationError: none, several, or not a bearer token.
    """
    values = [value for key, value in metadata or () if str(key).lower() == "authorization"]
    if not values:
        raise AuthenticationError(
            "no bearer token: send the metadata 'authorization: Bearer <token>'"
        )
    if len(values) > 1:
        raise AuthenticationError("more than one authorization metadata entry")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    scheme, _, token = str(value).strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the authorization metadata must be 'Bearer <token>'")
    return token.strip()


class Tokens:
    """The tokens of a tokens file, looked up by digest in constant time.

    Args:
        grants: the entries; two with the same token are refused by :meth:`load`.
    """

    def __init__(self, grants: Sequence[Grant]) -> None:
        self.grants = tuple(grants)

    def __len__(self) -> int:
        return len(self.grants)

    def find(self, token_digest: bytes) -> Grant | None:
        """The entry of this digest, comparing with every entry (no early exit)."""
        found: Grant | None = None
        for grant in self.grants:
            if hmac.compare_digest(grant.digest, token_digest):
                found = grant
        return found

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Read a tokens file (JSON, or TOML for ``*.toml``).

        Raises:
            SettingsError: (naming ``WINDSHIFT_AUTH_FILE``) the file cannot be
                read or is not a valid tokens file; the message says where.
        """
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise SettingsError(_SETTING, f"cannot read {str(path)!r}: {exc.strerror}") from None
        try:
            if path.suffix.lower() == ".toml":
                document: Any = tomllib.loads(raw.decode())
            else:
                document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
            raise SettingsError(_SETTING, f"{str(path)!r} is not valid {kind}: {exc}") from None
        try:
            return cls(_grants(document))
        except ValueError as exc:
            raise SettingsError(_SETTING, f"{str(path)!r}: {exc}") from None


_KEYS = {"name", "token"} | {permission.value for permission in Permission}


def _grants(document: Any) -> list[Grant]:
    if not isinstance(document, dict) or set(document) != {"tokens"}:
        raise ValueError('expected one key, "tokens", holding a list of tokens')
    entries = document["tokens"]
    if not isinstance(entries, list) or not entries:
        raise ValueError('"tokens" must be a list of at least one token')
    grants: list[Grant] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for index, entry in enumerate(entries):
        where = f"tokens[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where} needs a name")
        where = f"token {name!r}"
        if name in names:
            raise ValueError(f"{where} is listed twice")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})"
            )
        token_digest = _token_digest(entry.get("token"), where)
        if token_digest in digests:
            raise ValueError(f"{where} has the same token as another entry")
        permissions = {
            permission: _patterns(entry.get(permission.value, []), permission, where)
            for permission in Permission
        }
        names.add(name)
        digests.add(token_digest)
        grants.append(Grant(name=name, digest=token_digest, permissions=permissions))
    return grants


def _token_digest(token: Any, where: str) -> bytes:
    # Messages name the entry, never the token's value.
    if not isinstance(token, str) or not token:
        raise ValueError(f'{where} needs a "token" (the token, or "sha256:<hex>")')
    if token.startswith(_HASH_PREFIX):
        hex_digest = token[len(_HASH_PREFIX) :].lower()
        if not _HEX.fullmatch(hex_digest):
            raise ValueError(f"{where}: a hashed token is 'sha256:' and 64 hex digits")
        return bytes.fromhex(hex_digest)
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise ValueError(
            f"{where}: a token needs {MIN_TOKEN_LENGTH} characters or more and no "
            "surrounding spaces (make one with `windshift-grpc token`)"
        )
    return digest(token)


_TOKEN = re.compile(r"[^.\s*>]+")


def _patterns(value: Any, permission: Permission, where: str) -> tuple[str, ...]:
    key = f"{where}: {permission.value}"
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key} must be a list of {permission.scope} patterns")
    for pattern in value:
        tokens = pattern.split(".")
        if permission.scope != "subject" and len(tokens) > 1:
            raise ValueError(
                f"{key}: {pattern!r} is not a {permission.scope} name or wildcard (* or >)"
            )
        for position, token in enumerate(tokens):
            last = position == len(tokens) - 1
            if not (token == "*" or (token == ">" and last) or _TOKEN.fullmatch(token)):
                raise ValueError(f"{key}: {pattern!r} is not a valid {permission.scope} pattern")
    return tuple(value)


__all__ = [
    "MIN_TOKEN_LENGTH",
    "AccessError",
    "AuthenticationError",
    "Grant",
    "Permission",
    "PermissionDeniedError",
    "Tokens",
    "bearer",
    "digest",
    "hashed",
    "matches",
]
