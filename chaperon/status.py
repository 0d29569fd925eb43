"""Domain errors and their mapping to gRPC status codes, in one place.

Services raise these plain exceptions from their domain code (which knows nothing of gRPC);
``grpc_errors`` wraps servicer methods and turns them into a gRPC status with a clear message
and, for bad input, a ``google.rpc.BadRequest`` detail listing each bad field path. The client
side reads them back with ``field_violations``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class ChaperonError(Exception):
    """Base class; ``code`` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ChaperonError):
    """Bad input; ``violations`` lists (field path, what is wrong)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        self.violations = violations
        shown = "; ".join(f"{f}: {d}" for f, d in violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"invalid load test: {shown}{more}" if violations else "invalid input")


class NotFound(ChaperonError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ChaperonError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ChaperonError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unimplemented(ChaperonError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Unavailable(ChaperonError):
    code = grpc.StatusCode.UNAVAILABLE


def _to_status(err: ChaperonError) -> grpc.Status:
    status = status_pb2.Status(code=getattr(code_pb2, err.code.name), message=err.message)
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
