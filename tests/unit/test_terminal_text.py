"""No control character from data reaches a terminal: ``chaperon.core.text`` and its uses.

Names, metric keys, error kinds, worker names and reasons come from load tests, workers and
masters; the compiler refuses control characters in what it checks, the registry in what
workers register with, and every printer escapes them anyway (a master or worker that is
older or hostile): the text report, the live progress (table and plain lines), the command
line's messages and JSON output, the log lines.
"""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from chaperon.core.errors import InvalidArgument
from chaperon.core.text import (
    PrintableFormatter,
    control_char_problem,
    header_value_problem,
    json_printable,
    printable,
    printable_lines,
)
from chaperon.report import format_report
from chaperon.v1 import loadtest_pb2, master_pb2, results_pb2
from chaperon.watch import format_progress_line, render_progress, watch
from master_service.registry import WorkerRegistry

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
NOT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # but \t and \n
HOSTILE = "x\x1b[2J\x1b]0;owned\x07\r\n\x00\x7f\x85\x9b31m"


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_escapes_leave_no_control_character(text: str) -> None:
    assert not CONTROL.search(printable(text))
    assert not NOT_LINES.search(printable_lines(text))
    assert printable_lines(text).count("\n") == text.count("\n")
    encoded = json.dumps(text, ensure_ascii=False)
    assert json.loads(json_printable(encoded)) == text
    assert not CONTROL.search(json_printable(encoded))


def test_escapes_are_readable() -> None:
    assert printable("a\x1b[31mb\n\x85") == "a\\x1b[31mb\\n\\x85"
    assert printable_lines("one\x1b\ntwo\t") == "one\\x1b\ntwo\t"
    assert printable("caf\u00e9 \u20ac") == "caf\u00e9 \u20ac"


def test_problems_name_the_character() -> None:
    assert control_char_problem("ok name") is None
    problem = control_char_problem("ab\x1b")
    assert problem is not None and "\\x1b" in problem and "position 2" in problem
    assert header_value_problem("a\tb \u00e9 \x85") is None
    assert header_value_problem("a\r\nb") is not None


def _hostile_run() -> results_pb2.LoadTestRun:
    run = results_pb2.LoadTestRun(
        id="run-" + HOSTILE,
        state=results_pb2.FAILED,
        error="worker said " + HOSTILE,
        load_test=loadtest_pb2.LoadTest(name="name " + HOSTILE),
    )
    m = run.result.metrics.add(key="GET /" + HOSTILE, count=3, errors=1)
    m.errors_by_kind["kind" + HOSTILE] = 1
    m.service_time.count = 3
    run.result.lost_workers.append("w" + HOSTILE)
    run.result.events.append("worker w stopped: " + HOSTILE)
    th = run.result.thresholds.add(value=1.0, passed=False)
    th.threshold.metric = "GET /" + HOSTILE
    th.threshold.stat = "p99" + HOSTILE
    return run


def test_the_report_escapes_everything_it_did_not_write() -> None:
    text = format_report(_hostile_run())
    assert not NOT_LINES.search(text), repr(text)
    assert "\\x1b[2J" in text and "GET /x\\x1b" in text


def _progress(final: bool) -> master_pb2.RunProgress:
    msg = master_pb2.RunProgress(id="run-" + HOSTILE, state=results_pb2.RUNNING, elapsed_s=1)
    msg.metrics.add(key="GET /" + HOSTILE, count=1)
    if final:
        msg.run.CopyFrom(_hostile_run())
    return msg


@pytest.mark.parametrize("terminal", [False, True])
def test_watch_escapes_ids_and_keys(terminal: bool) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, color_system=None, width=200)
    watch([_progress(False), _progress(True)], console)
    # rich's own cursor moves (live redraw) are ESC sequences too: take those out first.
    text = re.sub(r"\x1b\[\d*[A-Za-z]|\x1b\[\?25[hl]|\r", "", out.getvalue())
    assert not NOT_LINES.search(text), repr(text)
    assert "\\x1b[2J" in text
    assert not CONTROL.search(format_progress_line(_progress(False)))
    plain = io.StringIO()
    Console(file=plain, force_terminal=False, width=300).print(render_progress(_progress(False)))
    assert not NOT_LINES.search(plain.getvalue())


def test_log_lines_escape_what_they_quote() -> None:
    record = logging.LogRecord("m", logging.WARNING, __file__, 1, "worker %s", (HOSTILE,), None)
    line = PrintableFormatter("%(levelname)s %(message)s").format(record)
    assert not NOT_LINES.search(line) and line.startswith("WARNING worker x\\x1b")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"address": "127.0.0.1:9\x1b"}, "address"),
        ({"worker_id": "w\n"}, "worker_id"),
        ({"version": "1\x85"}, "version"),
        ({"labels": {"zone": "eu\x1b[31m"}}, "labels['zone']"),
        ({"labels": {"z\x00": "eu"}}, "labels['z\\x00']"),
    ],
)
def test_workers_register_without_control_characters(fields: dict, field: str) -> None:
    registry = WorkerRegistry()
    args = {"address": "127.0.0.1:9", "capacity": 1, **fields}
    with pytest.raises(InvalidArgument) as info:
        registry.register(**args)
    assert [f for f, _ in info.value.violations] == [field]
    assert registry.snapshot() == []
    registry.register("127.0.0.1:9", 1, {"zone": "eu caf\u00e9"}, "1.0")
    assert len(registry.snapshot()) == 1
