"""Start the Master: gRPC server with the Master service, health and server reflection."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from chaperon.core.allowlist import AllowList
from chaperon.core.health import ServiceHealth
from chaperon.rpc.auth import TokenAuthInterceptor
from chaperon.rpc.channels import build_server, host_port, read_ca, server_credentials
from chaperon.rpc.status import DecodeErrorInterceptor
from chaperon.v1 import master_pb2, master_pb2_grpc
from master_service.registry import WorkerRegistry
from master_service.retention import RetentionPolicy
from master_service.scheduler import Scheduler
from master_service.servicer import MasterServicer
from master_service.store import SqliteStore
from master_service.worker_client import GrpcWorkerTransport

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class MasterServer:
    server: grpc.Server
    port: int
    host: str
    scheduler: Scheduler
    store: SqliteStore
    transport: GrpcWorkerTransport
    health: health.HealthServicer

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    def stop(self, grace_s: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.scheduler.stop()
        self.server.stop(grace_s).wait(grace_s + 1)
        self.transport.close()
        self.store.close()


def _grow_heap_in_big_steps() -> None:
    """glibc's malloc grows the heap 128 KiB at a time by default; the master serializes a
    ~150 KB report per worker per interval (for the store), and at 1000 workers the page
    faults of that growth cost as much as the merge itself (bench/master_scale.py: 158 ms
    against 61 ms per interval with a 16 MiB pad). Best effort: other libcs are left alone."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-2, 16 * 1024 * 1024)  # M_TOP_PAD
    except (OSError, AttributeError):
        pass


def start_master(
    host: str = "127.0.0.1",
    port: int = 50051,
    db_path: str = ":memory:",
    report_interval_s: float = 1.0,
    worker_wait_s: float = 30.0,
    max_workers: int = 64,
    token: str | None = None,
    cluster_token: str | None = None,
    allow_targets: list[str] | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    keep_runs: int | None = None,
    keep_days: float | None = None,
    retention_interval_s: float = 300.0,
) -> MasterServer:
    """Start serving at once.

    Raises OSError when the port cannot be bound, TlsConfigError for bad TLS files and
    ValueError for a bad allow-list entry. ``token`` guards the control RPCs and
    ``cluster_token`` (default: ``token``) the workers' RPCs and the master's calls to them.
    ``keep_runs`` / ``keep_days`` (default: keep everything) delete finished runs beyond the
    newest N or finished more than D days ago, at start, after each run and every
    ``retention_interval_s`` (``master_service/retention.py``); ValueError if not positive.
    """
    retention = RetentionPolicy(keep_runs, keep_days)
    _grow_heap_in_big_steps()
    allow = AllowList(allow_targets)
    creds = server_credentials(tls_cert, tls_key)
    transport = GrpcWorkerTransport(cluster_token or token, read_ca(tls_ca))
    service_health = ServiceHealth()
    store = SqliteStore(db_path, service_health)
    registry = WorkerRegistry()
    scheduler = Scheduler(
        store,
        registry,
        transport,
        report_interval_s,
        worker_wait_s,
        allow=allow,
        health=service_health,
        retention=retention,
        retention_interval_s=retention_interval_s,
    )
    servicer = MasterServicer(scheduler, registry, transport)
    try:
        grpc_server = build_server(
            master_pb2.DESCRIPTOR.services_by_name["Master"].full_name,
            lambda server: master_pb2_grpc.add_MasterServicer_to_server(servicer, server),
            host=host,
            port=port,
            creds=creds,
            interceptors=[DecodeErrorInterceptor(), TokenAuthInterceptor(token, cluster_token)],
            max_workers=max_workers,
            max_receive_bytes=MAX_MESSAGE_BYTES,
            thread_prefix="master-rpc",
        )
    except OSError:
        store.close()
        raise
    grpc_server.start()
    grpc_server.follow(service_health)
    scheduler.start()
    return MasterServer(
        grpc_server.server, grpc_server.port, host, scheduler, store, transport, grpc_server.health
    )
