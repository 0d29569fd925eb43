"""The run header and the progress line (``chaperon.progress``): pure formatting and modes."""

from __future__ import annotations

import io

import pytest
from google.protobuf import json_format

from chaperon.progress import (
    ProgressDisplay,
    display_mode,
    format_header,
    format_progress_line,
    format_seconds,
)
from chaperon.v1 import loadtest_pb2, master_pb2, results_pb2


def _lt(*entries: dict) -> loadtest_pb2.LoadTest:
    scenario = {"name": "root", "run": [{"http": {"method": "GET", "path": "/"}}]}
    return json_format.ParseDict(
        {
            "name": "shop",
            "config": {"base_url": "http://127.0.0.1:8080"},
            "scenarios": [{"scenario": scenario, **e} for e in entries],
        },
        loadtest_pb2.LoadTest(),
    )


def _running(**fields: object) -> master_pb2.RunProgress:
    base: dict = dict(
        id="r",
        state=results_pb2.RUNNING,
        elapsed_s=12.0,
        duration_s=30.0,
        stop_by_s=60.0,
        sessions_active=50,
        requests=12000,
        errors=120,
    )
    base.update(fields)
    return master_pb2.RunProgress(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "seconds,text",
    [(0, "0s"), (2.5, "2.5s"), (12, "12s"), (65, "1m05s"), (3723, "1h02m03s"), (-1, "0s")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_header_names_each_entry_with_its_load_model_duration_and_graceful_stop() -> None:
    lt = _lt(
        {"concurrency": 50, "duration": "30s"},
        {
            "session_name": "buyers",
            "arrival_rate": {"per_second": 20},
            "duration": "1m",
            "graceful_stop": "5s",
        },
        {"arrival_rate": {"per_second": 0, "stages": [{"duration": "10s", "target": 100}]}},
    )
    text = format_header(lt, "1 worker, 2 engine threads", ["out.html"])
    lines = text.splitlines()
    assert lines[0] == "chaperon: load test 'shop'"
    assert lines[1] == "  root: 50 sessions (closed model) for 30s, graceful stop 30s"
    assert lines[2] == (
        "  buyers: 20/s arrivals (open model, up to 100 sessions) for 1m00s, graceful stop 5s"
    )
    assert lines[3].startswith("  root: stages 0/s -> 100/s over 10s (open model")
    assert lines[4] == "  duration 1m00s, at most 1m05s with the graceful stop"
    assert lines[5] == "  workers: 1 worker, 2 engine threads"
    assert lines[6] == "  outputs: out.html"


def test_header_of_iterations_has_no_duration_line() -> None:
    text = format_header(_lt({"concurrency": 3, "iterations": 5}))
    assert "3 sessions (closed model) 5 iterations each" in text
    assert "duration" not in text and "workers" not in text


def test_progress_line_running() -> None:
    line = format_progress_line(_running(), rate_per_s=1000.4)
    assert line == (
        "running [========>           ] 12s/30s  sessions 50  requests 12000  1000 req/s  "
        "errors 1.0%"
    )


def test_progress_line_default_rate_is_the_mean_so_far() -> None:
    assert "  1000 req/s  " in format_progress_line(_running())


def test_progress_line_open_model_shows_rate_and_drops() -> None:
    line = format_progress_line(_running(scheduled_rate_per_s=100.0, sessions_dropped=7))
    assert line.endswith("errors 1.0%  rate 100/s  dropped 7")


def test_progress_line_after_the_duration_says_what_it_waits_for() -> None:
    line = format_progress_line(_running(elapsed_s=32.0, requests_in_flight=12))
    assert line.startswith("running [====================] 32s/30s  ")
    assert "waiting up to 28s for 12 requests in flight" in line
    one = format_progress_line(_running(elapsed_s=59.5, requests_in_flight=1))
    assert "waiting up to 0.5s for 1 request in flight" in one


def test_progress_line_without_known_duration_has_no_bar() -> None:
    line = format_progress_line(_running(duration_s=0.0, stop_by_s=0.0))
    assert line.startswith("running 12s  sessions 50")


@pytest.mark.parametrize(
    "ahead,text",
    [(0, "queued: next to run"), (1, "queued: 1 run ahead"), (2, "queued: 2 runs ahead")],
)
def test_progress_line_queued(ahead: int, text: str) -> None:
    msg = master_pb2.RunProgress(id="r", state=results_pb2.SCHEDULED, queue_position=ahead)
    assert format_progress_line(msg) == text


def test_progress_line_ended() -> None:
    run = results_pb2.LoadTestRun(id="r", state=results_pb2.SUCCEEDED)
    run.result.duration_s = 31.0
    msg = master_pb2.RunProgress(id="r", state=results_pb2.SUCCEEDED, run=run)
    assert format_progress_line(msg) == "succeeded  31s"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_display_mode() -> None:
    assert display_mode(_Tty(), False) == "live"
    assert display_mode(io.StringIO(), True) == "plain"
    assert display_mode(io.StringIO(), False) == "quiet"


def _stream() -> list[master_pb2.RunProgress]:
    run = results_pb2.LoadTestRun(id="r", state=results_pb2.SUCCEEDED)
    return [
        master_pb2.RunProgress(id="r", state=results_pb2.SCHEDULED, queue_position=1),
        _running(elapsed_s=1.0, requests=100, errors=0),
        _running(elapsed_s=2.0, requests=300, errors=0),
        _running(elapsed_s=2.0, requests=300, errors=0),  # the same snapshot again
        _running(elapsed_s=3.0, requests=400, errors=0),
        master_pb2.RunProgress(id="r", state=results_pb2.SUCCEEDED, run=run),
    ]


def test_live_display_redraws_one_line_with_the_current_rate() -> None:
    out = _Tty()
    final = ProgressDisplay(out, "live").follow(_stream())
    assert final is not None and final.state == results_pb2.SUCCEEDED
    text = out.getvalue()
    draws = text.split("\r\x1b[2K")[1:]
    assert len(draws) == 6 and text.endswith("\n") and text.count("\n") == 1
    assert draws[0] == "queued: 1 run ahead"
    assert "  100 req/s  " in draws[1]  # first figures: the mean so far
    assert "  200 req/s  " in draws[2] and "  200 req/s  " in draws[3]
    assert "  100 req/s  " in draws[4]  # between the last two that moved


def test_plain_display_prints_a_line_every_few_seconds_and_on_changes() -> None:
    now = [0.0]
    out = io.StringIO()
    display = ProgressDisplay(out, "plain", clock=lambda: now[0], plain_every_s=5.0)
    for i, msg in enumerate(_stream()):
        now[0] = i * 2.0
        display.show(msg)
    display.close()
    lines = out.getvalue().splitlines()
    # queued (t=0), running (t=2, a change of state), t=8 (5 s later), the end.
    assert [line.split()[0] for line in lines] == ["queued:", "running", "running", "succeeded"]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_quiet_display_shows_nothing_and_still_returns_the_run() -> None:
    out = io.StringIO()
    assert ProgressDisplay(out, "quiet").follow(_stream()) is not None
    assert out.getvalue() == ""


def test_control_characters_in_data_are_escaped() -> None:
    lt = _lt({"concurrency": 1, "duration": "1s", "session_name": "a\x1b[2Jb"})
    assert "\x1b" not in format_header(lt, outputs=["o\x07.csv"])
