"""The master's side of the progress line: a queued run's place, the run's totals, the plan's
figures, and graceful_stop in the language (pure: SQLite in a temp dir, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from chaperon.core.errors import InvalidArgument
from chaperon.core.lang import check_load_test
from chaperon.core.loadtest import (
    DEFAULT_GRACEFUL_STOP_NS,
    graceful_stop_ns,
    scheduled_rate_per_s,
)
from chaperon.v1 import loadtest_pb2, results_pb2, worker_pb2
from master_service.aggregator import Aggregator
from master_service.progress import plan_figures, scheduled_rate
from master_service.store import SqliteStore

SCENARIO = {"name": "s", "run": [{"http": {"method": "GET", "path": "/"}}]}


def _lt(*entries: dict) -> loadtest_pb2.LoadTest:
    return json_format.ParseDict(
        {
            "name": "t",
            "config": {"base_url": "http://127.0.0.1:8080"},
            "scenarios": [{"scenario": SCENARIO, **e} for e in entries],
        },
        loadtest_pb2.LoadTest(),
    )


def test_runs_ahead_counts_the_running_run_and_the_older_queued_ones(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    try:
        states = [results_pb2.SUCCEEDED, results_pb2.RUNNING, results_pb2.SCHEDULED,
                  results_pb2.CANCELLED, results_pb2.SCHEDULED]  # fmt: skip
        for i, state in enumerate(states):
            store.put_run(results_pb2.LoadTestRun(id=f"r{i}", state=state))
        assert [store.runs_ahead(f"r{i}") for i in range(5)] == [0, 0, 1, 2, 2]
        assert store.runs_ahead("nope") == 0
    finally:
        store.close()


def test_live_totals_add_up_sessions_and_attempts() -> None:
    agg = Aggregator()
    report = worker_pb2.WorkerReport(
        assignment_id="a", sequence=1, sessions_started=10, sessions_completed=4,
        sessions_dropped=2, elapsed_s=3.0,
    )  # fmt: skip
    delta = report.metrics.add(key="GET /", count=100, errors=7)
    delta.errors_by_kind["http_5xx"] = 5  # completed: in count already
    delta.errors_by_kind["timeout"] = 2  # not completed: an attempt more
    agg.add_report("w1", report)
    agg.add_report("w2", worker_pb2.WorkerReport(assignment_id="b", sessions_started=3))
    live = agg.live()
    assert (live.sessions_started, live.sessions_completed, live.sessions_dropped) == (13, 4, 2)
    assert live.sessions_active == 9
    assert (live.requests, live.errors) == (102, 7)
    assert live.elapsed_s == 3.0


def test_plan_figures_and_scheduled_rate() -> None:
    lt = _lt(
        {"concurrency": 2, "duration": "10s", "graceful_stop": "5s"},
        {"arrival_rate": {"per_second": 10, "stages": [{"duration": "20s", "target": 30}]}},
    )
    assert plan_figures(lt) == (20.0, 50.0)  # the open entry: 20 s + the default 30 s
    assert scheduled_rate(lt, 10.0) == pytest.approx(20.0)
    assert scheduled_rate(lt, 25.0) == 0.0
    assert plan_figures(_lt({"concurrency": 1, "iterations": 3})) == (0.0, 0.0)


def test_scheduled_rate_per_s_follows_the_stages() -> None:
    rate = loadtest_pb2.ArrivalRate(per_second=5)
    assert scheduled_rate_per_s(rate, 100.0) == 5.0
    rate.stages.add(duration="10s", target=15)
    rate.stages.add(duration="10s", target=15)
    assert scheduled_rate_per_s(rate, 5.0) == pytest.approx(10.0)
    assert scheduled_rate_per_s(rate, 15.0) == pytest.approx(15.0)
    assert scheduled_rate_per_s(rate, 20.0) == 0.0


def test_graceful_stop_default_and_refusal() -> None:
    (entry,) = _lt({"concurrency": 1, "duration": "1s"}).scenarios
    assert graceful_stop_ns(entry) == DEFAULT_GRACEFUL_STOP_NS == 30_000_000_000
    entry.graceful_stop = "0s"
    assert graceful_stop_ns(entry) == 0
    with pytest.raises(InvalidArgument) as info:
        check_load_test(_lt({"concurrency": 1, "duration": "1s", "graceful_stop": "5"}))
    assert [path for path, _ in info.value.violations] == ["scenarios[0].graceful_stop"]
