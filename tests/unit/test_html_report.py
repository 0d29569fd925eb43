"""The HTML report: sections, escaping, open-model rows, empty runs, well-formed offline SVG."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from chaperon import exporters
from chaperon.html_report import to_html
from chaperon.v1 import loadtest_pb2, results_pb2

SCRIPT_KEY = "<script>alert(1)</script>"
SVG_RE = re.compile(r"<svg\b.*?</svg>", re.S)


def _metric(key: str, count: int = 20, base_us: float = 100.0) -> results_pb2.Metric:
    m = results_pb2.Metric(
        key=key,
        count=count,
        errors=3,
        min_us=base_us,
        mean_us=base_us * 2,
        max_us=base_us * 100,
        rate_per_s=123.5,
    )
    for i, p in enumerate(exporters.PERCENTILES):
        m.percentiles.add(percentile=p, value_us=base_us * (1 + i))
    m.errors_by_kind["timeout"] = 1
    m.errors_by_kind["http_5xx"] = 2
    return m


def _run(*metrics: results_pb2.Metric, name: str = "smoke") -> results_pb2.LoadTestRun:
    run = results_pb2.LoadTestRun(
        id="run-42", state=results_pb2.SUCCEEDED, load_test=loadtest_pb2.LoadTest(name=name)
    )
    run.submitted_at.FromSeconds(1_700_000_000)  # 2023-11-14 22:13:20 UTC
    run.started_at.FromSeconds(1_700_000_001)
    run.finished_at.FromSeconds(1_700_000_006)
    res = run.result
    res.duration_s = 5.25
    res.sessions_started, res.sessions_completed, res.sessions_failed = 11, 7, 1
    res.sessions_timed_out, res.sessions_dropped, res.sessions_lost = 2, 3, 4
    res.workers.extend(["worker-a", "worker-b"])
    res.lost_workers.append("worker-b")
    res.events.append("worker-b lost: its share moved to worker-a")
    res.metrics.extend(metrics)
    return run


def _open_model(m: results_pb2.Metric) -> results_pb2.Metric:
    st = m.service_time
    st.count, st.min_us, st.mean_us, st.max_us = m.count, 10.0, 20.0, 3_000.0
    for i, p in enumerate(exporters.PERCENTILES):
        st.percentiles.add(percentile=p, value_us=10.0 * (1 + i))
    return m


class _Tables(HTMLParser):
    """Every table of the page as rows of cell texts; fails on a stray end tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.row_classes: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
            self.row_classes.append(dict(attrs).get("class") or "")
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            assert self._cell is not None
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    parser.close()
    return parser


def _table_with(page: str, first_header: str, second_header: str) -> list[list[str]]:
    for table in _tables(page).tables:
        if table and table[0][:2] == [first_header, second_header]:
            return table
    raise AssertionError(f"no table starting {first_header}, {second_header}")


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(text) for text in SVG_RE.findall(page)]


# -- escaping --------------------------------------------------------------------------------


def test_user_text_is_escaped_everywhere() -> None:
    m = _metric(SCRIPT_KEY)
    m.errors_by_kind["<b>kind</b>"] = 1
    run = _run(m, name='<img src=x onerror="alert(1)">')
    run.id = "<i>id</i>"
    run.error = "boom <script>alert(2)</script> & more"
    run.result.workers.append("<u>w</u>")
    run.result.events.append("<marquee>event</marquee>")
    run.result.thresholds.add(
        threshold=loadtest_pb2.Threshold(metric=SCRIPT_KEY, stat="<p99>", max=1.0),
        value=2.0,
        passed=False,
    )

    page = to_html(run)

    assert "<script" not in page.lower()
    for raw in ("<img", "<i>id", "<u>w", "<marquee", "<b>kind", "<p99>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "boom &lt;script&gt;alert(2)&lt;/script&gt; &amp; more" in page
    # The parsed page gives the user's text back unchanged.
    metrics = _table_with(page, "key", "count")
    assert metrics[1][0] == SCRIPT_KEY
    errors = _table_with(page, "key", "kind")
    assert ["<script>alert(1)</script>", "<b>kind</b>", "1"] in errors
    (svg,) = _svgs(page)
    assert svg.findtext("title") == f"Latency by percentile of {SCRIPT_KEY}"


def test_quotes_and_control_characters_cannot_break_out() -> None:
    key = "GET /a\"b'c&d\x07\x00e"
    page = to_html(_run(_metric(key)))
    (svg,) = _svgs(page)  # well-formed XML despite the control characters
    assert svg.findtext("title") == "Latency by percentile of GET /a\"b'c&d\ufffd\ufffde"
    assert "\x07" not in page and "\x00" not in page
    assert _table_with(page, "key", "count")[1][0] == "GET /a\"b'c&d\ufffd\ufffde"


# -- sections --------------------------------------------------------------------------------


def test_every_section_is_present() -> None:
    run = _run(_metric("GET /"), _metric("POST /login", base_us=2_000.0))
    run.state = results_pb2.FAILED
    run.error = "thresholds failed"
    run.result.thresholds.add(
        threshold=loadtest_pb2.Threshold(metric="GET /", stat="p99", max=5000),
        value=1.5,
        passed=True,
    )
    run.result.thresholds.add(
        threshold=loadtest_pb2.Threshold(metric="POST /login", stat="error_rate", max=0.01),
        value=0.15,
        passed=False,
    )

    page = to_html(run)

    assert page.startswith("<!DOCTYPE html>\n") and page.rstrip().endswith("</html>")
    for section in ("summary", "metrics", "errors", "charts", "events", "thresholds", "error"):
        assert f'id="{section}"' in page, section
    # Title.
    assert "<h1>smoke</h1>" in page
    for text in (
        "run-42",
        "FAILED",
        "5.25 s",
        "2023-11-14 22:13:20 UTC",
        "2023-11-14 22:13:21 UTC",
        "2023-11-14 22:13:26 UTC",
    ):
        assert text in page, text
    # Summary.
    for label, value in (
        ("sessions started", "11"),
        ("sessions completed", "7"),
        ("sessions failed", "1"),
        ("sessions timed out", "2"),
        ("sessions dropped", "3"),
        ("sessions lost", "4"),
    ):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in page, label
    assert "<dt>workers</dt><dd>2: <code>worker-a</code>, <code>worker-b</code></dd>" in page
    assert "<dt>lost workers</dt><dd>1: <code>worker-b</code></dd>" in page
    assert "<li>worker-b lost: its share moved to worker-a</li>" in page
    assert '<pre class="error">thresholds failed</pre>' in page
    thresholds = _table_with(page, "metric", "stat")
    # In the stat's unit: milliseconds, a percentage.
    assert thresholds[1] == ["GET /", "p99", "5000ms", "1.5ms", "passed"]
    assert thresholds[2] == ["POST /login", "error_rate", "1%", "15%", "FAILED"]
    # Metrics, in the result's order, in readable units.
    metrics = _table_with(page, "key", "count")
    assert metrics[0] == [
        "key",
        "count",
        "errors",
        "req/s",
        "min",
        "mean",
        "p50",
        "p90",
        "p95",
        "p99",
        "p99.9",
        "max",
    ]
    # GET /: value of the i-th percentile of Chaperon's list is 100us * (1 + i).
    assert metrics[1] == [
        "GET /",
        "20",
        "3",
        "124",
        "100us",
        "200us",
        "500us",
        "1.00ms",
        "1.10ms",
        "1.20ms",
        "1.30ms",
        "10.00ms",
    ]
    assert metrics[2][0] == "POST /login" and metrics[2][4] == "2.00ms"
    assert metrics[2][-1] == "200.00ms"
    # Errors by kind, per key, sorted by kind.
    errors = _table_with(page, "key", "kind")
    assert errors[1:] == [
        ["GET /", "http_5xx", "2"],
        ["GET /", "timeout", "1"],
        ["POST /login", "http_5xx", "2"],
        ["POST /login", "timeout", "1"],
    ]
    # One chart per metric.
    titles = [svg.findtext("title") for svg in _svgs(page)]
    assert titles == ["Latency by percentile of GET /", "Latency by percentile of POST /login"]


def test_missing_percentile_shows_a_dash_and_matches_with_tolerance() -> None:
    m = results_pb2.Metric(key="GET /", count=1, min_us=5, mean_us=5, max_us=5)
    m.percentiles.add(percentile=99.90000000000001, value_us=2_500.0)
    row = _table_with(to_html(_run(m)), "key", "count")[1]
    assert row[6:11] == ["–", "–", "–", "–", "2.50ms"]


def test_metrics_keep_the_results_order() -> None:
    # The master orders them by the steps; the page does not sort them again.
    page = to_html(_run(_metric("GET /b"), _metric("GET /a")))
    assert [row[0] for row in _table_with(page, "key", "count")[1:]] == ["GET /b", "GET /a"]
    titles = [svg.findtext("title") for svg in _svgs(page)]
    assert titles == ["Latency by percentile of GET /b", "Latency by percentile of GET /a"]


def test_a_key_that_measures_no_duration_shows_no_latency() -> None:
    sent = _metric("WS send default")
    sent.no_latency = True
    only_errors = results_pb2.Metric(key="assign token", errors=2)
    only_errors.errors_by_kind["extract"] = 2
    page = to_html(_run(_metric("GET /"), sent, only_errors))
    rows = _table_with(page, "key", "count")
    assert rows[2][:2] == ["WS send default", "20"] and rows[2][4:] == ["–"] * 8
    assert rows[3][:3] == ["assign token", "0", "2"] and rows[3][4:] == ["–"] * 8
    titles = [svg.findtext("title") for svg in _svgs(page)]
    assert "Latency by percentile of WS send default" not in titles


def test_a_threshold_that_could_not_be_measured_says_why() -> None:
    run = _run(_metric("GET /"))
    run.result.thresholds.add(
        threshold=loadtest_pb2.Threshold(metric="GET /nope", stat="p95", max=200),
        value=float("inf"),
        passed=False,
        reason="no such metric",
    )
    rows = _table_with(to_html(run), "metric", "stat")
    assert rows[1] == ["GET /nope", "p95", "200ms", "no such metric", "FAILED"]


# -- open model ------------------------------------------------------------------------------


def test_open_model_service_time_row_and_series() -> None:
    page = to_html(_run(_open_model(_metric("GET /")), _metric("GET /closed")))

    parsed = _tables(page)
    metrics = _table_with(page, "key", "count")
    assert [row[0] for row in metrics[1:]] == ["GET /", "service time", "GET /closed"]
    service = metrics[2]
    assert service[:4] == ["service time", "20", "", ""]
    assert service[4:] == ["10us", "20us", "50us", "100us", "110us", "120us", "130us", "3.00ms"]
    assert "service-time" in parsed.row_classes
    assert "Open model: latencies are corrected" in page

    open_svg, closed_svg = _svgs(page)
    assert [p.get("class") for p in open_svg.iter("polyline")] == ["latency", "service-time"]
    assert [p.get("class") for p in closed_svg.iter("polyline")] == ["latency"]
    tips = [t.text for t in open_svg.iter("title")]
    assert "service time p99: 120us" in tips and "latency p99: 1.20ms" in tips


def test_closed_model_has_no_service_time() -> None:
    page = to_html(_run(_metric("GET /")))
    assert "service time" not in page and "Open model" not in page


# -- empty runs ------------------------------------------------------------------------------


def test_run_with_no_metrics() -> None:
    page = to_html(_run())
    assert page.count("No metrics were recorded.") == 2  # the table and the charts
    assert "<p>No errors.</p>" in page
    assert "<svg" not in page
    assert "<table" not in page  # no metrics, no thresholds


def test_an_empty_run_message_renders() -> None:
    page = to_html(results_pb2.LoadTestRun())
    assert "<h1>load test</h1>" in page and "RUN_STATE_UNSPECIFIED" in page
    assert "<dt>finished</dt><dd>–</dd>" in page
    assert "<svg" not in page


def test_metric_without_percentiles_has_no_chart() -> None:
    page = to_html(_run(results_pb2.Metric(key="GET /", count=0)))
    assert "<svg" not in page
    assert 'No percentiles for <span class="key">GET /</span>.' in page


# -- the SVG ---------------------------------------------------------------------------------


def _points(svg: ET.Element, cls: str) -> list[tuple[float, float]]:
    (line,) = [p for p in svg.iter("polyline") if p.get("class") == cls]
    return [
        (float(x), float(y))
        for x, y in (pair.split(",") for pair in line.get("points", "").split())
    ]


def test_svg_is_well_formed_and_inside_its_view_box() -> None:
    page = to_html(_run(_open_model(_metric("GET /")), _metric("GET /x", base_us=1_000_000.0)))
    svgs = _svgs(page)
    assert len(svgs) == 2 == page.count("<svg")
    for svg in svgs:
        assert svg.tag == "svg" and svg.get("role") == "img"
        _, _, width, height = (float(v) for v in svg.get("viewBox", "").split())
        pts = _points(svg, "latency")
        assert len(pts) == len(exporters.PERCENTILES)
        xs = [x for x, _ in pts]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        assert all(0 <= x <= width and 0 <= y <= height for x, y in pts)
        labels = [t.text for t in svg.iter("text")]
        assert "percentile" in labels and "latency" in labels
        assert {"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"} <= set(labels)


def test_x_axis_is_log_like() -> None:
    m = results_pb2.Metric(key="GET /", count=4, max_us=40)
    for p, v in ((0.0, 10.0), (90.0, 20.0), (99.0, 30.0), (99.9, 40.0), (100.0, 50.0)):
        m.percentiles.add(percentile=p, value_us=v)
    (svg,) = _svgs(to_html(_run(m)))
    pts = _points(svg, "latency")
    assert len(pts) == 4  # p100 cannot sit on a log-like axis; it is the max of the table
    xs = [x for x, _ in pts]
    steps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert all(math.isclose(s, steps[0], abs_tol=0.11) for s in steps)  # 0->90->99->99.9
    ys = [y for _, y in pts]
    assert ys == sorted(ys, reverse=True)  # higher latency is higher up


@pytest.mark.parametrize("user_url", ["", "https://example.com/login"])
def test_no_external_references(user_url: str) -> None:
    key = f"GET {user_url}" if user_url else "GET /"
    run = _run(_open_model(_metric(key)))
    run.load_test.config.update({"base_url": "http://127.0.0.1:8080"})
    page = to_html(run)

    lowered = page.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "src=", "href=", "@import", "url("):
        assert needle not in lowered, needle
    without_user_text = page.replace(user_url, "") if user_url else page
    assert "http://" not in without_user_text and "https://" not in without_user_text
    if user_url:
        assert user_url in page  # shown, as text
    assert "default-src 'none'" in page  # the browser is told to load nothing
