"""The server interceptor: what every RPC gets, whatever its service.

Per call it

* decodes the request safely: bytes that do not parse as the request
  message are answered with INVALID_ARGUMENT (gRPC itself would say UNKNOWN);
* opens an OpenTelemetry ``SERVER`` span continuing the caller's W3C trace
  context (``traceparent`` / ``tracestate`` metadata), current while a unary
  call runs, so that the library's publish span becomes its child;
* counts the call in (see :mod:`windshift_grpc.admission`), or refuses it
  with UNAVAILABLE while the server drains for a graceful stop;
* maps anything a handler raises through :mod:`windshift_grpc.status`, as a
  last resort (the servicers already do);
* writes one log line when the call ends: method, status code, duration.
  Never the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from windshift import ValidationError
from windshift_grpc.admission import REFUSAL, Admission
from windshift_grpc.refusal import RequestStream
from windshift_grpc.status import status_for
from windshift_grpc.undecodable import explain

logger = logging.getLogger("windshift_grpc.rpc")

_TRACER = trace.get_tracer("windshift_grpc")
_PROPAGATOR = TraceContextTextMapPropagator()
# Infrastructure services: their calls are logged at DEBUG (probes call often).
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class _Malformed:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class _MetadataGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _MetadataGetter()


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    # A generated message's FromString: its class holds the descriptor.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            why = explain(descriptor, data) if isinstance(descriptor, Descriptor) else None
            return _Malformed(why or str(exc) or type(exc).__name__)

    return deserialize


def _malformed(method: str, request: _Malformed) -> ValidationError:
    return ValidationError(f"{method}: the request message could not be decoded: {request.error}")


async def _checked(method: str, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Malformed):
            raise _malformed(method, request)
        yield request


class _Rpc:
    """Admission, timing, span and log line of one call."""

    def __init__(
        self,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        admission: Admission | None,
    ) -> None:
        self.method = method
        self.started = time.perf_counter()
        quiet = method.startswith(_QUIET_PREFIXES)
        self._level = logging.DEBUG if quiet else logging.INFO
        self._admission = None if quiet else admission
        carrier = {
            str(key).lower(): value for key, value in (metadata or ()) if isinstance(value, str)
        }
        service, _, name = method.lstrip("/").partition("/")
        self.span: Span = _TRACER.start_span(
            method.lstrip("/"),
            context=_PROPAGATOR.extract(carrier, getter=_GETTER),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        self.code = grpc.StatusCode.OK
        self._admitted = False

    async def admit(self, context: Any, requests: RequestStream[Any] | None = None) -> None:
        """Count the call in, or refuse it with UNAVAILABLE while the server drains."""
        if self._admission is None:
            return
        if not self._admission.enter():
            self.code = grpc.StatusCode.UNAVAILABLE
            await self._abort(context, REFUSAL, requests)
        self._admitted = True

    async def fail(
        self, context: Any, error: Exception, requests: RequestStream[Any] | None = None
    ) -> None:
        """Answer ``error`` with its mapped status (raises AbortError)."""
        self.code, message = status_for(error, self.method)
        await self._abort(context, message, requests)

    async def _abort(self, context: Any, message: str, requests: RequestStream[Any] | None) -> None:
        if requests is not None:
            await requests.read_first()  # see windshift_grpc.refusal
        await context.abort(self.code, message)

    def finish(self, context: Any, error: BaseException | None) -> None:
        if isinstance(error, grpc.aio.AbortError):
            self.code = context.code() or grpc.StatusCode.UNKNOWN
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            self.code = grpc.StatusCode.CANCELLED
        elif error is None:
            self.code = context.code() or grpc.StatusCode.OK
        # else: fail() has set the code
        elapsed = (time.perf_counter() - self.started) * 1000
        self.span.set_attribute("rpc.grpc.status_code", self.code.value[0])
        if self.code is not grpc.StatusCode.OK:
            self.span.set_status(Status(StatusCode.ERROR, self.code.name))
        self.span.end()
        if self._admitted and self._admission is not None:
            self._admission.leave()
        context = self.span.get_span_context()
        fields = {"method": self.method, "code": self.code.name, "duration_ms": round(elapsed, 1)}
        if context.is_valid:  # the JSON log line carries the call's trace
            fields.update(trace_id=f"{context.trace_id:032x}", span_id=f"{context.span_id:016x}")
        logger.log(
            self._level, "rpc %s %s %.1fms", self.method, self.code.name, elapsed, extra=fields
        )


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Safe decoding, a server span, status mapping and a log line for every RPC.

    Args:
        admission: counts the calls of the API (not health or reflection) and
            refuses them while the server drains; none: admit everything.
    """

    def __init__(self, admission: Admission | None = None) -> None:
        self._admission = admission

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        metadata = details.invocation_metadata
        options = {
            "request_deserializer": _safe(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, method, metadata, self._admission, streaming=False),
                **options,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, method, metadata, self._admission, streaming=True),
                **options,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(
                    handler.unary_stream, method, metadata, self._admission, streaming=False
                ),
                **options,
            )
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, method, metadata, self._admission, streaming=True),
            **options,
        )


def _request(method: str, request: Any, streaming: bool) -> Any:
    if streaming:
        return _checked(method, request)
    if isinstance(request, _Malformed):
        raise _malformed(method, request)
    return request


def _unary(
    behavior: Callable[[Any, Any], Any],
    method: str,
    metadata: Any,
    admission: Admission | None,
    *,
    streaming: bool,
) -> Callable[[Any, Any], Any]:
    async def handle(request: Any, context: Any) -> Any:
        rpc = _Rpc(method, metadata, admission)
        error: BaseException | None = None
        try:
            await rpc.admit(context)
            with trace.use_span(
                rpc.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                return await behavior(_request(method, request, streaming), context)
        except (grpc.aio.AbortError, asyncio.CancelledError) as exc:
            error = exc
            raise
        except Exception as exc:
            error = exc
            await rpc.fail(context, exc)
        finally:
            rpc.finish(context, error)

    return handle


def _streaming(
    behavior: Callable[[Any, Any], Any],
    method: str,
    metadata: Any,
    admission: Admission | None,
    *,
    streaming: bool,
) -> Callable[[Any, Any], Any]:
    if not inspect.isasyncgenfunction(behavior):
        # A handler that writes with context.write() and returns nothing.
        return _unary(behavior, method, metadata, admission, streaming=streaming)

    async def handle(request: Any, context: Any) -> AsyncIterator[Any]:
        rpc = _Rpc(method, metadata, admission)
        error: BaseException | None = None
        # A refusal reads the first message first: see windshift_grpc.refusal.
        requests = RequestStream(_checked(method, request)) if streaming else None
        try:
            await rpc.admit(context, requests)
            responses = behavior(
                _request(method, request, False) if requests is None else requests, context
            )
            async with contextlib.aclosing(responses):
                async for response in responses:
                    yield response
        except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit) as exc:
            error = exc
            raise
        except Exception as exc:
            error = exc
            await rpc.fail(context, exc, requests)
        finally:
            rpc.finish(context, error)

    return handle


__all__ = ["ServerInterceptor"]
