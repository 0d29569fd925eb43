"""The examples of docs/language.md and examples/ parse, validate and compile (no network).

A fenced block of docs/language.md is an example when its info string is
``<json|yaml|python> <steps|loadtest> <group>``:

- ``steps``: a list of steps (JSON, YAML), or Python that leaves a ``chaperon.Scenario`` in
  ``scenario``; checked as the ``run`` steps (the builder's ``init``/``teardown`` too) of a
  scenario whose config is ``{"base_url": BASE_URL}``;
- ``loadtest``: a whole load test (JSON, YAML), or Python that leaves one in ``load_test``,
  as for ``chaperon run``.

Each one is validated by the master's rules, compiled by the worker's plan compiler (python
steps allowed, ``examples/`` importable for ``hooks:sign``) and handed to the engine's
constructor, which checks the plan as it would before a run (nothing is started). The blocks
of one group are the same example written three ways: the group must have one block per
language and they must give equal protobuf messages. ``examples/stateful.*`` must equal the
doc's ``stateful`` group.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaperon.builder import LoadTest, Scenario
from chaperon.core.files import load_file
from chaperon.core.loadtest import load_test_from_dict
from chaperon.v1 import loadtest_pb2, worker_pb2
from master_service.validation import validate_load_test
from worker_service.plan import compile_assignment

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "language.md"
EXAMPLES = ROOT / "examples"
BASE_URL = "http://127.0.0.1:8080"
LANGUAGES = ("json", "yaml", "python")
# Examples that show the language as documented but that the engine refuses today: the group,
# and why (strict: once fixed, the marker must go).
KNOWN_ENGINE_BUGS: dict[str, str] = {}
_FENCE = re.compile(
    r"^```(?P<lang>json|yaml|python) (?P<kind>steps|loadtest) (?P<group>[\w-]+)\n"
    r"(?P<text>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    lang: str
    kind: str
    group: str
    text: str
    line: int

    @property
    def id(self) -> str:
        return f"{self.group}-{self.lang}"


def _blocks() -> list[Block]:
    doc = DOC.read_text(encoding="utf-8")
    return [
        Block(m["lang"], m["kind"], m["group"], m["text"], doc.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(doc)
    ]


BLOCKS = _blocks()
GROUPS = sorted({b.group for b in BLOCKS})


def _run_python(text: str, name: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "__docs_example__"}
    exec(compile(text, f"<docs/language.md {name}>", "exec"), namespace)
    return namespace[name]


def _scenario_parts(block: Block) -> dict[str, Any]:
    """A steps block as a Scenario's JSON form (without a name)."""
    if block.lang == "python":
        scenario = _run_python(block.text, "scenario")
        assert isinstance(scenario, Scenario), "a python steps block sets `scenario`"
        parts = scenario.to_dict()
        parts.pop("name")
        return parts
    steps = json.loads(block.text) if block.lang == "json" else yaml.safe_load(block.text)
    assert isinstance(steps, list), "a steps block is a list of steps"
    return {"run": steps}


def load(block: Block) -> loadtest_pb2.LoadTest:
    """The load test a block stands for."""
    if block.kind == "steps":
        scenario = {"name": "doc", **_scenario_parts(block)}
        data = {
            "name": "doc",
            "config": {"base_url": BASE_URL},
            "scenarios": [{"concurrency": 1, "scenario": scenario}],
        }
        return load_test_from_dict(data, block.id)
    if block.lang == "python":
        value = _run_python(block.text, "load_test")
        assert isinstance(value, LoadTest), "a python loadtest block sets `load_test`"
        return value.to_proto()
    data = json.loads(block.text) if block.lang == "json" else yaml.safe_load(block.text)
    return load_test_from_dict(data, block.id)


def check_runs(lt: loadtest_pb2.LoadTest) -> None:
    """What the master and a worker do with a submitted load test, short of running it."""
    validate_load_test(lt)
    shares = [
        worker_pb2.EntryShare(entry_index=i, sessions=1, rate_fraction=1.0)
        for i in range(len(lt.scenarios))
    ]
    assignment = worker_pb2.Assignment(assignment_id="doc", load_test=lt, shares=shares)
    plans = compile_assignment(assignment, allow_python=True)
    assert len(plans) == len(lt.scenarios)
    for plan in plans:
        plan.engine(1).close()


@pytest.fixture(autouse=True)
def _hooks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the python step examples call hooks:sign


def test_the_doc_has_examples_of_every_step() -> None:
    steps = loadtest_pb2.Step.DESCRIPTOR.oneofs_by_name["action"].fields
    seen: set[str] = set()
    for block in BLOCKS:
        for entry in load(block).scenarios:
            scenarios = [entry.scenario] if entry.HasField("scenario") else entry.sequence.scenarios
            for scenario in scenarios:
                for part in (scenario.init, scenario.run, scenario.teardown):
                    seen |= _actions(part)
    assert {f.name for f in steps} <= seen


def _actions(steps: Any) -> set[str]:
    out: set[str] = set()
    for step in steps:
        action = step.WhichOneof("action")
        out.add(action)
        inner = getattr(step, action)
        if hasattr(inner, "steps"):
            out |= _actions(inner.steps)
        if action == "run_scenario" and inner.HasField("scenario"):
            for part in (inner.scenario.init, inner.scenario.run, inner.scenario.teardown):
                out |= _actions(part)
    return out


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_example_validates_and_compiles(block: Block, request: pytest.FixtureRequest) -> None:
    if block.group in KNOWN_ENGINE_BUGS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_ENGINE_BUGS[block.group]))
    check_runs(load(block))


@pytest.mark.parametrize("group", GROUPS)
def test_the_three_forms_of_an_example_are_the_same_load_test(group: str) -> None:
    blocks = [b for b in BLOCKS if b.group == group]
    assert sorted(b.lang for b in blocks) == sorted(LANGUAGES), f"{group}: one block per language"
    assert len({b.kind for b in blocks}) == 1, f"{group}: steps and loadtest blocks mixed"
    first, *others = [load(b) for b in blocks]
    for block, other in zip(blocks[1:], others, strict=True):
        assert other == first, f"{block.id} (line {block.line}) differs from {blocks[0].id}"


@pytest.mark.parametrize("ext", ["json", "yaml", "py"])
def test_example_files_are_the_docs_complete_example(ext: str) -> None:
    (doc_json,) = [b for b in BLOCKS if b.group == "stateful" and b.lang == "json"]
    lt = load_file(str(EXAMPLES / f"stateful.{ext}"))
    check_runs(lt)
    assert lt == load(doc_json)
