"""The engine's control-flow ops: repeat, repeat_traced, loop and random_delay.

Against real servers on 127.0.0.1 (``support.servers``) that count requests per path
(``counting_server``), or log their arrival times (``LogServer``) where timing matters.
Every wait is bounded; servers are stopped in ``finally``.
"""

from __future__ import annotations

import time

import pytest
from support.plans import Step, block, plan_of, step
from support.servers import counting_server, free_port, get, log_server

from _fastpath.engine import (
    MAX_NESTING,
    OP_LOOP,
    OP_RANDOM_DELAY,
    OP_REPEAT,
    Engine,
    EngineOptions,
)

S = 1_000_000_000
MS = 1_000_000


def http(path: bytes, metric: int = 0) -> Step:
    return step("http", 0, metric, get(path))


def delay(delay_ns: int) -> Step:
    return step("delay", delay_ns)


def random_delay(min_ns: int, max_ns: int) -> Step:
    return step("random_delay", min_ns, max_ns)


def repeat(count: int, *body: Step, metric: int = -1) -> Step:
    return block("repeat", count, metric, body=body)


def loop(duration_ns: int, *body: Step) -> Step:
    return block("loop", duration_ns, body=body)


def run(eng: Engine, timeout_s: float = 10.0) -> tuple[dict[str, tuple], dict[str, int], float]:
    """Start, wait (bounded), swap, close -> ({key: (hist, count, errors)}, stats, elapsed s)."""
    try:
        t0 = time.monotonic()
        eng.start()
        assert eng.wait(timeout_s), "engine did not finish in time"
        elapsed = time.monotonic() - t0
        rows = {k: (h, c, e) for k, h, c, e, _, _ in eng.swap()}
        return rows, eng.stats(), elapsed
    finally:
        eng.close()


def engine(
    port: int,
    ops: list[Step],
    keys: list[str] | None = None,
    init_ops: list[Step] = [],  # noqa: B006 - never mutated
    teardown_ops: list[Step] = [],  # noqa: B006
    **options,
) -> Engine:
    options.setdefault("sessions", 1)
    plan = plan_of(ops, init_ops, teardown_ops)
    return Engine([("127.0.0.1", port)], keys or ["GET"], plan, EngineOptions(**options))


# ---------------------------------------------------------------- repeat


def test_repeat_count_is_exact() -> None:
    with counting_server() as (srv, paths):
        ops = [http(b"/a"), repeat(5, http(b"/b")), http(b"/c")]
        rows, stats, _ = run(engine(srv.port, ops, sessions=2, iterations=3))
    assert paths == {b"/a": 6, b"/b": 30, b"/c": 6}
    assert rows["GET"][1] == 42 and rows["GET"][2] == 0
    assert stats["iterations"] == 6 and stats["requests_sent"] == 42


def test_nested_repeat_multiplies() -> None:
    with counting_server() as (srv, paths):
        ops = [repeat(3, http(b"/outer"), repeat(4, http(b"/inner"))), http(b"/after")]
        run(engine(srv.port, ops, iterations=1))
    assert paths == {b"/outer": 3, b"/inner": 12, b"/after": 1}


def test_nested_repeat_directly_inside_repeat() -> None:
    with counting_server() as (srv, paths):
        # the inner body ends where the outer one does
        run(engine(srv.port, [repeat(3, repeat(4, http(b"/x")))], iterations=2))
    assert paths == {b"/x": 24}


def test_repeat_zero_skips_the_body() -> None:
    with counting_server() as (srv, paths):
        ops = [
            repeat(0, http(b"/skip"), repeat(5, http(b"/skip2"))),
            http(b"/after"),
            repeat(2, repeat(0, http(b"/skip3"))),
        ]
        rows, stats, _ = run(engine(srv.port, ops, iterations=3))
    assert paths == {b"/after": 3}
    assert stats["iterations"] == 3


def test_repeat_traced_records_each_iteration() -> None:
    with counting_server() as (srv, paths):
        ops = [repeat(4, delay(20 * MS), http(b"/t"), metric=1)]
        rows, _, _ = run(engine(srv.port, ops, keys=["GET", "iter"], iterations=2))
    assert paths == {b"/t": 8}
    hist, count, errors = rows["iter"]
    assert count == 8 and hist.total_count == 8 and errors == 0
    assert hist.min >= 19_900  # us: each iteration holds a 20 ms delay
    assert hist.max < 1_000_000
    assert rows["GET"][1] == 8


def test_repeat_traced_in_the_open_model_records_service_too() -> None:
    with counting_server() as (srv, paths):
        ops = [repeat(2, http(b"/o"), metric=1)]
        eng = engine(
            srv.port,
            ops,
            ["GET", "iter"],
            sessions=20,
            arrival_rate_per_s=50,
            duration_ns=200 * MS,
        )
        try:
            eng.start()
            assert eng.wait(10)
            rows = {k: (h, c, s) for k, h, c, _, _, s in eng.swap()}
            stats = eng.stats()
        finally:
            eng.close()
    n = stats["iterations"]
    assert n >= 5
    assert paths[b"/o"] == 2 * n
    hist, count, service = rows["iter"]
    assert count == 2 * n and hist.total_count == 2 * n and service.total_count == 2 * n


# ---------------------------------------------------------------- loop


def test_loop_runs_for_its_duration() -> None:
    with counting_server() as (srv, paths):
        ops = [loop(300 * MS, delay(50 * MS), http(b"/l")), http(b"/end")]
        _, stats, elapsed = run(engine(srv.port, ops, iterations=1))
    assert 4 <= paths[b"/l"] <= 8  # about 6: iterations start at 0, 50, ... 250 ms
    assert paths[b"/end"] == 1
    assert 0.25 <= elapsed < 2.0


def test_loop_of_zero_duration_skips_the_body() -> None:
    with counting_server() as (srv, paths):
        run(engine(srv.port, [loop(0, http(b"/l")), http(b"/end")], iterations=2))
    assert paths == {b"/end": 2}


def test_repeat_inside_loop() -> None:
    with counting_server() as (srv, paths):
        ops = [loop(200 * MS, delay(40 * MS), repeat(3, http(b"/r")))]
        run(engine(srv.port, ops, iterations=1))
    assert paths[b"/r"] % 3 == 0 and 9 <= paths[b"/r"] <= 24


def test_duration_end_cuts_through_a_loop() -> None:
    with counting_server() as (srv, paths):
        ops = [loop(60 * S, http(b"/l"))]
        _, stats, elapsed = run(engine(srv.port, ops, sessions=2, duration_ns=300 * MS))
    assert elapsed < 3.0
    assert paths[b"/l"] > 10


def test_scenario_timeout_cuts_through_a_loop() -> None:
    with counting_server() as (srv, paths):
        ops = [loop(60 * S, delay(20 * MS)), http(b"/never")]
        _, stats, elapsed = run(
            engine(srv.port, ops, sessions=2, iterations=2, scenario_timeout_ns=150 * MS)
        )
    assert elapsed < 3.0
    assert stats["sessions_timed_out"] == 4
    assert paths == {}


def test_cancel_cuts_through_a_loop() -> None:
    with counting_server() as (srv, _):
        eng = engine(srv.port, [loop(60 * S, delay(10 * MS))], iterations=1)
        try:
            eng.start()
            time.sleep(0.1)
            eng.cancel()
            assert eng.wait(2)
        finally:
            eng.close()


# ---------------------------------------------------------------- random delay


def test_random_delay_within_bounds() -> None:
    with log_server() as srv:
        ops = [http(b"/a"), random_delay(20 * MS, 60 * MS), http(b"/b")]
        run(engine(srv.port, ops, sessions=1, iterations=12))
        a, b = srv.times(b"/a"), srv.times(b"/b")
    assert len(a) == len(b) == 12
    gaps = [y - x for x, y in zip(a, b, strict=True)]
    assert all(0.019 <= g < 0.2 for g in gaps), gaps
    assert max(gaps) - min(gaps) > 0.003, gaps  # random, not a constant


def test_random_delay_with_equal_bounds_is_a_delay() -> None:
    with counting_server() as (srv, paths):
        _, _, elapsed = run(
            engine(srv.port, [random_delay(30 * MS, 30 * MS), http(b"/x")], iterations=3)
        )
    assert paths == {b"/x": 3}
    assert elapsed >= 0.089


# ---------------------------------------------------------------- models and phases


def test_closed_model_iterations_times_repeats_are_exact() -> None:
    with counting_server() as (srv, paths):
        ops = [repeat(5, http(b"/x")), repeat(2, repeat(3, http(b"/y")))]
        rows, stats, _ = run(engine(srv.port, ops, sessions=3, threads=2, iterations=7))
    assert paths == {b"/x": 105, b"/y": 126}
    assert stats["iterations"] == 21
    assert rows["GET"][1] == 231


def test_open_model_with_a_repeat() -> None:
    with counting_server() as (srv, paths):
        ops = [repeat(3, http(b"/o")), http(b"/p")]
        eng = engine(srv.port, ops, sessions=20, arrival_rate_per_s=100, duration_ns=300 * MS)
        _, stats, _ = run(eng)
    assert stats["iterations"] >= 10
    assert paths[b"/p"] == stats["iterations"]
    assert paths[b"/o"] == 3 * paths[b"/p"]


def test_init_and_teardown_with_repeats() -> None:
    with counting_server() as (srv, paths):
        eng = engine(
            srv.port,
            [http(b"/run")],
            ["GET", "td"],
            init_ops=[repeat(2, http(b"/init"))],
            teardown_ops=[repeat(3, http(b"/td", metric=1), metric=1)],
            sessions=2,
            iterations=2,
        )
        rows, _, _ = run(eng)
    assert paths == {b"/init": 4, b"/run": 4, b"/td": 6}
    assert "td" not in rows  # teardown (traced or not) is not measured
    assert rows["GET"][1] == 8


# ---------------------------------------------------------------- validation


def _nested(depth: int) -> Step:
    op = http(b"/")
    for _ in range(depth):
        op = repeat(2, op)
    return op


@pytest.mark.parametrize(
    ("ops", "exc", "match"),
    [
        ([repeat(2)], ValueError, r"ops\[0\]: the block's body is empty"),
        ([repeat(-1, http(b"/"))], ValueError, r"count must be >= 0"),
        ([step("repeat", 2), http(b"/")], ValueError, r"ops\[0\]: its block is not ended"),
        ([repeat(2, http(b"/"), metric=5)], ValueError, r"ops\[0\]: metric_index 5 out of range"),
        ([repeat(2, http(b"/"), metric=-2)], ValueError, r"metric_index must be >= -1"),
        ([repeat(2, http(b"/"), metric=True)], TypeError, r"metric_index must be an int"),
        ([step("repeat")], TypeError, r"positional argument"),
        ([loop(-1, http(b"/"))], ValueError, r"duration_ns must be >= 0"),
        ([loop(S)], ValueError, r"ops\[0\]: the block's body is empty"),
        ([step("loop")], TypeError, r"positional argument"),
        ([random_delay(5, 4)], ValueError, r"max_ns 4 < min_ns 5"),
        ([random_delay(-1, 4)], ValueError, r"min_ns must be >= 0"),
        ([random_delay(0, 2**62)], ValueError, r"max_ns \d+ is unreasonably long"),
        ([step("end")], ValueError, r"end\(\) without an open block"),
        ([_nested(MAX_NESTING + 1)], ValueError, r"blocks nested deeper than 8"),
    ],
)
def test_validation(ops: list[Step], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        plan = plan_of(ops)
        Engine([("127.0.0.1", 1)], ["GET"], plan, EngineOptions(iterations=1))


def test_validation_of_init_and_teardown_ops_names_them() -> None:
    with pytest.raises(ValueError, match=r"init_ops\[1\]: its block is not ended"):
        plan_of([http(b"/")], init=[http(b"/"), step("repeat", 1), http(b"/")])
    with pytest.raises(ValueError, match=r"teardown_ops\[0\]: metric_index 3 out of range"):
        plan = plan_of([http(b"/")], teardown=[repeat(1, http(b"/"), metric=3)])
        Engine([("127.0.0.1", 1)], ["GET"], plan, EngineOptions(iterations=1))


def test_depth_eight_is_allowed() -> None:
    with counting_server() as (srv, paths):
        deep = http(b"/deep")
        for _ in range(8):
            deep = repeat(2, deep)
        run(engine(srv.port, [deep], iterations=1))
    assert paths == {b"/deep": 256}


def test_constants() -> None:
    assert (OP_RANDOM_DELAY, OP_REPEAT, OP_LOOP) == (3, 4, 5)
    assert free_port() > 0
