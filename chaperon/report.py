"""The text report of a run, as ``chaperon run``, ``submit --wait``, ``status ID`` and ``watch``
print it.

Theory of operation. ``format_report`` turns a ``LoadTestRun`` into lines of at most ``width``
columns (by default the terminal's, ``shutil.get_terminal_size``, or 100 when the output is
not a terminal) and touches nothing else:

- a title (name, run id, state, duration) and the run's error, if any;
- a table, one row per metric key in the result's order, which is the order of the steps
  (the master orders the metrics so), then a total row over every key: count, errors and
  error % (``chaperon.core.results``: errors over attempts) and req/s. The total has no
  latency: keys measure different things (requests, groups of requests, waits, custom
  values), so no one distribution of them all means anything. An open-model key gets a
  "service time" row under its corrected latency. A key that measures no duration
  (``Metric.no_latency``: ``WS send``, ``assign`` ...) or recorded nothing but errors shows
  "-" in its latency cells;
- the errors by kind, the session counts, and the thresholds with their units
  (``threshold GET / p99 <= 200ms: 153.2ms passed``; one that could not be measured says
  why: ``no such metric``, with the nearest key);
- with ``max_error_rate``, the error rate the run is held to (the CLI's
  ``--max-error-rate``): one line when the run's errors are above it.

Two forms of the table: from 100 columns on, the latencies are mean, p50, p90, p95, p99 and
max; narrower, p50, p95, p99 and max. The key column takes what the other columns leave
(at least ``MIN_KEY_WIDTH``); a key too long for it is shortened in the middle with "…".
Latencies show three significant digits, what the histograms hold.

Every text in the report that came from elsewhere (the load test's name, metric keys, error
kinds, worker names, events, the run's error) goes through ``chaperon.core.text.printable``:
a control character in one is shown as an escape such as ``\x1b``, never sent to the
terminal.
"""

from __future__ import annotations

import difflib
import math
import shutil
import textwrap
from collections.abc import Sequence

from chaperon.core.results import Totals, error_rate, totals
from chaperon.core.text import printable
from chaperon.v1 import results_pb2

__all__ = [
    "WIDE_WIDTH",
    "error_rate_line",
    "format_latency_us",
    "format_report",
    "format_threshold",
    "format_threshold_value",
    "shorten_middle",
    "terminal_width",
]

#: From this width on, the table has the wide form.
WIDE_WIDTH = 100
#: The width used when the output is not a terminal.
DEFAULT_WIDTH = 100
MIN_KEY_WIDTH = 12
_WIDE_LATENCIES = ("mean", "p50", "p90", "p95", "p99", "max")
_NARROW_LATENCIES = ("p50", "p95", "p99", "max")
_COUNTS = ("count", "errors", "err%", "req/s")
_GAP = "  "
_INDENT = "  "
_NO_VALUE = "-"
# The label of an open-model key's service-time row, and its form in a narrow key column.
_SERVICE_TIME = "  service time"
_SERVICE_TIME_SHORT = "  service"
_LATENCY_STATS = ("min", "mean", "max", "p50", "p90", "p95", "p99", "p99.9")


def format_latency_us(us: float) -> str:
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f}s"
    if us >= 1_000:
        return f"{us / 1_000:.2f}ms"
    return f"{us:.0f}us"


def _short_latency(us: float) -> str:
    """Three significant digits, at most six characters: 999us, 1.23ms, 12.3ms, 123ms, 1.23s."""
    value = float(f"{us:.3g}")  # round first, so that 999.7us becomes 1.00ms, not 1000us
    if value < 1_000:
        return f"{value:.0f}us"
    for unit, scale in (("ms", 1e3), ("s", 1e6)):
        v = value / scale
        if v < 1_000 or unit == "s":
            if v < 10:
                return f"{v:.2f}{unit}"
            if v < 100:
                return f"{v:.1f}{unit}"
            return f"{v:.0f}{unit}"
    raise AssertionError("unreachable")


def _percent(fraction: float) -> str:
    pct = fraction * 100
    if pct == 0:
        return "0%"
    if pct < 0.01:
        return "<0.01%"
    if pct < 10:
        return f"{pct:.2f}%"
    if pct < 100:
        return f"{pct:.1f}%"
    return "100%"


def _rate(per_s: float) -> str:
    return f"{per_s:.0f}" if per_s >= 100 else f"{per_s:.1f}"


def shorten_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: its start and end around "…"."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + "…" + (text[-tail:] if tail else "")


def _percentile(stats: results_pb2.Metric | results_pb2.LatencyStats, p: float) -> float:
    for item in stats.percentiles:
        if abs(item.percentile - p) < 1e-9:
            return item.value_us
    return 0.0


def _latency_cells(
    stats: results_pb2.Metric | results_pb2.LatencyStats, columns: Sequence[str], measured: bool
) -> list[str]:
    if not measured:
        return [_NO_VALUE] * len(columns)
    cells = []
    for column in columns:
        if column in ("min", "mean", "max"):
            cells.append(_short_latency(getattr(stats, f"{column}_us")))
        else:
            cells.append(_short_latency(_percentile(stats, float(column[1:]))))
    return cells


def _metric_rows(m: results_pb2.Metric, latencies: Sequence[str]) -> list[list[str]]:
    measured = m.count > 0 and not m.no_latency
    rows = [
        [
            printable(m.key),
            str(m.count),
            str(m.errors),
            _percent(error_rate(m)),
            _rate(m.rate_per_s),
            *_latency_cells(m, latencies, measured),
        ]
    ]
    st = m.service_time
    if st.count and not m.no_latency:
        rows.append(
            [_SERVICE_TIME, str(st.count), "", "", "", *_latency_cells(st, latencies, True)]
        )
    return rows


def _total_row(t: Totals, latencies: Sequence[str]) -> list[str]:
    return [
        "total",
        str(t.count),
        str(t.errors),
        _percent(t.error_rate),
        _rate(t.rate_per_s),
        *([""] * len(latencies)),
    ]


def _table(metrics: Sequence[results_pb2.Metric], width: int) -> list[str]:
    latencies = _WIDE_LATENCIES if width >= WIDE_WIDTH else _NARROW_LATENCIES
    header = ["metric", *_COUNTS, *latencies]
    body = [row for m in metrics for row in _metric_rows(m, latencies)]
    total = _total_row(totals(metrics), latencies)
    rows = [header, *body, total]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    others = sum(widths[1:]) + len(_GAP) * (len(header) - 1)
    key_width = max(MIN_KEY_WIDTH, min(widths[0], width - len(_INDENT) - others))
    widths[0] = key_width
    rule = _INDENT + _GAP.join("-" * w for w in widths)

    def line(row: list[str]) -> str:
        label = row[0]
        if label == _SERVICE_TIME and len(label) > key_width:
            label = _SERVICE_TIME_SHORT
        cells = [shorten_middle(label, key_width).ljust(key_width)]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return (_INDENT + _GAP.join(cells)).rstrip()

    return [line(header), rule, *(line(r) for r in body), rule, line(total)]


def _wrap(text: str, width: int, indent: str = _INDENT) -> list[str]:
    return textwrap.wrap(
        text,
        width=max(width, 40),
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _ms(value: float) -> str:
    return f"{value:.0f}ms" if value >= 1000 else f"{value:.4g}ms"


def format_threshold_value(stat: str, value: float) -> str:
    """A threshold's limit or value in the stat's unit: ms, a count, or a percentage."""
    if stat in _LATENCY_STATS:
        return _ms(value)
    if stat == "error_rate":
        return f"{value * 100:.4g}%"
    return f"{value:g}"


def format_threshold(th: results_pb2.ThresholdResult, keys: Sequence[str] = ()) -> str:
    """``GET / p99 <= 200ms: 153.2ms passed``; one that could not be measured says why (and
    the nearest of ``keys`` when the metric does not exist)."""
    t = th.threshold
    head = f"{printable(t.metric)} {printable(t.stat)} <= {format_threshold_value(t.stat, t.max)}"
    # A run stored before ThresholdResult.reason has only an infinite value to say it.
    why = th.reason or ("not measured" if not math.isfinite(th.value) else "")
    if why:
        if why == "no such metric":
            near = difflib.get_close_matches(t.metric, list(keys), n=1)
            if near:
                why += f" (did you mean {near[0]!r}?)"
        return f"{head}: FAILED, {why}"
    return (
        f"{head}: {format_threshold_value(t.stat, th.value)} {'passed' if th.passed else 'FAILED'}"
    )


def error_rate_line(run: results_pb2.LoadTestRun, max_error_rate: float) -> str:
    """Why the run's errors fail it under ``--max-error-rate``, or "" when they do not."""
    t = totals(run.result.metrics)
    if t.errors == 0 or t.error_rate <= max_error_rate:
        return ""
    return (
        f"FAILED: {t.errors} errors in {t.attempts} requests ({_percent(t.error_rate)}), "
        f"above --max-error-rate {max_error_rate:g} ({_percent(max_error_rate)})"
    )


def _sessions(res: results_pb2.Result) -> str:
    return (
        f"sessions: {res.sessions_completed} completed of {res.sessions_started} started"
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
        + (
            f", lost workers: {', '.join(printable(w) for w in res.lost_workers)}"
            if res.lost_workers
            else ""
        )
    )


def terminal_width() -> int:
    """The terminal's width, or ``DEFAULT_WIDTH`` when the output is not a terminal."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def format_report(
    run: results_pb2.LoadTestRun,
    width: int | None = None,
    max_error_rate: float | None = None,
) -> str:
    """The run as text in at most ``width`` columns (default: ``terminal_width()``); see the
    module docstring. ``max_error_rate``: add why the run's errors are above it, if they are."""
    width = terminal_width() if width is None else width
    res = run.result
    state = results_pb2.RunState.Name(run.state)
    title = printable(run.load_test.name) or "load test"
    lines = _wrap(f"{title}  [{printable(run.id)}]  {state}  in {res.duration_s:.2f}s", width, "")
    if run.error:
        lines += _wrap(f"note: {printable(run.error)}", width)
    if res.metrics:
        lines += _table(res.metrics, width)
    else:
        lines.append(f"{_INDENT}no metrics were recorded")
    for m in res.metrics:
        if m.errors_by_kind:
            kinds = ", ".join(f"{printable(k)}={v}" for k, v in sorted(m.errors_by_kind.items()))
            lines += _wrap(f"errors of {printable(m.key)}: {kinds}", width)
    if any(m.service_time.count for m in res.metrics):
        lines += _wrap(
            "open model: latencies are corrected (from each session's intended start); "
            "'service time' is measured from the actual send",
            width,
        )
    lines += _wrap(_sessions(res), width)
    if res.arrivals_due:
        lines += _wrap(
            f"arrivals: {res.arrivals_due} due = {res.sessions_started} started"
            f" + {res.sessions_dropped} dropped + {res.arrivals_lost} lost"
            if res.sessions_started + res.sessions_dropped + res.arrivals_lost == res.arrivals_due
            else f"arrivals: {res.arrivals_due} due, {res.arrivals_lost} lost",
            width,
        )
    for event in res.events:
        lines += _wrap(f"event: {printable(event)}", width)
    keys = [m.key for m in res.metrics]
    for th in res.thresholds:
        lines += _wrap(f"threshold {format_threshold(th, keys)}", width)
    if max_error_rate is not None and run.state == results_pb2.SUCCEEDED:
        verdict = error_rate_line(run, max_error_rate)
        if verdict:
            lines += _wrap(verdict, width)
    return "\n".join(lines)
