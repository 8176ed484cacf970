"""One layer for every call: authenticate, admit, decode, authorize, run, map the status, log.

:class:`CallLayer` is the server's only interceptor. For each call, each step
once, in this order:

1. **authenticate**: with a tokens file, the ``authorization: Bearer``
   metadata must name one of its tokens (UNAUTHENTICATED);
2. **admit**: the call is counted, or refused with UNAVAILABLE while the
   server drains for a graceful stop (:mod:`windshift_grpc.admission`);
3. **decode**: bytes that do not parse as the request message are answered
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
   publish span becomes its child;
6. **map** whatever it raises through :mod:`windshift_grpc.status`;
7. **log** one line when the call ends: method, status code, duration
   (never the payload), and record the duration in the histogram
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


class _Malformed:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class _Refused(_Malformed):
    """Stands in for a request its method's guard refused before decoding."""

    __slots__ = ()


def _safe(
    deserializer: Callable[[bytes], Any] | None, guard: Guard | None = None
) -> Callable[[bytes], Any] | None:
    """A deserializer that hands back a :class:`_Malformed` instead of raising."""
    if deserializer is None:
        return None
    # A generated message's FromString: its class holds the descriptor.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def deserialize(data: bytes) -> Any:
        refusal = None if guard is None else guard(data)
        if refusal is not None:
            return _Refused(refusal)
        try:
            return deserializer(data)
        except Exception as exc:
            why = explain(descriptor, data) if isinstance(descriptor, Descriptor) else None
            return _Malformed(why or str(exc) or type(exc).__name__)

    return deserialize


def _decoded(method: str, request: Any) -> Any:
    if isinstance(request, _Refused):
        raise ValidationError(request.error)
    if isinstance(request, _Malformed):
        raise ValidationError(
            f"{method}: the request message could not be decoded: {request.error}"
        )
    return request


class Requests(Generic[T], AsyncIterator[T]):
    """A streaming call's requests: decoded and checked as they are read, readable for a refusal.

    Args:
        raw: the messages as gRPC hands them over (possibly malformed).
        method: the RPC, for messages.
        check: called with every request before it is handed on (authorization).
        call: an Events call's place among the open ones (see the module docstring).
    """

    def __init__(
        self,
        raw: AsyncIterator[Any],
        method: str,
        check: Callable[[T], None] | None,
        call: EventsCall | None = None,
    ) -> None:
        self._raw = raw
        self._method = method
        self._check = check
        self.call = call
        self.started = False

    def __aiter__(self) -> Requests[T]:
        return self

    async def __anext__(self) -> T:
        self.started = True
        request: T = _decoded(self._method, await anext(self._raw))
        if self._check is not None:
            self._check(request)
        return request

    async def read_first(self) -> None:
        """Read (and drop) the first message unless some was read already (for a refusal).

        Waits at most :data:`FIRST_MESSAGE_WAIT` seconds; whatever reading it
        raises is ignored, as the call is being refused anyway.
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


class _Call:
    """The bookkeeping of one call: its token, admission, timing, span and log line."""

    def __init__(
        self,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        admission: Admission | None,
        access: Access | None,
    ) -> None:
        self.method = method
        self.metadata = metadata
        self.started = time.perf_counter()
        infrastructure = method.startswith(_QUIET_PREFIXES)
        self._level = logging.DEBUG if infrastructure else logging.INFO
        self._admission = None if infrastructure else admission
        self.access = access if method.startswith(PROTECTED) else None
        self.token: str | None = None  # the credential of its bearer token
        carrier = {
            str(key).lower(): value for key, value in (metadata or ()) if isinstance(value, str)
        }
        service, _, name = method.lstrip("/").partition("/")
        self._service, self._name = service, name
        self.span: Span = _TRACER.start_span(
            method.lstrip("/"),
            context=_PROPAGATOR.extract(carrier, getter=_GETTER),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
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

    def authorized(self, request: Any) -> contextlib.AbstractAsyncContextManager[object]:
        """Check a unary request against the token, for its duration (no-op without tokens)."""
        if self.access is not None and self.token is not None:
            return self.access.authorized(self.token, self.method, request)
        return contextlib.nullcontext()

    def events_entry(self, register: EventsCalls) -> EventsCall | None:
        """An Events call's entry for the register of open ones (None for other methods)."""
        if self.method != EVENTS_METHOD:
            return None
        access, token, method = self.access, self.token, self.method
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
        access, token, method = self.access, self.token, self.method
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
        self.code, message = status_for(error, self.method)
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
        elapsed = seconds * 1000
        RPC_DURATION.record(seconds, rpc_attributes(self._service, self._name, self.code.value[0]))
        self.span.set_attribute("rpc.grpc.status_code", self.code.value[0])
        if self.code is not grpc.StatusCode.OK:
            self.span.set_status(Status(StatusCode.ERROR, self.code.name))
        self.span.end()
        if self._admitted and self._admission is not None:
            self._admission.leave()
        span_context = self.span.get_span_context()
        fields = {"method": self.method, "code": self.code.name, "duration_ms": round(elapsed, 1)}
        if span_context.is_valid:  # the JSON log line carries the call's trace
            fields.update(
                trace_id=f"{span_context.trace_id:032x}", span_id=f"{span_context.span_id:016x}"
            )
        logger.log(
            self._level, "rpc %s %s %.1fms", self.method, self.code.name, elapsed, extra=fields
        )


class CallLayer(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The server's one interceptor: every step of a call, once (see the module docstring).

    Args:
        admission: counts the API's calls and refuses them while the server
            drains; None: admit everything.
        access: the tokens and their checks; None: the API needs no token.
        events: the register of open Events calls, with its limits; None:
            one with the default limits.
        guards: method -> its :data:`Guard`, run on each request's bytes
            before they are decoded.
    """

    def __init__(
        self,
        admission: Admission | None = None,
        access: Access | None = None,
        events: EventsCalls | None = None,
        guards: Mapping[str, Guard] | None = None,
    ) -> None:
        self.admission = admission
        self.access = access
        self.events = EventsCalls() if events is None else events
        self.guards = dict(guards or {})

    def recheck(self) -> int:
        """After a reload of the tokens: end the open Events calls it withdrew; how many."""
        return self.events.recheck() if self.access is not None else 0

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        metadata = details.invocation_metadata
        options = {
            "request_deserializer": _safe(handler.request_deserializer, self.guards.get(method)),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, metadata), **options
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(handler.unary_stream, method, metadata), **options
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(handler.stream_stream, method, metadata), **options
            )
        return grpc.stream_unary_rpc_method_handler(
            self._streaming(handler.stream_unary, method, metadata), **options
        )

    def _call(self, method: str, metadata: Any) -> _Call:
        return _Call(method, metadata, self.admission, self.access)

    def _unary(self, behavior: Any, method: str, metadata: Any) -> Callable[[Any, Any], Any]:
        async def handle(request: Any, context: Any) -> Any:
            call = self._call(method, metadata)
            error: BaseException | None = None
            try:
                await call.open(context)
                request = _decoded(method, request)
                async with call.authorized(request):
                    with trace.use_span(
                        call.span,
                        end_on_exit=False,
                        record_exception=False,
                        set_status_on_exception=False,
                    ):
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

    def _unary_stream(self, behavior: Any, method: str, metadata: Any) -> Callable[[Any, Any], Any]:
        if not inspect.isasyncgenfunction(behavior):
            # A handler that writes with context.write() (health's Watch).
            return self._unary(behavior, method, metadata)

        async def handle(request: Any, context: Any) -> AsyncIterator[Any]:
            call = self._call(method, metadata)
            error: BaseException | None = None
            try:
                await call.open(context)
                request = _decoded(method, request)
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

    def _streaming(self, behavior: Any, method: str, metadata: Any) -> Callable[[Any, Any], Any]:
        async def handle(raw: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            call = self._call(method, metadata)
            error: BaseException | None = None
            requests: Requests[Any] = Requests(raw, method, None)
            events: EventsCall | None = None
            try:
                await call.open(context, requests)
                events = call.events_entry(self.events)
                requests = Requests(raw, method, call.stream_check(events), events)
                if inspect.isasyncgenfunction(behavior):
                    async with contextlib.aclosing(behavior(requests, context)) as responses:
                        async for response in responses:
                            yield response
                else:  # a handler that writes with context.write() (or answers once)
                    answer = await behavior(requests, context)
                    if answer is not None:
                        yield answer
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


__all__ = ["FIRST_MESSAGE_WAIT", "CallLayer", "Guard", "Requests"]
