"""The ``chaperon.v1.Master`` servicer: validate, call the domain objects, map to messages."""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Iterator

from google.protobuf import timestamp_pb2

from chaperon._version import __version__
from chaperon.core.errors import InvalidArgument
from chaperon.rpc.status import grpc_errors, grpc_stream_errors
from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2, worker_pb2
from master_service.registry import WorkerEntry, WorkerRegistry
from master_service.run_queue import TERMINAL
from master_service.scheduler import Scheduler
from master_service.worker_client import GrpcWorkerTransport

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
        self, scheduler: Scheduler, registry: WorkerRegistry, transport: GrpcWorkerTransport
    ) -> None:
        self._scheduler = scheduler
        self._registry = registry
        self._transport = transport
        self._started = time.monotonic()

    @grpc_errors
    def SubmitLoadTest(self, request, context):  # type: ignore[no-untyped-def]
        if not request.HasField("load_test"):
            raise InvalidArgument([("load_test", "is required")])
        return self._scheduler.submit(request.load_test)

    @grpc_errors
    def SubmitLoadTests(self, request, context):  # type: ignore[no-untyped-def]
        if not request.load_tests:
            raise InvalidArgument([("load_tests", "needs at least one load test")])
        for i, lt in enumerate(request.load_tests):
            try:
                self._scheduler.check(lt)
            except InvalidArgument as exc:
                raise InvalidArgument(
                    [(f"load_tests[{i}].{f}", d) for f, d in exc.violations], "load test"
                ) from None
        runs = [self._scheduler.submit(lt) for lt in request.load_tests]
        return master_pb2.SubmitLoadTestsResponse(runs=runs)

    @grpc_errors
    def RunLoadTest(self, request, context):  # type: ignore[no-untyped-def]
        if not request.HasField("load_test"):
            raise InvalidArgument([("load_test", "is required")])
        run = self._scheduler.submit(request.load_test)
        return self._scheduler.wait(run.id, still_wanted=context.is_active)

    @grpc_errors
    def GetLoadTestRun(self, request, context):  # type: ignore[no-untyped-def]
        return self._scheduler.get(_require_id(request.id))

    @grpc_errors
    def ListLoadTestRuns(self, request, context):  # type: ignore[no-untyped-def]
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
        rows = self._scheduler.list_runs(list(request.states), after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = base64.urlsafe_b64encode(str(rows[-1][0]).encode()).decode()
        return master_pb2.ListLoadTestRunsResponse(runs=[r for _, r in rows], next_page_token=token)

    @grpc_stream_errors
    def WatchLoadTestRun(self, request, context) -> Iterator[master_pb2.RunProgress]:  # type: ignore[no-untyped-def]
        run_id = _require_id(request.id)
        run = self._scheduler.get(run_id)
        while run.state not in TERMINAL and context.is_active():
            progress = self._scheduler.progress(run_id)
            msg = master_pb2.RunProgress(id=run_id, state=run.state)
            if progress is not None:
                elapsed, metrics = progress
                msg.elapsed_s = elapsed
                for key, count, errors, p50, p99 in metrics:
                    msg.metrics.append(
                        master_pb2.MetricProgress(
                            key=key,
                            count=count,
                            errors=errors,
                            rate_per_s=count / elapsed if elapsed > 0 else 0.0,
                            p50_us=p50,
                            p99_us=p99,
                        )
                    )
            yield msg
            time.sleep(1.0)
            run = self._scheduler.get(run_id)
        yield master_pb2.RunProgress(id=run_id, state=run.state, run=run)

    @grpc_errors
    def CancelLoadTestRun(self, request, context):  # type: ignore[no-untyped-def]
        return self._scheduler.cancel(_require_id(request.id))

    @grpc_errors
    def DeleteLoadTestRun(self, request, context):  # type: ignore[no-untyped-def]
        run_id = _require_id(request.id)
        state = self._scheduler.delete(run_id)
        return master_pb2.DeleteLoadTestRunResponse(id=run_id, state=state)  # type: ignore[arg-type]

    @grpc_errors
    def CancelAll(self, request, context):  # type: ignore[no-untyped-def]
        states = [results_pb2.SCHEDULED]
        if not request.scheduled_only:
            states.append(results_pb2.RUNNING)
        ids = []
        for _, run in self._scheduler.list_runs(states, 0, 1_000_000):
            try:
                self._scheduler.cancel(run.id)
                ids.append(run.id)
            except Exception:  # noqa: BLE001 - ended meanwhile
                pass
        return master_pb2.CancelAllResponse(cancelled_ids=ids)

    @grpc_errors
    def RegisterWorker(self, request, context):  # type: ignore[no-untyped-def]
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
        self._transport.set_tls(request.address, request.tls)
        worker_id = self._registry.register(
            request.address,
            request.capacity or 1,
            dict(request.labels),
            request.version,
            request.worker_id,
            request.tls,
        )
        return master_pb2.RegisterWorkerResponse(
            worker_id=worker_id, heartbeat_interval_s=self._registry.heartbeat_interval_s
        )

    @grpc_errors
    def Heartbeat(self, request, context):  # type: ignore[no-untyped-def]
        load = request.load_1m if math.isfinite(request.load_1m) else 0.0
        known = self._registry.heartbeat(
            _require_id(request.worker_id, "worker_id"),
            request.state,
            load,
            not request.unhealthy,
            max(0, request.sessions_active),
        )
        return master_pb2.HeartbeatResponse(known=known)

    @grpc_errors
    def ListWorkers(self, request, context):  # type: ignore[no-untyped-def]
        return master_pb2.ListWorkersResponse(
            workers=[_worker_info(w) for w in self._registry.snapshot()]
        )

    @grpc_errors
    def SetWorkerIgnored(self, request, context):  # type: ignore[no-untyped-def]
        w = self._registry.set_ignored(_require_id(request.worker_id, "worker_id"), request.ignored)
        return _worker_info(w)

    @grpc_errors
    def GetServerInfo(self, request, context):  # type: ignore[no-untyped-def]
        workers = self._registry.snapshot()
        return master_pb2.ServerInfo(
            version=__version__,
            uptime_s=time.monotonic() - self._started,
            workers=sum(1 for w in workers if w.state != worker_pb2.WORKER_LOST),
            queue_length=self._scheduler.queue_length(),
            running_run_id=self._scheduler.running_run_id(),
            runs_total=self._scheduler.runs_total(),
        )
