"""The engine's open model (arrival rate, ramps, slots) and its two latencies.

The schedule is checked twice: the C inversion of the cumulative count against a Python
reference (bisection on the integral of the rate), and a real run against the small servers of
``support.servers`` on 127.0.0.1, whose request timestamps show when sessions really started.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.plans import get_plan
from support.servers import Reply, free_port, get, ok
from support.servers import http_server as server

from _fastpath.engine import Engine, EngineOptions, PlanBuilder, _arrival_offsets_ns
from _fastpath.histogram import Histogram

S = 1_000_000_000
MS = 1_000_000


def open_engine(
    port: int, plan: PlanBuilder | None = None, keys: list[str] | None = None, **options
) -> Engine:
    options.setdefault("sessions", 16)
    return Engine(
        [("127.0.0.1", port)],
        keys or ["GET /"],
        plan or get_plan(get()),
        EngineOptions(**options),
    )


def run(
    engine: Engine, timeout_s: float = 10.0, origin_ns: int | None = None
) -> dict[str, tuple[Histogram, int, int, dict[str, int], Histogram]]:
    """Start, wait (bounded), take the final swap and close. -> {key: (hist, count, errors,
    kinds, service)}"""
    try:
        engine.start(origin_ns)
        assert engine.wait(timeout_s), "engine did not finish in time"
        out = {}
        for k, h, c, e, kinds, service in engine.swap():
            assert h.total_count == service.total_count == c
            out[k] = (h, c, e, kinds, service)
        return out
    finally:
        engine.close()


class Stamps:
    """A handler that answers 200 and notes when each request arrived (time.monotonic)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, method: bytes, path: bytes, body: bytes) -> Reply:
        with self._lock:
            self.times.append(time.monotonic())
        return ok()


# ---------------------------------------------------------------- the schedule


def reference_offsets_ns(rate: float, stages: list[tuple[int, float]], duration_ns: int) -> list:
    """Due times by bisection on N(t) = integral of the piecewise-linear rate (per ns):
    arrival k is due at inf{t : N(t) > k}, so none falls in a stretch of rate 0."""
    segs = []
    start, prev, n0 = 0, rate / 1e9, 0.0
    for dur, target in stages or [(duration_ns, rate)]:
        r1 = target / 1e9
        segs.append((start, dur, prev, r1, n0))
        n0 += dur * (prev + r1) / 2
        start, prev = start + dur, r1
    total_ns, total_n = start, n0

    def count(t: float) -> float:
        for s0, dur, r0, r1, base in segs:
            if t <= s0 + dur:
                tau = t - s0
                return base + r0 * tau + (r1 - r0) * tau * tau / (2 * dur) if dur else base
        return total_n

    out = []
    k = 0
    while k < total_n:
        lo, hi = 0.0, float(total_ns)
        for _ in range(80):
            mid = (lo + hi) / 2
            if count(mid) <= k:
                lo = mid
            else:
                hi = mid
        if round(hi) >= total_ns:
            break
        out.append(hi)
        k += 1
    return out


def test_constant_rate_schedule_is_k_over_rate() -> None:
    assert _arrival_offsets_ns(1000, duration_ns=10 * MS) == [k * MS for k in range(10)]
    assert len(_arrival_offsets_ns(1000, duration_ns=6 * S)) == 6000
    assert len(_arrival_offsets_ns(3, duration_ns=S)) == 3  # 0, 1/3 s, 2/3 s


def test_ramp_schedule_inverts_the_integral() -> None:
    # 0 -> 10/s over 1 s: N(t) = 5 t^2, arrival k at sqrt(k / 5) s
    got = _arrival_offsets_ns(0, [(S, 10)])
    assert got == [round(math.sqrt(k / 5) * S) for k in range(5)]
    # ramp down 10 -> 0 over 1 s: N(t) = 10 t - 5 t^2
    down = _arrival_offsets_ns(10, [(S, 0)])
    assert len(down) == 5
    for k, off in enumerate(down):
        t = off / S
        assert abs(10 * t - 5 * t * t - k) < 1e-6


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([0.0, 1.0, 7.5, 100.0]),
    stages=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3 * S),
            st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=200)),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_stage_schedule_matches_reference(rate: float, stages: list[tuple[int, float]]) -> None:
    if sum(d for d, _ in stages) == 0:
        return
    got = _arrival_offsets_ns(rate, stages)
    want = reference_offsets_ns(rate, stages, 0)
    # the boundary arrival (due exactly at a rounding distance from the end) may differ
    assert abs(len(got) - len(want)) <= 1
    for g, w in zip(got, want, strict=False):
        # within 1 us (usually 1 ns; where the rate touches 0 the inverse is ill-conditioned)
        assert abs(g - w) <= 1000, (g, w)
    assert got == sorted(got)


# ---------------------------------------------------------------- runs


def test_constant_rate_run_starts_every_arrival_once_on_time() -> None:
    stamps = Stamps()
    with server(stamps) as srv:
        eng = open_engine(srv.port, arrival_rate_per_s=500, duration_ns=S, sessions=20, threads=2)
        t0 = time.monotonic()
        res = run(eng)
        elapsed = time.monotonic() - t0
        st_ = eng.stats()
        assert st_["sessions_started"] == st_["sessions_completed"] == st_["iterations"] == 500
        assert st_["sessions_dropped"] == 0 and st_["errors"] == 0
        hist, count, errors, kinds, service = res["GET /"]
        assert (count, errors, kinds) == (500, 0, {})
        assert srv.requests == 500
        assert srv.connections <= 20  # slots keep their connections
        assert 0.95 < elapsed < 2.0
        # spread evenly: 50 +- 15 requests in every 100 ms window
        first = min(stamps.times)
        windows = [0] * 10
        for t in stamps.times:
            windows[min(9, int((t - first) * 10))] += 1
        assert all(35 <= w <= 65 for w in windows), windows
        # on time: the loop's mean lateness (corrected - service) is tens of us when the
        # machine is idle; 3 ms leaves room for a busy CI host
        assert 0 <= hist.mean - service.mean < 3000
        assert service is not hist


def test_arrivals_split_over_threads_add_up() -> None:
    with server() as srv:
        eng = open_engine(srv.port, arrival_rate_per_s=300, duration_ns=S // 2, threads=3)
        res = run(eng)
        assert res["GET /"][1] == 150 == srv.requests == eng.stats()["sessions_started"]


def test_ramp_run_follows_the_integral() -> None:
    stamps = Stamps()
    with server(stamps) as srv:
        # 0 -> 800/s over 1 s: 400 arrivals, N(t) = 400 t^2, so 100 in the first half
        eng = open_engine(srv.port, rate_stages=[(S, 800.0)], sessions=20)
        t_start = time.monotonic()
        res = run(eng)
        assert res["GET /"][1] == 400 == eng.stats()["sessions_started"]
        first_half = sum(1 for t in stamps.times if t - t_start < 0.5)
        assert 85 <= first_half <= 115, first_half


def test_stages_then_constant_hold() -> None:
    with server() as srv:
        # 100/s held 0.5 s, then 100 -> 300/s over 0.5 s: 50 + 100 arrivals
        eng = open_engine(
            srv.port,
            arrival_rate_per_s=100,
            rate_stages=[(S // 2, 100.0), (S // 2, 300.0)],
            duration_ns=S,
        )
        res = run(eng)
        assert res["GET /"][1] == 150


def test_arrival_without_a_free_slot_is_dropped_and_counted() -> None:
    with server(lambda m, p, b: Reply(silent=True)) as srv:
        eng = open_engine(
            srv.port,
            arrival_rate_per_s=100,
            duration_ns=S // 2,
            sessions=2,
            request_timeout_ns=300 * MS,
        )
        t0 = time.monotonic()
        res = run(eng)
        st_ = eng.stats()
        assert st_["sessions_started"] + st_["sessions_dropped"] == 50
        assert st_["sessions_dropped"] >= 40
        started = st_["sessions_started"]
        assert res["GET /"][1:4] == (0, started, {"timeout": started})
        # the end: no new arrivals; in-flight requests finish or time out
        assert time.monotonic() - t0 < 0.5 + 0.3 + 0.5


def test_late_start_is_charged_to_the_first_op() -> None:
    with server() as srv:
        # The schedule began 300 ms ago: the first 30 arrivals are due already and start
        # late. Their service time is short; their latency includes the lateness.
        eng = open_engine(srv.port, arrival_rate_per_s=100, duration_ns=S, sessions=50)
        origin = time.monotonic_ns() - 300 * MS
        hist, count, errors, _, service = run(eng, origin_ns=origin)["GET /"]
        assert count == 100 and errors == 0
        assert hist.max >= 250_000
        assert service.max < 100_000
        assert hist.value_at_percentile(50) < 50_000  # the other 70 were on time
        # corrected >= service, percentile by percentile
        for p in (10, 50, 75, 90, 99, 100):
            assert hist.value_at_percentile(p) >= service.value_at_percentile(p)


def test_later_ops_are_intended_at_previous_completion_plus_delay() -> None:
    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        if path == b"/slow":
            time.sleep(0.05)
        return ok()

    with server(handler) as srv:
        ops = PlanBuilder()
        ops.http(0, 0, get(b"/slow"))
        ops.delay(30 * MS)
        ops.http(0, 1, get(b"/fast"))
        eng = open_engine(
            srv.port, ops, ["slow", "fast"], arrival_rate_per_s=10, duration_ns=S // 2
        )
        res = run(eng)
        slow, fast = res["slow"], res["fast"]
        assert slow[1] == fast[1] == 5
        assert slow[0].min >= 45_000
        # neither the slow op before nor the delay is charged to the fast op
        assert fast[0].max < 30_000


def test_slot_reconnects_after_the_server_closed_the_idle_connection() -> None:
    # The server closes after each response without saying so; the slot notices the EOF
    # while free and the next session reconnects, with no error.
    with server(lambda m, p, b: Reply(ok().data, close=True)) as srv:
        eng = open_engine(srv.port, arrival_rate_per_s=50, duration_ns=S // 2, sessions=2)
        res = run(eng)
        assert res["GET /"][1:4] == (25, 0, {})
        # one per session, plus the warm-up's connection of a slot no session took
        assert 25 <= srv.connections <= 25 + 2


def test_connection_close_and_errors_in_the_open_model() -> None:
    def handler(method: bytes, path: bytes, body: bytes) -> Reply:
        return ok(status=503, extra=b"Connection: close\r\n")

    with server(handler) as srv:
        eng = open_engine(srv.port, arrival_rate_per_s=40, duration_ns=S // 2, sessions=4)
        res = run(eng)
        assert res["GET /"][1:4] == (20, 20, {"http_5xx": 20})
        assert 20 <= srv.connections <= 20 + 4  # + warmed slots no session took


def test_connect_refused_in_the_open_model() -> None:
    eng = open_engine(free_port(), arrival_rate_per_s=40, duration_ns=S // 4)
    res = run(eng)
    assert res["GET /"][1:4] == (0, 10, {"connect": 10})
    assert eng.stats()["sessions_completed"] == 10


def test_cancel_stops_an_open_run() -> None:
    with server() as srv:
        eng = open_engine(srv.port, arrival_rate_per_s=100, duration_ns=60 * S)
        try:
            eng.start()
            time.sleep(0.1)
            t0 = time.monotonic()
            eng.cancel()
            assert eng.wait(1.0)
            assert time.monotonic() - t0 < 1.0
            assert 0 < eng.stats()["sessions_started"] < 100
        finally:
            eng.close()


def test_warm_up_connects_every_slot_before_the_schedule() -> None:
    with server() as srv:
        eng = open_engine(
            srv.port, arrival_rate_per_s=10, duration_ns=S // 5, sessions=8, threads=2
        )
        try:
            assert eng.origin_ns is None
            t0 = time.monotonic_ns()
            eng.start()
            assert eng.wait(5.0)
            origin = eng.origin_ns
            assert origin is not None and t0 <= origin <= time.monotonic_ns()
            st_ = eng.stats()
            assert st_["sessions_started"] == 2 and st_["errors"] == 0
            # every slot was connected once (kept alive): the 2 sessions opened none
            assert srv.connections == 8
            hist, count = eng.swap()[0][1:3]
            assert count == 2 and hist.max < 100_000  # no connect, no warm-up in the latency
        finally:
            eng.close()
        assert eng.origin_ns == origin


def test_start_origin_validation() -> None:
    eng = open_engine(free_port(), arrival_rate_per_s=1, duration_ns=S)
    try:
        with pytest.raises(ValueError, match="future"):
            eng.start(time.monotonic_ns() + 10 * S)
        with pytest.raises(TypeError, match="origin_ns"):
            eng.start(1.5)
    finally:
        eng.close()


# ---------------------------------------------------------------- API

GOOD = dict(sessions=4, arrival_rate_per_s=10.0, duration_ns=S)


def _engine(**options) -> Engine:
    return Engine(
        [("127.0.0.1", 80)], ["k"], get_plan(b"GET / HTTP/1.1\r\n\r\n"), EngineOptions(**options)
    )


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ({"arrival_rate_per_s": -1.0}, ValueError, "arrival_rate_per_s"),
        ({"arrival_rate_per_s": float("nan")}, ValueError, "arrival_rate_per_s"),
        ({"arrival_rate_per_s": float("inf")}, ValueError, "arrival_rate_per_s"),
        ({"arrival_rate_per_s": True}, TypeError, "arrival_rate_per_s"),
        ({"arrival_rate_per_s": "10"}, TypeError, "arrival_rate_per_s"),
        ({"duration_ns": 0}, ValueError, "duration_ns > 0"),
        ({"iterations": 5}, ValueError, "once"),
        ({"rate_stages": [(S, 10.0)], "duration_ns": 5}, ValueError, "sum"),
        ({"rate_stages": [(0, 10.0)], "duration_ns": 0}, ValueError, "0 ns"),
        ({"rate_stages": [(S,)]}, TypeError, "rate_stages"),
        ({"rate_stages": [(-1, 1.0)]}, ValueError, "duration_ns"),
        ({"rate_stages": [(S, -1.0)]}, ValueError, "target_rate_per_s"),
        ({"rate_stages": "fast"}, TypeError, "rate_stages"),
    ],
)
def test_open_model_validation(change: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        _engine(**{**GOOD, **change})


def test_open_model_accepted_forms() -> None:
    # stages with duration_ns 0 or their sum, starting rate 0, iterations 0 or 1
    for kw in (
        {"rate_stages": [(S, 10.0)], "duration_ns": 0, "arrival_rate_per_s": 0.0},
        {"rate_stages": [(S, 10.0), (S, 0.0)], "duration_ns": 2 * S},
        {"iterations": 1},
        {"arrival_rate_per_s": 5},
    ):
        _engine(**{**GOOD, **kw}).close()


def test_stats_have_sessions_dropped_in_both_models() -> None:
    eng = _engine(**{**GOOD, "arrival_rate_per_s": 0.0, "iterations": 1})
    assert eng.stats()["sessions_dropped"] == 0
    eng.close()
