"""Running load tests for the language system tests, and reading what came back.

Two ways in, both real processes: :func:`chaperon_run` runs ``chaperon run FILE --json``
(master and worker in one process, python steps allowed, the file's directory on
``sys.path``) with a deadline and parses its stdout as a ``LoadTestRun``; :func:`run_on`
calls ``RunLoadTest`` on a master started by the fixtures. :func:`reported_counts` and
:func:`errors_by_key` flatten a result for exact comparisons.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .loadtests import to_proto
from .procs import chaperon_command, python_env

# Upper bound for one `chaperon run` (start, run, stop); runs here take about a second.
RUN_TIMEOUT_S = 120.0
RPC_TIMEOUT_S = 60.0


def write_load_test(path: Path, load_test: dict[str, Any]) -> Path:
    """Write ``load_test`` as JSON or YAML (by ``path``'s suffix); return ``path``."""
    if path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(load_test, sort_keys=False))
    else:
        path.write_text(json.dumps(load_test, indent=1))
    return path


def describe(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def chaperon_run(path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """``chaperon run PATH --json ARGS`` from ``path``'s directory -> the ``LoadTestRun``
    (``env``: more environment variables).

    Fails with the process's output when it exits with an error or prints no JSON run.
    """
    from google.protobuf import json_format

    from chaperon.v1 import results_pb2

    done = subprocess.run(
        [*chaperon_command(), "run", str(path), "--json", *args],
        cwd=path.parent,
        env=python_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.stdout.strip(), describe(done)
    # A python step that raises is logged with its traceback on purpose; anything else is a crash.
    crashed = "Traceback" in done.stderr and "chaperon.engine: python step" not in done.stderr
    assert not crashed, describe(done)
    run = json_format.Parse(done.stdout, results_pb2.LoadTestRun())
    # Exit code 0 is SUCCEEDED without an error (--max-error-rate is 0 by default), anything
    # else a failed run (checked by the caller).
    passed = run.state == results_pb2.SUCCEEDED and not any(m.errors for m in run.result.metrics)
    assert (done.returncode == 0) == passed, describe(done)
    return run


def run_on(master_stub: Any, load_test: dict[str, Any]) -> Any:
    """``RunLoadTest`` on the master: submit and wait for the end (bounded)."""
    from chaperon.v1 import master_pb2

    request = master_pb2.SubmitLoadTestRequest(load_test=to_proto(load_test))
    return master_stub.RunLoadTest(request, timeout=RPC_TIMEOUT_S)


def state_name(run: Any) -> str:
    from chaperon.v1 import results_pb2

    return str(results_pb2.RunState.Name(run.state))


def assert_succeeded(run: Any) -> None:
    assert state_name(run) == "SUCCEEDED", (state_name(run), run.error)
    assert run.error == "", run.error


def reported_counts(run: Any) -> dict[str, int]:
    """``{metric key: count}`` of every metric in the result."""
    return {m.key: m.count for m in run.result.metrics}


def errors_by_key(run: Any) -> dict[str, dict[str, int]]:
    """``{metric key: {error kind: n}}`` of the metrics that have errors."""
    out: dict[str, dict[str, int]] = {}
    for m in run.result.metrics:
        if m.errors or m.errors_by_kind:
            assert m.errors == sum(m.errors_by_kind.values()), (m.key, m.errors, m.errors_by_kind)
            out[m.key] = dict(m.errors_by_kind)
    return out
