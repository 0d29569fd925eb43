"""The master's domain objects with fakes: store, aggregator, registry, scheduler.

The network is not the point here (the system tests cover it): a fake WorkerTransport
plays the workers' report streams so the queue, the merging and the states can be checked.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.loadtests import minimal_load_test

from _fastpath.histogram import Histogram
from chaperon.core.errors import FailedPrecondition, InvalidArgument, NotFound
from chaperon.core.loadtest import load_test_from_dict
from chaperon.v1 import loadtest_pb2, results_pb2, worker_pb2
from master_service.aggregator import PERCENTILES, Aggregator, evaluate_thresholds
from master_service.registry import WorkerRegistry
from master_service.scheduler import Scheduler
from master_service.store import SqliteStore

LT: dict[str, Any] = minimal_load_test("http://127.0.0.1:8080", concurrency=5, duration="1s")


def _report(
    seq: int, values: list[int], final: bool = False, errors: int = 0
) -> worker_pb2.WorkerReport:
    h = Histogram()
    for v in values:
        h.record(v)
    return worker_pb2.WorkerReport(
        sequence=seq,
        final=final,
        sessions_started=1,
        sessions_completed=1 if final else 0,
        elapsed_s=float(seq),
        metrics=[
            worker_pb2.MetricDelta(
                key="GET /",
                hdr=h.encode(),
                count=len(values),
                errors=errors,
                errors_by_kind={"http_5xx": errors} if errors else {},
            )
        ],
    )


def test_aggregator_merges_exactly() -> None:
    agg = Aggregator()
    agg.add_report("a", _report(1, [100, 200, 300]))
    agg.add_report("b", _report(1, [1000, 2000], errors=1))
    agg.add_report("a", _report(2, [400], final=True))
    res = agg.result()
    (m,) = res.metrics
    assert m.count == 6 and m.errors == 1 and m.errors_by_kind["http_5xx"] == 1
    assert m.min_us == 100 and m.max_us == pytest.approx(2000, rel=1e-3)
    assert [p.percentile for p in m.percentiles] == list(PERCENTILES)
    assert Histogram.decode(m.hdr).total_count == 6
    assert res.workers == ["a", "b"]


def test_thresholds_on_a_missing_key_or_a_key_without_latency_fail_with_a_reason() -> None:
    agg = Aggregator()
    agg.add_report("a", _report(1, [1000, 3000], final=True, errors=1))
    res = agg.result()
    res.metrics.add(key="assign token", errors=2, errors_by_kind={"extract": 2})
    thresholds = [
        loadtest_pb2.Threshold(metric="GET /", stat="max", max=5),
        loadtest_pb2.Threshold(metric="GET /", stat="error_rate", max=0.25),
        loadtest_pb2.Threshold(metric="GET /nope", stat="p99", max=5),
        loadtest_pb2.Threshold(metric="GET /nope", stat="errors", max=5),
        loadtest_pb2.Threshold(metric="assign token", stat="p50", max=5),
        loadtest_pb2.Threshold(metric="assign token", stat="errors", max=5),
    ]
    assert not evaluate_thresholds(res, thresholds)
    got = [(t.passed, t.reason) for t in res.thresholds]
    assert got == [
        (True, ""),
        (False, ""),  # 1 error in 2 responses
        (False, "no such metric"),
        (False, "no such metric"),
        (False, "no latency recorded"),
        (True, ""),
    ]
    assert res.thresholds[0].value == pytest.approx(3.0, rel=1e-3)  # milliseconds
    assert res.thresholds[1].value == 0.5


def test_store_round_trip_and_order(tmp_path: Any) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    for i in range(5):
        store.put_run(results_pb2.LoadTestRun(id=f"r{i}", state=results_pb2.SCHEDULED))
    store.put_run(results_pb2.LoadTestRun(id="r1", state=results_pb2.SUCCEEDED))
    assert store.get_run("r1").state == results_pb2.SUCCEEDED
    assert store.next_scheduled().id == "r0"
    assert [r.id for _, r in store.list_runs([results_pb2.SCHEDULED])] == ["r0", "r2", "r3", "r4"]
    first = store.list_runs(limit=2)
    assert [r.id for _, r in store.list_runs(after_seq=first[-1][0], limit=2)] == ["r2", "r3"]
    store.close()
    again = SqliteStore(str(tmp_path / "s.db"))
    assert again.count() == 5 and again.get_run("missing") is None
    again.close()


def test_registry_reuses_ids_and_marks_lost() -> None:
    now = [0.0]
    reg = WorkerRegistry(heartbeat_interval_s=1.0, clock=lambda: now[0])
    a = reg.register("127.0.0.1:1", 2)
    assert reg.register("127.0.0.1:1", 2) == a  # same address: no duplicate
    b = reg.register("127.0.0.1:2", 1)
    assert len(reg.available()) == 2
    reg.set_ignored(b, True)
    assert [w.worker_id for w in reg.available()] == [a]
    now[0] = 10.0
    assert reg.available() == []
    assert reg.heartbeat(a, worker_pb2.WORKER_IDLE)
    assert [w.worker_id for w in reg.available()] == [a]
    assert not reg.heartbeat("nobody", worker_pb2.WORKER_IDLE)
    with pytest.raises(NotFound):
        reg.set_ignored("nobody", True)


class _FakeStream:
    def __init__(
        self, reports: list[worker_pb2.WorkerReport], gate: threading.Event | None
    ) -> None:
        self._reports = reports
        self._gate = gate
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[worker_pb2.WorkerReport]:
        yield from self._reports[:-1]
        if self._gate is not None:
            while not self._gate.is_set() and not self.cancelled.is_set():
                time.sleep(0.01)
        if not self.cancelled.is_set():
            yield self._reports[-1]

    def cancel(self) -> None:
        self.cancelled.set()


class _FakeTransport:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.assignments: list[tuple[str, worker_pb2.Assignment]] = []
        self.cancels: list[str] = []
        self.gate = gate

    def run_assignment(self, address: str, assignment: worker_pb2.Assignment) -> _FakeStream:
        self.assignments.append((address, assignment))
        n = sum(s.sessions for s in assignment.shares)
        return _FakeStream([_report(1, [100] * n), _report(2, [200] * n, final=True)], self.gate)

    def cancel_assignment(self, address: str, assignment_id: str) -> None:
        self.cancels.append(assignment_id)


def _scheduler(transport: _FakeTransport, workers: int = 2) -> tuple[Scheduler, WorkerRegistry]:
    reg = WorkerRegistry()
    for i in range(workers):
        reg.register(f"127.0.0.1:{1000 + i}", 1)
    sched = Scheduler(SqliteStore(":memory:"), reg, transport, worker_wait_s=1.0)
    sched.start()
    return sched, reg


def test_run_is_split_merged_and_succeeds() -> None:
    transport = _FakeTransport()
    sched, _ = _scheduler(transport)
    try:
        run = sched.wait(sched.submit(load_test_from_dict(LT)).id)
        assert run.state == results_pb2.SUCCEEDED, run.error
        assert sorted(sum(s.sessions for s in a.shares) for _, a in transport.assignments) == [2, 3]
        (m,) = run.result.metrics
        assert m.count == 10 and len(run.result.workers) == 2
    finally:
        sched.stop()


def test_the_master_log_tells_of_each_run_submitted_started_and_ended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="master_service"):
        sched, _ = _scheduler(_FakeTransport())
        try:
            run = sched.wait(sched.submit(load_test_from_dict(LT)).id)
        finally:
            sched.stop()
        sched, _ = _scheduler(_FakeTransport(), workers=0)
        try:
            failed = sched.wait(sched.submit(load_test_from_dict(LT)).id)
        finally:
            sched.stop()
    lines = [r.getMessage() for r in caplog.records if not r.getMessage().startswith("worker")]
    took = (run.finished_at.ToNanoseconds() - run.started_at.ToNanoseconds()) / 1e9
    assert lines == [
        f"run {run.id} submitted: smoke",
        f"run {run.id} started: smoke on 2 workers",
        f"run {run.id} SUCCEEDED in {took:.1f}s: 10 requests, 0 errors",
        f"run {failed.id} submitted: smoke",
        f"run {failed.id} FAILED before it started: no worker available after 1s"
        " (start one with: chaperon worker --master HOST:PORT)",
    ]


def test_queue_is_fifo_and_scheduled_runs_cancel() -> None:
    gate = threading.Event()
    transport = _FakeTransport(gate)
    sched, _ = _scheduler(transport, workers=1)
    try:
        ids = [sched.submit(load_test_from_dict({**LT, "name": f"t{i}"})).id for i in range(3)]
        deadline = time.monotonic() + 5
        while sched.get(ids[0]).state != results_pb2.RUNNING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sched.get(ids[1]).state == results_pb2.SCHEDULED
        assert sched.cancel(ids[2]).state == results_pb2.CANCELLED
        with pytest.raises(FailedPrecondition):
            sched.cancel(ids[2])
        gate.set()
        assert sched.wait(ids[0]).state == results_pb2.SUCCEEDED
        assert sched.wait(ids[1]).state == results_pb2.SUCCEEDED
        names = [a.load_test.name for _, a in transport.assignments]
        assert names == ["t0", "t1"]
    finally:
        sched.stop()


def test_cancel_running_keeps_partial_metrics() -> None:
    gate = threading.Event()
    transport = _FakeTransport(gate)
    sched, _ = _scheduler(transport, workers=1)
    try:
        run_id = sched.submit(load_test_from_dict(LT)).id
        deadline = time.monotonic() + 5
        while not transport.assignments and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        run = sched.cancel(run_id)
        assert run.state == results_pb2.CANCELLED
        assert transport.cancels
        assert run.result.metrics[0].count == 5
    finally:
        sched.stop()


def test_no_worker_fails_with_a_clear_error() -> None:
    sched, _ = _scheduler(_FakeTransport(), workers=0)
    try:
        run = sched.wait(sched.submit(load_test_from_dict(LT)).id)
        assert run.state == results_pb2.FAILED and "no worker" in run.error
    finally:
        sched.stop()


def test_submit_validates_and_unknown_id_is_not_found() -> None:
    sched, _ = _scheduler(_FakeTransport())
    try:
        with pytest.raises(InvalidArgument):
            sched.submit(load_test_from_dict({**LT, "scenarios": []}))
        with pytest.raises(NotFound):
            sched.get("run-nope")
    finally:
        sched.stop()


class _ManualStore(SqliteStore):
    """Commits deltas only when the test calls flush(); counts what was queued."""

    FLUSH_INTERVAL_S = 3600.0

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.queued = 0

    def add_delta(self, *args: Any, **kwargs: Any) -> Any:
        stored = super().add_delta(*args, **kwargs)
        self.queued += 1
        return stored


def _until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_progress_shows_only_committed_deltas() -> None:
    # A delta the master received but has not committed is not merged: no watcher can be
    # shown a figure that a crash would take back.
    store = _ManualStore(":memory:")
    reg = WorkerRegistry()
    reg.register("127.0.0.1:1000", 1)
    gate = threading.Event()
    sched = Scheduler(store, reg, _FakeTransport(gate), worker_wait_s=1.0)
    sched.start()
    try:
        run_id = sched.submit(load_test_from_dict(LT)).id
        _until(lambda: store.queued == 1)
        time.sleep(0.1)  # would the consumer merge it anyway?
        assert sched.progress(run_id) == (0.0, [])
        store.flush()
        _until(lambda: (sched.progress(run_id) or (0, []))[1] != [])
        ((key, count, errors, _, _),) = sched.progress(run_id)[1]  # type: ignore[index]
        assert (key, count, errors) == ("GET /", 5, 0)
        gate.set()
        _until(lambda: store.queued == 2)
        assert sched.progress(run_id)[1][0][1] == 5  # type: ignore[index]
        store.flush()
        run = sched.wait(run_id)
        assert run.state == results_pb2.SUCCEEDED and run.result.metrics[0].count == 10
    finally:
        gate.set()
        sched.stop()
        store.close()


def test_a_failed_commit_fails_the_delta_not_the_writer(tmp_path: Any) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    try:
        store.put_run(results_pb2.LoadTestRun(id="r1", state=results_pb2.RUNNING))
        good = store.add_delta("r1", "w", 1, b"x")
        store.flush()
        assert good.result(timeout=0) is None
        bad = store.add_delta("r1", "w", 2, None)  # type: ignore[arg-type]  # NOT NULL column
        with pytest.raises(sqlite3.IntegrityError):
            bad.result(timeout=5)
        later = store.add_delta("r1", "w", 3, b"z")
        assert later.result(timeout=5) is None  # the writer thread lived on
        assert [s for _, s, _ in store.deltas("r1")] == [1, 3]
    finally:
        store.close()
    closed = store.add_delta("r1", "w", 4, b"late")
    with pytest.raises(RuntimeError, match="closed"):
        closed.result(timeout=0)


def test_restart_marks_in_flight_run_interrupted_with_partial_metrics(tmp_path: Any) -> None:
    path = str(tmp_path / "m.db")
    store = SqliteStore(path)
    store.put_run(results_pb2.LoadTestRun(id="r1", state=results_pb2.RUNNING))
    store.put_run(results_pb2.LoadTestRun(id="r2", state=results_pb2.SCHEDULED))
    store.add_delta("r1", "w", 1, _report(1, [10, 20]).SerializeToString())
    store.close()
    store = SqliteStore(path)
    Scheduler(store, WorkerRegistry(), _FakeTransport())
    r1 = store.get_run("r1")
    assert r1.state == results_pb2.INTERRUPTED and r1.result.metrics[0].count == 2
    assert store.get_run("r2").state == results_pb2.SCHEDULED
    store.close()


class _DyingStream:
    """One report, then the stream breaks as if the worker died."""

    def __init__(self, report: worker_pb2.WorkerReport) -> None:
        self._report = report

    def __iter__(self) -> Iterator[worker_pb2.WorkerReport]:
        yield self._report
        time.sleep(0.3)
        raise ConnectionError("worker gone")

    def cancel(self) -> None:
        pass


class _TakeoverTransport(_FakeTransport):
    """Worker :1000 dies after its first report; :1001 keeps running until the takeover."""

    def __init__(self) -> None:
        super().__init__(gate=threading.Event())

    def run_assignment(self, address: str, assignment: worker_pb2.Assignment) -> Any:
        self.assignments.append((address, assignment))
        if address.endswith(":1000") and "takeover" not in assignment.assignment_id:
            return _DyingStream(_report(1, [100]))
        if "takeover" in assignment.assignment_id:
            assert self.gate is not None
            self.gate.set()  # the survivor's main stream may end now
            return _FakeStream([_report(1, [100]), _report(2, [200], final=True)], None)
        return _FakeStream([_report(1, [100]), _report(2, [200], final=True)], self.gate)


def test_open_model_share_of_a_lost_worker_moves_to_the_survivor() -> None:
    transport = _TakeoverTransport()
    sched, _ = _scheduler(transport, workers=2)
    open_lt = {
        **LT,
        "scenarios": [
            {
                **LT["scenarios"][0],
                "concurrency": 0,
                "duration": "5s",
                "arrival_rate": {"per_second": 100, "max_sessions": 10},
            }
        ],
    }
    try:
        run = sched.wait(sched.submit(load_test_from_dict(open_lt)).id)
        takeovers = [a for _, a in transport.assignments if "takeover" in a.assignment_id]
        assert len(takeovers) == 1
        (takeover,) = takeovers
        assert transport.assignments[-1][0].endswith(":1001")
        (share,) = takeover.shares
        assert share.sessions == 5 and share.rate_fraction == 0.5
        assert share.first_arrival > 0  # it carries on from the first arrival not yet due
        # The dead worker's arrivals between its report and its death are lost: FAILED.
        assert run.state == results_pb2.FAILED, run.error
        assert run.result.arrivals_lost > 0
        assert run.result.sessions_lost == run.result.arrivals_lost
        assert len(run.result.lost_workers) == 1
        assert any("moved to" in e for e in run.result.events)
        # both assignments of the survivor are merged: 1 + 1 (survivor) + 1 + 1 (takeover) + 1
        assert run.result.metrics[0].count == 5
    finally:
        sched.stop()


def test_a_file_that_is_not_our_database_is_refused_with_its_reason(tmp_path: Any) -> None:
    from master_service.store import StoreUnavailable

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StoreUnavailable, match="file is not a database"):
        SqliteStore(str(corrupt))
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE deltas (x)")
    with pytest.raises(StoreUnavailable, match="master's database"):
        SqliteStore(str(foreign))
