"""What a result's counts mean: attempts, the error rate, and a run that sent nothing useful.

One rule, read by the master (thresholds, the final state) and by the client (the report's
error % column and total row, ``--max-error-rate``), so they never disagree.

A metric's ``count`` is its completed actions (responses received, whatever their status);
its ``errors`` are its failed actions by kind. An HTTP error status (``http_4xx``,
``http_5xx``) is a completed action that failed: it is in ``count`` already. Every other
kind (``connect``, ``timeout``, ``reset``, an extraction that found nothing ...) is an
action that did not complete, so it adds to the attempts. The error rate is errors over
attempts, at most 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chaperon.v1 import results_pb2

__all__ = ["Totals", "attempts", "error_rate", "requests_failed", "totals"]


def attempts(m: results_pb2.Metric) -> int:
    """The actions of ``m`` that were tried: completed ones plus those that never completed."""
    return m.count + sum(n for k, n in m.errors_by_kind.items() if not k.startswith("http_"))


def error_rate(m: results_pb2.Metric) -> float:
    """Errors over attempts, from 0 to 1 (0 when nothing was tried)."""
    tried = attempts(m)
    return min(1.0, m.errors / tried) if tried else 0.0


@dataclass(frozen=True)
class Totals:
    """Every key of a result added up (what the report's total row shows)."""

    count: int
    errors: int
    attempts: int
    rate_per_s: float
    errors_by_kind: dict[str, int]

    @property
    def error_rate(self) -> float:
        return min(1.0, self.errors / self.attempts) if self.attempts else 0.0


def totals(metrics: Iterable[results_pb2.Metric]) -> Totals:
    count = errors = tried = 0
    rate = 0.0
    by_kind: dict[str, int] = {}
    for m in metrics:
        count += m.count
        errors += m.errors
        tried += attempts(m)
        rate += m.rate_per_s
        for kind, n in m.errors_by_kind.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
    return Totals(count, errors, tried, rate, by_kind)


def requests_failed(result: results_pb2.Result) -> str:
    """Why the run did nothing useful, or "": no step recorded anything (nothing was sent, or
    every run of the scenario overran its ``scenario_timeout``), or every attempt failed (the
    reason names the error kinds, most frequent first)."""
    t = totals(result.metrics)
    if t.attempts == 0 and t.errors == 0:
        if result.sessions_timed_out:
            return (
                "no request completed: every run of the scenario overran its timeout "
                f"({result.sessions_timed_out} timed out)"
            )
        return "no request was sent (no step recorded anything)"
    if t.errors >= t.attempts:
        kinds = sorted(t.errors_by_kind.items(), key=lambda kv: (-kv[1], kv[0]))
        detail = ", ".join(f"{k}={n}" for k, n in kinds)
        return f"every request failed ({t.errors} errors: {detail})"
    return ""
