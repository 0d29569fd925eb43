"""The run queue and the runner: one load test at a time, FIFO, spread over the workers.

Theory of operation: ``submit`` validates and stores a run as SCHEDULED and wakes the runner
thread. The runner takes the oldest SCHEDULED run, waits (bounded) for at least one available
worker, splits every scenario entry's sessions over the workers by capacity, and opens one
``RunAssignment`` stream per worker, each read by its own thread. Every report's deltas are
stored and, once their batch has committed, merged into the run's ``Aggregator`` (so progress
shown to watchers never runs ahead of the database); when every stream has ended (or the run's
timeout passes, or it is cancelled) the result is computed from the merged histograms, the
thresholds are evaluated, and the run gets its final state. Waiters (``RunLoadTest``) sleep on
a condition variable. Talking to workers goes through ``WorkerTransport`` so tests can swap it;
it raises ``AssignmentRefused`` or ``WorkerLost``, never a transport's status code.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2

from chaperon.core.allowlist import AllowList
from chaperon.core.durations import parse_duration_ns
from chaperon.core.errors import ChaperonError, FailedPrecondition, NotFound
from chaperon.v1 import loadtest_pb2, results_pb2, worker_pb2
from master_service.aggregator import Aggregator, evaluate_thresholds
from master_service.registry import WorkerEntry, WorkerRegistry
from master_service.splitter import Share, demands, split, split_takeover, to_entry_share
from master_service.store import SqliteStore
from master_service.transport import AssignmentRefused, AssignmentStream, WorkerTransport
from master_service.validation import check_targets, validate_load_test

log = logging.getLogger(__name__)

TERMINAL = (
    results_pb2.SUCCEEDED,
    results_pb2.FAILED,
    results_pb2.CANCELLED,
    results_pb2.INTERRUPTED,
)
# When a load test sets no timeout: its longest duration plus this grace, or this alone.
DEFAULT_TIMEOUT_GRACE_S = 60.0
DEFAULT_TIMEOUT_NO_DURATION_S = 3600.0
# How long a worker's report may wait for the store's batched commit before the run fails.
STORE_COMMIT_TIMEOUT_S = 30.0


@dataclass
class _ActiveRun:
    run: results_pb2.LoadTestRun
    aggregator: Aggregator
    started_monotonic: float
    assignments: dict[str, tuple[WorkerEntry, str]] = field(default_factory=dict)
    # Closed-model sessions given to each worker (for sessions_lost).
    assigned_sessions: dict[str, int] = field(default_factory=dict)
    # Open-model shares given to each worker (moved to survivors when it is lost).
    open_shares: dict[str, list[worker_pb2.EntryShare]] = field(default_factory=dict)
    # Streams by assignment id (a worker may also hold a takeover assignment).
    streams: dict[str, AssignmentStream] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    threads: list[threading.Thread] = field(default_factory=list)
    extra_assignments: list[tuple[WorkerEntry, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    cancelled: bool = False


def _now_ts() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class Scheduler:
    def __init__(
        self,
        store: SqliteStore,
        registry: WorkerRegistry,
        transport: WorkerTransport,
        report_interval_s: float = 1.0,
        worker_wait_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        allow: AllowList | None = None,
    ) -> None:
        self._allow = allow or AllowList()
        self._store = store
        self._registry = registry
        self._transport = transport
        self._report_interval_s = report_interval_s
        self._worker_wait_s = worker_wait_s
        self._clock = clock
        self._cond = threading.Condition()
        self._active: _ActiveRun | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._recover()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="chaperon-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            active = self._active
            self._cond.notify_all()
        if active is not None:
            self._cancel_active(active)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _recover(self) -> None:
        """Runs left RUNNING by a master that died become INTERRUPTED with what was stored."""
        for _, run in self._store.list_runs(states=[results_pb2.RUNNING], limit=1_000_000):
            agg = Aggregator()
            for worker_id, _seq, blob in self._store.deltas(run.id):
                report = worker_pb2.WorkerReport()
                report.ParseFromString(blob)
                try:
                    agg.add_report(worker_id, report, blob)
                except ValueError:
                    log.warning("run %s: a stored delta does not decode; skipped", run.id)
            run.result.CopyFrom(agg.result())
            run.state = results_pb2.INTERRUPTED
            run.error = "the master stopped while this run was in flight"
            run.finished_at.CopyFrom(_now_ts())
            self._store.put_run(run)

    # -- queries and commands (called from RPC threads) -------------------------------------

    @property
    def allowed_targets(self) -> list[str]:
        return list(self._allow.entries)

    def check(self, load_test: loadtest_pb2.LoadTest) -> None:
        """Validate fully and check the targets against the allow-list (raises)."""
        validate_load_test(load_test)
        check_targets(load_test, self._allow)

    def submit(self, load_test: loadtest_pb2.LoadTest) -> results_pb2.LoadTestRun:
        self.check(load_test)
        run = results_pb2.LoadTestRun(
            id=f"run-{uuid.uuid4().hex[:12]}",
            state=results_pb2.SCHEDULED,
            load_test=load_test,
            submitted_at=_now_ts(),
        )
        with self._cond:
            self._store.put_run(run)
            self._cond.notify_all()
        return run

    def get(self, run_id: str) -> results_pb2.LoadTestRun:
        run = self._store.get_run(run_id)
        if run is None:
            raise NotFound(f"no load test run with id {run_id!r}")
        return run

    def wait(
        self, run_id: str, still_wanted: Callable[[], bool] = lambda: True
    ) -> results_pb2.LoadTestRun:
        """Block until the run ends (or ``still_wanted`` turns false); return it."""
        while True:
            run = self.get(run_id)
            if run.state in TERMINAL or not still_wanted():
                return run
            with self._cond:
                self._cond.wait(0.5)

    def cancel(self, run_id: str) -> results_pb2.LoadTestRun:
        with self._cond:
            run = self.get(run_id)
            if run.state in TERMINAL:
                raise FailedPrecondition(
                    f"run {run_id} has already ended ({results_pb2.RunState.Name(run.state)})"
                )
            active = self._active if self._active and self._active.run.id == run_id else None
            if active is None:
                run.state = results_pb2.CANCELLED
                run.finished_at.CopyFrom(_now_ts())
                self._store.put_run(run)
                self._cond.notify_all()
                return run
        self._cancel_active(active)
        return self.wait(run_id)

    def list_runs(
        self, states: list[int], after_seq: int, limit: int
    ) -> list[tuple[int, results_pb2.LoadTestRun]]:
        return self._store.list_runs(states, after_seq, limit)

    def runs_total(self) -> int:
        return self._store.count()

    def queue_length(self) -> int:
        return self._store.count(results_pb2.SCHEDULED)

    def running_run_id(self) -> str:
        with self._cond:
            return self._active.run.id if self._active else ""

    # -- the runner -----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                run = self._store.next_scheduled()
                if run is None:
                    self._cond.wait(1.0)
                    continue
            try:
                self._execute(run)
            except Exception as exc:  # noqa: BLE001 - one bad run must not stop the queue
                log.exception("run %s failed", run.id)
                run = self._store.get_run(run.id) or run
                if run.state not in TERMINAL:
                    run.state = results_pb2.FAILED
                    run.error = f"internal error: {type(exc).__name__}: {exc}"
                    run.finished_at.CopyFrom(_now_ts())
                    self._store.put_run(run)
            with self._cond:
                self._active = None
                self._cond.notify_all()

    def _wait_for_workers(self, run_id: str) -> list[WorkerEntry]:
        deadline = self._clock() + self._worker_wait_s
        while True:
            workers = self._registry.available()
            if workers or self._clock() >= deadline:
                return workers
            with self._cond:
                current = self._store.get_run(run_id)
                if self._stopping or current is None or current.state != results_pb2.SCHEDULED:
                    return []
                self._cond.wait(0.2)

    def _execute(self, run: results_pb2.LoadTestRun) -> None:
        workers = self._wait_for_workers(run.id)
        with self._cond:
            current = self._store.get_run(run.id)
            if current is None or current.state != results_pb2.SCHEDULED or self._stopping:
                return  # cancelled while waiting
            if not workers:
                run.state = results_pb2.FAILED
                run.error = (
                    f"no worker available after {self._worker_wait_s:g}s "
                    "(start one with: chaperon worker --master HOST:PORT)"
                )
                run.finished_at.CopyFrom(_now_ts())
                self._store.put_run(run)
                return
            run.state = results_pb2.RUNNING
            run.started_at.CopyFrom(_now_ts())
            self._store.put_run(run)
            active = _ActiveRun(run=run, aggregator=Aggregator(), started_monotonic=self._clock())
            self._active = active
            self._cond.notify_all()

        plan = self._plan(run.load_test, workers)
        for worker, shares in plan:
            assignment = worker_pb2.Assignment(
                run_id=run.id,
                assignment_id=f"{run.id}/{worker.worker_id}",
                load_test=run.load_test,
                shares=shares,
                report_interval_s=self._report_interval_s,
            )
            active.assignments[worker.worker_id] = (worker, assignment.assignment_id)
            active.assigned_sessions[worker.worker_id] = sum(
                s.sessions for s in shares if not s.rate_fraction
            )
            active.open_shares[worker.worker_id] = [s for s in shares if s.rate_fraction]
            self._registry.set_run(worker.worker_id, run.id)
            self._start_consumer(active, worker, assignment, takeover=False)

        deadline = active.started_monotonic + _timeout_s(run.load_test)
        timed_out = False
        while True:
            with self._cond:
                alive = [t for t in active.threads if t.is_alive()]
            if not alive:
                break
            for t in alive:
                t.join(0.2)
                if not timed_out and self._clock() > deadline:
                    timed_out = True
                    limit_s = _timeout_s(run.load_test)
                    active.errors.append(
                        f"the run passed its timeout ({limit_s:g}s) and was stopped"
                    )
                    self._cancel_active(active)
                self._drop_silent_workers(active)
        for worker, _ in plan:
            self._registry.set_run(worker.worker_id, "")
        self._finish(active, timed_out)

    def _plan(
        self, lt: loadtest_pb2.LoadTest, workers: list[WorkerEntry]
    ) -> list[tuple[WorkerEntry, list[worker_pb2.EntryShare]]]:
        per_worker = split(demands(lt), [w.capacity for w in workers])
        return [
            (w, [to_entry_share(s) for s in shares])
            for w, shares in zip(workers, per_worker, strict=True)
            if shares
        ]

    def _start_consumer(
        self,
        active: _ActiveRun,
        worker: WorkerEntry,
        assignment: worker_pb2.Assignment,
        takeover: bool,
    ) -> None:
        t = threading.Thread(
            target=self._consume,
            args=(active, worker, assignment, takeover),
            name=f"assignment-{assignment.assignment_id}",
            daemon=True,
        )
        with self._cond:
            active.threads.append(t)
        t.start()

    def _take_over(self, active: _ActiveRun, lost_id: str) -> None:
        """Move a lost worker's part of the open-model arrival rate to the survivors.

        Each survivor gets a takeover assignment: the lost worker's open-model shares, split by
        capacity, with the schedule starting where the run is now. Closed-model sessions are
        not moved (a closed session's state died with its worker); they are sessions_lost.
        """
        shares = active.open_shares.get(lost_id) or []
        if not shares or active.cancelled or self._stopping:
            return
        with self._cond:
            survivors = [
                w
                for wid, (w, _) in active.assignments.items()
                if wid != lost_id and wid not in active.lost and wid not in active.finished
            ]
        if not survivors:
            active.events.append(f"worker {lost_id} lost; no survivor to take its arrival rate")
            return
        elapsed_s = self._clock() - active.started_monotonic
        lost_shares = [
            Share(entry_index=s.entry_index, sessions=s.sessions, rate_fraction=s.rate_fraction)
            for s in shares
        ]
        parts = split_takeover(lost_shares, [w.capacity for w in survivors])
        moved: list[str] = []
        for survivor, part in zip(survivors, parts, strict=True):
            given = [to_entry_share(s) for s in part]
            if not given:
                continue
            n = len(active.extra_assignments) + 1
            assignment = worker_pb2.Assignment(
                run_id=active.run.id,
                assignment_id=f"{active.run.id}/{survivor.worker_id}/takeover-{n}",
                load_test=active.run.load_test,
                shares=given,
                report_interval_s=self._report_interval_s,
                schedule_offset_s=elapsed_s,
            )
            with self._cond:
                active.extra_assignments.append((survivor, assignment.assignment_id))
            self._start_consumer(active, survivor, assignment, takeover=True)
            moved.append(survivor.worker_id)
        active.events.append(
            f"at {elapsed_s:.1f}s: worker {lost_id} lost; its share of the arrival rate "
            f"moved to {', '.join(moved)}"
        )

    def _lose(self, active: _ActiveRun, worker_id: str, why: str) -> None:
        """Mark a worker lost for this run (once) and hand its open-model share over."""
        with self._cond:
            if worker_id in active.lost or active.cancelled:
                return
            active.lost.append(worker_id)
            if why:
                active.errors.append(why)
            stream = active.streams.get(active.assignments[worker_id][1])
        if stream is not None:
            stream.cancel()
        self._take_over(active, worker_id)

    def _drop_silent_workers(self, active: _ActiveRun) -> None:
        """A worker whose heartbeats stopped (crash, network cut) is lost for this run: its
        stream is cancelled at once instead of waiting for TCP to notice."""
        lost_now = {
            w.worker_id for w in self._registry.snapshot() if w.state == worker_pb2.WORKER_LOST
        }
        with self._cond:
            silent = [
                wid
                for wid in active.assignments
                if wid in lost_now and wid not in active.finished and wid not in active.lost
            ]
        for wid in silent:
            self._lose(active, wid, f"worker {wid} stopped sending heartbeats")

    def _consume(
        self,
        active: _ActiveRun,
        worker: WorkerEntry,
        assignment: worker_pb2.Assignment,
        takeover: bool = False,
    ) -> None:
        final = False
        error = ""
        refused = False
        try:
            stream = self._transport.run_assignment(worker.address, assignment)
            with self._cond:
                active.streams[assignment.assignment_id] = stream
                if active.cancelled:
                    stream.cancel()
            for report in stream:
                self._registry.touch(worker.worker_id)
                blob = report.SerializeToString()  # stored, and what the aggregator merges
                stored = self._store.add_delta(
                    active.run.id, worker.worker_id, report.sequence, blob, assignment.assignment_id
                )
                # Merged (and so shown to anyone) only once committed: a figure a watcher
                # saw is in the database and survives a crash of the master.
                try:
                    stored.result(timeout=STORE_COMMIT_TIMEOUT_S)
                except FutureTimeout:
                    raise RuntimeError(
                        f"the master's database did not store a report within "
                        f"{STORE_COMMIT_TIMEOUT_S:g}s"
                    ) from None
                active.aggregator.add_report(worker.worker_id, report, blob)
                if report.error:
                    active.errors.append(f"worker {worker.worker_id}: {report.error}")
                final = final or report.final
        except AssignmentRefused as exc:
            error = f"worker {worker.worker_id} refused the assignment: {exc.message}"
            refused = True
        except Exception as exc:  # noqa: BLE001 - a failed worker is reported, not fatal
            detail = exc.message if isinstance(exc, ChaperonError) else str(exc)
            error = f"worker {worker.worker_id} ({worker.address}): {detail}"
        if takeover:
            if not final and not active.cancelled and worker.worker_id not in active.lost:
                active.errors.append(error or f"takeover {assignment.assignment_id} ended early")
            return
        if not final and not active.cancelled and worker.worker_id not in active.lost:
            if refused:
                # Not lost: it answered, and said why (the run fails with that reason).
                active.errors.append(error)
            else:
                self._lose(active, worker.worker_id, error)
        with self._cond:
            active.finished.add(worker.worker_id)

    def _cancel_active(self, active: _ActiveRun) -> None:
        with self._cond:
            active.cancelled = True
            streams = list(active.streams.values())
        for worker, assignment_id in [*active.assignments.values(), *active.extra_assignments]:
            try:
                self._transport.cancel_assignment(worker.address, assignment_id)
            except Exception:  # noqa: BLE001 - the stream cancel below still ends it
                log.info("cancel of %s on %s failed", assignment_id, worker.address)
        # Give workers a moment to send their final report with the last deltas.
        for stream in streams:
            threading.Timer(2.0, stream.cancel).start()

    def _finish(self, active: _ActiveRun, timed_out: bool) -> None:
        run = active.run
        result = active.aggregator.result(lost_workers=sorted(set(active.lost)))
        result.events.extend(active.events)
        completed = active.aggregator.completed_by_worker()
        result.sessions_lost = sum(
            max(0, active.assigned_sessions.get(wid, 0) - completed.get(wid, 0))
            for wid in set(active.lost)
        )
        if timed_out:
            result.sessions_timed_out += max(
                0, result.sessions_started - result.sessions_completed - result.sessions_lost
            )
        run.result.CopyFrom(result)
        passed = evaluate_thresholds(run.result, list(run.load_test.thresholds))
        if self._stopping:
            run.state = results_pb2.INTERRUPTED
            active.errors.append("the master was stopped while this run was in flight")
        elif active.cancelled and not timed_out:
            run.state = results_pb2.CANCELLED
        elif timed_out or active.errors and not result.metrics:
            run.state = results_pb2.FAILED
        elif active.lost and len(active.lost) == len(active.assignments):
            run.state = results_pb2.FAILED
        elif not passed:
            run.state = results_pb2.FAILED
            active.errors.append("thresholds failed")
        else:
            run.state = results_pb2.SUCCEEDED
        run.error = "; ".join(active.errors)
        run.finished_at.CopyFrom(_now_ts())
        with self._cond:
            self._store.put_run(run)
            self._cond.notify_all()

    def progress(
        self, run_id: str
    ) -> tuple[float, list[tuple[str, int, int, float, float]]] | None:
        with self._cond:
            active = self._active if self._active and self._active.run.id == run_id else None
        if active is None:
            return None
        return active.aggregator.elapsed_s(), active.aggregator.progress()


def _entry_duration_s(entry: loadtest_pb2.ScenarioEntry) -> float | None:
    """How long the entry runs by its own settings, or None (bounded by iterations only)."""
    if entry.duration:
        return parse_duration_ns(entry.duration) / 1e9
    if entry.HasField("arrival_rate") and entry.arrival_rate.stages:
        return sum(parse_duration_ns(s.duration) for s in entry.arrival_rate.stages) / 1e9
    return None


def _timeout_s(lt: loadtest_pb2.LoadTest) -> float:
    if lt.timeout:
        return parse_duration_ns(lt.timeout) / 1e9
    durations = [_entry_duration_s(e) for e in lt.scenarios]
    if durations and all(d is not None for d in durations):
        return max(d for d in durations if d is not None) + DEFAULT_TIMEOUT_GRACE_S
    return DEFAULT_TIMEOUT_NO_DURATION_S
