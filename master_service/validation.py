"""The master's check of a submitted load test: the session-language compiler's front end.

The rules live in ``chaperon.core.lang`` (workers run the same ones before they build their
plans); this module is the master's entry point to them, for the scheduler and the servicer.
"""

from __future__ import annotations

from chaperon.core.lang import check_load_test, check_targets

__all__ = ["check_targets", "validate_load_test"]

validate_load_test = check_load_test
