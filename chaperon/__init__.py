"""Chaperon: distributed HTTP and WebSocket load testing with a C-speed engine and exact HDR
histograms.

What users import is listed in ``__all__``; the generated messages live in ``chaperon.v1``.
"""

from chaperon._version import __version__
from chaperon.builder import (
    LoadTest,
    Scenario,
    header,
    json_path,
    regex,
    response_body,
    status_code,
)
from chaperon.client import Client
from chaperon.exporters import default_path, export, to_csv, to_html, to_json
from chaperon.loadtest import LoadTestFileError, load_file, load_test_from_dict
from chaperon.report import format_report

__all__ = [
    "Client",
    "LoadTest",
    "LoadTestFileError",
    "Scenario",
    "__version__",
    "default_path",
    "export",
    "format_report",
    "header",
    "json_path",
    "load_file",
    "load_test_from_dict",
    "regex",
    "response_body",
    "status_code",
    "to_csv",
    "to_html",
    "to_json",
]
