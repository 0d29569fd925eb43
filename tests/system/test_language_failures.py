"""Failure paths of the session language, through real processes, against a counting server.

Each case is a small run of two entries: one whose sessions meet a failing step, one of
healthy sessions beside it. A failing step is counted as an error of its kind on its own
metric key (``extract``, ``timeout``, ``abort``, ``protocol``, ``python``) and ends its
session (``sessions_failed``): the server never sees the steps after it nor the session's
later iterations, while the healthy sessions run to the end and the run ends by itself,
SUCCEEDED. Most cases go through a master and two workers; python steps through
``chaperon run`` (which allows them), and a worker started without ``--allow-python-steps``
refuses them up front, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.lang_runs import (
    assert_succeeded,
    chaperon_run,
    errors_by_key,
    run_on,
    state_name,
    write_load_test,
)
from support.lang_scenarios import http
from support.loadtests import metric, to_proto
from support.servers import LangServer

FAILING_SESSIONS = 4
HEALTHY_SESSIONS = 2
ITERATIONS = 3
# Every wait below is at most 200 ms: a run that ends by itself ends well within this.
MAX_RUN_S = 3.0


def load_test(base_url: str, run_steps: list[dict[str, Any]]) -> dict[str, Any]:
    """``run_steps`` for FAILING_SESSIONS sessions, and healthy sessions beside them."""
    return {
        "name": "failure",
        "config": {"base_url": base_url, "request_timeout": "2s"},
        "timeout": "30s",
        "scenarios": [
            {
                "concurrency": FAILING_SESSIONS,
                "iterations": ITERATIONS,
                "scenario": {"name": "failing", "run": run_steps},
            },
            {
                "concurrency": HEALTHY_SESSIONS,
                "iterations": ITERATIONS,
                "scenario": {"name": "healthy", "run": [http("GET", "/items/healthy")]},
            },
        ],
    }


def assert_failed_sessions_and_run_went_on(run: Any, failed: int) -> None:
    assert_succeeded(run)
    result = run.result
    sessions = FAILING_SESSIONS + HEALTHY_SESSIONS
    # Every session ended (none hangs), the failing ones early; no run of a scenario was cut
    # by a timeout and no session was lost.
    assert (result.sessions_started, result.sessions_completed) == (sessions, sessions)
    assert result.sessions_failed == failed
    assert (result.sessions_timed_out, result.sessions_lost) == (0, 0)
    assert result.duration_s < MAX_RUN_S
    assert metric(run, "GET /items/healthy").count == HEALTHY_SESSIONS * ITERATIONS


@dataclass
class Case:
    """A failing scenario: its steps, the error it must report, what the server must see."""

    steps: list[dict[str, Any]]
    key: str  # the metric of the failing step
    kind: str  # its error kind
    items: dict[str, int]  # items_by_id from the failing sessions
    counted: int  # responses counted on `key` (a failed extraction still got its answer)
    server: dict[str, int] = field(default_factory=dict)  # more exact server counts


N = FAILING_SESSIONS
OPTIONAL = {"optional": True}
NEVER = http("GET", "/items/never")  # a step after the failure: must never reach the server

CASES = {
    "extract-finds-nothing": Case(
        steps=[
            # An optional extraction that finds nothing is no error.
            http(
                "GET", "/items/first", extract=[{"var": "o", "json_path": "$.x", "optional": True}]
            ),
            http("GET", "/items/second", extract=[{"var": "v", "json_path": "$.missing"}]),
            http("GET", "/items/never-{{v}}"),
        ],
        key="GET /items/second",
        kind="extract",
        items={"first": N, "second": N},
        counted=N,
    ),
    "variable-deleted": Case(
        steps=[
            {"assign": {"values": {"v": "set"}}},
            http("GET", "/items/{{v}}"),
            {"delete_assign": {"names": ["v"]}},
            http("GET", "/items/again-{{v}}", metric="again"),
            NEVER,
        ],
        key="again",
        kind="extract",
        items={"set": N},
        counted=0,
    ),
    "ws-await-recv-timeout": Case(
        steps=[
            {"ws_connect": {"path": "/ws/silent"}},
            {"ws_send": {"text": "ping"}},
            {"ws_await_recv": {"expected": "never", "timeout": "200ms"}},
            NEVER,
        ],
        key="WS await_recv default",
        kind="timeout",
        items={},
        counted=0,
        # The session's end closes its WebSocket: the server sees every connection end.
        server={"ws_connect": N, "ws_text": N, "ws_sent": 0, "ws_close": N, "ws_drop": 0},
    ),
    "signal-never-sent": Case(
        steps=[
            http("GET", "/items/waiting"),
            {"await_signal": {"value": "never-sent", "timeout": "150ms"}},
            NEVER,
        ],
        key="await_signal never-sent",
        kind="timeout",
        items={"waiting": N},
        counted=0,
    ),
    "await-child-timeout": Case(
        steps=[
            {
                "async": {
                    "name": "slow",
                    "steps": [http("GET", "/slow?ms=300"), http("GET", "/items/child-after")],
                }
            },
            http("GET", "/items/parent"),
            {"await": {"name": "slow", "timeout": "100ms"}},
            NEVER,
        ],
        key="await slow",
        kind="timeout",
        # The child outlives its failed parent and ends by itself; the run waits for it.
        items={"parent": N, "child-after": N},
        counted=0,
        server={"slow": N, "slow_done": N},
    ),
    "abort": Case(
        steps=[
            http("GET", "/items/before"),
            {"abort": {"reason": "enough", "metric": "gave up"}},
            NEVER,
        ],
        key="gave up",
        kind="abort",
        items={"before": N},
        counted=0,
    ),
    "ws-handshake-refused": Case(
        steps=[{"ws_connect": {"path": "/items/handshake"}}, NEVER],  # 200, not 101
        key="WS connect /items/handshake",
        kind="protocol",
        items={"handshake": N},
        counted=0,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_failing_step_ends_its_session_and_the_run_goes_on(
    master_stub: Any, workers: Any, lang_server: LangServer, case: Case
) -> None:
    run = run_on(master_stub, load_test(lang_server.base_url, case.steps))

    assert_failed_sessions_and_run_went_on(run, failed=FAILING_SESSIONS)
    assert errors_by_key(run) == {case.key: {case.kind: FAILING_SESSIONS}}
    assert metric(run, case.key).count == case.counted
    counts = lang_server.wait_for(lambda c: c["ws_close"] + c["ws_drop"] >= c["ws_connect"])
    # Only the first iteration of a failing session ran, and only up to the failing step.
    assert counts["items_by_id"] == {**case.items, "healthy": HEALTHY_SESSIONS * ITERATIONS}
    assert {key: counts[key] for key in case.server} == case.server


def test_retry_on_error_that_runs_out_of_retries_goes_on(
    master_stub: Any, workers: Any, lang_server: LangServer
) -> None:
    """Not a session failure: the body's last attempt failed, the session carries on."""
    steps = [
        {
            "retry_on_error": {
                "retries": 2,
                "backoff": "5ms",
                "steps": [http("GET", "/items/try"), http("GET", "/status/503")],
            }
        },
        http("GET", "/items/after"),
    ]
    run = run_on(master_stub, load_test(lang_server.base_url, steps))

    assert_failed_sessions_and_run_went_on(run, failed=0)
    runs = FAILING_SESSIONS * ITERATIONS
    assert errors_by_key(run) == {"GET /status/503": {"http_5xx": 3 * runs}}
    counts = lang_server.counts()
    assert counts["status_by_code"] == {"503": 3 * runs}  # the first try and two retries
    assert counts["items_by_id"] == {
        "try": 3 * runs,
        "after": runs,
        "healthy": HEALTHY_SESSIONS * ITERATIONS,
    }


PYTHON_STEPS = """\
def tag(session):
    return {"tag": "py-" + session["iteration"]}


def boom(session):
    raise RuntimeError("boom from a python step")
"""


def test_python_step_that_raises_ends_its_session(lang_server: LangServer, tmp_path: Path) -> None:
    (tmp_path / "lang_fail_steps.py").write_text(PYTHON_STEPS)
    steps = [
        {"python": {"function": "lang_fail_steps:tag"}},
        http("GET", "/items/{{tag}}"),
        {"python": {"function": "lang_fail_steps:boom"}},
        NEVER,
    ]
    path = write_load_test(tmp_path / "python_fails.json", load_test(lang_server.base_url, steps))

    run = chaperon_run(path)

    assert_failed_sessions_and_run_went_on(run, failed=FAILING_SESSIONS)
    assert errors_by_key(run) == {"python lang_fail_steps:boom": {"python": FAILING_SESSIONS}}
    assert metric(run, "python lang_fail_steps:tag").count == FAILING_SESSIONS
    assert lang_server.counts()["items_by_id"] == {
        "py-0": FAILING_SESSIONS,
        "healthy": HEALTHY_SESSIONS * ITERATIONS,
    }


PYTHON_FIELD = "scenarios[0].scenario.run[1].python.function"


def test_worker_without_allow_python_steps_refuses_them_naming_the_field(
    master_stub: Any, workers: Any, lang_server: LangServer
) -> None:
    from chaperon.v1 import worker_pb2, worker_pb2_grpc

    steps = [
        http("GET", "/items/before"),
        {"python": {"function": "os:getcwd"}},
        NEVER,
    ]
    lt = load_test(lang_server.base_url, steps)

    # The worker itself: PERMISSION_DENIED before anything runs.
    assignment = worker_pb2.Assignment(
        run_id="run-python",
        assignment_id="assignment-python",
        load_test=to_proto(lt),
        shares=[worker_pb2.EntryShare(entry_index=0, sessions=1)],
    )
    with grpc.insecure_channel(workers[0].address) as channel:
        stub = worker_pb2_grpc.WorkerStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.RunAssignment(assignment, timeout=30))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
    details = refused.value.details() or ""
    assert PYTHON_FIELD in details and "--allow-python-steps" in details, details

    # Through the master: the run fails and says why, naming the field.
    run = run_on(master_stub, lt)
    assert state_name(run) == "FAILED", (state_name(run), run.error)
    assert PYTHON_FIELD in run.error and "--allow-python-steps" in run.error, run.error
    assert lang_server.counts()["requests"] == 0  # no session started anywhere
    # Refused is not lost: the worker answered and said why.
    assert list(run.result.lost_workers) == [] and run.result.sessions_lost == 0
