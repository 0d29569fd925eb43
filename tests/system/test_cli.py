"""The ``chaperon`` command line as a user runs it: ``run``, ``demo``, and ``master`` signals.

Each command runs as a real process from the test's temp dir (so default output files land
there), with stdin closed and a generous timeout.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from support.cluster import master_argv
from support.loadtests import assert_hdr_matches, metric, minimal_load_test
from support.ports import address, free_port
from support.procs import (
    ManagedProcess,
    python_env,
    run_chaperon,
    running,
    wait_for_health,
)

RUN_TIMEOUT_S = 90.0


def chaperon(cwd: Path, *args: str, timeout_s: float = RUN_TIMEOUT_S):
    return run_chaperon(*args, cwd=cwd, timeout_s=timeout_s)


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def parse_run(stdout: str):
    from google.protobuf import json_format

    from chaperon.v1 import results_pb2

    return json_format.Parse(stdout, results_pb2.LoadTestRun())


def assert_succeeded(run) -> None:
    from chaperon.v1 import results_pb2

    assert run.state == results_pb2.SUCCEEDED, (results_pb2.RunState.Name(run.state), run.error)


def test_run_json_file_prints_the_run_as_json(nginx, tmp_path):
    test_file = tmp_path / "smoke.json"
    test_file.write_text(json.dumps(minimal_load_test(nginx.base_url, concurrency=10)))

    done = chaperon(tmp_path, "run", str(test_file), "--json", "--threads", "1")

    assert done.returncode == 0, output(done)
    run = parse_run(done.stdout)  # stdout is the JSON and nothing else
    assert_succeeded(run)
    get_root = metric(run, "GET /")
    assert get_root.count > 1000
    assert get_root.errors == 0, dict(get_root.errors_by_kind)
    assert nginx.wait_for_served(get_root.count) == get_root.count
    assert_hdr_matches(get_root)


def test_run_yaml_file(nginx, tmp_path):
    test_file = tmp_path / "smoke.yaml"
    load_test = minimal_load_test(nginx.base_url, concurrency=4, duration=None, iterations=25)
    test_file.write_text(yaml.safe_dump(load_test))

    done = chaperon(tmp_path, "run", str(test_file), "--json")

    assert done.returncode == 0, output(done)
    run = parse_run(done.stdout)
    assert_succeeded(run)
    assert metric(run, "GET /").count == 100
    assert nginx.wait_for_served(100) == 100


def test_run_prints_a_report(nginx, tmp_path):
    test_file = tmp_path / "smoke.json"
    test_file.write_text(json.dumps(minimal_load_test(nginx.base_url, duration="2s")))

    done = chaperon(tmp_path, "run", str(test_file))

    assert done.returncode == 0, output(done)
    assert "GET /" in done.stdout, output(done)
    assert "p99" in done.stdout, output(done)
    assert "Traceback" not in done.stderr, output(done)


@pytest.mark.parametrize("fmt", ["csv", "json", "html"])
def test_run_format_writes_the_result_and_its_load_test_beside(nginx, tmp_path, fmt):
    test_file = tmp_path / "smoke.json"
    load_test = minimal_load_test(nginx.base_url, concurrency=2, duration=None, iterations=5)
    test_file.write_text(json.dumps(load_test))

    done = chaperon(tmp_path, "run", str(test_file), "--format", fmt, "--threads", "1")

    assert done.returncode == 0, output(done)
    assert "GET /" in done.stdout and "p99" in done.stdout, output(done)  # the report still
    # results/<date>/<load test>/<tag>-<timestamp>.<ext>, with <stem>.load_test.json beside.
    files = sorted((tmp_path / "results").glob("*/smoke/*"))
    (written,) = [f for f in files if not f.name.endswith(".load_test.json")]
    assert written.suffix == f".{fmt}", files
    beside = written.with_name(written.stem + ".load_test.json")
    assert beside.exists(), sorted((tmp_path / "results").rglob("*"))
    assert f"wrote {written.relative_to(tmp_path)}" in done.stderr, output(done)
    assert json.loads(beside.read_text())["name"] == "smoke"
    text = written.read_text(encoding="utf-8")
    assert "GET /" in text
    if fmt == "html":
        assert text.startswith("<!DOCTYPE html>") and "<svg" in text
        assert "<script" not in text


def test_run_output_with_html_format(nginx, tmp_path):
    test_file = tmp_path / "smoke.json"
    load_test = minimal_load_test(nginx.base_url, concurrency=2, duration=None, iterations=5)
    test_file.write_text(json.dumps(load_test))
    out = tmp_path / "report.html"

    done = chaperon(tmp_path, "run", str(test_file), "--format", "html", "--output", str(out))

    assert done.returncode == 0, output(done)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # A named output is the one file written: no load test beside it (that is the default
    # path's, in the results tree), so outputs with the same stem never collide.
    assert sorted(p.name for p in tmp_path.glob("report*")) == ["report.html"]
    # Without --format, the output's extension says which (CSV for anything else).
    guessed = tmp_path / "guessed.HTML"
    done = chaperon(tmp_path, "run", str(test_file), "--output", str(guessed))
    assert done.returncode == 0, output(done)
    assert guessed.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_run_unknown_format_is_refused_before_running(tmp_path):
    test_file = tmp_path / "smoke.json"
    test_file.write_text(json.dumps(minimal_load_test("http://127.0.0.1:9")))

    done = chaperon(tmp_path, "run", str(test_file), "--format", "pdf", timeout_s=60)

    assert done.returncode == 2, output(done)
    assert "Traceback" not in done.stderr, output(done)
    assert "invalid choice: 'pdf'" in done.stderr and "'html'" in done.stderr, output(done)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("command", ["run", "report"])
def test_format_choices_in_help(tmp_path, command):
    done = chaperon(tmp_path, command, "--help", timeout_s=60)

    assert done.returncode == 0, output(done)
    assert "{csv,json,html}" in done.stdout, output(done)


BROKEN_JSON = '{"name": "smoke", "scenarios": [\n'
BROKEN_YAML = "name: smoke\nscenarios: [unclosed\n  - {\n"


@pytest.mark.parametrize(
    ("file_name", "content", "mentions"),
    [
        pytest.param("missing.json", None, "missing.json", id="missing"),
        pytest.param("broken.json", BROKEN_JSON, "broken.json", id="broken-json"),
        pytest.param("broken.yaml", BROKEN_YAML, "broken.yaml", id="broken-yaml"),
        pytest.param("zero.json", "zero-concurrency", "concurrency", id="zero-concurrency"),
    ],
)
def test_run_bad_file_says_what_is_wrong_in_one_line(tmp_path, file_name, content, mentions):
    test_file = tmp_path / file_name
    if content == "zero-concurrency":
        content = json.dumps(minimal_load_test("http://127.0.0.1:9", concurrency=0))
    if content is not None:
        test_file.write_text(content)

    done = chaperon(tmp_path, "run", str(test_file), "--json", timeout_s=60)

    assert done.returncode != 0, output(done)
    assert "Traceback" not in done.stdout + done.stderr, output(done)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output(done)
    assert mentions in lines[0], output(done)
    assert done.stdout.strip() == "", output(done)


def test_demo_prints_a_report(tmp_path):
    done = chaperon(tmp_path, "demo", timeout_s=60)

    assert done.returncode == 0, output(done)
    assert "p99" in done.stdout, output(done)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_master_exits_zero_on_signal(tmp_path, signum):
    port = free_port()
    process = ManagedProcess(
        "master",
        master_argv(port, tmp_path / "master.db"),
        tmp_path,
        env=python_env(),
        cwd=tmp_path,
    )

    def ready(proc: ManagedProcess) -> None:
        wait_for_health(address(port), 30.0, process=proc)

    with running(process, ready):
        process.signal(signum)
        returncode = process.wait(timeout_s=15.0)

    assert returncode == 0, process.describe()


@pytest.mark.parametrize("content", [b"not a database " * 400, None])
def test_a_bad_db_is_a_one_line_error(tmp_path: Path, content: bytes | None) -> None:
    db = tmp_path / "master.db"
    if content is None:
        db = tmp_path / "no-such-dir" / "master.db"
    else:
        db.write_bytes(content)
    done = chaperon(tmp_path, "master", "--port", "0", "--db", str(db), timeout_s=30)
    assert done.returncode == 2, output(done)
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"chaperon: cannot use '{db}'"), lines
    assert "Traceback" not in done.stderr
