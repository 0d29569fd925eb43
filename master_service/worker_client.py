"""The master's side of the Worker service: one cached gRPC channel per worker address."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from chaperon.rpc.auth import bearer_metadata
from chaperon.rpc.channels import make_channel
from chaperon.v1 import worker_pb2, worker_pb2_grpc

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


class _Stream:
    def __init__(self, call: grpc.Call) -> None:
        self._call = call

    def __iter__(self) -> Iterator[worker_pb2.WorkerReport]:
        return iter(self._call)  # type: ignore[call-overload]

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
        return _Stream(self._stub(address).RunAssignment(assignment, metadata=self._metadata))

    def cancel_assignment(self, address: str, assignment_id: str) -> None:
        self._stub(address).CancelAssignment(
            worker_pb2.CancelAssignmentRequest(assignment_id=assignment_id),
            timeout=5,
            metadata=self._metadata,
        )

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
