"""The ``chaperon.v1.Master`` servicer: validate, call the domain objects, map to messages.

It runs on grpc's asyncio server (``master_service/server.py``): every method is a coroutine
on the one event loop, so an open call that waits holds no thread. Two rules keep the loop
free for everyone:

- Work that can block (a store read or write, a lock the runner or the stream threads hold
  for long, a call to a worker) goes to the bounded executor: ``await self._blocking(fn,
  ...)``. Only quick in-memory work runs inline (``Heartbeat``, ``SetWorkerIgnored``: the
  registry's lock is held for microseconds).
- Waiting is asynchronous: ``WatchLoadTestRun`` is an async generator over the run's shared
  feed (``master_service/run_feeds.py``: one snapshot per run per interval, whoever watches
  it), and ``RunLoadTest`` and the cancels wait on that feed for the run's end.

A new unary RPC is an ``async def`` decorated with ``aio_grpc_errors`` (domain errors become
statuses): check the request inline, then ``return await self._blocking(domain_call, ...)``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2

from chaperon._version import __version__
from chaperon.core.errors import InvalidArgument
from chaperon.rpc.status import aio_grpc_errors, aio_grpc_stream_errors
from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2
from master_service.progress import progress_message
from master_service.registry import WorkerEntry, WorkerRegistry
from master_service.run_feeds import RunFeeds
from master_service.scheduler import Scheduler
from master_service.worker_client import GrpcWorkerTransport

T = TypeVar("T")

# How often a watcher gets a message while its run is going (and how old the run's shared
# snapshot may be).
WATCH_INTERVAL_S = 1.0

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


MAX_ID_LEN = 200
MAX_LABELS = 64


def _require_id(value: str, field: str = "id") -> str:
    if not value:
        raise InvalidArgument([(field, "is required")])
    if len(value) > MAX_ID_LEN:
        raise InvalidArgument([(field, f"is longer than {MAX_ID_LEN} characters")])
    return value


def _worker_info(w: WorkerEntry) -> master_pb2.WorkerInfo:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(w.last_heartbeat_wall * 1e9))
    return master_pb2.WorkerInfo(
        worker_id=w.worker_id,
        address=w.address,
        capacity=w.capacity,
        labels=w.labels,
        state=w.state,  # type: ignore[arg-type]
        ignored=w.ignored,
        last_heartbeat=ts,
        current_run_id=w.current_run_id,
        version=w.version,
        tls=w.tls,
        load_1m=w.load_1m,
        healthy=w.healthy,
        sessions_active=w.sessions_active,
    )


class MasterServicer(master_pb2_grpc.MasterServicer):
    def __init__(
        self,
        scheduler: Scheduler,
        registry: WorkerRegistry,
        transport: GrpcWorkerTransport,
        executor: Executor,
        watch_interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self._scheduler = scheduler
        self._registry = registry
        self._transport = transport
        self._executor = executor
        self._started = time.monotonic()
        self.feeds = RunFeeds(
            lambda run_id: progress_message(scheduler, run_id), self._blocking, watch_interval_s
        )
        scheduler.on_run_change(self.feeds.changed)

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the executor, awaited: for anything that may block."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @aio_grpc_errors
    async def SubmitLoadTest(self, request, context):  # type: ignore[no-untyped-def]
        if not request.HasField("load_test"):
            raise InvalidArgument([("load_test", "is required")])
        return await self._blocking(self._scheduler.submit, request.load_test)

    @aio_grpc_errors
    async def SubmitLoadTests(self, request, context):  # type: ignore[no-untyped-def]
        if not request.load_tests:
            raise InvalidArgument([("load_tests", "needs at least one load test")])
        return await self._blocking(self._submit_all, request.load_tests)

    def _submit_all(self, load_tests: Any) -> master_pb2.SubmitLoadTestsResponse:
        for i, lt in enumerate(load_tests):
            try:
                self._scheduler.check(lt)
            except InvalidArgument as exc:
                raise InvalidArgument(
                    [(f"load_tests[{i}].{f}", d) for f, d in exc.violations], "load test"
                ) from None
        runs = [self._scheduler.submit(lt) for lt in load_tests]
        return master_pb2.SubmitLoadTestsResponse(runs=runs)

    @aio_grpc_errors
    async def RunLoadTest(self, request, context):  # type: ignore[no-untyped-def]
        if not request.HasField("load_test"):
            raise InvalidArgument([("load_test", "is required")])
        run = await self._blocking(self._scheduler.submit, request.load_test)
        # Waits on the run's feed: no thread held, and a client that goes away cancels it.
        return await self.feeds.until_ended(run.id)

    @aio_grpc_errors
    async def GetLoadTestRun(self, request, context):  # type: ignore[no-untyped-def]
        return await self._blocking(self._scheduler.get, _require_id(request.id))

    @aio_grpc_errors
    async def ListLoadTestRuns(self, request, context):  # type: ignore[no-untyped-def]
        if request.page_size < 0:
            raise InvalidArgument([("page_size", "must be >= 0")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = 0
        if request.page_token:
            try:
                after = int(base64.urlsafe_b64decode(request.page_token.encode()).decode())
                if not 0 <= after < 2**63:
                    raise ValueError("out of range")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument(
                    [("page_token", "is not a token from a previous page")]
                ) from None
        for i, state in enumerate(request.states):
            if state not in results_pb2.RunState.values() or state == 0:
                raise InvalidArgument([(f"states[{i}]", f"unknown run state {state}")])
        states = list(request.states)
        rows = await self._blocking(self._scheduler.list_runs, states, after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = base64.urlsafe_b64encode(str(rows[-1][0]).encode()).decode()
        return master_pb2.ListLoadTestRunsResponse(runs=[r for _, r in rows], next_page_token=token)

    @aio_grpc_stream_errors
    async def WatchLoadTestRun(  # type: ignore[no-untyped-def]
        self, request, context
    ) -> AsyncIterator[master_pb2.RunProgress]:
        async for message in self.feeds.watch(_require_id(request.id)):
            yield message

    @aio_grpc_errors
    async def CancelLoadTestRun(self, request, context):  # type: ignore[no-untyped-def]
        run_id = _require_id(request.id)
        run = await self._blocking(self._scheduler.request_cancel, run_id)
        if run is None:  # it was running: it ends within its streams' grace
            run = await self.feeds.until_ended(run_id)
        return run

    @aio_grpc_errors
    async def DeleteLoadTestRun(self, request, context):  # type: ignore[no-untyped-def]
        run_id = _require_id(request.id)
        state = await self._blocking(self._scheduler.delete, run_id)
        return master_pb2.DeleteLoadTestRunResponse(id=run_id, state=state)  # type: ignore[arg-type]

    @aio_grpc_errors
    async def CancelAll(self, request, context):  # type: ignore[no-untyped-def]
        states = [results_pb2.SCHEDULED]
        if not request.scheduled_only:
            states.append(results_pb2.RUNNING)
        ids, running = await self._blocking(self._cancel_all, states)
        for run_id in running:
            await self.feeds.until_ended(run_id)
        return master_pb2.CancelAllResponse(cancelled_ids=ids)

    def _cancel_all(self, states: list[int]) -> tuple[list[str], list[str]]:
        """Cancel every run in ``states``: the ids cancelled, and those (running) still
        ending."""
        ids, running = [], []
        for _, run in self._scheduler.list_runs(states, 0, 1_000_000):
            try:
                if self._scheduler.request_cancel(run.id) is None:
                    running.append(run.id)
                ids.append(run.id)
            except Exception:  # noqa: BLE001 - ended meanwhile
                pass
        return ids, running

    @aio_grpc_errors
    async def RegisterWorker(self, request, context):  # type: ignore[no-untyped-def]
        violations = []
        if not request.address or ":" not in request.address:
            violations.append(("address", "must be host:port where the master reaches the worker"))
        if request.capacity < 0 or request.capacity > 1024:
            violations.append(("capacity", "must be between 0 and 1024 engine threads"))
        if len(request.address) > MAX_ID_LEN:
            violations.append(("address", f"is longer than {MAX_ID_LEN} characters"))
        if len(request.worker_id) > MAX_ID_LEN:
            violations.append(("worker_id", f"is longer than {MAX_ID_LEN} characters"))
        if len(request.version) > MAX_ID_LEN:
            violations.append(("version", f"is longer than {MAX_ID_LEN} characters"))
        if len(request.labels) > MAX_LABELS or any(
            len(k) > MAX_ID_LEN or len(v) > MAX_ID_LEN for k, v in request.labels.items()
        ):
            violations.append(
                ("labels", f"at most {MAX_LABELS} labels of at most {MAX_ID_LEN} characters")
            )
        if violations:
            raise InvalidArgument(violations)
        # Off the loop: a changed TLS setting closes the worker's old channel.
        worker_id = await self._blocking(self._register, request)
        return master_pb2.RegisterWorkerResponse(
            worker_id=worker_id, heartbeat_interval_s=self._registry.heartbeat_interval_s
        )

    def _register(self, request: master_pb2.RegisterWorkerRequest) -> str:
        self._transport.set_tls(request.address, request.tls)
        return self._registry.register(
            request.address,
            request.capacity or 1,
            dict(request.labels),
            request.version,
            request.worker_id,
            request.tls,
        )

    @aio_grpc_errors
    async def Heartbeat(self, request, context):  # type: ignore[no-untyped-def]
        # Inline: the registry's lock is only ever held for an update or a copy of the list.
        load = request.load_1m if math.isfinite(request.load_1m) else 0.0
        known = self._registry.heartbeat(
            _require_id(request.worker_id, "worker_id"),
            request.state,
            load,
            not request.unhealthy,
            max(0, request.sessions_active),
        )
        return master_pb2.HeartbeatResponse(known=known)

    @aio_grpc_errors
    async def ListWorkers(self, request, context):  # type: ignore[no-untyped-def]
        # Off the loop: a thousand workers take milliseconds to copy and convert.
        return await self._blocking(self._list_workers)

    def _list_workers(self) -> master_pb2.ListWorkersResponse:
        return master_pb2.ListWorkersResponse(
            workers=[_worker_info(w) for w in self._registry.snapshot()]
        )

    @aio_grpc_errors
    async def SetWorkerIgnored(self, request, context):  # type: ignore[no-untyped-def]
        w = self._registry.set_ignored(_require_id(request.worker_id, "worker_id"), request.ignored)
        return _worker_info(w)

    @aio_grpc_errors
    async def GetServerInfo(self, request, context):  # type: ignore[no-untyped-def]
        info = await self._blocking(self._server_info)
        info.open_streams = self.feeds.readers  # read on the loop, where it changes
        return info

    def _server_info(self) -> master_pb2.ServerInfo:
        return master_pb2.ServerInfo(
            version=__version__,
            uptime_s=time.monotonic() - self._started,
            workers=self._registry.live_count(),
            queue_length=self._scheduler.queue_length(),
            running_run_id=self._scheduler.running_run_id(),
            runs_total=self._scheduler.runs_total(),
        )
