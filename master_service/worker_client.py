"""The master's side of the Worker service over gRPC: one cached channel per worker address.

This is the one place where a worker's gRPC status codes mean something to the master: a
worker that answered and refused (``_REFUSALS``) raises ``AssignmentRefused``; any other
failure (unreachable, deadline, a stream that broke, cancelled) raises ``WorkerLost``. Both
carry the worker's own words (the status details). The scheduler never sees a status code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from chaperon.rpc.auth import bearer_metadata
from chaperon.rpc.channels import make_channel, message_size_options
from chaperon.v1 import worker_pb2, worker_pb2_grpc
from master_service.transport import AssignmentRefused, WorkerLost

_OPTIONS = [
    *message_size_options(64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


# The codes with which a worker that answered says no: the run fails with its reason, and the
# worker is not counted lost.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def _domain_error(exc: grpc.RpcError) -> AssignmentRefused | WorkerLost:
    """The domain error for a failed call: refused if the worker said no, else lost."""
    # The errors grpc raises are also its Call objects, with the status code and details.
    code = getattr(exc, "code", lambda: None)()
    detail = getattr(exc, "details", lambda: None)() or str(exc)
    if code in _REFUSALS:
        return AssignmentRefused(detail)
    return WorkerLost(detail)


class _Stream:
    def __init__(self, call: grpc.Call) -> None:
        self._call = call

    def __iter__(self) -> Iterator[worker_pb2.WorkerReport]:
        try:
            yield from self._call  # type: ignore[misc]  # the call object is the iterator
        except grpc.RpcError as exc:
            raise _domain_error(exc) from None

    def cancel(self) -> None:
        self._call.cancel()


class GrpcWorkerTransport:
    """Dials workers with the cluster token; TLS workers are verified against ``tls_ca``."""

    def __init__(self, cluster_token: str | None = None, tls_ca: bytes | None = None) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._metadata = bearer_metadata(cluster_token)
        self._tls_ca = tls_ca
        self._tls_workers: set[str] = set()

    def set_tls(self, address: str, tls: bool) -> None:
        """Record whether the worker at ``address`` serves TLS (from its registration)."""
        with self._lock:
            if tls != (address in self._tls_workers):
                old = self._channels.pop(address, None)
                if old is not None:
                    old.close()
            if tls:
                self._tls_workers.add(address)
            else:
                self._tls_workers.discard(address)

    def _stub(self, address: str) -> worker_pb2_grpc.WorkerStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                tls = address in self._tls_workers
                channel = make_channel(address, tls, self._tls_ca if tls else None, _OPTIONS)
                self._channels[address] = channel
        return worker_pb2_grpc.WorkerStub(channel)

    def run_assignment(self, address: str, assignment: worker_pb2.Assignment) -> _Stream:
        try:
            call = self._stub(address).RunAssignment(assignment, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _domain_error(exc) from None
        return _Stream(call)

    def cancel_assignment(self, address: str, assignment_id: str) -> None:
        try:
            self._stub(address).CancelAssignment(
                worker_pb2.CancelAssignmentRequest(assignment_id=assignment_id),
                timeout=5,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise _domain_error(exc) from None

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
