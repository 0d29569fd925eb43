"""Load tests to submit and checks on what comes back.

``minimal_load_test`` is the minimal form of API.md as a JSON-able dict (the same text a
user gives ``grpcurl -d`` or ``chaperon run``); ``to_proto`` parses it with protobuf's own
JSON parser, so every test also exercises the proto3 JSON mapping. ``assert_hdr_matches``
decodes a metric's ``hdr`` with the reference HdrHistogram package (``hdrh``) and compares
its count and percentiles with the ones the master reported.
"""

from __future__ import annotations

import base64
from typing import Any

from hdrh.histogram import HdrHistogram

# Percentiles compared between the report and the reference decoding of its histogram.
CHECKED_PERCENTILES = (50.0, 90.0, 99.0)
# 1% apart at most; plus one microsecond, the resolution of the histogram at small values.
REL_TOLERANCE = 0.01
ABS_TOLERANCE_US = 1.0


def minimal_load_test(
    base_url: str,
    *,
    concurrency: int = 10,
    duration: str | None = "2s",
    iterations: int | None = None,
    path: str = "/",
    method: str = "GET",
    name: str = "smoke",
) -> dict[str, Any]:
    """API.md's minimal load test aimed at ``base_url``."""
    entry: dict[str, Any] = {
        "concurrency": concurrency,
        "scenario": {"name": "root", "run": [{"http": {"method": method, "path": path}}]},
    }
    if duration is not None:
        entry["duration"] = duration
    if iterations is not None:
        entry["iterations"] = iterations
    return {"name": name, "config": {"base_url": base_url}, "scenarios": [entry]}


def to_proto(load_test: dict[str, Any]) -> Any:
    """The ``chaperon.v1.LoadTest`` message of a JSON-form load test."""
    from google.protobuf import json_format

    from chaperon.v1 import loadtest_pb2

    return json_format.ParseDict(load_test, loadtest_pb2.LoadTest())


def metric(run: Any, key: str) -> Any:
    """The ``Metric`` with ``key`` in ``run.result`` (fails listing the keys there)."""
    keys = [m.key for m in run.result.metrics]
    for m in run.result.metrics:
        if m.key == key:
            return m
    raise AssertionError(f"no metric {key!r} in the result; keys: {keys}")


def percentile(m: Any, p: float) -> float:
    """The reported value (us) of percentile ``p`` of metric ``m``."""
    for entry in m.percentiles:
        if abs(entry.percentile - p) < 1e-9:
            return float(entry.value_us)
    raise AssertionError(
        f"metric {m.key!r} reports no p{p}; has {[e.percentile for e in m.percentiles]}"
    )


def decode_hdr(hdr: bytes) -> HdrHistogram:
    """The reference decoding of HdrHistogram V2 compressed bytes."""
    assert hdr, "metric has no hdr bytes"
    return HdrHistogram.decode(base64.b64encode(hdr))


def close_enough(reported_us: float, reference_us: float) -> bool:
    allowed = max(REL_TOLERANCE * max(abs(reported_us), abs(reference_us)), ABS_TOLERANCE_US)
    return abs(reported_us - reference_us) <= allowed


def assert_hdr_matches(m: Any) -> HdrHistogram:
    """``m.hdr`` decodes to ``m.count`` values and the reported p50/p90/p99 (within 1%)."""
    histogram = decode_hdr(m.hdr)
    assert histogram.get_total_count() == m.count, (
        f"hdr of {m.key!r} holds {histogram.get_total_count()} values, count says {m.count}"
    )
    mismatches = []
    for p in CHECKED_PERCENTILES:
        reported = percentile(m, p)
        reference = float(histogram.get_value_at_percentile(p))
        if not close_enough(reported, reference):
            mismatches.append(f"p{p}: reported {reported} us, hdrh {reference} us")
    assert not mismatches, f"{m.key!r}: " + "; ".join(mismatches)
    return histogram


def many_entries(target_bytes: int, base_url: str = "http://127.0.0.1:9") -> bytes:
    """A serialized ``LoadTest`` of about ``target_bytes`` made of copies of one small valid
    entry (each a few dozen bytes, so 16 MiB is some 700k entries), built as bytes: the
    repeated field is the same entry's bytes again and again, so building it costs nothing
    and parsing it costs the parser only."""
    from chaperon.v1 import loadtest_pb2

    lt = to_proto(minimal_load_test(base_url, concurrency=1, duration="1s", name="heavy"))
    entry = lt.scenarios[0].SerializeToString()
    head = loadtest_pb2.LoadTest(name=lt.name, config=lt.config).SerializeToString()
    # Field 3 (scenarios), wire type 2: tag 0x1a, the length as a varint, the entry.
    assert len(entry) < 128
    one = b"\x1a" + bytes([len(entry)]) + entry
    return head + one * max(1, (target_bytes - len(head)) // len(one))


def nested(depth: int, key: str = "a") -> Any:
    """``{"a": {"a": ... 1}}`` with ``depth`` objects."""
    value: Any = 1
    for _ in range(depth):
        value = {key: value}
    return value


def deepest_load_test(struct_depth: int, base_url: str = "http://127.0.0.1:9") -> dict[str, Any]:
    """The deepest load test the language allows: ``run_scenario`` inline to its limit,
    blocks to theirs inside, and there a json body of ``struct_depth`` objects."""
    from chaperon.core.lang.limits import MAX_NESTING, MAX_SCENARIO_DEPTH

    step: dict[str, Any] = {"http": {"method": "POST", "path": "/", "json": nested(struct_depth)}}
    for _ in range(MAX_NESTING):
        step = {"repeat": {"count": 1, "steps": [step]}}
    for _ in range(MAX_SCENARIO_DEPTH):
        step = {"run_scenario": {"scenario": {"run": [step]}}}
    data = minimal_load_test(base_url, concurrency=1, duration="1s", name="deepest")
    entry = data["scenarios"][0]
    entry.pop("scenario")
    entry["sequence"] = {"scenarios": [{"name": "s", "run": [step]}]}
    return data
