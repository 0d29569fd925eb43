"""The plan compiler: steps -> pre-rendered request bytes, metric keys, engine arguments."""

from __future__ import annotations

import json
from typing import Any

import pytest

from _fastpath.engine import OP_DELAY, OP_HTTP
from chaperon.core.errors import InvalidArgument
from chaperon.core.loadtest import load_test_from_dict
from chaperon.v1 import loadtest_pb2, worker_pb2
from worker_service.plan import compile_assignment


def _assignment(run: list[dict[str, Any]], **entry: Any) -> worker_pb2.Assignment:
    lt = load_test_from_dict(
        {
            "name": "t",
            "config": {"base_url": "http://127.0.0.1:8080/api", "request_timeout": "2s"},
            "scenarios": [{"concurrency": 3, "scenario": {"name": "s", "run": run}, **entry}],
        }
    )
    return worker_pb2.Assignment(
        assignment_id="a", load_test=lt, shares=[worker_pb2.EntryShare(entry_index=0, sessions=3)]
    )


def test_get_is_rendered_once_with_host_and_no_body() -> None:
    (plan,) = compile_assignment(_assignment([{"http": {"method": "get", "path": "/users/1"}}]))
    ((op, target, key, request, no_body),) = plan.ops
    assert op == OP_HTTP and not no_body
    assert plan.targets[target] == ("127.0.0.1", 8080)
    assert plan.metric_keys[key] == "GET /users/1"
    head = request.decode()
    assert head.startswith("GET /api/users/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert head.endswith("\r\n\r\n") and "Content-Length" not in head
    options = plan.options
    assert options.iterations == 1 and options.duration_ns == 0  # neither given: once each
    assert options.sessions == 3 and options.request_timeout_ns == 2_000_000_000


def test_json_form_query_headers_and_delay() -> None:
    (plan,) = compile_assignment(
        _assignment(
            [
                {
                    "http": {
                        "method": "POST",
                        "path": "/login",
                        "json": {"user": "u", "n": 1},
                        "headers": {"X-Trace": "1"},
                        "query": {"b": "2", "a": "1"},
                    }
                },
                {"delay": {"duration": "150ms"}},
                {"http": {"method": "PUT", "path": "/f", "form": {"fields": {"k": "v w"}}}},
                {"http": {"method": "HEAD", "path": "/"}},
            ],
            duration="2s",
        )
    )
    post, delay, put, head = plan.ops
    head_bytes, body = post[3].split(b"\r\n\r\n", 1)
    assert head_bytes.startswith(b"POST /api/login?a=1&b=2 HTTP/1.1")
    assert b"Content-Type: application/json" in head_bytes and b"X-Trace: 1" in head_bytes
    assert json.loads(body) == {"user": "u", "n": 1}
    assert f"Content-Length: {len(body)}".encode() in head_bytes
    assert delay == (OP_DELAY, 150_000_000)
    assert put[3].endswith(b"\r\n\r\nk=v+w")
    assert head[4] is True
    assert plan.metric_keys == ["POST /login", "PUT /f", "HEAD /"]
    assert plan.options.duration_ns == 2_000_000_000 and plan.options.iterations == 0


def test_same_key_and_target_share_an_index() -> None:
    step = {"http": {"method": "GET", "path": "/"}}
    other = {"http": {"method": "GET", "url": "http://localhost:9/x"}}
    (plan,) = compile_assignment(_assignment([step, step, other]))
    assert [op[2] for op in plan.ops] == [0, 0, 1]
    assert [op[1] for op in plan.ops] == [0, 0, 1]
    assert plan.targets[1][1] == 9


def test_engine_options_cap_threads_by_sessions() -> None:
    (plan,) = compile_assignment(_assignment([{"http": {"method": "GET", "path": "/"}}]))
    assert plan.engine_options(8).threads == 3
    assert plan.engine_options(0).threads == 1
    assert plan.engine_options(2).sessions == plan.options.sessions == 3


def test_https_targets_carry_tls_and_the_name_to_verify() -> None:
    a = _assignment([{"http": {"method": "GET", "url": "https://localhost:8443/x"}}])
    (plan,) = compile_assignment(a)
    assert plan.targets == [("127.0.0.1", 8443, True, "localhost")]
    assert plan.options.tls_ca_file is None and plan.options.tls_insecure is False
    assert plan.ops[0][3].startswith(b"GET /x HTTP/1.1\r\nHost: localhost:8443\r\n")
    a.load_test.config.update({"tls_insecure": True, "tls_ca_file": "/tmp/ca.pem"})
    (plan,) = compile_assignment(a)
    assert plan.options.tls_insecure and plan.options.tls_ca_file == b"/tmp/ca.pem"


def test_plain_targets_pass_no_tls_options() -> None:
    a = _assignment([{"http": {"method": "GET", "path": "/"}}])
    a.load_test.config.update({"tls_insecure": True, "tls_ca_file": "/tmp/ca.pem"})
    (plan,) = compile_assignment(a)
    assert plan.options.tls_ca_file is None and plan.options.tls_insecure is False


def test_bad_shares_are_refused() -> None:
    a = _assignment([{"http": {"method": "GET", "path": "/"}}])
    a.shares[0].entry_index = 5
    with pytest.raises(InvalidArgument):
        compile_assignment(a)
    del a.shares[:]
    with pytest.raises(InvalidArgument):
        compile_assignment(a)


def test_a_takeover_share_resumes_its_own_schedule_at_first_arrival() -> None:
    run = [{"http": {"method": "GET", "path": "/"}}]
    a = _assignment(run, concurrency=0, duration="5s", arrival_rate={"per_second": 100})
    a.shares[0].rate_fraction = 0.5
    a.shares.add(entry_index=0, sessions=3, rate_fraction=0.25, first_arrival=40)
    first, second = compile_assignment(a)
    assert (first.share_index, second.share_index) == (0, 1)
    assert first.options.first_arrival == 0
    # the share's whole schedule (not a trimmed one), resumed at its arrival 40
    assert second.options.first_arrival == 40
    assert second.options.arrival_rate_per_s == 25.0 and second.options.duration_ns == 5 * 10**9
    a.schedule_offset_s = 2.0  # the older form of a takeover: ignored where first_arrival is set
    _, second = compile_assignment(a)
    assert second.options.duration_ns == 5 * 10**9
    a.shares[1].first_arrival = -1
    with pytest.raises(InvalidArgument, match="first_arrival"):
        compile_assignment(a)


def test_init_teardown_and_session_rules_reach_the_engine() -> None:
    lt_assignment = _assignment(
        [{"http": {"method": "GET", "path": "/"}}],
        scenario_timeout="2s",
        delay="100ms",
        random_delay="1s",
    )
    scenario = lt_assignment.load_test.scenarios[0].scenario
    scenario.init.add().http.CopyFrom(loadtest_pb2.HttpStep(method="POST", path="/login"))
    scenario.teardown.add().http.CopyFrom(loadtest_pb2.HttpStep(method="POST", path="/logout"))
    (plan,) = compile_assignment(lt_assignment)
    assert [op[3].split(b" ")[1] for op in plan.init_ops] == [b"/api/login"]
    assert [op[3].split(b" ")[1] for op in plan.teardown_ops] == [b"/api/logout"]
    assert plan.metric_keys == ["POST /login", "GET /", "POST /logout"]
    assert plan.options.scenario_timeout_ns == 2_000_000_000
    assert plan.options.start_delay_ns == 100_000_000
    assert plan.options.start_random_delay_ns == 1_000_000_000
    (plain,) = compile_assignment(_assignment([{"http": {"method": "GET", "path": "/"}}]))
    assert plain.init_ops == [] and plain.teardown_ops == []
    assert plain.options.scenario_timeout_ns == 0


def test_control_flow_is_flattened_with_body_lengths() -> None:
    from _fastpath.engine import OP_LOOP, OP_RANDOM_DELAY, OP_REPEAT

    get = {"http": {"method": "GET", "path": "/"}}
    (plan,) = compile_assignment(
        _assignment(
            [
                {"repeat": {"count": 3, "steps": [get, {"repeat": {"count": 2, "steps": [get]}}]}},
                {"loop": {"duration": "1s", "steps": [{"random_delay": {"max": "5ms"}}]}},
                {"name": "login", "repeat": {"count": 2, "traced": True, "steps": [get]}},
            ]
        )
    )
    kinds = [op[0] for op in plan.ops]
    assert kinds == [
        OP_REPEAT,
        OP_HTTP,
        OP_REPEAT,
        OP_HTTP,
        OP_LOOP,
        OP_RANDOM_DELAY,
        OP_REPEAT,
        OP_HTTP,
    ]
    assert plan.ops[0][1:] == (3, 3, -1)
    assert plan.ops[2][1:] == (2, 1, -1)
    assert plan.ops[4][1:] == (1_000_000_000, 1)
    assert plan.ops[5][1:] == (0, 5_000_000)
    assert plan.ops[6][1:3] == (2, 1)
    assert plan.metric_keys[plan.ops[6][3]] == "login"
