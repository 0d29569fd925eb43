"""Open-model arrivals as the master counts them: when each of a share's arrivals is due, and
how many are due by a given point of its schedule.

Theory of operation. A worker's engine runs an open-model share as an arrival schedule: the
entry's rate (and stages) times the share's ``rate_fraction``, counted from the schedule's
start (``chaperon.core.lang.plan.share_schedule`` gives the three numbers the engine is built
from). Arrival k is due when the cumulative count N(t), the integral of the piecewise-linear
rate, reaches k. When a worker is lost or stopped, the master must know how many of its
share's arrivals were due up to the point the survivors take over, to count as lost those it
never reported started or dropped, and where the survivors' part begins (``first_arrival``).

This module mirrors the engine's arithmetic in Python, operation for operation: ``Schedule``
holds the stage rows of ``_fastpath.engine._schedule`` and ``offset_ns`` is
``arrival_offset_ns`` of ``_fastpath/engine_open.pxi`` (IEEE doubles on both sides, the same
order of operations, the same rounding to ns), so the master's count is the engine's, to the
arrival. ``tests/unit/test_arrivals.py`` compares both with the engine's own functions on
random schedules, and ``tests/engine/test_engine_takeover.py`` with a running Engine.

Offsets never decrease with k, and are -1 from the first arrival past the end on, so the
arrivals due before a time are a prefix [0, n): ``due_before`` finds n by bisection, in
O(log n) offsets whatever the rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from chaperon.core.lang.plan import share_schedule
from chaperon.v1 import loadtest_pb2


@dataclass(frozen=True)
class Stage:
    """One row of the schedule: the rate goes from ``r0`` to ``r1`` (per ns) over ``dur_ns``;
    ``n0`` arrivals are due before it starts, ``n1`` before it ends."""

    start_ns: int
    dur_ns: int
    r0: float
    r1: float
    n0: float
    n1: float


@dataclass(frozen=True)
class Schedule:
    """An open-model share's arrival schedule, as the engine runs it."""

    stages: tuple[Stage, ...]
    total_ns: int

    @classmethod
    def of(
        cls, rate_per_s: float, stages: Sequence[tuple[int, float]], duration_ns: int
    ) -> Schedule:
        """The schedule of an engine built with these ``arrival_rate_per_s``, ``rate_stages``
        and ``duration_ns`` (the rows of ``_fastpath.engine._schedule``)."""
        rate = float(rate_per_s)
        steps = [(int(ns), float(target)) for ns, target in stages]
        if steps:
            duration_ns = sum(ns for ns, _ in steps)
        else:
            steps = [(int(duration_ns), rate)]
        rows = []
        start = 0
        n = 0.0
        prev = rate / 1e9
        for dur, target in steps:
            r1 = target / 1e9
            n1 = n + dur * (prev + r1) / 2.0
            rows.append(Stage(start, dur, prev, r1, n, n1))
            start += dur
            n = n1
            prev = r1
        return cls(tuple(rows), int(duration_ns))

    @classmethod
    def of_share(cls, entry: loadtest_pb2.ScenarioEntry, rate_fraction: float) -> Schedule:
        """The schedule of ``rate_fraction`` of an open-model entry (what a worker runs)."""
        return cls.of(*share_schedule(entry, rate_fraction))

    def offset_ns(self, k: int) -> int:
        """When arrival ``k`` is due, in ns from the schedule's start; -1 past its end."""
        kd = float(k)
        stages = self.stages
        i = 0
        while i < len(stages) and kd >= stages[i].n1:
            i += 1
        if i >= len(stages):
            return -1
        st = stages[i]
        n = kd - st.n0
        if n <= 0.0:
            tau = 0.0
        elif st.r1 == st.r0:
            tau = n / st.r0
        else:
            a = (st.r1 - st.r0) / (2.0 * float(st.dur_ns))
            disc = st.r0 * st.r0 + 4.0 * a * n
            if disc < 0.0:
                disc = 0.0
            tau = 2.0 * n / (st.r0 + math.sqrt(disc))
        off = st.start_ns + int(tau + 0.5)
        if off >= self.total_ns:
            return -1
        return off

    @property
    def total(self) -> int:
        """How many arrivals the whole schedule makes due."""
        return self.due_before(self.total_ns)

    def due_before(self, t_ns: float) -> int:
        """How many arrivals are due before ``t_ns`` (ns from the schedule's start): the
        first k that is not (past the end, or due at or after ``t_ns``)."""
        if not self.stages or t_ns <= 0:
            return 0
        lo = 0
        hi = max(0, math.ceil(self.stages[-1].n1)) + 1  # past the end: offset -1 there
        while lo < hi:
            mid = (lo + hi) // 2
            off = self.offset_ns(mid)
            if off < 0 or off >= t_ns:
                hi = mid
            else:
                lo = mid + 1
        return lo
