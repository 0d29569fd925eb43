"""The session language in the plan compiler: every step -> the ops it gives the engine's
PlanBuilder (read back as tuples with ``describe()``)."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from _fastpath.engine import (
    EX_HEADER,
    EX_JSON,
    EX_REGEX,
    EX_STATUS,
    OP_ABORT,
    OP_ADD_METRIC,
    OP_ASSIGN,
    OP_ASYNC,
    OP_AWAIT,
    OP_AWAIT_ALL,
    OP_AWAIT_SIGNAL,
    OP_DELAY,
    OP_HTTP,
    OP_PYTHON,
    OP_REPEAT,
    OP_RETRY,
    OP_SIGNAL,
    OP_SPREAD,
    OP_UNSET,
    OP_UPDATE_ADD,
    OP_WS_AWAIT_RECV,
    OP_WS_CLOSE,
    OP_WS_CONNECT,
    OP_WS_RECV,
    OP_WS_SEND,
    VAR_ITERATION,
    VAR_SESSION_ID,
    EngineOptions,
)
from chaperon.core.errors import InvalidArgument, PermissionDenied
from chaperon.core.loadtest import Placeholder as P
from chaperon.core.loadtest import display_template, load_test_from_dict, metric_key, split_template
from chaperon.v1 import loadtest_pb2, worker_pb2
from worker_service.plan import EnginePlan, compile_assignment

BASE = "http://127.0.0.1:8080/api"
CONFIG = {"base_url": BASE, "request_timeout": "2s", "user": {"name": "bob"}, "n": 3}
GET = {"http": {"method": "GET", "path": "/"}}
HEAD = b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: chaperon/"


def _lt(run: list[dict[str, Any]], config: dict[str, Any] | None = None, **entry: Any) -> Any:
    return load_test_from_dict(
        {
            "name": "t",
            "config": CONFIG if config is None else config,
            "scenarios": [{"concurrency": 1, "scenario": {"name": "s", "run": run}, **entry}],
        }
    )


def _compile(
    run: list[dict[str, Any]],
    config: dict[str, Any] | None = None,
    *,
    allow_python: bool = False,
    lt: Any = None,
    **entry: Any,
) -> EnginePlan:
    lt = lt if lt is not None else _lt(run, config, **entry)
    a = worker_pb2.Assignment(
        assignment_id="a", load_test=lt, shares=[worker_pb2.EntryShare(entry_index=0, sessions=1)]
    )
    (plan,) = compile_assignment(a, allow_python=allow_python)
    return plan


def _refused(run: list[dict[str, Any]], config: dict[str, Any] | None = None, **kw: Any) -> str:
    """The field an InvalidArgument names."""
    with pytest.raises(InvalidArgument) as info:
        _compile(run, config, **kw)
    ((field, _),) = info.value.violations
    return field


def _http(**fields: Any) -> dict[str, Any]:
    return {"http": {"method": "GET", "path": "/", **fields}}


def _key(plan: EnginePlan, op: tuple[Any, ...], index: int = 2) -> str:
    return plan.metric_keys[op[index]]


# -- templates -------------------------------------------------------------------------------


def test_templates_split_into_literals_and_names() -> None:
    assert split_template("/u/{{ id }}/x{{a.b}}") == ["/u/", P("id"), "/x", P("a.b")]
    assert split_template('{"a":{"b":1}}') == ['{"a":{"b":1}}']  # a lone }} is text
    for bad in ("/u/{{id", "{{}}", "{{a b}}", "x{{a{b}}"):
        with pytest.raises(ValueError):
            split_template(bad)
    assert display_template("/users/{{ id }}?q={{q}}") == "/users/{id}?q={q}"


def test_metric_keys_show_placeholders_and_may_drop_the_query() -> None:
    step = loadtest_pb2.HttpStep(method="get", path="/users/{{ id }}?full={{f}}")
    assert metric_key(step) == "GET /users/{id}?full={f}"
    assert metric_key(step, strip_query=True) == "GET /users/{id}"
    url = loadtest_pb2.HttpStep(method="POST", url="http://x:1/a/{{id}}?b=1")
    assert metric_key(url, strip_query=True) == "POST /a/{id}"


def test_plain_request_with_config_values_keeps_the_fast_path() -> None:
    plan = _compile([_http(path="/u/{{user.name}}/{{ n }}", query={"k": "{{n}} x"})])
    ((op, _, key, request, no_body),) = plan.ops
    assert op == OP_HTTP and not no_body
    assert request.startswith(b"GET /api/u/bob/3?k=3+x" + HEAD)
    assert request.endswith(b"\r\n\r\n")
    assert plan.metric_keys[key] == "GET /u/{user.name}/{n}"
    assert plan.options.var_names == ()


def test_variables_and_builtins_become_slots_in_head_and_body() -> None:
    plan = _compile(
        [
            {"assign": {"values": {"token": "t-{{session_id}}", "q": "a b"}}},
            {
                "http": {
                    "method": "POST",
                    "path": "/items/{{token}}",
                    "query": {"it": "{{iteration}}", "s": "a&b"},
                    "headers": {"Authorization": "Bearer {{ token }}"},
                    "json": {"user": "{{user.name}}", "tok": 'x"{{token}}', "n": 2, "l": [1]},
                }
            },
        ]
    )
    assign_q, assign_token, http = plan.ops
    assert plan.options.var_names == ("q", "token")  # assign values in name order
    assert assign_token[:3] == (OP_ASSIGN, 1, [b"t-", VAR_SESSION_ID])
    assert assign_q[:3] == (OP_ASSIGN, 0, [b"a b"])
    assert _key(plan, assign_token, 3) == "assign token"  # counts its errors only
    op, target, key, request, no_body, extras = http
    assert (op, request, no_body) == (OP_HTTP, None, False)
    assert extras["head"][:4] == [b"POST /api/items/", 1, b"?it=", VAR_ITERATION]
    assert extras["head"][4].startswith(b"&s=a%26b" + HEAD)
    assert extras["head"][4].endswith(b"Content-Type: application/json\r\nAuthorization: Bearer ")
    assert extras["head"][5:] == [1, b"\r\n"]
    assert b"Content-Length" not in b"".join(p for p in extras["head"] if isinstance(p, bytes))
    body = extras["body"]
    rendered = b"".join(p if isinstance(p, bytes) else b"<token>" for p in body)
    assert b'"tok":"x\\"<token>"' in rendered and b'"user":"bob"' in rendered
    assert b'"n":2' in rendered and b'"l":[1]' in rendered  # integral numbers stay integers
    assert plan.metric_keys[key] == "POST /items/{token}"
    assert set(extras) == {"head", "body"}
    assert plan.engine_options(1).var_names == ("q", "token")


def test_form_and_raw_bodies_and_bodyless_methods() -> None:
    plan = _compile(
        [
            {"assign": {"values": {"v": "1"}}},
            {
                "http": {
                    "method": "PUT",
                    "path": "/f",
                    "form": {"fields": {"b": "x y", "a": "{{v}}"}},
                }
            },
            {"http": {"method": "POST", "path": "/r", "body": "raw {{v}}"}},
            {"http": {"method": "DELETE", "path": "/d/{{v}}"}},
            {"http": {"method": "POST", "path": "/e/{{v}}"}},
        ]
    )
    form, raw, delete, empty_post = (op[5] for op in plan.ops[1:])
    assert form["body"] == [b"a=", 0, b"&b=x+y"]
    assert b"Content-Type: application/x-www-form-urlencoded" in form["head"][-1]
    assert raw["body"] == [b"raw ", 0]
    assert delete["body"] is None
    assert empty_post["body"] == []  # Content-Length: 0, as plain POSTs get


def test_basic_auth_is_rendered_now_and_refuses_runtime_values() -> None:
    plan = _compile([_http(basic_auth={"username": "{{user.name}}", "password": "p w"})])
    expected = base64.b64encode(b"bob:p w")
    assert b"Authorization: Basic " + expected + b"\r\n" in plan.ops[0][3]
    run = [{"assign": {"values": {"u": "x"}}}, _http(basic_auth={"username": "{{u}}"})]
    assert _refused(run) == "scenarios[0].scenario.run[1].http.basic_auth.username"
    run = [_http(basic_auth={"password": "{{session_id}}"})]
    assert _refused(run) == "scenarios[0].scenario.run[0].http.basic_auth.password"


def test_unknown_names_and_bad_templates_name_the_field() -> None:
    assert _refused([_http(headers={"X": "{{nope}}"})]) == (
        "scenarios[0].scenario.run[0].http.headers[X]"
    )
    assert _refused([_http(path="/{{open")]) == "scenarios[0].scenario.run[0].http.path"
    # a python step may set any name: then an unknown name is a variable
    run = [{"python": {"function": "json:dumps"}}, _http(path="/{{from_py}}")]
    plan = _compile(run, allow_python=True)
    assert plan.options.var_names == ("from_py",) and plan.ops[1][5]["head"][1] == 0


def test_extraction_and_cookies_use_the_extras_form() -> None:
    extract = [
        {"var": "token", "json_path": "$.token"},
        {"var": "id", "regex": "id=([0-9]+)", "optional": True},
        {"var": "loc", "header": "Location"},
        {"var": "code", "status": True},
    ]
    plan = _compile([_http(extract=extract)], {**CONFIG, "cookies": True})
    op, _, _, request, no_body, extras = plan.ops[0]
    assert request is None and extras["cookies"] is True
    assert extras["extract"] == [
        (0, EX_JSON, b"$.token", False),
        (1, EX_REGEX, b"id=([0-9]+)", True),
        (2, EX_HEADER, b"Location", False),
        (3, EX_STATUS, b"", False),
    ]
    assert extras["body"] is None and extras["head"][0].startswith(b"GET /api/ HTTP/1.1\r\n")
    assert plan.options.var_names == ("token", "id", "loc", "code")
    assert _refused([_http(extract=[{"var": "x"}])]).endswith("http.extract[0].json_path")


def test_metrics_strip_query_and_filter() -> None:
    run = [_http(path="/a?x=1"), _http(path="/b"), {"call_traced": {"name": "grp", "steps": [GET]}}]
    plan = _compile(run, {**CONFIG, "metrics_strip_query": True, "metrics_filter": ["GET /a*"]})
    assert plan.metric_keys == ["GET /a"]
    assert [op[2] for op in plan.ops[:2]] == [0, -1]
    assert plan.ops[2] == (OP_REPEAT, 1, 1, -1)


# -- WebSocket -------------------------------------------------------------------------------


def test_websocket_steps() -> None:
    plan = _compile(
        [
            {"ws_connect": {"path": "/ws/{{n}}", "headers": {"X-A": "1"}}},
            {"ws_connect": {"url": "ws://localhost:9001/chat", "conn": "chat"}},
            {"ws_send": {"text": "hi {{session_id}}"}},
            {"ws_send": {"conn": "chat", "json": {"a": "{{user.name}}"}}},
            {"ws_send": {"binary": base64.b64encode(b"\x00\x01").decode()}},
            {"ws_recv": {"assign": "msg"}},
            {"ws_await_recv": {"conn": "chat", "expected": "{{msg}}", "timeout": "1s"}},
            {"ws_close": {}},
            {"ws_close": {"conn": "chat", "metric": "bye"}},
        ]
    )
    c0, c1, text, js, binary, recv, wait, close0, close1 = plan.ops
    assert c0[:2] == (OP_WS_CONNECT, 0) and plan.targets[c0[2]] == ("127.0.0.1", 8080)
    (head,) = c0[4]
    assert head.startswith(b"GET /api/ws/3 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    for line in (b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13"):
        assert line + b"\r\n" in head
    assert head.endswith(b"X-A: 1\r\n")
    assert c1[:2] == (OP_WS_CONNECT, 1) and plan.targets[c1[2]] == ("127.0.0.1", 9001)
    assert c1[4][0].startswith(b"GET /chat HTTP/1.1\r\nHost: localhost:9001\r\n")
    assert text[:2] == (OP_WS_SEND, 0) and text[3:] == (1, [b"hi ", VAR_SESSION_ID])
    assert js[:2] == (OP_WS_SEND, 1) and js[3:] == (1, [b'{"a":"bob"}'])
    assert binary[3:] == (2, [b"\x00\x01"])
    assert recv[0:2] == (OP_WS_RECV, 0) and recv[3:] == (2_000_000_000, 0)  # request_timeout
    assert wait[0:2] == (OP_WS_AWAIT_RECV, 1) and wait[3:] == (1_000_000_000, [0])
    assert close0[:2] == (OP_WS_CLOSE, 0) and close1[:2] == (OP_WS_CLOSE, 1)
    assert [_key(plan, op) for op in plan.ops] == [
        "WS connect /ws/{n}",
        "WS connect /chat",
        "WS send default",
        "WS send chat",
        "WS send default",
        "WS recv default",
        "WS await_recv chat",
        "WS close default",
        "bye",
    ]
    assert plan.options.nconns == 2 and plan.engine_options(1).nconns == 2


def test_websocket_mistakes() -> None:
    assert _refused([{"ws_send": {"text": "x"}}]) == "scenarios[0].scenario.run[0].ws_send.conn"
    run = [{"ws_connect": {"path": "/"}}, {"ws_recv": {"conn": "other"}}]
    assert _refused(run) == "scenarios[0].scenario.run[1].ws_recv.conn"
    wss = _compile([{"ws_connect": {"url": "wss://localhost:1/"}}])
    assert wss.targets == [("127.0.0.1", 1, True, "localhost")]
    https = _compile([{"ws_connect": {"path": "/"}}], {"base_url": "https://127.0.0.1:1"})
    assert https.targets == [("127.0.0.1", 1, True, "127.0.0.1")]
    conns = [{"ws_connect": {"path": "/", "conn": f"c{i}"}} for i in range(17)]
    assert _refused(conns) == "scenarios[0].scenario.run[16].ws_connect.conn"


# -- child sessions and signals --------------------------------------------------------------


def test_children_and_signals() -> None:
    lt = _lt(
        [
            {"await_signal": {"value": "ready"}},  # before the async: names are known ahead
            {"async": {"name": "kid", "steps": [{"signal_parent": {"value": "ready"}}, GET]}},
            {"signal": {"to": "kid", "value": "go"}},
            {"await": {"name": "kid", "timeout": "3s"}},
            {"cc_spread": {"rate": 4, "interval": "1s", "steps": [GET]}},
            {"async": {"name": "other", "scenario": "helper"}},
            {"await_all": {}},
        ]
    )
    helper = lt.scenarios.add(concurrency=1).scenario
    helper.name = "helper"
    helper.init.add().delay.duration = "1s"  # only the run steps make the child's body
    helper.run.add().delay.duration = "1ms"
    plan = _compile([], lt=lt)
    ops = plan.ops
    assert ops[0][:3] == (OP_AWAIT_SIGNAL, 0, 2_000_000_000)
    assert ops[1] == (OP_ASYNC, 0, 2) and ops[2] == (OP_SIGNAL, -1, 0)
    assert ops[4] == (OP_SIGNAL, 0, 1)
    assert ops[5][:3] == (OP_AWAIT, 0, 3_000_000_000)
    assert ops[6] == (OP_SPREAD, 2, 4, 1_000_000_000, 1)
    assert ops[8] == (OP_ASYNC, 1, 1) and ops[9] == (OP_DELAY, 1_000_000)
    assert ops[-1][:2] == (OP_AWAIT_ALL, 0)
    assert (plan.options.nchildren, plan.options.nsignals) == (6, 2)
    assert [_key(plan, ops[i], 3) for i in (0, 5)] == ["await_signal ready", "await kid"]
    assert plan.metric_keys[ops[-1][2]] == "await_all"


@pytest.mark.parametrize(
    ("run", "field"),
    [
        ([{"await": {"name": "nobody"}}], "run[0].await.name"),
        ([{"signal": {"to": "nobody", "value": "x"}}], "run[0].signal.to"),
        (
            [{"async": {"name": "a", "steps": [{"async": {"name": "b", "steps": [GET]}}]}}],
            "run[0].async.steps[0].async",
        ),
        (
            [{"cc_spread": {"rate": 2, "steps": [{"cc_spread": {"rate": 1, "steps": [GET]}}]}}],
            "run[0].cc_spread.steps[0].cc_spread",
        ),
        ([{"cc_spread": {"rate": 300, "steps": [GET]}}], "run[0].cc_spread.rate"),
        ([{"cc_spread": {"rate": 0, "steps": [GET]}}], "run[0].cc_spread.rate"),
        ([{"async": {"name": "a", "scenario": "missing"}}], "run[0].async.scenario"),
        ([{"await_signal": {}}], "run[0].await_signal.value"),
    ],
)
def test_child_mistakes_name_the_field(run: list[dict[str, Any]], field: str) -> None:
    assert _refused(run) == f"scenarios[0].scenario.{field}"


# -- scenarios: run_scenario and sequences ---------------------------------------------------


def test_run_scenario_inline_merges_config() -> None:
    inner = {
        "name": "in",
        "init": [_http(path="/i")],
        "run": [_http(path="/r/{{user.name}}")],
        "teardown": [_http(path="/t")],
    }
    plan = _compile(
        [
            {
                "run_scenario": {
                    "scenario": inner,
                    "config": {"base_url": "http://127.0.0.1:9000", "user": {"name": "eve"}},
                }
            },
            _http(path="/after/{{user.name}}"),
        ]
    )
    paths = [op[3].split(b" ")[1] for op in plan.ops]
    assert paths == [b"/i", b"/r/eve", b"/t", b"/api/after/bob"]
    assert [plan.targets[op[1]][1] for op in plan.ops] == [9000, 9000, 9000, 8080]


def test_run_scenario_by_name_and_recursion() -> None:
    lt = _lt([GET])
    other = lt.scenarios.add(concurrency=1)
    other.scenario.name = "login"
    other.scenario.run.add().http.CopyFrom(loadtest_pb2.HttpStep(method="POST", path="/login"))
    lt.scenarios[0].scenario.run.add().run_scenario.name = "login"
    plan = _compile([], lt=lt)
    assert [op[3].split(b" ")[1] for op in plan.ops] == [b"/api/", b"/api/login"]
    lt.scenarios[1].scenario.run.add().run_scenario.name = "login"  # login runs itself
    with pytest.raises(InvalidArgument, match="nests at most 8"):
        _compile([], lt=lt)
    assert _refused([{"run_scenario": {"name": "missing"}}]).endswith("run_scenario.name")


def test_sequences_run_one_after_the_other_and_share_variables() -> None:
    lt = load_test_from_dict(
        {
            "name": "t",
            "config": CONFIG,
            "scenarios": [
                {
                    "concurrency": 1,
                    "sequence": {
                        "scenarios": [
                            {
                                "name": "a",
                                "init": [_http(path="/a-init")],
                                "run": [_http(path="/a", extract=[{"var": "t", "body": True}])],
                                "teardown": [_http(path="/a-down")],
                            },
                            {
                                "name": "b",
                                "run": [_http(path="/b/{{t}}")],
                                "teardown": [_http(path="/b-down")],
                            },
                        ]
                    },
                }
            ],
        }
    )
    plan = _compile([], lt=lt)
    assert plan.init_ops == []
    firsts = [op[3] or op[5]["head"][0] for op in plan.ops]
    assert [f.split(b" ")[1] for f in firsts] == [b"/api/a-init", b"/api/a", b"/api/b/"]
    assert plan.ops[2][5]["head"][1] == 0 and plan.options.var_names == ("t",)
    assert [op[3].split(b" ")[1] for op in plan.teardown_ops] == [b"/api/a-down", b"/api/b-down"]


# -- variables, metrics, control -------------------------------------------------------------


def test_variable_metric_and_control_steps() -> None:
    plan = _compile(
        [
            {"update_assign": {"name": "n", "add": 2}},
            {"update_assign": {"name": "s", "set": "{{n}}!"}},
            {"delete_assign": {"names": ["s", "never-set"]}},
            {"retry_on_error": {"retries": 3, "backoff": "10ms", "steps": [GET, GET]}},
            {"add_metric": {"key": "size", "value": 42}},
            {"add_metric": {"key": "count", "var": "n"}},
            {"call_traced": {"name": "group", "steps": [{"delay": {"duration": "1ms"}}]}},
            {"abort": {"reason": "done"}},
            {"abort": {"metric": "gave up"}},
        ]
    )
    ops = plan.ops
    assert ops[0][:3] == (OP_UPDATE_ADD, 0, 2) and _key(plan, ops[0], 3) == "update_assign n"
    assert ops[1][:3] == (OP_ASSIGN, 1, [0, b"!"]) and _key(plan, ops[1], 3) == "update_assign s"
    assert ops[2:4] == [(OP_UNSET, 1), (OP_UNSET, 2)]
    assert ops[4] == (OP_RETRY, 3, 10_000_000, 2)
    assert ops[7][0] == OP_ADD_METRIC and ops[7][2:] == (42, -1)
    assert ops[8][0] == OP_ADD_METRIC and ops[8][2:] == (0, 0)
    assert ops[9][:3] == (OP_REPEAT, 1, 1) and ops[10] == (OP_DELAY, 1_000_000)
    assert ops[11][0] == OP_ABORT and ops[12][0] == OP_ABORT
    keys = [_key(plan, ops[i], 1) for i in (7, 8, 11, 12)] + [_key(plan, ops[9], 3)]
    assert keys == ["size", "count", "abort: done", "gave up", "group"]
    assert plan.options.var_names == ("n", "s", "never-set")


def test_empty_bodies() -> None:
    assert _refused([{"retry_on_error": {"retries": 1}}]).endswith("retry_on_error.steps")
    empty = {"run_scenario": {"scenario": {"name": "nothing"}}}
    plan = _compile([{"call_traced": {"name": "g", "steps": [empty]}}])
    assert plan.ops[0][:3] == (OP_REPEAT, 1, 1) and plan.ops[1] == (OP_DELAY, 0)


def test_python_steps_need_the_worker_flag() -> None:
    run = [{"python": {"function": "json:dumps"}}]
    with pytest.raises(PermissionDenied, match="--allow-python-steps") as info:
        _compile(run)
    assert "run[0].python.function" in str(info.value)
    plan = _compile(run, allow_python=True)
    import json

    assert plan.ops[0] == (OP_PYTHON, 0, json.dumps)
    assert plan.metric_keys == ["python json:dumps"]
    bad = [{"python": {"function": "no_such_module_here:f"}}]
    assert _refused(bad, allow_python=True) == "scenarios[0].scenario.run[0].python.function"
    bad = [{"python": {"function": "json"}}]
    assert _refused(bad, allow_python=True) == "scenarios[0].scenario.run[0].python.function"


# -- limits and engine arguments -------------------------------------------------------------


def test_limits_name_the_field() -> None:
    many = [{"assign": {"values": {f"v{i}": "x" for i in range(257)}}}]
    assert _refused(many).startswith("scenarios[0].scenario.run[0].assign.values[")
    signals = [{"signal_parent": {"value": f"s{i}"}} for i in range(65)]
    assert _refused(signals) == "scenarios[0].scenario.run[64].signal_parent.value"
    spreads = [{"cc_spread": {"rate": 200, "steps": [GET]}}] * 2
    assert _refused(spreads) == "scenarios[0].scenario.run[1].cc_spread.rate"
    step: dict[str, Any] = GET
    fields = {"repeat": {"count": 1}, "loop": {"duration": "1s"}, "call_traced": {"name": "x"}}
    for kind in ("repeat", "loop", "retry_on_error", "call_traced") * 2:
        step = {kind: {**fields.get(kind, {}), "steps": [step]}}
    _compile([copy.deepcopy(step)])  # 8 deep: the engine's limit
    step = {"repeat": {"count": 1, "steps": [step]}}
    with pytest.raises(InvalidArgument, match="at most 8 deep"):
        _compile([step])


def test_plain_plans_leave_the_other_engine_options_at_their_defaults() -> None:
    options = _compile([GET]).options
    plain = EngineOptions(
        sessions=options.sessions,
        iterations=options.iterations,
        duration_ns=options.duration_ns,
        connect_timeout_ns=options.connect_timeout_ns,
        request_timeout_ns=options.request_timeout_ns,
        graceful_stop_ns=30_000_000_000,  # the language's default graceful_stop
    )
    assert repr(options) == repr(plain)
    plan = _compile(
        [
            {"ws_connect": {"path": "/"}},
            {"async": {"name": "k", "steps": [{"signal_parent": {"value": "v"}}]}},
            {"assign": {"values": {"a": "1"}}},
        ],
        {**CONFIG, "max_capture": 4096},
    )
    options = plan.engine_options(1)
    assert (options.nconns, options.nchildren, options.nsignals) == (1, 1, 1)
    assert options.var_names == ("a",) and options.max_capture == 4096
    assert _refused([GET], {**CONFIG, "max_capture": 0}) == "config.max_capture"


def test_the_worker_flag_reaches_the_compiler() -> None:
    from chaperon.cli import build_parser
    from worker_service.servicer import WorkerServicer, WorkerState

    parser = build_parser()
    args = parser.parse_args(["worker", "--master", "127.0.0.1:1", "--allow-python-steps"])
    assert args.allow_python_steps is True
    assert parser.parse_args(["worker", "--master", "127.0.0.1:1"]).allow_python_steps is False
    assert WorkerServicer(WorkerState(1), allow_python=True)._allow_python is True
    assert WorkerServicer(WorkerState(1))._allow_python is False


def test_session_name_prefixes_the_metric_keys() -> None:
    plan = _compile(
        [_http(method="GET", path="/cart")],
        {**CONFIG, "metrics_filter": ["GET /c*"]},
        session_name="buyer",
    )
    assert plan.metric_keys == ["buyer: GET /cart"]
