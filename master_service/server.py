"""Start the Master: gRPC server with the Master service, health and server reflection."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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
) -> MasterServer:
    """Start serving at once; raises OSError when the port cannot be bound."""
    store = SqliteStore(db_path)
    registry = WorkerRegistry()
    transport = GrpcWorkerTransport()
    scheduler = Scheduler(store, registry, transport, report_interval_s, worker_wait_s)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="master-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    master_pb2_grpc.add_MasterServicer_to_server(MasterServicer(scheduler, registry), server)
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
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError:
        bound = 0
    if bound == 0:
        store.close()
        raise OSError(f"cannot listen on {target} (port in use or address not available)")
    server.start()
    scheduler.start()
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return MasterServer(server, bound, host, scheduler, store, transport, health_servicer)
