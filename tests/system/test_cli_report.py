"""``chaperon run`` as a person at a terminal uses it: the URL one-liner, the exit status, and
the report (rows in the order of the steps, the width, thresholds).

Each command is a real process (the embedded master and worker inside it) against a real
target on loopback: nginx (``/`` answers 200, ``/status/<code>`` that code) or the
session-language server, which counts what it receives. Runs are short (1 s, or a few
iterations) and every process has a timeout.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.loadtests import metric, minimal_load_test
from support.ports import free_port
from support.procs import chaperon_command, python_env, run_chaperon

from chaperon.v1.results_pb2 import SUCCEEDED

TIMEOUT_S = 90.0
FAST_TIMEOUT_S = 30.0  # refused before anything starts


def chaperon(
    cwd: Path, *args: str, columns: int | None = None, timeout_s: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    env = python_env()
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return run_chaperon(*args, cwd=cwd, timeout_s=timeout_s, env=env)


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def parse_run(stdout: str) -> Any:
    from google.protobuf import json_format

    from chaperon.v1 import results_pb2

    return json_format.Parse(stdout, results_pb2.LoadTestRun())


def table_keys(report: str) -> list[str]:
    """The first cell of each row of the report's table, header and rules left out."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("metric "))
    keys = []
    for line in lines[start + 1 :]:
        if line.strip().startswith("total "):
            return keys
        if not set(line.strip()) <= {"-", " "}:
            keys.append(line.strip().split("  ")[0])
    raise AssertionError(f"no total row in\n{report}")


def write(tmp_path: Path, load_test: dict[str, Any], name: str = "test.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(load_test))
    return path


# -- the one-liner -----------------------------------------------------------------------------


def test_a_url_runs_as_hey_and_wrk_do(nginx, tmp_path):
    done = chaperon(tmp_path, "run", nginx.base_url + "/", "-c", "3", "-d", "1s", "--threads", "1")

    assert done.returncode == 0, output(done)
    assert "Traceback" not in done.stderr, output(done)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(nginx.base_url.removeprefix("http://")), output(done)
    assert "SUCCEEDED" in lines[0]
    assert table_keys(done.stdout) == ["GET /"]
    header = next(line for line in lines if line.strip().startswith("metric "))
    assert header.split() == [
        "metric", "count", "errors", "err%", "req/s", "mean", "p50", "p90", "p95", "p99", "max",
    ]  # fmt: skip
    assert any(line.strip().startswith("total ") for line in lines)
    # Not a terminal: 100 columns.
    assert max(len(line) for line in lines) <= 100, output(done)

    as_json = chaperon(tmp_path, "run", nginx.base_url + "/", "-d", "1s", "--json")
    assert as_json.returncode == 0, output(as_json)
    run = parse_run(as_json.stdout)
    (entry,) = run.load_test.scenarios
    assert entry.concurrency == 10 and entry.duration == "1s"  # -c 10 by default
    served = metric(run, "GET /").count
    assert served > 0 and nginx.wait_for_served(served) >= served


def test_method_headers_and_body(lang_server, tmp_path):
    url = lang_server.url("/me")
    done = chaperon(
        tmp_path, "run", url, "-c", "2", "-d", "1s", "-H", "Authorization: Bearer tok-u1", "--json"
    )
    assert done.returncode == 0, output(done)
    count = metric(parse_run(done.stdout), "GET /me").count
    counts = lang_server.counts()
    assert counts["me_ok"] == count > 0 and counts["me_unauthorized"] == 0, counts

    lang_server.reset()
    done = chaperon(
        tmp_path,
        "run",
        lang_server.url("/echo"),
        "-m",
        "post",
        "--body",
        "hello",
        "-c",
        "2",
        "-d",
        "1s",
        "--json",
    )
    assert done.returncode == 0, output(done)
    count = metric(parse_run(done.stdout), "POST /echo").count
    counts = lang_server.counts()
    assert counts["echo"] == count > 0 and counts["echo_bytes"] == 5 * count, counts


def test_rate_runs_the_open_model(nginx, tmp_path):
    done = chaperon(tmp_path, "run", nginx.base_url + "/", "--rate", "40", "-d", "1s", "--json")

    assert done.returncode == 0, output(done)
    run = parse_run(done.stdout)
    (entry,) = run.load_test.scenarios
    assert entry.arrival_rate.per_second == 40 and entry.duration == "1s"
    got = metric(run, "GET /")
    assert 36 <= got.count <= 44, got.count  # 40 arrivals, one request each
    assert got.service_time.count == got.count  # corrected latency, and service time beside


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(["-d", "10"], "-d 10: cannot parse duration '10'", id="no-unit"),
        pytest.param(["-d", "0s"], "more than 0", id="zero-duration"),
        pytest.param(["-c", "0"], "-c 0", id="no-sessions"),
        pytest.param(["--rate", "0"], "--rate 0", id="zero-rate"),
        pytest.param(["-m", "FETCH"], "not an HTTP method", id="method"),
        pytest.param(["-H", "no colon"], "'Name: value'", id="header"),
        pytest.param(["--max-error-rate", "2"], "not a fraction from 0 to 1", id="error-rate"),
    ],
)
def test_a_bad_one_liner_is_refused_in_one_line(tmp_path, args, says):
    done = chaperon(tmp_path, "run", "http://127.0.0.1:9/", *args, timeout_s=FAST_TIMEOUT_S)

    assert done.returncode == 2, output(done)
    assert says in done.stderr and "Traceback" not in done.stderr, output(done)
    assert done.stdout == ""


def test_url_options_with_a_file_and_other_schemes_are_refused(tmp_path):
    path = write(tmp_path, minimal_load_test("http://127.0.0.1:9"))
    done = chaperon(tmp_path, "run", str(path), "-c", "5", timeout_s=FAST_TIMEOUT_S)
    assert done.returncode == 2 and "-c: only with a URL" in done.stderr, output(done)

    done = chaperon(tmp_path, "run", "ftp://127.0.0.1/", timeout_s=FAST_TIMEOUT_S)
    assert done.returncode == 2 and "only http:// and https://" in done.stderr, output(done)


# -- exit status -------------------------------------------------------------------------------


def test_a_target_where_every_request_fails_fails_the_run(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens: every connect is refused

    done = chaperon(tmp_path, "run", dead, "-c", "2", "-d", "1s", "--threads", "1")

    assert done.returncode == 1, output(done)
    title, note = done.stdout.splitlines()[:2]
    assert "FAILED" in title
    assert note.startswith("  note: every request failed (") and "connect=" in note, output(done)
    # Nothing was answered: no latency to show.
    row = next(line for line in done.stdout.splitlines() if line.strip().startswith("GET /"))
    assert row.split()[-6:] == ["-"] * 6 and "0us" not in done.stdout, output(done)

    # A run that FAILED fails whatever errors are allowed.
    tolerant = chaperon(tmp_path, "run", dead, "-d", "1s", "--max-error-rate", "1", "--json")
    assert tolerant.returncode == 1, output(tolerant)
    assert "every request failed" in parse_run(tolerant.stdout).error


def test_errors_fail_the_run_unless_max_error_rate_allows_them(nginx, tmp_path):
    # Half the requests answer 404: the run SUCCEEDED, but with errors.
    load_test = minimal_load_test(nginx.base_url, concurrency=2, duration=None, iterations=10)
    load_test["scenarios"][0]["scenario"]["run"] = [
        {"http": {"method": "GET", "path": "/status/404"}},
        {"http": {"method": "GET", "path": "/"}},
    ]
    path = write(tmp_path, load_test)

    done = chaperon(tmp_path, "run", str(path), "--threads", "1")
    assert done.returncode == 1, output(done)
    assert "SUCCEEDED" in done.stdout.splitlines()[0]
    assert done.stdout.splitlines()[-1] == (
        "  FAILED: 20 errors in 40 requests (50.0%), above --max-error-rate 0 (0%)"
    ), output(done)
    # The order of the steps, not of the names ("GET /" sorts first).
    assert table_keys(done.stdout) == ["GET /status/404", "GET /"]

    for allowed, code in (("1", 0), ("0.5", 0), ("0.49", 1)):
        done = chaperon(tmp_path, "run", str(path), "--max-error-rate", allowed, "--json")
        assert done.returncode == code, (allowed, output(done))
        assert parse_run(done.stdout).state == SUCCEEDED
        assert ("above --max-error-rate" in done.stderr) == (code == 1), output(done)


def test_a_threshold_on_a_missing_key_says_no_such_metric(nginx, tmp_path):
    load_test = minimal_load_test(nginx.base_url, concurrency=1, duration=None, iterations=5)
    load_test["thresholds"] = [
        {"metric": "GET /", "stat": "p99", "max": 5000},
        {"metric": "GET /nope", "stat": "p95", "max": 100},
    ]
    done = chaperon(tmp_path, "run", str(write(tmp_path, load_test)), "--threads", "1")

    assert done.returncode == 1, output(done)
    lines = done.stdout.splitlines()
    assert "FAILED" in lines[0] and "thresholds failed" in done.stdout
    passed = next(line for line in lines if "threshold GET / p99" in line)
    assert passed.startswith("  threshold GET / p99 <= 5000ms: ") and passed.endswith(
        "ms passed"
    ), passed
    assert (
        "  threshold GET /nope p95 <= 100ms: FAILED, no such metric (did you mean 'GET /'?)"
        in lines
    ), output(done)
    assert "inf" not in done.stdout


# -- the report's width and a closed pipe ------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 100, 160])
def test_the_report_fits_the_terminal(nginx, tmp_path, columns):
    long_path = "/status/200?" + "&".join(f"param_{i}=value_{i}" for i in range(3))  # 59
    load_test = minimal_load_test(nginx.base_url, concurrency=2, duration=None, iterations=20)
    load_test["scenarios"][0]["scenario"]["run"].append(
        {"http": {"method": "GET", "path": long_path}}
    )
    path = write(tmp_path, load_test)

    done = chaperon(tmp_path, "run", str(path), "--threads", "1", columns=columns)

    assert done.returncode == 0, output(done)
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns, output(done)
    header = next(line for line in lines if line.strip().startswith("metric ")).split()
    assert "p95" in header and "err%" in header
    assert ("mean" in header) == (columns >= 100)
    keys = table_keys(done.stdout)
    assert keys[0] == "GET /"
    whole = f"GET {long_path}"
    if columns >= 160:
        assert keys[1] == whole
    else:  # shortened in the middle
        head, tail = keys[1].split("…")
        assert whole.startswith(head) and whole.endswith(tail), keys


def test_a_closed_pipe_prints_no_traceback(nginx, tmp_path):
    with subprocess.Popen(
        [*chaperon_command(), "run", nginx.base_url + "/", "-c", "1", "-d", "1s"],
        cwd=tmp_path,
        env=python_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader goes away before the report is printed
        try:
            stderr = proc.stderr.read()
            code = proc.wait(TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_help_documents_the_exit_status(tmp_path):
    for args in (["--help"], ["run", "--help"]):
        done = chaperon(tmp_path, *args, timeout_s=FAST_TIMEOUT_S)
        assert done.returncode == 0, output(done)
        text = " ".join(done.stdout.split())
        assert "exit status:" in text
        for code in ("0 the run passed", "1 the run failed", "2 bad usage or input", "130"):
            assert code in text, (code, text)
