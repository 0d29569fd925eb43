"""The typed boundary into the engine: ``PlanBuilder`` and ``EngineOptions`` refuse bad input.

Wrong types are TypeError, values out of range ValueError, never a crash (a property test
throws arbitrary calls at the builder); indexes the builder cannot judge alone (targets,
metric keys, variables, children, connections, signals) are checked by the Engine that takes
the plan, naming the op. No socket is opened: an Engine that is never started only
allocates.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _fastpath.engine import (
    EX_BODY,
    EX_HEADER,
    EX_JSON,
    EX_REGEX,
    EX_STATUS,
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


def test_the_engine_takes_a_builder_and_options_only() -> None:
    def plan() -> PlanBuilder:
        b = PlanBuilder()
        b.http(0, 0, REQUEST)
        return b

    options = EngineOptions(iterations=1)
    with pytest.raises(TypeError):
        Engine(TARGETS, ["k"], plan(), options, sessions=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="PlanBuilder"):
        Engine(TARGETS, ["k"], [(OP_HTTP, 0, 0, REQUEST, False)], options)
    with pytest.raises(TypeError):
        Engine(TARGETS, ["k"], plan())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="EngineOptions"):
        Engine(TARGETS, ["k"], plan(), {"iterations": 1})
    with pytest.raises(TypeError):
        Engine(TARGETS, ["k"], None, options)
    Engine(TARGETS, ["k"], plan(), options).close()


def test_options_replace_checks_again_and_keeps_the_rest() -> None:
    options = EngineOptions(sessions=4, threads=8, iterations=1)
    assert (options.sessions, options.threads, options.open_model) == (4, 4, False)
    wider = options.replace(sessions=16, threads=8)
    assert (wider.sessions, wider.threads, wider.iterations) == (16, 8, 1)
    assert options.sessions == 4  # a copy
    assert repr(options.replace()) == repr(options)
    with pytest.raises(ValueError, match="sessions"):
        options.replace(sessions=0)
    with pytest.raises(TypeError):
        options.replace(colour="blue")
    staged = EngineOptions(rate_stages=[(10**9, 5.0)], tls_ca_file="/ca.pem")
    again = staged.replace(threads=2)
    assert again.open_model and again.duration_ns == 10**9 and again.tls_ca_file == b"/ca.pem"


# ---------------------------------------------------------------- anything at all, never a crash

SMALL = st.integers(min_value=-3, max_value=4)
ANY_INT = st.one_of(SMALL, st.integers(min_value=-(2**63), max_value=2**63 - 1))
PART = st.one_of(st.binary(max_size=8), SMALL, st.text(max_size=3), st.none(), st.booleans())
TEMPLATE = st.one_of(st.lists(PART, max_size=4), st.none(), st.integers(), st.binary(max_size=4))
EXTRACTOR = st.one_of(
    st.tuples(
        SMALL,
        st.sampled_from([EX_JSON, EX_REGEX, EX_HEADER, EX_STATUS, EX_BODY, 0, 9]),
        st.sampled_from([b"$.a", b"(x", b"a[", b"", b"x", "x"]),
        st.booleans(),
    ),
    st.tuples(SMALL),
    st.none(),
)
ARG = st.one_of(
    ANY_INT,
    TEMPLATE,
    st.booleans(),
    st.floats(allow_nan=True),
    st.just(REQUEST),
    st.just(json.dumps),
    st.lists(EXTRACTOR, max_size=2),
)
METHODS = [
    "init",
    "run",
    "teardown",
    "end",
    "http",
    "http_template",
    "delay",
    "random_delay",
    "repeat",
    "loop",
    "retry",
    "spawn",
    "spread",
    "assign",
    "update_add",
    "unset",
    "add_metric",
    "abort",
    "python",
    "await_child",
    "await_all",
    "signal",
    "await_signal",
    "ws_connect",
    "ws_send",
    "ws_recv",
    "ws_await_recv",
    "ws_close",
]
CALL = st.tuples(st.sampled_from(METHODS), st.lists(ARG, max_size=7))


@settings(max_examples=400, deadline=None)
@given(
    calls=st.lists(CALL, min_size=1, max_size=12),
    nvars=st.integers(0, 3),
    nchildren=st.integers(0, 3),
    nconns=st.integers(0, 2),
    nsignals=st.integers(0, 2),
)
def test_arbitrary_builder_calls_build_or_are_refused_clearly(
    calls: list[tuple[str, list[Any]]], nvars: int, nchildren: int, nconns: int, nsignals: int
) -> None:
    """Any method with any arguments (wrong counts, types, ranges, unclosed or empty blocks,
    phases out of order, indexes past what the engine has): TypeError or ValueError, or an
    engine that was built; never a crash or another exception."""
    b = PlanBuilder()
    for method, args in calls:
        try:
            getattr(b, method)(*args)
        except (TypeError, ValueError):
            pass
    options = EngineOptions(
        iterations=1,
        var_names=[f"v{i}" for i in range(nvars)],
        nchildren=nchildren,
        nconns=nconns,
        nsignals=nsignals,
    )
    try:
        eng = Engine([("127.0.0.1", 9)], ["a", "b"], b, options)
    except (TypeError, ValueError):
        return
    eng.close()
