"""The gRPC worker transport turns a worker's status codes into the master's domain errors.

No network: the errors grpc raises are played by a stand-in with ``code()`` and ``details()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from chaperon.v1 import worker_pb2
from master_service.transport import AssignmentRefused, WorkerLost
from master_service.worker_client import _domain_error, _Stream


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    ],
)
def test_a_worker_that_says_no_refuses(code: grpc.StatusCode) -> None:
    err = _domain_error(_RpcError(code, "python steps are off on this worker"))
    assert isinstance(err, AssignmentRefused)
    assert err.message == "python steps are off on this worker"


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNKNOWN,
    ],
)
def test_anything_else_is_a_lost_worker(code: grpc.StatusCode) -> None:
    err = _domain_error(_RpcError(code, "Socket closed"))
    assert isinstance(err, WorkerLost) and err.message == "Socket closed"


def test_without_details_the_error_text_is_kept() -> None:
    err = _domain_error(_RpcError(grpc.StatusCode.UNAVAILABLE, None))
    assert isinstance(err, WorkerLost) and err.message


class _Call:
    """A stream call: one report, then the connection breaks."""

    def __init__(self) -> None:
        self.cancelled = False

    def __iter__(self) -> Iterator[worker_pb2.WorkerReport]:
        yield worker_pb2.WorkerReport(sequence=1)
        raise _RpcError(grpc.StatusCode.UNAVAILABLE, "Connection reset by peer")

    def cancel(self) -> None:
        self.cancelled = True


def test_a_broken_stream_raises_worker_lost_after_what_it_delivered() -> None:
    call = _Call()
    stream = _Stream(call)  # type: ignore[arg-type]
    seen = []
    with pytest.raises(WorkerLost, match="Connection reset by peer"):
        for report in stream:
            seen.append(report.sequence)
    assert seen == [1]
    stream.cancel()
    assert call.cancelled
