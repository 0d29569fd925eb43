"""The run queue on a real SQLite file: FIFO, cancel, claim, and damaged rows.

A run whose stored bytes no longer decode must not stop the scheduler: it is set aside as a
FAILED run that says why, and the runs behind it still run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.loadtests import minimal_load_test

from _fastpath.histogram import Histogram
from chaperon.core.errors import FailedPrecondition, NotFound
from chaperon.core.health import ServiceHealth
from chaperon.core.loadtest import load_test_from_dict
from chaperon.v1 import results_pb2, worker_pb2
from master_service.registry import WorkerRegistry
from master_service.run_queue import RunQueue
from master_service.scheduler import Scheduler
from master_service.store import SqliteStore, UnreadableRun

LT = load_test_from_dict(minimal_load_test("http://127.0.0.1:8080", concurrency=2, duration="1s"))
DAMAGED = b"\x0a\xff"  # field 1, length 255, then nothing: does not decode


def _insert_raw(path: Path, run_id: str, state: int, blob: bytes) -> None:
    """Write a row behind the store's back, as a damaged disk or an old bug would."""
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("INSERT INTO runs (id, state, run) VALUES (?, ?, ?)", (run_id, state, blob))
    finally:
        db.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "q.db"))
    yield s
    s.close()


def test_fifo_cancel_and_claim(store: SqliteStore) -> None:
    queue: RunQueue[str] = RunQueue(store)
    first, second, third = (queue.submit(LT) for _ in range(3))
    assert queue.next_scheduled(0).id == first.id  # type: ignore[union-attr]
    assert queue.claim(first, "handle-1")
    assert queue.get(first.id).state == results_pb2.RUNNING and queue.running() == "handle-1"
    assert queue.cancel_queued(first.id) is None  # running: the runner's business
    assert queue.cancel_queued(second.id).state == results_pb2.CANCELLED  # type: ignore[union-attr]
    with pytest.raises(FailedPrecondition):
        queue.cancel_queued(second.id)
    with pytest.raises(NotFound):
        queue.cancel_queued("run-nope")
    assert not queue.claim(second, "handle-2")  # cancelled meanwhile
    assert queue.next_scheduled(0).id == third.id  # type: ignore[union-attr]
    first.state = results_pb2.SUCCEEDED
    queue.finish(first)
    assert queue.running() is None and queue.wait(first.id).state == results_pb2.SUCCEEDED
    queue.close()
    assert queue.next_scheduled(0) is None and not queue.claim(third, "handle-3")
    assert queue.count(results_pb2.SCHEDULED) == 1


def test_a_run_that_does_not_decode_is_failed_and_skipped(
    tmp_path: Path, store: SqliteStore
) -> None:
    _insert_raw(tmp_path / "q.db", "run-bad", results_pb2.SCHEDULED, DAMAGED)
    queue: RunQueue[str] = RunQueue(store)
    good = queue.submit(LT)
    with pytest.raises(UnreadableRun):
        store.next_scheduled()
    assert queue.next_scheduled(0) is None  # set aside, logged
    bad = queue.get("run-bad")
    assert bad.state == results_pb2.FAILED and "could not read this run back" in bad.error
    assert queue.next_scheduled(0).id == good.id  # type: ignore[union-attr]


def test_a_store_that_cannot_be_read_does_not_raise_and_health_follows(
    store: SqliteStore,
) -> None:
    class Flaky(SqliteStore):
        broken = True

        def next_scheduled(self) -> Any:
            if self.broken:
                raise sqlite3.OperationalError("disk I/O error")
            return super().next_scheduled()

    health = ServiceHealth()
    flaky = Flaky(":memory:")
    try:
        queue: RunQueue[str] = RunQueue(flaky, health=health)
        assert queue.next_scheduled(0.01) is None
        assert not health.serving
        assert health.reason == "the run queue: cannot read the queued runs: disk I/O error"
        flaky.broken = False
        assert queue.next_scheduled(0.01) is None  # empty, and readable again
        assert health.serving
    finally:
        flaky.close()


def test_a_store_writer_that_cannot_commit_turns_health_not_serving_until_it_can() -> None:
    health = ServiceHealth()
    store = SqliteStore(":memory:", health)
    try:
        with store._lock:
            store._db.execute("ALTER TABLE deltas RENAME TO deltas_aside")
        failed = store.add_delta("run-1", "w1", 1, b"report")  # the writer thread commits
        assert isinstance(failed.exception(timeout=10), sqlite3.OperationalError)
        assert not health.serving and health.reason.startswith("the store writer: ")
        with store._lock:
            store._db.execute("ALTER TABLE deltas_aside RENAME TO deltas")
        stored = store.add_delta("run-1", "w1", 2, b"report")
        assert stored.result(timeout=10) is None and health.serving
    finally:
        store.close()


def test_recovery_interrupts_runs_in_flight_and_sets_damaged_ones_aside(
    tmp_path: Path, store: SqliteStore
) -> None:
    h = Histogram()
    h.record(100)
    report = worker_pb2.WorkerReport(
        metrics=[worker_pb2.MetricDelta(key="GET /", hdr=h.encode(), count=1)]
    )
    store.put_run(results_pb2.LoadTestRun(id="r1", state=results_pb2.RUNNING))
    store.add_delta("r1", "w", 1, report.SerializeToString())
    store.add_delta("r1", "w", 2, DAMAGED)  # a delta that does not decode is skipped
    _insert_raw(tmp_path / "q.db", "r2", results_pb2.RUNNING, DAMAGED)
    RunQueue(store).recover()
    r1 = store.get_run("r1")
    assert r1 is not None and r1.state == results_pb2.INTERRUPTED
    assert r1.result.metrics[0].count == 1
    r2 = store.get_run("r2")
    assert r2 is not None and r2.state == results_pb2.FAILED


class _OneReportTransport:
    def __init__(self) -> None:
        self.assignments: list[str] = []

    def run_assignment(self, address: str, assignment: worker_pb2.Assignment) -> Any:
        self.assignments.append(assignment.run_id)
        h = Histogram()
        h.record(100)
        report = worker_pb2.WorkerReport(
            final=True,
            sessions_completed=2,
            metrics=[worker_pb2.MetricDelta(key="GET /", hdr=h.encode(), count=1)],
        )

        class Stream:
            def __iter__(self) -> Iterator[worker_pb2.WorkerReport]:
                yield report

            def cancel(self) -> None:
                pass

        return Stream()

    def cancel_assignment(self, address: str, assignment_id: str) -> None:
        pass


def test_the_scheduler_runs_on_past_a_damaged_row(tmp_path: Path, store: SqliteStore) -> None:
    registry = WorkerRegistry()
    registry.register("127.0.0.1:1000", 1)
    transport = _OneReportTransport()
    sched = Scheduler(store, registry, transport, worker_wait_s=1.0)
    before = sched.submit(LT)
    _insert_raw(tmp_path / "q.db", "run-bad", results_pb2.SCHEDULED, DAMAGED)
    after = sched.submit(LT)
    sched.start()
    try:
        assert sched.wait(before.id).state == results_pb2.SUCCEEDED
        assert sched.wait(after.id).state == results_pb2.SUCCEEDED
        assert sched.get("run-bad").state == results_pb2.FAILED
        assert transport.assignments == [before.id, after.id]
        # ... and it is still alive for the next one.
        again = sched.submit(LT)
        assert sched.wait(again.id).state == results_pb2.SUCCEEDED
    finally:
        sched.stop()


def test_a_run_cancelled_while_waiting_for_workers_never_starts(store: SqliteStore) -> None:
    transport = _OneReportTransport()
    sched = Scheduler(store, WorkerRegistry(), transport, worker_wait_s=30.0)
    sched.start()
    try:
        run = sched.submit(LT)
        time.sleep(0.3)  # the runner takes it and waits for a worker
        assert sched.cancel(run.id).state == results_pb2.CANCELLED
        assert sched.running_run_id() == ""
    finally:
        sched.stop()
    assert sched.get(run.id).state == results_pb2.CANCELLED and transport.assignments == []


def test_every_change_of_state_tells_the_listeners(store: SqliteStore) -> None:
    queue: RunQueue[str] = RunQueue(store)
    told: list[tuple[str, int]] = []
    # A listener sees the change already stored (it is told after the write).
    queue.on_change(lambda run_id: told.append((run_id, store.get_run(run_id).state)))  # type: ignore[union-attr]
    queue.on_change(lambda run_id: 1 / 0)  # a broken listener changes nothing
    first, second, third = (queue.submit(LT) for _ in range(3))
    assert queue.claim(first, "handle")
    queue.cancel_queued(second.id)
    queue.fail_scheduled(third, "no worker")
    first.state = results_pb2.SUCCEEDED
    queue.finish(first)
    assert told == [
        (first.id, results_pb2.SCHEDULED),
        (second.id, results_pb2.SCHEDULED),
        (third.id, results_pb2.SCHEDULED),
        (first.id, results_pb2.RUNNING),
        (second.id, results_pb2.CANCELLED),
        (third.id, results_pb2.FAILED),
        (first.id, results_pb2.SUCCEEDED),
    ]
    assert queue.running() is None
