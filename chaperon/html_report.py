"""The HTML report of a run: one self-contained file, readable offline in any browser.

Theory of operation. ``to_html`` turns a ``LoadTestRun`` into text and touches no file (the
exporters write it). The page is built from small functions, one per section, each
returning a list of lines:

- the title: load test name, run id, state, duration, submitted/started/finished (UTC);
- the summary: session counts, workers, lost workers, cluster events, the run's error and
  the thresholds with their verdicts, in the stat's unit (``format_threshold_value``), or
  why one could not be measured;
- the metrics table, in the result's order (the steps'), latencies in readable units
  (``format_latency_us``, as the text report; "–" for a key that measures no duration or
  recorded errors only); an open-model metric (``service_time.count > 0``) gets a "service
  time" sub-row under its corrected latency, as in the text report;
- the errors by kind of each key;
- one inline SVG chart per metric: latency against percentile, the x axis at
  ``-log10(1 - p/100)`` (the HdrHistogram percentile plot: 90%, 99%, 99.9% ... one step
  apart), a polyline through the percentiles the metric carries, and a dashed one for the
  service time when there is one (none for a key that measures no duration). Each point has
  a ``<title>``, the browser's own tooltip.

Self-contained: the style sheet is inline, fonts are the system's, there is no script and
no ``src``/``href`` to anything; a Content-Security-Policy ``<meta>`` tells the browser to
load nothing, so a mistake elsewhere cannot make the page fetch or run anything. The SVG
has no ``xmlns`` (inline SVG in HTML needs none), so the page holds no URL the user did not
write.

Everything the user gave (names, keys, ids, errors, worker ids, events) passes through
``_text``: ``html.escape`` plus a replacement of the characters XML forbids, so every
``<svg>`` element is also well-formed XML.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from datetime import timezone

from google.protobuf.timestamp_pb2 import Timestamp

from chaperon._version import __version__
from chaperon.report import format_latency_us, format_threshold_value
from chaperon.v1 import results_pb2

__all__ = ["to_html"]

#: Percentiles of the metrics table (besides min, mean and max).
TABLE_PERCENTILES: tuple[float, ...] = (50, 90, 95, 99, 99.9)

_Stats = results_pb2.Metric | results_pb2.LatencyStats

# XML 1.0 forbids these even as character references; HTML shows them as garbage.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

# Chart geometry, in SVG user units.
_WIDTH, _HEIGHT = 640, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 32, 16, 52
_Y_STEPS = 5

_STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #1f2328; }
h1 { margin-bottom: .25rem; word-break: break-word; }
h2 { margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; }
h3 { font-size: 1rem; margin: 1.5rem 0 .25rem; }
code, .key, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dl.facts dt { color: #59636e; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #d0d7de; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f8fa; }
tr.service-time td { color: #59636e; font-size: .9em; }
tr.service-time td:first-child { padding-left: 1.6rem; }
.state, .verdict { font-weight: 600; padding: 0 .4rem; border-radius: .3rem; }
.ok { background: #dafbe1; color: #116329; }
.bad { background: #ffebe9; color: #a40e26; }
.other { background: #fff8c5; color: #7d4e00; }
pre.error { background: #ffebe9; padding: .5rem; white-space: pre-wrap; }
.note { color: #59636e; font-size: .9em; }
figure { margin: 1rem 0 2rem; }
svg.chart { width: 100%; max-width: 640px; height: auto; }
svg.chart .axis { stroke: #59636e; stroke-width: 1; }
svg.chart .grid { stroke: #d0d7de; stroke-width: 1; }
svg.chart .latency { fill: none; stroke: #0969da; stroke-width: 2; }
svg.chart .service-time { fill: none; stroke: #bf8700; stroke-width: 2;
  stroke-dasharray: 6 4; }
svg.chart circle.latency { fill: #0969da; stroke: none; }
svg.chart circle.service-time { fill: #bf8700; stroke: none; }
svg.chart text { font-size: 12px; fill: #1f2328; }
footer { margin-top: 3rem; color: #59636e; font-size: .85em; }
"""


def _text(value: object) -> str:
    """``value`` as HTML/XML text: escaped (quotes too), forbidden characters replaced."""
    return html.escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def _percentile(stats: _Stats, p: float) -> float | None:
    # A tolerance: 99.9 may come back as 99.90000000000001 from a client that computed it.
    for item in stats.percentiles:
        if abs(item.percentile - p) < 1e-9:
            return item.value_us
    return None


def _latency(value_us: float | None) -> str:
    return "–" if value_us is None else format_latency_us(value_us)


def _rate(rate_per_s: float) -> str:
    return f"{rate_per_s:,.0f}" if rate_per_s >= 100 else f"{rate_per_s:.2f}"


def _timestamp(run: results_pb2.LoadTestRun, field: str) -> str:
    if not run.HasField(field):
        return "–"
    ts: Timestamp = getattr(run, field)
    return ts.ToDatetime(tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _state_class(state: int) -> str:
    if state == results_pb2.SUCCEEDED:
        return "ok"
    if state in (results_pb2.FAILED, results_pb2.INTERRUPTED):
        return "bad"
    return "other"


def _row(cells: Iterable[str], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _head(cells: Iterable[str]) -> str:
    return "<tr>" + "".join(f'<th scope="col">{c}</th>' for c in cells) + "</tr>"


def _facts(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """A definition list; the values are HTML already."""
    return ['<dl class="facts">', *(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in pairs), "</dl>"]


# -- sections --------------------------------------------------------------------------------


def _title(run: results_pb2.LoadTestRun) -> list[str]:
    state = results_pb2.RunState.Name(run.state)
    return [
        "<header>",
        f"<h1>{_text(run.load_test.name or 'load test')}</h1>",
        *_facts(
            [
                ("run", f"<code>{_text(run.id or '–')}</code>"),
                ("state", f'<span class="state {_state_class(run.state)}">{state}</span>'),
                ("duration", f"{run.result.duration_s:.2f} s"),
                ("submitted", _timestamp(run, "submitted_at")),
                ("started", _timestamp(run, "started_at")),
                ("finished", _timestamp(run, "finished_at")),
            ]
        ),
        "</header>",
    ]


def _summary(run: results_pb2.LoadTestRun) -> list[str]:
    res = run.result
    workers = ", ".join(f"<code>{_text(w)}</code>" for w in res.workers)
    lost = ", ".join(f"<code>{_text(w)}</code>" for w in res.lost_workers)
    lines = [
        '<section id="summary">',
        "<h2>Summary</h2>",
        *_facts(
            [
                ("sessions started", str(res.sessions_started)),
                ("sessions completed", str(res.sessions_completed)),
                ("sessions failed", str(res.sessions_failed)),
                ("sessions timed out", str(res.sessions_timed_out)),
                ("sessions dropped", str(res.sessions_dropped)),
                ("sessions lost", str(res.sessions_lost)),
                ("workers", f"{len(res.workers)}" + (f": {workers}" if workers else "")),
                ("lost workers", f"{len(res.lost_workers)}" + (f": {lost}" if lost else "")),
            ]
        ),
    ]
    if res.sessions_failed:
        lines.append(
            '<p class="note">Failed sessions were ended by a failing step; '
            "their errors are counted on the step's metric.</p>"
        )
    if res.sessions_dropped:
        lines.append(
            '<p class="note">Dropped sessions are arrivals that found no free session slot '
            "(max_sessions reached).</p>"
        )
    if run.error:
        lines += ['<h3 id="error">Error</h3>', f'<pre class="error">{_text(run.error)}</pre>']
    lines.append('<h3 id="events">Events</h3>')
    if res.events:
        lines += ["<ol>", *(f"<li>{_text(e)}</li>" for e in res.events), "</ol>"]
    else:
        lines.append("<p>None.</p>")
    lines.append('<h3 id="thresholds">Thresholds</h3>')
    if res.thresholds:
        lines += ["<table>", _head(("metric", "stat", "max", "value", "result"))]
        for th in res.thresholds:
            verdict = (
                '<span class="verdict ok">passed</span>'
                if th.passed
                else '<span class="verdict bad">FAILED</span>'
            )
            lines.append(
                _row(
                    (
                        f'<span class="key">{_text(th.threshold.metric)}</span>',
                        _text(th.threshold.stat),
                        format_threshold_value(th.threshold.stat, th.threshold.max),
                        _threshold_value(th),
                        verdict,
                    )
                )
            )
        lines.append("</table>")
    else:
        lines.append("<p>None.</p>")
    lines.append("</section>")
    return lines


def _threshold_value(th: results_pb2.ThresholdResult) -> str:
    """The value in the stat's unit, or why there is none (a run stored before
    ``ThresholdResult.reason`` has only an infinite value to say it)."""
    if th.reason:
        return _text(th.reason)
    if not math.isfinite(th.value):
        return "not measured"
    return format_threshold_value(th.threshold.stat, th.value)


_NO_VALUE = "–"  # as a missing percentile
# min, mean, the table's percentiles, max
_LATENCY_COLUMNS = 3 + len(TABLE_PERCENTILES)


def _measured(m: results_pb2.Metric) -> bool:
    """Whether the key has latencies to show: it measures a duration and recorded some."""
    return m.count > 0 and not m.no_latency


def _latency_cells(stats: _Stats) -> list[str]:
    return [
        _latency(stats.min_us),
        _latency(stats.mean_us),
        *(_latency(_percentile(stats, p)) for p in TABLE_PERCENTILES),
        _latency(stats.max_us),
    ]


def _metrics(metrics: Sequence[results_pb2.Metric]) -> list[str]:
    lines = ['<section id="metrics">', "<h2>Metrics</h2>"]
    if not metrics:
        return [*lines, "<p>No metrics were recorded.</p>", "</section>"]
    columns = ["key", "count", "errors", "req/s", "min", "mean"]
    columns += [*(f"p{p:g}" for p in TABLE_PERCENTILES), "max"]
    lines += ["<table>", _head(columns)]
    for m in metrics:
        lines.append(
            _row(
                (
                    f'<span class="key">{_text(m.key)}</span>',
                    f"{m.count:,}",
                    f"{m.errors:,}",
                    _rate(m.rate_per_s),
                    *(_latency_cells(m) if _measured(m) else [_NO_VALUE] * _LATENCY_COLUMNS),
                )
            )
        )
        st = m.service_time
        if st.count > 0 and not m.no_latency:
            lines.append(
                _row(("service time", f"{st.count:,}", "", "", *_latency_cells(st)), "service-time")
            )
    lines.append("</table>")
    if any(m.service_time.count > 0 for m in metrics):
        lines.append(
            '<p class="note">Open model: latencies are corrected (from each session\'s '
            "intended start); <em>service time</em> is measured from the actual send.</p>"
        )
    lines.append("</section>")
    return lines


def _errors(metrics: Sequence[results_pb2.Metric]) -> list[str]:
    lines = ['<section id="errors">', "<h2>Errors by kind</h2>"]
    rows = [
        _row((f'<span class="key">{_text(m.key)}</span>', _text(kind), f"{n:,}"))
        for m in metrics
        for kind, n in sorted(m.errors_by_kind.items())
    ]
    if not rows:
        return [*lines, "<p>No errors.</p>", "</section>"]
    return [*lines, "<table>", _head(("key", "kind", "count")), *rows, "</table>", "</section>"]


# -- charts ----------------------------------------------------------------------------------


def _x_of(percentile: float) -> float:
    """The log-like x of a percentile: 0 at 0%, 1 at 90%, 2 at 99%, 3 at 99.9% ..."""
    return -math.log10(1.0 - percentile / 100.0)


def _decade_label(k: int) -> str:
    if k == 0:
        return "0%"
    if k == 1:
        return "90%"
    return "99" + ("." + "9" * (k - 2) if k > 2 else "") + "%"


def _tick_label(value_us: float) -> str:
    """A round axis value without trailing zeros: ``0us``, ``200us``, ``2.5ms``, ``10s``."""
    for unit, scale in (("s", 1_000_000), ("ms", 1_000)):
        if value_us >= scale:
            return f"{value_us / scale:.4g}{unit}"
    return f"{value_us:.0f}us"


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 5 x 10^n at or above ``value``, so the y ticks are round."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if mult * base >= value * (1 - 1e-12):
            return mult * base
    return 10.0 * base


def _points(stats: _Stats) -> list[tuple[float, float, float]]:
    """(percentile, x, value_us) for each plottable percentile, sorted by percentile."""
    return sorted(
        (p.percentile, _x_of(p.percentile), p.value_us)
        for p in stats.percentiles
        if 0.0 <= p.percentile < 100.0 and math.isfinite(p.value_us)
    )


def _series(
    points: Sequence[tuple[float, float, float]],
    cls: str,
    label: str,
    sx: float,
    sy: float,
) -> list[str]:
    def px(x: float) -> float:
        return _LEFT + x * sx

    def py(v: float) -> float:
        return _HEIGHT - _BOTTOM - v * sy

    coords = " ".join(f"{px(x):.1f},{py(v):.1f}" for _, x, v in points)
    lines = [f'<polyline class="{cls}" points="{coords}"/>']
    for p, x, v in points:
        lines.append(
            f'<circle class="{cls}" cx="{px(x):.1f}" cy="{py(v):.1f}" r="3">'
            f"<title>{label} p{p:g}: {format_latency_us(v)}</title></circle>"
        )
    return lines


def _chart(m: results_pb2.Metric, index: int) -> list[str]:
    latency = _points(m)
    service = _points(m.service_time) if m.service_time.count > 0 else []
    key = _text(m.key)
    if not latency:
        return [f'<p>No percentiles for <span class="key">{key}</span>.</p>']
    decades = max(1, math.ceil(max(x for _, x, _ in latency + service) - 1e-9))
    # At least 5us: the histogram's unit is 1us, and the y ticks stay whole microseconds.
    top_us = _nice_ceiling(max(5.0, *(v for _, _, v in latency + service)))
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    sx, sy = plot_w / decades, plot_h / top_us
    bottom, right = _HEIGHT - _BOTTOM, _WIDTH - _RIGHT
    chart_id = f"chart-{index}"
    lines = [
        f'<figure id="{chart_id}">',
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" '
        f'height="{_HEIGHT}" role="img" aria-labelledby="{chart_id}-title">',
        f'<title id="{chart_id}-title">Latency by percentile of {key}</title>',
    ]
    for i in range(_Y_STEPS + 1):
        value = top_us * i / _Y_STEPS
        y = bottom - value * sy
        lines.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        lines.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_label(value)}</text>'
        )
    for k in range(decades + 1):
        x = _LEFT + k * sx
        lines.append(f'<line class="grid" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{bottom}"/>')
        lines.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{_decade_label(k)}</text>'
        )
    lines += [
        f'<line class="axis" x1="{_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}"/>',
        f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_HEIGHT - 8}" text-anchor="middle">'
        "percentile</text>",
        f'<text x="14" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.1f})">latency</text>',
        *_series(latency, "latency", "latency", sx, sy),
    ]
    if service:
        lines += _series(service, "service-time", "service time", sx, sy)
        legend_x = _LEFT + 12
        lines += [
            f'<line class="latency" x1="{legend_x}" y1="{_TOP + 10}" '
            f'x2="{legend_x + 24}" y2="{_TOP + 10}"/>',
            f'<text x="{legend_x + 30}" y="{_TOP + 14}">latency (corrected)</text>',
            f'<line class="service-time" x1="{legend_x}" y1="{_TOP + 28}" '
            f'x2="{legend_x + 24}" y2="{_TOP + 28}"/>',
            f'<text x="{legend_x + 30}" y="{_TOP + 32}">service time</text>',
        ]
    lines += [
        "</svg>",
        f'<figcaption><span class="key">{key}</span>: {m.count:,} completed</figcaption>',
        "</figure>",
    ]
    return lines


def _charts(metrics: Sequence[results_pb2.Metric]) -> list[str]:
    lines = ['<section id="charts">', "<h2>Latency by percentile</h2>"]
    if not metrics:
        return [*lines, "<p>No metrics were recorded.</p>", "</section>"]
    for i, m in enumerate(metrics):
        if not m.no_latency:
            lines += [f'<h3><span class="key">{_text(m.key)}</span></h3>', *_chart(m, i)]
    return [*lines, "</section>"]


def to_html(run: results_pb2.LoadTestRun) -> str:
    """The run as one self-contained HTML page (no script, nothing loaded from elsewhere).

    Sections: a title (name, run id, state, duration, times), ``#summary`` (sessions,
    workers, events, the run's error, thresholds), ``#metrics`` (one row per key in the
    result's order, plus a "service time" row for open-model metrics), ``#errors`` (errors by kind)
    and ``#charts`` (an inline SVG latency-by-percentile chart per metric). Everything the
    user gave is HTML-escaped.
    """
    metrics = list(run.result.metrics)
    page_title = f"{run.load_test.name or 'load test'} [{run.id}] – Chaperon report"
    body = [
        *_title(run),
        "<main>",
        *_summary(run),
        *_metrics(metrics),
        *_errors(metrics),
        *_charts(metrics),
        "</main>",
        f"<footer>Chaperon {_text(__version__)} report</footer>",
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta http-equiv="Content-Security-Policy" '
            "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_text(page_title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
