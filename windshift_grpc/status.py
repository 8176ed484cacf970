"""The one table: windshift errors (and the façade's own) -> gRPC status codes.

Every error a call raises goes through :func:`status_for`, once, in
:class:`windshift_grpc.calls.CallLayer`, so a client only ever sees the
codes below. Besides them there are only UNAVAILABLE for a call refused
while the server drains for a graceful stop (answered by the call layer
itself), and CANCELLED, DEADLINE_EXCEEDED, UNIMPLEMENTED and
RESOURCE_EXHAUSTED (a message over gRPC's size limit), which gRPC produces
on its own.

====================================  ====================
error                                 gRPC status
====================================  ====================
``ValidationError``                   INVALID_ARGUMENT
``NotFoundError``                     NOT_FOUND
``ConflictError``                     ABORTED
``AlreadyExistsError``                ALREADY_EXISTS
``ConfigurationConflictError``        FAILED_PRECONDITION
``UnavailableError``                  UNAVAILABLE
``EventSettledError``                 FAILED_PRECONDITION
``auth.AuthenticationError``          UNAUTHENTICATED
``auth.PermissionDeniedError``        PERMISSION_DENIED
``auth.QuotaExceededError``           RESOURCE_EXHAUSTED
``TooManyCallsError``                 RESOURCE_EXHAUSTED
====================================  ====================

The class is looked up along the error's MRO, so a subclass answers as its
parent: ``StreamNotFoundError``, ``ConsumerNotFoundError``,
``StoreNotFoundError`` and ``KeyNotFoundError`` are NOT_FOUND. The last
four rows are the façade's own: no valid bearer token, a token that does
not grant what the call needs, a call past the token's quota of streams or
consumers (:mod:`windshift_grpc.auth`), and an Events call beyond
``WINDSHIFT_MAX_EVENTS_CALLS``, or ``WINDSHIFT_MAX_EVENTS_CALLS_PER_TOKEN``
of its token (defined here).

Nothing a client sends may produce UNKNOWN or INTERNAL. An error the table
does not know is answered thus:

* a :class:`~windshift.WindshiftError` derived from none of the classes
  above (only from the base class) is a refusal on purpose:
  FAILED_PRECONDITION with its message, not logged;
* a ``ValueError``, ``TypeError`` or ``OverflowError`` is taken as a value
  the façade could not convert (a Duration out of range, an enum number the
  proto does not define): logged with its traceback, and answered
  INVALID_ARGUMENT (``invalid request: ...``);
* anything else is a bug: logged with its traceback, and answered
  UNAVAILABLE, which the client may retry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

import grpc

from windshift.errors import (
    AlreadyExistsError,
    ConfigurationConflictError,
    ConflictError,
    EventSettledError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    WindshiftError,
)
from windshift_grpc.auth import AuthenticationError, PermissionDeniedError, QuotaExceededError


class TooManyCallsError(Exception):
    """A limit on open Events calls is reached (WINDSHIFT_MAX_EVENTS_CALLS, or _PER_TOKEN)."""


logger = logging.getLogger("windshift_grpc.status")

#: error class -> gRPC status code. Looked up along the class's MRO, so
#: subclasses map like their parents.
STATUS_CODES: Mapping[type[Exception], grpc.StatusCode] = MappingProxyType(
    {
        ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
        NotFoundError: grpc.StatusCode.NOT_FOUND,
        ConflictError: grpc.StatusCode.ABORTED,
        AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
        ConfigurationConflictError: grpc.StatusCode.FAILED_PRECONDITION,
        UnavailableError: grpc.StatusCode.UNAVAILABLE,
        EventSettledError: grpc.StatusCode.FAILED_PRECONDITION,
        AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
        PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
        QuotaExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
        TooManyCallsError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# Raised by conversions of values the library never sees (a Duration out of
# range, an enum number the proto does not define): the client's fault.
_ARGUMENT_ERRORS = (ValueError, TypeError, OverflowError)


def status_for(error: BaseException, method: str = "") -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message to answer ``error`` with.

    Example:
        >>> status_for(windshift.NotFoundError("stream 'orders' does not exist"))
        (<StatusCode.NOT_FOUND: ...>, "stream 'orders' does not exist")

    Args:
        error: what the servicer raised.
        method: the RPC, for the log line of an unexpected error.
    """
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code, str(error)
    if isinstance(error, WindshiftError):
        # A WindshiftError the table does not list (a new subclass of the
        # base class itself): the library refused the request on purpose.
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, _ARGUMENT_ERRORS):
        logger.error("%s: unexpected %s", method or "rpc", type(error).__name__, exc_info=error)
        return grpc.StatusCode.INVALID_ARGUMENT, f"invalid request: {error}"
    logger.error("%s: unexpected %s", method or "rpc", type(error).__name__, exc_info=error)
    return grpc.StatusCode.UNAVAILABLE, f"the server failed to handle the request ({error!r})"


__all__ = ["STATUS_CODES", "TooManyCallsError", "status_for"]
