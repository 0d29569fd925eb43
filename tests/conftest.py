"""Shared, light test setup: make ``tests/support`` importable as ``support``.

Nothing here starts a process; the fixtures that do live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# The session-language target server: started only by tests that ask for these fixtures.
from support.lang_fixture import lang_server, lang_server_process  # noqa: E402, F401
