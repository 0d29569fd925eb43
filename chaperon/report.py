"""The text report of a run: one row per metric key, latencies in readable units."""

from __future__ import annotations

from chaperon.v1 import results_pb2

_COLUMNS = ("count", "errors", "req/s", "min", "mean", "p50", "p90", "p99", "p99.9", "max")


def format_latency_us(us: float) -> str:
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f}s"
    if us >= 1_000:
        return f"{us / 1_000:.2f}ms"
    return f"{us:.0f}us"


def _percentile(metric: results_pb2.Metric | results_pb2.LatencyStats, p: float) -> float:
    for item in metric.percentiles:
        if abs(item.percentile - p) < 1e-9:
            return item.value_us
    return 0.0


def _latencies(m: results_pb2.Metric | results_pb2.LatencyStats) -> tuple[str, ...]:
    return (
        format_latency_us(m.min_us),
        format_latency_us(m.mean_us),
        *(format_latency_us(_percentile(m, p)) for p in (50, 90, 99, 99.9)),
        format_latency_us(m.max_us),
    )


def format_report(run: results_pb2.LoadTestRun) -> str:
    res = run.result
    state = results_pb2.RunState.Name(run.state)
    title = run.load_test.name or "load test"
    lines = [f"{title}  [{run.id}]  {state}  in {res.duration_s:.2f}s"]
    if run.error:
        lines.append(f"  note: {run.error}")
    rows: list[tuple[str, ...]] = [("metric", *_COLUMNS)]
    for m in res.metrics:
        rows.append((m.key, str(m.count), str(m.errors), f"{m.rate_per_s:.0f}", *_latencies(m)))
        if m.service_time.count:
            rows.append(
                ("  service time", str(m.service_time.count), "", "", *_latencies(m.service_time))
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    for m in res.metrics:
        if m.errors_by_kind:
            kinds = ", ".join(f"{k}={v}" for k, v in sorted(m.errors_by_kind.items()))
            lines.append(f"  errors of {m.key}: {kinds}")
    if any(m.service_time.count for m in res.metrics):
        lines.append(
            "  open model: latencies are corrected (from each session's intended start); "
            "'service time' is measured from the actual send"
        )
    lines.append(
        f"  sessions: {res.sessions_completed} completed of {res.sessions_started} started"
        + (
            f", {res.sessions_dropped} dropped (max_sessions reached)"
            if res.sessions_dropped
            else ""
        )
        + (f", {res.sessions_timed_out} timed out" if res.sessions_timed_out else "")
        + (f", {res.sessions_lost} lost" if res.sessions_lost else "")
        + (
            f", {res.sessions_failed} ended by a failing step (see the errors above)"
            if res.sessions_failed
            else ""
        )
        + (f", workers: {len(res.workers)}" if res.workers else "")
        + (f", lost workers: {', '.join(res.lost_workers)}" if res.lost_workers else "")
    )
    if res.arrivals_due:
        lines.append(
            f"  arrivals: {res.arrivals_due} due = {res.sessions_started} started"
            f" + {res.sessions_dropped} dropped + {res.arrivals_lost} lost"
            if res.sessions_started + res.sessions_dropped + res.arrivals_lost == res.arrivals_due
            else f"  arrivals: {res.arrivals_due} due, {res.arrivals_lost} lost"
        )
    lines.extend(f"  event: {event}" for event in res.events)
    for th in res.thresholds:
        verdict = "passed" if th.passed else "FAILED"
        lines.append(
            f"  threshold {th.threshold.metric} {th.threshold.stat} <= {th.threshold.max:g}: "
            f"{th.value:.3f} {verdict}"
        )
    return "\n".join(lines)
