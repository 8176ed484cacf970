"""Who is asking the console, and whether the request may be answered at all.

Three checks, in this order, on every request under ``/console``:

- **Host** (DNS rebinding): the ``Host`` header must be an IP address,
  ``localhost``, or one of ``WINDSHIFT_CONSOLE_HOSTS``. A page on a name its
  author controls, pointed at this server's address, is refused, so a
  browser's same-origin rule keeps other sites' scripts away from the
  console's answers.
- **CSRF** (API calls only): the request must carry ``X-Windshift-Console: 1``.
  A browser sends a custom header cross-origin only after a CORS preflight,
  which the console never allows; a form or an image on another site cannot
  add it. An ``Origin`` that is not the console's own is refused too.
- **The token**: with a tokens file, ``Authorization: Bearer <token>`` of an
  entry of the file (the same :class:`~windshift_grpc.permissions.Access` as
  the API). The page keeps the token in the tab's ``sessionStorage`` and
  sends it in that header; it is never in a URL, a cookie or a log line
  (lines name the entry).

:class:`Viewer` then says what the token may see and do: the rules are in
docs/console.md, and the patterns are matched by
:meth:`windshift_grpc.auth.Grant.allows`, which keeps stream permissions off
the streams behind state stores (``KV_*``, ``OBJ_*``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from windshift_grpc.auth import AuthenticationError, Grant, Permission, internal_stream
from windshift_grpc.permissions import Access

logger = logging.getLogger("windshift_grpc.console")

#: The header every API call must carry (its value: ``1``).
CSRF_HEADER = "X-Windshift-Console"
#: The permissions that show a stream (its counts, its consumers and their lag).
SEE_STREAM = (Permission.CONSUME, Permission.MANAGE, Permission.METRICS)


class Refused(web.HTTPException):
    """An answer of the API that is an error: JSON ``{"error": ...}`` with a status."""

    def __init__(self, status: int, message: str, **headers: str) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"error": message}),
            content_type="application/json",
            headers=headers or None,
        )


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a ``Host`` header names this console: an IP address, ``localhost`` or ``allowed``."""
    if not host:
        return False
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    if not name:
        return False
    name = name.rstrip(".").lower()
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost" or name in allowed
    return True


def same_origin(request: web.Request) -> bool:
    """Whether the request's ``Origin`` (when it has one) is the console's own."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.netloc.lower() == (request.host or "").lower() and parts.scheme in (
        "http",
        "https",
    )


@dataclass(frozen=True, slots=True)
class Viewer:
    """The token behind a request (None: no tokens file, everything is allowed).

    Attributes:
        grant: the token's entry of the tokens file.
    """

    grant: Grant | None

    @property
    def name(self) -> str | None:
        """The entry's name (None: no tokens file)."""
        return None if self.grant is None else self.grant.name

    def may(self, permission: Permission, name: str) -> bool:
        """Whether the token grants ``permission`` on ``name`` (a stream, subject or store)."""
        if self.grant is None:
            # Without tokens the console is as open as the API, stores' streams
            # still shown only as stores.
            return not (permission.scope == "stream" and internal_stream(name))
        return self.grant.allows(permission, name)

    def sees_stream(self, stream: str) -> bool:
        """Whether the stream is shown at all (its counts and consumers)."""
        return any(self.may(permission, stream) for permission in SEE_STREAM)

    def require(self, permission: Permission, name: str, what: str) -> None:
        """Refuse with 403 unless :meth:`may`.

        Raises:
            Refused: 403, naming the token's entry and what it lacks.
        """
        if self.may(permission, name):
            return
        message = f"token {self.name!r} may not {what} (it needs {permission.value} on {name!r})"
        logger.info("console denied: %s", message)
        raise Refused(403, message)

    def summary(self) -> dict[str, object]:
        """What the page is told about the token: its name and its patterns."""
        if self.grant is None:
            return {"name": None, "tokens": False, "permissions": {}}
        return {
            "name": self.grant.name,
            "tokens": True,
            "permissions": {
                permission.value: list(patterns)
                for permission, patterns in self.grant.permissions.items()
                if patterns
            },
        }


async def viewer_of(request: web.Request, access: Access | None) -> Viewer:
    """The :class:`Viewer` of an API request.

    Raises:
        Refused: 401 without a valid bearer token.
    """
    if access is None:
        return Viewer(None)
    try:
        credential = await access.authenticate(request.headers.items())
        return Viewer(access.grant(credential))
    except AuthenticationError:
        raise Refused(
            401,
            "no valid token: send 'Authorization: Bearer <token>' with a token of the "
            "server's tokens file",
            **{"WWW-Authenticate": "Bearer"},
        ) from None


__all__ = [
    "CSRF_HEADER",
    "SEE_STREAM",
    "Refused",
    "Viewer",
    "host_allowed",
    "same_origin",
    "viewer_of",
]
