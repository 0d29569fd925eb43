"""The compiler's first pass (``chaperon.core.lang.shape``): a load test is weighed before any
rule looks inside it, so what a submission costs is bounded by the limits, not by its size.

Each refusal here is also timed: the cases are the ones that used to cost the master seconds
to minutes of CPU (a 16 MiB submission of 700k entries, twenty steps that each run a
scenario that runs itself) and must now be answered in a fraction of a second.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from support.loadtests import deepest_load_test, many_entries, minimal_load_test, nested

from chaperon.core.errors import InvalidArgument, ResourceExhausted
from chaperon.core.lang import check_load_test
from chaperon.core.lang.limits import (
    MAX_CONFIG_KEYS,
    MAX_ELEMENTS,
    MAX_ENTRIES,
    MAX_LOAD_TEST_BYTES,
    MAX_SCENARIO_DEPTH,
    MAX_STEPS,
    MAX_STRUCT_DEPTH,
)
from chaperon.core.loadtest import load_test_from_dict
from chaperon.core.text import printable
from chaperon.v1 import loadtest_pb2, master_pb2, results_pb2, worker_pb2

BASE = "http://127.0.0.1:9"
# Refusals of the first pass, on this shared 2-core machine: well under a second.
FAST_S = 0.5
GET = {"http": {"method": "GET", "path": "/"}}


def _lt(run: list[Any] | None = None, **top: Any) -> dict[str, Any]:
    data = minimal_load_test(BASE, concurrency=1, duration="1s")
    if run is not None:
        data["scenarios"][0]["scenario"]["run"] = run
    data.update(top)
    return data


def _refusal(data: dict[str, Any] | loadtest_pb2.LoadTest) -> tuple[Exception, float]:
    lt = data if isinstance(data, loadtest_pb2.LoadTest) else load_test_from_dict(data)
    started = time.perf_counter()
    with pytest.raises((InvalidArgument, ResourceExhausted)) as info:
        check_load_test(lt)
    return info.value, time.perf_counter() - started


def _fields(exc: Exception) -> list[str]:
    assert isinstance(exc, InvalidArgument), exc
    return [f for f, _ in exc.violations]


# -- weight ------------------------------------------------------------------------------------


def test_a_16_mib_submission_is_refused_before_any_rule_runs() -> None:
    lt = loadtest_pb2.LoadTest.FromString(many_entries(16 * 1024 * 1024))
    assert len(lt.scenarios) > 500_000
    exc, elapsed = _refusal(lt)
    assert isinstance(exc, ResourceExhausted)
    assert f"more than {MAX_LOAD_TEST_BYTES}" in str(exc)
    assert elapsed < FAST_S


def test_counts_are_checked_before_what_they_count() -> None:
    # 101 entries, each with a mistake: the count answers, not 101 violations.
    data = _lt()
    entry = data["scenarios"][0]
    data["scenarios"] = [
        {**copy.deepcopy(entry), "concurrency": -1} for _ in range(MAX_ENTRIES + 1)
    ]
    exc, _ = _refusal(data)
    assert isinstance(exc, ResourceExhausted)
    assert "entries" in str(exc)


def test_steps_in_blocks_count_and_are_refused_early() -> None:
    body = [{"delay": {"duration": "x"}}] * (MAX_STEPS + 1)  # each one wrong, never looked at
    exc, elapsed = _refusal(_lt([{"repeat": {"count": 1, "steps": body}}]))
    assert isinstance(exc, ResourceExhausted)
    assert f"more than {MAX_STEPS} steps" in str(exc)
    assert elapsed < FAST_S


def test_a_map_of_a_hundred_thousand_headers_is_refused_early() -> None:
    headers = {f"x-{i}": "{{nope}}" for i in range(MAX_ELEMENTS + 1)}  # each one wrong
    exc, elapsed = _refusal(_lt([{"http": {"method": "GET", "path": "/", "headers": headers}}]))
    assert isinstance(exc, ResourceExhausted)
    assert f"more than {MAX_ELEMENTS} messages" in str(exc)
    assert elapsed < 2 * FAST_S


def test_config_keys_are_counted() -> None:
    config = {f"k{i}": i for i in range(MAX_CONFIG_KEYS + 1)}
    exc, _ = _refusal(_lt(config={"base_url": BASE, **config}))
    assert isinstance(exc, ResourceExhausted)
    assert "config: more than" in str(exc)


def test_a_body_larger_than_the_limit_is_refused() -> None:
    body = "x" * (MAX_LOAD_TEST_BYTES + 1)
    exc, _ = _refusal(_lt([{"http": {"method": "POST", "path": "/", "body": body}}]))
    assert isinstance(exc, ResourceExhausted)


# -- Struct depth ------------------------------------------------------------------------------


def test_config_nests_at_most_the_documented_depth() -> None:
    check_load_test(load_test_from_dict(_lt(config={"base_url": BASE, "a": nested(15)})))
    assert MAX_STRUCT_DEPTH == 16  # config is level 1, each "a" one more
    exc, _ = _refusal(_lt(config={"base_url": BASE, "a": nested(16)}))
    assert _fields(exc) == ["config" + ".a" * MAX_STRUCT_DEPTH]


def test_json_bodies_and_lists_nest_at_most_the_documented_depth() -> None:
    deep: Any = 1
    for _ in range(MAX_STRUCT_DEPTH + 1):
        deep = [deep]
    exc, _ = _refusal(_lt([{"http": {"method": "POST", "path": "/", "json": {"x": deep}}}]))
    path = "scenarios[0].scenario.run[0].http.json.x" + "[0]" * (MAX_STRUCT_DEPTH - 1)
    assert _fields(exc) == [path]


def test_the_deepest_load_test_allowed_still_parses_in_every_message_that_carries_it() -> None:
    lt = load_test_from_dict(deepest_load_test(MAX_STRUCT_DEPTH))
    check_load_test(lt)
    run = results_pb2.LoadTestRun(id="run-1", load_test=lt)
    carriers = [
        master_pb2.RunProgress(id="run-1", run=run),
        master_pb2.ListLoadTestRunsResponse(runs=[run]),
        master_pb2.SubmitLoadTestsRequest(load_tests=[lt]),
        worker_pb2.Assignment(load_test=lt),
    ]
    for message in carriers:
        assert type(message).FromString(message.SerializeToString()) == message
    # One level deeper is refused, naming the field.
    exc, _ = _refusal(load_test_from_dict(deepest_load_test(MAX_STRUCT_DEPTH + 1)))
    (field,) = _fields(exc)
    assert field.startswith("scenarios[0].sequence.scenarios[0].run[0].run_scenario.scenario")
    assert field.endswith(".http.json" + ".a" * MAX_STRUCT_DEPTH)


# -- control characters ------------------------------------------------------------------------

ESC = "\x1b[31m"


@pytest.mark.parametrize("bad", [ESC, "a\nb", "nul\x00", "del\x7f", "c1\x85", "tab\t"])
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d, s: d.update(name=s), "name"),
        (lambda d, s: d.update(tag=s), "tag"),
        (lambda d, s: d["scenarios"][0].update(session_name=s), "scenarios[0].session_name"),
        (lambda d, s: d["scenarios"][0]["scenario"].update(name=s), "scenarios[0].scenario.name"),
        (
            lambda d, s: d["scenarios"][0]["scenario"]["run"][0]["http"].update(metric=s),
            "scenarios[0].scenario.run[0].http.metric",
        ),
        (
            lambda d, s: d["scenarios"][0]["scenario"]["run"][0]["http"].update(path="/" + s),
            "scenarios[0].scenario.run[0].http.path",
        ),
        (
            lambda d, s: d["scenarios"][0]["scenario"]["run"].append({"abort": {"reason": s}}),
            "scenarios[0].scenario.run[1].abort.reason",
        ),
        (
            lambda d, s: d["scenarios"][0]["scenario"]["run"].append(
                {"add_metric": {"key": s, "value": 1}}
            ),
            "scenarios[0].scenario.run[1].add_metric.key",
        ),
        (
            lambda d, s: d["scenarios"][0]["scenario"]["run"].append({**GET, "name": s}),
            "scenarios[0].scenario.run[1].name",
        ),
        (
            lambda d, s: d.update(thresholds=[{"metric": s, "stat": "p99", "max": 1}]),
            "thresholds[0].metric",
        ),
        (
            lambda d, s: d["scenarios"][0]["scenario"]["run"][0]["http"].update(query={s: "1"}),
            f"scenarios[0].scenario.run[0].http.query[{'{s}'}]",
        ),
    ],
)
def test_control_characters_in_names_keys_and_reasons_are_refused(
    change: Any, field: str, bad: str
) -> None:
    data = _lt()
    change(data, bad)
    exc, _ = _refusal(data)
    field = field.replace("{s}", printable(bad))  # escaped in a path too
    assert field in _fields(exc), exc
    assert "control characters" in dict(exc.violations)[field]  # type: ignore[attr-defined]


def test_payloads_may_hold_any_character_and_header_values_a_tab() -> None:
    run = [
        {"http": {"method": "POST", "path": "/", "body": "\x00\x1b\r\n\x85"}},
        {
            "http": {
                "method": "POST",
                "path": "/",
                "headers": {"X-Tab": "a\tb", "X-Utf8": "café €"},
                "form": {"fields": {"f": "\x1b"}},
            }
        },
        {"assign": {"values": {"v": "\x1b"}}},
    ]
    check_load_test(load_test_from_dict(_lt(run, config={"base_url": BASE, "k": "\x1b\n"})))


@pytest.mark.parametrize("value", ["a\x1bb", "a\rb", "a\nb", "\x00", "\x7f"])
def test_header_values_refuse_control_characters_but_the_tab(value: str) -> None:
    exc, _ = _refusal(_lt([{"http": {"method": "GET", "path": "/", "headers": {"X-A": value}}}]))
    assert _fields(exc) == ["scenarios[0].scenario.run[0].http.headers[X-A]"]


def test_a_config_value_put_in_a_header_is_checked_too() -> None:
    run = [{"http": {"method": "GET", "path": "/", "headers": {"X-A": "v={{ token }}"}}}]
    exc, _ = _refusal(_lt(run, config={"base_url": BASE, "token": "t\r\nX-Injected: 1"}))
    assert _fields(exc) == ["scenarios[0].scenario.run[0].http.headers[X-A]"]
    assert "'{{token}}'" in exc.violations[0][1]  # type: ignore[attr-defined]


def test_paths_may_hold_spaces_and_non_ascii_but_no_fragment() -> None:
    run = [{"http": {"method": "GET", "path": "/caf\u00e9 menu?q=a b"}}]
    check_load_test(load_test_from_dict(_lt(run)))
    exc, _ = _refusal(_lt([{"http": {"method": "GET", "path": "/a#b"}}]))
    assert _fields(exc) == ["scenarios[0].scenario.run[0].http.path"]


# -- scenarios run by name ---------------------------------------------------------------------


def _named(scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    data = _lt()
    entry = data["scenarios"][0]
    entry.pop("scenario")
    entry["sequence"] = {"scenarios": scenarios}
    return data


def test_a_scenario_that_runs_itself_twenty_times_is_refused_at_once() -> None:
    # Walked one path at a time this was 20^8 paths: minutes for 100 bytes.
    run = [{"run_scenario": {"name": "a"}}] * 20
    exc, elapsed = _refusal(_named([{"name": "a", "run": run}]))
    assert _fields(exc) == ["scenarios[0].sequence.scenarios[0].run[0].run_scenario.name"]
    assert "runs itself" in str(exc) and f"nests at most {MAX_SCENARIO_DEPTH}" in str(exc)
    assert elapsed < FAST_S


def test_a_cycle_through_several_names_is_refused() -> None:
    scenarios = [
        {"name": "a", "run": [GET, {"run_scenario": {"name": "b"}}]},
        {
            "name": "b",
            "run": [{"repeat": {"count": 2, "steps": [{"run_scenario": {"name": "a"}}]}}],
        },
    ]
    exc, _ = _refusal(_named(scenarios))
    assert "'a' -> 'b' -> 'a'" in str(exc)


def test_scenarios_that_expand_to_too_many_steps_are_refused_at_once() -> None:
    # Eight levels of twenty references: 20^7 steps from 1 KB.
    scenarios = [
        {"name": f"s{d}", "run": [{"run_scenario": {"name": f"s{d + 1}"}}] * 20}
        for d in range(MAX_SCENARIO_DEPTH - 1)
    ]
    scenarios.append({"name": f"s{MAX_SCENARIO_DEPTH - 1}", "run": [GET]})
    exc, elapsed = _refusal(_named(scenarios))
    assert isinstance(exc, ResourceExhausted)
    assert "inlined" in str(exc)
    assert elapsed < FAST_S


def test_a_long_chain_of_names_is_refused_without_recursion() -> None:
    n = 3000
    scenarios = [
        {"name": f"s{i}", "run": [{"run_scenario": {"name": f"s{i + 1}"}}]} for i in range(n)
    ]
    scenarios.append({"name": f"s{n}", "run": [GET]})
    exc, elapsed = _refusal(_named(scenarios))
    assert f"nests at most {MAX_SCENARIO_DEPTH} deep" in str(exc)
    assert elapsed < 2 * FAST_S


def test_shared_scenarios_and_children_on_named_scenarios_are_still_valid() -> None:
    login = {"name": "login", "run": [GET, GET]}
    parent = {
        "name": "parent",
        "run": [{"run_scenario": {"name": "login"}}, {"async": {"name": "kid", "scenario": "kid"}}],
    }
    # The child's scenario runs the parent in its init, which a child session never runs.
    kid = {"name": "kid", "init": [{"run_scenario": {"name": "parent"}}], "run": [GET]}
    data = _named([parent, login, kid])
    data["scenarios"] += [
        {
            "concurrency": 1,
            "scenario": {"name": f"e{i}", "run": [{"run_scenario": {"name": "login"}}]},
        }
        for i in range(50)
    ]
    check_load_test(load_test_from_dict(data))
