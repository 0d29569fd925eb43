"""The client commands against a running master: submit, watch, status, report, workers, cancel.

A master and a worker run as real processes with a token; the commands run as real
``chaperon`` processes with ``--master`` and the token from ``CHAPERON_TOKEN``.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from pathlib import Path

import pytest
from support.cluster import Service, run_master, run_worker
from support.loadtests import minimal_load_test
from support.procs import chaperon_command, python_env, run_chaperon

TOKEN = "cli-token"


def chaperon(*args: str, cwd: Path, token: str | None = TOKEN, timeout_s: float = 60):
    env = python_env({"CHAPERON_TOKEN": token} if token else None)
    if token is None:
        env.pop("CHAPERON_TOKEN", None)
    return run_chaperon(*args, cwd=cwd, timeout_s=timeout_s, env=env)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cli-cluster")
    with run_master(root / "m", extra_args=["--token", TOKEN]) as master:
        with run_worker(root / "w", master.address, extra_args=["--token", TOKEN]) as worker:
            _wait_listed(master)
            yield master, worker


def _wait_listed(master: Service) -> None:
    import grpc

    from chaperon.v1 import master_pb2, master_pb2_grpc

    with grpc.insecure_channel(master.address) as channel:
        stub = master_pb2_grpc.MasterStub(channel)
        deadline = time.monotonic() + 30
        while not stub.ListWorkers(
            master_pb2.ListWorkersRequest(),
            timeout=5,
            metadata=[("authorization", f"Bearer {TOKEN}")],
        ).workers:
            assert time.monotonic() < deadline, "the worker did not join"
            time.sleep(0.1)


def test_submit_watch_status_report(cluster, nginx, tmp_path: Path) -> None:
    master, _ = cluster
    spec = tmp_path / "lt.json"
    spec.write_text(json.dumps(minimal_load_test(nginx.base_url, concurrency=2, duration="2s")))

    submitted = chaperon("submit", str(spec), "--master", master.address, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    run_id, state = submitted.stdout.split()
    assert state in ("SCHEDULED", "RUNNING")

    watched = chaperon("watch", run_id, "--master", master.address, cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert "SUCCEEDED" in watched.stdout and "GET /" in watched.stdout

    status = chaperon("status", run_id, "--json", "--master", master.address, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    run = json.loads(status.stdout)
    assert run["state"] == "SUCCEEDED"
    count = int(run["result"]["metrics"][0]["count"])
    assert count == nginx.wait_for_served(count)

    listing = chaperon("status", "--master", master.address, cwd=tmp_path)
    assert run_id in listing.stdout

    out = tmp_path / "out.csv"
    report = chaperon(
        "report",
        run_id,
        "--format",
        "csv",
        "--output",
        str(out),
        "--master",
        master.address,
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows[0]["key"] == "GET /" and int(rows[0]["count"]) == count
    assert (tmp_path / "out.load_test.json").exists()

    default = chaperon(
        "report", run_id, "--format", "json", "--master", master.address, cwd=tmp_path
    )
    assert default.returncode == 0, default.stderr
    written = sorted((tmp_path / "results").rglob("*.json"))
    assert any(p.name.endswith(".load_test.json") for p in written)
    data = [p for p in written if not p.name.endswith(".load_test.json")]
    assert json.loads(data[0].read_text())["id"] == run_id
    assert data[0].relative_to(tmp_path / "results").parts[1] == "smoke"

    again = chaperon(
        "report",
        run_id,
        "--format",
        "csv",
        "--output",
        str(out),
        "--master",
        master.address,
        cwd=tmp_path,
    )
    assert again.returncode == 2 and "exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_workers_cancel_and_missing_token(cluster, nginx, tmp_path: Path) -> None:
    master, worker = cluster
    workers = chaperon("workers", "--master", master.address, cwd=tmp_path)
    assert workers.returncode == 0 and worker.address in workers.stdout

    spec = tmp_path / "long.json"
    spec.write_text(json.dumps(minimal_load_test(nginx.base_url, concurrency=1, duration="30s")))
    submitted = chaperon("submit", str(spec), "--master", master.address, cwd=tmp_path)
    run_id = submitted.stdout.split()[0]
    started = time.monotonic()
    cancelled = chaperon("cancel", run_id, "--master", master.address, cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.split() == [run_id, "CANCELLED"]
    assert time.monotonic() - started < 15

    denied = chaperon("workers", "--master", master.address, cwd=tmp_path, token=None)
    assert denied.returncode == 2
    assert "UNAUTHENTICATED" in denied.stderr and "Traceback" not in denied.stderr
    wrong = chaperon("status", "--master", master.address, "--token", "nope", cwd=tmp_path)
    assert wrong.returncode == 2 and "PERMISSION_DENIED" in wrong.stderr


def test_a_closed_pipe_ends_a_command_quietly(cluster, tmp_path: Path) -> None:
    # `chaperon workers | head -0`: the reader is gone before the command writes anything.
    master, _ = cluster
    env = python_env({"CHAPERON_TOKEN": TOKEN})
    proc = subprocess.Popen(
        [*chaperon_command(), "workers", "--master", master.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_submit_wait_exits_as_run_does(cluster, nginx, tmp_path: Path) -> None:
    master, _ = cluster
    # One request in four answers 500: SUCCEEDED, with errors.
    load_test = minimal_load_test(nginx.base_url, concurrency=1, duration=None, iterations=4)
    load_test["scenarios"][0]["scenario"]["run"] = [
        {"http": {"method": "GET", "path": "/status/500"}},
        *[{"http": {"method": "GET", "path": "/"}}] * 3,
    ]
    spec = tmp_path / "errors.json"
    spec.write_text(json.dumps(load_test))

    strict = chaperon("submit", str(spec), "--wait", "--master", master.address, cwd=tmp_path)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "SUCCEEDED" in strict.stdout.splitlines()[0]
    assert strict.stdout.splitlines()[-1] == (
        "  FAILED: 4 errors in 16 requests (25.0%), above --max-error-rate 0 (0%)"
    )

    tolerant = chaperon(
        "submit", str(spec), "--wait", "--max-error-rate", "0.25", "--master", master.address,
        cwd=tmp_path,
    )  # fmt: skip
    assert tolerant.returncode == 0, tolerant.stdout + tolerant.stderr
    # `status` shows the run as it ended: the error rate is the submitter's business.
    run_id = tolerant.stdout.split("[", 1)[1].split("]", 1)[0]
    status = chaperon("status", run_id, "--master", master.address, cwd=tmp_path)
    assert status.returncode == 0, status.stderr

    # Every request fails: FAILED, whatever --max-error-rate allows.
    load_test["scenarios"][0]["scenario"]["run"] = [
        {"http": {"method": "GET", "path": "/status/503"}}
    ]
    spec.write_text(json.dumps(load_test))
    failed = chaperon(
        "submit", str(spec), "--wait", "--max-error-rate", "1", "--master", master.address,
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED" in failed.stdout.splitlines()[0]
    assert "every request failed (4 errors: http_5xx=4)" in failed.stdout
