"""Every limit of the session language and of a load test, each defined once.

The engine's limits per session (nesting of bodies, variables, WebSocket connections, signal
values, child sessions, the range of an integer update) are the engine's own constants,
exported by ``_fastpath.engine``: the compiler reads them from there, so what the master
accepts is what a worker's engine takes. The rest are the language's and the cluster's
policy (how far a repeat counts, how deep ``run_scenario`` inlines, how big a load test may
be), checked by the master and the worker alike through this package.
"""

from __future__ import annotations

from _fastpath.engine import (
    MAX_CHILDREN,
    MAX_CONNS,
    MAX_NESTING,
    MAX_SIGNALS,
    MAX_UPDATE_ADD,
    MAX_VARIABLES,
)

__all__ = [
    "MAX_CHILDREN",
    "MAX_CONNS",
    "MAX_NESTING",
    "MAX_SIGNALS",
    "MAX_UPDATE_ADD",
    "MAX_VARIABLES",
]

# The language's own limits.
MAX_REPEAT = 1_000_000
MAX_RETRIES = 1_000
MAX_SPREAD = 256  # cc_spread rate (each call is a child session slot)
MAX_SCENARIO_DEPTH = 8  # run_scenario in run_scenario (inlined by the compiler)

# A load test's size (RESOURCE_EXHAUSTED beyond them).
MAX_SESSIONS_PER_ENTRY = 1_000_000
MAX_ENTRIES = 100
MAX_STEPS = 10_000
MAX_ITERATIONS = 1_000_000_000
MAX_RATE_PER_S = 10_000_000.0
MAX_STAGES = 1_000
MAX_NAME_LEN = 200

# Config values and their defaults.
DEFAULT_MAX_CAPTURE = 1024 * 1024  # bytes of a response kept for extraction
MAX_MAX_CAPTURE = 64 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT_NS = 5_000_000_000
DEFAULT_REQUEST_TIMEOUT_NS = 30_000_000_000
