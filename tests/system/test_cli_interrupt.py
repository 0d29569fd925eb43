"""Ctrl-C and outputs through the real ``chaperon`` command, as a person at a terminal meets
them: a run interrupted keeps its result, a second Ctrl-C quits at once, ``watch`` stops
watching and leaves the run going; an output that would be refused after the run is refused
before any load is sent, and one that fails anyway loses nothing.

Ctrl-C is the terminal's: the command runs in a pseudo-terminal (``pexpect``) and the test
types the interrupt character, so SIGINT reaches the process as it does from a keyboard.
Nothing waits on a fixed sleep: the run has started when nginx has served a request.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest
from support.loadtests import minimal_load_test
from support.procs import chaperon_command, python_env, run_chaperon

# Every run here is longer than any test waits: only Ctrl-C ends it in time.
LONG = "30s"
# From Ctrl-C to the end of the process: cancel, the workers' final reports, the report.
STOP_WITHIN_S = 10.0
# A second Ctrl-C ends the process at once; this leaves room for a loaded machine.
QUIT_WITHIN_S = 2.0
START_WITHIN_S = 30.0
COMMAND_TIMEOUT_S = 90.0


def _wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = START_WITHIN_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., pexpect.spawn]]:
    """``spawn(*args)``: ``chaperon ARGS`` in a pseudo-terminal (120 columns) in tmp_path;
    every one still running at the end is killed."""
    children: list[pexpect.spawn] = []

    def start(*args: str) -> pexpect.spawn:
        argv = chaperon_command()
        child = pexpect.spawn(
            argv[0],
            [*argv[1:], *args],
            cwd=str(tmp_path),
            env=python_env(),
            encoding="utf-8",
            codec_errors="replace",
            dimensions=(50, 120),
            timeout=COMMAND_TIMEOUT_S,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)
        child.close()


def _end(child: pexpect.spawn, within_s: float) -> tuple[str, int]:
    """Everything the child writes until it exits (within ``within_s``), and its status."""
    child.expect(pexpect.EOF, timeout=within_s)
    text = child.before
    child.close()
    assert child.exitstatus is not None, (child.signalstatus, text)
    return text, child.exitstatus


def _chaperon(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_chaperon(*args, cwd=cwd, timeout_s=COMMAND_TIMEOUT_S)


def _counts(run: dict) -> dict[str, int]:
    return {m["key"]: int(m.get("count", 0)) for m in run["result"].get("metrics", [])}


def _load_test_file(tmp_path: Path, base_url: str, **options) -> Path:
    path = tmp_path / "long.json"
    options.setdefault("duration", LONG)
    path.write_text(json.dumps(minimal_load_test(base_url, **options)))
    return path


# -- chaperon run -------------------------------------------------------------------------------


def test_run_ctrl_c_keeps_the_report_and_the_output(nginx, tmp_path, spawn):
    test_file = _load_test_file(tmp_path, nginx.base_url, concurrency=2)
    out = tmp_path / "out.json"
    child = spawn("run", str(test_file), "--threads", "1", "--output", str(out))
    _wait_for(lambda: nginx.requests_served() > 0, "the first request")

    interrupted_at = time.monotonic()
    child.sendintr()
    text, status = _end(child, STOP_WITHIN_S)

    assert time.monotonic() - interrupted_at < STOP_WITHIN_S
    assert status == 130, text
    assert "Traceback" not in text, text
    assert "stopping: cancelling the run and keeping what it measured" in text, text
    assert "Ctrl-C again to quit at once" in text, text
    run_id = _reported_cancelled(text)  # the report
    assert "GET /" in text, text
    assert f"wrote {out}" in text, text
    run = json.loads(out.read_text())
    assert run["id"] == run_id
    assert run["state"] == "CANCELLED"
    count = _counts(run)["GET /"]
    assert count > 0, run
    # What the file holds is what was measured: nginx served at least as many.
    assert nginx.wait_for_served(count) >= count
    assert not (tmp_path / "out.load_test.json").exists()  # the output writes what it names


SLOW_STEP = """\
import time


def nap(session):
    time.sleep(20)
"""


def test_run_second_ctrl_c_quits_at_once(nginx, tmp_path, spawn):
    # A python step that blocks its engine thread for 20 s: after the cancel, the worker's
    # final report cannot come, so the stop lasts the master's grace (seconds) and the second
    # Ctrl-C surely lands during it.
    (tmp_path / "slow.py").write_text(SLOW_STEP)
    load_test = minimal_load_test(nginx.base_url, concurrency=1, duration=LONG)
    load_test["scenarios"][0]["scenario"]["run"].append({"python": {"function": "slow:nap"}})
    test_file = tmp_path / "slow.json"
    test_file.write_text(json.dumps(load_test))
    out = tmp_path / "out.csv"
    child = spawn("run", str(test_file), "--threads", "1", "--output", str(out))
    _wait_for(lambda: nginx.requests_served() > 0, "the first request")

    child.sendintr()
    child.expect("Ctrl-C again to quit at once", timeout=STOP_WITHIN_S)
    interrupted_at = time.monotonic()
    child.sendintr()
    text, status = _end(child, STOP_WITHIN_S)

    assert time.monotonic() - interrupted_at < QUIT_WITHIN_S, text
    assert status == 130, text
    assert "quitting at once" in text, text
    assert "Traceback" not in text, text
    assert "CANCELLED" not in text, text  # no report: it quit before the run ended
    assert not out.exists()


def test_run_existing_output_is_refused_before_any_request(nginx, tmp_path):
    test_file = _load_test_file(
        tmp_path, nginx.base_url, concurrency=2, duration=None, iterations=10
    )
    out = tmp_path / "out.html"
    out.write_text("keep me")

    done = _chaperon(tmp_path, "run", str(test_file), "--output", str(out))

    assert done.returncode == 2, done
    assert done.stderr.strip() == f"chaperon: {out} exists; pass --force to overwrite it"
    assert done.stdout == ""
    assert out.read_text() == "keep me"
    assert nginx.requests_served() == 0

    forced = _chaperon(tmp_path, "run", str(test_file), "--output", str(out), "--force")

    assert forced.returncode == 0, forced
    assert "GET /" in forced.stdout  # the report
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert nginx.wait_for_served(20) == 20


def test_run_outputs_of_one_stem_do_not_collide(nginx, tmp_path):
    # Each output writes only the file it names: out.csv leaves out.html free.
    test_file = _load_test_file(tmp_path, nginx.base_url, duration=None, iterations=5)
    for name in ("out.csv", "out.html"):
        done = _chaperon(tmp_path, "run", str(test_file), "--output", name)
        assert done.returncode == 0, done
    assert sorted(p.name for p in tmp_path.glob("out*")) == ["out.csv", "out.html"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("notes.txt/out.csv", "cannot write notes.txt/out.csv: notes.txt is not a directory"),
        ("notes.txt/deeper/out.csv", "cannot write notes.txt/deeper/out.csv: notes.txt is not"),
        ("folder", "folder is a directory; name a file to write"),
    ],
)
def test_run_unwritable_output_is_refused_before_any_request(nginx, tmp_path, output, message):
    (tmp_path / "notes.txt").write_text("a regular file")
    (tmp_path / "folder").mkdir()
    test_file = _load_test_file(tmp_path, nginx.base_url, duration=None, iterations=5)

    done = _chaperon(tmp_path, "run", str(test_file), "--output", output, "--force")

    assert done.returncode == 2, done
    assert done.stderr.startswith(f"chaperon: {message}"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert nginx.requests_served() == 0


def test_run_output_failing_after_the_run_keeps_the_run(nginx, tmp_path):
    (tmp_path / "sub").mkdir()
    test_file = _load_test_file(tmp_path, nginx.base_url, concurrency=2, duration="3s")
    command = [*chaperon_command(), "run", str(test_file), "--output", "sub/out.csv"]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=python_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            _wait_for(lambda: nginx.requests_served() > 0, "the first request")
            # The folder checked before the run becomes a file while it runs.
            (tmp_path / "sub").rmdir()
            (tmp_path / "sub").write_text("in the way")
            stdout, stderr = proc.communicate(timeout=COMMAND_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()

    assert proc.returncode == 2, (stdout, stderr)
    assert "GET /" in stdout and "SUCCEEDED" in stdout, stdout  # the report, still
    assert "Traceback" not in stderr, stderr
    (saved,) = tmp_path.glob("chaperon-run-*.json")
    assert "cannot write sub/out.csv: sub: File exists" in stderr, stderr
    assert f"the run is saved as JSON in {saved.name}" in stderr, stderr
    run = json.loads(saved.read_text())
    assert run["state"] == "SUCCEEDED" and _counts(run)["GET /"] > 0


# -- a master and workers: submit --wait, watch ---------------------------------------------------


def _run(master, cwd: Path, run_id: str) -> dict:
    done = _chaperon(cwd, "status", run_id, "--json", "--master", master.address)
    assert done.returncode in (0, 1), done  # 1: not SUCCEEDED
    return json.loads(done.stdout)


def _reported_cancelled(text: str) -> str:
    """The id in the title line of a report of a CANCELLED run (``... [run-..]  CANCELLED``)."""
    found = re.search(r"\[(run-[0-9a-f]+)\]\s+CANCELLED\s", text)
    assert found, text
    return found.group(1)


def test_submit_wait_ctrl_c_cancels_and_prints_what_was_measured(
    master, workers, nginx, tmp_path, spawn
):
    test_file = _load_test_file(tmp_path, nginx.base_url, concurrency=2)
    child = spawn("submit", str(test_file), "--wait", "--master", master.address)
    _wait_for(lambda: nginx.requests_served() > 0, "the first request")

    child.sendintr()
    text, status = _end(child, STOP_WITHIN_S)

    assert status == 130, text
    assert "Traceback" not in text, text
    assert "stopping: cancelling the run and keeping what it measured" in text, text
    run_id = _reported_cancelled(text)
    assert "GET /" in text, text
    # The master kept the partial result of the cancelled run.
    run = _run(master, tmp_path, run_id)
    assert run["state"] == "CANCELLED"
    assert _counts(run)["GET /"] > 0, run


def test_watch_ctrl_c_stops_watching_and_the_run_goes_on(master, workers, nginx, tmp_path, spawn):
    test_file = _load_test_file(tmp_path, nginx.base_url, concurrency=1)
    submitted = _chaperon(tmp_path, "submit", str(test_file), "--master", master.address)
    assert submitted.returncode == 0, submitted
    run_id = submitted.stdout.split()[0]
    try:
        child = spawn("watch", run_id, "--master", master.address)
        child.expect(r"running \[", timeout=START_WITHIN_S)  # the live line is up

        child.sendintr()
        text, status = _end(child, STOP_WITHIN_S)

        assert status == 130, text
        assert "Traceback" not in text, text
        assert f"stopped watching; run {run_id} goes on" in text, text
        assert _run(master, tmp_path, run_id)["state"] == "RUNNING"
        served = nginx.requests_served()
        _wait_for(lambda: nginx.requests_served() > served, "more requests after watch ended")
    finally:
        _chaperon(tmp_path, "cancel", run_id, "--master", master.address)
