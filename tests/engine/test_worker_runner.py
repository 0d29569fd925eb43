"""The worker's ``AssignmentRunner`` on real engines against a local server: the reports it
streams, per share, and the last one when the worker stops (SIGTERM) or is cancelled.

A stopped runner ends its share at once; its last report is final and says why it stopped,
how many closed-model sessions never started and how many were cut short, and, per share,
the totals and the point the open-model schedule had reached, which the master needs to count
what was lost and where the survivors carry on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from support.loadtests import minimal_load_test, to_proto
from support.servers import http_server as server

from chaperon.v1 import worker_pb2
from master_service.arrivals import Schedule
from worker_service.plan import compile_assignment
from worker_service.runner import AssignmentRunner

S = 1_000_000_000


def _assignment(port: int, *, first_arrival: int = 0) -> worker_pb2.Assignment:
    """Two shares: 3 closed-model sessions for 30 s, and half of 100 arrivals/s for 30 s."""
    lt = minimal_load_test(f"http://127.0.0.1:{port}", concurrency=3, duration="30s")
    closed = lt["scenarios"][0]
    lt["scenarios"].append(
        {
            "scenario": closed["scenario"],
            "duration": "30s",
            "arrival_rate": {"per_second": 100, "max_sessions": 20},
        }
    )
    return worker_pb2.Assignment(
        run_id="r",
        assignment_id="r/w",
        load_test=to_proto(lt),
        shares=[
            worker_pb2.EntryShare(entry_index=0, sessions=3),
            worker_pb2.EntryShare(
                entry_index=1, sessions=10, rate_fraction=0.5, first_arrival=first_arrival
            ),
        ],
        report_interval_s=0.2,
    )


def _run_until_first_report(
    runner: AssignmentRunner, then: Callable[[], None]
) -> list[worker_pb2.WorkerReport]:
    """Read the runner's reports on a thread; call ``then`` after the first; all reports."""
    reports: list[worker_pb2.WorkerReport] = []
    first = threading.Event()

    def read() -> None:
        for report in runner.run():
            reports.append(report)
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(10.0), "no report within 10 s"
    then()
    reader.join(5.0)
    assert not reader.is_alive(), "the runner did not end within 5 s of the stop"
    return reports


def test_a_stopped_runner_says_so_and_what_it_did_not_run() -> None:
    with server() as srv:
        assignment = _assignment(srv.port, first_arrival=40)
        runner = AssignmentRunner("r/w", compile_assignment(assignment), 2, 0.2)
        stopped_at: list[float] = []

        def stop() -> None:
            stopped_at.append(time.monotonic())
            runner.stop("SIGTERM")

        reports = _run_until_first_report(runner, stop)
        last = reports[-1]
        assert time.monotonic() - stopped_at[0] < 3.0
        assert last.final and last.stopped_reason == "SIGTERM"
        assert [r.final for r in reports].count(True) == 1
        assert not any(r.stopped_reason for r in reports[:-1])
        closed, arrivals = last.shares
        assert (closed.share_index, arrivals.share_index) == (0, 1)
        # The closed sessions all started and none completed (they loop for 30 s).
        assert closed.sessions_started == 3 and closed.sessions_completed == 0
        assert last.sessions_not_started == 0
        assert last.sessions_cut_short == last.sessions_started - last.sessions_completed
        assert last.sessions_started == closed.sessions_started + arrivals.sessions_started
        # Where the open-model share's schedule stood at the stop: past its first arrival
        # (0.8 s in), and no arrival was processed that was not due by then.
        schedule = Schedule.of(50.0, [], 30 * S)
        assert arrivals.schedule_ns >= schedule.offset_ns(40)
        processed = arrivals.sessions_started + arrivals.sessions_dropped
        assert 40 + processed <= schedule.due_before(arrivals.schedule_ns + 1)
        assert processed > 0


def test_a_cancelled_runner_is_not_a_stopped_one() -> None:
    with server() as srv:
        runner = AssignmentRunner("r/w", compile_assignment(_assignment(srv.port)), 2, 0.2)
        reports = _run_until_first_report(runner, runner.cancel)
        last = reports[-1]
        assert last.final and last.cancelled and last.stopped_reason == ""
        assert last.sessions_not_started == last.sessions_cut_short == 0
        # a stop after the cancel changes nothing: the master asked first
        runner.stop("SIGTERM")
        assert len(last.shares) == 2 and last.shares[1].schedule_ns > 0
