"""A worker killed mid-run: the run still ends by itself, keeps what it received, says so.

Two real workers share a closed-model run; one gets SIGKILL a couple of seconds in. The
master keeps every delta it already had, stops waiting for the dead worker, reports it in
``lost_workers`` with its unfinished sessions in ``sessions_lost``, and the survivor finishes
its share on time.
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path

import grpc
from support.cluster import run_master, run_worker, wait_for_workers
from support.loadtests import metric, minimal_load_test, to_proto

DURATION_S = 6
KILL_AFTER_S = 2.0


def _kill_one_worker_mid_run(tmp_path: Path, load_test: dict) -> tuple:
    """Master + two workers; submit, wait until RUNNING, SIGKILL the first worker after
    KILL_AFTER_S; return (final run, victim id, survivor id, seconds from kill to end)."""
    from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2

    with ExitStack() as stack:
        master = stack.enter_context(run_master(tmp_path / "m"))
        workers = [
            stack.enter_context(run_worker(tmp_path / f"w{i}", master.address, name=f"w{i}"))
            for i in range(2)
        ]
        listed = wait_for_workers(master, workers)
        ids = [next(w.worker_id for w in listed if w.address == x.address) for x in workers]
        channel = stack.enter_context(grpc.insecure_channel(master.address))
        stub = master_pb2_grpc.MasterStub(channel)
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
        time.sleep(KILL_AFTER_S)
        workers[0].process.signal(signal.SIGKILL)
        killed = time.monotonic()
        while True:
            final = stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run.id), timeout=5)
            if final.state not in (results_pb2.SCHEDULED, results_pb2.RUNNING):
                return final, ids[0], ids[1], time.monotonic() - killed
            # 45 s from the start of the run, as the issue asks
            assert time.monotonic() - killed < 45 - KILL_AFTER_S, "the run did not end by itself"
            time.sleep(0.1)


def test_run_survives_a_killed_worker(tmp_path: Path, nginx) -> None:
    from chaperon.v1 import results_pb2

    load_test = minimal_load_test(nginx.base_url, concurrency=10, duration=f"{DURATION_S}s")
    final, victim_id, _, elapsed = _kill_one_worker_mid_run(tmp_path, load_test)

    assert elapsed < DURATION_S + 10 - KILL_AFTER_S  # from the kill: the run ends on time
    assert final.state == results_pb2.SUCCEEDED, final.error
    result = final.result
    assert list(result.lost_workers) == [victim_id]
    assert result.sessions_lost == 5  # the victim's half of 10 sessions never completed
    assert result.sessions_completed == 5
    assert victim_id in final.error
    got = metric(final, "GET /").count
    served = nginx.wait_for_served(got)
    # The survivor ran its whole share; the victim ran for about a third of the run.
    assert got >= 0.5 * served, (got, served)
    assert got <= served


def test_open_model_rate_of_a_killed_worker_moves_to_the_survivor(tmp_path: Path, nginx) -> None:
    """Open model, 200 sessions/s for 6 s over two workers; one is killed at 2 s. The
    survivor takes over the dead worker's 100/s for the rest of the schedule, so the run
    keeps most of its 1200 sessions, and the result says what happened."""
    from chaperon.v1 import results_pb2

    load_test = minimal_load_test(nginx.base_url, duration=f"{DURATION_S}s")
    entry = load_test["scenarios"][0]
    del entry["concurrency"]
    entry["arrival_rate"] = {"per_second": 200, "max_sessions": 200}
    final, victim_id, survivor_id, _ = _kill_one_worker_mid_run(tmp_path, load_test)

    assert final.state == results_pb2.SUCCEEDED, final.error
    result = final.result
    assert list(result.lost_workers) == [victim_id]
    moved = [e for e in result.events if "moved to" in e]
    assert moved and victim_id in moved[0] and survivor_id in moved[0], list(result.events)
    count = metric(final, "GET /").count
    # 1200 scheduled; at most about one report interval of the victim's 100/s is lost.
    assert count >= 1000, (count, list(result.events))
    assert count <= 1200
