"""The mapping of domain errors (``chaperon.core.errors``) to gRPC status codes, in one place.

Services raise plain domain exceptions from their domain code (which knows nothing of gRPC);
``grpc_errors`` wraps servicer methods and turns them into a gRPC status with a clear message
and, for bad input, a ``google.rpc.BadRequest`` detail listing each bad field path. The client
side reads them back with ``field_violations``.

Each piece comes twice, once per kind of server: ``grpc_errors``, ``grpc_stream_errors`` and
``DecodeErrorInterceptor`` for grpc's thread-pool server; ``aio_grpc_errors``,
``aio_grpc_stream_errors`` (for coroutines and async generators) and
``AioDecodeErrorInterceptor`` for its asyncio server. Both answer the same statuses.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from chaperon.core.errors import (
    ChaperonError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


# Each domain error's status code; a subclass maps as its nearest listed base.
_CODES: dict[type[ChaperonError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(err: ChaperonError) -> grpc.StatusCode:
    """The gRPC status code a domain error answers with (INTERNAL if unmapped)."""
    for cls in type(err).__mro__:
        code = _CODES.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _to_status(err: ChaperonError) -> grpc.Status:
    code = status_code(err)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=err.message)
    if isinstance(err, InvalidArgument) and err.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in err.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    return rpc_status.to_status(status)


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, ChaperonError):
        context.abort_with_status(_to_status(exc))
    log.error("internal error", exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


async def _abort_async(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, ChaperonError):
        status = _to_status(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)
    log.error("internal error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def grpc_errors(fn: F) -> F:
    """Decorate a unary servicer method: domain errors become gRPC statuses."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except ChaperonError as exc:
            _abort(context, exc)
        except Exception as exc:  # noqa: BLE001 - a bug answers INTERNAL, the server goes on
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def grpc_stream_errors(fn: F) -> F:
    """Decorate a server-streaming servicer method (a generator)."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except ChaperonError as exc:
            _abort(context, exc)
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def aio_grpc_errors(fn: F) -> F:
    """Decorate a unary servicer coroutine of a ``grpc.aio`` server, as ``grpc_errors``.

    Cancellation (the client went away, the server is stopping) passes through untouched, and
    so does grpc's own ``AbortError`` (the method aborted with a status itself).
    """

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - domain errors map; a bug answers INTERNAL
            await _abort_async(context, exc)

    return wrapper  # type: ignore[return-value]


def aio_grpc_stream_errors(fn: F) -> F:
    """Decorate a server-streaming servicer of a ``grpc.aio`` server (an async generator)."""

    @functools.wraps(fn)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        stream = fn(self, request, context)
        try:
            async for message in stream:
                yield message
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort_async(context, exc)
        finally:
            await stream.aclose()  # at once, not when the collector gets to it

    return wrapper  # type: ignore[return-value]


class _Undecodable:
    """Stands for request bytes that did not parse as the method's message type."""

    def __init__(self, type_name: str, error: str) -> None:
        self.message = f"the request is not a valid {type_name} message ({error})"


def _safe_deserializer(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    owner = getattr(deserialize, "__self__", None)
    type_name = getattr(owner, "__name__", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or anything a parser raises
            return _Undecodable(type_name, type(exc).__name__)

    return parse


def _checked_sync(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """``behaviour`` that first answers INVALID_ARGUMENT for a request that did not parse."""

    def checked(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return behaviour(request, context)

    return checked


def _with_checked(handler: Any, checked: Callable[..., Any]) -> grpc.RpcMethodHandler:
    """``handler`` (unary request) with ``checked`` as its behaviour and the deserializer
    that turns unparsable bytes into an ``_Undecodable``."""
    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream is not None
        else grpc.unary_unary_rpc_method_handler
    )
    return make(
        checked,
        request_deserializer=_safe_deserializer(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class DecodeErrorInterceptor(grpc.ServerInterceptor):
    """Answers INVALID_ARGUMENT (not grpcio's INTERNAL) when request bytes do not parse.

    grpcio fails a call whose deserializer raises with INTERNAL "Exception deserializing
    request!" before any servicer code runs; a garbled or wrong-type message is bad input,
    so this wraps each unary-request handler's deserializer and behaviour.
    """

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        behaviour = handler.unary_stream or handler.unary_unary
        if behaviour is None:
            return handler
        return _with_checked(handler, _checked_sync(behaviour))


class AioDecodeErrorInterceptor(grpc.aio.ServerInterceptor):
    """``DecodeErrorInterceptor`` for a ``grpc.aio`` server.

    grpc.aio fails a call whose deserializer raises with UNKNOWN "Unexpected <class ...>"; this
    answers INVALID_ARGUMENT instead. The wrapper is of the same kind as the behaviour it wraps
    (coroutine, async generator, or a plain function that the server runs on its thread pool),
    because the server looks at that kind to decide how to run it.
    """

    def __init__(self) -> None:
        # Per method: the last handler seen and its wrapper. The server hands out the same
        # handler for a method every time, so a call costs a lookup, not a new wrapper.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler)
        if wrapped is not handler:
            self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    @staticmethod
    def _wrap(handler: Any) -> Any:
        behaviour = handler.unary_stream or handler.unary_unary
        if behaviour is None:
            return handler
        checked: Callable[..., Any]
        if inspect.isasyncgenfunction(behaviour):

            async def checked_gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                stream = behaviour(request, context)
                try:
                    async for message in stream:
                        yield message
                finally:
                    await stream.aclose()

            checked = checked_gen
        elif inspect.iscoroutinefunction(behaviour):

            async def checked_coro(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                return await behaviour(request, context)

            checked = checked_coro
        else:
            checked = _checked_sync(behaviour)
        return _with_checked(handler, checked)


def field_violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations carried by a failed call, if any."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    out: list[tuple[str, str]] = []
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out
