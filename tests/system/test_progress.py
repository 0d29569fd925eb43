"""The run header and the live progress line as a person sees them, and graceful_stop.

The ``chaperon`` command line runs as a real process: in a pseudo-terminal (``pexpect``) for
the live line, with pipes for ``--progress`` and the quiet default. Its targets are the
session-language server on 127.0.0.1 (``/slow?ms=N`` answers after N ms). Every run is
bounded: short durations, timeouts on every wait.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pexpect
from support.loadtests import minimal_load_test
from support.procs import chaperon_command, python_env

from chaperon.v1 import loadtest_pb2, master_pb2, master_pb2_grpc, results_pb2

RUN_TIMEOUT_S = 90.0
# One progress line as the live display draws it (erase the line, then the line).
LIVE_LINE = re.compile(
    r"\r\x1b\[2Krunning \[[=> ]+\] [0-9.]+s/4s  sessions \d+  requests \d+  \d+ req/s  "
    r"errors 0\.0%"
)


def _slow_test(
    base_url: str, ms: int, duration: str, graceful_stop: str | None = None
) -> dict[str, Any]:
    """4 sessions asking for ``/slow?ms=MS`` one after the other for ``duration``."""
    lt = minimal_load_test(
        base_url, name="progress", concurrency=4, duration=duration, path=f"/slow?ms={ms}"
    )
    if graceful_stop is not None:
        lt["scenarios"][0]["graceful_stop"] = graceful_stop
    return lt


def _spawn(args: list[str], cwd: Path) -> pexpect.spawn:
    argv = [*chaperon_command(), *args]
    return pexpect.spawn(
        argv[0],
        argv[1:],
        cwd=str(cwd),
        env=python_env(),
        encoding="utf-8",
        timeout=RUN_TIMEOUT_S,
        dimensions=(40, 160),
    )


def _finish(child: pexpect.spawn) -> str:
    rest = child.read()  # to the end of the output
    child.close()
    return str(rest)


def test_run_on_a_terminal_says_what_runs_and_redraws_one_line(
    lang_server: Any, tmp_path: Path
) -> None:
    spec = tmp_path / "lt.json"
    spec.write_text(json.dumps(_slow_test(lang_server.base_url, 20, duration="4s")))
    child = _spawn(["run", str(spec), "--threads", "1"], tmp_path)
    try:
        child.expect("load test 'progress'")
        child.expect(r"4 sessions \(closed model\) for 4s, graceful stop 30s")
        child.expect("duration 4s, at most 34s with the graceful stop")
        child.expect(r"workers: 1 worker, 1 engine thread")
        rest = _finish(child)
    finally:
        child.terminate(force=True)
    assert child.exitstatus == 0, rest
    # The same line, redrawn in place, every one of its redraws: its first ones may all read
    # 0s (the figures follow the stored reports, the first of which can take a second or two
    # on a busy machine), so the whole run's lines are looked at, not the first three.
    seen = [m.group(0) for m in LIVE_LINE.finditer(rest)]
    assert len(seen) >= 3, rest
    elapsed = [float(re.search(r"([0-9.]+)s/4s", line).group(1)) for line in seen]  # type: ignore[union-attr]
    assert elapsed == sorted(elapsed) and elapsed[-1] > elapsed[0], seen
    assert any(int(re.search(r"(\d+) req/s", s).group(1)) > 0 for s in seen), seen  # type: ignore[union-attr]
    assert "SUCCEEDED" in rest and "GET /slow" in rest  # the report follows the line


def test_progress_without_a_terminal_prints_plain_lines_and_is_quiet_without(
    lang_server: Any, tmp_path: Path
) -> None:
    spec = tmp_path / "lt.json"
    spec.write_text(json.dumps(_slow_test(lang_server.base_url, 20, duration="7s")))
    argv = [*chaperon_command(), "run", str(spec), "--threads", "1"]
    kwargs: dict[str, Any] = dict(
        cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    shown = subprocess.run([*argv, "--progress"], **kwargs)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b[" not in shown.stderr and "\r" not in shown.stderr
    assert "load test 'progress'" in shown.stderr
    lines = [line for line in shown.stderr.splitlines() if line.startswith("running ")]
    # One at the first figures, then one every 5 s: two or three in 7 s, each whole.
    assert 2 <= len(lines) <= 4, shown.stderr
    assert all("req/s" in line and "errors 0.0%" in line for line in lines), lines
    assert "SUCCEEDED" in shown.stdout

    quiet = subprocess.run(argv, **kwargs)
    assert quiet.returncode == 0, quiet.stderr
    assert "running " not in quiet.stderr and "load test" not in quiet.stderr


def test_graceful_stop_lets_requests_in_flight_finish_and_counts_them(
    lang_server: Any, tmp_path: Path
) -> None:
    # Each session sends one 3 s request at once; the duration ends 1 s in.
    spec = tmp_path / "lt.json"
    spec.write_text(
        json.dumps(_slow_test(lang_server.base_url, 3000, duration="1s", graceful_stop="10s"))
    )
    child = _spawn(["run", str(spec), "--threads", "1", "--json"], tmp_path)
    try:
        child.expect(r"waiting up to [0-9.m]+s for 4 requests in flight")
        rest = _finish(child)
    finally:
        child.terminate(force=True)
    assert child.exitstatus == 0, rest
    run = json.loads(rest[rest.index("{") :])
    metric = run["result"]["metrics"][0]
    assert metric["key"].startswith("GET /slow") and int(metric["count"]) == 4
    assert int(metric.get("errors", 0)) == 0
    assert lang_server.counts()["slow_done"] == 4


def test_graceful_stop_0s_cuts_requests_in_flight_at_the_end(
    lang_server: Any, tmp_path: Path
) -> None:
    spec = tmp_path / "lt.json"
    spec.write_text(
        json.dumps(_slow_test(lang_server.base_url, 5000, duration="1s", graceful_stop="0s"))
    )
    started = time.monotonic()
    done = subprocess.run(
        [*chaperon_command(), "run", str(spec), "--threads", "1", "--json"],
        cwd=tmp_path,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    took_s = time.monotonic() - started
    run = json.loads(done.stdout)
    # Sent, then cut at the end: nothing completed, nothing counted as an error; the run
    # did not wait for the 5 s answers (it ended FAILED: no request completed).
    assert lang_server.counts()["slow"] == 4
    assert all(int(m.get("count", 0)) == 0 for m in run["result"].get("metrics", []))
    assert all(int(m.get("errors", 0)) == 0 for m in run["result"].get("metrics", []))
    assert run["state"] == "FAILED" and done.returncode == 1
    assert took_s < 5.0, (took_s, done.stderr)


def _submit(stub: Any, lt: dict[str, Any]) -> results_pb2.LoadTestRun:
    from google.protobuf import json_format

    load_test = json_format.ParseDict(lt, loadtest_pb2.LoadTest())
    return stub.SubmitLoadTest(master_pb2.SubmitLoadTestRequest(load_test=load_test))


def test_watch_of_a_queued_run_shows_its_place(
    master: Any, workers: Any, lang_server: Any, tmp_path: Path
) -> None:
    with grpc.insecure_channel(master.address) as channel:
        stub = master_pb2_grpc.MasterStub(channel)
        first = _submit(stub, _slow_test(lang_server.base_url, 20, duration="20s"))
        second = _submit(stub, _slow_test(lang_server.base_url, 20, duration="20s"))
        third = _submit(stub, _slow_test(lang_server.base_url, 20, duration="1s"))
        try:
            child = _spawn(["watch", third.id, "--master", master.address], tmp_path)
            try:
                child.expect("queued: 2 runs ahead", timeout=30)
                stub.CancelLoadTestRun(master_pb2.CancelLoadTestRunRequest(id=first.id))
                child.expect("queued: 1 run ahead", timeout=30)
                stub.CancelLoadTestRun(master_pb2.CancelLoadTestRunRequest(id=second.id))
                child.expect(r"running \[", timeout=30)
                rest = _finish(child)
            finally:
                child.terminate(force=True)
            assert child.exitstatus == 0, rest
            assert "SUCCEEDED" in rest
        finally:
            for run in (first, second, third):
                try:
                    stub.CancelLoadTestRun(master_pb2.CancelLoadTestRunRequest(id=run.id))
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise


def test_submit_wait_shows_the_line_on_a_terminal(
    master: Any, workers: Any, lang_server: Any, tmp_path: Path
) -> None:
    spec = tmp_path / "lt.json"
    spec.write_text(json.dumps(_slow_test(lang_server.base_url, 20, duration="4s")))
    child = _spawn(["submit", str(spec), "--wait", "--master", master.address], tmp_path)
    try:
        child.expect("load test 'progress'")
        child.expect(r"workers: 2 workers")
        child.expect(LIVE_LINE)
        rest = _finish(child)
    finally:
        child.terminate(force=True)
    assert child.exitstatus == 0, rest
    assert "SUCCEEDED" in rest
