"""Exporters: write a finished ``LoadTestRun`` as CSV, JSON or HTML, with its load test beside it.

Theory of operation. ``to_csv``, ``to_json`` and ``to_html`` (``chaperon.html_report``: one
self-contained page with tables and inline SVG charts) turn a run into text and touch no file;
``default_path`` computes Chaperon's default location,
``results/<date>/<load test>/<tag>-<timestamp>.<ext>``, from the run alone (its end time,
name, tag and id), so exporting the same run twice names the same file; ``export`` writes
the output and, beside it (unless ``beside=False``: ``chaperon run --output PATH`` writes
only the file it names), ``<same stem>.load_test.json`` holding the run's ``LoadTest``
(config and scenarios) as proto3 JSON, so a result file travels with what produced it.
Existing files are never overwritten unless asked: every path is checked before any is
written, and files are opened in exclusive-create mode.

CSV layout (one header row, then one row per metric key, in the result's order: the order of
the steps, as the master computed it):

- ``key, count, errors, rate_per_s, min_us, mean_us, max_us, stddev_us``;
- one ``p<percentile>_us`` column per percentile of Chaperon's list (``p10_us`` ..
  ``p99.999_us``), empty when the run does not carry that percentile;
- ``errors_by_kind`` as ``kind=n;kind=n`` sorted by kind;
- raw service time as extra *columns* (``service_time_count``, ``service_time_min_us``,
  ``service_time_mean_us``, ``service_time_max_us``, ``service_time_p<percentile>_us``).
  Columns rather than rows keep "one row per key" true, so the key stays a unique row id in
  a spreadsheet or a dataframe. The columns are always in the header, so every run has the
  same schema; they are filled only for open-model metrics (``service_time.count > 0``) and
  left empty otherwise (in the closed model the latency columns *are* the service time).
  In the open model the plain latency columns are the corrected latency.

Numbers are written exactly as stored (``repr`` of the float), not rounded for display.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import pathlib
import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime, timezone

from google.protobuf import json_format
from google.protobuf.message import Message

from chaperon.html_report import to_html
from chaperon.v1 import results_pb2

__all__ = [
    "FORMATS",
    "PERCENTILES",
    "default_path",
    "export",
    "to_csv",
    "to_html",
    "to_json",
]

#: Chaperon's percentile list; one CSV column each.
PERCENTILES: tuple[float, ...] = (
    10,
    20,
    30,
    40,
    50,
    60,
    75,
    80,
    85,
    90,
    95,
    99,
    99.9,
    99.99,
    99.999,
)

#: Formats ``export`` writes.
FORMATS: tuple[str, ...] = ("csv", "json", "html")

_LOAD_TEST_SUFFIX = ".load_test.json"
_MAX_NAME_CHARS = 100


def _percentile_column(prefix: str, p: float) -> str:
    return f"{prefix}p{p:g}_us"


_HEADER: tuple[str, ...] = (
    "key",
    "count",
    "errors",
    "rate_per_s",
    "min_us",
    "mean_us",
    "max_us",
    "stddev_us",
    *(_percentile_column("", p) for p in PERCENTILES),
    "errors_by_kind",
    "service_time_count",
    "service_time_min_us",
    "service_time_mean_us",
    "service_time_max_us",
    *(_percentile_column("service_time_", p) for p in PERCENTILES),
)

_Cell = str | int | float


def _percentile_cells(
    stats: results_pb2.Metric | results_pb2.LatencyStats,
) -> list[_Cell]:
    # Match with a tolerance: 99.9 may come back as 99.90000000000001 from a client that
    # computed it.
    cells: list[_Cell] = []
    for p in PERCENTILES:
        found: _Cell = ""
        for item in stats.percentiles:
            if abs(item.percentile - p) < 1e-9:
                found = item.value_us
                break
        cells.append(found)
    return cells


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# injection"); such text cells get a leading apostrophe, which spreadsheets show as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(text: str) -> str:
    """``text`` as a CSV cell that no spreadsheet takes for a formula."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv_row(m: results_pb2.Metric) -> list[_Cell]:
    row: list[_Cell] = [
        _text_cell(m.key),
        m.count,
        m.errors,
        m.rate_per_s,
        m.min_us,
        m.mean_us,
        m.max_us,
        m.stddev_us,
        *_percentile_cells(m),
        _text_cell(";".join(f"{kind}={n}" for kind, n in sorted(m.errors_by_kind.items()))),
    ]
    st = m.service_time
    if st.count > 0:
        row += [st.count, st.min_us, st.mean_us, st.max_us, *_percentile_cells(st)]
    else:
        row += [""] * (4 + len(PERCENTILES))
    return row


def to_csv(run: results_pb2.LoadTestRun) -> str:
    """The run's metrics as CSV: a header, then one row per metric key in the result's order.

    Columns: ``key, count, errors, rate_per_s, min_us, mean_us, max_us, stddev_us``, then
    ``p10_us`` .. ``p99.999_us`` (Chaperon's percentile list; empty when absent), then
    ``errors_by_kind`` (``kind=n;kind=n``, sorted by kind), then the raw service time as
    extra columns ``service_time_count, service_time_min_us, service_time_mean_us,
    service_time_max_us, service_time_p10_us`` .. ``service_time_p99.999_us``. The
    service-time columns are always present (same schema for every run) and filled only for
    open-model metrics (``service_time.count > 0``); the plain latency columns are then the
    corrected latency. Lines end with CRLF (RFC 4180, the ``csv`` module's default). A text
    cell starting with ``= + - @``, a tab or a CR (a metric key is user input) gets a leading
    ``'`` so that a spreadsheet opening the file shows it as text and runs no formula.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(_HEADER)
    for m in run.result.metrics:
        writer.writerow(_csv_row(m))
    return out.getvalue()


def _message_json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=2) + "\n"


def to_json(run: results_pb2.LoadTestRun) -> str:
    """The run as proto3 JSON with an indent of 2: what ``chaperon run --json`` prints."""
    return json_format.MessageToJson(run, indent=2)


def _safe_component(text: str, fallback: str) -> str:
    """``text`` as one path component: no separators, no ``..``, no control characters.

    Path separators, characters Windows forbids (``<>:"|?*``) and control or format
    characters become ``_``; runs of whitespace become ``-``; runs of two or more dots become
    ``_``; leading and trailing dots, dashes and underscores are dropped (no hidden files,
    no names that look like options); the result is cut to 100 characters. Empty -> fallback.
    """
    chars = []
    for ch in re.sub(r"\s+", "-", text):
        if ch in '/\\<>:"|?*' or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            chars.append("_")
        else:
            chars.append(ch)
    name = re.sub(r"\.{2,}", "_", "".join(chars))
    name = name.strip("._-")[:_MAX_NAME_CHARS].rstrip(".")
    return name or fallback


def _run_time(run: results_pb2.LoadTestRun) -> datetime:
    # The run's own time, so the default path of a run never changes between exports.
    for field in ("finished_at", "submitted_at"):
        if run.HasField(field):
            ts = getattr(run, field)
            return datetime.fromtimestamp(ts.seconds, tz=timezone.utc)
    return datetime.now(tz=timezone.utc)


def default_path(
    run: results_pb2.LoadTestRun, ext: str, root: str | os.PathLike[str] = "results"
) -> pathlib.Path:
    """Chaperon's default output path: ``<root>/<date>/<load test>/<tag>-<timestamp>.<ext>``.

    ``date`` (``YYYY-MM-DD``) and ``timestamp`` (``YYYYmmddTHHMMSSZ``) are the run's
    ``finished_at`` in UTC, or its ``submitted_at`` when it has not finished (the current
    time if it has neither). ``<load test>`` is the load test's name and ``<tag>`` its tag
    (the run id when the tag is empty), both made safe as one path component: no ``/`` or
    ``\\``, no ``..``, no control characters; an empty name gives ``load-test``.
    """
    when = _run_time(run)
    name = _safe_component(run.load_test.name, "load-test")
    tag = _safe_component(run.load_test.tag or run.id, "run")
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    return pathlib.Path(root) / when.strftime("%Y-%m-%d") / name / f"{tag}-{stamp}.{ext}"


def _load_test_path(output: pathlib.Path) -> pathlib.Path:
    return output.with_name(output.stem + _LOAD_TEST_SUFFIX)


def _refuse_existing(paths: Iterable[pathlib.Path]) -> None:
    for path in paths:
        if path.is_dir():
            raise IsADirectoryError(
                errno.EISDIR, "expected a file path, got a directory", str(path)
            )
        if path.exists():
            raise FileExistsError(
                errno.EEXIST, "refusing to overwrite (pass overwrite=True)", str(path)
            )


def _write(path: pathlib.Path, text: str, overwrite: bool) -> None:
    # newline="" keeps the CSV's CRLF as written; "x" fails if the file appeared meanwhile.
    with open(path, "w" if overwrite else "x", encoding="utf-8", newline="") as f:
        f.write(text)


def export(
    run: results_pb2.LoadTestRun,
    fmt: str,
    path: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    beside: bool = True,
) -> list[pathlib.Path]:
    """Write the run as ``fmt`` (``"csv"``, ``"json"`` or ``"html"``) and its load test beside it.

    The output goes to ``path``, or to ``default_path(run, fmt)`` when ``path`` is None;
    missing parent directories are created. Beside it goes ``<same stem>.load_test.json``,
    the run's ``LoadTest`` (config and scenarios) as proto3 JSON, unless ``beside`` is false
    (then only the output is written). Returns the paths written, output first. Raises
    ``ValueError`` for another format, and ``FileExistsError`` naming the path when a file
    to write exists, unless ``overwrite`` is true; nothing is written then.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unsupported export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    output = pathlib.Path(path) if path is not None else default_path(run, fmt)
    paths = [output, _load_test_path(output)] if beside else [output]
    if not overwrite:
        _refuse_existing(paths)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        text = to_csv(run)
    elif fmt == "json":
        text = to_json(run) + "\n"
    else:
        text = to_html(run)
    _write(output, text, overwrite)
    if beside:
        _write(paths[1], _message_json(run.load_test), overwrite)
    return paths
