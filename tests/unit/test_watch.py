"""Live progress display: rendering, the live (terminal) path and the plain-line path."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from rich.console import Console

from chaperon import watch as watch_mod
from chaperon.report import format_report
from chaperon.v1 import loadtest_pb2, master_pb2, results_pb2


def _progress(
    state: int, elapsed_s: float, count: int, *, final: bool = False
) -> master_pb2.RunProgress:
    msg = master_pb2.RunProgress(id="run-7", state=state, elapsed_s=elapsed_s)  # type: ignore[arg-type]
    msg.metrics.add(
        key="GET /", count=count, errors=count // 10, rate_per_s=count / 2, p50_us=850, p99_us=2500
    )
    msg.metrics.add(
        key="POST /items/[id]", count=count // 2, errors=0, rate_per_s=1.0, p50_us=1_500_000
    )
    if final:
        run = msg.run
        run.id = "run-7"
        run.state = results_pb2.SUCCEEDED
        run.load_test.CopyFrom(loadtest_pb2.LoadTest(name="smoke"))
        run.result.duration_s = elapsed_s
        run.result.metrics.add(key="GET /", count=count, errors=count // 10, rate_per_s=10.0)
    return msg


def _stream() -> list[master_pb2.RunProgress]:
    return [
        _progress(results_pb2.RUNNING, 1.0, 100),
        _progress(results_pb2.RUNNING, 2.0, 2000),
        _progress(results_pb2.SUCCEEDED, 3.0, 31415, final=True),
    ]


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120), out


def test_render_progress_has_id_state_elapsed_and_rows() -> None:
    console, out = _console(False)
    console.print(watch_mod.render_progress(_progress(results_pb2.RUNNING, 75.5, 1234)))
    text = out.getvalue()
    assert "run-7" in text and "RUNNING" in text and "1m15s" in text
    assert "GET /" in text and "1234" in text and "123" in text  # errors
    assert "617" in text  # rate/s
    assert "850us" in text and "2.50ms" in text and "1.50s" in text
    # "[id]" is data, not rich markup.
    assert "POST /items/[id]" in text


def test_plain_output_one_line_per_message_then_report() -> None:
    console, out = _console(False)
    stream = _stream()
    run = watch_mod.watch(stream, console)
    assert run is not None
    assert run == stream[-1].run
    text = out.getvalue()
    assert "\x1b[" not in text  # no escape codes in a log
    lines = text.splitlines()
    progress_lines = [line for line in lines if line.startswith("run-7 ")]
    assert len(progress_lines) == 3
    assert progress_lines[0].startswith("run-7 RUNNING 1.0s")
    assert "GET /: count=100 errors=10 rate=50/s p50=850us p99=2.50ms" in progress_lines[0]
    assert "POST /items/[id]: count=1000" in progress_lines[1]
    assert progress_lines[2].startswith("run-7 SUCCEEDED 3.0s")
    assert "count=31415" in progress_lines[2]
    assert text.endswith(format_report(run) + "\n")


def test_live_output_on_a_terminal_shows_keys_counts_and_final_state() -> None:
    console, out = _console(True)
    run = watch_mod.watch(_stream(), console)
    assert run is not None and run.state == results_pb2.SUCCEEDED
    text = out.getvalue()
    assert "GET /" in text and "POST /items/[id]" in text
    assert "31415" in text and "15707" in text
    assert "SUCCEEDED" in text
    assert "smoke  [run-7]  SUCCEEDED" in text  # the final report


def test_stream_without_final_run_returns_none_and_prints_no_report() -> None:
    for terminal in (False, True):
        console, out = _console(terminal)
        assert watch_mod.watch(_stream()[:2], console) is None
        assert "sessions:" not in out.getvalue()


def test_empty_stream() -> None:
    console, out = _console(False)
    assert watch_mod.watch([], console) is None
    assert out.getvalue() == ""


def test_stream_error_propagates_after_closing_the_display() -> None:
    def failing() -> Iterator[master_pb2.RunProgress]:
        yield _progress(results_pb2.RUNNING, 1.0, 100)
        raise ConnectionError("stream broke")

    console, out = _console(True)
    with pytest.raises(ConnectionError):
        watch_mod.watch(failing(), console)
    text = out.getvalue()
    assert "GET /" in text
    assert text.endswith("\x1b[?25h")  # the Live display was stopped: cursor shown again


def test_unknown_state_number_is_shown_not_raised() -> None:
    line = watch_mod.format_progress_line(master_pb2.RunProgress(id="x", state=99))  # type: ignore[arg-type]
    assert line.startswith("x 99 0.0s")
