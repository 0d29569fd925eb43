"""Load-test files that are not a load test's form: what the loader says, line by line.

Every message names the file, the line (YAML and JSON alike), the field path in snake_case
and what to write instead, and never protobuf's parser text (camelCase paths, message type
names, the list of every field). The parser and ``jsonform`` are held together on random
values: whatever the parser refuses, ``jsonform`` finds a problem in.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import json_values

from chaperon.core.files import load_file, read_load_test
from chaperon.core.jsonform import DURATION_FIELDS, form_problems
from chaperon.core.loadtest import LoadTestFileError, load_test_from_dict
from chaperon.core.positions import Positions
from chaperon.core.spelling import closest, edit_distance
from chaperon.v1 import loadtest_pb2

SMOKE_YAML = """\
name: smoke
config: {base_url: "http://127.0.0.1:9"}
scenarios:
  - concurency: 5
    scenario: {name: root, run: [{http: {method: GET, path: /}}]}
"""

DURATION_YAML = """\
name: smoke
config: {base_url: "http://127.0.0.1:9"}
scenarios:
  - concurrency: 5
    scenario: {name: root, run: [{http: {method: GET, path: /}}]}
    duration: 5
"""

SMOKE_JSON = """\
{
  "name": "smoke",
  "config": {"base_url": "http://127.0.0.1:9"},
  "scenarios": [
    {"concurency": 5,
     "duration": 5,
     "scenario": {"name": "root", "run": [{"http": {"method": "GET", "path": "/"}}]}}
  ]
}
"""


def _problems(tmp_path: Path, name: str, text: str) -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LoadTestFileError) as info:
        load_file(str(path))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(info.value.problems[0])
    for line in info.value.problems:
        _assert_no_parser_text(line)
    return [line.removeprefix(f"{path}: ") for line in info.value.problems]


def _assert_no_parser_text(line: str) -> None:
    for parser_text in ("Message type", "has no field named", "Failed to parse", "ScenarioEntry",
                        "LoadTest.", "Available Fields", "bytes-like"):  # fmt: skip
        assert parser_text not in line, line


def test_a_misspelt_field_in_yaml_gives_the_line_the_path_and_the_field_meant(tmp_path):
    assert _problems(tmp_path, "smoke.yaml", SMOKE_YAML) == [
        "line 4: scenarios[0]: unknown field 'concurency' (did you mean 'concurrency'?)"
    ]


def test_a_duration_without_unit_in_yaml_says_what_a_duration_is(tmp_path):
    assert _problems(tmp_path, "smoke.yaml", DURATION_YAML) == [
        "line 6: scenarios[0].duration: expected a duration string such as '5s' or '1m30s',"
        " got the number 5"
    ]


def test_json_gives_the_same_messages_with_its_own_lines(tmp_path):
    assert _problems(tmp_path, "smoke.json", SMOKE_JSON) == [
        "line 5: scenarios[0]: unknown field 'concurency' (did you mean 'concurrency'?)",
        "line 6: scenarios[0].duration: expected a duration string such as '5s' or '1m30s',"
        " got the number 5",
    ]


def test_the_message_starts_with_the_file(tmp_path):
    path = tmp_path / "smoke.yaml"
    path.write_text(SMOKE_YAML)
    with pytest.raises(LoadTestFileError) as info:
        load_file(str(path))
    assert str(info.value) == (
        f"{path}: line 4: scenarios[0]: unknown field 'concurency' (did you mean 'concurrency'?)"
    )


STEPS_YAML = """\
name: steps
config: {base_url: "http://127.0.0.1:9"}
scenarios:
  - concurrency: 1
    scenario:
      name: root
      run:
        - htp: {method: GET, path: /}
        - method: GET
        - http:
            method: GET
            path: /
            headers: {X-Count: 5}
        - delay: {duration: 1ms}
          http: {method: GET, path: /}
  - concurrency: ten
    iterations: 2.5
    sessionNme: x
    run: []
    scenario: []
  - concurrency: 1
    arrival_rate: {per_second: fast, stages: {duration: 1s}}
    scenario:
      name: b
      run:
        - http: {method: GET, path: /, extract: [null]}
        - ws_send: {binary: "a"}
        - repeat: {count: 2, traced: "yes"}
thresholds:
  - {metric: "GET /", max: .inf}
  - {metric: "GET /", stat: 99}
"""


def test_every_problem_of_a_yaml_file_in_the_order_it_is_written(tmp_path):
    assert _problems(tmp_path, "steps.yaml", STEPS_YAML) == [
        "line 8: scenarios[0].scenario.run[0]: unknown field 'htp' (did you mean 'http'?)",
        "line 9: scenarios[0].scenario.run[1]: unknown field 'method'"
        " (it is a field of http: put it under 'http')",
        "line 13: scenarios[0].scenario.run[2].http.headers[X-Count]: expected a string,"
        " got the number 5 (put it in quotes)",
        "line 15: scenarios[0].scenario.run[3]: give only one of http, delay, random_delay,"
        " repeat, loop, ws_connect, ws_send, ws_recv, ws_await_recv, ws_close, cc_spread,"
        " async, await, await_all, signal, signal_parent, await_signal, run_scenario, assign,"
        " update_assign, delete_assign, retry_on_error, add_metric, call_traced, abort,"
        " python ('delay' is given already)",
        "line 16: scenarios[1].concurrency: expected a whole number such as 10,"
        " got the string 'ten'",
        "line 17: scenarios[1].iterations: expected a whole number such as 10, got the number 2.5",
        "line 18: scenarios[1]: unknown field 'sessionNme' (did you mean 'session_name'?)",
        "line 19: scenarios[1]: unknown field 'run' (it is a field of scenario: put it under"
        " 'scenario')",
        "line 20: scenarios[1].scenario: expected an object, got a list",
        "line 22: scenarios[2].arrival_rate.per_second: expected a number such as 2.5,"
        " got the string 'fast'",
        "line 22: scenarios[2].arrival_rate.stages: expected a list (of objects), got an object"
        " (in YAML, start each item with '- ')",
        "line 26: scenarios[2].scenario.run[0].http.extract[0]: expected an object, got null",
        "line 27: scenarios[2].scenario.run[1].ws_send.binary: expected base64 text such as"
        " 'aGVsbG8=', got the string 'a'",
        "line 28: scenarios[2].scenario.run[2].repeat.traced: expected true or false,"
        " got the string 'yes'",
        "line 30: thresholds[0].max: expected a number such as 2.5, got the number inf"
        " (write 'Infinity' in quotes)",
        "line 31: thresholds[1].stat: expected a string, got the number 99 (put it in quotes)",
    ]


def test_yaml_types_that_json_has_not_are_named(tmp_path):
    text = """\
name: 2024-01-01
config: {base_url: "http://127.0.0.1:9", since: 2024-01-01}
scenarios: [{concurrency: 1, scenario: {name: root}}]
"""
    assert _problems(tmp_path, "t.yaml", text) == [
        "line 1: name: expected a string, got a YAML date (2024-01-01: put it in quotes to make"
        " it a string)",
        "line 2: config.since: expected a JSON value, got a YAML date (2024-01-01: put it in"
        " quotes to make it a string)",
    ]


def test_json_escapes_that_are_not_text_are_named(tmp_path):
    text = '{"name": "a\\ud800", "scenarios": []}'
    assert _problems(tmp_path, "t.json", text) == [
        "line 1: name: holds a lone surrogate (\\ud800), which is not text"
    ]


def test_a_request_body_gets_its_lines_too(tmp_path):
    text = json.dumps({"load_test": {"name": "x", "scenarioz": []}}, indent=2)
    assert _problems(tmp_path, "t.json", text) == [
        "line 4: unknown field 'scenarioz' (did you mean 'scenarios'?)"
    ]


def test_a_merge_key_is_found_where_the_anchor_writes_it(tmp_path):
    text = """\
defaults: &defaults
  concurrency: 2
  durration: 1s
name: merged
scenarios:
  - <<: *defaults
    scenario: {name: root}
"""
    lines = _problems(tmp_path, "t.yaml", text)
    assert lines[0] == "line 1: unknown field 'defaults' (the fields here are: name, config,"\
        " scenarios, timeout, tag, thresholds)"  # fmt: skip
    assert lines[1] == "line 3: scenarios[0]: unknown field 'durration' (did you mean 'duration'?)"


def test_camel_case_fields_are_named_in_snake_case(tmp_path):
    text = '{"scenarios": [{"arrivalRate": {"perSecond": "x"}, "sessionName": 3}]}'
    assert _problems(tmp_path, "t.json", text) == [
        "line 1: scenarios[0].arrival_rate.per_second: expected a number such as 2.5,"
        " got the string 'x'",
        "line 1: scenarios[0].session_name: expected a string, got the number 3 (put it in quotes)",
    ]


def test_only_the_parsers_refusals_are_looked_at():
    # json_format takes a number as a string of digits, an integral float as an int, a
    # oneof's null as unset: so does jsonform, and a good file costs no walk at all.
    data = {"scenarios": [{"concurrency": "3", "iterations": 2.0, "sequence": None,
                           "scenario": {"name": "x"}}]}  # fmt: skip
    assert form_problems(data, loadtest_pb2.LoadTest.DESCRIPTOR) == []
    assert load_test_from_dict(data).scenarios[0].concurrency == 3


def test_a_value_nested_deeper_than_the_parser_takes_is_named():
    value: Any = "x"
    for _ in range(60):
        value = {"a": value}
    problems = form_problems({"config": value}, loadtest_pb2.LoadTest.DESCRIPTOR)
    assert len(problems) == 1
    assert "nests more than 100 levels" in problems[0].message
    assert problems[0].path.startswith("config.a.a.a")


def test_out_of_range_numbers_say_the_range():
    data = {"scenarios": [{"concurrency": 2**40}]}
    (problem,) = form_problems(data, loadtest_pb2.LoadTest.DESCRIPTOR)
    assert str(problem) == (
        "scenarios[0].concurrency: expected a whole number from -2147483648 to 2147483647,"
        " got the number 1099511627776"
    )


def test_every_duration_field_is_a_string_and_none_is_missed():
    pool = loadtest_pb2.DESCRIPTOR
    names = {"duration", "timeout", "scenario_timeout", "interval", "backoff", "delay",
             "random_delay", "graceful_stop"}  # fmt: skip
    found = set()
    for message in pool.message_types_by_name.values():
        for field in message.fields:
            if field.type == field.TYPE_STRING and (
                field.name in names or field.full_name.startswith("chaperon.v1.RandomDelayStep")
            ):
                found.add(field.full_name)
    assert found == DURATION_FIELDS


# -- the parser and jsonform agree ---------------------------------------------------------------

BASE: dict[str, Any] = {
    "name": "x",
    "config": {"base_url": "http://127.0.0.1:9", "list": [1, {"a": None}]},
    "scenarios": [
        {
            "concurrency": 2,
            "duration": "1s",
            "arrival_rate": {"per_second": 1.5, "stages": [{"duration": "1s", "target": 2}]},
            "scenario": {
                "name": "root",
                "run": [
                    {"http": {"method": "GET", "path": "/", "headers": {"A": "1"},
                              "json": {"k": [1, "2"]}, "extract": [{"var": "v", "status": True}]}},
                    {"ws_send": {"binary": "aGk="}},
                    {"repeat": {"count": 2, "traced": True, "steps": [{"delay": {}}]}},
                    {"update_assign": {"name": "n", "add": 1}},
                ],
            },
        }
    ],
    "thresholds": [{"metric": "GET /", "stat": "p99", "max": 2}],
}  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


ODD_VALUES = st.sampled_from(
    [None, True, 1.5, -1, 2**31, 2**70, float("inf"), float("nan"), "5", "NaN", "1e3", " 1",
     "\ud800", "aGk", "***", [], {}, [None], {"x": 1}, {"": None}, {1: 2}, (1,)]
)  # fmt: skip


@st.composite
def replaced(draw: Any) -> Any:
    """BASE with one to three values replaced, or keys added, anywhere."""
    data = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        # A copy: ODD_VALUES' lists and dicts are shared by every example, and a later
        # replacement inside one would change what the next example draws (hypothesis then
        # reports its strategy as flaky).
        value = copy.deepcopy(draw(json_values(depth=2) | ODD_VALUES))
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(st.sampled_from(["sessionName", "scenario", "sequence", "add", "set",
                                          "x", "run", "statuss"]))] = value  # fmt: skip
        else:
            parent[path[-1]] = value
    return data


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(replaced())
def test_whatever_the_parser_refuses_jsonform_finds(data: Any) -> None:
    problems = form_problems(data, loadtest_pb2.LoadTest.DESCRIPTOR)
    try:
        json_format.ParseDict(data, loadtest_pb2.LoadTest())
    except Exception:  # noqa: BLE001 - every refusal of the parser
        assert problems, data
        for problem in problems:
            _assert_no_parser_text(str(problem))
    else:
        # Where the parser takes the value, jsonform finds nothing either, but where it is
        # stricter: an empty string or list where a message goes (the parser iterates over
        # it as over an object's keys, and finds none).
        for problem in problems:
            assert problem.message in (
                "expected an object, got the string ''",
                "expected an object, got a list",
            ), (problem, data)


# -- positions of the master's field paths -------------------------------------------------------

POSITIONS_YAML = """\
name: p
config:
  base_url: "http://127.0.0.1:9"
  request_timout: 5s
scenarios:
  - concurrency: 1
    sessionName: s
    scenario:
      name: root
      run:
        - http:
            method: GET
            path: /
            headers: {X-Id: "1"}
"""


@pytest.mark.parametrize(
    ("field", "line", "json_text"),
    [
        ("config.request_timout", 4, '"request_timout": "5s"'),
        ("config.base_url", 3, '"base_url": '),
        ("scenarios[0].concurrency", 6, '"concurrency": 1'),
        ("scenarios[0].session_name", 7, '"sessionName": "s"'),  # written in camelCase
        ("scenarios[0].scenario.run[0].http.method", 12, '"method": "GET"'),
        ("scenarios[0].scenario.run[0].http.headers[X-Id]", 14, '"X-Id": "1"'),
        # missing: the line of the entry that lacks it (in JSON, where its object starts)
        ("scenarios[0].duration", 6, "{"),
        ("scenarios[0].scenario.run[0].http.query.x", None, None),  # missing deeper: no line
        ("scenarios[3].duration", None, None),
        ("not a path", None, None),
    ],
)
def test_the_line_of_a_field_path_in_yaml_and_json(tmp_path, field, line, json_text):
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(POSITIONS_YAML)
    loaded = read_load_test(str(yaml_file))
    assert loaded.positions is not None
    assert loaded.positions.line_of_field(field) == line

    import yaml

    text = json.dumps(yaml.safe_load(POSITIONS_YAML), indent=1)
    json_line = Positions(text, "json").line_of_field(field)
    if json_text is None:
        assert json_line is None
    else:
        assert json_line is not None
        assert text.splitlines()[json_line - 1].strip().startswith(json_text)


def test_a_json_key_given_twice_is_found_where_json_takes_it():
    text = '{\n"name": "a",\n"name": "b"\n}'
    assert Positions(text, "json").line(["name"]) == 3
    assert Positions(text, "json").line(["nope"]) is None
    assert Positions("{broken", "json").line(["name"]) is None
    assert Positions("a: [", "yaml").line(["a"]) is None


# -- spelling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("concurency", "concurrency", 1),
        ("request_timout", "request_timeout", 1),
        ("reqeust_timeout", "request_timeout", 1),  # a swap is one edit
        ("durtaion", "duration", 1),
        ("base_ulr", "base_url", 1),
        ("cookie", "cookies", 1),
        ("abc", "abc", 0),
        ("name", "scenarios", 3),  # past the limit of 2: limit + 1
    ],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance


def test_closest_takes_both_spellings_and_ignores_case():
    fields = [("session_name", "session_name"), ("sessionName", "session_name")]
    assert closest("sessionNme", fields) == "session_name"
    assert closest("SESSION_NAME", fields) == "session_name"
    assert closest("session_name", fields) is None  # known: nothing to suggest
    assert closest("id", ["add"]) is None  # short words get one edit only
    assert closest("xyz", ["base_url"]) is None
