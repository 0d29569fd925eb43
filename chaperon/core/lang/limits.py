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

# A load test's size (RESOURCE_EXHAUSTED beyond them). The weight limits are checked first,
# before any rule looks inside (``shape.weigh``), so that what a submission costs the master
# is bounded by these numbers and not by what the sender could fit in a message.
MAX_LOAD_TEST_BYTES = 4 * 1024 * 1024  # the serialized LoadTest (ByteSize)
MAX_ELEMENTS = 100_000  # messages, map entries, list items and JSON values, all together
MAX_SESSIONS_PER_ENTRY = 1_000_000
MAX_ENTRIES = 100
MAX_STEPS = 10_000  # steps written in the load test, in every entry and block
MAX_EXPANDED_STEPS = 100_000  # steps the entries run once scenarios run by name are inlined
MAX_CONFIG_KEYS = 1_000  # top-level keys of one config
MAX_THRESHOLDS = 1_000
MAX_ITERATIONS = 1_000_000_000
MAX_RATE_PER_S = 10_000_000.0
MAX_STAGES = 1_000
MAX_NAME_LEN = 200
# Objects and lists in one google.protobuf.Struct or Value (config, a json body) nest at most
# this deep (INVALID_ARGUMENT beyond). Each level is three messages deep on the wire (Struct,
# map entry, Value), and protobuf's parsers stop at 100: with 16, the deepest load test the
# language allows (bodies and run_scenario nested to their limits, a json body at this depth)
# still parses inside every message that carries it (a LoadTestRun in a RunProgress).
MAX_STRUCT_DEPTH = 16

# Config values and their defaults.
DEFAULT_MAX_CAPTURE = 1024 * 1024  # bytes of a response kept for extraction
MAX_MAX_CAPTURE = 64 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT_NS = 5_000_000_000
DEFAULT_REQUEST_TIMEOUT_NS = 30_000_000_000
