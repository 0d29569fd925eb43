"""A load test's metric keys, known before any request: their order and what they measure.

Theory of operation. The keys are numbered by the compiler's back end (``emit``) as it
compiles an entry's steps, and nowhere else, so this module runs that same back end with a
``Backend`` that needs no network and runs no user code (``_NoNetwork``: a target is its host
as written, a python step a function never called). No DNS, no import: the master can do it
on any load test it accepted (``check_load_test`` ran first; the emitter trusts checked
steps).

- ``metric_keys``: every key of the load test in the order of the steps (entry by entry; in
  an entry init, then run, then teardown), and the keys whose steps measure no duration. The
  master orders a run's metrics (live progress and the result) by it, so the report, CSV,
  JSON and HTML show the steps in the order they run.
- ``closed_model_keys``: the keys of the closed-model entries. An open-model entry's key
  among them gets ``emit.OPEN_MODEL_SUFFIX``: its latencies are corrected for coordinated
  omission (from each session's intended start), the closed model's are not, and one
  histogram must not mix the two. The worker's compiler (``plan``) and ``metric_keys`` apply
  the same rule, so the master's order names the keys the workers report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaperon.core.lang.emit import compile_entry
from chaperon.core.loadtest import Target
from chaperon.v1 import loadtest_pb2

__all__ = ["MetricKeys", "closed_model_entries", "closed_model_keys", "metric_keys"]


def _never_called(*_: Any) -> None:
    raise AssertionError("a dry compile never runs a python step")


class _NoNetwork:
    """An ``emit.Backend`` that resolves nothing and imports nothing (keys need neither)."""

    def target(self, target: Target, field_path: str) -> tuple[Any, ...]:
        if target.scheme == "https":
            return (target.host, target.port, True, target.host)
        return (target.host, target.port)

    def python_function(self, spec: str, field_path: str) -> Callable[..., Any]:
        return _never_called


@dataclass(frozen=True)
class MetricKeys:
    """A load test's keys in the order of its steps, and those that measure no duration."""

    order: tuple[str, ...] = ()
    untimed: frozenset[str] = frozenset()


def closed_model_entries(lt: loadtest_pb2.LoadTest) -> set[int]:
    return {i for i, e in enumerate(lt.scenarios) if not e.HasField("arrival_rate")}


def closed_model_keys(lt: loadtest_pb2.LoadTest) -> frozenset[str]:
    """The keys the closed-model entries of ``lt`` (checked) write."""
    return frozenset(
        key
        for i in closed_model_entries(lt)
        for key in compile_entry(_NoNetwork(), lt, i).metric_keys
    )


def metric_keys(lt: loadtest_pb2.LoadTest) -> MetricKeys:
    """Every key of ``lt`` (checked), in the order of its steps; see the module docstring."""
    closed_entries = closed_model_entries(lt)
    compiled = {i: compile_entry(_NoNetwork(), lt, i) for i in sorted(closed_entries)}
    closed = frozenset(key for c in compiled.values() for key in c.metric_keys)
    for i in range(len(lt.scenarios)):
        if i not in closed_entries:
            compiled[i] = compile_entry(_NoNetwork(), lt, i, closed)
    order: dict[str, None] = {}
    timed: set[str] = set()
    for i in range(len(lt.scenarios)):
        c = compiled[i]
        untimed = set(c.untimed_keys)
        order.update(dict.fromkeys(c.metric_keys))
        timed.update(key for key in c.metric_keys if key not in untimed)
    return MetricKeys(tuple(order), frozenset(order.keys() - timed))
