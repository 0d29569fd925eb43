"""The text report (``chaperon.report``) and the counts it shows (``chaperon.core.results``):
pure functions of a ``LoadTestRun``, checked line by line."""

from __future__ import annotations

import pytest

from chaperon.core.results import attempts, error_rate, requests_failed, totals
from chaperon.report import (
    error_rate_line,
    format_report,
    format_threshold,
    shorten_middle,
)
from chaperon.v1 import loadtest_pb2, results_pb2

PERCENTILES = (10, 20, 30, 40, 50, 60, 75, 80, 85, 90, 95, 99, 99.9, 99.99, 99.999)
LONG_KEY = "GET /api/v1/customers/{customer_id}/orders/{order_id}/items?page={page}&size=100"


def metric(
    key: str,
    count: int = 100,
    *,
    base_us: float = 1_000.0,
    errors: dict[str, int] | None = None,
    no_latency: bool = False,
    open_model: bool = False,
) -> results_pb2.Metric:
    """A metric whose p<P> is ``base_us * (1 + P / 100)``, so p95 is 1.95x and p99 1.99x."""
    m = results_pb2.Metric(
        key=key,
        count=count,
        errors=sum((errors or {}).values()),
        errors_by_kind=errors or {},
        rate_per_s=count / 10,
        min_us=base_us / 2,
        mean_us=base_us,
        max_us=base_us * 3,
        no_latency=no_latency,
    )
    if count:
        m.percentiles.extend(
            results_pb2.Percentile(percentile=p, value_us=base_us * (1 + p / 100))
            for p in PERCENTILES
        )
    if open_model:
        st = m.service_time
        st.count, st.min_us, st.mean_us, st.max_us = count, base_us / 4, base_us / 2, base_us
        st.percentiles.extend(
            results_pb2.Percentile(percentile=p, value_us=base_us / 2) for p in PERCENTILES
        )
    return m


def run_of(
    *metrics: results_pb2.Metric, state: int = results_pb2.SUCCEEDED
) -> results_pb2.LoadTestRun:
    run = results_pb2.LoadTestRun(id="run-0123456789ab", state=state)  # type: ignore[arg-type]
    run.load_test.name = "shop"
    run.result.duration_s = 10.0
    run.result.sessions_started = run.result.sessions_completed = 4
    run.result.metrics.extend(metrics)
    return run


def table(text: str) -> list[list[str]]:
    """The table's rows (header first, rules left out) split on runs of blanks."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("metric "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("  ") or line.strip().startswith(("errors of", "sessions:")):
            break
        if set(line.strip()) <= {"-", " "}:
            continue
        rows.append([cell for cell in line.strip().split("  ") if cell.strip()])
    return [[c.strip() for c in row] for row in rows]


# -- chaperon.core.results --------------------------------------------------------------------


def test_attempts_count_http_errors_once_and_the_others_on_top() -> None:
    m = metric("GET /", 10, errors={"http_5xx": 2, "connect": 5})
    assert attempts(m) == 15 and error_rate(m) == pytest.approx(7 / 15)
    assert error_rate(metric("GET /", 0)) == 0.0
    t = totals([m, metric("GET /b", 5, errors={"timeout": 1})])
    assert (t.count, t.errors, t.attempts) == (15, 8, 21)
    assert t.errors_by_kind == {"http_5xx": 2, "connect": 5, "timeout": 1}
    assert t.rate_per_s == pytest.approx(1.5)


def test_a_run_that_sent_nothing_or_whose_every_request_failed() -> None:
    def why(*metrics: results_pb2.Metric, timed_out: int = 0) -> str:
        result = results_pb2.Result(metrics=metrics, sessions_timed_out=timed_out)
        return requests_failed(result)

    assert why() == "no request was sent (no step recorded anything)"
    assert why(metric("GET /", 0)) == why()
    assert why(metric("GET /", 0), timed_out=6) == (
        "no request completed: every run of the scenario overran its timeout (6 timed out)"
    )
    refused = metric("GET /", 0, errors={"connect": 4})
    answered_500 = metric("GET /b", 3, errors={"http_5xx": 3})
    assert why(refused, answered_500) == "every request failed (7 errors: connect=4, http_5xx=3)"
    assert why(refused, metric("GET /ok", 1)) == ""


# -- the table ---------------------------------------------------------------------------------


def test_rows_keep_the_results_order_with_p95_error_percent_and_a_total() -> None:
    run = run_of(
        metric("POST /login", 200, errors={"http_5xx": 2}),
        metric("GET /", 100, base_us=150.0),
        metric("DELETE /a", 0, errors={"connect": 3}),
    )
    rows = table(format_report(run, width=100))
    assert rows[0] == [
        "metric", "count", "errors", "err%", "req/s", "mean", "p50", "p90", "p95", "p99", "max",
    ]  # fmt: skip
    assert [r[0] for r in rows[1:]] == ["POST /login", "GET /", "DELETE /a", "total"]
    assert rows[1] == [
        "POST /login", "200", "2", "1.00%", "20.0", "1.00ms", "1.50ms", "1.90ms", "1.95ms",
        "1.99ms", "3.00ms",
    ]  # fmt: skip
    assert rows[2][5:] == ["150us", "225us", "285us", "292us", "298us", "450us"]
    # Only errors: no latency to show.
    assert rows[3] == ["DELETE /a", "0", "3", "100%", "0.0", "-", "-", "-", "-", "-", "-"]
    # Every key added up; no latency (keys measure different things).
    assert rows[4] == ["total", "300", "5", "1.65%", "30.0"]  # 5 of 303 attempts


def test_a_key_that_measures_no_duration_shows_no_latency() -> None:
    run = run_of(metric("WS connect /ws", 10), metric("WS send default", 10, no_latency=True))
    rows = table(format_report(run, width=100))
    assert rows[2] == ["WS send default", "10", "0", "0%", "1.0", *["-"] * 6]
    assert "0us" not in format_report(run, width=100)


def test_open_model_keys_get_a_service_time_row() -> None:
    run = run_of(metric("GET / (open model)", 10, open_model=True))
    text = format_report(run, width=100)
    rows = table(text)
    assert rows[2] == ["service time", "10", "500us", *["500us"] * 4, "1.00ms"]
    assert "latencies are corrected" in text


@pytest.mark.parametrize("width", [100, 120, 80, 60])
def test_every_line_fits_the_width(width: int) -> None:
    run = run_of(
        metric(LONG_KEY, 1_234_567, base_us=12_345.0, errors={"http_5xx": 12, "timeout": 3}),
        metric("GET /", 99, open_model=True),
    )
    run.error = "worker w0: " + "a long explanation of what went wrong " * 5
    run.result.thresholds.add(
        threshold=loadtest_pb2.Threshold(metric=LONG_KEY, stat="p99", max=200),
        value=24.6,
        passed=True,
    )
    text = format_report(run, width=width)
    # Below 80 columns the narrow form is as narrow as it gets (the keys at their shortest).
    assert max(len(line) for line in text.splitlines()) <= max(width, 80)
    rows = table(text)
    shortened = rows[1][0]
    assert shortened != LONG_KEY and "…" in shortened
    assert LONG_KEY.startswith(shortened.split("…")[0]) and LONG_KEY.endswith(
        shortened.split("…")[1]
    )
    assert rows[3][0] in ("service time", "service")


def test_the_narrow_form_below_100_columns() -> None:
    run = run_of(metric("GET /", 10))
    assert table(format_report(run, width=99))[0] == [
        "metric", "count", "errors", "err%", "req/s", "p50", "p95", "p99", "max",
    ]  # fmt: skip
    assert "mean" in table(format_report(run, width=100))[0]


def test_a_wide_terminal_shows_long_keys_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_of(metric(LONG_KEY, 10))
    monkeypatch.setenv("COLUMNS", "200")
    assert table(format_report(run))[1][0] == LONG_KEY
    monkeypatch.setenv("COLUMNS", "80")
    assert max(len(line) for line in format_report(run).splitlines()) <= 80


def test_shorten_middle() -> None:
    assert shorten_middle("GET /short", 20) == "GET /short"
    assert shorten_middle("abcdefghij", 7) == "abc…hij"
    assert shorten_middle("abcdefghij", 6) == "abc…ij"
    for width in range(1, 12):
        assert len(shorten_middle("abcdefghijk", width)) == min(width, 11)


def test_latencies_show_three_significant_digits() -> None:
    cells = {
        999.4: "999us",
        999.7: "1.00ms",  # rounded before the unit is chosen
        12_345.0: "12.3ms",
        123_456.0: "123ms",
        2_500_000.0: "2.50s",
    }
    for us, shown in cells.items():
        rows = table(format_report(run_of(metric("GET /", 1, base_us=us)), width=100))
        assert rows[1][5] == shown, us


# -- thresholds and the error rate -----------------------------------------------------------


def threshold(metric_key: str, stat: str, limit: float, value: float, **more: object):
    th = results_pb2.ThresholdResult(
        threshold=loadtest_pb2.Threshold(metric=metric_key, stat=stat, max=limit),
        value=value,
        **more,  # type: ignore[arg-type]
    )
    th.passed = not th.reason and value <= limit
    return th


def test_thresholds_show_their_units() -> None:
    assert format_threshold(threshold("GET /", "p99", 200, 153.2)) == (
        "GET / p99 <= 200ms: 153.2ms passed"
    )
    assert format_threshold(threshold("GET /", "max", 0.5, 1234.56)) == (
        "GET / max <= 0.5ms: 1235ms FAILED"
    )
    assert format_threshold(threshold("GET /", "error_rate", 0.01, 0.0025)) == (
        "GET / error_rate <= 1%: 0.25% passed"
    )
    assert format_threshold(threshold("GET /", "errors", 0, 3)) == "GET / errors <= 0: 3 FAILED"


def test_a_threshold_on_a_missing_key_says_no_such_metric() -> None:
    missing = threshold("GET /itemz", "p95", 100, float("inf"), reason="no such metric")
    run = run_of(metric("GET /items", 10), state=results_pb2.FAILED)
    run.result.thresholds.append(missing)
    text = format_report(run, width=100)
    assert "inf" not in text
    assert (
        "  threshold GET /itemz p95 <= 100ms: FAILED, no such metric "
        "(did you mean 'GET /items'?)" in text.splitlines()
    )


def test_a_threshold_stored_without_a_reason_shows_no_inf() -> None:
    old = threshold("GET /x", "p99", 200, float("inf"))
    assert format_threshold(old) == "GET /x p99 <= 200ms: FAILED, not measured"


def test_errors_above_the_max_error_rate_are_said() -> None:
    run = run_of(metric("GET /", 990, errors={"timeout": 10}))
    assert error_rate_line(run, 0.0) == (
        "FAILED: 10 errors in 1000 requests (1.00%), above --max-error-rate 0 (0%)"
    )
    assert error_rate_line(run, 0.01) == ""
    assert error_rate_line(run_of(metric("GET /", 10)), 0.0) == ""
    text = format_report(run, width=100, max_error_rate=0.005)
    assert text.splitlines()[-1] == (
        "  FAILED: 10 errors in 1000 requests (1.00%), above --max-error-rate 0.005 (0.50%)"
    )
    assert "max-error-rate" not in format_report(run, width=100)


def test_a_run_without_metrics() -> None:
    text = format_report(run_of(state=results_pb2.FAILED), width=80)
    assert "no metrics were recorded" in text and "total" not in text
