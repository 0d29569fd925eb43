"""The typed boundary into the engine: ``PlanBuilder`` and ``EngineOptions`` refuse bad input.

Wrong types are TypeError, values out of range ValueError, never a crash; indexes the builder
cannot judge alone (targets, metric keys, variables, children, connections, signals) are
checked by the Engine that takes the plan, naming the op. No socket is opened: an Engine that
is never started only allocates.
"""

from __future__ import annotations

from typing import Any

import pytest

from _fastpath.engine import (
    EX_JSON,
    MAX_NESTING,
    OP_DELAY,
    OP_HTTP,
    OP_REPEAT,
    Engine,
    EngineOptions,
    PlanBuilder,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
TARGETS = [("127.0.0.1", 1)]


def _engine(b: PlanBuilder, **options: Any) -> Engine:
    return Engine(TARGETS, ["k"], b, EngineOptions(**{"iterations": 1, **options}))


def test_a_built_plan_runs_through_an_engine_and_describes_itself() -> None:
    b = PlanBuilder()
    b.init()
    b.http(0, 0, REQUEST)
    b.run()
    b.repeat(2, 0)
    b.delay(5)
    b.end()
    b.teardown()
    b.http(0, 0, REQUEST)
    assert b.describe("init_ops") == [(OP_HTTP, 0, 0, REQUEST, False)]
    assert b.describe("ops") == [(OP_REPEAT, 2, 1, 0), (OP_DELAY, 5)]
    assert len(b) == 4
    _engine(b).close()
    with pytest.raises(RuntimeError, match="taken"):
        _engine(b)


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda b: b.http("0", 0, REQUEST), TypeError),
        (lambda b: b.http(0, 0, "GET /"), TypeError),
        (lambda b: b.http(-1, 0, REQUEST), ValueError),
        (lambda b: b.http(0, -2, REQUEST), ValueError),
        (lambda b: b.http(0, 0, b""), ValueError),
        (lambda b: b.http(2**40, 0, REQUEST), ValueError),
        (lambda b: b.delay(-1), ValueError),
        (lambda b: b.delay(1.5), TypeError),
        (lambda b: b.random_delay(5, 4), ValueError),
        (lambda b: b.repeat(-1), ValueError),
        (lambda b: b.loop(True), TypeError),
        (lambda b: b.spread(0, 0, 1), ValueError),
        (lambda b: b.assign(0, "text"), TypeError),
        (lambda b: b.assign(0, [b"x", 1.5]), TypeError),
        (lambda b: b.assign(0, [-3]), ValueError),
        (lambda b: b.update_add(0, 2**63), ValueError),
        (lambda b: b.python(0, "json:dumps"), TypeError),
        (lambda b: b.ws_send(0, 0, 3, [b"x"]), ValueError),
        (
            lambda b: b.http_template(0, 0, [b"GET / HTTP/1.1\r\n"], extract=[(0, 99, b"", 0)]),
            ValueError,
        ),
        (
            lambda b: b.http_template(0, 0, [b"GET /\r\n"], extract=[(0, EX_JSON, "$.a", 0)]),
            TypeError,
        ),
        (lambda b: b.end(), ValueError),
    ],
)
def test_bad_arguments_are_refused(call: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        call(PlanBuilder())


def test_blocks_must_hold_ops_nest_boundedly_and_end_before_a_phase() -> None:
    b = PlanBuilder()
    b.repeat(1)
    with pytest.raises(ValueError, match="empty"):
        b.end()
    with pytest.raises(ValueError, match="not ended"):
        b.teardown()
    b = PlanBuilder()
    for _ in range(MAX_NESTING):
        b.loop(1)
    with pytest.raises(ValueError, match="deeper"):
        b.loop(1)
    b = PlanBuilder()
    b.http(0, 0, REQUEST)
    with pytest.raises(ValueError, match="before any op"):
        b.init()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda b: b.http(1, 0, REQUEST), r"ops\[0\]: target_index 1 out of range"),
        (lambda b: b.http(0, 3, REQUEST), r"ops\[0\]: metric_index 3 out of range"),
        (lambda b: b.assign(2, [b"x"]), r"variable slot 2 out of range"),
        (lambda b: b.ws_close(0, 0), r"ops\[0\]: connection 0 out of range"),
        (lambda b: b.signal(-1, 0), r"ops\[0\]: signal 0 out of range"),
        (lambda b: b.await_child(0, 0), r"ops\[0\]: child 0 out of range"),
    ],
)
def test_the_engine_checks_the_indexes(build: Any, match: str) -> None:
    b = PlanBuilder()
    build(b)
    with pytest.raises(ValueError, match=match):
        _engine(b, var_names=["a"])


def test_a_plan_without_run_ops_or_with_an_open_block_is_refused() -> None:
    b = PlanBuilder()
    b.init()
    b.http(0, 0, REQUEST)
    with pytest.raises(ValueError, match="ops must not be empty"):
        _engine(b)
    b = PlanBuilder()
    b.repeat(1)
    b.delay(0)
    with pytest.raises(ValueError, match="not ended"):
        _engine(b)


@pytest.mark.parametrize(
    ("options", "exc"),
    [
        ({"sessions": 0}, ValueError),
        ({"sessions": 1.5}, TypeError),
        ({"threads": "2"}, TypeError),
        ({"iterations": 0, "duration_ns": 0}, ValueError),
        ({"nconns": 17}, ValueError),
        ({"var_names": [1]}, TypeError),
        ({"tls_insecure": 1}, TypeError),
        ({"arrival_rate_per_s": float("nan"), "duration_ns": 1}, ValueError),
    ],
)
def test_engine_options_are_checked(options: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        EngineOptions(**{"iterations": 1, **options})


def test_options_are_given_once() -> None:
    b = PlanBuilder()
    b.http(0, 0, REQUEST)
    with pytest.raises(TypeError, match="not both"):
        Engine(TARGETS, ["k"], b, EngineOptions(iterations=1), sessions=2)
    options = EngineOptions(sessions=4, threads=8, iterations=1)
    assert (options.sessions, options.threads, options.open_model) == (4, 4, False)
