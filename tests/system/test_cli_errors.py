"""Errors that say what to fix, and processes that talk: the ``chaperon`` command line as a
person at a terminal meets them.

Real processes on loopback: ``chaperon run`` (its embedded master refuses what the file gets
wrong), ``chaperon submit`` to a ``chaperon master``, every client command against a port
nothing listens on, a worker started before its master (it says so on stderr within seconds,
then that it registered), a worker with the wrong token, and the master's log of workers
joining and lost and of runs starting and ending.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import yaml
from support.cluster import master_argv, run_master, worker_argv
from support.loadtests import minimal_load_test
from support.ports import address, free_port
from support.procs import ManagedProcess, python_env, run_chaperon, running, wait_for_health

from chaperon.client import Client
from chaperon.rpc.status import field_violations

TIMEOUT_S = 60.0
NO_MASTER = "(start one with: chaperon master, or use chaperon run FILE for a local run)"


def chaperon(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_chaperon(*args, cwd=cwd, timeout_s=TIMEOUT_S)


def stderr_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return done.stderr.strip().splitlines()


MISSPELT_FIELD = """\
name: smoke
config: {base_url: "http://127.0.0.1:9"}
scenarios:
  - concurency: 5
    duration: 5s
    scenario: {name: root, run: [{http: {method: GET, path: /}}]}
"""
DURATION_WITHOUT_UNIT = """\
name: smoke
config: {base_url: "http://127.0.0.1:9"}
scenarios:
  - concurrency: 5
    scenario: {name: root, run: [{http: {method: GET, path: /}}]}
    duration: 5
"""
MISSPELT_CONFIG_KEY = """\
name: smoke
config:
  base_url: "http://127.0.0.1:9"
  request_timout: 5s
scenarios:
  - concurrency: 1
    duration: 1s
    scenario: {name: root, run: [{http: {method: GET, path: /}}]}
"""
RUN = '"scenario": {"name": "root", "run": [{"http": {"method": "GET", "path": "/"}}]}'
MISSPELT_FIELD_JSON = f"""\
{{"name": "smoke",
 "config": {{"base_url": "http://127.0.0.1:9"}},
 "scenarios": [
  {{"concurency": 5, "duration": "5s",
   {RUN}}}]}}
"""
DURATION_WITHOUT_UNIT_JSON = f"""\
{{"name": "smoke",
 "config": {{"base_url": "http://127.0.0.1:9"}},
 "scenarios": [
  {{"concurrency": 5,
   {RUN},
   "duration": 5}}]}}
"""
MISSPELT_CONFIG_KEY_JSON = f"""\
{{"name": "smoke",
 "config": {{"base_url": "http://127.0.0.1:9",
            "request_timout": "5s"}},
 "scenarios": [{{"concurrency": 1, "duration": "1s", {RUN}}}]}}
"""
UNKNOWN_FIELD = "scenarios[0]: unknown field 'concurency' (did you mean 'concurrency'?)"
NO_UNIT = (
    "scenarios[0].duration: expected a duration string such as '5s' or '1m30s', got the number 5"
)
CONFIG_KEY = "config.request_timout: unknown config key (did you mean 'request_timeout'?)"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("smoke.yaml", MISSPELT_FIELD, f"line 4: {UNKNOWN_FIELD}"),
        ("smoke.json", MISSPELT_FIELD_JSON, f"line 4: {UNKNOWN_FIELD}"),
        ("smoke.yaml", DURATION_WITHOUT_UNIT, f"line 6: {NO_UNIT}"),
        ("smoke.json", DURATION_WITHOUT_UNIT_JSON, f"line 6: {NO_UNIT}"),
        ("smoke.yaml", MISSPELT_CONFIG_KEY, f"line 4: {CONFIG_KEY}"),
        ("smoke.json", MISSPELT_CONFIG_KEY_JSON, f"line 3: {CONFIG_KEY}"),
    ],
)
def test_run_says_what_to_fix_in_a_yaml_or_json_file(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    done = chaperon(tmp_path, "run", name)
    assert done.returncode == 2, done
    assert stderr_lines(done) == [f"chaperon: {name}: {expected}"]
    assert done.stdout == ""


def test_submit_of_a_misspelt_config_key_gets_its_line_and_grpc_the_same_violation(tmp_path):
    (tmp_path / "smoke.yaml").write_text(MISSPELT_CONFIG_KEY)
    with run_master(tmp_path / "m") as master:
        done = chaperon(tmp_path, "submit", "smoke.yaml", "--master", master.address)
        assert done.returncode == 2, done
        assert stderr_lines(done) == [
            "chaperon: smoke.yaml: line 4: config.request_timout: unknown config key"
            " (did you mean 'request_timeout'?)"
        ]
        # What a grpcurl or stub user gets: INVALID_ARGUMENT with the field in BadRequest.
        from chaperon.core.files import load_file

        with Client(master.address) as client:
            with pytest.raises(grpc.RpcError) as info:
                client.submit(load_file(str(tmp_path / "smoke.yaml")))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(info.value) == [
            ("config.request_timout", "unknown config key (did you mean 'request_timeout'?)")
        ]


CLIENT_COMMANDS = [
    ["submit", "ok.yaml"],
    ["submit", "ok.yaml", "--wait"],
    ["status"],
    ["status", "run-1"],
    ["workers"],
    ["watch", "run-1"],
    ["report", "run-1"],
    ["cancel", "run-1"],
    ["delete", "run-1"],
]


def test_every_client_command_says_no_master_answers_and_how_to_start_one(tmp_path):
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(minimal_load_test("http://127.0.0.1:9")))
    port = free_port()
    for command in CLIENT_COMMANDS:
        done = chaperon(tmp_path, *command, "--master", f"127.0.0.1:{port}")
        assert done.returncode == 2, (command, done)
        assert stderr_lines(done) == [
            f"chaperon: no master answers at 127.0.0.1:{port} {NO_MASTER}"
        ], command


def _wait_for_line(process: ManagedProcess, pattern: str, timeout_s: float, path: Path) -> str:
    """The first line of ``path`` matching ``pattern``, polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    regex = re.compile(pattern)
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in text.splitlines():
            if regex.search(line):
                return line
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"no line matching {pattern!r} within {timeout_s}s\n{process.describe()}"
            )
        time.sleep(0.05)


def test_a_worker_before_its_master_says_so_then_the_master_tells_of_joins_runs_and_losses(
    tmp_path, nginx
):
    master_port = free_port()
    master_address = address(master_port)
    worker_port = free_port()
    worker = ManagedProcess(
        "worker",
        worker_argv(master_address, worker_port, 1),
        tmp_path,
        env=python_env(),
        cwd=tmp_path,
    )
    with running(worker):
        # Without -v: a WARNING within 5 s of the worker being up.
        _wait_for_line(worker, r"listening on", 30.0, worker.stderr_path)
        up = time.monotonic()
        line = _wait_for_line(worker, r"WARNING", 5.0, worker.stderr_path)
        assert time.monotonic() - up < 5.0
        assert (
            f"cannot reach the master at {master_address} yet (UNAVAILABLE: " in line
            and line.endswith("); retrying")
        ), line

        master = ManagedProcess(
            "master",
            [*master_argv(master_port, tmp_path / "m.db"), "--worker-wait", "10"],
            tmp_path,
            env=python_env(),
            cwd=tmp_path,
        )
        with running(master, lambda p: wait_for_health(master_address, 30.0, process=p)):
            registered = _wait_for_line(
                worker, r"registered with the master", 30.0, worker.stderr_path
            )
            match = re.search(
                rf"INFO .*registered with the master at {re.escape(master_address)} as (\S+)"
                r" after \d+s$",
                registered,
            )
            assert match is not None, registered
            worker_id = match.group(1)
            joined = _wait_for_line(master, r"joined from", 10.0, master.stderr_path)
            assert joined.endswith(
                f"INFO master_service.registry: worker {worker_id} joined from"
                f" 127.0.0.1:{worker_port} (1 thread)"
            ), joined

            load_test = tmp_path / "ok.yaml"
            load_test.write_text(
                yaml.safe_dump(minimal_load_test(nginx.base_url, concurrency=2, duration="1s"))
            )
            done = chaperon(
                tmp_path, "submit", str(load_test), "--wait", "--master", master_address
            )
            assert done.returncode == 0, done
            started = _wait_for_line(master, r"started: ", 10.0, master.stderr_path)
            assert re.search(r"INFO .*: run (run-\w+) started: smoke on 1 worker$", started)
            run_id = started.split("run ", 1)[1].split(" ", 1)[0]
            ended = _wait_for_line(master, rf"run {run_id} SUCCEEDED", 10.0, master.stderr_path)
            assert re.search(
                rf"INFO .*: run {run_id} SUCCEEDED in \d+\.\ds: \d+ requests, 0 errors$", ended
            ), ended

            worker.stop()
            lost = _wait_for_line(master, r" lost: ", 15.0, master.stderr_path)
            assert re.search(
                rf"WARNING .*: worker {worker_id} lost: no heartbeat for \d+s$", lost
            ), lost


def test_a_worker_the_master_refuses_says_so_once(tmp_path):
    with run_master(tmp_path / "m", extra_args=["--token", "right"]) as master:
        worker = ManagedProcess(
            "worker",
            [*worker_argv(master.address, free_port(), 1), "--token", "wrong"],
            tmp_path,
            env=python_env(),
            cwd=tmp_path,
        )
        with running(worker):
            line = _wait_for_line(worker, r"ERROR", 15.0, worker.stderr_path)
            refused = f"the master at {master.address} refused this worker (PERMISSION_DENIED: "
            assert refused in line, line
            assert "--token" in line
            # It goes on trying (about five more times in 3 s), quietly.
            time.sleep(3.0)
            text = worker.stderr_path.read_text()
            assert text.count("refused this worker") == 1, text
            assert "cannot reach" not in text, text
