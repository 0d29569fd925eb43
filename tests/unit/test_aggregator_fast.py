"""The aggregator's merge (InflatedHistogram + add_inflated) against decode + add.

``Aggregator.add_report`` no longer decodes each delta into a Histogram; these tests hold it to
what the decode-and-add merge gave: the same Result for the same reports, nothing merged from a
report with a malformed histogram, and exact totals when many stream threads report at once.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from _fastpath.histogram import Histogram
from chaperon.v1 import worker_pb2
from master_service.aggregator import Aggregator

KEYS = [f"GET /item/{i}" for i in range(8)]


def _delta(
    rng: np.random.Generator, key: str, n: int, compressed: bool = True
) -> worker_pb2.MetricDelta:
    hist, service = Histogram(), Histogram()
    latency_us = rng.lognormal(np.log(2_000), 0.6, n).astype(np.int64)
    hist.record_many(latency_us)
    service.record_many(latency_us // 2)
    return worker_pb2.MetricDelta(
        key=key,
        hdr=hist.encode(compressed),
        service_hdr=service.encode(compressed),
        count=n,
        errors=n // 100,
        errors_by_kind={"http_5xx": n // 100} if n >= 100 else {},
    )


def _reports(
    seed: int, workers: int, intervals: int, compressed: bool | None = True
) -> list[tuple[str, worker_pb2.WorkerReport]]:
    """Reports with compressed or uncompressed deltas (None: each delta either, at random)."""
    rng = np.random.default_rng(seed)
    coin = np.random.default_rng(seed + 1)  # apart, so the values do not depend on the forms
    out = []
    for seq in range(1, intervals + 1):
        for w in range(workers):
            metrics = [
                _delta(
                    rng,
                    key,
                    int(rng.integers(0, 300)),
                    bool(coin.integers(0, 2)) if compressed is None else compressed,
                )
                for key in KEYS
            ]
            report = worker_pb2.WorkerReport(
                sequence=seq,
                metrics=metrics,
                final=seq == intervals,
                sessions_started=10,
                sessions_completed=10 if seq == intervals else 0,
                elapsed_s=float(seq),
            )
            out.append((f"w{w}", report))
    return out


class _DecodingAggregator(Aggregator):
    """The merge as it was: decode every delta into a Histogram, then add it."""

    def add_report(self, worker_id: str, report: worker_pb2.WorkerReport) -> None:
        stripped = worker_pb2.WorkerReport()
        stripped.CopyFrom(report)
        decoded = []
        for m in stripped.metrics:
            decoded.append(
                (
                    Histogram.decode(m.hdr) if m.hdr else None,
                    Histogram.decode(m.service_hdr) if m.service_hdr else None,
                )
            )
            m.hdr = b""
            m.service_hdr = b""
        super().add_report(worker_id, stripped)  # counters, totals and the key entries
        with self._lock:
            for m, (hist, service) in zip(stripped.metrics, decoded, strict=True):
                agg = self._keys[m.key]
                if hist is not None:
                    agg.hist.add(hist)
                if service is not None:
                    agg.service.add(service)


def test_same_result_as_decode_and_add() -> None:
    reports = _reports(seed=3, workers=5, intervals=3)
    fast, reference = Aggregator(), _DecodingAggregator()
    for worker_id, report in reports:
        fast.add_report(worker_id, report)
        reference.add_report(worker_id, report)
    assert fast.result() == reference.result()
    assert fast.progress() == reference.progress()
    assert fast.completed_by_worker() == reference.completed_by_worker()


@pytest.mark.parametrize("compressed", [False, None])
def test_uncompressed_deltas_give_the_same_result(compressed: bool | None) -> None:
    # Same seed, so the same values: only the deltas' encoding differs.
    fast, reference = Aggregator(), _DecodingAggregator()
    for worker_id, report in _reports(seed=3, workers=5, intervals=3, compressed=compressed):
        fast.add_report(worker_id, report)
    for worker_id, report in _reports(seed=3, workers=5, intervals=3):
        reference.add_report(worker_id, report)
    result = fast.result()
    assert result == reference.result()
    assert fast.progress() == reference.progress()
    # What users get stays compressed.
    assert all(m.hdr[:4] == b"\x1c\x84\x93\x14" for m in result.metrics)


def test_malformed_uncompressed_histogram_merges_nothing_of_the_report() -> None:
    rng = np.random.default_rng(6)
    agg = Aggregator()
    agg.add_report("a", worker_pb2.WorkerReport(sequence=1, metrics=[_delta(rng, "k", 50)]))
    before = agg.result()
    bad = worker_pb2.WorkerReport(
        sequence=2, metrics=[_delta(rng, k, 50, compressed=False) for k in KEYS]
    )
    bad.metrics[6].hdr = bad.metrics[6].hdr[:-1]  # truncated
    with pytest.raises(ValueError, match="length"):
        agg.add_report("a", bad)
    assert agg.result() == before


def test_malformed_histogram_raises_and_merges_nothing_of_the_report() -> None:
    rng = np.random.default_rng(5)
    agg = Aggregator()
    good = worker_pb2.WorkerReport(sequence=1, metrics=[_delta(rng, k, 50) for k in KEYS])
    agg.add_report("a", good)
    before = agg.result()
    bad = worker_pb2.WorkerReport(sequence=2, metrics=[_delta(rng, k, 50) for k in KEYS])
    bad.metrics[5].service_hdr = bad.metrics[5].service_hdr[:-3]  # truncated
    with pytest.raises(ValueError, match="announces"):
        agg.add_report("a", bad)
    assert agg.result() == before


def test_empty_deltas_and_missing_histograms() -> None:
    agg = Aggregator()
    report = worker_pb2.WorkerReport(
        sequence=1,
        metrics=[
            worker_pb2.MetricDelta(key="a", hdr=Histogram().encode(), count=0),
            worker_pb2.MetricDelta(key="b", count=0, errors=2, errors_by_kind={"timeout": 2}),
        ],
    )
    agg.add_report("w", report)
    res = agg.result()
    assert [(m.key, m.count, m.errors, len(m.percentiles)) for m in res.metrics] == [
        ("a", 0, 0, 0),
        ("b", 0, 2, 0),
    ]


def test_concurrent_streams_merge_exactly() -> None:
    # One thread per worker stream, as the scheduler runs them; the inflating happens outside
    # the lock and without the GIL, the adding under the lock.
    reports = _reports(seed=9, workers=8, intervals=4)
    reference = Aggregator()
    for worker_id, report in reports:
        reference.add_report(worker_id, report)
    by_worker: dict[str, list[worker_pb2.WorkerReport]] = {}
    for worker_id, report in reports:
        by_worker.setdefault(worker_id, []).append(report)
    agg = Aggregator()
    start = threading.Barrier(len(by_worker))

    def stream(worker_id: str) -> None:
        start.wait()
        for report in by_worker[worker_id]:
            agg.add_report(worker_id, report)

    threads = [threading.Thread(target=stream, args=(w,)) for w in by_worker]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert agg.result() == reference.result()
