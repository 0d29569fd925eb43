"""Start a Worker: its gRPC server (Worker, health, reflection) and the membership loop.

The membership loop registers with the master (retrying with backoff and jitter until the
master answers), then heartbeats every interval; when the master does not know the worker
any more (it restarted) or heartbeats keep failing, the worker registers again by itself. An
unexpected error in the loop does not end it: it is logged, the worker's health turns
NOT_SERVING, and the loop starts again.

The operator is told, without -v: a master that does not answer is a WARNING within a few
seconds (``cannot reach the master at HOST:PORT yet (UNAVAILABLE: ...); retrying``) and again
as long as it lasts, less and less often (``RetryNotices``: after 1 s of failing, then 5, 10
and 20 s later, then every minute); a master that refuses the worker (its token) is an ERROR
once, while the worker goes on trying quietly; registering, and losing the master after, are
said once each.

Stopping (``WorkerServer.stop``, on SIGTERM/SIGINT from ``chaperon worker``): health turns
NOT_SERVING, every assignment in flight is stopped with the reason (its last report tells the
master it stopped and what it did not run), and the server gives those streams ``grace_s`` to
deliver that report before it closes them; heartbeats end last. The whole stop is bounded by
a few seconds, whether or not the master takes the reports.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from chaperon._version import __version__
from chaperon.core.allowlist import AllowList
from chaperon.core.health import ServiceHealth
from chaperon.rpc.auth import TokenAuthInterceptor, bearer_metadata
from chaperon.rpc.channels import (
    build_server,
    host_port,
    make_channel,
    read_ca,
    server_credentials,
)
from chaperon.rpc.status import DecodeErrorInterceptor
from chaperon.v1 import master_pb2, master_pb2_grpc, worker_pb2, worker_pb2_grpc
from worker_service.plan import default_threads
from worker_service.servicer import WorkerServicer, WorkerState

log = logging.getLogger(__name__)

# The name under which a failing membership loop is reported to the worker's health.
MEMBERSHIP_COMPONENT = "the membership loop"
# A master answers RegisterWorker at once; one that does not within this is not reachable.
REGISTER_TIMEOUT_S = 3.0
_TOKEN_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_TOKEN_HINT = (
    "give this worker the master's cluster token with --token or CHAPERON_TOKEN (the"
    " master's --cluster-token, else its --token); "
)


class RetryNotices:
    """When to tell the operator that something still fails: once it has failed for
    ``first_s``, then ``gaps_s`` apart, then every ``every_s`` (a pure schedule; the clock is
    injectable)."""

    def __init__(
        self,
        first_s: float = 1.0,
        gaps_s: tuple[float, ...] = (5.0, 10.0, 20.0),
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first_s = first_s
        self._gaps_s = gaps_s
        self._every_s = every_s
        self._clock = clock
        self._since: float | None = None
        self._next = 0.0
        self._told = 0

    def failed(self) -> bool:
        """One more failure: whether to say so now."""
        now = self._clock()
        if self._since is None:
            self._since = now
            self._next = now + self._first_s
        if now < self._next:
            return False
        gap = self._gaps_s[self._told] if self._told < len(self._gaps_s) else self._every_s
        self._told += 1
        self._next = now + gap
        return True

    @property
    def failing_s(self) -> float:
        """How long it has been failing (0 when it has not)."""
        return 0.0 if self._since is None else self._clock() - self._since

    @property
    def told(self) -> int:
        """How many times the operator was told."""
        return self._told


def _reason(exc: grpc.RpcError) -> str:
    """``UNAVAILABLE: failed to connect ...``: a failed call in one line."""
    code = exc.code()  # type: ignore[attr-defined]
    details = " ".join(str(exc.details() or "").split())  # type: ignore[attr-defined]
    return f"{code.name}: {details}" if details else code.name


# Codes of a master that answered and said no: trying again does not help by itself.
_REFUSALS = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
)


class Membership:
    """Register with the master and heartbeat, in a daemon thread."""

    def __init__(
        self,
        master: str,
        advertise: str,
        state: WorkerState,
        token: str | None = None,
        tls: bool = False,
        master_ca: bytes | None = None,
        health: ServiceHealth | None = None,
    ) -> None:
        self._health = health or ServiceHealth()
        self._master = master
        self._advertise = advertise
        self._state = state
        self._tls = tls
        self._metadata = bearer_metadata(token)
        self._stop = threading.Event()
        self._channel = make_channel(master, master_ca is not None, master_ca)
        self._stub = master_pb2_grpc.MasterStub(self._channel)
        self._thread = threading.Thread(target=self._loop, name="worker-membership", daemon=True)
        self.registered = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self._channel.close()  # a heartbeat still in flight is cut; the thread then ends

    def _register(self) -> float:
        backoff = 0.2
        notices = RetryNotices()
        refused = ""  # the refusal the operator was told of (once)
        while not self._stop.is_set():
            try:
                resp = self._stub.RegisterWorker(
                    master_pb2.RegisterWorkerRequest(
                        worker_id=self._state.worker_id,
                        address=self._advertise,
                        capacity=self._state.threads,
                        version=__version__,
                        tls=self._tls,
                    ),
                    timeout=REGISTER_TIMEOUT_S,
                    metadata=self._metadata,
                )
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                if code in _REFUSALS:
                    if _reason(exc) != refused:
                        # Retrying cannot help, but the operator may fix the master (or
                        # restart this worker with the right token): say it once, loudly.
                        refused = _reason(exc)
                        log.error(
                            "the master at %s refused this worker (%s); %strying again quietly",
                            self._master,
                            refused,
                            _TOKEN_HINT if code in _TOKEN_CODES else "",
                        )
                elif notices.failed():
                    log.warning(
                        "cannot reach the master at %s yet (%s); retrying",
                        self._master,
                        _reason(exc),
                    )
                self._stop.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)
                continue
            self._state.worker_id = resp.worker_id
            self._state.registered = True
            self.registered.set()
            waited = f" after {notices.failing_s:.0f}s" if notices.told or refused else ""
            log.info(
                "registered with the master at %s as %s%s",
                self._master,
                resp.worker_id,
                waited,
            )
            return resp.heartbeat_interval_s or 1.0
        return 1.0

    def _loop(self) -> None:
        """Register and heartbeat until stopped; an unexpected error is logged, turns the
        worker's health NOT_SERVING, and the loop starts again a second later."""
        while not self._stop.is_set():
            try:
                self._membership()
                return
            except Exception as exc:  # noqa: BLE001 - the loop must go on
                log.exception("the membership loop failed; starting it again")
                self._health.fail(MEMBERSHIP_COMPONENT, f"{type(exc).__name__}: {exc}")
                self._stop.wait(1.0)

    def _membership(self) -> None:
        interval = self._register()
        failures = 0
        while not self._stop.wait(interval):
            runner, _ = self._state.current()
            try:
                resp = self._stub.Heartbeat(
                    master_pb2.HeartbeatRequest(
                        worker_id=self._state.worker_id,
                        state=worker_pb2.WORKER_BUSY if runner else worker_pb2.WORKER_IDLE,
                        assignment_id=runner.assignment_id if runner else "",
                        load_1m=os.getloadavg()[0],
                        sessions_active=sum(r.sessions_active() for r in self._state.runners()),
                    ),
                    timeout=max(1.0, interval),
                    metadata=self._metadata,
                )
                failures = 0
                self._health.ok(MEMBERSHIP_COMPONENT)
                if not resp.known:
                    log.warning(
                        "the master at %s does not know this worker any more (it restarted?);"
                        " registering again",
                        self._master,
                    )
                    self._state.registered = False
                    interval = self._register()
            except grpc.RpcError as exc:
                failures += 1
                if failures >= 3:
                    log.warning(
                        "lost the master at %s (%s); registering again", self._master, _reason(exc)
                    )
                    self._state.registered = False
                    interval = self._register()
                    failures = 0


@dataclass
class WorkerServer:
    server: grpc.Server
    port: int
    host: str
    state: WorkerState
    membership: Membership | None
    health: health.HealthServicer

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    def stop(self, grace_s: float = 2.0, reason: str = "") -> None:
        """Stop serving. Assignments in flight are stopped with ``reason`` (e.g. "SIGTERM";
        empty: cancelled, as when the master goes away too) and have ``grace_s`` to send
        their last report; returns within about ``grace_s`` + 2 s."""
        self.health.enter_graceful_shutdown()
        for runner in self.state.runners():
            if reason:
                runner.stop(reason)
            else:
                runner.cancel()
        # Streams that end (their last report taken) end the wait early.
        self.server.stop(grace_s).wait(grace_s + 1)
        if self.membership is not None:
            self.membership.stop(timeout_s=1.0)


def start_worker(
    master: str,
    host: str = "127.0.0.1",
    port: int = 0,
    threads: int = 0,
    advertise: str = "",
    token: str | None = None,
    allow_targets: list[str] | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    allow_python: bool = False,
) -> WorkerServer:
    """Serve the Worker service and start registering with ``master`` (host:port).

    ``token`` is the cluster token: sent to the master and required from it. ``tls_ca``
    verifies the master's certificate; ``tls_cert``/``tls_key`` make this worker serve TLS.
    Targets outside ``allow_targets`` (default: loopback) are refused before any connect.
    ``allow_python`` lets load tests run python steps (user code) on this worker.
    """
    allow = AllowList(allow_targets)
    creds = server_credentials(tls_cert, tls_key)
    master_ca = read_ca(tls_ca)
    state = WorkerState(threads or default_threads(), master)
    if not advertise and host in ("0.0.0.0", "::", ""):
        raise ValueError("listening on all interfaces: give --advertise HOST:PORT for the master")
    servicer = WorkerServicer(state, allow, allow_python)
    grpc_server = build_server(
        worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name,
        lambda server: worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server),
        host=host,
        port=port,
        creds=creds,
        interceptors=[DecodeErrorInterceptor(), TokenAuthInterceptor(token)],
        max_workers=16,
        max_receive_bytes=16 * 1024 * 1024,
        thread_prefix="worker-rpc",
    )
    service_health = ServiceHealth()
    grpc_server.start()
    grpc_server.follow(service_health)
    bound = grpc_server.port
    if not advertise:
        advertise = host_port(host, bound)
    membership = Membership(
        master, advertise, state, token, creds is not None, master_ca, service_health
    )
    membership.start()
    return WorkerServer(grpc_server.server, bound, host, state, membership, grpc_server.health)
