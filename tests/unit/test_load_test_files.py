"""Load-test files are read with limits (``chaperon.core.files``): size, nesting, YAML
aliases. Each refusal is one line naming the file and the limit, and comes at once, whatever
the file would expand to."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.loadtests import deepest_load_test

from chaperon.core.files import MAX_EXPANDED_SIZE, MAX_FILE_BYTES, MAX_FILE_DEPTH, load_file
from chaperon.core.lang.limits import MAX_STRUCT_DEPTH
from chaperon.core.loadtest import LoadTestFileError

FAST_S = 1.0
MINIMAL_YAML = """\
name: smoke
config: {base_url: "http://127.0.0.1:9"}
scenarios:
  - concurrency: 1
    duration: 1s
    scenario: {name: root, run: [{http: {method: GET, path: /}}]}
"""


def alias_bomb(levels: int = 12, fan: int = 10) -> str:
    """A "billion laughs": each anchor a list of ``fan`` aliases of the one before."""
    lines = ["  a0: &a0 [" + ", ".join(["lol"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return MINIMAL_YAML.replace("config: {", "config:\n" + "\n".join(lines) + "\n  x: {")


def _refused(path: Path) -> str:
    started = time.perf_counter()
    with pytest.raises(LoadTestFileError) as info:
        load_file(str(path))
    assert time.perf_counter() - started < FAST_S
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 2000
    assert f"more than {MAX_EXPANDED_SIZE} values and characters" in _refused(path)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(MINIMAL_YAML + "extra: &x [1, *x]\n")
    assert "inside its own anchor" in _refused(path)


def test_a_few_aliases_and_merge_keys_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "name: smoke\n"
        "config: {base_url: 'http://127.0.0.1:9'}\n"
        "scenarios:\n"
        "  - &entry {concurrency: 2, duration: 1s, scenario: {name: a, run: [&get {http: "
        "{method: GET, path: /}}, *get]}}\n"
        "  - {<<: *entry, concurrency: 3}\n"
    )
    lt = load_file(str(path))
    assert [e.concurrency for e in lt.scenarios] == [2, 3]
    assert len(lt.scenarios[0].scenario.run) == 2


@pytest.mark.parametrize("ext", ["json", "yaml"])
def test_nesting_deeper_than_the_limit_is_refused_at_once(tmp_path: Path, ext: str) -> None:
    deep = "[" * 200_000 + "]" * 200_000  # libyaml takes minutes, json.loads recursion
    path = tmp_path / f"deep.{ext}"
    path.write_text('{"name": "x", "config": {"a": ' + deep + "}}")
    assert f"nest more than {MAX_FILE_DEPTH} deep" in _refused(path)


@pytest.mark.parametrize("ext", ["json", "yaml"])
def test_the_deepest_load_test_allowed_is_within_the_nesting_limit(
    tmp_path: Path, ext: str
) -> None:
    path = tmp_path / f"deepest.{ext}"
    path.write_text(json.dumps(deepest_load_test(MAX_STRUCT_DEPTH)))  # JSON is YAML too
    assert load_file(str(path)).name == "deepest"


def test_a_file_larger_than_the_limit_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert "larger than 16 MiB" in _refused(path)


def test_an_endless_file_is_not_read_for_ever() -> None:
    message = _refused(Path("/dev/zero"))
    assert "larger than" in message


def test_bytes_that_are_not_utf8_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL_YAML.replace("smoke", "caf\u00e9").encode("latin-1"))
    assert "not UTF-8 text" in _refused(path)


def test_malformed_yaml_scalars_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "int.yaml"
    path.write_text("name: !!int ''\n")
    assert "not valid YAML" in _refused(path)
    path.write_text("name: !!timestamp 2001-13-45\n")
    assert "not valid YAML" in _refused(path)
