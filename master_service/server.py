"""Start the Master: gRPC server with the Master service, health and server reflection."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chaperon.allowlist import AllowList
from chaperon.auth import TokenAuthInterceptor
from chaperon.channels import add_port, read_ca, server_credentials
from chaperon.status import DecodeErrorInterceptor
from chaperon.v1 import master_pb2, master_pb2_grpc
from master_service.registry import WorkerRegistry
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
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    def stop(self, grace_s: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.scheduler.stop()
        self.server.stop(grace_s).wait(grace_s + 1)
        self.transport.close()
        self.store.close()


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
) -> MasterServer:
    """Start serving at once.

    Raises OSError when the port cannot be bound, TlsConfigError for bad TLS files and
    ValueError for a bad allow-list entry. ``token`` guards the control RPCs and
    ``cluster_token`` (default: ``token``) the workers' RPCs and the master's calls to them.
    """
    allow = AllowList(allow_targets)
    creds = server_credentials(tls_cert, tls_key)
    transport = GrpcWorkerTransport(cluster_token or token, read_ca(tls_ca))
    store = SqliteStore(db_path)
    registry = WorkerRegistry()
    scheduler = Scheduler(store, registry, transport, report_interval_s, worker_wait_s, allow=allow)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="master-rpc"),
        interceptors=[DecodeErrorInterceptor(), TokenAuthInterceptor(token, cluster_token)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    master_pb2_grpc.add_MasterServicer_to_server(
        MasterServicer(scheduler, registry, transport), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_name = master_pb2.DESCRIPTOR.services_by_name["Master"].full_name
    reflection.enable_server_reflection(
        (
            service_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        bound = add_port(server, host, port, creds)
    except OSError:
        store.close()
        raise
    server.start()
    scheduler.start()
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return MasterServer(server, bound, host, scheduler, store, transport, health_servicer)
