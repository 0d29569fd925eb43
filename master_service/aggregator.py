"""Merging the workers' per-interval deltas into a run's result.

Each worker streams, every report interval, the HDR histogram of what it recorded in that
interval for each metric key (encoded), plus counters. The aggregator adds them into one
histogram per key, so percentiles are computed from the merged distribution (never
averaged). The final ``Result`` is computed from these merged histograms only, so it is the
same whoever asks and however the sessions were spread.

Merging is the master's hot path: at 1000 workers x 50 keys, 100,000 histogram deltas an
interval. It is done by ``_fastpath.histogram.DeltaMerger`` on the *serialized* report (which
the scheduler has anyway, for the store): one C walk over the protobuf wire format finds each
key's fields, and each histogram is added where it lies in the message, with no Python object
per delta (reading a report's 50 metrics through the protobuf runtime alone cost ~90 us). The
workers send their histograms in the Chaperon delta encoding (``Histogram.encode_delta``: one
byte per non-zero slot, checked while it is added); HdrHistogram V2, either form, is still read
(older workers, stored runs). A report with a malformed histogram raises ValueError and merges
nothing. See ``bench/master_scale.py`` for the figures.

Order: the metrics of progress and of the result come in the order of the load test's steps
(``chaperon.core.lang.metric_keys``, computed once per run with the compiler's back end and
no network), keys it did not foresee last, by name. The same pass says which keys measure no
duration (``Metric.no_latency``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from _fastpath.histogram import DeltaMerger, Histogram, KeyTotals
from chaperon.core.errors import ChaperonError
from chaperon.core.lang import MetricKeys, metric_keys
from chaperon.core.results import error_rate
from chaperon.v1 import loadtest_pb2, results_pb2, worker_pb2

log = logging.getLogger(__name__)

# Chaperon's percentile list.
PERCENTILES = (10, 20, 30, 40, 50, 60, 75, 80, 85, 90, 95, 99, 99.9, 99.99, 99.999)


def _field_numbers() -> dict[str, int]:
    """The report fields DeltaMerger reads, by number, from the generated descriptors."""
    report = worker_pb2.WorkerReport.DESCRIPTOR.fields_by_name
    delta = worker_pb2.MetricDelta.DESCRIPTOR.fields_by_name
    return {
        "metrics": report["metrics"].number,
        "key": delta["key"].number,
        "hist": delta["hdr"].number,
        "service": delta["service_hdr"].number,
        "count": delta["count"].number,
        "errors": delta["errors"].number,
        "errors_by_kind": delta["errors_by_kind"].number,
    }


_FIELDS = _field_numbers()


@dataclass
class _WorkerTotals:
    sessions_started: int = 0
    sessions_completed: int = 0
    sessions_dropped: int = 0
    sessions_timed_out: int = 0
    sessions_failed: int = 0
    elapsed_s: float = 0.0
    final: bool = False


@dataclass(frozen=True)
class LiveTotals:
    """The whole run's figures so far, over every worker (what a one-line display shows)."""

    elapsed_s: float
    sessions_started: int
    sessions_completed: int
    sessions_dropped: int
    # Actions tried (completed or not) and failed, over every key (chaperon.core.results).
    requests: int
    errors: int

    @property
    def sessions_active(self) -> int:
        return max(0, self.sessions_started - self.sessions_completed)


class Aggregator:
    """Thread-safe accumulator of WorkerReports for one run."""

    def __init__(self, keys: MetricKeys | None = None) -> None:
        self._keys = keys or MetricKeys()
        self._order = _key_order(self._keys)
        self._lock = threading.Lock()
        self._merger = DeltaMerger(**_FIELDS)
        # Cumulative counters per (worker, assignment): a worker may also run a takeover.
        self._workers: dict[tuple[str, str], _WorkerTotals] = {}

    @classmethod
    def for_load_test(cls, lt: loadtest_pb2.LoadTest) -> Aggregator:
        """An aggregator that orders the metrics by the steps of ``lt`` (checked)."""
        try:
            return cls(metric_keys(lt))
        except ChaperonError as exc:  # a run stored by an older master: name order will do
            log.warning("the metric keys of load test %r are not known: %s", lt.name, exc)
            return cls()

    def add_report(
        self, worker_id: str, report: worker_pb2.WorkerReport, serialized: bytes | None = None
    ) -> None:
        """Merge one report; raises ValueError if a histogram does not decode (and then
        merges nothing of the report). ``serialized`` is the report's wire form when the
        caller has it (the scheduler does, for the store): it is what gets merged."""
        blob = report.SerializeToString() if serialized is None else serialized
        with self._lock:
            self._merger.merge(blob)
            totals = self._workers.setdefault((worker_id, report.assignment_id), _WorkerTotals())
            totals.sessions_started = max(totals.sessions_started, report.sessions_started)
            totals.sessions_completed = max(totals.sessions_completed, report.sessions_completed)
            totals.sessions_dropped = max(totals.sessions_dropped, report.sessions_dropped)
            totals.sessions_timed_out = max(totals.sessions_timed_out, report.sessions_timed_out)
            totals.sessions_failed = max(totals.sessions_failed, report.sessions_failed)
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
            for agg in sorted(self._merger.totals(), key=self._order):
                p50, p99 = agg.hist.percentiles([50, 99])
                out.append((agg.key, agg.count, agg.errors, float(p50), float(p99)))
            return out

    def live(self) -> LiveTotals:
        """The run's totals so far: sessions over every worker, requests over every key."""
        with self._lock:
            workers = list(self._workers.values())
            requests = errors = 0
            for agg in self._merger.totals():
                requests += agg.count + sum(
                    n for kind, n in agg.errors_by_kind.items() if not kind.startswith("http_")
                )
                errors += agg.errors
        return LiveTotals(
            elapsed_s=max((w.elapsed_s for w in workers), default=0.0),
            sessions_started=sum(w.sessions_started for w in workers),
            sessions_completed=sum(w.sessions_completed for w in workers),
            sessions_dropped=sum(w.sessions_dropped for w in workers),
            requests=requests,
            errors=errors,
        )

    def result(self, lost_workers: list[str] | None = None) -> results_pb2.Result:
        with self._lock:
            elapsed = max((w.elapsed_s for w in self._workers.values()), default=0.0)
            res = results_pb2.Result(
                sessions_started=sum(w.sessions_started for w in self._workers.values()),
                sessions_completed=sum(w.sessions_completed for w in self._workers.values()),
                sessions_dropped=sum(w.sessions_dropped for w in self._workers.values()),
                sessions_timed_out=sum(w.sessions_timed_out for w in self._workers.values()),
                sessions_failed=sum(w.sessions_failed for w in self._workers.values()),
                duration_s=elapsed,
                workers=sorted({wid for wid, _ in self._workers}),
                lost_workers=lost_workers or [],
            )
            for agg in sorted(self._merger.totals(), key=self._order):
                m = _metric(agg, elapsed)
                m.no_latency = agg.key in self._keys.untimed
                res.metrics.append(m)
            return res


def _key_order(keys: MetricKeys) -> Callable[[KeyTotals], tuple[int, str]]:
    """A sort key: the step order of ``keys``, then keys it does not know, by name."""
    position = {key: i for i, key in enumerate(keys.order)}
    last = len(position)

    def order(totals: KeyTotals) -> tuple[int, str]:
        return position.get(totals.key, last), totals.key

    return order


def _metric(agg: KeyTotals, elapsed_s: float) -> results_pb2.Metric:
    hist = agg.hist
    m = results_pb2.Metric(
        key=agg.key,
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

    Returns True when every threshold passed. A threshold that cannot be measured fails, with
    its reason: "no such metric" (no step recorded the key: a typo, a filtered key, a step
    never reached), "no latency recorded" (the key has errors only).
    """
    by_key = {m.key: m for m in result.metrics}
    ok = True
    for th in thresholds:
        m = by_key.get(th.metric)
        value, reason = float("inf"), ""
        if m is None:
            reason = "no such metric"
        elif th.stat == "errors":
            value = float(m.errors)
        elif th.stat == "error_rate":
            value = error_rate(m)
        elif not m.count:
            reason = "no latency recorded"
        elif th.stat in ("min", "mean", "max"):
            value = getattr(m, f"{th.stat}_us") / 1000.0
        else:
            want = _LATENCY_STATS[th.stat]
            value = next(
                (p.value_us / 1000.0 for p in m.percentiles if abs(p.percentile - want) < 1e-9),
                float("inf"),
            )
        passed = not reason and value <= th.max
        ok = ok and passed
        result.thresholds.append(
            results_pb2.ThresholdResult(threshold=th, value=value, passed=passed, reason=reason)
        )
    return ok
