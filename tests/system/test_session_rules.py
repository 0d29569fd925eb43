"""Per-session rules through master and workers: init and teardown steps, initial delays and
scenario_timeout, checked against what real servers saw."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from support.loadtests import metric, to_proto


def _run(master_stub, load_test: dict):
    from chaperon.v1 import master_pb2

    return master_stub.RunLoadTest(
        master_pb2.SubmitLoadTestRequest(load_test=to_proto(load_test)), timeout=60
    )


def test_init_once_run_measured_teardown_once_unmeasured(master_stub, workers, nginx) -> None:
    from chaperon.v1 import results_pb2

    load_test = {
        "name": "rules",
        "config": {"base_url": nginx.base_url},
        "scenarios": [
            {
                "concurrency": 4,
                "iterations": 5,
                "delay": "50ms",
                "random_delay": "100ms",
                "scenario": {
                    "init": [{"http": {"method": "GET", "path": "/status/201"}}],
                    "run": [{"http": {"method": "GET", "path": "/"}}],
                    "teardown": [{"http": {"method": "GET", "path": "/status/202"}}],
                },
            }
        ],
    }
    run = _run(master_stub, load_test)
    assert run.state == results_pb2.SUCCEEDED, run.error
    assert metric(run, "GET /status/201").count == 4
    assert metric(run, "GET /").count == 20
    assert "GET /status/202" not in [m.key for m in run.result.metrics]  # not measured
    nginx.wait_for_served(28)
    served = Counter(line.split()[2] for line in nginx.log_lines())
    assert served == {"/status/201": 4, "/": 20, "/status/202": 4}


@contextmanager
def demo_target() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaperon._target", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        yield "http://" + line.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_scenario_timeout_ends_slow_runs_and_counts_them(master_stub, workers) -> None:
    from chaperon.v1 import results_pb2

    with demo_target() as base_url:
        run = _run(
            master_stub,
            {
                "name": "slow",
                "config": {"base_url": base_url},
                "scenarios": [
                    {
                        "concurrency": 2,
                        "iterations": 3,
                        "scenario_timeout": "100ms",
                        "scenario": {"run": [{"http": {"method": "GET", "path": "/delay/400"}}]},
                    }
                ],
            },
        )
    # Every run of the scenario overran: nothing completed, so the run failed, saying why.
    assert run.state == results_pb2.FAILED, run.error
    assert run.error == (
        "no request completed: every run of the scenario overran its timeout (6 timed out)"
    )
    assert run.result.sessions_timed_out == 6
    assert run.result.sessions_completed == 2
    assert all(m.count == 0 and m.errors == 0 for m in run.result.metrics)
    assert run.result.duration_s < 3


def test_repeat_loop_and_random_delay_through_the_cluster(master_stub, workers, nginx) -> None:
    from chaperon.v1 import results_pb2

    get_root = {"http": {"method": "GET", "path": "/"}}
    get_201 = {"http": {"method": "GET", "path": "/status/201"}}
    load_test = {
        "name": "control",
        "config": {"base_url": nginx.base_url},
        "scenarios": [
            {
                "concurrency": 2,
                "iterations": 2,
                "scenario": {
                    "run": [
                        {
                            "name": "outer",
                            "repeat": {
                                "count": 3,
                                "traced": True,
                                "steps": [get_root, {"repeat": {"count": 2, "steps": [get_201]}}],
                            },
                        },
                        {"random_delay": {"min": "1ms", "max": "5ms"}},
                        {"loop": {"duration": "100ms", "steps": [{"delay": {"duration": "40ms"}}]}},
                    ]
                },
            }
        ],
    }
    run = _run(master_stub, load_test)
    assert run.state == results_pb2.SUCCEEDED, run.error
    assert metric(run, "GET /").count == 12  # 2 sessions x 2 iterations x 3
    assert metric(run, "GET /status/201").count == 24
    assert metric(run, "outer").count == 12  # one traced value per iteration of the repeat
    nginx.wait_for_served(36)
    served = Counter(line.split()[2] for line in nginx.log_lines())
    assert served == {"/": 12, "/status/201": 24}
