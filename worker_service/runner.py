"""Running one assignment: engines started, deltas swapped out every interval, reports built.

An assignment may hold shares of several scenario entries; each gets its own ``Engine`` (its
own threads, histograms and op array). Every report interval the runner swaps the engines'
per-thread histograms (the engine threads are not stopped), merges the deltas of equal metric
keys, encodes them and yields one ``WorkerReport``, with the session totals of the whole
assignment and of each share. The last report has ``final`` set and carries whatever was
recorded after the previous swap, so nothing is lost at the end.

Ending early: ``cancel`` (the master asked, or its call went away) stops the engines and the
last report says ``cancelled``. ``stop(reason)`` is the worker itself going away (its process
got SIGTERM): the engines stop the same way, and the last report also says why
(``stopped_reason``) and what the share did not run (``sessions_not_started``,
``sessions_cut_short``), so the master counts it lost instead of taking it for a share done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from _fastpath.histogram import Histogram
from chaperon.core.errors import ResourceExhausted
from chaperon.v1 import worker_pb2
from worker_service.plan import EnginePlan

log = logging.getLogger(__name__)


class AssignmentRunner:
    def __init__(
        self,
        assignment_id: str,
        plans: list[EnginePlan],
        threads: int,
        report_interval_s: float = 1.0,
    ) -> None:
        self.assignment_id = assignment_id
        self._interval_s = report_interval_s if report_interval_s > 0 else 1.0
        self._engines = [plan.engine(threads) for plan in plans]
        self._share_indexes = [plan.share_index for plan in plans]
        self._open = [plan.open_model for plan in plans]
        # Closed-model sessions per engine (an open-model share has slots, not sessions).
        self._closed_sessions = [0 if p.open_model else p.options.sessions for p in plans]
        # The raw service time is sent only where it differs from the latency (open model).
        self._open_model = any(plan.open_model for plan in plans)
        self._cancelled = threading.Event()
        self._stopped_reason = ""
        self._sequence = 0

    def cancel(self) -> None:
        self._cancelled.set()
        for engine in self._engines:
            engine.cancel()

    def stop(self, reason: str) -> None:
        """The worker is going away (``reason``, e.g. "SIGTERM"): end the share now; the last
        report says so and what was not run."""
        if not self._cancelled.is_set():
            self._stopped_reason = reason or "the worker stopped"
        self.cancel()

    def sessions_active(self) -> int:
        """Sessions started and not yet completed, over all engines (a racy snapshot)."""
        total = 0
        for engine in self._engines:
            stats = engine.stats()
            total += int(stats.get("sessions_started", 0)) - int(stats.get("sessions_completed", 0))
        return max(0, total)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def run(self) -> Iterator[worker_pb2.WorkerReport]:
        """Start the engines and yield a report per interval until they are all done."""
        started = time.monotonic()
        try:
            for engine in self._engines:
                try:
                    engine.start()
                except RuntimeError as exc:  # too few file descriptors for the sessions
                    raise ResourceExhausted(
                        f"this worker cannot run the assignment: {exc}"
                    ) from None
            next_report = started + self._interval_s
            while True:
                done = all(e.wait(max(0.0, next_report - time.monotonic())) for e in self._engines)
                if done:
                    break
                if time.monotonic() >= next_report:
                    next_report += self._interval_s
                    yield self._report(started, final=False)
            yield self._report(started, final=True)
        finally:
            for engine in self._engines:
                engine.cancel()
                engine.wait(5.0)
                engine.close()

    def _report(self, started: float, final: bool) -> worker_pb2.WorkerReport:
        merged: dict[str, _Delta] = {}
        for engine in self._engines:
            for key, hist, count, errors, by_kind, service in engine.swap():
                delta = merged.get(key)
                if delta is None:
                    merged[key] = _Delta(hist, service, count, errors, dict(by_kind))
                    continue
                delta.hist.add(hist)
                delta.service.add(service)
                delta.count += count
                delta.errors += errors
                for kind, n in by_kind.items():
                    delta.by_kind[kind] = delta.by_kind.get(kind, 0) + n
        started_n = completed_n = dropped_n = timed_out_n = failed_n = not_started_n = 0
        shares = []
        # Where the schedules stand (on the last report, the engines have stopped before).
        at_ns = time.monotonic_ns()
        for engine, share_index, closed, open_model in zip(
            self._engines, self._share_indexes, self._closed_sessions, self._open, strict=True
        ):
            stats = engine.stats()
            zero = engine.origin_ns if open_model else None  # the schedule's zero, once set
            share = worker_pb2.ShareProgress(
                share_index=share_index,
                sessions_started=int(stats.get("sessions_started", 0)),
                sessions_completed=int(stats.get("sessions_completed", 0)),
                sessions_dropped=int(stats.get("sessions_dropped", 0)),
                schedule_ns=max(0, at_ns - zero) if zero is not None else 0,
            )
            shares.append(share)
            started_n += share.sessions_started
            completed_n += share.sessions_completed
            dropped_n += share.sessions_dropped
            timed_out_n += int(stats.get("sessions_timed_out", 0))
            failed_n += int(stats.get("sessions_failed", 0))
            not_started_n += max(0, closed - share.sessions_started)
        self._sequence += 1
        report = worker_pb2.WorkerReport(
            assignment_id=self.assignment_id,
            sequence=self._sequence,
            final=final,
            sessions_started=started_n,
            sessions_completed=completed_n,
            sessions_dropped=dropped_n,
            sessions_timed_out=timed_out_n,
            sessions_failed=failed_n,
            elapsed_s=time.monotonic() - started,
            cancelled=self.cancelled,
            shares=shares,
        )
        if final and self._stopped_reason:
            report.stopped_reason = self._stopped_reason
            report.sessions_not_started = not_started_n
            report.sessions_cut_short = max(0, started_n - completed_n)
        for key, d in merged.items():
            report.metrics.append(
                worker_pb2.MetricDelta(
                    key=key,
                    # The Chaperon delta encoding: the master merges it fastest (one byte a
                    # non-zero slot, no zlib); what users get stays HdrHistogram V2.
                    hdr=d.hist.encode_delta(),
                    service_hdr=d.service.encode_delta() if self._open_model else b"",
                    count=d.count,
                    errors=d.errors,
                    errors_by_kind={k: v for k, v in d.by_kind.items() if v},
                )
            )
        return report


@dataclass
class _Delta:
    hist: Histogram
    service: Histogram
    count: int
    errors: int
    by_kind: dict[str, int]
