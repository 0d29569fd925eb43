"""The engine's per-session rules: scenario timeout, start delays, init and teardown ops.

Against real servers on 127.0.0.1 from ``support.servers``: the selector server where answers
are immediate, and ``LogServer`` (a thread per connection, so one slow answer delays nobody
else) where an answer must come late. ``LogServer`` logs every request with its connection and
arrival time, which shows the order of a session's ops (a session keeps its connection) and
when sessions really started. Every wait is bounded; servers are stopped in ``finally``.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from support.plans import Step, get_plan, plan_of, step
from support.servers import SILENT, free_port, get, log_server

from _fastpath.engine import Engine, EngineOptions

S = 1_000_000_000
MS = 1_000_000


def http(metric: int, path: bytes, target: int = 0) -> Step:
    return step("http", target, metric, get(path))


def delay(delay_ns: int) -> Step:
    return step("delay", delay_ns)


def engine(
    port: int,
    ops: list[Step],
    keys: list[str],
    init_ops: list[Step] = [],  # noqa: B006 - never mutated
    teardown_ops: list[Step] = [],  # noqa: B006
    **options,
) -> Engine:
    plan = plan_of(ops, init_ops, teardown_ops)
    return Engine([("127.0.0.1", port)], keys, plan, EngineOptions(**options))


def run(eng: Engine, timeout_s: float = 10.0) -> tuple[dict[str, tuple], dict[str, int], float]:
    """Start, wait (bounded), swap, close -> ({key: (hist, count, errors, kinds)}, stats,
    elapsed seconds from start to the end of the run)."""
    try:
        t0 = time.monotonic()
        eng.start()
        assert eng.wait(timeout_s), "engine did not finish in time"
        elapsed = time.monotonic() - t0
        rows = {k: (h, c, e, kinds) for k, h, c, e, kinds, _ in eng.swap()}
        return rows, eng.stats(), elapsed
    finally:
        eng.close()


# ---------------------------------------------------------------- scenario timeout


def test_scenario_timeout_ends_a_slow_iteration() -> None:
    with log_server({b"/slow": 0.5}) as srv:
        eng = engine(
            srv.port,
            [http(0, b"/slow")],
            ["GET /slow"],
            sessions=2,
            iterations=2,
            scenario_timeout_ns=100 * MS,
        )
        rows, st, elapsed = run(eng)
        # each session: two iterations of 100 ms, each ended by the timeout
        assert st["sessions_timed_out"] == 4
        assert st["iterations"] == 0  # none completed
        assert st["sessions_completed"] == 2
        assert st["errors"] == 0 and st["responses"] == 0
        assert rows == {}  # an abandoned op is neither a response nor an error
        assert 0.19 < elapsed < 0.45  # two windows and the 10 ms scan, not 2 x 500 ms
        assert srv.count(b"/slow") == 4


def test_scenario_timeout_in_a_duration_run_starts_the_next_iteration() -> None:
    with log_server({b"/slow": 0.5}) as srv:
        eng = engine(
            srv.port,
            [http(0, b"/fast"), http(1, b"/slow")],
            ["fast", "slow"],
            sessions=2,
            duration_ns=350 * MS,
            scenario_timeout_ns=100 * MS,
        )
        rows, st, elapsed = run(eng)
        assert elapsed < 0.6  # the end of the run does not wait for the 500 ms answers
        assert 6 <= st["sessions_timed_out"] <= 8  # 3 or 4 windows per session
        assert rows["fast"][1:3] == (st["sessions_timed_out"], 0)
        assert "slow" not in rows
        assert st["errors"] == 0


def test_scenario_timeout_during_a_delay_op() -> None:
    with log_server() as srv:
        ops = [http(0, b"/first"), delay(10 * S), http(1, b"/after")]
        eng = engine(
            srv.port,
            ops,
            ["first", "after"],
            sessions=2,
            iterations=2,
            scenario_timeout_ns=150 * MS,
        )
        rows, st, elapsed = run(eng)
        assert 0.29 < elapsed < 1.0  # woken from the 10 s delay at each window's end
        assert st["sessions_timed_out"] == 4 and st["iterations"] == 0
        assert rows["first"][1:3] == (4, 0)
        assert srv.count(b"/after") == 0


def test_completed_iterations_are_not_timed_out() -> None:
    with log_server() as srv:
        eng = engine(
            srv.port,
            [http(0, b"/a"), delay(20 * MS)],
            ["a"],
            sessions=2,
            iterations=5,
            scenario_timeout_ns=500 * MS,
        )
        rows, st, _ = run(eng)
        assert st["sessions_timed_out"] == 0 and st["iterations"] == 10
        assert rows["a"][1] == 10


def test_open_model_scenario_timeout_frees_the_slot() -> None:
    with log_server({b"/slow": 0.5}) as srv:
        # one slot; arrivals every 125 ms; each session is ended after 50 ms, so the slot is
        # free again for every arrival (without the timeout, 3 of the 4 would be dropped)
        eng = engine(
            srv.port,
            [http(0, b"/slow")],
            ["slow"],
            sessions=1,
            arrival_rate_per_s=8,
            duration_ns=500 * MS,
            scenario_timeout_ns=50 * MS,
        )
        rows, st, elapsed = run(eng)
        assert st["sessions_started"] == st["sessions_completed"] == 4
        assert st["sessions_dropped"] == 0
        assert st["sessions_timed_out"] == 4 and st["errors"] == 0
        assert rows == {}
        assert elapsed < 0.9
        assert srv.count(b"/slow") == 4


# ---------------------------------------------------------------- start delays


def test_fixed_start_delay() -> None:
    with log_server() as srv:
        eng = engine(
            srv.port, [http(0, b"/")], ["k"], sessions=3, iterations=2, start_delay_ns=200 * MS
        )
        t0 = time.monotonic()
        rows, st, _ = run(eng)
        assert rows["k"][1] == 6
        firsts = srv.times(b"/")
        assert len(firsts) == 6
        assert min(firsts) - t0 >= 0.2  # no request before the delay


def test_random_start_delay_spreads_the_sessions_within_bounds() -> None:
    with log_server() as srv:
        eng = engine(
            srv.port,
            [http(0, b"/")],
            ["k"],
            sessions=40,
            threads=2,
            iterations=1,
            start_delay_ns=100 * MS,
            start_random_delay_ns=300 * MS,
        )
        t0 = time.monotonic()
        rows, st, _ = run(eng)
        assert rows["k"][1:3] == (40, 0)
        offsets = sorted(t - t0 for t in srv.times(b"/"))
        assert len(offsets) == 40
        assert offsets[0] >= 0.1
        assert offsets[-1] < 0.4 + 0.1  # the window, plus a little for the loop and server
        # uniform over [100, 400) ms: each 100 ms third holds some (P(empty) ~ 1e-7)
        thirds = Counter(min(2, int((o - 0.1) / 0.1)) for o in offsets)
        assert all(thirds[i] >= 3 for i in range(3)), thirds


def test_open_model_start_delay_shifts_the_start_not_the_latency() -> None:
    with log_server() as srv:
        eng = engine(
            srv.port,
            [http(0, b"/")],
            ["k"],
            sessions=8,
            arrival_rate_per_s=20,
            duration_ns=500 * MS,
            start_delay_ns=150 * MS,
        )
        t0 = time.monotonic()
        rows, st, elapsed = run(eng)
        hist, count, errors, _ = rows["k"]
        # arrivals at 0, 50, ... 450 ms; those whose delayed start (+150 ms) is at or past the
        # end (500 ms) end without running anything
        assert (count, errors) == (7, 0)
        assert st["sessions_started"] == st["sessions_completed"] == 10
        assert min(srv.times(b"/")) - t0 >= 0.15
        # the latency counts from arrival + delay: the delay itself is not in it
        assert hist.max < 100_000
        assert elapsed < 1.0


def test_start_delay_past_the_end_runs_nothing() -> None:
    with log_server() as srv:
        eng = engine(
            srv.port,
            [http(0, b"/")],
            ["k"],
            teardown_ops=[http(0, b"/logout")],
            sessions=3,
            duration_ns=100 * MS,
            start_delay_ns=10 * S,
        )
        rows, st, elapsed = run(eng)
        assert elapsed < 0.5
        assert rows == {} and st["sessions_completed"] == 3
        assert srv.log == []  # not even the teardown: the session never began


# ---------------------------------------------------------------- init and teardown


def test_init_ops_run_once_per_session_and_are_measured() -> None:
    with log_server() as srv:
        eng = engine(
            srv.port,
            [http(1, b"/work")],
            ["login", "work"],
            init_ops=[http(0, b"/login"), delay(MS)],
            sessions=3,
            iterations=4,
        )
        rows, st, _ = run(eng)
        assert srv.count(b"/login") == 3 and srv.count(b"/work") == 12
        assert rows["login"][1:3] == (3, 0) and rows["work"][1:3] == (12, 0)
        assert st["iterations"] == 12 and st["responses"] == 15
        for paths in srv.by_connection().values():  # a session keeps its connection
            assert paths == [b"/login"] + [b"/work"] * 4


def test_teardown_ops_run_once_per_session_unmeasured() -> None:
    refused = free_port()
    with log_server() as srv:
        plan = plan_of(
            [http(0, b"/work")],
            # the rule: a teardown op records nothing, whatever key it names; a key used only
            # by teardown ops has no row, a shared one holds the measured ops alone
            teardown=[http(1, b"/logout"), http(0, b"/work"), http(1, b"/x", target=1)],
        )
        eng = Engine(
            [("127.0.0.1", srv.port), ("127.0.0.1", refused)],
            ["work", "logout"],
            plan,
            EngineOptions(sessions=3, iterations=2),
        )
        rows, st, _ = run(eng)
        assert set(rows) == {"work"}
        assert rows["work"][1:3] == (6, 0)
        assert st["responses"] == st["requests_sent"] == 6
        assert st["errors"] == 0  # the refused connect of the third teardown op is not counted
        assert st["iterations"] == 6 and st["sessions_completed"] == 3
        assert srv.count(b"/logout") == 3
        for paths in srv.by_connection().values():
            assert paths == [b"/work", b"/work", b"/logout", b"/work"]


def test_open_model_runs_init_run_teardown_in_order() -> None:
    with log_server() as srv:
        eng = engine(
            srv.port,
            [http(1, b"/work")],
            ["login", "work"],
            init_ops=[http(0, b"/login")],
            teardown_ops=[http(0, b"/logout")],
            sessions=4,
            arrival_rate_per_s=20,
            duration_ns=500 * MS,
        )
        rows, st, _ = run(eng)
        assert st["sessions_started"] == st["sessions_completed"] == 10
        assert rows["login"][1] == rows["work"][1] == 10
        assert srv.count(b"/logout") == 10
        # slots keep their connections: each one carries whole sessions, one after another
        for paths in srv.by_connection().values():
            assert len(paths) % 3 == 0
            assert paths == [b"/login", b"/work", b"/logout"] * (len(paths) // 3)


def test_teardown_runs_after_a_duration_stop() -> None:
    with log_server() as srv:
        eng = engine(
            srv.port,
            [http(0, b"/work"), delay(10 * MS)],
            ["work"],
            teardown_ops=[delay(20 * MS), http(0, b"/logout")],
            sessions=2,
            duration_ns=300 * MS,
        )
        rows, st, elapsed = run(eng)
        assert 0.3 < elapsed < 0.8
        assert srv.count(b"/logout") == 2
        for paths in srv.by_connection().values():
            assert paths[-1] == b"/logout" and paths.count(b"/logout") == 1
        assert rows["work"][1] == srv.count(b"/work")


def test_teardown_after_the_end_is_cut_off_at_end_plus_request_timeout() -> None:
    with log_server({b"/logout": SILENT}) as srv:
        eng = engine(
            srv.port,
            [http(0, b"/work")],
            ["work"],
            teardown_ops=[http(0, b"/logout"), delay(10 * S), http(0, b"/never")],
            sessions=2,
            duration_ns=200 * MS,
            request_timeout_ns=200 * MS,
        )
        rows, st, elapsed = run(eng)
        # the silent /logout times out (not counted), the 10 s delay is cut at end + 200 ms
        assert 0.35 < elapsed < 0.8
        assert srv.count(b"/logout") == 2 and srv.count(b"/never") == 0
        assert st["errors"] == 0 and rows["work"][2] == 0


def test_teardown_runs_after_a_timed_out_last_iteration() -> None:
    with log_server({b"/slow": 0.5}) as srv:
        eng = engine(
            srv.port,
            [http(0, b"/slow")],
            ["slow"],
            teardown_ops=[http(0, b"/logout")],
            sessions=2,
            iterations=1,
            scenario_timeout_ns=100 * MS,
        )
        rows, st, elapsed = run(eng)
        assert st["sessions_timed_out"] == 2
        assert srv.count(b"/logout") == 2
        assert elapsed < 0.45
        assert rows == {}


def test_cancel_abandons_teardown() -> None:
    with log_server({b"/logout": SILENT}) as srv:
        eng = engine(
            srv.port,
            [http(0, b"/work")],
            ["work"],
            teardown_ops=[http(0, b"/logout"), delay(10 * S), http(0, b"/never")],
            sessions=2,
            iterations=1,
        )
        try:
            eng.start()
            deadline = time.monotonic() + 5
            while srv.count(b"/logout") < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert srv.count(b"/logout") == 2  # both sessions wait in their teardown
            assert not eng.wait(0.1)
            t0 = time.monotonic()
            eng.cancel()
            assert eng.wait(1.0)
            assert time.monotonic() - t0 < 1.0
        finally:
            eng.close()
        assert srv.count(b"/never") == 0
        assert eng.stats()["iterations"] == 2


# ---------------------------------------------------------------- API

REQUEST = b"GET / HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ({"scenario_timeout_ns": -1}, ValueError, "scenario_timeout_ns"),
        ({"scenario_timeout_ns": 0.5}, TypeError, "scenario_timeout_ns"),
        ({"start_delay_ns": -1}, ValueError, "start_delay_ns"),
        ({"start_random_delay_ns": True}, TypeError, "start_random_delay_ns"),
        ({"start_delay_ns": 2**62, "start_random_delay_ns": 2**62}, ValueError, "long"),
    ],
)
def test_validation(change: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        EngineOptions(**{"sessions": 1, "iterations": 1, **change})


@pytest.mark.parametrize(
    ("init", "teardown", "exc", "match"),
    [
        ([step("http", 0, 5, b"x")], [], ValueError, r"init_ops\[0\]: metric_index"),
        ([], [delay(-1)], ValueError, "delay_ns"),
        ([], [step("http", 2, 0, b"x")], ValueError, r"teardown_ops\[0\]: target_index"),
    ],
)
def test_init_and_teardown_ops_are_checked(
    init: list[Step], teardown: list[Step], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        plan = plan_of([step("http", 0, 0, REQUEST)], init, teardown)
        Engine([("127.0.0.1", 80)], ["k"], plan, EngineOptions(iterations=1))


def test_defaults_and_stats_key() -> None:
    options = EngineOptions(sessions=1, iterations=1)
    assert options.scenario_timeout_ns == 0
    eng = Engine([("127.0.0.1", 80)], ["k"], get_plan(REQUEST), options)
    assert eng.stats()["sessions_timed_out"] == 0
    eng.close()
    assert eng.stats()["sessions_timed_out"] == 0
