"""A worker killed or stopped mid-run: the run ends by itself, keeps what it received, and
accounts for every session and every arrival.

Two real workers share a run; one gets SIGKILL (it dies without a word) or SIGTERM (it stops
and says so in its last report) a couple of seconds in. The master keeps every delta it
already had, records the worker in ``lost_workers`` with an event saying when and what it did
not run, counts its closed-model sessions that did not complete in ``sessions_lost``, moves
its open-model share of the arrival rate to the survivor, and counts as lost the arrivals due
on it that it never reported: ``started + dropped + lost`` is the whole schedule, exactly.
A run that lost sessions or arrivals is FAILED, with the reason in its error.
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from support.cluster import Service, run_master, run_worker, wait_for_workers
from support.loadtests import metric, minimal_load_test, to_proto

DURATION_S = 6
KILL_AFTER_S = 2.0
# A stopped worker sends its last report and exits: well within this.
EXIT_WITHIN_S = 5.0


@dataclass
class _Outcome:
    run: object  # the final LoadTestRun
    victim_id: str
    survivor_id: str
    ended_after_s: float  # from the signal to the run's end
    victim_exit_code: int | None  # SIGTERM: how the victim's process exited
    victim_exit_s: float | None  # ... and how long after the signal


def _signal_one_worker_mid_run(
    tmp_path: Path, load_test: dict, signum: int = signal.SIGKILL
) -> _Outcome:
    """Master + two workers; submit, wait until RUNNING, send ``signum`` to the first worker
    after KILL_AFTER_S; return the final run and what became of the victim."""
    from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2

    with ExitStack() as stack:
        master = stack.enter_context(run_master(tmp_path / "m"))
        workers: list[Service] = [
            stack.enter_context(run_worker(tmp_path / f"w{i}", master.address, name=f"w{i}"))
            for i in range(2)
        ]
        listed = wait_for_workers(master, workers)
        ids = [next(w.worker_id for w in listed if w.address == x.address) for x in workers]
        channel = stack.enter_context(grpc.insecure_channel(master.address))
        stub = master_pb2_grpc.MasterStub(channel)
        run = _submit_until_running(stub, load_test)
        time.sleep(KILL_AFTER_S)
        victim = workers[0].process
        victim.signal(signum)
        signalled = time.monotonic()
        exit_code = exit_s = None
        if signum != signal.SIGKILL:
            exit_code = victim.wait(timeout_s=EXIT_WITHIN_S + 5)
            exit_s = time.monotonic() - signalled
        while True:
            final = stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run.id), timeout=5)
            if final.state not in (results_pb2.SCHEDULED, results_pb2.RUNNING):
                return _Outcome(
                    final, ids[0], ids[1], time.monotonic() - signalled, exit_code, exit_s
                )
            # 45 s from the start of the run, as the issue asks
            assert time.monotonic() - signalled < 45 - KILL_AFTER_S, "the run did not end"
            time.sleep(0.1)


def _open_model(load_test: dict, per_second: int) -> dict:
    entry = load_test["scenarios"][0]
    del entry["concurrency"]
    entry["arrival_rate"] = {"per_second": per_second, "max_sessions": per_second}
    return load_test


def _submit_until_running(stub: Any, load_test: dict) -> Any:
    """Submit ``load_test`` through ``stub`` (a MasterStub); return the run once the master
    says it is RUNNING."""
    from chaperon.v1 import master_pb2, results_pb2

    run = stub.SubmitLoadTest(
        master_pb2.SubmitLoadTestRequest(load_test=to_proto(load_test)), timeout=10
    )
    deadline = time.monotonic() + 20
    while (
        stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run.id), timeout=5).state
        != results_pb2.RUNNING
    ):
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    return run


def test_run_survives_a_killed_worker(tmp_path: Path, nginx) -> None:
    from chaperon.v1 import results_pb2

    load_test = minimal_load_test(nginx.base_url, concurrency=10, duration=f"{DURATION_S}s")
    out = _signal_one_worker_mid_run(tmp_path, load_test)
    final = out.run

    assert out.ended_after_s < DURATION_S + 10 - KILL_AFTER_S  # the run ends on time
    # The victim's sessions never completed: the run did not run what was asked.
    assert final.state == results_pb2.FAILED, final.error
    result = final.result
    assert list(result.lost_workers) == [out.victim_id]
    assert result.sessions_lost == 5  # the victim's half of 10 sessions never completed
    assert result.sessions_completed == 5
    assert out.victim_id in final.error and "5 sessions lost" in final.error
    (event,) = [e for e in result.events if out.victim_id in e]
    assert event.startswith(f"worker {out.victim_id} lost at "), event
    got = metric(final, "GET /").count
    served = nginx.wait_for_served(got)
    # The survivor ran its whole share; the victim ran for about a third of the run.
    assert got >= 0.5 * served, (got, served)
    assert got <= served


def test_a_worker_stopped_with_sigterm_loses_its_sessions_visibly(tmp_path: Path, nginx) -> None:
    """Closed model, 20 sessions over two workers; one gets SIGTERM mid-run. It ends its
    share at once, says so in its last report and exits (code 0); the master records it as
    gone: an event, its 10 sessions in sessions_lost, and the run is FAILED, not SUCCEEDED."""
    from chaperon.v1 import results_pb2

    load_test = minimal_load_test(nginx.base_url, concurrency=20, duration=f"{DURATION_S}s")
    out = _signal_one_worker_mid_run(tmp_path, load_test, signal.SIGTERM)
    final, result = out.run, out.run.result

    assert out.victim_exit_code == 0
    assert out.victim_exit_s is not None and out.victim_exit_s < EXIT_WITHIN_S
    assert out.ended_after_s < DURATION_S + 10 - KILL_AFTER_S
    assert final.state == results_pb2.FAILED, final.error
    assert list(result.lost_workers) == [out.victim_id]
    (event,) = [e for e in result.events if out.victim_id in e]
    assert event.startswith(f"worker {out.victim_id} stopped (SIGTERM) at "), event
    assert event.endswith("10 sessions not run (0 not started, 10 cut short)"), event
    assert f"worker {out.victim_id} stopped (SIGTERM)" in final.error
    assert result.sessions_lost == 10 and result.sessions_completed == 10
    assert result.sessions_started == result.sessions_completed + result.sessions_lost == 20
    assert metric(final, "GET /").count > 0


def _check_every_arrival_accounted(out: _Outcome, total: int, how: str) -> None:
    from chaperon.v1 import results_pb2

    final, result = out.run, out.run.result
    accounted = result.sessions_started + result.sessions_dropped + result.sessions_lost
    assert (result.arrivals_due, accounted) == (total, total), (
        result.sessions_started,
        result.sessions_dropped,
        result.sessions_lost,
        list(result.events),
    )
    assert result.arrivals_lost == result.sessions_lost
    assert list(result.lost_workers) == [out.victim_id]
    (event,) = [e for e in result.events if e.startswith(f"worker {out.victim_id} ")]
    assert event.startswith(f"worker {out.victim_id} {how} at "), event
    assert event.endswith(f"its share of the arrival rate moved to {out.survivor_id}"), event
    # Lost arrivals fail the run; a victim that had reported all it was due would not.
    want = results_pb2.FAILED if result.sessions_lost else results_pb2.SUCCEEDED
    assert final.state == want, final.error


def test_open_model_every_arrival_is_accounted_for_when_a_worker_is_killed(
    tmp_path: Path, nginx
) -> None:
    """Open model, 1000 arrivals over 5 s on two workers; one is killed (SIGKILL) at 2 s.
    The survivor carries on from the first arrival of the victim's share not yet due, and
    started + dropped + lost is 1000 exactly."""
    load_test = _open_model(minimal_load_test(nginx.base_url, duration="5s"), 200)
    out = _signal_one_worker_mid_run(tmp_path, load_test)
    _check_every_arrival_accounted(out, 1000, "lost")
    # Most of the 1000 still ran: the victim lost at most about one report interval.
    assert out.run.result.sessions_started >= 800


def test_open_model_every_arrival_is_accounted_for_when_a_worker_is_stopped(
    tmp_path: Path, nginx
) -> None:
    load_test = _open_model(minimal_load_test(nginx.base_url, duration="5s"), 200)
    out = _signal_one_worker_mid_run(tmp_path, load_test, signal.SIGTERM)
    assert out.victim_exit_code == 0
    assert out.victim_exit_s is not None and out.victim_exit_s < EXIT_WITHIN_S
    _check_every_arrival_accounted(out, 1000, "stopped (SIGTERM)")
    # A stop loses only the arrivals due between its last report and the takeover: a few.
    assert out.run.result.sessions_lost < 50, list(out.run.result.events)


def test_open_model_rate_of_a_killed_worker_moves_to_the_survivor(tmp_path: Path, nginx) -> None:
    """Open model, 200 sessions/s for 6 s over two workers; one is killed at 2 s. The
    survivor takes over the dead worker's 100/s for the rest of the schedule, so the run
    keeps most of its 1200 sessions, and the result says what happened."""
    load_test = _open_model(minimal_load_test(nginx.base_url, duration=f"{DURATION_S}s"), 200)
    out = _signal_one_worker_mid_run(tmp_path, load_test)
    result = out.run.result
    assert list(result.lost_workers) == [out.victim_id]
    moved = [e for e in result.events if "moved to" in e]
    assert moved and out.victim_id in moved[0] and out.survivor_id in moved[0], list(result.events)
    count = metric(out.run, "GET /").count
    # 1200 scheduled; at most about one report interval of the victim's 100/s is lost.
    assert count >= 1000, (count, list(result.events))
    assert count <= 1200
    assert result.arrivals_due == 1200


def test_a_stopped_worker_exits_even_when_the_master_does_not_answer(tmp_path: Path, nginx) -> None:
    """The master is frozen (SIGSTOP) mid-run when its worker gets SIGTERM: the worker does
    not wait for it beyond a couple of seconds, and exits with code 0. Thawed, the master
    finds the worker gone and ends the run by itself."""
    from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2

    load_test = minimal_load_test(nginx.base_url, concurrency=4, duration="30s")
    with ExitStack() as stack:
        master = stack.enter_context(run_master(tmp_path / "m"))
        worker = stack.enter_context(run_worker(tmp_path / "w", master.address, name="w"))
        wait_for_workers(master, [worker])
        channel = stack.enter_context(grpc.insecure_channel(master.address))
        stub = master_pb2_grpc.MasterStub(channel)
        run = _submit_until_running(stub, load_test)
        time.sleep(1.5)  # the worker is sending reports
        master.process.signal(signal.SIGSTOP)
        try:
            worker.process.signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert worker.process.wait(timeout_s=EXIT_WITHIN_S + 5) == 0
            assert time.monotonic() - signalled < EXIT_WITHIN_S
        finally:
            master.process.signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:
            final = stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run.id), timeout=5)
            if final.state not in (results_pb2.SCHEDULED, results_pb2.RUNNING):
                break
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.1)
        assert final.state == results_pb2.FAILED, final.error
        assert len(final.result.lost_workers) == 1
        assert final.result.sessions_lost == 4
