"""Deleting runs and the retention policy, on a real SQLite file (no network).

The store deletes a run with its deltas in one transaction and gives the space back; the run
queue refuses to delete a run that has not ended; the retention loop deletes what the policy
drops (by count, by age, never a SCHEDULED or RUNNING run) and goes on past a run it cannot
delete. The same against real processes: tests/system/test_delete_and_retention.py.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.loadtests import minimal_load_test

from chaperon.core.errors import FailedPrecondition, NotFound
from chaperon.core.loadtest import load_test_from_dict
from chaperon.v1 import results_pb2
from master_service.registry import WorkerRegistry
from master_service.retention import Retention, RetentionPolicy
from master_service.run_queue import TERMINAL, RunQueue
from master_service.scheduler import Scheduler
from master_service.store import SqliteStore

LT = load_test_from_dict(minimal_load_test("http://127.0.0.1:8080", concurrency=2, duration="1s"))
DAMAGED = b"\x0a\xff"  # field 1, length 255, then nothing: does not decode
NOW_S = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "r.db"))
    yield s
    s.close()


def _run(run_id: str, state: int, finished_at_s: float | None = None) -> results_pb2.LoadTestRun:
    run = results_pb2.LoadTestRun(id=run_id, state=state)  # type: ignore[arg-type]
    if finished_at_s is not None:
        run.finished_at.FromNanoseconds(int(finished_at_s * 1e9))
    return run


def _delta_rows(path: Path, run_id: str) -> int:
    db = sqlite3.connect(str(path))
    try:
        return int(
            db.execute("SELECT COUNT(*) FROM deltas WHERE run_id = ?", (run_id,)).fetchone()[0]
        )
    finally:
        db.close()


def test_delete_removes_the_run_and_its_deltas(tmp_path: Path, store: SqliteStore) -> None:
    for run_id in ("r1", "r2"):
        store.put_run(_run(run_id, results_pb2.SUCCEEDED, NOW_S))
        for seq in range(3):
            store.add_delta(run_id, "w", seq, b"report")
    pending = store.add_delta("r1", "w", 3, b"queued, not yet written")

    assert store.delete_run("r1")

    assert pending.result(timeout=5) is None  # written first, then deleted with its run
    assert store.get_run("r1") is None and store.run_state("r1") is None
    assert store.deltas("r1") == [] and _delta_rows(tmp_path / "r.db", "r1") == 0
    assert store.get_run("r2") is not None and len(store.deltas("r2")) == 3
    assert not store.delete_run("r1")
    # A report that comes after its run was deleted is dropped, not kept without its run.
    late = store.add_delta("r1", "w", 9, b"late")
    store.flush()
    assert late.result(timeout=0) is None and _delta_rows(tmp_path / "r.db", "r1") == 0


def test_a_new_database_gives_the_space_of_deleted_runs_back(
    tmp_path: Path, store: SqliteStore
) -> None:
    path = tmp_path / "r.db"
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    db.close()
    for i in range(4):
        store.put_run(_run(f"r{i}", results_pb2.SUCCEEDED, NOW_S))
        for seq in range(40):
            store.add_delta(f"r{i}", "w", seq, os.urandom(16 * 1024))
    store.flush()
    store.reclaim_space()  # also a checkpoint: the file now holds everything
    full_bytes = path.stat().st_size
    assert full_bytes > 4 * 40 * 16 * 1024

    for i in range(3):
        store.delete_run(f"r{i}")
    store.reclaim_space()

    assert path.stat().st_size < full_bytes * 0.4
    assert len(store.deltas("r3")) == 40


def test_a_run_deleted_through_the_scheduler_gives_its_space_back_at_once(
    tmp_path: Path, store: SqliteStore
) -> None:
    path = tmp_path / "r.db"
    store.put_run(_run("r", results_pb2.SUCCEEDED, NOW_S))
    for seq in range(60):
        store.add_delta("r", "w", seq, os.urandom(16 * 1024))
    store.flush()
    store.reclaim_space()
    full_bytes = path.stat().st_size
    sched = Scheduler(store, WorkerRegistry(), transport=None)  # type: ignore[arg-type]

    assert sched.delete("r") == results_pb2.SUCCEEDED

    assert path.stat().st_size < full_bytes / 4


def test_an_older_database_gets_its_finished_at_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(str(path), isolation_level=None)
    db.executescript(
        """
        CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
                           state INTEGER NOT NULL, run BLOB NOT NULL);
        CREATE TABLE deltas (run_id TEXT NOT NULL, worker_id TEXT NOT NULL,
                             assignment_id TEXT NOT NULL, sequence INTEGER NOT NULL,
                             report BLOB NOT NULL, PRIMARY KEY (run_id, assignment_id, sequence));
        """
    )
    rows = [
        ("old", results_pb2.SUCCEEDED, _run("old", results_pb2.SUCCEEDED, NOW_S - 10 * 86400)),
        ("new", results_pb2.FAILED, _run("new", results_pb2.FAILED, NOW_S)),
        ("queued", results_pb2.SCHEDULED, _run("queued", results_pb2.SCHEDULED)),
    ]
    for run_id, state, run in rows:
        db.execute(
            "INSERT INTO runs (id, state, run) VALUES (?, ?, ?)",
            (run_id, state, run.SerializeToString()),
        )
    db.execute(
        "INSERT INTO runs (id, state, run) VALUES ('damaged', ?, ?)", (results_pb2.FAILED, DAMAGED)
    )
    db.close()

    store = SqliteStore(str(path))
    try:
        week_ago_s = NOW_S - 7 * 86400
        assert store.expired_runs(TERMINAL, finished_before_s=week_ago_s) == ["old"]
        # A damaged run has no finished time: never old; but it counts, and goes, by number.
        assert store.expired_runs(TERMINAL, keep_runs=1) == ["old", "new"]
        assert store.delete_run("damaged") and store.run_state("damaged") is None
    finally:
        store.close()


def test_expired_runs_by_count_and_by_age(store: SqliteStore) -> None:
    states = [
        ("a", results_pb2.SUCCEEDED, NOW_S - 5 * 86400),
        ("b", results_pb2.CANCELLED, NOW_S - 3 * 86400),
        ("c", results_pb2.SCHEDULED, None),  # queued before d, e, f: never counted
        ("d", results_pb2.FAILED, NOW_S - 2 * 86400),
        ("e", results_pb2.INTERRUPTED, NOW_S - 1),
        ("f", results_pb2.RUNNING, None),
    ]
    for run_id, state, finished_at_s in states:
        store.put_run(_run(run_id, state, finished_at_s))

    assert store.expired_runs(TERMINAL) == []
    assert store.expired_runs(TERMINAL, keep_runs=2) == ["a", "b"]
    assert store.expired_runs(TERMINAL, keep_runs=4) == []
    assert store.expired_runs(TERMINAL, keep_runs=0) == ["a", "b", "d", "e"]
    assert store.expired_runs(TERMINAL, finished_before_s=NOW_S - 2.5 * 86400) == ["a", "b"]
    assert store.expired_runs(TERMINAL, keep_runs=3, finished_before_s=NOW_S - 4 * 86400) == ["a"]
    assert store.expired_runs(TERMINAL, keep_runs=1, finished_before_s=NOW_S, limit=2) == [
        "a",
        "b",
    ]


def test_the_queue_deletes_only_finished_runs(store: SqliteStore) -> None:
    queue: RunQueue[str] = RunQueue(store)
    running, queued, cancelled = (queue.submit(LT) for _ in range(3))
    assert queue.claim(running, "handle")
    assert queue.cancel_queued(cancelled.id) is not None

    with pytest.raises(NotFound, match="run-nope"):
        queue.delete("run-nope")
    for run in (running, queued):
        with pytest.raises(FailedPrecondition, match="cancel it first"):
            queue.delete(run.id)
        assert queue.get(run.id).state in (results_pb2.RUNNING, results_pb2.SCHEDULED)

    assert queue.delete(cancelled.id) == results_pb2.CANCELLED
    with pytest.raises(NotFound):
        queue.get(cancelled.id)
    with pytest.raises(NotFound):
        queue.delete(cancelled.id)

    running.state = results_pb2.SUCCEEDED
    queue.finish(running)
    assert queue.delete(running.id) == results_pb2.SUCCEEDED
    assert queue.count() == 1


def test_a_damaged_finished_run_can_be_deleted(tmp_path: Path, store: SqliteStore) -> None:
    db = sqlite3.connect(str(tmp_path / "r.db"), isolation_level=None)
    db.execute(
        "INSERT INTO runs (id, state, run) VALUES (?, ?, ?)",
        ("run-damaged", results_pb2.FAILED, DAMAGED),
    )
    db.close()
    assert RunQueue(store).delete("run-damaged") == results_pb2.FAILED


def _retention(
    store: SqliteStore, policy: RetentionPolicy, delete: object = None, interval_s: float = 300.0
) -> Retention:
    queue: RunQueue[str] = RunQueue(store)
    return Retention(
        store,
        policy,
        delete or queue.delete,  # type: ignore[arg-type]
        TERMINAL,
        interval_s,
        clock=lambda: NOW_S,
    )


def test_a_pass_deletes_what_the_policy_drops(store: SqliteStore) -> None:
    for i in range(6):
        store.put_run(_run(f"r{i}", results_pb2.SUCCEEDED, NOW_S - (6 - i) * 86400))
    store.put_run(_run("q", results_pb2.SCHEDULED))

    assert _retention(store, RetentionPolicy()).sweep() == []
    assert _retention(store, RetentionPolicy(keep_runs=4)).sweep() == ["r0", "r1"]
    assert _retention(store, RetentionPolicy(keep_days=2.5)).sweep() == ["r2", "r3"]
    assert _retention(store, RetentionPolicy(keep_days=1.5)).sweep() == ["r4"]
    assert [r.id for _, r in store.list_runs()] == ["r5", "q"]


def test_a_run_that_cannot_be_deleted_does_not_stop_the_others(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(5):
        store.put_run(_run(f"r{i}", results_pb2.SUCCEEDED, NOW_S))
    queue: RunQueue[str] = RunQueue(store)

    def delete(run_id: str) -> int:
        if run_id == "r1":
            raise OSError("disk I/O error")
        return queue.delete(run_id)

    retention = _retention(store, RetentionPolicy(keep_runs=1), delete)
    retention.BATCH = 1  # one run per batch: the skipped one must not be asked for forever
    with caplog.at_level(logging.ERROR, logger="master_service.retention"):
        assert retention.sweep() == ["r0", "r2", "r3"]
    assert "could not delete run r1" in caplog.text
    assert [r.id for _, r in store.list_runs()] == ["r1", "r4"]


class _FlakyStore(SqliteStore):
    """``expired_runs`` fails once (a locked or damaged database), then works."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.calls = 0

    def expired_runs(self, *args: object, **kwargs: object) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise sqlite3.OperationalError("database is locked")
        return super().expired_runs(*args, **kwargs)  # type: ignore[arg-type]


def _until(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


def test_the_loop_survives_a_failed_pass_and_wakes_when_a_run_ends(tmp_path: Path) -> None:
    store = _FlakyStore(str(tmp_path / "f.db"))
    queue: RunQueue[str]
    retention = Retention(
        store,
        RetentionPolicy(keep_runs=1),
        lambda run_id: queue.delete(run_id),  # the queue that pokes it, as the Scheduler's
        TERMINAL,
        interval_s=3600,
    )
    queue = RunQueue(store, on_end=retention.poke)
    try:
        retention.start()
        _until(lambda: store.calls >= 1)  # the start-up pass, which fails
        first, second = queue.submit(LT), queue.submit(LT)
        for run in (first, second):
            assert queue.claim(run, "h")
            run.state = results_pb2.SUCCEEDED
            queue.finish(run)  # pokes: a pass now, not in an hour
        _until(lambda: store.run_state(first.id) is None)
        assert store.run_state(second.id) == results_pb2.SUCCEEDED
        assert retention._thread is not None and retention._thread.is_alive()
    finally:
        retention.stop()
        store.close()
    assert not retention._thread.is_alive()


def test_the_scheduler_applies_the_policy_at_start(store: SqliteStore) -> None:
    for i in range(3):
        store.put_run(_run(f"r{i}", results_pb2.SUCCEEDED, time.time()))
    store.put_run(_run("left-running", results_pb2.RUNNING))  # a master died meanwhile

    sched = Scheduler(store, WorkerRegistry(), transport=None, retention=RetentionPolicy(2))  # type: ignore[arg-type]
    sched.start()
    try:
        # The run left RUNNING is INTERRUPTED now, finished: the newest two are it and r2.
        _until(lambda: store.count() == 2)
        assert [r.id for _, r in store.list_runs()] == ["r2", "left-running"]
        with pytest.raises(FailedPrecondition):
            sched.delete(sched.submit(LT).id)
    finally:
        sched.stop()


@pytest.mark.parametrize(
    ("keep_runs", "keep_days", "message"),
    [
        (0, None, "keep_runs must be at least 1"),
        (-3, None, "keep_runs must be at least 1"),
        (None, 0.0, "keep_days must be a number of days above 0"),
        (None, -1.0, "keep_days"),
        (None, float("nan"), "keep_days"),
        (None, float("inf"), "keep_days"),
    ],
)
def test_a_policy_that_would_delete_everything_is_refused(
    keep_runs: int | None, keep_days: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RetentionPolicy(keep_runs, keep_days)


def test_the_policy_describes_itself() -> None:
    assert RetentionPolicy().describe() == "keep all runs"
    assert RetentionPolicy(100, 0.5).describe() == (
        "keep the last 100 runs and runs of the last 0.5 days"
    )
