"""The run controller's decisions, fed events by hand: no threads, no gRPC, a fake clock.

Each test plays what the stream threads and the runner would see (a stream opens, reports
arrive, a stream breaks, a worker goes silent, a cancel, the deadline) and checks the actions
the controller asks for and the final state it decides.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from support.loadtests import minimal_load_test

from _fastpath.histogram import Histogram
from chaperon.core.loadtest import load_test_from_dict
from chaperon.v1 import results_pb2, worker_pb2
from master_service.registry import WorkerEntry
from master_service.run_controller import (
    FINAL_REPORT_GRACE_S,
    INTERRUPTED_BY_MASTER,
    Action,
    CancelAssignment,
    CancelRequested,
    CancelStream,
    DeadlinePassed,
    Phase,
    Refused,
    ReportStored,
    RunController,
    StartAssignment,
    StopReason,
    StreamEnded,
    StreamOpened,
    WorkerSilent,
    final_state,
    run_timeout_s,
)

CLOSED: dict[str, Any] = minimal_load_test("http://127.0.0.1:8080", concurrency=5, duration="1s")
OPEN: dict[str, Any] = {
    **CLOSED,
    "scenarios": [
        {
            **CLOSED["scenarios"][0],
            "concurrency": 0,
            "duration": "5s",
            "arrival_rate": {"per_second": 100, "max_sessions": 10},
        }
    ],
}


class _Stream:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> None:
        self.cancels += 1


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _report(
    values: list[int],
    final: bool = False,
    completed: int = 0,
    error: str = "",
    *,
    started: int | None = None,
    dropped: int = 0,
    stopped: str = "",
    assignment_id: str = "",
) -> worker_pb2.WorkerReport:
    h = Histogram()
    for v in values:
        h.record(v)
    started = completed if started is None else started
    return worker_pb2.WorkerReport(
        assignment_id=assignment_id,
        final=final,
        sessions_started=started,
        sessions_completed=completed,
        sessions_dropped=dropped,
        elapsed_s=1.0,
        error=error,
        metrics=[worker_pb2.MetricDelta(key="GET /", hdr=h.encode(), count=len(values))],
        shares=[
            worker_pb2.ShareProgress(
                share_index=0,
                sessions_started=started,
                sessions_completed=completed,
                sessions_dropped=dropped,
            )
        ],
        stopped_reason=stopped,
    )


def _workers(n: int, capacity: int = 1) -> list[WorkerEntry]:
    return [WorkerEntry(f"w{i}", f"127.0.0.1:{1000 + i}", capacity) for i in range(n)]


def _controller(
    lt: dict[str, Any] = CLOSED, workers: int = 2, clock: _Clock | None = None
) -> tuple[RunController, list[StartAssignment]]:
    run = results_pb2.LoadTestRun(
        id="run-1", state=results_pb2.RUNNING, load_test=load_test_from_dict(lt)
    )
    controller = RunController(run, _workers(workers), clock=clock or _Clock())
    starts = controller.start()
    assert all(isinstance(a, StartAssignment) for a in starts)
    return controller, starts  # type: ignore[return-value]


def _open(controller: RunController, *ids: str) -> dict[str, _Stream]:
    streams = {}
    for assignment_id in ids:
        streams[assignment_id] = _Stream()
        assert controller.handle(StreamOpened(assignment_id, streams[assignment_id])) == []
    return streams


def _complete(controller: RunController, assignment_id: str, n: int) -> None:
    controller.handle(ReportStored(assignment_id, _report([100] * n, final=True, completed=n)))
    assert controller.handle(StreamEnded(assignment_id)) == []


def test_the_sessions_are_split_over_the_workers() -> None:
    controller, starts = _controller()
    assert controller.worker_ids == ["w0", "w1"]
    assert [(s.worker.worker_id, s.assignment.assignment_id) for s in starts] == [
        ("w0", "run-1/w0"),
        ("w1", "run-1/w1"),
    ]
    shares = [[(e.sessions, e.first_session) for e in s.assignment.shares] for s in starts]
    assert shares == [[(3, 0)], [(2, 3)]]
    assert all(s.assignment.run_id == "run-1" for s in starts)
    assert all(s.assignment.load_test.name == "smoke" for s in starts)


def test_a_run_whose_streams_all_end_after_their_final_report_succeeds() -> None:
    controller, _ = _controller()
    _open(controller, "run-1/w0", "run-1/w1")
    controller.handle(ReportStored("run-1/w0", _report([100, 200])))
    assert controller.progress()[1][0][:3] == ("GET /", 2, 0)
    _complete(controller, "run-1/w0", 3)
    assert controller.phase is Phase.RUNNING
    _complete(controller, "run-1/w1", 2)
    assert controller.phase is Phase.ENDED and controller.wait_ended(0)
    run = controller.finish()
    assert run.state == results_pb2.SUCCEEDED, run.error
    assert run.error == "" and run.result.metrics[0].count == 7
    assert run.result.sessions_lost == 0 and not run.result.lost_workers
    assert run.HasField("finished_at") and controller.phase is Phase.FINISHED


def test_a_refusal_fails_the_run_without_losing_the_worker() -> None:
    controller, _ = _controller(workers=1)
    assert controller.handle(Refused("run-1/w0", "python steps are off here")) == []
    run = controller.finish()
    assert run.state == results_pb2.FAILED
    assert run.error == "worker w0 refused the assignment: python steps are off here"
    assert not run.result.lost_workers


def test_a_broken_stream_loses_its_worker_and_its_closed_sessions() -> None:
    controller, _ = _controller()
    streams = _open(controller, "run-1/w0", "run-1/w1")
    controller.handle(ReportStored("run-1/w0", _report([100], completed=1)))
    # Closed-model sessions do not move: no takeover, the stream is already over.
    assert controller.handle(StreamEnded("run-1/w0", "connection reset")) == []
    assert streams["run-1/w0"].cancels == 0
    _complete(controller, "run-1/w1", 2)
    run = controller.finish()
    # Sessions were lost: the run did not run what was asked, whatever the rest measured.
    assert run.state == results_pb2.FAILED
    assert list(run.result.lost_workers) == ["w0"]
    assert run.result.sessions_lost == 2  # 3 given, 1 completed
    assert run.error == (
        "worker w0 (127.0.0.1:1000): connection reset; "
        "2 sessions lost with lost or stopped workers (see the events)"
    )
    assert list(run.result.events) == [
        "worker w0 lost at 0.0s: 2 sessions not run (2 not started, 0 cut short)"
    ]


def test_a_stream_that_ends_without_its_final_report_is_a_lost_worker() -> None:
    controller, _ = _controller()
    _open(controller, "run-1/w0", "run-1/w1")
    controller.handle(StreamEnded("run-1/w0"))  # clean end, no final: lost, no error text
    _complete(controller, "run-1/w1", 2)
    run = controller.finish()
    assert list(run.result.lost_workers) == ["w0"] and run.result.sessions_lost == 3
    assert run.error == "3 sessions lost with lost or stopped workers (see the events)"
    assert run.state == results_pb2.FAILED


def test_every_worker_lost_fails_the_run() -> None:
    controller, _ = _controller()
    _open(controller, "run-1/w0", "run-1/w1")
    for assignment_id in ("run-1/w0", "run-1/w1"):
        controller.handle(ReportStored(assignment_id, _report([100])))
        controller.handle(StreamEnded(assignment_id, "gone"))
    run = controller.finish()
    assert run.state == results_pb2.FAILED
    assert sorted(run.result.lost_workers) == ["w0", "w1"]
    assert run.result.metrics[0].count == 2  # what they sent is kept


def test_a_silent_worker_is_lost_and_its_stream_cut() -> None:
    controller, _ = _controller()
    streams = _open(controller, "run-1/w0", "run-1/w1")
    assert controller.handle(WorkerSilent("w0")) == [CancelStream(streams["run-1/w0"])]
    assert controller.handle(WorkerSilent("w0")) == []  # once
    assert controller.handle(WorkerSilent("nobody")) == []
    # The cancelled stream ends with an error, which adds nothing: the worker is lost already.
    controller.handle(StreamEnded("run-1/w0", "Locally cancelled by application!"))
    _complete(controller, "run-1/w1", 2)
    run = controller.finish()
    assert run.error.startswith("worker w0 stopped sending heartbeats; 3 sessions lost")
    assert list(run.result.lost_workers) == ["w0"] and run.result.sessions_lost == 3
    assert run.state == results_pb2.FAILED
    # A worker whose stream is over is not lost for going silent afterwards.
    controller2, _ = _controller(workers=1)
    _open(controller2, "run-1/w0")
    _complete(controller2, "run-1/w0", 5)
    assert controller2.handle(WorkerSilent("w0")) == []
    assert controller2.finish().state == results_pb2.SUCCEEDED


def _finish_open(
    controller: RunController, assignment_id: str, started: int, dropped: int = 0
) -> None:
    """An open-model assignment that ran its whole schedule: ``started + dropped`` arrivals."""
    report = _report([100], final=True, started=started, completed=started, dropped=dropped)
    report.assignment_id = assignment_id  # the aggregator counts per assignment
    controller.handle(ReportStored(assignment_id, report))
    assert controller.handle(StreamEnded(assignment_id)) == []


def _shares(start: StartAssignment) -> list[tuple[int, float, int]]:
    return [(e.sessions, e.rate_fraction, e.first_arrival) for e in start.assignment.shares]


def _accounted(run: results_pb2.LoadTestRun) -> int:
    r = run.result
    return r.sessions_started + r.sessions_dropped + r.sessions_lost


def test_the_open_model_share_of_a_lost_worker_moves_to_the_survivors() -> None:
    clock = _Clock()
    controller, starts = _controller(OPEN, workers=3, clock=clock)
    assert [_shares(s) for s in starts] == [[(4, 0.4, 0)], [(3, 0.3, 0)], [(3, 0.3, 0)]]
    streams = _open(controller, "run-1/w0", "run-1/w1", "run-1/w2")
    clock.now += 2.0
    controller.handle(ReportStored("run-1/w1", _report([100], started=60, completed=58, dropped=5)))
    clock.now += 0.5
    actions = controller.handle(StreamEnded("run-1/w1", "connection reset"))
    takeovers = [a for a in actions if isinstance(a, StartAssignment)]
    assert [(t.worker.worker_id, t.assignment.assignment_id) for t in takeovers] == [
        ("w0", "run-1/w0/takeover-1"),
        ("w2", "run-1/w2/takeover-2"),
    ]
    # w1's 30/s: arrivals 0..74 were due by 2.5 s; w0 takes 20/s from its arrival 50 (due at
    # 2.5 s), w2 10/s from its arrival 25 (the same instant).
    assert [_shares(t) for t in takeovers] == [
        [(2, pytest.approx(0.2), 50)],
        [(1, pytest.approx(0.1), 25)],
    ]
    assert all(t.assignment.schedule_offset_s == 0 for t in takeovers)
    assert streams["run-1/w1"].cancels == 0  # already over
    _open(controller, "run-1/w0/takeover-1", "run-1/w2/takeover-2")
    _finish_open(controller, "run-1/w0", 200)  # 40/s for 5 s
    _finish_open(controller, "run-1/w2", 140, dropped=10)  # 30/s
    _finish_open(controller, "run-1/w0/takeover-1", 50)  # 20/s from 2.5 s
    assert controller.phase is Phase.RUNNING  # one takeover still runs
    _finish_open(controller, "run-1/w2/takeover-2", 25)  # 10/s from 2.5 s
    run = controller.finish()
    assert list(run.result.events) == [
        "worker w1 lost at 2.5s: 10 arrivals lost; its share of the arrival rate moved to w0, w2"
    ]
    # 75 due on w1: 60 started, 5 dropped, 10 lost; the whole schedule is 100/s for 5 s.
    assert run.result.arrivals_due == 500 and _accounted(run) == 500
    assert run.result.arrivals_lost == run.result.sessions_lost == 10
    assert run.state == results_pb2.FAILED
    assert run.error.endswith("10 sessions lost with lost or stopped workers (see the events)")


def test_no_survivor_means_no_takeover_and_the_rest_is_lost() -> None:
    controller, _ = _controller(OPEN, workers=2)
    _open(controller, "run-1/w0", "run-1/w1")
    _finish_open(controller, "run-1/w0", 250)  # done: not a survivor
    assert controller.handle(StreamEnded("run-1/w1", "gone")) == []
    run = controller.finish()
    assert list(run.result.events) == [
        "worker w1 lost at 0.0s: 250 arrivals lost; no survivor to take its arrival rate"
    ]
    assert run.result.arrivals_due == 500 and run.result.arrivals_lost == 250
    assert _accounted(run) == 500


@pytest.mark.parametrize("death_s", [0.0, 0.004, 0.013, 1.0, 2.4999, 2.5, 4.99, 5.0, 9.0])
def test_every_due_arrival_is_started_dropped_or_lost_whenever_a_worker_dies(
    death_s: float,
) -> None:
    """Two workers at 50/s each for 5 s; w1 last reported at 80% of the time of its death.
    What it started after that report, nobody will hear of: those arrivals are lost too."""
    clock = _Clock()
    controller, _ = _controller(OPEN, workers=2, clock=clock)
    _open(controller, "run-1/w0", "run-1/w1")
    reported = min(250, int(50 * death_s * 0.8))
    clock.now += death_s * 0.8
    if reported:
        controller.handle(ReportStored("run-1/w1", _report([100], started=reported - 1, dropped=1)))
    clock.now += death_s * 0.2
    actions = controller.handle(StreamEnded("run-1/w1", "connection reset"))
    due_on_w1 = min(250, math.ceil(50 * death_s - 1e-9))
    takeovers = [a for a in actions if isinstance(a, StartAssignment)]
    if due_on_w1 < 250:
        (takeover,) = takeovers
        assert _shares(takeover) == [(5, 0.5, due_on_w1)]  # carries on from that arrival
        _open(controller, takeover.assignment.assignment_id)
        _finish_open(controller, takeover.assignment.assignment_id, 250 - due_on_w1)
    else:
        assert takeovers == []  # its schedule was over
    _finish_open(controller, "run-1/w0", 248, dropped=2)
    run = controller.finish()
    assert run.result.arrivals_due == 500
    assert _accounted(run) == 500
    assert run.result.arrivals_lost == due_on_w1 - reported


def test_a_takeover_worker_lost_in_turn_hands_both_shares_on() -> None:
    clock = _Clock()
    controller, _ = _controller(OPEN, workers=3, clock=clock)
    _open(controller, "run-1/w0", "run-1/w1", "run-1/w2")
    clock.now += 1.0
    first = controller.handle(StreamEnded("run-1/w0", "gone"))  # 40/s: 40 due, 0 reported
    assert [a.assignment.assignment_id for a in first if isinstance(a, StartAssignment)] == [
        "run-1/w1/takeover-1",
        "run-1/w2/takeover-2",
    ]
    _open(controller, "run-1/w1/takeover-1", "run-1/w2/takeover-2")
    clock.now += 1.0
    controller.handle(
        ReportStored("run-1/w1", _report([100], started=50, assignment_id="run-1/w1"))
    )
    takeover_1 = _report([100], started=15, assignment_id="run-1/w1/takeover-1")
    controller.handle(ReportStored("run-1/w1/takeover-1", takeover_1))
    second = controller.handle(StreamEnded("run-1/w1", "gone"))
    (start,) = [a for a in second if isinstance(a, StartAssignment)]
    assert start.worker.worker_id == "w2"
    # w1's own 30/s from arrival 60, and its piece of w0's (20/s) from arrival 40 at 2 s.
    assert _shares(start) == [(3, 0.3, 60), (2, pytest.approx(0.2), 40)]
    _open(controller, start.assignment.assignment_id)
    # w1/takeover-1 ends too (the same process): it was cut already, nothing more happens.
    assert controller.handle(StreamEnded("run-1/w1/takeover-1", "gone")) == []
    _finish_open(controller, "run-1/w2", 150)
    _finish_open(controller, "run-1/w2/takeover-2", 80)  # 20/s from arrival 20 (at 1 s)
    controller.handle(
        ReportStored(
            start.assignment.assignment_id,
            worker_pb2.WorkerReport(
                assignment_id=start.assignment.assignment_id,
                final=True,
                sessions_started=150,
                shares=[
                    worker_pb2.ShareProgress(share_index=0, sessions_started=90),
                    worker_pb2.ShareProgress(share_index=1, sessions_started=60),
                ],
            ),
        )
    )
    controller.handle(StreamEnded(start.assignment.assignment_id))
    run = controller.finish()
    # Lost: w0's 40; w1's 60 - 50 and its takeover's 40 - 20 - 15.
    assert run.result.arrivals_lost == 40 + 10 + 5
    assert run.result.arrivals_due == 500 and _accounted(run) == 500
    assert sorted(run.result.lost_workers) == ["w0", "w1"]


def test_a_takeover_that_ends_early_is_cut_and_its_worker_not_lost() -> None:
    controller, _ = _controller(OPEN, workers=2)
    _open(controller, "run-1/w0", "run-1/w1")
    (takeover,) = controller.handle(StreamEnded("run-1/w0", "gone"))
    assert isinstance(takeover, StartAssignment)
    takeover_id = takeover.assignment.assignment_id
    _open(controller, takeover_id)
    # No one is left to take it: w1 itself ran the takeover.
    assert controller.handle(StreamEnded(takeover_id)) == []
    _finish_open(controller, "run-1/w1", 250)
    run = controller.finish()
    assert list(run.result.lost_workers) == ["w0"]
    assert f"takeover {takeover_id} ended early" in run.error
    assert run.result.events[-1] == (
        f"takeover {takeover_id} ended early at 0.0s: 250 arrivals lost; "
        "no survivor to take its arrival rate"
    )
    assert run.result.arrivals_due == 500 and _accounted(run) == 500
    assert run.state == results_pb2.FAILED


def test_a_stopped_worker_is_lost_with_its_reason() -> None:
    """SIGTERM: the worker's last report is final and says it stopped; its sessions are lost
    as a killed worker's would be, and the run says so."""
    clock = _Clock()
    controller, _ = _controller(clock=clock)
    streams = _open(controller, "run-1/w0", "run-1/w1")
    clock.now += 3.2
    stopped = _report([100] * 4, final=True, started=3, completed=0, stopped="SIGTERM")
    stopped.sessions_cut_short = 3
    assert controller.handle(ReportStored("run-1/w0", stopped)) == [
        CancelStream(streams["run-1/w0"])
    ]
    controller.handle(StreamEnded("run-1/w0", "cancelled"))  # the cut: nothing more
    _complete(controller, "run-1/w1", 2)
    run = controller.finish()
    assert run.state == results_pb2.FAILED
    assert list(run.result.lost_workers) == ["w0"]
    assert list(run.result.events) == [
        "worker w0 stopped (SIGTERM) at 3.2s: 3 sessions not run (0 not started, 3 cut short)"
    ]
    result = run.result
    assert result.sessions_lost == 3 and result.sessions_completed == 2
    assert result.sessions_started == result.sessions_completed + result.sessions_lost
    assert run.error == (
        "worker w0 stopped (SIGTERM); 3 sessions lost with lost or stopped workers (see the events)"
    )
    assert metric_count(run) == 6  # what it measured before it stopped is kept


def test_a_stopped_open_model_worker_hands_its_rate_on() -> None:
    clock = _Clock()
    controller, _ = _controller(OPEN, workers=2, clock=clock)
    _open(controller, "run-1/w0", "run-1/w1")
    clock.now += 2.0
    stopped = _report([100], final=True, started=95, completed=90, dropped=2, stopped="SIGTERM")
    # Its schedule had reached 1.98 s when it stopped (its engine started after the master's
    # clock): arrivals 0..98 were due on it, 97 of them processed.
    stopped.shares[0].schedule_ns = 1_980_000_000
    actions = controller.handle(ReportStored("run-1/w0", stopped))
    (takeover,) = [a for a in actions if isinstance(a, StartAssignment)]
    assert takeover.worker.worker_id == "w1" and _shares(takeover) == [(5, 0.5, 99)]
    controller.handle(StreamEnded("run-1/w0"))
    _open(controller, takeover.assignment.assignment_id)
    _finish_open(controller, takeover.assignment.assignment_id, 151)
    _finish_open(controller, "run-1/w1", 250)
    run = controller.finish()
    assert list(run.result.events) == [
        "worker w0 stopped (SIGTERM) at 2.0s: 2 arrivals lost; "
        "its share of the arrival rate moved to w1"
    ]
    assert run.result.arrivals_lost == 2 and _accounted(run) == run.result.arrivals_due == 500
    # A stop reported without its schedule's point: what it processed is its part.
    controller, _ = _controller(OPEN, workers=2, clock=clock)
    _open(controller, "run-1/w0", "run-1/w1")
    stopped.shares[0].schedule_ns = 0
    actions = controller.handle(ReportStored("run-1/w0", stopped))
    (takeover,) = [a for a in actions if isinstance(a, StartAssignment)]
    assert _shares(takeover) == [(5, 0.5, 97)]


def test_a_stop_while_the_run_is_cancelled_is_no_loss() -> None:
    controller, _ = _controller()
    _open(controller, "run-1/w0", "run-1/w1")
    controller.handle(CancelRequested())
    controller.handle(ReportStored("run-1/w0", _report([100], final=True, stopped="SIGTERM")))
    controller.handle(StreamEnded("run-1/w0"))
    controller.handle(StreamEnded("run-1/w1", "cancelled"))
    run = controller.finish()
    assert run.state == results_pb2.CANCELLED and not run.result.lost_workers


def metric_count(run: results_pb2.LoadTestRun) -> int:
    return sum(m.count for m in run.result.metrics)


def _cancel_actions(streams: dict[str, _Stream], ids: list[str]) -> list[Action]:
    return [
        *(CancelAssignment(f"127.0.0.1:{1000 + int(i[-1])}", i) for i in ids),
        *(CancelStream(streams[i], FINAL_REPORT_GRACE_S) for i in ids if i in streams),
    ]


def test_cancel_stops_every_assignment_and_keeps_partial_metrics() -> None:
    controller, _ = _controller()
    streams = _open(controller, "run-1/w0", "run-1/w1")
    controller.handle(ReportStored("run-1/w0", _report([100] * 3)))
    actions = controller.handle(CancelRequested())
    assert actions == _cancel_actions(streams, ["run-1/w0", "run-1/w1"])
    assert controller.phase is Phase.DRAINING
    # Streams that end without a final report now are not lost workers.
    controller.handle(StreamEnded("run-1/w0", "cancelled"))
    controller.handle(ReportStored("run-1/w1", _report([100] * 2, final=True)))
    controller.handle(StreamEnded("run-1/w1"))
    run = controller.finish()
    assert run.state == results_pb2.CANCELLED
    assert run.error == "" and not run.result.lost_workers
    assert run.result.metrics[0].count == 5


def test_a_stream_opened_after_a_cancel_is_cut_at_once() -> None:
    controller, _ = _controller(workers=1)
    assert controller.handle(CancelRequested()) == [CancelAssignment("127.0.0.1:1000", "run-1/w0")]
    late = _Stream()
    assert controller.handle(StreamOpened("run-1/w0", late)) == [CancelStream(late)]


def test_cancel_before_start_sends_nothing() -> None:
    run = results_pb2.LoadTestRun(id="run-1", load_test=load_test_from_dict(CLOSED))
    controller = RunController(run, _workers(2))
    controller.handle(CancelRequested())
    assert controller.start() == []
    assert controller.phase is Phase.ENDED
    assert controller.finish().state == results_pb2.CANCELLED


def test_the_deadline_fails_the_run_and_counts_the_unfinished_sessions() -> None:
    clock = _Clock()
    controller, _ = _controller(workers=1, clock=clock)
    # 1s of duration, 30s of graceful stop (the default), 60s of grace.
    assert controller.timeout_s == 91.0 and controller.deadline_s == 191.0
    streams = _open(controller, "run-1/w0")
    controller.handle(
        ReportStored(
            "run-1/w0",
            worker_pb2.WorkerReport(sessions_started=5, sessions_completed=2),
        )
    )
    assert controller.handle(DeadlinePassed()) == _cancel_actions(streams, ["run-1/w0"])
    assert controller.handle(DeadlinePassed()) == []  # once
    # A cancel after the deadline does not turn the failure into CANCELLED.
    controller.handle(CancelRequested())
    controller.handle(StreamEnded("run-1/w0"))
    run = controller.finish()
    assert run.state == results_pb2.FAILED
    assert run.error == "the run passed its timeout (91s) and was stopped"
    assert run.result.sessions_timed_out == 3


def test_a_master_that_stops_interrupts_the_run() -> None:
    controller, _ = _controller(workers=1)
    streams = _open(controller, "run-1/w0")
    controller.handle(ReportStored("run-1/w0", _report([100])))
    assert controller.handle(CancelRequested(StopReason.MASTER_STOP)) == _cancel_actions(
        streams, ["run-1/w0"]
    )
    controller.handle(StreamEnded("run-1/w0", "cancelled"))
    run = controller.finish()
    assert run.state == results_pb2.INTERRUPTED
    assert run.error == INTERRUPTED_BY_MASTER and run.result.metrics[0].count == 1


def test_failed_thresholds_fail_the_run() -> None:
    lt = {**CLOSED, "thresholds": [{"metric": "GET /", "stat": "max", "max": 0.05}]}
    controller, _ = _controller(lt, workers=1)
    _open(controller, "run-1/w0")
    _complete(controller, "run-1/w0", 5)  # 100 us = 0.1 ms > 0.05 ms
    run = controller.finish()
    assert run.state == results_pb2.FAILED and run.error == "thresholds failed"
    assert not run.result.thresholds[0].passed


def _errors_only(kind: str, n: int) -> worker_pb2.WorkerReport:
    delta = worker_pb2.MetricDelta(
        key="GET /", hdr=Histogram().encode(), errors=n, errors_by_kind={kind: n}
    )
    return worker_pb2.WorkerReport(
        final=True, sessions_started=5, sessions_completed=5, elapsed_s=1.0, metrics=[delta]
    )


def test_a_run_whose_every_request_failed_fails_and_says_why() -> None:
    lt = {**CLOSED, "thresholds": [{"metric": "GET /", "stat": "p99", "max": 100}]}
    controller, _ = _controller(lt, workers=1)
    _open(controller, "run-1/w0")
    controller.handle(ReportStored("run-1/w0", _errors_only("connect", 7)))
    controller.handle(StreamEnded("run-1/w0"))
    run = controller.finish()
    assert run.state == results_pb2.FAILED
    assert run.error == "every request failed (7 errors: connect=7)"
    (threshold,) = run.result.thresholds
    assert not threshold.passed and threshold.reason == "no latency recorded"


def test_a_run_that_sent_nothing_fails_and_says_why() -> None:
    controller, _ = _controller(workers=1)
    _open(controller, "run-1/w0")
    _complete(controller, "run-1/w0", 0)
    run = controller.finish()
    assert run.state == results_pb2.FAILED
    assert run.error == "no request was sent (no step recorded anything)"


def test_metrics_come_in_the_order_of_the_steps() -> None:
    lt = minimal_load_test("http://127.0.0.1:8080", concurrency=1, duration="1s")
    lt["scenarios"][0]["scenario"]["run"] = [
        {"http": {"method": "POST", "path": "/z"}},
        {"ws_connect": {"path": "/ws"}},
        {"ws_send": {"text": "x"}},
        {"http": {"method": "GET", "path": "/a"}},
    ]
    controller, _ = _controller(lt, workers=1)
    _open(controller, "run-1/w0")
    h = Histogram()
    h.record(100)
    # The worker's report lists the keys in another order, and one key nobody foresaw.
    keys = ["unforeseen", "GET /a", "WS send default", "WS connect /ws", "POST /z"]
    report = worker_pb2.WorkerReport(
        final=True,
        sessions_started=1,
        sessions_completed=1,
        elapsed_s=1.0,
        metrics=[worker_pb2.MetricDelta(key=k, hdr=h.encode(), count=1) for k in keys],
    )
    controller.handle(ReportStored("run-1/w0", report))
    order = ["POST /z", "WS connect /ws", "WS send default", "GET /a", "unforeseen"]
    assert [key for key, *_ in controller.progress()[1]] == order
    controller.handle(StreamEnded("run-1/w0"))
    run = controller.finish()
    assert [m.key for m in run.result.metrics] == order
    assert [m.key for m in run.result.metrics if m.no_latency] == ["WS send default"]


def test_a_worker_error_with_metrics_does_not_fail_the_run() -> None:
    controller, _ = _controller(workers=1)
    _open(controller, "run-1/w0")
    controller.handle(ReportStored("run-1/w0", _report([100], error="a hook raised")))
    _complete(controller, "run-1/w0", 5)
    run = controller.finish()
    assert run.state == results_pb2.SUCCEEDED
    assert run.error == "worker w0: a hook raised"


def test_a_report_that_does_not_decode_raises_and_merges_nothing() -> None:
    controller, _ = _controller(workers=1)
    bad = worker_pb2.WorkerReport(
        final=True, metrics=[worker_pb2.MetricDelta(key="GET /", hdr=b"junk", count=1)]
    )
    with pytest.raises(ValueError):
        controller.handle(ReportStored("run-1/w0", bad))
    assert controller.progress()[1] == []
    controller.handle(StreamEnded("run-1/w0", "a histogram does not decode"))
    run = controller.finish()
    assert run.state == results_pb2.FAILED and list(run.result.lost_workers) == ["w0"]


def test_events_after_the_end_change_nothing() -> None:
    controller, _ = _controller(workers=1)
    _open(controller, "run-1/w0")
    _complete(controller, "run-1/w0", 5)
    assert controller.finish().state == results_pb2.SUCCEEDED
    assert controller.handle(CancelRequested()) == []
    assert controller.handle(DeadlinePassed()) == []


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        ({}, results_pb2.SUCCEEDED),
        ({"master_stopping": True, "cancelled": True, "timed_out": True}, results_pb2.INTERRUPTED),
        ({"cancelled": True, "errors": True}, results_pb2.CANCELLED),
        ({"cancelled": True, "timed_out": True}, results_pb2.FAILED),
        ({"timed_out": True}, results_pb2.FAILED),
        ({"errors": True, "metrics": False}, results_pb2.FAILED),
        ({"errors": True}, results_pb2.SUCCEEDED),
        ({"every_worker_lost": True}, results_pb2.FAILED),
        ({"thresholds_passed": False}, results_pb2.FAILED),
        ({"sessions_lost": 3}, results_pb2.FAILED),
        ({"sessions_lost": 3, "cancelled": True}, results_pb2.CANCELLED),
        ({"requests_failed": "every request failed"}, results_pb2.FAILED),
        ({"requests_failed": "no request was sent", "cancelled": True}, results_pb2.CANCELLED),
    ],
)
def test_final_state(flags: dict[str, Any], want: int) -> None:
    args = {
        "master_stopping": False,
        "cancelled": False,
        "timed_out": False,
        "errors": False,
        "metrics": True,
        "every_worker_lost": False,
        "thresholds_passed": True,
    }
    state, why = final_state(**{**args, **flags})
    assert state == want
    if "requests_failed" in flags and want == results_pb2.FAILED:
        assert why == flags["requests_failed"]


def test_run_timeout() -> None:
    assert run_timeout_s(load_test_from_dict({**CLOSED, "timeout": "90s"})) == 90.0
    # The longest entry's duration, its graceful stop (default 30s) and a grace of 60s.
    assert run_timeout_s(load_test_from_dict(CLOSED)) == 91.0
    assert run_timeout_s(load_test_from_dict(OPEN)) == 95.0
    quick = {**CLOSED, "scenarios": [{**CLOSED["scenarios"][0], "graceful_stop": "0s"}]}
    assert run_timeout_s(load_test_from_dict(quick)) == 61.0
    slow = {**OPEN, "scenarios": [{**OPEN["scenarios"][0], "graceful_stop": "2m"}]}
    assert run_timeout_s(load_test_from_dict(slow)) == 185.0
    no_duration = minimal_load_test("http://127.0.0.1:8080", duration=None, iterations=1)
    assert run_timeout_s(load_test_from_dict(no_duration)) == 3600.0


def test_the_text_report_shows_the_losses_and_the_events() -> None:
    from chaperon.report import format_report

    clock = _Clock()
    controller, _ = _controller(OPEN, workers=2, clock=clock)
    _open(controller, "run-1/w0", "run-1/w1")
    clock.now += 1.0
    controller.handle(ReportStored("run-1/w0", _report([100], started=40, completed=40)))
    (takeover,) = [
        a
        for a in controller.handle(StreamEnded("run-1/w0", "gone"))
        if isinstance(a, StartAssignment)
    ]
    _finish_open(controller, takeover.assignment.assignment_id, 200)
    _finish_open(controller, "run-1/w1", 250)
    text = format_report(controller.finish())
    assert ", 10 lost, workers: 2, lost workers: w0" in text
    assert "  arrivals: 500 due = 490 started + 0 dropped + 10 lost" in text
    assert "  event: worker w0 lost at 1.0s: 10 arrivals lost; " in text
