"""The master's count of open-model arrivals against the engine's own arithmetic.

``master_service.arrivals`` mirrors ``_fastpath.engine._schedule`` (the stage rows) and the
engine's ``arrival_offset_ns`` (through ``_arrival_offsets_ns``, which runs the C function).
They must agree exactly, on random schedules (constant rates, ramps up and down, stages at
rate 0, fractions of a rate as the splitter makes them), or the master would count an arrival
lost that a worker ran, or the other way round. ``tests/engine/test_engine_takeover.py`` checks
the same counts against a running Engine.
"""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from _fastpath.engine import _arrival_offsets_ns, _open_schedule
from chaperon.core.loadtest import load_test_from_dict
from master_service.arrivals import Schedule

S = 1_000_000_000
MS = 1_000_000

rates = st.one_of(
    st.integers(0, 3000).map(float),
    st.floats(0.0, 3000.0, allow_nan=False, allow_infinity=False),
)
stage_lists = st.lists(
    st.tuples(st.integers(1, 3 * S), rates),
    min_size=0,
    max_size=5,
)
fractions = st.one_of(
    st.just(1.0),
    st.sampled_from([0.5, 0.4, 0.3, 0.1, 1 / 3, 2 / 3, 0.7]),
    st.floats(0.001, 1.0, allow_nan=False),
)


def _engine_rows(rate: float, stages: list[tuple[int, float]], duration_ns: int) -> list:
    rows, _, _ = _open_schedule(rate, stages, duration_ns, 0)
    return [tuple(row) for row in rows]


def _ours(schedule: Schedule) -> list:
    return [(s.start_ns, s.dur_ns, s.r0, s.r1, s.n0, s.n1) for s in schedule.stages]


@settings(max_examples=300, deadline=None)
@given(
    rate=rates,
    stages=stage_lists,
    duration_ns=st.integers(1, 3 * S),
    fraction=fractions,
)
def test_offsets_and_counts_are_the_engines(
    rate: float, stages: list[tuple[int, float]], duration_ns: int, fraction: float
) -> None:
    rate *= fraction
    stages = [(ns, target * fraction) for ns, target in stages]
    if rate == 0 and not stages:
        rate = 1.0
    schedule = Schedule.of(rate, stages, duration_ns)
    assert _ours(schedule) == _engine_rows(rate, stages, 0 if stages else duration_ns)
    engine = _arrival_offsets_ns(rate, stages, 0 if stages else duration_ns, limit=50_000)
    if len(engine) == 50_000:
        engine = engine[:-1]  # cut by the limit: compare what both have
    ours = [schedule.offset_ns(k) for k in range(len(engine))]
    assert ours == engine
    if len(engine) < 49_999:
        assert schedule.total == len(engine)
        assert schedule.offset_ns(len(engine)) == -1
    # due_before(t) is the number of offsets < t, at random points and at the offsets
    for t in [0, 1, *engine[:: max(1, len(engine) // 20)], schedule.total_ns // 3]:
        for point in (t - 1, t, t + 1):
            assert schedule.due_before(point) == bisect.bisect_left(engine, point)


def test_constant_rate_counts() -> None:
    schedule = Schedule.of(100.0, [], 5 * S)
    assert schedule.total == 500
    assert schedule.offset_ns(0) == 0 and schedule.offset_ns(499) == 4_990 * MS
    assert schedule.offset_ns(500) == -1
    assert schedule.due_before(0) == 0
    assert schedule.due_before(1) == 1  # arrival 0 is due at 0
    assert schedule.due_before(2_500 * MS) == 250
    assert schedule.due_before(2_500 * MS + 1) == 251
    assert schedule.due_before(10 * S) == 500


def test_a_ramp_counts_its_integral() -> None:
    # 0 -> 100/s over 10 s: 500 arrivals, 125 in the first 5 s (the integral of the ramp).
    schedule = Schedule.of(0.0, [(10 * S, 100.0)], 0)
    assert schedule.total == len(_arrival_offsets_ns(0.0, [(10 * S, 100.0)]))
    assert abs(schedule.total - 500) <= 1
    assert abs(schedule.due_before(5 * S) - 125) <= 1


def test_the_share_of_an_entry_is_the_workers_schedule() -> None:
    lt = load_test_from_dict(
        {
            "name": "open",
            "config": {"base_url": "http://127.0.0.1:8080"},
            "scenarios": [
                {
                    "scenario": {"name": "s", "run": [{"http": {"method": "GET", "path": "/"}}]},
                    "arrival_rate": {
                        "per_second": 50,
                        "stages": [{"duration": "2s", "target": 300}, {"duration": "1s"}],
                    },
                }
            ],
        }
    )
    entry = lt.scenarios[0]
    for fraction in (1.0, 0.5, 0.3):
        schedule = Schedule.of_share(entry, fraction)
        stages = [(2 * S, 300 * fraction), (S, 0.0)]
        assert schedule.total == len(_arrival_offsets_ns(50 * fraction, stages))
