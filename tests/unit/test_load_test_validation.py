"""Unit tests of the master's load-test validation (no network)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.loadtests import minimal_load_test

from chaperon.core.errors import InvalidArgument, ResourceExhausted
from chaperon.core.loadtest import load_test_from_dict
from master_service.validation import validate_load_test

MINIMAL: dict[str, Any] = minimal_load_test("http://127.0.0.1:8080", concurrency=50, duration="5s")


def _lt(**changes: Any) -> Any:
    data = copy.deepcopy(MINIMAL)
    for path, value in changes.items():
        target = data
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[keys[-1]] = value
    return load_test_from_dict(data)


def _fields(exc: InvalidArgument) -> list[str]:
    return [f for f, _ in exc.violations]


def test_minimal_load_test_of_the_api_is_valid() -> None:
    validate_load_test(_lt())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"scenarios": []}, "scenarios"),
        ({"scenarios__0__concurrency": 0}, "scenarios[0].concurrency"),
        ({"scenarios__0__concurrency": -3}, "scenarios[0].concurrency"),
        ({"config__base_url": "not a url"}, "config.base_url"),
        ({"config__base_url": "ftp://x"}, "config.base_url"),
        ({"config__base_url": "http://127.0.0.1:99999"}, "config.base_url"),
        # hosts that could only fail when the run starts: refused at submission
        ({"config__base_url": "http://localhost."}, "config.base_url"),
        ({"config__base_url": "http://127.0.0.1%09:80"}, "config.base_url"),
        ({"config__base_url": "http://a..b"}, "config.base_url"),
        ({"config__base_url": "http://-a.example"}, "config.base_url"),
        ({"config__base_url": "http://" + "a" * 64 + ".example"}, "config.base_url"),
        ({"scenarios__0__duration": "five seconds"}, "scenarios[0].duration"),
        ({"scenarios__0__duration": "5"}, "scenarios[0].duration"),
        ({"scenarios__0__iterations": -1}, "scenarios[0].iterations"),
        ({"timeout": "soon"}, "timeout"),
        ({"scenarios__0__scenario__run": []}, "scenarios[0].scenario.run"),
        (
            {"scenarios__0__scenario__run__0__http__method": "FETCH"},
            "scenarios[0].scenario.run[0].http.method",
        ),
        (
            {"scenarios__0__scenario__run__0__http__method": ""},
            "scenarios[0].scenario.run[0].http.method",
        ),
        (
            {"scenarios__0__scenario__run__0__http__path": "no-slash"},
            "scenarios[0].scenario.run[0].http.path",
        ),
        (
            {"scenarios__0__scenario__run__0__http__headers": {"X-A": "a\r\nInjected: 1"}},
            "scenarios[0].scenario.run[0].http.headers[X-A]",
        ),
        (
            {"scenarios__0__scenario__run__0__http__headers": {"Content-Length": "3"}},
            "scenarios[0].scenario.run[0].http.headers[Content-Length]",
        ),
        ({"config": {}}, "config.base_url"),
    ],
)
def test_bad_input_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(_lt(**changes))
    assert field in _fields(info.value), info.value.violations


def test_every_problem_is_listed_at_once() -> None:
    lt = _lt(scenarios__0__concurrency=0, scenarios__0__duration="x", config__base_url="nope")
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(lt)
    assert {"scenarios[0].concurrency", "scenarios[0].duration", "config.base_url"} <= set(
        _fields(info.value)
    )


def test_empty_step_and_delay_without_duration() -> None:
    lt = _lt(scenarios__0__scenario__run=[{}, {"delay": {}}])
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(lt)
    assert "scenarios[0].scenario.run[0]" in _fields(info.value)
    assert "scenarios[0].scenario.run[1].delay.duration" in _fields(info.value)


def test_entry_config_overrides_base_url() -> None:
    lt = _lt(config={}, scenarios__0__config={"base_url": "http://127.0.0.1:1"})
    validate_load_test(lt)


def test_absolute_url_step_needs_no_base_url() -> None:
    lt = _lt(
        config={},
        scenarios__0__scenario__run=[
            {"http": {"method": "get", "url": "http://127.0.0.1:9/x?a=1"}}
        ],
    )
    validate_load_test(lt)


def test_limits_answer_resource_exhausted() -> None:
    with pytest.raises(ResourceExhausted):
        validate_load_test(_lt(scenarios__0__concurrency=10_000_000))


def test_wss_urls_are_accepted() -> None:
    lt = _lt(scenarios__0__scenario__run=[{"ws_connect": {"url": "wss://127.0.0.1:1/ws"}}])
    validate_load_test(lt)


def test_session_rules_are_checked() -> None:
    lt = _lt(
        scenarios__0__scenario_timeout="2s",
        scenarios__0__delay="100ms",
        scenarios__0__random_delay="1s",
        scenarios__0__scenario__init=[{"http": {"method": "POST", "path": "/login"}}],
        scenarios__0__scenario__teardown=[{"http": {"method": "POST", "path": "/logout"}}],
    )
    validate_load_test(lt)
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(_lt(scenarios__0__scenario_timeout="soon"))
    assert "scenarios[0].scenario_timeout" in _fields(info.value)


def _open(**arrival: Any) -> Any:
    return _lt(scenarios__0__concurrency=0, scenarios__0__arrival_rate=arrival)


def test_open_model_is_valid() -> None:
    validate_load_test(_open(per_second=1000))
    stages = [{"duration": "2s", "target": 100}, {"duration": "1s", "target": 0}]
    lt = _lt(scenarios__0__concurrency=0, scenarios__0__arrival_rate={"stages": stages})
    lt.scenarios[0].duration = ""
    validate_load_test(lt)


@pytest.mark.parametrize(
    ("arrival", "field"),
    [
        ({"per_second": -1}, "scenarios[0].arrival_rate.per_second"),
        ({"per_second": 0}, "scenarios[0].arrival_rate.per_second"),
        ({"per_second": 1, "max_sessions": -1}, "scenarios[0].arrival_rate.max_sessions"),
        (
            {"per_second": 1, "stages": [{"duration": "x", "target": 1}]},
            "scenarios[0].arrival_rate.stages[0].duration",
        ),
        (
            {"per_second": 1, "stages": [{"duration": "1s", "target": -5}]},
            "scenarios[0].arrival_rate.stages[0].target",
        ),
    ],
)
def test_bad_open_model_names_the_field(arrival: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(_open(**arrival))
    assert field in _fields(info.value), info.value.violations


def test_open_model_rejects_closed_model_fields_and_needs_a_duration() -> None:
    lt = _lt(scenarios__0__arrival_rate={"per_second": 5})  # concurrency 50 still set
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(lt)
    assert "scenarios[0].concurrency" in _fields(info.value)
    lt = _open(per_second=5)
    lt.scenarios[0].duration = ""
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(lt)
    assert "scenarios[0].duration" in _fields(info.value)


def test_thresholds_are_checked() -> None:
    lt = _lt(thresholds=[{"metric": "GET /", "stat": "p42", "max": 1}])
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(lt)
    assert "thresholds[0].stat" in _fields(info.value)


def _with_run(steps: list[dict[str, Any]]) -> Any:
    return _lt(scenarios__0__scenario__run=steps)


def test_control_flow_steps_are_valid() -> None:
    get = {"http": {"method": "GET", "path": "/"}}
    validate_load_test(
        _with_run(
            [
                {"repeat": {"count": 3, "traced": True, "steps": [get]}},
                {"loop": {"duration": "1s", "steps": [{"repeat": {"count": 2, "steps": [get]}}]}},
                {"random_delay": {"min": "10ms", "max": "20ms"}},
            ]
        )
    )


@pytest.mark.parametrize(
    ("step", "field"),
    [
        (
            {"repeat": {"count": -1, "steps": [{"delay": {"duration": "1ms"}}]}},
            "scenarios[0].scenario.run[0].repeat.count",
        ),
        ({"repeat": {"count": 1}}, "scenarios[0].scenario.run[0].repeat.steps"),
        (
            {"loop": {"steps": [{"delay": {"duration": "1ms"}}]}},
            "scenarios[0].scenario.run[0].loop.duration",
        ),
        (
            {"loop": {"duration": "1s", "steps": [{"http": {"method": "NOPE", "path": "/"}}]}},
            "scenarios[0].scenario.run[0].loop.steps[0].http.method",
        ),
        (
            {"random_delay": {"min": "2s", "max": "1s"}},
            "scenarios[0].scenario.run[0].random_delay.min",
        ),
        ({"random_delay": {}}, "scenarios[0].scenario.run[0].random_delay.max"),
    ],
)
def test_bad_control_flow_names_the_field(step: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(_with_run([step]))
    assert field in _fields(info.value), info.value.violations


def test_nesting_is_bounded() -> None:
    step: dict[str, Any] = {"delay": {"duration": "1ms"}}
    for _ in range(9):
        step = {"repeat": {"count": 1, "steps": [step]}}
    with pytest.raises(InvalidArgument, match="nest at most 8"):
        validate_load_test(_with_run([step]))


WS = {"ws_connect": {"path": "/ws"}}
KID = {"async": {"name": "kid", "steps": [{"signal_parent": {"value": "ready"}}]}}


def test_the_session_language_is_valid() -> None:
    lt = _with_run(
        [
            {
                "http": {
                    "method": "POST",
                    "path": "/login/{{ session_id }}",
                    "json": {"user": "{{user}}"},
                    "basic_auth": {"username": "{{user}}", "password": "p"},
                    "extract": [
                        {"var": "token", "json_path": "$.data['a b'][0].token"},
                        {"var": "id", "regex": "id=([0-9]+)"},
                        {"var": "loc", "header": "Location"},
                        {"var": "st", "status": True},
                    ],
                }
            },
            {"http": {"method": "GET", "path": "/me", "headers": {"A": "Bearer {{token}}"}}},
            WS,
            {"ws_send": {"text": "{{token}}"}},
            {"ws_recv": {"assign": "msg", "timeout": "1s"}},
            {"ws_await_recv": {"expected": "{{msg}}"}},
            {"ws_close": {}},
            KID,
            {"await_signal": {"value": "ready"}},
            {"signal": {"to": "kid", "value": "go"}},
            {"await": {"name": "kid"}},
            {"await_all": {"timeout": "1s"}},
            {
                "cc_spread": {
                    "rate": 10,
                    "interval": "1s",
                    "steps": [{"delay": {"duration": "1ms"}}],
                }
            },
            {
                "run_scenario": {
                    "scenario": {"run": [{"http": {"method": "GET", "path": "/{{x}}"}}]},
                    "config": {"x": 1},
                }
            },
            {"assign": {"values": {"a": "{{iteration}}"}}},
            {"update_assign": {"name": "n", "add": 1}},
            {"delete_assign": {"names": ["a"]}},
            {"retry_on_error": {"retries": 2, "backoff": "1ms", "steps": [{"abort": {}}]}},
            {"add_metric": {"key": "k", "var": "n"}},
            {"call_traced": {"name": "g", "steps": [{"python": {"function": "pkg.mod:fn"}}]}},
        ]
    )
    lt.config.update({"user": "bob", "cookies": True, "metrics_filter": ["GET *"]})
    validate_load_test(lt)


def test_sequences_are_valid_and_checked() -> None:
    lt = _lt()
    seq = lt.scenarios[0].sequence.scenarios
    seq.add(name="a").run.add().http.CopyFrom(
        load_test_from_dict(
            {"scenarios": [{"scenario": {"run": [{"http": {"method": "GET", "path": "/"}}]}}]}
        )
        .scenarios[0]
        .scenario.run[0]
        .http
    )
    seq.add(name="b").run.add().delay.duration = "soon"
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(lt)
    assert _fields(info.value) == ["scenarios[0].sequence.scenarios[1].run[0].delay.duration"]
    seq[1].run[0].delay.duration = "1s"
    validate_load_test(lt)


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([{"http": {"method": "GET", "path": "/{{nope}}"}}], "run[0].http.path"),
        ([{"http": {"method": "GET", "path": "/{{open"}}], "run[0].http.path"),
        (
            [{"http": {"method": "GET", "path": "/", "query": {"q": "{{x"}}}],
            "run[0].http.query[q]",
        ),
        (
            [{"http": {"method": "POST", "path": "/", "json": {"a": ["{{nope}}"]}}}],
            "run[0].http.json",
        ),
        (
            [
                {"assign": {"values": {"u": "x"}}},
                {"http": {"method": "GET", "path": "/", "basic_auth": {"username": "{{u}}"}}},
            ],
            "run[1].http.basic_auth.username",
        ),
        (
            [{"http": {"method": "GET", "path": "/", "extract": [{"var": "t"}]}}],
            "run[0].http.extract[0].json_path",
        ),
        (
            [{"http": {"method": "GET", "path": "/", "extract": [{"json_path": "$.a"}]}}],
            "run[0].http.extract[0].var",
        ),
        (
            [{"http": {"method": "GET", "path": "/", "extract": [{"var": "t", "regex": "(a"}]}}],
            "run[0].http.extract[0].regex",
        ),
        (
            [
                {
                    "http": {
                        "method": "GET",
                        "path": "/",
                        "extract": [{"var": "t", "json_path": "$..a"}],
                    }
                }
            ],
            "run[0].http.extract[0].json_path",
        ),
        ([{"ws_send": {"text": "x"}}], "run[0].ws_send.conn"),
        ([WS, {"ws_send": {}}], "run[1].ws_send.text"),
        ([WS, {"ws_send": {"text": "{{nope}}"}}], "run[1].ws_send.text"),
        ([WS, {"ws_recv": {"timeout": "x"}}], "run[1].ws_recv.timeout"),
        ([WS, {"ws_recv": {"conn": "other"}}], "run[1].ws_recv.conn"),
        ([WS, {"ws_await_recv": {"expected": "{{"}}], "run[1].ws_await_recv.expected"),
        ([{"ws_connect": {"url": "ftp://x/"}}], "run[0].ws_connect.url"),
        (
            [{"ws_connect": {"path": "/", "headers": {"Upgrade": "x"}}}],
            "run[0].ws_connect.headers[Upgrade]",
        ),
        ([{"cc_spread": {"rate": 0, "steps": [{"abort": {}}]}}], "run[0].cc_spread.rate"),
        ([{"cc_spread": {"rate": 257, "steps": [{"abort": {}}]}}], "run[0].cc_spread.rate"),
        (
            [{"cc_spread": {"rate": 1, "interval": "x", "steps": [{"abort": {}}]}}],
            "run[0].cc_spread.interval",
        ),
        ([{"cc_spread": {"rate": 1}}], "run[0].cc_spread.steps"),
        ([{"async": {"steps": [{"abort": {}}]}}], "run[0].async.name"),
        ([{"async": {"name": "a", "scenario": "nope"}}], "run[0].async.scenario"),
        ([{"async": {"name": "a", "steps": [KID]}}], "run[0].async.steps[0].async"),
        ([{"await": {"name": "nobody"}}], "run[0].await.name"),
        ([KID, {"await": {"name": "kid", "timeout": "x"}}], "run[1].await.timeout"),
        ([{"await_all": {"timeout": "x"}}], "run[0].await_all.timeout"),
        ([{"signal": {"to": "nobody", "value": "v"}}], "run[0].signal.to"),
        ([KID, {"signal": {"to": "kid"}}], "run[1].signal.value"),
        ([{"signal_parent": {}}], "run[0].signal_parent.value"),
        ([{"await_signal": {"value": "v", "timeout": "x"}}], "run[0].await_signal.timeout"),
        ([{"run_scenario": {}}], "run[0].run_scenario.name"),
        ([{"run_scenario": {"name": "nope"}}], "run[0].run_scenario.name"),
        ([{"run_scenario": {"name": "root"}}], "run[0].run_scenario.name"),  # runs itself
        (
            [{"run_scenario": {"scenario": {"run": [{"delay": {}}]}}}],
            "run[0].run_scenario.scenario.run[0].delay.duration",
        ),
        ([{"assign": {"values": {"bad name": "x"}}}], "run[0].assign.values[bad name]"),
        ([{"update_assign": {"name": "n"}}], "run[0].update_assign.add"),
        ([{"update_assign": {"add": 1}}], "run[0].update_assign.name"),
        ([{"delete_assign": {}}], "run[0].delete_assign.names"),
        (
            [{"retry_on_error": {"retries": -1, "steps": [{"abort": {}}]}}],
            "run[0].retry_on_error.retries",
        ),
        (
            [{"retry_on_error": {"retries": 1, "backoff": "x", "steps": [{"abort": {}}]}}],
            "run[0].retry_on_error.backoff",
        ),
        ([{"add_metric": {"value": 1}}], "run[0].add_metric.key"),
        ([{"add_metric": {"key": "k"}}], "run[0].add_metric.value"),
        ([{"add_metric": {"key": "k", "var": "unset"}}], "run[0].add_metric.var"),
        ([{"call_traced": {"steps": [{"abort": {}}]}}], "run[0].call_traced.name"),
        ([{"python": {"function": "no-colon"}}], "run[0].python.function"),
    ],
)
def test_bad_session_language_names_the_field(steps: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(_with_run(steps))
    assert f"scenarios[0].scenario.{field}" in _fields(info.value), info.value.violations


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"cookies": "yes"}, "config.cookies"),
        ({"metrics_strip_query": 1}, "config.metrics_strip_query"),
        ({"metrics_filter": "GET *"}, "config.metrics_filter"),
        ({"max_capture": 0}, "config.max_capture"),
        ({"max_capture": 1.5}, "config.max_capture"),
    ],
)
def test_language_config_keys_are_checked(config: dict[str, Any], field: str) -> None:
    lt = _lt()
    lt.config.update(config)
    with pytest.raises(InvalidArgument) as info:
        validate_load_test(lt)
    assert field in _fields(info.value)


def test_engine_limits_per_session() -> None:
    many = [{"assign": {"values": {f"v{i}": "x" for i in range(257)}}}]
    with pytest.raises(InvalidArgument, match="256 session variables"):
        validate_load_test(_with_run(many))
    spreads = [{"cc_spread": {"rate": 200, "steps": [{"abort": {}}]}}] * 2
    with pytest.raises(InvalidArgument, match="256 child sessions"):
        validate_load_test(_with_run(spreads))
    signals = [{"signal_parent": {"value": f"s{i}"}} for i in range(65)]
    with pytest.raises(InvalidArgument, match="64 distinct signal"):
        validate_load_test(_with_run(signals))
    step: dict[str, Any] = {"delay": {"duration": "1ms"}}
    for _ in range(4):
        step = {"retry_on_error": {"retries": 1, "steps": [step]}}
        step = {"call_traced": {"name": "g", "steps": [step]}}
    validate_load_test(_with_run([step]))  # 8 deep is the engine's limit
    step = {"repeat": {"count": 1, "steps": [step]}}
    with pytest.raises(InvalidArgument, match="at most 8 deep"):
        validate_load_test(_with_run([step]))


def test_children_inside_named_child_scenarios_are_refused() -> None:
    kid = {
        "name": "kid",
        "run": [{"async": {"name": "grandkid", "steps": [{"delay": {"duration": "1ms"}}]}}],
    }
    lt = load_test_from_dict(
        {
            "name": "t",
            "config": {"base_url": "http://127.0.0.1:8080"},
            "scenarios": [
                {
                    "concurrency": 1,
                    "scenario": {
                        "name": "main",
                        "run": [{"async": {"name": "k", "scenario": "kid"}}],
                    },
                },
                {"concurrency": 1, "scenario": kid},
            ],
        }
    )
    with pytest.raises(InvalidArgument, match="nested child sessions"):
        validate_load_test(lt)


def test_child_slots_count_against_the_session_limit() -> None:
    spread = {
        "cc_spread": {"rate": 200, "interval": "1s", "steps": [{"delay": {"duration": "1ms"}}]}
    }
    lt = _lt(scenarios__0__concurrency=10_000, scenarios__0__scenario__run=[spread])
    with pytest.raises(ResourceExhausted, match="session slots"):
        validate_load_test(lt)


def test_a_nan_rate_with_children_is_invalid_not_an_internal_error() -> None:
    spread = {"cc_spread": {"rate": 2, "interval": "1s", "steps": [{"delay": {"duration": "1ms"}}]}}
    lt = _lt(scenarios__0__scenario__run=[spread])
    lt.scenarios[0].ClearField("concurrency")
    lt.scenarios[0].arrival_rate.per_second = float("nan")
    with pytest.raises(InvalidArgument):
        validate_load_test(lt)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://[::1]:8080",
        "http://localhost",
        "https://api.internal",
        "http://my_host.local",
        "http://bücher.example",
        "http://xn--bcher-kva.example",
        "http://[fe80::1%25eth0]:80",
    ],
)
def test_hosts_dns_can_be_asked_for_pass(url: str) -> None:
    from chaperon.core.loadtest import parse_target

    assert parse_target(url).host
