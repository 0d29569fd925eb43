"""Scenarios by name and what each runs by name, worked out once per load test.

A step may run another scenario by name (``run_scenario.name``) or start a child session on
one (``async.scenario``); the compiler inlines it there, so a scenario's cost is what it
*expands* to, not what it weighs: twenty steps that each run a scenario of twenty steps that
each run ... are a few hundred bytes and 20^8 steps. Walking the references one path at a
time (as the checks once did) takes as long as the expansion is big. ``ScenarioGraph`` does
it once per load test. Its nodes are a scenario's name with the parts of it that run (all
three for ``run_scenario``, ``run`` alone for a child session); each is worked out once,
after the nodes it refers to (a depth-first search with its own stack, so a long chain of
names costs no recursion):

- ``find``: the scenario a name refers to (the first scenario of that name, as
  ``loadtest.find_scenario``), from a dict;
- ``cycle``: a chain of names that comes back to its start (``run_scenario`` would nest
  without end; the language refuses it);
- ``height``: how deep ``run_scenario`` by name nests below a scenario;
- ``starts_children``: whether a scenario's steps (or those it runs by name) start child
  sessions;
- ``expanded_steps``: how many steps a scenario entry runs once every name is inlined
  (``walk_steps`` would yield that many).

So the whole graph costs what the load test weighs. The numbers are exact when there is no
cycle; with one, they are not worked out: the load test is refused before they matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chaperon.core.loadtest import BODY_ACTIONS, entry_scenarios
from chaperon.v1 import loadtest_pb2

PARTS = ("init", "run", "teardown")
ASYNC_PARTS = ("run",)  # a child session started on a named scenario runs its run steps
INFINITE = 1 << 62
_Node = tuple[str, tuple[str, ...]]  # a scenario's name and the parts of it that run


@dataclass
class _Part:
    """One scenario part (or step list): its own steps and the names it runs."""

    steps: int = 0  # every step written in it, blocks and inline run_scenario included
    runs: list[tuple[str, str]] = field(default_factory=list)  # (name, field path)
    spawns: list[tuple[str, str]] = field(default_factory=list)  # async on a named scenario
    children: bool = False  # an async or cc_spread step in it


def _scan(steps: Any, path: str) -> _Part:
    """What ``steps`` hold, without following names (an explicit stack, no recursion)."""
    part = _Part()
    stack: list[tuple[Any, str]] = [(steps, path)]
    while stack:
        items, prefix = stack.pop()
        for j, step in enumerate(items):
            part.steps += 1
            p = f"{prefix}[{j}]"
            action = step.WhichOneof("action")
            if action in BODY_ACTIONS:
                stack.append((getattr(step, action).steps, f"{p}.{action}.steps"))
            if action in ("async", "cc_spread"):
                part.children = True
            if action == "async" and getattr(step, "async").scenario:
                part.spawns.append((getattr(step, "async").scenario, f"{p}.async.scenario"))
            elif action == "run_scenario":
                rs = step.run_scenario
                which = rs.WhichOneof("which")
                if which == "name":
                    part.runs.append((rs.name, f"{p}.run_scenario.name"))
                elif which == "scenario":
                    for name in PARTS:
                        stack.append(
                            (getattr(rs.scenario, name), f"{p}.run_scenario.scenario.{name}")
                        )
    return part


class ScenarioGraph:
    """The load test's scenarios by name and the references between them (module doc)."""

    def __init__(self, load_test: loadtest_pb2.LoadTest) -> None:
        self.by_name: dict[str, loadtest_pb2.Scenario] = {}
        where: dict[str, str] = {}
        for i, entry in enumerate(load_test.scenarios):
            for k, scenario in enumerate(entry_scenarios(entry)):
                if scenario.name and scenario.name not in self.by_name:
                    self.by_name[scenario.name] = scenario
                    where[scenario.name] = (
                        f"scenarios[{i}].scenario"
                        if entry.HasField("scenario")
                        else f"scenarios[{i}].sequence.scenarios[{k}]"
                    )
        self._parts = {
            name: {part: _scan(getattr(sc, part), f"{where[name]}.{part}") for part in PARTS}
            for name, sc in self.by_name.items()
        }
        self.cycle: tuple[str, list[str]] | None = None
        """(field path of the step that closes it, the names around it) of the first chain
        of names that comes back to its start, or None."""
        order = self._order()
        # Worked out for every node, referred nodes first (no recursion; no cycle).
        self._height: dict[str, int] = {}
        self._deepest: dict[str, str] = {}  # the step of each name that nests deepest
        self._children: dict[_Node, bool] = {}
        self._expanded: dict[_Node, int] = {}
        if self.cycle is None:
            for node in order:
                self._work_out(node)

    def find(self, name: str) -> loadtest_pb2.Scenario | None:
        return self.by_name.get(name)

    def _edges(self, node: _Node) -> list[tuple[_Node, str]]:
        """(node, field path of the step) of every scenario part ``node`` runs or spawns."""
        name, parts = node
        out: list[tuple[_Node, str]] = []
        for part in parts:
            scanned = self._parts[name][part]
            out += [((ref, PARTS), where) for ref, where in scanned.runs if ref in self.by_name]
            out += [
                ((ref, ASYNC_PARTS), where) for ref, where in scanned.spawns if ref in self.by_name
            ]
        return out

    def _order(self) -> list[_Node]:
        """Every node, each after every node it refers to (a depth-first search with its own
        stack); sets ``cycle`` when a chain comes back to its start."""
        state: dict[_Node, int] = {}  # 1: on the current path, 2: done
        order: list[_Node] = []
        roots: list[_Node] = [(n, parts) for n in self.by_name for parts in (PARTS, ASYNC_PARTS)]
        for root in roots:
            if root in state:
                continue
            path: list[_Node] = [root]
            state[root] = 1
            stack = [iter(self._edges(root))]
            while stack:
                edge = next(stack[-1], None)
                if edge is None:
                    stack.pop()
                    done = path.pop()
                    state[done] = 2
                    order.append(done)
                    continue
                node, where = edge
                if state.get(node) == 1:
                    if self.cycle is None:
                        names = [n for n, _ in path[path.index(node) :]] + [node[0]]
                        self.cycle = (where, names)
                elif node not in state:
                    state[node] = 1
                    path.append(node)
                    stack.append(iter(self._edges(node)))
        return order

    def _work_out(self, node: _Node) -> None:
        name, parts = node
        scanned = [self._parts[name][part] for part in parts]
        if parts == PARTS:
            self._height[name] = 0
            for p in scanned:
                for ref, where in p.runs:
                    if ref in self.by_name and 1 + self._height[ref] > self._height[name]:
                        self._height[name] = 1 + self._height[ref]
                        self._deepest[name] = where
        self._children[node] = any(
            p.children or any(self._children.get((ref, PARTS), False) for ref, _ in p.runs)
            for p in scanned
        )
        self._expanded[node] = sum(self._part_expanded(p) for p in scanned)

    def _part_expanded(self, part: _Part) -> int:
        return (
            part.steps
            + sum(self.expanded(ref) for ref, _ in part.runs)
            + sum(self.expanded(ref, ASYNC_PARTS) for ref, _ in part.spawns)
        )

    def height(self, name: str) -> int:
        """How many ``run_scenario`` by name nest below ``name`` (0: none; INFINITE when
        the names form a cycle)."""
        if self.cycle is not None:
            return INFINITE
        return self._height.get(name, 0)

    def too_deep(self, limit: int) -> tuple[str, str] | None:
        """(name, field path of its step that nests deepest) of the first scenario in which
        ``run_scenario`` by name nests more than ``limit`` deep, or None."""
        for name in self.by_name:
            if self._height.get(name, 0) > limit:
                return name, self._deepest[name]
        return None

    def starts_children(self, name: str, parts: tuple[str, ...] = PARTS) -> bool:
        """Whether ``parts`` of ``name`` (all, or ``("run",)``), or the scenarios they run by
        name, start child sessions."""
        return self._children.get((name, parts), False)

    def steps_start_children(self, steps: Any) -> bool:
        """Whether ``steps`` (or the scenarios they run by name) start child sessions."""
        scanned = _scan(steps, "")
        return scanned.children or any(self.starts_children(ref) for ref, _ in scanned.runs)

    def expanded(self, name: str, parts: tuple[str, ...] = PARTS) -> int:
        """The steps ``parts`` of ``name`` (all, or ``("run",)``) run with every name
        inlined; 0 for an unknown name."""
        return self._expanded.get((name, parts), 0)

    def expanded_steps(self, step_lists: Iterable[Any]) -> int:
        """The steps the given step lists run with every name inlined."""
        return sum(self._part_expanded(_scan(steps, "")) for steps in step_lists)
