"""Fuzz: load-test files through the loader (``chaperon.core.files``) and the compiler's front
end (``check_load_test``).

Whatever the text, the loader answers with a load test or ``LoadTestFileError`` (one line),
and the front end with nothing or a domain error (``InvalidArgument``, ``ResourceExhausted``,
``Unimplemented``): never RecursionError, MemoryError, TypeError, nor a hang (each example
has a deadline). The documents are YAML and JSON load tests garbled by insertions of the
tokens that matter to a parser (anchors, aliases, merge keys, tags, brackets, indentation,
control characters), deletions and duplications; JSON values of every kind put where a load
test has its fields; plain random text and bytes; and, for the front end alone, messages
drawn field by field from the schema (``support.fuzz``) or mutated from a valid one.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzz import json_values, messages, mutated, strings
from support.loadtests import minimal_load_test

from chaperon.core.errors import InvalidArgument, ResourceExhausted, Unimplemented
from chaperon.core.files import load_file, load_json, load_yaml
from chaperon.core.lang import check_load_test
from chaperon.core.loadtest import LoadTestFileError, load_test_from_dict
from chaperon.v1 import loadtest_pb2

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    database=None,  # nothing written into the shared tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BASE: dict[str, Any] = minimal_load_test("http://127.0.0.1:9", concurrency=2, duration="1s")
BASE["config"]["headers"] = {"X-A": "1"}
BASE["scenarios"][0]["scenario"]["run"] += [
    {"http": {"method": "POST", "path": "/x/{{id}}", "json": {"a": [1, {"b": "c"}]}}},
    {"repeat": {"count": 2, "steps": [{"delay": {"duration": "1ms"}}]}},
    {"run_scenario": {"name": "other"}},
]
BASE["scenarios"].append(
    {"concurrency": 1, "sequence": {"scenarios": [{"name": "other", "run": [{"abort": {}}]}]}}
)
YAML_TEXT = """\
name: fuzz
defaults: &defaults {concurrency: 2, duration: 1s}
config:
  base_url: http://127.0.0.1:9
  list: &l [a, b, c]
  again: *l
scenarios:
  - <<: *defaults
    scenario:
      name: root
      run:
        - http: {method: GET, path: /}
        - http:
            method: POST
            path: "/x/{{ id }}"
            json: {a: [1, {b: c}]}
        - repeat: {count: 2, steps: [{delay: {duration: 1ms}}]}
"""
JSON_TEXT = json.dumps(BASE, indent=1)

YAML_TOKENS = [
    "&a ", "*a", "&b ", "*b", "<<: *a\n", "<<: ", "[", "]", "{", "}", ": ", ":", "- ", "-",
    "\n", "\n  ", "    ", "? ", "|\n", ">-\n", "'", '"', "# ", "---\n", "...\n", "%YAML 1.1\n",
    "!!str ", "!!int ", "!!float ", "!!binary ", "!!set ", "!!omap ", "!!timestamp ", "!!null ",
    "!!python/object:os.system ", "!custom ", "~", "null", ".nan", ".inf", "-.inf", "1e999",
    "0x1F", "0o17", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "yes", "on", "1_000",
    "\t", "\x00", "\x1b[2J", "\u0085", "\ufeff", "\u202e", "é", "\U0001f600", ",", "&", "*",
]  # fmt: skip
JSON_TOKENS = [
    "{", "}", "[", "]", ",", ":", '"', "\\", "\\u0000", "\\ud800", "null", "true", "1e999",
    "-0", "NaN", "Infinity", "\x00", "\x1b", "é", " ", "\n", '"scenarios"', '"config"',
]  # fmt: skip


@st.composite
def garbled(draw: Any, text: str, tokens: list[str]) -> str:
    """``text`` with a few insertions of ``tokens``, deletions and duplications."""
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "insert", "delete", "duplicate"]))
        if action == "insert":
            text = text[:pos] + draw(st.sampled_from(tokens) | strings(4)) + text[pos:]
        else:
            end = min(len(text), pos + draw(st.integers(1, 40)))
            piece = text[pos:end]
            if action == "delete":
                text = text[:pos] + text[end:]
            else:
                text = text[:pos] + piece * draw(st.integers(2, 5)) + text[pos:]
    return text


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


@st.composite
def replaced(draw: Any) -> Any:
    """The base load test with one to three of its values replaced by any JSON value."""
    data = json.loads(JSON_TEXT)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(json_values(depth=3))
    return data


def _front_end(load: Any) -> None:
    """``load()`` then check the load test: only the documented errors may come out."""
    try:
        lt = load()
    except LoadTestFileError as exc:
        assert "\n" not in str(exc)
        return
    try:
        check_load_test(lt)
    except (InvalidArgument, ResourceExhausted, Unimplemented):
        pass


@FUZZ
@given(garbled(YAML_TEXT, YAML_TOKENS))
def test_garbled_yaml(text: str) -> None:
    _front_end(lambda: load_test_from_dict(load_yaml(text, "f.yaml"), "f.yaml"))


@FUZZ
@given(garbled(JSON_TEXT, JSON_TOKENS))
def test_garbled_json(text: str) -> None:
    _front_end(lambda: load_test_from_dict(load_json(text, "f.json"), "f.json"))


@FUZZ
@given(replaced())
def test_any_value_in_any_field(data: Any) -> None:
    _front_end(lambda: load_test_from_dict(data, "f.json"))
    text = yaml.safe_dump(data, allow_unicode=True)
    _front_end(lambda: load_test_from_dict(load_yaml(text, "f.yaml"), "f.yaml"))


@FUZZ
@given(st.text(max_size=300) | st.sampled_from(YAML_TOKENS + JSON_TOKENS))
def test_random_text(text: str) -> None:
    _front_end(lambda: load_test_from_dict(load_yaml(text, "f.yaml"), "f.yaml"))
    _front_end(lambda: load_test_from_dict(load_json(text, "f.json"), "f.json"))


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["f.json", "f.yaml", "f.yml"]))
def test_random_bytes_in_a_file(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, name: str
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    _front_end(lambda: load_file(str(path)))


@FUZZ
@given(messages(loadtest_pb2.LoadTest.DESCRIPTOR) | mutated(load_test_from_dict(BASE)))
def test_any_message(lt: loadtest_pb2.LoadTest) -> None:
    _front_end(lambda: lt)
