"""Engine construction with arbitrary stateful op tuples: a clear ValueError or TypeError, or
an engine that was built, never a crash (the plan compiler is not the only possible caller).

Nothing is started: construction only checks and copies the plan into C memory.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from _fastpath.engine import (
    EX_BODY,
    EX_JSON,
    EX_REGEX,
    OP_ABORT,
    OP_ADD_METRIC,
    OP_ASSIGN,
    OP_ASYNC,
    OP_AWAIT,
    OP_AWAIT_ALL,
    OP_AWAIT_SIGNAL,
    OP_HTTP,
    OP_RETRY,
    OP_SIGNAL,
    OP_SPREAD,
    OP_UNSET,
    OP_UPDATE_ADD,
    OP_WS_AWAIT_RECV,
    OP_WS_CLOSE,
    OP_WS_CONNECT,
    OP_WS_RECV,
    OP_WS_SEND,
    Engine,
)

SMALL = st.integers(min_value=-3, max_value=4)
ANY_INT = st.one_of(SMALL, st.integers(min_value=-(2**63), max_value=2**63 - 1))
PART = st.one_of(st.binary(max_size=8), SMALL, st.text(max_size=3), st.none())
PARTS = st.one_of(st.lists(PART, max_size=4), st.none(), st.integers())
EXTRACTOR = st.tuples(
    SMALL,
    st.sampled_from([EX_JSON, EX_REGEX, EX_BODY, 0, 9]),
    st.sampled_from([b"$.a", b"(x", b"a[", b"", b"x"]),
    st.booleans(),
)
EXTRAS = st.fixed_dictionaries(
    {"head": PARTS},
    optional={"body": PARTS, "cookies": st.booleans(), "extract": st.lists(EXTRACTOR, max_size=2)},
)
KINDS = [
    OP_ASSIGN,
    OP_UPDATE_ADD,
    OP_UNSET,
    OP_RETRY,
    OP_ADD_METRIC,
    OP_ABORT,
    OP_ASYNC,
    OP_AWAIT,
    OP_AWAIT_ALL,
    OP_SPREAD,
    OP_SIGNAL,
    OP_AWAIT_SIGNAL,
    OP_WS_CONNECT,
    OP_WS_SEND,
    OP_WS_RECV,
    OP_WS_AWAIT_RECV,
    OP_WS_CLOSE,
]
STATE_OP = st.builds(
    lambda kind, fields: (kind, *fields),
    st.sampled_from(KINDS),
    st.lists(st.one_of(ANY_INT, PARTS), max_size=5),
)
HTTP_OP = st.builds(
    lambda t, m, nb, ex: (OP_HTTP, t, m, None, nb, ex), SMALL, SMALL, st.booleans(), EXTRAS
)
OP = st.one_of(STATE_OP, HTTP_OP)


@settings(max_examples=400, deadline=None)
@given(
    ops=st.lists(OP, min_size=1, max_size=5),
    nvars=st.integers(0, 3),
    nchildren=st.integers(0, 3),
    nconns=st.integers(0, 2),
    nsignals=st.integers(0, 2),
)
def test_arbitrary_stateful_ops_build_or_are_refused_clearly(
    ops: list[Any], nvars: int, nchildren: int, nconns: int, nsignals: int
) -> None:
    try:
        eng = Engine(
            [("127.0.0.1", 9)],
            ["a", "b"],
            ops,
            iterations=1,
            var_names=[f"v{i}" for i in range(nvars)],
            nchildren=nchildren,
            nconns=nconns,
            nsignals=nsignals,
        )
    except (ValueError, TypeError):
        return
    eng.close()
