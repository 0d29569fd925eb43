"""Duration strings of load tests: "500ms", "5s", "1.5s", "2m", "1h", "1m30s", "250us".

Load-test files and the proto messages carry durations as strings (k6 and Chaperon users
write "1m", which google.protobuf.Duration's JSON form would refuse). One parser serves
the master's validation and the worker's plan compiler so they can never disagree.
"""

from __future__ import annotations

import re

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h)")

# Longer than a day is almost certainly a typo in a load test.
MAX_DURATION_NS = 24 * 3_600_000_000_000


class DurationError(ValueError):
    """A duration string that does not parse; the message says what is accepted."""


def parse_duration_ns(text: str) -> int:
    """Parse a duration string into nanoseconds; raise DurationError if it does not parse."""
    s = text.strip()
    if not s:
        raise DurationError("empty duration (use e.g. '5s', '500ms', '2m')")
    if s == "0":
        return 0
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise DurationError(
            f"cannot parse duration {text!r} (use a number and a unit: "
            "'250ms', '5s', '1.5s', '2m', '1h', '1m30s')"
        )
    if total > MAX_DURATION_NS:
        raise DurationError(f"duration {text!r} is longer than 24h")
    return int(round(total))


def parse_duration_s(text: str) -> float:
    return parse_duration_ns(text) / 1e9


def format_duration_ns(ns: int) -> str:
    if ns % 1_000_000_000 == 0:
        return f"{ns // 1_000_000_000}s"
    if ns % 1_000_000 == 0:
        return f"{ns // 1_000_000}ms"
    return f"{ns / 1e9:g}s"
