"""One layer for every call: authenticate, admit, decode, authorize, run, map the status, log.

:class:`CallLayer` is the server's only interceptor. It wraps the handler of
every method once, at the method's first call, and gRPC gets no request
deserializer: a request stays bytes until its call is admitted. For each call, each step once, in this order:

1. **authenticate**: with a tokens file, the ``authorization: Bearer``
   metadata must name one of its tokens (UNAUTHENTICATED);
2. **admit**: the call is counted, or refused with UNAVAILABLE while the
   server drains for a graceful stop (:mod:`windshift_grpc.admission`);
3. **decode**: only now, after authentication and admission (a streaming
   call: each message as it is read), are the request's bytes decoded, so
   an unauthenticated client cannot make the server build a huge message;
   bytes that do not parse as the request message are answered
   INVALID_ARGUMENT naming the field at fault (gRPC itself would say UNKNOWN;
   see :mod:`windshift_grpc.undecodable`); a method's guard may refuse the
   bytes before they are decoded (PublishEvents counts its events first:
   decoding a huge batch would cost far more memory than its bytes), and
   the refusal is answered INVALID_ARGUMENT here, after authentication;
4. **authorize**: the token must grant what the request needs
   (:mod:`windshift_grpc.permissions`; PERMISSION_DENIED), within its quota
   (RESOURCE_EXHAUSTED); an Events call is checked on every message, and once
   subscribed it is in the register of open Events calls
   (:class:`~windshift_grpc.admission.EventsCalls`), which
   :meth:`CallLayer.recheck` walks after a reload of the tokens file, so a
   withdrawn token ends its calls at once, silent ones included;
5. **run** the servicer's method inside an OpenTelemetry ``SERVER`` span
   that continues the caller's W3C trace context, so that the library's
   publish span becomes its child (a span that neither records nor
   continues a trace is not made current: nothing would see it);
6. **map** whatever it raises through :mod:`windshift_grpc.status`;
7. **log** one line when the call ends: method, status code, duration
   (never the payload; at INFO only for calls that do not end OK, the
   others at DEBUG, unless ``WINDSHIFT_RPC_LOG=calls``; nothing is
   formatted for a line whose level is off), and record the duration in the histogram
   ``rpc.server.call.duration`` (:data:`windshift_grpc.metrics.RPC_DURATION`).

The servicers hold none of this: they convert, call the library and convert
back. The one exception is the moment an Events call takes its place among
the open ones, which only the call knows (after its Subscribe is validated,
before the subscription opens): it does so through the
:class:`~windshift_grpc.admission.EventsCall` that its :class:`Requests`
carry. Health and reflection calls skip authentication and admission and log
at DEBUG (probes call often).

A refused streaming call first reads the client's first message: grpcio's
asyncio client (1.85 and earlier; grpc/grpc#36066) reports ``INTERNAL:
Internal error from Core`` instead of the server's status when one of its
writes fails because the server already ended the call. Every client of
``Events`` waits for Subscribed after its first message, so reading that
message removes the race.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.descriptor import Descriptor
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from windshift import ValidationError
from windshift_grpc.admission import REFUSAL, Admission, EventsCall, EventsCalls
from windshift_grpc.auth import Permission
from windshift_grpc.metrics import RPC_DURATION, rpc_attributes
from windshift_grpc.permissions import EVENTS_METHOD, PROTECTED, Access, needs
from windshift_grpc.status import status_for
from windshift_grpc.undecodable import explain

logger = logging.getLogger("windshift_grpc.rpc")

T = TypeVar("T")

_TRACER = trace.get_tracer("windshift_grpc")
_PROPAGATOR = TraceContextTextMapPropagator()
# Infrastructure services: their calls are logged at DEBUG (probes call often).
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

FIRST_MESSAGE_WAIT = 1.0
"""Seconds a refusal waits at most for a streaming call's first message before answering."""


Guard = Callable[[bytes], str | None]
"""A look at a request's bytes before they are decoded: why it is refused, or None."""

Decode = Callable[[bytes], Any]
"""A request's bytes to its message; raises :class:`~windshift.ValidationError` (a method's decoder)."""


def _decoder(
    method: str, deserializer: Callable[[bytes], Any] | None, guard: Guard | None = None
) -> Decode | None:
    """What decodes ``method``'s requests in the layer, after authentication and admission.

    gRPC gets no deserializer (it hands over the bytes as they came), so that
    no request is decoded, however large, before its call is admitted. A
    guard's refusal and bytes that do not parse raise ValidationError
    (INVALID_ARGUMENT), naming the field at fault where
    :func:`~windshift_grpc.undecodable.explain` finds it.
    """
    if deserializer is None:
        return None
    # A generated message's FromString: its class holds the descriptor.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def decode(data: bytes) -> Any:
        if guard is not None:
            refusal = guard(data)
            if refusal is not None:
                raise ValidationError(refusal)
        try:
            return deserializer(data)
        except Exception as exc:
            why = explain(descriptor, data) if isinstance(descriptor, Descriptor) else None
            raise ValidationError(
                f"{method}: the request message could not be decoded: "
                f"{why or str(exc) or type(exc).__name__}"
            ) from None

    return decode


class Requests(Generic[T], AsyncIterator[T]):
    """A streaming call's requests: decoded and checked as they are read, readable for a refusal.

    Args:
        raw: the messages' bytes as gRPC hands them over (not decoded yet).
        decode: decodes each message (None: they are used as they come).
        check: called with every request before it is handed on (authorization).
        call: an Events call's place among the open ones (see the module docstring).
    """

    def __init__(
        self,
        raw: AsyncIterator[Any],
        decode: Decode | None,
        check: Callable[[T], None] | None,
        call: EventsCall | None = None,
    ) -> None:
        self._raw = raw
        self._decode = decode
        self._check = check
        self.call = call
        self.started = False

    def __aiter__(self) -> Requests[T]:
        return self

    async def __anext__(self) -> T:
        self.started = True
        data = await anext(self._raw)
        request: T = data if self._decode is None else self._decode(data)
        if self._check is not None:
            self._check(request)
        return request

    async def read_first(self) -> None:
        """Read (and drop) the first message unless some was read already (for a refusal).

        Waits at most :data:`FIRST_MESSAGE_WAIT` seconds; the bytes are not
        decoded, and whatever reading them raises is ignored, as the call is
        being refused anyway.
        """
        if self.started:
            return
        self.started = True
        try:
            async with asyncio.timeout(FIRST_MESSAGE_WAIT):
                await anext(self._raw)
        except grpc.aio.AbortError:
            raise
        except Exception:
            pass  # the refusal is the answer


class _MetadataGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _MetadataGetter()
# The metadata keys of W3C trace context (gRPC metadata keys are lowercase).
_TRACE_KEYS = frozenset(_PROPAGATOR.fields)


@functools.lru_cache(maxsize=1024)
def _attributes(service: str, name: str, code: int) -> Mapping[str, str | int]:
    """The attributes of a call's duration, made once per method and status."""
    return rpc_attributes(service, name, code)


class _Method:
    """What every call of one method shares: its names, log level, and how its requests decode."""

    __slots__ = ("decode", "infrastructure", "level", "name", "path", "protected", "service")

    def __init__(self, path: str, decode: Decode | None, *, log_calls: bool) -> None:
        self.path = path
        self.decode = decode
        self.infrastructure = path.startswith(_QUIET_PREFIXES)
        self.protected = path.startswith(PROTECTED)
        # The level of a call that ends OK (one that does not is logged at INFO).
        self.level = logging.DEBUG if self.infrastructure or not log_calls else logging.INFO
        self.service, _, self.name = path.lstrip("/").partition("/")


class _Call:
    """The bookkeeping of one call: its token, admission, timing, span and log line."""

    __slots__ = (
        "_admission",
        "_admitted",
        "access",
        "code",
        "metadata",
        "method",
        "span",
        "started",
        "token",
    )

    def __init__(
        self,
        method: _Method,
        metadata: Sequence[tuple[str, Any]] | None,
        admission: Admission | None,
        access: Access | None,
    ) -> None:
        self.method = method
        self.metadata = metadata
        self.started = time.perf_counter()
        self._admission = None if method.infrastructure else admission
        self.access = access if method.protected else None
        self.token: str | None = None  # the credential of its bearer token
        carrier: dict[str, str] | None = None
        for key, value in metadata or ():
            if key in _TRACE_KEYS and isinstance(value, str):
                carrier = {} if carrier is None else carrier
                carrier[key] = value
        self.span: Span = _TRACER.start_span(
            method.path[1:],
            context=None if carrier is None else _PROPAGATOR.extract(carrier, getter=_GETTER),
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": method.service,
                "rpc.method": method.name,
            },
        )
        self.code = grpc.StatusCode.OK
        self._admitted = False

    async def open(self, context: Any, requests: Requests[Any] | None = None) -> None:
        """Authenticate and admit the call, or refuse it (raises AbortError)."""
        if self.access is not None:
            try:
                self.token = await self.access.authenticate(self.metadata)
            except Exception as exc:
                await self.fail(context, exc, requests)
        if self._admission is not None:
            if not self._admission.enter():
                self.code = grpc.StatusCode.UNAVAILABLE
                await self._abort(context, REFUSAL, requests)
            self._admitted = True

    def decode(self, data: Any) -> Any:
        """A unary call's request from its bytes (after :meth:`open`); raises ValidationError."""
        decode = self.method.decode
        return data if decode is None else decode(data)

    def running(self) -> contextlib.AbstractContextManager[object]:
        """The call's span as the current one, while the servicer runs.

        A span that records nothing and continues no trace (no SDK, no
        ``traceparent``) would only make an invalid span current, which is
        what is current anyway: it is left out.
        """
        span = self.span
        if not span.is_recording() and not span.get_span_context().is_valid:
            return contextlib.nullcontext()
        return trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def authorized(self, request: Any) -> contextlib.AbstractAsyncContextManager[object]:
        """Check a unary request against the token, for its duration (no-op without tokens)."""
        if self.access is not None and self.token is not None:
            return self.access.authorized(self.token, self.method.path, request)
        return contextlib.nullcontext()

    def events_entry(self, register: EventsCalls) -> EventsCall | None:
        """An Events call's entry for the register of open ones (None for other methods)."""
        if self.method.path != EVENTS_METHOD:
            return None
        access, token, method = self.access, self.token, self.method.path
        if access is None or token is None:
            return EventsCall(register)

        def verify() -> None:
            if call.stream is not None:
                access.check(token, [(Permission.CONSUME, call.stream)], method)

        call = EventsCall(register, token, access.grant(token).name, verify)
        return call

    def stream_check(self, events: EventsCall | None) -> Callable[[Any], None] | None:
        """The per-message check of a streaming call (no-op without a tokens file).

        Events needs consume on the subscribed stream, on every message (the
        stream is kept in ``events``); any other protected streaming method
        is refused (no permission grants it).
        """
        access, token, method = self.access, self.token, self.method.path
        if access is None or token is None:
            return None
        if method != EVENTS_METHOD or events is None:  # (events: only None for the others)
            needs(method, None)  # raises: closed by default
            return None

        def check(request: Any) -> None:
            if events.stream is None and request.WhichOneof("request") == "subscribe":
                events.stream = request.subscribe.stream
            if events.stream is not None:
                access.check(token, [(Permission.CONSUME, events.stream)], method)
            else:  # not a subscribe first: the call itself refuses it, if the token is good
                access.grant(token)

        return check

    async def fail(
        self, context: Any, error: Exception, requests: Requests[Any] | None = None
    ) -> None:
        """Answer ``error`` with its mapped status (raises AbortError)."""
        self.code, message = status_for(error, self.method.path)
        await self._abort(context, message, requests)

    async def _abort(self, context: Any, message: str, requests: Requests[Any] | None) -> None:
        if requests is not None:
            await requests.read_first()
        await context.abort(self.code, message)

    def finish(self, context: Any, error: BaseException | None) -> None:
        """End the span, count the call out, write the log line."""
        if isinstance(error, grpc.aio.AbortError):
            self.code = context.code() or grpc.StatusCode.UNKNOWN
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            self.code = grpc.StatusCode.CANCELLED
        elif error is None:
            self.code = context.code() or grpc.StatusCode.OK
        # else: fail() has set the code
        seconds = time.perf_counter() - self.started
        method, code, span = self.method, self.code, self.span
        RPC_DURATION.record(seconds, _attributes(method.service, method.name, code.value[0]))
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
        if self._admitted and self._admission is not None:
            self._admission.leave()
        level = method.level if code is grpc.StatusCode.OK else max(method.level, logging.INFO)
        if not logger.isEnabledFor(level):
            return  # (nothing formatted for a line that is not written)
        elapsed = seconds * 1000
        fields: dict[str, Any] = {"method": method.path, "code": code.name}
        fields["duration_ms"] = round(elapsed, 1)
        span_context = span.get_span_context()
        if span_context.is_valid:  # the JSON log line carries the call's trace
            fields["trace_id"] = f"{span_context.trace_id:032x}"
            fields["span_id"] = f"{span_context.span_id:016x}"
        logger.log(level, "rpc %s %s %.1fms", method.path, code.name, elapsed, extra=fields)


class CallLayer(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The server's one interceptor: every step of a call, once (see the module docstring).

    Each method's handler is wrapped once, at its first call, and the wrapped
    handler is remembered; a call costs a dictionary lookup here.

    Args:
        admission: counts the API's calls and refuses them while the server
            drains; None: admit everything.
        access: the tokens and their checks; None: the API needs no token.
        events: the register of open Events calls, with its limits; None:
            one with the default limits.
        guards: method -> its :data:`Guard`, run on each request's bytes
            before they are decoded.
        log_calls: a line at INFO for every call (``WINDSHIFT_RPC_LOG=calls``);
            False (the default, ``errors``): only for calls that end with an
            error status, the others at DEBUG.
    """

    def __init__(
        self,
        admission: Admission | None = None,
        access: Access | None = None,
        events: EventsCalls | None = None,
        guards: Mapping[str, Guard] | None = None,
        *,
        log_calls: bool = False,
    ) -> None:
        self.admission = admission
        self.access = access
        self.events = EventsCalls() if events is None else events
        self.guards = dict(guards or {})
        self.log_calls = log_calls
        # path -> (the handler gRPC found, it wrapped by this layer)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def recheck(self) -> int:
        """After a reload of the tokens: end the open Events calls it withdrew; how many."""
        return self.events.recheck() if self.access is not None else 0

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        path: str = details.method
        known = self._wrapped.get(path)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(path, handler)
        if known is not None or len(self._wrapped) < _MAX_METHODS:
            self._wrapped[path] = (handler, wrapped)
        return wrapped

    def wrap(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` of the method ``path`` with every step of the layer around it.

        gRPC gets no request deserializer: the layer decodes the bytes once
        the call is authenticated and admitted (streaming calls: each
        message as it is read).
        """
        method = _Method(
            path,
            _decoder(path, handler.request_deserializer, self.guards.get(path)),
            log_calls=self.log_calls,
        )
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), response_serializer=serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(handler.unary_stream, method), response_serializer=serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(handler.stream_stream, method), response_serializer=serializer
            )
        return grpc.stream_unary_rpc_method_handler(
            self._stream_unary(handler.stream_unary, method), response_serializer=serializer
        )

    def _call(self, method: _Method, context: Any) -> _Call:
        return _Call(method, context.invocation_metadata(), self.admission, self.access)

    def _unary(self, behavior: Any, method: _Method) -> Callable[[Any, Any], Any]:
        async def handle(data: Any, context: Any) -> Any:
            call = self._call(method, context)
            error: BaseException | None = None
            try:
                await call.open(context)
                request = call.decode(data)
                async with call.authorized(request):
                    with call.running():
                        return await behavior(request, context)
            except (grpc.aio.AbortError, asyncio.CancelledError) as exc:
                error = exc
                raise
            except Exception as exc:
                error = exc
                await call.fail(context, exc)
            finally:
                call.finish(context, error)

        return handle

    def _unary_stream(self, behavior: Any, method: _Method) -> Callable[[Any, Any], Any]:
        if not inspect.isasyncgenfunction(behavior):
            # A handler that writes with context.write() (health's Watch).
            return self._unary(behavior, method)

        async def handle(data: Any, context: Any) -> AsyncIterator[Any]:
            call = self._call(method, context)
            error: BaseException | None = None
            try:
                await call.open(context)
                request = call.decode(data)
                async with (
                    call.authorized(request),
                    contextlib.aclosing(behavior(request, context)) as responses,
                ):
                    async for response in responses:
                        yield response
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit) as exc:
                error = exc
                raise
            except Exception as exc:
                error = exc
                await call.fail(context, exc)
            finally:
                call.finish(context, error)

        return handle

    def _streaming(self, behavior: Any, method: _Method) -> Callable[[Any, Any], Any]:
        if not inspect.isasyncgenfunction(behavior):
            # A handler that writes with context.write() (or answers once).
            return self._stream_unary(behavior, method)

        async def handle(raw: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            call = self._call(method, context)
            error: BaseException | None = None
            requests: Requests[Any] = Requests(raw, None, None)
            events: EventsCall | None = None
            try:
                await call.open(context, requests)
                events = call.events_entry(self.events)
                requests = Requests(raw, method.decode, call.stream_check(events), events)
                async with contextlib.aclosing(behavior(requests, context)) as responses:
                    async for response in responses:
                        yield response
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit) as exc:
                error = exc
                raise
            except Exception as exc:
                error = exc
                await call.fail(context, exc, requests)
            finally:
                if events is not None:
                    events.leave()
                call.finish(context, error)

        return handle

    def _stream_unary(self, behavior: Any, method: _Method) -> Callable[[Any, Any], Any]:
        async def handle(raw: AsyncIterator[Any], context: Any) -> Any:
            call = self._call(method, context)
            error: BaseException | None = None
            requests: Requests[Any] = Requests(raw, None, None)
            events: EventsCall | None = None
            try:
                await call.open(context, requests)
                events = call.events_entry(self.events)
                requests = Requests(raw, method.decode, call.stream_check(events), events)
                with call.running():
                    return await behavior(requests, context)
            except (grpc.aio.AbortError, asyncio.CancelledError) as exc:
                error = exc
                raise
            except Exception as exc:
                error = exc
                await call.fail(context, exc, requests)
            finally:
                if events is not None:
                    events.leave()
                call.finish(context, error)

        return handle


# How many methods' wrapped handlers are remembered (only served methods reach here).
_MAX_METHODS = 1024


__all__ = ["FIRST_MESSAGE_WAIT", "CallLayer", "Decode", "Guard", "Requests"]
