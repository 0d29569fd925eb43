"""Start the Master: gRPC server with the Master service, health and server reflection.

Theory of operation. The master serves on grpc's asyncio server, so that an open call holds
no thread: a thousand ``WatchLoadTestRun`` streams are a thousand suspended coroutines, and
heartbeats keep being answered beside them. The server and everything of grpc.aio belong to
one event loop, which runs on a thread of its own (``master-aio``) that ``start_master``
starts; callers stay synchronous (the CLI, the embedded cluster, tests): ``start_master``
returns once the port is bound and serving, and ``MasterServer.stop`` ends the server, then
the loop, then the thread. Servicer methods that can block run on a bounded executor
(``master-rpc_N`` threads, ``max_workers`` of them); see ``master_service/servicer.py``.
The scheduler's own threads (runner, stream threads, store writer) are as before.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import _async as health_async

from chaperon.core.allowlist import AllowList
from chaperon.core.health import ServiceHealth
from chaperon.rpc.auth import AioTokenAuthInterceptor
from chaperon.rpc.channels import (
    AioGrpcServer,
    build_aio_server,
    host_port,
    read_ca,
    server_credentials,
)
from chaperon.rpc.status import AioDecodeErrorInterceptor
from chaperon.v1 import master_pb2, master_pb2_grpc
from master_service.registry import WorkerRegistry
from master_service.retention import RetentionPolicy
from master_service.scheduler import Scheduler
from master_service.servicer import MasterServicer
from master_service.store import SqliteStore
from master_service.worker_client import GrpcWorkerTransport

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# How long start-up and each step of stop may take on the loop before we give up on it.
_LOOP_CALL_TIMEOUT_S = 30.0


class _LoopThread:
    """An asyncio event loop running on a thread of its own, driven from other threads."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Whatever is left (a take on its way back from the executor, say) is cancelled
            # and given one turn of the loop to unwind, then the loop closes.
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = _LOOP_CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the loop and wait for its result here."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # closed meanwhile
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)


@dataclass
class MasterServer:
    server: grpc.aio.Server
    port: int
    host: str
    scheduler: Scheduler
    store: SqliteStore
    transport: GrpcWorkerTransport
    health: health_async.HealthServicer
    _loop_thread: _LoopThread = field(repr=False)
    _executor: ThreadPoolExecutor = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs on (for code that must schedule work on it)."""
        return self._loop_thread.loop

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving: open calls get ``grace_s`` to end, then are cancelled; a run in
        flight ends INTERRUPTED. Returns within about ``grace_s`` plus the scheduler's stop.
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        loop = self._loop_thread
        try:
            loop.call(self.health.enter_graceful_shutdown())
        except Exception:  # noqa: BLE001 - stopping goes on whatever health says
            log.exception("health did not enter graceful shutdown")
        self.scheduler.stop()
        try:
            loop.call(self.server.stop(grace_s), grace_s + _LOOP_CALL_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - the loop's end cancels whatever is left
            log.exception("the master's gRPC server did not stop cleanly")
        loop.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
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


def _freeze_what_was_built() -> None:
    """Exempt everything alive now (modules, compiled descriptors, the server itself) from
    the garbage collector's full passes. A full pass walks every tracked object with the GIL
    held, so the event loop stalls for all of it: with grpc, protobuf and the scheduler
    loaded, ~50 ms, enough to queue a second's heartbeats behind it. Frozen, it walks only
    what came later. Process-wide, like ``_grow_heap_in_big_steps``; garbage is collected
    first so that none is frozen."""
    gc.collect()
    gc.freeze()


def start_master(
    host: str = "127.0.0.1",
    port: int = 50051,
    db_path: str = ":memory:",
    report_interval_s: float = 1.0,
    worker_wait_s: float = 30.0,
    max_workers: int = 16,
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
    ``max_workers`` is the number of threads that run the RPCs' blocking work (store reads
    and writes, validation); open calls hold none.
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
    executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="master-rpc")
    servicer = MasterServicer(scheduler, registry, transport, executor)
    loop_thread = _LoopThread("master-aio")
    servicer.feeds.bind(loop_thread.loop)

    async def build() -> AioGrpcServer:
        server = build_aio_server(
            master_pb2.DESCRIPTOR.services_by_name["Master"].full_name,
            lambda server: master_pb2_grpc.add_MasterServicer_to_server(servicer, server),
            host=host,
            port=port,
            creds=creds,
            interceptors=[
                AioDecodeErrorInterceptor(),
                AioTokenAuthInterceptor(token, cluster_token),
            ],
            max_receive_bytes=MAX_MESSAGE_BYTES,
            sync_pool=executor,
        )
        await server.start()
        server.follow(service_health)
        return server

    try:
        grpc_server = loop_thread.call(build())
    except BaseException:
        loop_thread.stop()
        executor.shutdown(wait=False)
        transport.close()
        store.close()
        raise
    scheduler.start()
    _freeze_what_was_built()
    return MasterServer(
        grpc_server.server,
        grpc_server.port,
        host,
        scheduler,
        store,
        transport,
        grpc_server.health,
        loop_thread,
        executor,
    )
