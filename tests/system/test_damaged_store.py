"""A run the master cannot read back from its database does not stop the queue.

A real master with its SQLite file; a damaged run (bytes that are not a ``LoadTestRun``) is
written into the live database at the head of the queue, as a disk fault or another program
would leave it. The runner must fail that run alone, with a reason, and go on: the next
submission runs and succeeds, and the master keeps answering health SERVING.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import grpc
from support.cluster import run_master, run_worker, wait_for_workers
from support.loadtests import minimal_load_test, to_proto

from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2

RUN_ENDS_WITHIN_S = 60.0
TERMINAL = (results_pb2.SUCCEEDED, results_pb2.FAILED, results_pb2.CANCELLED)


def _ended(stub: master_pb2_grpc.MasterStub, run_id: str) -> results_pb2.LoadTestRun:
    deadline = time.monotonic() + RUN_ENDS_WITHIN_S
    while True:
        run = stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run_id), timeout=10)
        if run.state in TERMINAL:
            return run
        assert time.monotonic() < deadline, f"{run_id} still {run.state} after the deadline"
        time.sleep(0.1)


def test_a_damaged_run_fails_alone_and_the_queue_goes_on(tmp_path: Path, nginx) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with run_master(tmp_path / "master") as master:
        db = sqlite3.connect(tmp_path / "master" / "master.db", timeout=10)
        with db:
            db.execute(
                "INSERT INTO runs (id, state, run) VALUES (?, ?, ?)",
                ("run-damaged", results_pb2.SCHEDULED, b"\xff\xff\xff not a LoadTestRun"),
            )
        db.close()
        with (
            run_worker(tmp_path / "worker", master.address) as worker,
            grpc.insecure_channel(master.address) as channel,
        ):
            wait_for_workers(master, [worker])
            stub = master_pb2_grpc.MasterStub(channel)
            load_test = to_proto(minimal_load_test(nginx.base_url, concurrency=2, duration="1s"))
            run = stub.SubmitLoadTest(
                master_pb2.SubmitLoadTestRequest(load_test=load_test), timeout=10
            )
            done = _ended(stub, run.id)
            assert done.state == results_pb2.SUCCEEDED, done.error
            damaged = _ended(stub, "run-damaged")
            assert damaged.state == results_pb2.FAILED
            assert "could not read this run back" in damaged.error
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        master.process.check_running()


def _health(channel: grpc.Channel) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service="chaperon.v1.Master"), timeout=10)
        .status
    )


def _until_health(channel: grpc.Channel, status: int, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while _health(channel) != status:
        assert time.monotonic() < deadline, f"health did not become {status} in {within_s}s"
        time.sleep(0.1)


def test_a_queue_the_master_cannot_read_turns_health_not_serving_until_it_can(
    tmp_path: Path, nginx
) -> None:
    """The runs table is moved away under the live master (another program, an operator's
    mistake): the runner cannot read the queue, says why in the log, and health answers
    NOT_SERVING; once the table is back, health is SERVING again and runs run."""
    from grpc_health.v1 import health_pb2

    with run_master(tmp_path / "master") as master:
        with grpc.insecure_channel(master.address) as channel:
            _until_health(channel, health_pb2.HealthCheckResponse.SERVING)
            db = sqlite3.connect(tmp_path / "master" / "master.db", timeout=10)
            with db:
                db.execute("ALTER TABLE runs RENAME TO runs_aside")
            _until_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            with db:
                db.execute("ALTER TABLE runs_aside RENAME TO runs")
            db.close()
            _until_health(channel, health_pb2.HealthCheckResponse.SERVING)
            with run_worker(tmp_path / "worker", master.address) as worker:
                wait_for_workers(master, [worker])
                stub = master_pb2_grpc.MasterStub(channel)
                load_test = to_proto(
                    minimal_load_test(nginx.base_url, concurrency=1, duration="1s")
                )
                run = stub.SubmitLoadTest(
                    master_pb2.SubmitLoadTestRequest(load_test=load_test), timeout=10
                )
                assert _ended(stub, run.id).state == results_pb2.SUCCEEDED
        master.process.check_running()
    log = master.process.stderr_path.read_text()
    assert "the run queue cannot go on: cannot read the queued runs" in log, log[-2000:]
    assert "the run queue works again" in log
