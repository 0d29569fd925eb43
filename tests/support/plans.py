"""Engine plans for the tests, built through the engine's ``PlanBuilder`` (its only way in).

``get_plan`` is the plan most tests share (plain requests, perhaps a delay). For longer
plans a test lists its ops as *steps*: a step is one deferred builder call (``step("delay",
MS)`` calls ``plan.delay(MS)``), a block is its opening call, its body's steps and ``end()``
(``block("repeat", 3, body=[...])``), and ``plan_of`` plays the steps of each phase into a
fresh builder. A test can so write its plan once and hand it to several engines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from _fastpath.engine import PlanBuilder

Step = Callable[[PlanBuilder], None]


def get_plan(
    *requests: bytes, target: int = 0, no_body: bool = False, delay_ns: int | None = None
) -> PlanBuilder:
    """Plain HTTP requests, one op each (request i records to metric i), on ``target``;
    then, with ``delay_ns``, a delay."""
    plan = PlanBuilder()
    for metric, request in enumerate(requests):
        plan.http(target, metric, request, no_body)
    if delay_ns is not None:
        plan.delay(delay_ns)
    return plan


def step(method: str, *args: Any, **kwargs: Any) -> Step:
    """One builder call, made when the plan is built: ``step("http", 0, 0, request)``."""

    def call(plan: PlanBuilder) -> None:
        getattr(plan, method)(*args, **kwargs)

    return call


def block(method: str, *args: Any, body: Iterable[Step]) -> Step:
    """A block op (repeat, loop, retry, spawn, spread) around ``body``, closed by ``end()``."""
    steps = list(body)

    def call(plan: PlanBuilder) -> None:
        getattr(plan, method)(*args)
        for s in steps:
            s(plan)
        plan.end()

    return call


def plan_of(
    ops: Iterable[Step], init: Iterable[Step] = (), teardown: Iterable[Step] = ()
) -> PlanBuilder:
    """A builder filled with the steps of each phase (init ops only when there are some)."""
    plan = PlanBuilder()
    init = list(init)
    if init:
        plan.init()
        for s in init:
            s(plan)
        plan.run()
    for s in ops:
        s(plan)
    teardown = list(teardown)
    if teardown:
        plan.teardown()
        for s in teardown:
            s(plan)
    return plan
