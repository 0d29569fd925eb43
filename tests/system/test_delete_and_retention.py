"""Deleting runs and keeping only some, against real masters, workers, nginx and grpcurl.

``chaperon delete`` and ``grpcurl ... DeleteLoadTestRun`` delete a finished run with every
report stored for it (checked in the master's SQLite file); an unknown id is NOT_FOUND, a
SCHEDULED or RUNNING run FAILED_PRECONDITION. ``chaperon master --keep-runs N`` and
``--keep-days D`` delete the finished runs beyond the newest N, or older than D days, after
each run and at start, and never a SCHEDULED run. Age is tested with fractions of a day
(``--keep-days 0.0001`` is 8.64 s), which the flag documents; nothing is written behind the
master's back.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import pytest
from support.cluster import Service, run_master, run_worker, wait_for_workers
from support.loadtests import minimal_load_test, to_proto
from support.procs import run_chaperon

from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2

RUN_ENDS_WITHIN_S = 60.0
DELETED_WITHIN_S = 30.0
GRPCURL_TIMEOUT_S = 60.0
TERMINAL = (
    results_pb2.SUCCEEDED,
    results_pb2.FAILED,
    results_pb2.CANCELLED,
    results_pb2.INTERRUPTED,
)


@contextmanager
def _cluster(directory: Path, master_args: list[str]) -> Iterator[tuple[Service, Service]]:
    with ExitStack() as stack:
        master = stack.enter_context(run_master(directory / "master", extra_args=master_args))
        worker = stack.enter_context(run_worker(directory / "worker", master.address))
        wait_for_workers(master, [worker])
        yield master, worker


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    """A master (no retention) with one worker, and the master's database file."""
    root = tmp_path_factory.mktemp("delete")
    with _cluster(root, []) as (master, _):
        yield master, root / "master" / "master.db"


@contextmanager
def _stub(master: Service) -> Iterator[master_pb2_grpc.MasterStub]:
    with grpc.insecure_channel(master.address) as channel:
        yield master_pb2_grpc.MasterStub(channel)


def _get(stub: master_pb2_grpc.MasterStub, run_id: str) -> results_pb2.LoadTestRun | None:
    try:
        return stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run_id), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def _submit(stub: master_pb2_grpc.MasterStub, base_url: str, duration: str = "1s") -> str:
    load_test = to_proto(minimal_load_test(base_url, concurrency=1, duration=duration))
    run = stub.SubmitLoadTest(master_pb2.SubmitLoadTestRequest(load_test=load_test), timeout=10)
    return str(run.id)


def _wait_state(
    stub: master_pb2_grpc.MasterStub, run_id: str, states: tuple[int, ...]
) -> results_pb2.LoadTestRun:
    deadline = time.monotonic() + RUN_ENDS_WITHIN_S
    while True:
        run = _get(stub, run_id)
        assert run is not None, f"{run_id} is gone"
        if run.state in states:
            return run
        assert time.monotonic() < deadline, f"{run_id} still {run.state} after the deadline"
        time.sleep(0.05)


def _finished_run(stub: master_pb2_grpc.MasterStub, base_url: str) -> results_pb2.LoadTestRun:
    run = _wait_state(stub, _submit(stub, base_url), TERMINAL)
    assert run.state == results_pb2.SUCCEEDED, run.error
    return run


def _wait_deleted(stub: master_pb2_grpc.MasterStub, run_id: str) -> None:
    deadline = time.monotonic() + DELETED_WITHIN_S
    while _get(stub, run_id) is not None:
        assert time.monotonic() < deadline, f"{run_id} was not deleted"
        time.sleep(0.05)


def _stored_deltas(db_path: Path, run_id: str) -> int:
    """Rows of the run's reports in the master's database, read as another program would."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT COUNT(*) FROM deltas WHERE run_id = ?", (run_id,)).fetchone()
        return int(row[0])
    finally:
        db.close()


def _chaperon(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_chaperon(*args, cwd=cwd, timeout_s=60)


def _grpcurl(grpcurl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [grpcurl, "-plaintext", "-max-time", str(int(GRPCURL_TIMEOUT_S)), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=GRPCURL_TIMEOUT_S + 15,
    )


def _delete_with_grpcurl(grpcurl: str, master: Service, run_id: str):  # -> CompletedProcess
    request = json.dumps({"id": run_id})
    return _grpcurl(grpcurl, "-d", request, master.address, "chaperon.v1.Master/DeleteLoadTestRun")


def test_delete_through_the_cli(cluster, nginx, tmp_path: Path) -> None:
    master, db_path = cluster
    with _stub(master) as stub:
        first, second, third, kept = (_finished_run(stub, nginx.base_url) for _ in range(4))
        for run in (first, second, third):
            assert _stored_deltas(db_path, run.id) > 0

        done = _chaperon("delete", first.id, second.id, "--master", master.address, cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            f"{first.id} deleted (was SUCCEEDED)",
            f"{second.id} deleted (was SUCCEEDED)",
        ]
        for run in (first, second):
            assert _get(stub, run.id) is None
            assert _stored_deltas(db_path, run.id) == 0
        listing = _chaperon("status", "--master", master.address, cwd=tmp_path)
        assert first.id not in listing.stdout and kept.id in listing.stdout

        # An unknown id fails alone: the others are still deleted, and the exit status says 2.
        mixed = _chaperon("delete", "run-nope", third.id, "--master", master.address, cwd=tmp_path)

        assert mixed.returncode == 2, mixed.stderr
        assert "run-nope: NOT_FOUND" in mixed.stderr and "Traceback" not in mixed.stderr
        assert mixed.stdout.splitlines() == [f"{third.id} deleted (was SUCCEEDED)"]
        assert _get(stub, third.id) is None and _get(stub, kept.id) is not None


def test_delete_through_grpcurl(cluster, nginx, grpcurl) -> None:
    master, db_path = cluster
    listed = _grpcurl(grpcurl, master.address, "list", "chaperon.v1.Master")
    assert "chaperon.v1.Master.DeleteLoadTestRun" in listed.stdout.split(), listed.stderr
    with _stub(master) as stub:
        run = _finished_run(stub, nginx.base_url)

        done = _delete_with_grpcurl(grpcurl, master, run.id)

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"id": run.id, "state": "SUCCEEDED"}
        assert _get(stub, run.id) is None and _stored_deltas(db_path, run.id) == 0

        again = _delete_with_grpcurl(grpcurl, master, run.id)
        assert again.returncode != 0 and "NotFound" in again.stderr, again.stderr
        empty = _delete_with_grpcurl(grpcurl, master, "")
        assert empty.returncode != 0 and "InvalidArgument" in empty.stderr, empty.stderr


def test_a_run_that_has_not_ended_is_not_deleted(cluster, nginx, grpcurl, tmp_path: Path) -> None:
    master, db_path = cluster
    with _stub(master) as stub:
        running = _submit(stub, nginx.base_url, duration="60s")
        _wait_state(stub, running, (results_pb2.RUNNING,))
        deadline = time.monotonic() + RUN_ENDS_WITHIN_S
        while (stored := _stored_deltas(db_path, running)) == 0:  # its first report
            assert time.monotonic() < deadline, "no report of the running run was stored"
            time.sleep(0.05)
        queued = _submit(stub, nginx.base_url)  # behind the running one
        try:
            assert _get(stub, queued).state == results_pb2.SCHEDULED  # type: ignore[union-attr]
            for run_id, state in ((running, "RUNNING"), (queued, "SCHEDULED")):
                cli = _chaperon("delete", run_id, "--master", master.address, cwd=tmp_path)
                assert cli.returncode == 2 and cli.stdout == "", cli.stderr
                assert f"{run_id}: FAILED_PRECONDITION" in cli.stderr, cli.stderr
                assert f"is {state}" in cli.stderr and "cancel it first" in cli.stderr
                by_grpcurl = _delete_with_grpcurl(grpcurl, master, run_id)
                assert by_grpcurl.returncode != 0, by_grpcurl.stdout
                assert "FailedPrecondition" in by_grpcurl.stderr, by_grpcurl.stderr
            assert _get(stub, running).state == results_pb2.RUNNING  # type: ignore[union-attr]
            assert _stored_deltas(db_path, running) >= stored  # kept, and still written
        finally:
            for run_id in (queued, running):
                stub.CancelLoadTestRun(master_pb2.CancelLoadTestRunRequest(id=run_id), timeout=30)

        # Cancelled, it has ended: now it goes.
        done = _chaperon("delete", running, queued, "--master", master.address, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            f"{running} deleted (was CANCELLED)",
            f"{queued} deleted (was CANCELLED)",
        ]
        assert _stored_deltas(db_path, running) == 0


def test_keep_runs_deletes_the_oldest_finished_runs(tmp_path: Path, nginx) -> None:
    db_path = tmp_path / "master" / "master.db"
    with _cluster(tmp_path, ["--keep-runs", "2"]) as (master, _), _stub(master) as stub:
        first, second, third = (_finished_run(stub, nginx.base_url) for _ in range(3))
        _wait_deleted(stub, first.id)  # after the third run ended
        assert _stored_deltas(db_path, first.id) == 0
        assert _get(stub, second.id) is not None and _get(stub, third.id) is not None

    # At start, with a smaller N and no worker (runs stay SCHEDULED, waiting for one).
    args = ["--keep-runs", "1", "--worker-wait", "120"]
    with run_master(tmp_path / "master", extra_args=args) as master, _stub(master) as stub:
        _wait_deleted(stub, second.id)
        assert _get(stub, third.id) is not None
        waiting = _submit(stub, nginx.base_url)
        newest = _submit(stub, nginx.base_url)
        stub.CancelLoadTestRun(master_pb2.CancelLoadTestRunRequest(id=newest), timeout=10)
        # The cancelled run is now the newest finished one: it stays, the third goes; the
        # SCHEDULED run is neither counted nor deleted.
        _wait_deleted(stub, third.id)
        assert _get(stub, newest).state == results_pb2.CANCELLED  # type: ignore[union-attr]
        assert _get(stub, waiting).state == results_pb2.SCHEDULED  # type: ignore[union-attr]


KEEP_DAYS = 0.0001  # 8.64 s
KEEP_S = KEEP_DAYS * 86_400


def test_keep_days_deletes_runs_that_finished_long_enough_ago(tmp_path: Path, nginx) -> None:
    db_path = tmp_path / "master" / "master.db"
    args = ["--keep-days", str(KEEP_DAYS)]
    with _cluster(tmp_path, args) as (master, _), _stub(master) as stub:
        old = _finished_run(stub, nginx.base_url)
        old_finished_s = old.finished_at.ToNanoseconds() / 1e9
        time.sleep(max(0.0, old_finished_s + KEEP_S + 0.5 - time.time()))  # let it age
        assert _get(stub, old.id) is not None  # nothing has ended since: no pass yet

        recent = _finished_run(stub, nginx.base_url)

        _wait_deleted(stub, old.id)  # the pass after the recent run ended
        assert _stored_deltas(db_path, old.id) == 0
        assert _get(stub, recent.id) is not None  # it finished well within 8.64 s

    # At start: a master that keeps less than the time since the recent run finished.
    args = ["--keep-days", "0.00001"]  # 0.864 s
    time.sleep(max(0.0, recent.finished_at.ToNanoseconds() / 1e9 + 1.0 - time.time()))
    with run_master(tmp_path / "master", extra_args=args) as master, _stub(master) as stub:
        _wait_deleted(stub, recent.id)
        assert _stored_deltas(db_path, recent.id) == 0


def test_bad_retention_flags_are_one_line_errors(tmp_path: Path) -> None:
    for flag, value, message in (
        ("--keep-runs", "0", "keep_runs must be at least 1"),
        ("--keep-days", "-1", "keep_days must be a number of days above 0"),
        ("--keep-days", "nan", "keep_days must be a number of days above 0"),
    ):
        done = _chaperon("master", "--port", "0", "--db", "x.db", flag, value, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"chaperon: {message}"), done.stderr
        assert not (tmp_path / "x.db").exists()


def test_deleting_needs_the_client_token(tmp_path: Path) -> None:
    args = ["--token", "client-token", "--cluster-token", "worker-token"]
    with run_master(tmp_path / "master", extra_args=args) as master, _stub(master) as stub:
        request = master_pb2.DeleteLoadTestRunRequest(id="run-nope")
        for metadata, code in (
            ((), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", "Bearer worker-token"),), grpc.StatusCode.PERMISSION_DENIED),
            ((("authorization", "Bearer client-token"),), grpc.StatusCode.NOT_FOUND),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.DeleteLoadTestRun(request, timeout=10, metadata=metadata)
            assert refused.value.code() == code, refused.value.details()
