"""Duration strings, load-test files, config merging and the session splitter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.loadtests import minimal_load_test

from chaperon.core.durations import DurationError, parse_duration_ns
from chaperon.core.files import load_file
from chaperon.core.loadtest import (
    LoadTestFileError,
    deep_merge,
    effective_config,
    metric_key,
    parse_target,
)
from chaperon.v1 import loadtest_pb2

MINIMAL = minimal_load_test("http://127.0.0.1:8080", concurrency=50, duration="5s")


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("5s", 5 * 10**9),
        ("500ms", 5 * 10**8),
        ("1.5s", 15 * 10**8),
        ("2m", 120 * 10**9),
        ("1m30s", 90 * 10**9),
        ("250us", 250_000),
        ("1h", 3600 * 10**9),
        ("0", 0),
    ],
)
def test_durations_parse(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "5", "abc", "5 s", "-1s", "1d", "s5", "25h"])
def test_bad_durations_raise(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration_ns(text)


def test_json_and_yaml_files_give_the_same_message(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "a.json").write_text(json.dumps(MINIMAL))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(MINIMAL))
    assert load_file(str(tmp_path / "a.json")) == load_file(str(tmp_path / "a.yaml"))


def test_camel_case_and_request_wrapper_accepted(tmp_path: Path) -> None:
    data = {
        "load_test": {**MINIMAL, "scenarios": [{**MINIMAL["scenarios"][0], "sessionName": "s"}]}
    }
    (tmp_path / "b.json").write_text(json.dumps(data))
    assert load_file(str(tmp_path / "b.json")).scenarios[0].session_name == "s"


def test_python_file(tmp_path: Path) -> None:
    (tmp_path / "lt.py").write_text(f"load_test = {MINIMAL!r}\n")
    assert load_file(str(tmp_path / "lt.py")).name == "smoke"


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.json", None, "no such file"),
        ("broken.json", "{", "not valid JSON at line 1"),
        ("broken.yaml", "a: [", "not valid YAML"),
        ("list.json", "[1]", "expected an object"),
        ("unknown.json", '{"scenarioz": []}', "scenarioz"),
        ("raises.py", "raise RuntimeError('boom')", "RuntimeError: boom"),
        ("empty.py", "x = 1", "load_test"),
    ],
)
def test_bad_files_give_one_clear_line(
    tmp_path: Path, name: str, content: str | None, needle: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(LoadTestFileError) as info:
        load_file(str(path))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_deep_merge_and_effective_config() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}}) == {
        "a": {"b": 3, "c": 2},
        "d": 1,
    }
    lt = loadtest_pb2.LoadTest()
    lt.config.update({"base_url": "http://a:1", "h": {"x": "1"}})
    entry = lt.scenarios.add()
    entry.config.update({"h": {"y": "2"}})
    assert effective_config(lt, entry) == {"base_url": "http://a:1", "h": {"x": "1", "y": "2"}}


def test_targets_and_metric_keys() -> None:
    t = parse_target("http://127.0.0.1:8080/api/")
    assert (t.host, t.port, t.base_path, t.host_header) == (
        "127.0.0.1",
        8080,
        "/api",
        "127.0.0.1:8080",
    )
    assert parse_target("http://[::1]/").host_header == "[::1]"
    step = loadtest_pb2.HttpStep(method="get", path="/users/1")
    assert metric_key(step) == "GET /users/1"
    assert metric_key(loadtest_pb2.HttpStep(method="POST", url="http://x:1/a?b=1")) == "POST /a?b=1"
    assert metric_key(loadtest_pb2.HttpStep(method="GET", path="/", metric="root")) == "root"
