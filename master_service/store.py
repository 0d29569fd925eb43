"""Where runs live: an interface and its SQLite implementation (stdlib sqlite3, WAL).

A run is stored as its ``LoadTestRun`` message (serialized) plus the columns the queue needs
(state, submission order). Per-interval worker deltas are appended to their own table so a
run's partial metrics survive a crash of the master. One connection, guarded by a lock.

Deltas come often (one per worker per second: a thousand a second on a big cluster), so they
are queued and written by a background thread, many in one transaction, every
``FLUSH_INTERVAL_S``. ``add_delta`` returns a future that is resolved once the delta's
transaction has committed (or failed): the scheduler merges a delta, and so lets anyone see
it, only after that, so a figure the master has shown is always in the database and survives
``kill -9``. A crash loses only deltas that were received but not yet committed, which no one
has seen. Reading deltas flushes first. Run states are written at once. A stored run whose
bytes no longer decode raises ``UnreadableRun`` naming it, so a caller can set it aside.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Protocol

from chaperon.core.health import ServiceHealth
from chaperon.v1 import results_pb2

log = logging.getLogger(__name__)

# The name under which a writer that cannot commit is reported to the service's health.
WRITER_COMPONENT = "the store writer"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    state INTEGER NOT NULL,
    run BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_state ON runs(state, seq);
CREATE TABLE IF NOT EXISTS deltas (
    run_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    report BLOB NOT NULL,
    PRIMARY KEY (run_id, assignment_id, sequence)
);
"""


class StoreUnavailable(OSError):
    """The database file cannot be opened or is not a database the master can use."""


def _open(path: str) -> sqlite3.Connection:
    """The connection, in WAL mode, with the schema; StoreUnavailable saying why if not."""
    db = None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        # A file with our tables but other columns (another program's, an old layout).
        db.execute("SELECT seq, id, state, run FROM runs LIMIT 0")
        db.execute("SELECT run_id, worker_id, assignment_id, sequence, report FROM deltas LIMIT 0")
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise StoreUnavailable(f"cannot use {path!r} as the master's database: {exc}") from None
    return db


class UnreadableRun(Exception):
    """A stored run's bytes do not decode (a damaged row); ``run_id`` names it."""

    def __init__(self, run_id: str, cause: Exception) -> None:
        super().__init__(f"stored run {run_id!r} does not decode: {cause}")
        self.run_id = run_id


class Store(Protocol):
    def put_run(self, run: results_pb2.LoadTestRun) -> None: ...
    def get_run(self, run_id: str) -> results_pb2.LoadTestRun | None: ...
    def list_runs(
        self, states: Iterable[int] = (), after_seq: int = 0, limit: int = 100
    ) -> list[tuple[int, results_pb2.LoadTestRun]]: ...
    def next_scheduled(self) -> results_pb2.LoadTestRun | None: ...
    def count(self, state: int | None = None) -> int: ...
    def add_delta(
        self, run_id: str, worker_id: str, sequence: int, report: bytes, assignment_id: str = ""
    ) -> Future[None]: ...
    def deltas(self, run_id: str) -> list[tuple[str, int, bytes]]: ...
    def close(self) -> None: ...


class SqliteStore:
    """The Store on one SQLite file (``:memory:`` for tests)."""

    FLUSH_INTERVAL_S = 0.25

    def __init__(self, path: str, health: ServiceHealth | None = None) -> None:
        self._health = health or ServiceHealth()
        self._lock = threading.Lock()
        self._db = _open(path)
        self._pending: list[tuple[tuple[str, str, str, int, bytes], Future[None]]] = []
        self._pending_lock = threading.Lock()
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        while not self._closed.wait(self.FLUSH_INTERVAL_S):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the batch's futures carry the error; go on
                log.exception("writing a batch of deltas failed")

    def flush(self) -> None:
        """Write the queued deltas in one transaction, then resolve their futures (with the
        error if the transaction failed, which is also raised)."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO deltas "
                        "(run_id, worker_id, assignment_id, sequence, report) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [row for row, _ in batch],
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except BaseException as exc:
            self._health.fail(WRITER_COMPONENT, f"cannot store workers' reports: {exc}")
            for _, stored in batch:
                stored.set_exception(exc)
            raise
        self._health.ok(WRITER_COMPONENT)
        for _, stored in batch:
            stored.set_result(None)

    def put_run(self, run: results_pb2.LoadTestRun) -> None:
        blob = run.SerializeToString()
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (id, state, run) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state, run = excluded.run",
                (run.id, int(run.state), blob),
            )

    def get_run(self, run_id: str) -> results_pb2.LoadTestRun | None:
        with self._lock:
            row = self._db.execute("SELECT run FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _decode(run_id, row[0]) if row else None

    def list_runs(
        self, states: Iterable[int] = (), after_seq: int = 0, limit: int = 100
    ) -> list[tuple[int, results_pb2.LoadTestRun]]:
        wanted = sorted({int(s) for s in states})
        sql = "SELECT seq, id, run FROM runs WHERE seq > ?"
        args: list[object] = [after_seq]
        if wanted:
            sql += f" AND state IN ({','.join('?' * len(wanted))})"
            args.extend(wanted)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [(seq, _decode(run_id, blob)) for seq, run_id, blob in rows]

    def next_scheduled(self) -> results_pb2.LoadTestRun | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, run FROM runs WHERE state = ? ORDER BY seq LIMIT 1",
                (results_pb2.SCHEDULED,),
            ).fetchone()
        return _decode(row[0], row[1]) if row else None

    def count(self, state: int | None = None) -> int:
        with self._lock:
            if state is None:
                return int(self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
            return int(
                self._db.execute("SELECT COUNT(*) FROM runs WHERE state = ?", (state,)).fetchone()[
                    0
                ]
            )

    def add_delta(
        self, run_id: str, worker_id: str, sequence: int, report: bytes, assignment_id: str = ""
    ) -> Future[None]:
        """Queue one report, written within FLUSH_INTERVAL_S; the future resolves when it is
        committed. A worker may hold several assignments of a run (a takeover)."""
        row = (run_id, worker_id, assignment_id or worker_id, sequence, report)
        stored: Future[None] = Future()
        with self._pending_lock:
            if self._closed.is_set():
                stored.set_exception(RuntimeError("the store is closed"))
            else:
                self._pending.append((row, stored))
        return stored

    def deltas(self, run_id: str) -> list[tuple[str, int, bytes]]:
        self.flush()
        with self._lock:
            rows = self._db.execute(
                "SELECT worker_id, sequence, report FROM deltas WHERE run_id = ? "
                "ORDER BY worker_id, assignment_id, sequence",
                (run_id,),
            ).fetchall()
        return [(w, s, r) for w, s, r in rows]

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._writer.join(5)
        self.flush()
        with self._lock:
            self._db.close()


def _decode(run_id: str, blob: bytes) -> results_pb2.LoadTestRun:
    run = results_pb2.LoadTestRun()
    try:
        run.ParseFromString(blob)
    except Exception as exc:  # noqa: BLE001 - DecodeError, or whatever a damaged row raises
        raise UnreadableRun(run_id, exc) from exc
    return run
