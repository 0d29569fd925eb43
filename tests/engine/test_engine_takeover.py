"""A takeover's engine (``first_arrival``), and the master's count of due arrivals against a
running Engine.

When a worker is lost, the master counts the arrivals its share made due up to the takeover
point with ``master_service.arrivals.Schedule`` (a mirror of the engine's arithmetic), and the
survivor's engine carries on from the first arrival not counted (``first_arrival``). Both
halves are checked here on real engines against a local server: the survivor runs exactly the
rest of the schedule, and an engine never processes (starts or drops) an arrival before the
master's count says it was due, whenever it is stopped. So ``due - started - dropped`` is
never negative, and the lost and the survivor's arrivals add up to the schedule.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from support.plans import get_plan
from support.servers import Reply, get, ok
from support.servers import http_server as server

from _fastpath.engine import Engine, EngineOptions
from master_service.arrivals import Schedule

S = 1_000_000_000
MS = 1_000_000


def _engine(port: int, **options: object) -> Engine:
    options.setdefault("sessions", 24)
    return Engine([("127.0.0.1", port)], ["GET /"], get_plan(get()), EngineOptions(**options))


def _processed(engine: Engine) -> int:
    stats = engine.stats()
    return int(stats["sessions_started"]) + int(stats["sessions_dropped"])


class _Stamps:
    """A handler that answers 200 and notes when each request arrived (time.monotonic)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, method: bytes, path: bytes, body: bytes) -> Reply:
        with self._lock:
            self.times.append(time.monotonic())
        return ok()


def test_a_takeover_runs_exactly_the_rest_of_the_schedule_from_now() -> None:
    stamps = _Stamps()
    schedule = Schedule.of(200.0, [], S)
    with server(stamps) as srv:
        # 200/s for 1 s, taken over at arrival 120 (due at 0.6 s): 80 arrivals over 0.4 s.
        eng = _engine(srv.port, arrival_rate_per_s=200, duration_ns=S, threads=2, first_arrival=120)
        try:
            t0 = time.monotonic()
            eng.start()
            assert eng.wait(10.0)
            elapsed = time.monotonic() - t0
            assert _processed(eng) == schedule.total - 120 == 80
            assert eng.stats()["sessions_completed"] == 80 == srv.requests
            # the first arrival is due at once (not 0.6 s in), the last about 0.4 s later
            assert min(stamps.times) - t0 < 0.3
            assert 0.35 < elapsed < 1.5, elapsed
            assert eng.origin_ns is not None  # the schedule's zero: 0.6 s before the origin
        finally:
            eng.close()


@pytest.mark.parametrize(
    ("rate", "stages", "first"),
    [
        (0.0, [(S, 800.0)], 100),  # a ramp: 400 arrivals, from the 100th (at 0.5 s)
        (100.0, [(S // 2, 100.0), (S // 2, 500.0)], 49),
        (200.0, [], 199),  # the very last arrival
        (200.0, [], 200),  # past the end: nothing is due
        (200.0, [], 5000),
    ],
)
def test_a_takeover_anywhere_in_a_schedule_adds_up(
    rate: float, stages: list[tuple[int, float]], first: int
) -> None:
    schedule = Schedule.of(rate, stages, 0 if stages else S)
    with server() as srv:
        eng = _engine(
            srv.port,
            arrival_rate_per_s=rate,
            rate_stages=stages,
            duration_ns=0 if stages else S,
            threads=3,
            first_arrival=first,
        )
        try:
            eng.start()
            assert eng.wait(10.0)
            assert _processed(eng) == max(0, schedule.total - first)
        finally:
            eng.close()


def test_first_arrival_is_for_the_open_model() -> None:
    with pytest.raises(ValueError, match="first_arrival is for the open model"):
        EngineOptions(sessions=2, iterations=1, first_arrival=3)
    with pytest.raises(ValueError, match="first_arrival must be >= 0"):
        EngineOptions(sessions=2, arrival_rate_per_s=10, duration_ns=S, first_arrival=-1)


@pytest.mark.parametrize("threads", [1, 3])
def test_the_engine_never_runs_ahead_of_the_masters_count(threads: int) -> None:
    """Stopped at random moments (as a SIGTERM or a kill would), an engine has processed no
    arrival the master's count does not call due, so ``due - started - dropped >= 0`` (the
    lost ones); run to its end it has processed exactly the whole schedule."""
    rng = random.Random(threads)
    cases: list[tuple[float, list[tuple[int, float]], int]] = [
        (400.0, [], 0),
        (0.0, [(S, 900.0)], 0),
        (300.0, [], 90),
        (50.0, [(S // 2, 600.0), (S // 2, 100.0)], 40),
    ]
    with server() as srv:
        for rate, stages, first in cases:
            schedule = Schedule.of(rate, stages, 0 if stages else S)
            eng = _engine(
                srv.port,
                arrival_rate_per_s=rate,
                rate_stages=stages,
                duration_ns=0 if stages else S,
                threads=threads,
                first_arrival=first,
            )
            try:
                eng.start()
                stop_at = time.monotonic() + rng.uniform(0.05, 0.7)
                checked = 0
                while time.monotonic() < stop_at:  # bounded: at most 0.7 s
                    processed = _processed(eng)
                    now = time.monotonic_ns()
                    zero = eng.origin_ns  # the schedule's zero; None while warming up
                    if zero is not None:
                        assert first + processed <= schedule.due_before(now - zero + 1)
                        checked += 1
                    time.sleep(0.002)
                eng.cancel()
                assert eng.wait(2.0)
                processed = _processed(eng)
                zero = eng.origin_ns
                assert zero is not None and checked > 0
                due = schedule.due_before(time.monotonic_ns() - zero + 1)
                assert first + processed <= due
            finally:
                eng.close()
            # the same schedule run to its end: every arrival from ``first`` on, exactly
            eng = _engine(
                srv.port,
                arrival_rate_per_s=rate,
                rate_stages=stages,
                duration_ns=0 if stages else S,
                threads=threads,
                first_arrival=first,
            )
            try:
                eng.start()
                assert eng.wait(10.0)
                assert first + _processed(eng) == schedule.total
            finally:
                eng.close()
