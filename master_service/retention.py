"""Retention: the master deletes finished runs beyond the newest N, or older than D days.

Theory of operation. A ``RetentionPolicy`` says what to keep: the newest ``keep_runs``
finished runs (newest by submission, the order ``ListLoadTestRuns`` uses) and the runs that
finished within the last ``keep_days`` days; a run either rule would drop is deleted. Only
finished runs count and go (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED): a SCHEDULED or
RUNNING run is never deleted and never counted. The default policy keeps everything, and then
nothing here runs.

``Retention`` applies the policy on its own thread (``chaperon-retention``): one pass when
the master starts, one soon after each run ends (``poke``, which the run queue calls), and
one every ``interval_s`` (the age rule needs the clock, not an event). A pass asks the store
for the expired runs in batches and deletes each through the run queue's ``delete`` (the
same path as ``DeleteLoadTestRun``), then has the store give the space back. A run that
cannot be deleted is logged and skipped for the rest of the pass; a pass that fails is
logged, and the loop goes on to the next one. Nothing here ever stops the master.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from chaperon.core.errors import NotFound
from master_service.store import Store

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class RetentionPolicy:
    """What the master keeps; None keeps everything by that rule (both None: keep all)."""

    keep_runs: int | None = None
    keep_days: float | None = None

    def __post_init__(self) -> None:
        if self.keep_runs is not None and self.keep_runs < 1:
            raise ValueError(
                f"keep_runs must be at least 1, not {self.keep_runs} (leave it out to keep "
                "every run)"
            )
        if self.keep_days is not None and not (
            math.isfinite(self.keep_days) and self.keep_days > 0
        ):
            raise ValueError(
                f"keep_days must be a number of days above 0, not {self.keep_days} (leave it "
                "out to keep runs of any age)"
            )

    @property
    def keeps_everything(self) -> bool:
        return self.keep_runs is None and self.keep_days is None

    def describe(self) -> str:
        """For the master's start-up line: ``keep all runs``, ``keep the last 100 runs``..."""
        parts = []
        if self.keep_runs is not None:
            parts.append(f"the last {self.keep_runs} runs")
        if self.keep_days is not None:
            parts.append(f"runs of the last {self.keep_days:g} days")
        return "keep " + (" and ".join(parts) if parts else "all runs")


class Retention:
    """The retention loop of one master; ``start`` it, ``poke`` it, ``stop`` it."""

    BATCH = 500

    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        delete: Callable[[str], object],
        terminal_states: tuple[int, ...],
        interval_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``delete(run_id)`` deletes one finished run (the run queue's); ``clock`` is wall
        time in seconds since the epoch, as the runs' ``finished_at``."""
        self.policy = policy
        self._store = store
        self._delete = delete
        self._terminal = terminal_states
        self._interval_s = interval_s
        self._clock = clock
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop (its first pass at once); nothing when the policy keeps all."""
        if self.policy.keeps_everything or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="chaperon-retention", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A run has ended: make a pass soon. Cheap, never raises, any thread."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the next pass may do better; never stop
                log.exception("the retention pass failed; trying again in %gs", self._interval_s)
            self._wake.wait(self._interval_s)

    def sweep(self) -> list[str]:
        """One pass: delete what the policy drops; return the ids deleted. Raises only when
        the store cannot say what has expired (a run that cannot be deleted is skipped)."""
        policy = self.policy
        if policy.keeps_everything:
            return []
        cutoff_s = (
            self._clock() - policy.keep_days * SECONDS_PER_DAY
            if policy.keep_days is not None
            else None
        )
        deleted: list[str] = []
        skipped: set[str] = set()
        try:
            while not self._stopped.is_set():
                expired = self._store.expired_runs(
                    self._terminal, policy.keep_runs, cutoff_s, limit=self.BATCH + len(skipped)
                )
                todo = [run_id for run_id in expired if run_id not in skipped]
                if not todo:
                    break
                for run_id in todo:
                    if self._stopped.is_set():
                        break
                    try:
                        self._delete(run_id)
                    except NotFound:
                        pass  # deleted meanwhile (DeleteLoadTestRun)
                    except Exception:  # noqa: BLE001 - one run must not stop the others
                        log.exception("retention: could not delete run %s; skipped", run_id)
                        skipped.add(run_id)
                    else:
                        deleted.append(run_id)
        finally:
            if deleted:
                log.info("retention: deleted %d runs (%s)", len(deleted), policy.describe())
                self._store.reclaim_space()
        return deleted
