"""Unit tests of the master's load-test validation (no network)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.loadtests import minimal_load_test

from chaperon.loadtest import load_test_from_dict
from chaperon.status import InvalidArgument, ResourceExhausted, Unimplemented
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


def test_parts_not_implemented_yet_say_so() -> None:
    lt = _lt()
    lt.scenarios[0].sequence.scenarios.add().run.add().delay.duration = "1s"
    assert lt.scenarios[0].WhichOneof("spec") == "sequence"
    with pytest.raises(Unimplemented, match="sequence"):
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
