"""Chaperon: distributed HTTP and WebSocket load testing with a C-speed engine and exact HDR
histograms.

What users import is listed in ``__all__``; the generated messages live in ``chaperon.v1``.
The names are loaded on first use (PEP 562), so that importing ``chaperon.v1`` or the core
(``chaperon.core``), as the services do, loads nothing of the client side. Type checkers
read the names from ``__init__.pyi``.
"""

from __future__ import annotations

import importlib
from typing import Any

from chaperon._version import __version__

# name -> the module that defines it
_EXPORTS = {
    "Client": "chaperon.client",
    "LoadTest": "chaperon.builder",
    "LoadTestFileError": "chaperon.core.loadtest",
    "Scenario": "chaperon.builder",
    "default_path": "chaperon.exporters",
    "export": "chaperon.exporters",
    "format_report": "chaperon.report",
    "header": "chaperon.builder",
    "json_path": "chaperon.builder",
    "load_file": "chaperon.core.files",
    "load_test_from_dict": "chaperon.core.loadtest",
    "regex": "chaperon.builder",
    "response_body": "chaperon.builder",
    "status_code": "chaperon.builder",
    "to_csv": "chaperon.exporters",
    "to_html": "chaperon.exporters",
    "to_json": "chaperon.exporters",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chaperon' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
