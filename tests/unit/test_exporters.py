"""Exporters: CSV layout, JSON equal to ``run --json``, HTML, default paths, files written."""

from __future__ import annotations

import csv
import io
import json
import pathlib

import pytest
from google.protobuf import json_format

from chaperon import exporters
from chaperon.v1 import loadtest_pb2, results_pb2

P_COLUMNS = [
    "p10_us",
    "p20_us",
    "p30_us",
    "p40_us",
    "p50_us",
    "p60_us",
    "p75_us",
    "p80_us",
    "p85_us",
    "p90_us",
    "p95_us",
    "p99_us",
    "p99.9_us",
    "p99.99_us",
    "p99.999_us",
]


def _metric(key: str, count: int, base_us: float) -> results_pb2.Metric:
    m = results_pb2.Metric(
        key=key,
        count=count,
        errors=3,
        min_us=base_us,
        mean_us=base_us * 2,
        max_us=base_us * 10,
        rate_per_s=123.5,
        stddev_us=7.25,
    )
    for i, p in enumerate(exporters.PERCENTILES):
        m.percentiles.add(percentile=p, value_us=base_us + i)
    m.errors_by_kind["timeout"] = 1
    m.errors_by_kind["http_5xx"] = 2
    return m


def _run(
    *metrics: results_pb2.Metric, name: str = "smoke", tag: str = ""
) -> results_pb2.LoadTestRun:
    run = results_pb2.LoadTestRun(
        id="run-42",
        state=results_pb2.SUCCEEDED,
        load_test=loadtest_pb2.LoadTest(name=name, tag=tag),
    )
    run.load_test.config.update({"base_url": "http://127.0.0.1:8080"})
    run.load_test.scenarios.add(concurrency=5, duration="1s").scenario.name = "root"
    run.submitted_at.FromSeconds(1_700_000_000)  # 2023-11-14T22:13:20Z
    run.finished_at.FromSeconds(1_700_000_000 + 86_400 + 5)  # 2023-11-15T22:13:25Z
    run.result.metrics.extend(metrics)
    return run


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


# -- CSV -----------------------------------------------------------------------------------


def test_csv_header_and_one_row_per_key_in_the_results_order() -> None:
    # The result's order is the steps' (the master's); the CSV does not sort it again.
    run = _run(_metric("POST /b", 10, 100.0), _metric("GET /a", 20, 50.0))
    text = exporters.to_csv(run)
    header = next(csv.reader(io.StringIO(text)))
    assert header[:8] == [
        "key",
        "count",
        "errors",
        "rate_per_s",
        "min_us",
        "mean_us",
        "max_us",
        "stddev_us",
    ]
    assert header[8 : 8 + 15] == P_COLUMNS
    assert header[23] == "errors_by_kind"
    assert header[24:28] == [
        "service_time_count",
        "service_time_min_us",
        "service_time_mean_us",
        "service_time_max_us",
    ]
    assert header[28:] == ["service_time_" + c for c in P_COLUMNS]
    rows = _rows(text)
    assert [r["key"] for r in rows] == ["POST /b", "GET /a"]
    a = rows[1]
    assert a["count"] == "20" and a["errors"] == "3"
    assert float(a["rate_per_s"]) == 123.5
    assert float(a["min_us"]) == 50.0 and float(a["max_us"]) == 500.0
    assert float(a["stddev_us"]) == 7.25
    assert float(a["p10_us"]) == 50.0 and float(a["p99.999_us"]) == 64.0
    assert a["errors_by_kind"] == "http_5xx=2;timeout=1"
    # Closed model: service-time columns present but empty.
    assert all(a[c] == "" for c in header[24:])


def test_csv_is_deterministic_and_exact() -> None:
    m1, m2 = _metric("GET /a", 1, 1.0), _metric("GET /b", 2, 2.0)
    assert exporters.to_csv(_run(m1, m2)) == exporters.to_csv(_run(m1, m2))
    m = _metric("GET /x", 1, 1.0)
    m.mean_us = 1234.5678901
    assert _rows(exporters.to_csv(_run(m)))[0]["mean_us"] == "1234.5678901"


def test_csv_missing_percentile_is_empty_and_tolerant_match() -> None:
    m = results_pb2.Metric(key="GET /", count=1)
    m.percentiles.add(percentile=99.90000000000001, value_us=9.0)
    row = _rows(exporters.to_csv(_run(m)))[0]
    assert row["p99.9_us"] == "9.0"
    assert row["p50_us"] == "" and row["errors_by_kind"] == ""


def test_csv_open_model_service_time_columns() -> None:
    m = _metric("GET /", 100, 1000.0)
    st = m.service_time
    st.count, st.min_us, st.mean_us, st.max_us = 100, 10.0, 20.0, 90.0
    for p in exporters.PERCENTILES:
        st.percentiles.add(percentile=p, value_us=p)
    row = _rows(exporters.to_csv(_run(m)))[0]
    assert row["service_time_count"] == "100"
    assert float(row["service_time_min_us"]) == 10.0
    assert float(row["service_time_mean_us"]) == 20.0
    assert float(row["service_time_max_us"]) == 90.0
    assert float(row["service_time_p99.9_us"]) == 99.9
    # The plain columns stay the corrected latency.
    assert float(row["min_us"]) == 1000.0


def test_csv_quotes_awkward_keys() -> None:
    m = _metric('GET /a,b"c', 1, 1.0)
    assert _rows(exporters.to_csv(_run(m)))[0]["key"] == 'GET /a,b"c'


@pytest.mark.parametrize(
    "key",
    ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tGET /", "\rGET /"],
)
def test_csv_text_cells_are_never_formulas(key: str) -> None:
    m = _metric(key, 1, 1.0)
    m.errors_by_kind["=cmd"] = 1
    (row,) = _rows(exporters.to_csv(_run(m)))
    assert row["key"] == "'" + key
    assert row["errors_by_kind"].startswith("'=cmd=1;")
    assert _rows(exporters.to_csv(_run(_metric("GET /-", 1, 1.0))))[0]["key"] == "GET /-"


def test_csv_empty_run_is_header_only() -> None:
    text = exporters.to_csv(results_pb2.LoadTestRun())
    assert text.count("\n") == 1 and text.startswith("key,count,")


# -- JSON ----------------------------------------------------------------------------------


def test_json_is_run_json_round_trip() -> None:
    m = _metric("GET /", 5, 3.0)
    m.hdr = b"\x1c\x84\x93\x14"
    run = _run(m)
    text = exporters.to_json(run)
    assert text == json_format.MessageToJson(run)  # what `chaperon run --json` prints
    assert '\n  "id": "run-42"' in text
    back = json_format.Parse(text, results_pb2.LoadTestRun())
    assert back == run


# -- default path --------------------------------------------------------------------------


def test_default_path_layout_uses_finished_at_utc() -> None:
    path = exporters.default_path(_run(tag="nightly"), "csv")
    assert path == pathlib.Path("results/2023-11-15/smoke/nightly-20231115T221325Z.csv")


def test_default_path_falls_back_to_submitted_at_and_run_id() -> None:
    run = _run()
    run.ClearField("finished_at")
    path = exporters.default_path(run, "json", root="out")
    assert path == pathlib.Path("out/2023-11-14/smoke/run-42-20231114T221320Z.json")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("", "load-test"),
        ("..", "load-test"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("my test\tone", "my-test-one"),
        ("bell\x07null\x00", "bell_null"),
        ("a..b", "a_b"),
        (".hidden", "hidden"),
        ("ünïcode ok", "ünïcode-ok"),
        ("x" * 300, "x" * 100),
    ],
)
def test_default_path_name_is_filesystem_safe(name: str, expected: str) -> None:
    path = exporters.default_path(_run(name=name, tag="t"), "csv")
    assert path.parts[2] == expected
    assert len(path.parts) == 4


def test_default_path_tag_is_made_safe_too() -> None:
    path = exporters.default_path(_run(tag="../x"), "csv")
    assert path.parent == pathlib.Path("results/2023-11-15/smoke")
    assert path.name == "x-20231115T221325Z.csv"


# -- export --------------------------------------------------------------------------------


def test_export_csv_to_given_path_writes_load_test_beside(tmp_path: pathlib.Path) -> None:
    run = _run(_metric("GET /", 5, 3.0))
    out = tmp_path / "deep" / "er" / "out.csv"
    written = exporters.export(run, "csv", str(out))
    beside = tmp_path / "deep" / "er" / "out.load_test.json"
    assert written == [out, beside]
    assert out.read_bytes() == exporters.to_csv(run).encode()
    load_test = json_format.Parse(beside.read_text(), loadtest_pb2.LoadTest())
    assert load_test == run.load_test
    assert json.loads(beside.read_text())["config"] == {"base_url": "http://127.0.0.1:8080"}


def test_export_json_to_default_path(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = _run(_metric("GET /", 5, 3.0), tag="v1")
    written = exporters.export(run, "json")
    base = pathlib.Path("results/2023-11-15/smoke")
    assert written == [
        base / "v1-20231115T221325Z.json",
        base / "v1-20231115T221325Z.load_test.json",
    ]
    assert json_format.Parse(written[0].read_text(), results_pb2.LoadTestRun()) == run


def test_export_refuses_to_overwrite(tmp_path: pathlib.Path) -> None:
    run = _run(_metric("GET /", 5, 3.0))
    out = tmp_path / "out.csv"
    exporters.export(run, "csv", out)
    with pytest.raises(FileExistsError) as info:
        exporters.export(run, "csv", out)
    assert info.value.filename == str(out)
    assert str(out) in str(info.value)
    # Overwrite when asked.
    run.result.metrics[0].count = 6
    exporters.export(run, "csv", out, overwrite=True)
    assert _rows(out.read_bytes().decode())[0]["count"] == "6"


def test_export_refuses_when_only_the_sidecar_exists_and_writes_nothing(
    tmp_path: pathlib.Path,
) -> None:
    beside = tmp_path / "out.load_test.json"
    beside.write_text("keep")
    with pytest.raises(FileExistsError) as info:
        exporters.export(_run(), "json", tmp_path / "out.json")
    assert info.value.filename == str(beside)
    assert not (tmp_path / "out.json").exists()
    assert beside.read_text() == "keep"


def test_export_html_to_default_path_writes_load_test_beside(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = _run(_metric("GET /", 5, 3.0), tag="v1")
    written = exporters.export(run, "html")
    base = pathlib.Path("results/2023-11-15/smoke")
    assert written == [
        base / "v1-20231115T221325Z.html",
        base / "v1-20231115T221325Z.load_test.json",
    ]
    assert written[0].read_text(encoding="utf-8") == exporters.to_html(run)
    assert json_format.Parse(written[1].read_text(), loadtest_pb2.LoadTest()) == run.load_test
    with pytest.raises(FileExistsError):
        exporters.export(run, "html")


def test_formats() -> None:
    assert exporters.FORMATS == ("csv", "json", "html")


@pytest.mark.parametrize("fmt", ["HTML", "CSV", "", "yaml", "pdf"])
def test_export_rejects_unknown_format(tmp_path: pathlib.Path, fmt: str) -> None:
    with pytest.raises(ValueError, match="unsupported export format.*csv, json, html"):
        exporters.export(_run(), fmt, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
