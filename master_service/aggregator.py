"""Merging the workers' per-interval deltas into a run's result.

Each worker streams, every report interval, the HDR histogram of what it recorded in that
interval for each metric key (encoded), plus counters. The aggregator adds them into one
histogram per key, so percentiles are computed from the merged distribution (never
averaged). The final ``Result`` is computed from these merged histograms only, so it is the
same whoever asks and however the sessions were spread.

Merging is the master's hot path (a report per worker per second, two histograms per key), so
no delta is decoded into a Histogram of its own: ``add_report`` first inflates and checks
every encoded delta of the report outside the lock (``InflatedHistogram``: zlib and the
varint checks), and only then, under the lock, walks each one's varints into its key's
aggregate (``add_inflated``, about 2 us for a 2,000-value delta). A report with a malformed
histogram therefore raises before anything of it is merged. Typical deltas are inflated
holding the GIL: with hundreds of stream threads, handing it over per delta cost more than
the inflating (see ``bench/master_scale.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from _fastpath.histogram import Histogram, InflatedHistogram
from chaperon.v1 import loadtest_pb2, results_pb2, worker_pb2

# Chaperon's percentile list.
PERCENTILES = (10, 20, 30, 40, 50, 60, 75, 80, 85, 90, 95, 99, 99.9, 99.99, 99.999)


@dataclass
class _KeyAggregate:
    hist: Histogram = field(default_factory=Histogram)
    service: Histogram = field(default_factory=Histogram)
    count: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class _WorkerTotals:
    sessions_started: int = 0
    sessions_completed: int = 0
    sessions_dropped: int = 0
    sessions_timed_out: int = 0
    elapsed_s: float = 0.0
    final: bool = False


class Aggregator:
    """Thread-safe accumulator of WorkerReports for one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyAggregate] = {}
        # Cumulative counters per (worker, assignment): a worker may also run a takeover.
        self._workers: dict[tuple[str, str], _WorkerTotals] = {}

    def add_report(self, worker_id: str, report: worker_pb2.WorkerReport) -> None:
        """Merge one report; raises ValueError if a histogram does not decode (and then
        merges nothing of the report)."""
        inflated = [
            (
                m,
                InflatedHistogram(hdr) if (hdr := m.hdr) else None,
                InflatedHistogram(service_hdr) if (service_hdr := m.service_hdr) else None,
            )
            for m in report.metrics
        ]
        with self._lock:
            for m, hist, service in inflated:
                agg = self._keys.get(m.key)
                if agg is None:
                    agg = self._keys[m.key] = _KeyAggregate()
                if hist is not None:
                    agg.hist.add_inflated(hist)
                if service is not None:
                    agg.service.add_inflated(service)
                agg.count += m.count
                agg.errors += m.errors
                for kind, n in m.errors_by_kind.items():
                    agg.errors_by_kind[kind] = agg.errors_by_kind.get(kind, 0) + n
            totals = self._workers.setdefault((worker_id, report.assignment_id), _WorkerTotals())
            totals.sessions_started = max(totals.sessions_started, report.sessions_started)
            totals.sessions_completed = max(totals.sessions_completed, report.sessions_completed)
            totals.sessions_dropped = max(totals.sessions_dropped, report.sessions_dropped)
            totals.sessions_timed_out = max(totals.sessions_timed_out, report.sessions_timed_out)
            totals.elapsed_s = max(totals.elapsed_s, report.elapsed_s)
            totals.final = totals.final or report.final

    def completed_by_worker(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for (wid, _), w in self._workers.items():
                out[wid] = out.get(wid, 0) + w.sessions_completed
        return out

    def elapsed_s(self) -> float:
        with self._lock:
            return max((w.elapsed_s for w in self._workers.values()), default=0.0)

    def progress(self) -> list[tuple[str, int, int, float, float]]:
        """(key, count, errors, p50_us, p99_us) so far."""
        with self._lock:
            out = []
            for key in sorted(self._keys):
                agg = self._keys[key]
                p50, p99 = agg.hist.percentiles([50, 99])
                out.append((key, agg.count, agg.errors, float(p50), float(p99)))
            return out

    def result(self, lost_workers: list[str] | None = None) -> results_pb2.Result:
        with self._lock:
            elapsed = max((w.elapsed_s for w in self._workers.values()), default=0.0)
            res = results_pb2.Result(
                sessions_started=sum(w.sessions_started for w in self._workers.values()),
                sessions_completed=sum(w.sessions_completed for w in self._workers.values()),
                sessions_dropped=sum(w.sessions_dropped for w in self._workers.values()),
                sessions_timed_out=sum(w.sessions_timed_out for w in self._workers.values()),
                duration_s=elapsed,
                workers=sorted({wid for wid, _ in self._workers}),
                lost_workers=lost_workers or [],
            )
            for key in sorted(self._keys):
                res.metrics.append(_metric(key, self._keys[key], elapsed))
            return res


def _metric(key: str, agg: _KeyAggregate, elapsed_s: float) -> results_pb2.Metric:
    hist = agg.hist
    m = results_pb2.Metric(
        key=key,
        count=agg.count,
        errors=agg.errors,
        errors_by_kind=agg.errors_by_kind,
        rate_per_s=agg.count / elapsed_s if elapsed_s > 0 else 0.0,
    )
    _fill_latency(m, hist)
    if hist.total_count:
        m.stddev_us = float(hist.stddev)
    if agg.service.total_count:
        m.service_time.count = agg.service.total_count
        _fill_latency(m.service_time, agg.service)
    return m


def _fill_latency(out: results_pb2.Metric | results_pb2.LatencyStats, hist: Histogram) -> None:
    """min, mean, max, Chaperon's percentiles and the encoded histogram (always set)."""
    if hist.total_count:
        out.min_us = float(hist.min)
        out.max_us = float(hist.max)
        out.mean_us = float(hist.mean)
        values = hist.percentiles(list(PERCENTILES))
        out.percentiles.extend(
            results_pb2.Percentile(percentile=p, value_us=float(v))
            for p, v in zip(PERCENTILES, values, strict=True)
        )
    out.hdr = hist.encode()


_LATENCY_STATS = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9}


def evaluate_thresholds(
    result: results_pb2.Result, thresholds: list[loadtest_pb2.Threshold]
) -> bool:
    """Fill ``result.thresholds``; latency stats are compared in milliseconds.

    Returns True when every threshold passed. A threshold on a key that recorded nothing fails.
    """
    by_key = {m.key: m for m in result.metrics}
    ok = True
    for th in thresholds:
        m = by_key.get(th.metric)
        value = float("inf")
        if m is not None:
            if th.stat == "errors":
                value = float(m.errors)
            elif th.stat == "error_rate":
                attempts = m.count + sum(
                    n for k, n in m.errors_by_kind.items() if not k.startswith("http_")
                )
                value = m.errors / attempts if attempts else 0.0
            elif th.stat in ("min", "mean", "max"):
                value = getattr(m, f"{th.stat}_us") / 1000.0
            else:
                want = _LATENCY_STATS[th.stat]
                value = next(
                    (p.value_us / 1000.0 for p in m.percentiles if abs(p.percentile - want) < 1e-9),
                    float("inf"),
                )
        passed = value <= th.max
        ok = ok and passed
        result.thresholds.append(
            results_pb2.ThresholdResult(threshold=th, value=value, passed=passed)
        )
    return ok
