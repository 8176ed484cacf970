"""API tokens and what each may do: the tokens file of ``windshift-grpc serve``.

Example:
    >>> tokens = Tokens.load(Path("tokens.json"))
    >>> grant = tokens.get(tokens.credential_of("3q2-..."))
    >>> grant.require(Permission.PUBLISH, "orders.created")

The file (``WINDSHIFT_AUTH_FILE``) is JSON, or TOML when its name ends in
``.toml``; it lists tokens, each with a name (for logs and messages), its
permissions, lists of NATS-style patterns (``*`` one token, ``>`` one or more
at the end), and optional quotas::

    {"tokens": [{
        "name": "orders-service",
        "token": "scrypt:n=32768,r=8,p=1:4f1c...:9b1f...",
        "publish": ["orders.>"],
        "consume": ["orders"],
        "manage": ["orders"],
        "read_state": ["carts"],
        "write_state": ["carts"],
        "metrics": ["orders"],
        "max_streams": 5,
        "max_consumers": 20
    }]}

``token`` is, best, the salted scrypt hash ``windshift-grpc token`` prints
(:func:`hashed`), so that the file gives no token away; or the token itself
(:data:`MIN_TOKEN_LENGTH` characters or more, :data:`MIN_DISTINCT_CHARACTERS`
different ones), in a file no one else may read; or, deprecated, ``sha256:``
and the hex SHA-256 of it (read with a warning). No token ever appears in a
log line or an error message, only its entry's name.

Stream permissions never reach the streams behind state and object stores
(``KV_*``, ``OBJ_*``), and no permission reaches NATS' own subjects
(``$JS.…``, ``$KV.…``, ``_INBOX.…``): see :func:`internal_stream` and
:func:`internal_subject`. See docs/security.md for which call needs which
permission.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from windshift_grpc.settings import SettingsError

logger = logging.getLogger("windshift_grpc.auth")

#: Shortest token accepted (in the file as itself, or by ``windshift-grpc token --hash``).
MIN_TOKEN_LENGTH = 16
#: Fewest different characters a token must have ("aaaa…", "abab…" are refused).
MIN_DISTINCT_CHARACTERS = 10
#: scrypt cost of the hashes :func:`hashed` makes: about 0.1 s and 32 MiB, once
#: per distinct token per server process (the result is cached).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_PREFIX = "scrypt:"
_SCRYPT = re.compile(r"scrypt:n=(\d+),r=(\d+),p=(\d+):([0-9a-f]{32,128}):([0-9a-f]{64})")
# What a hash in the file may cost to check: more would let a bad file (or a
# copied parameter) stall the server on every new token.
_SCRYPT_MAX_N, _SCRYPT_MAX_R, _SCRYPT_MAX_P = 2**20, 16, 4
_SCRYPT_MAX_MEMORY = 256 * 2**20
_SHA256_PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")
_SETTING = "WINDSHIFT_AUTH_FILE"

#: Stream name prefixes of JetStream's key-value buckets (windshift's state
#: stores: ``KV_<store>``) and object stores (``OBJ_<bucket>``).
INTERNAL_STREAM_PREFIXES = ("KV_", "OBJ_")
# First tokens of subjects NATS keeps for itself: the JetStream API and its
# stores ($JS, $KV, $O, $SYS, ...), request replies (_INBOX), and the reply
# subjects of service imports (_R_) and gateways (_GR_).
_INTERNAL_FIRST_TOKENS = ("_R_", "_GR_")
_INBOX_PREFIX = "_INBOX"


class AccessError(Exception):
    """A call the façade refuses before it reaches the library."""


class AuthenticationError(AccessError):
    """No valid bearer token (gRPC UNAUTHENTICATED)."""


class PermissionDeniedError(AccessError):
    """The token does not grant what the call needs (gRPC PERMISSION_DENIED)."""


class QuotaExceededError(AccessError):
    """More streams or consumers than the token may have (gRPC RESOURCE_EXHAUSTED)."""


class Permission(enum.Enum):
    """What a token may do, each scoped by patterns of one kind of name."""

    #: publish events on subjects (PublishEvent), and collect them in a stream.
    PUBLISH = "publish"
    #: subscribe to the consumers of streams and settle their events (Events).
    CONSUME = "consume"
    #: create and change streams, create and delete their consumers.
    MANAGE = "manage"
    #: read keys of state stores (Get).
    READ_STATE = "read_state"
    #: create state stores, write and delete their keys (EnsureStore, Set, Delete).
    WRITE_STATE = "write_state"
    #: read ``/metrics``: the series of matching streams (and dead-letter streams);
    #: with ``*`` or ``>`` also those of no stream (:mod:`windshift_grpc.metrics`).
    METRICS = "metrics"

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
    Permission.METRICS: "stream",
}
_VERBS = {
    Permission.PUBLISH: "publish on subject",
    Permission.CONSUME: "consume stream",
    Permission.MANAGE: "manage stream",
    Permission.READ_STATE: "read state store",
    Permission.WRITE_STATE: "write state store",
    Permission.METRICS: "read the metrics of stream",
}
_QUOTAS = ("max_streams", "max_consumers")


def internal_stream(name: str) -> bool:
    """Whether ``name`` is a stream JetStream keeps for a store (``KV_*``, ``OBJ_*``).

    Stream permissions (consume, manage, metrics) never match one, whatever the
    pattern: a state store is reached only through ``read_state`` and
    ``write_state``.
    """
    return name.startswith(INTERNAL_STREAM_PREFIXES)


def internal_subject(subject: str) -> bool:
    """Whether ``subject`` (or a filter) may reach a subject NATS keeps for itself.

    Those start with ``$`` (``$JS.API.…``, ``$KV.<store>.…``, ``$O.…``,
    ``$SYS.…``), ``_INBOX`` (request replies: JetStream's answers, a state
    store's values) or ``_R_`` / ``_GR_``. A filter whose first token is a
    wildcard (``>``, ``*.created``) reaches them too.

    Example:
        >>> internal_subject("_INBOX.>"), internal_subject("*.created"), internal_subject("a.>")
        (True, True, False)
    """
    first = subject.split(".", 1)[0]
    return (
        first in ("*", ">")
        or first.startswith(("$", _INBOX_PREFIX))
        or first in _INTERNAL_FIRST_TOKENS
    )


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


def covers(pattern: str, subject_filter: str) -> bool:
    """Whether every subject ``subject_filter`` matches also matches ``pattern``.

    For a filter without wildcards this is :func:`matches`. A ``*`` of the
    filter is covered only by ``*`` or ``>`` in the pattern, and its ``>``
    only by ``>`` (a ``*`` stands for one token, and ``>`` for one or more).

    Example:
        >>> covers("orders.>", "orders.*.eu"), covers("orders.*", "orders.>")
        (True, False)
    """
    wanted = pattern.split(".")
    given = subject_filter.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given):
            return False
        if given[index] == ">":  # one or more tokens: only a '>' holds them all
            return False
        if token != "*" and (given[index] == "*" or token != given[index]):
            return False
    return len(given) == len(wanted)


@dataclass(frozen=True, slots=True)
class Grant:
    """One entry of the tokens file: a name, permissions, quotas, and how its token is stored.

    Attributes:
        name: the entry's name, for logs and messages.
        credential: the token as the file stores it (its hash), which
            identifies the entry across reloads; never logged.
        permissions: the patterns of each permission.
        max_streams: how many streams the token's ``manage`` patterns may
            match; None: no limit.
        max_consumers: how many consumers those streams may have; None: no limit.
    """

    name: str
    credential: str = field(repr=False)
    permissions: Mapping[Permission, tuple[str, ...]]
    max_streams: int | None = None
    max_consumers: int | None = None

    def allows(self, permission: Permission, name: str) -> bool:
        """Whether this token may do ``permission`` on the subject, stream or store ``name``.

        For ``publish``, ``name`` may be a filter (``orders.*``): allowed when
        one pattern :func:`covers` all of it. Stream permissions never reach
        :func:`internal_stream` names, nor publish :func:`internal_subject` ones.
        """
        scope = permission.scope
        if scope == "stream" and internal_stream(name):
            return False
        patterns = self.permissions.get(permission, ())
        if scope == "subject":
            return not internal_subject(name) and any(covers(p, name) for p in patterns)
        return any(matches(pattern, name) for pattern in patterns)

    def require(self, permission: Permission, name: str) -> None:
        """Raise :class:`PermissionDeniedError` unless :meth:`allows`."""
        if self.allows(permission, name):
            return
        denied = f"token {self.name!r} may not {_VERBS[permission]} {name!r}"
        if permission.scope == "stream" and internal_stream(name):
            denied += (
                " (it holds a state or object store: only read_state and write_state reach it)"
            )
        elif permission.scope == "subject" and internal_subject(name):
            denied += " (it may reach subjects NATS keeps for itself: $JS, $KV, _INBOX, ...)"
        elif permission.scope == "subject" and ("*" in name.split(".") or name.endswith(">")):
            denied = (
                f"token {self.name!r} may not publish on every subject of {name!r} (a stream "
                "collecting them needs a publish pattern that covers them all)"
            )
        raise PermissionDeniedError(denied)


def weakness(token: str) -> str | None:
    """Why ``token`` is too weak to accept, or None.

    A token needs :data:`MIN_TOKEN_LENGTH` characters, of which at least
    :data:`MIN_DISTINCT_CHARACTERS` different ones, and no surrounding spaces.
    (``windshift-grpc token`` makes 43 random characters of 64 possible.)
    """
    if token != token.strip():
        return "it has surrounding spaces"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"it needs {MIN_TOKEN_LENGTH} characters or more"
    if len(set(token)) < MIN_DISTINCT_CHARACTERS:
        return f"it needs {MIN_DISTINCT_CHARACTERS} different characters or more"
    return None


def digest(token: str) -> bytes:
    """The SHA-256 of a token (the deprecated ``sha256:<hex>`` form of the file)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class _ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def text(self) -> str:
        return (
            f"{_SCRYPT_PREFIX}n={self.n},r={self.r},p={self.p}:{self.salt.hex()}:{self.key.hex()}"
        )

    def derive(self, token: str) -> bytes:
        return hashlib.scrypt(
            token.encode(),
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=2 * _SCRYPT_MAX_MEMORY,
            dklen=len(self.key),
        )

    def verify(self, token: str) -> bool:
        return hmac.compare_digest(self.derive(token), self.key)

    @classmethod
    def parse(cls, text: str, where: str) -> _ScryptHash:
        found = _SCRYPT.fullmatch(text.lower())
        if found is None:
            raise ValueError(
                f"{where}: a hashed token is 'scrypt:n=<N>,r=<r>,p=<p>:<hex salt>:<64 hex digits>' "
                "(make one with `windshift-grpc token`)"
            )
        n, r, p = (int(found.group(index)) for index in (1, 2, 3))
        if (
            n < 2**10
            or n > _SCRYPT_MAX_N
            or n & (n - 1)
            or not 1 <= r <= _SCRYPT_MAX_R
            or not 1 <= p <= _SCRYPT_MAX_P
            or 128 * n * r > _SCRYPT_MAX_MEMORY
        ):
            raise ValueError(
                f"{where}: scrypt parameters n={n}, r={r}, p={p} are out of range (n a power "
                f"of two from 1024 to {_SCRYPT_MAX_N}, r 1 to {_SCRYPT_MAX_R}, p 1 to "
                f"{_SCRYPT_MAX_P}, at most {_SCRYPT_MAX_MEMORY // 2**20} MiB)"
            )
        return cls(n, r, p, bytes.fromhex(found.group(4)), bytes.fromhex(found.group(5)))


def hashed(token: str) -> str:
    """The salted scrypt hash of a token for the tokens file (``scrypt:n=…:<salt>:<hash>``)."""
    salt = secrets.token_bytes(16)
    empty = _ScryptHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, bytes(32))
    return _ScryptHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, empty.derive(token)).text()


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
    """The tokens of a tokens file.

    Args:
        grants: the entries; two with the same token are refused by :meth:`load`.
    """

    def __init__(self, grants: Sequence[Grant]) -> None:
        self.grants = tuple(grants)
        self._by_credential = {grant.credential: grant for grant in self.grants}
        # The entries checked with one SHA-256 (plain and "sha256:" ones), and
        # those each needing a scrypt of the presented token.
        self._digests = [
            (bytes.fromhex(grant.credential[len(_SHA256_PREFIX) :]), grant.credential)
            for grant in self.grants
            if grant.credential.startswith(_SHA256_PREFIX)
        ]
        self._scrypts = [
            (_ScryptHash.parse(grant.credential, grant.name), grant.credential)
            for grant in self.grants
            if grant.credential.startswith(_SCRYPT_PREFIX)
        ]

    def __len__(self) -> int:
        return len(self.grants)

    @property
    def slow(self) -> bool:
        """Whether checking a new token costs a scrypt (some entry is hashed with it)."""
        return bool(self._scrypts)

    def get(self, credential: str) -> Grant | None:
        """The entry whose token is stored as ``credential`` (None: not in this file)."""
        return self._by_credential.get(credential)

    def credential_of(self, token: str) -> str | None:
        """The credential of the entry holding ``token``, or None.

        Compares with every entry in constant time (no early exit); with
        scrypt entries this costs one scrypt each, so callers cache the
        answer (:class:`~windshift_grpc.permissions.Access` does).
        """
        found: str | None = None
        token_digest = digest(token)
        for entry_digest, credential in self._digests:
            if hmac.compare_digest(entry_digest, token_digest) and found is None:
                found = credential
        for scrypt_hash, credential in self._scrypts:
            if scrypt_hash.verify(token) and found is None:
                found = credential
        return found

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Read a tokens file (JSON, or TOML for ``*.toml``).

        A file that others may read gets a warning, or, when it holds
        tokens as themselves, is refused; one others may write is refused.
        ``sha256:`` entries get a deprecation warning.

        Raises:
            SettingsError: (naming ``WINDSHIFT_AUTH_FILE``) the file cannot be
                read or is not a valid tokens file; the message says where.
        """
        try:
            raw = path.read_bytes()
            mode = path.stat().st_mode
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
            grants, plain, legacy = _grants(document)
        except ValueError as exc:
            raise SettingsError(_SETTING, f"{str(path)!r}: {exc}") from None
        _check_mode(path, mode, plain)
        for name in legacy:
            logger.warning(
                "token %r in %s is stored as an unsalted sha256: digest, which is deprecated: "
                "hash it again with `windshift-grpc token --hash` (salted scrypt)",
                name,
                path,
            )
        return cls(grants)


def _check_mode(path: Path, mode: int, plain: list[str]) -> None:
    """Refuse or warn about a tokens file other users may read or write."""
    if os.name != "posix":
        return  # POSIX permission bits only
    others = stat.S_IMODE(mode) & 0o077
    if not others:
        return
    shown = f"{str(path)!r} (mode {stat.S_IMODE(mode):04o})"
    if plain:
        raise SettingsError(
            _SETTING,
            f"{shown} holds tokens as themselves (token {plain[0]!r}) and other users may "
            "access it: chmod 600 it, or store the tokens hashed (windshift-grpc token)",
        )
    if others & 0o022:
        raise SettingsError(
            _SETTING,
            f"{shown} may be written by other users, who could give themselves any "
            "permission: chmod 600 it (or 644)",
        )
    logger.warning(
        "the tokens file %s may be read by other users: chmod 600 it (its tokens are hashed)",
        shown,
    )


_KEYS = {"name", "token", *_QUOTAS} | {permission.value for permission in Permission}


def _grants(document: Any) -> tuple[list[Grant], list[str], list[str]]:
    """The entries; the names of those holding a plain token, and of those in sha256: form."""
    if not isinstance(document, dict) or set(document) != {"tokens"}:
        raise ValueError('expected one key, "tokens", holding a list of tokens')
    entries = document["tokens"]
    if not isinstance(entries, list) or not entries:
        raise ValueError('"tokens" must be a list of at least one token')
    grants: list[Grant] = []
    names: set[str] = set()
    credentials: set[str] = set()
    plain: list[str] = []
    legacy: list[str] = []
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
        token = entry.get("token")
        credential = _credential(token, where)
        if credential in credentials:
            raise ValueError(f"{where} has the same token as another entry")
        if isinstance(token, str) and token.startswith(_SHA256_PREFIX):
            legacy.append(name)
        elif not credential.startswith(_SCRYPT_PREFIX):
            plain.append(name)
        permissions = {
            permission: _patterns(entry.get(permission.value, []), permission, where)
            for permission in Permission
        }
        quotas = {key: _quota(entry.get(key), f"{where}: {key}") for key in _QUOTAS}
        names.add(name)
        credentials.add(credential)
        grants.append(Grant(name=name, credential=credential, permissions=permissions, **quotas))
    return grants, plain, legacy


def _credential(token: Any, where: str) -> str:
    """How the entry's token is compared: ``sha256:<hex>`` or its scrypt hash.

    Messages name the entry, never the token's value.
    """
    if not isinstance(token, str) or not token:
        raise ValueError(
            f'{where} needs a "token" (its scrypt hash from `windshift-grpc token`, '
            "or the token itself)"
        )
    if token.startswith(_SCRYPT_PREFIX):
        return _ScryptHash.parse(token, where).text()
    if token.startswith(_SHA256_PREFIX):
        hex_digest = token[len(_SHA256_PREFIX) :].lower()
        if not _HEX.fullmatch(hex_digest):
            raise ValueError(f"{where}: a sha256 token is 'sha256:' and 64 hex digits")
        return _SHA256_PREFIX + hex_digest
    why = weakness(token)
    if why is not None:
        raise ValueError(
            f"{where}: the token is too weak: {why} (make one with `windshift-grpc token`)"
        )
    return _SHA256_PREFIX + digest(token).hex()


def _quota(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a whole number of 0 or more, got {value!r}")
    return value


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
        # A pattern that can only name what it never reaches is a mistake.
        if permission.scope == "stream" and internal_stream(pattern):
            raise ValueError(
                f"{key}: {pattern!r} names the stream of a state or object store, which "
                "stream permissions never reach (use read_state and write_state)"
            )
        wild_first = tokens[0] in ("*", ">")  # reaches ordinary subjects too
        if permission.scope == "subject" and not wild_first and internal_subject(pattern):
            raise ValueError(
                f"{key}: {pattern!r} names subjects NATS keeps for itself, which "
                "no permission reaches"
            )
    return tuple(value)


__all__ = [
    "INTERNAL_STREAM_PREFIXES",
    "MIN_DISTINCT_CHARACTERS",
    "MIN_TOKEN_LENGTH",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "AccessError",
    "AuthenticationError",
    "Grant",
    "Permission",
    "PermissionDeniedError",
    "QuotaExceededError",
    "Tokens",
    "bearer",
    "covers",
    "digest",
    "hashed",
    "internal_stream",
    "internal_subject",
    "matches",
    "weakness",
]
