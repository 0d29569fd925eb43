"""The ``chaperon.v1.Worker`` servicer: one assignment at a time."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from chaperon._version import __version__
from chaperon.core.allowlist import AllowList
from chaperon.core.errors import FailedPrecondition, InvalidArgument
from chaperon.rpc.status import grpc_errors, grpc_stream_errors
from chaperon.v1 import worker_pb2, worker_pb2_grpc
from worker_service.plan import compile_assignment
from worker_service.runner import AssignmentRunner

MAX_THREADS = 256


class WorkerState:
    """What the worker is doing; shared by the servicer and the registration loop.

    A worker runs one load test at a time, but may hold several assignments of that run: the
    master gives a survivor a *takeover* assignment when another worker of an open-model run
    is lost.
    """

    def __init__(self, threads: int, master: str = "") -> None:
        self.threads = threads
        self.master = master
        self.worker_id = ""
        self.registered = False
        self._lock = threading.Lock()
        self._runners: dict[str, tuple[AssignmentRunner, str]] = {}

    def begin(self, runner: AssignmentRunner, run_id: str) -> None:
        with self._lock:
            for other, other_run in self._runners.values():
                if other_run != run_id or not run_id:
                    raise FailedPrecondition(
                        f"this worker is busy with assignment {other.assignment_id}"
                    )
            if runner.assignment_id in self._runners:
                raise FailedPrecondition(f"assignment {runner.assignment_id} is already running")
            self._runners[runner.assignment_id] = (runner, run_id)

    def end(self, runner: AssignmentRunner) -> None:
        with self._lock:
            if self._runners.get(runner.assignment_id, (None, ""))[0] is runner:
                del self._runners[runner.assignment_id]

    def current(self) -> tuple[AssignmentRunner | None, str]:
        """The first assignment running (and its run id), or (None, "")."""
        with self._lock:
            for runner, run_id in self._runners.values():
                return runner, run_id
            return None, ""

    def runners(self) -> list[AssignmentRunner]:
        with self._lock:
            return [runner for runner, _ in self._runners.values()]


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(
        self, state: WorkerState, allow: AllowList | None = None, allow_python: bool = False
    ) -> None:
        self._state = state
        self._allow = allow or AllowList()
        # python steps run user code on this machine: only when the operator said so.
        self._allow_python = allow_python

    @grpc_stream_errors
    def RunAssignment(self, request, context) -> Iterator[worker_pb2.WorkerReport]:  # type: ignore[no-untyped-def]
        violations = []
        if not request.assignment_id:
            violations.append(("assignment_id", "is required"))
        if request.threads < 0 or request.threads > MAX_THREADS:
            violations.append(("threads", f"must be between 0 and {MAX_THREADS}"))
        if not request.HasField("load_test"):
            violations.append(("load_test", "is required"))
        if request.report_interval_s < 0 or request.report_interval_s > 60:
            violations.append(("report_interval_s", "must be between 0 and 60"))
        if violations:
            raise InvalidArgument(violations)
        plans = compile_assignment(request, self._allow, allow_python=self._allow_python)
        try:
            runner = AssignmentRunner(
                request.assignment_id,
                plans,
                request.threads or self._state.threads,
                request.report_interval_s or 1.0,
            )
        except ValueError as exc:  # e.g. a tls_ca_file this worker cannot load
            raise InvalidArgument([("load_test.config", str(exc))]) from None
        self._state.begin(runner, request.run_id)
        # The master went away (or cancelled the call): stop the orphaned engines.
        context.add_callback(runner.cancel)
        try:
            yield from runner.run()
        finally:
            runner.cancel()
            self._state.end(runner)

    @grpc_errors
    def CancelAssignment(self, request, context):  # type: ignore[no-untyped-def]
        # An empty id cancels everything this worker runs.
        chosen = [
            r
            for r in self._state.runners()
            if not request.assignment_id or r.assignment_id == request.assignment_id
        ]
        for runner in chosen:
            runner.cancel()
        return worker_pb2.CancelAssignmentResponse(cancelled=bool(chosen))

    @grpc_errors
    def GetWorkerStatus(self, request, context):  # type: ignore[no-untyped-def]
        runner, run_id = self._state.current()
        return worker_pb2.WorkerStatus(
            worker_id=self._state.worker_id,
            state=worker_pb2.WORKER_BUSY if runner else worker_pb2.WORKER_IDLE,
            assignment_id=runner.assignment_id if runner else "",
            run_id=run_id,
            threads=self._state.threads,
            version=__version__,
            master=self._state.master,
            registered=self._state.registered,
        )
