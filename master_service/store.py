"""Where runs live: an interface and its SQLite implementation (stdlib sqlite3, WAL).

A run is stored as its ``LoadTestRun`` message (serialized) plus the columns the queue and the
retention need (state, submission order, when it finished). Per-interval worker deltas are
appended to their own table so a run's partial metrics survive a crash of the master. One
connection, guarded by a lock.

Deltas come often (one per worker per second: a thousand a second on a big cluster), so they
are queued and written by a background thread, many in one transaction, every
``FLUSH_INTERVAL_S``. ``add_delta`` returns a future that is resolved once the delta's
transaction has committed (or failed): the scheduler merges a delta, and so lets anyone see
it, only after that, so a figure the master has shown is always in the database and survives
``kill -9``. A crash loses only deltas that were received but not yet committed, which no one
has seen. Reading deltas flushes first. Run states are written at once. A stored run whose
bytes no longer decode raises ``UnreadableRun`` naming it, so a caller can set it aside.

Deleting a run (``delete_run``) removes its row and its deltas in one transaction; a delta
still queued for a run the store no longer holds is dropped when its batch is written, so
nothing of a deleted run comes back. Space is given back: a new database is created with
``auto_vacuum=INCREMENTAL`` and ``reclaim_space`` returns its free pages to the file system
(the file shrinks at the next WAL checkpoint, which it runs). A database created before that
(``auto_vacuum=NONE``) reuses its free pages for new runs but does not shrink; ``sqlite3 FILE
'PRAGMA auto_vacuum=INCREMENTAL; VACUUM'`` with the master stopped converts it. Older
databases without the ``finished_at`` column get it when they are opened, filled in from the
stored runs.
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
    run BLOB NOT NULL,
    -- The run's finished_at in seconds since the epoch; NULL until it has one.
    finished_at REAL
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


# The WAL file is cut back to this size when it is reused after a checkpoint (it would keep
# the size of its largest transaction, a big deletion's, for ever otherwise).
WAL_SIZE_LIMIT_BYTES = 8 * 1024 * 1024


def _open(path: str) -> sqlite3.Connection:
    """The connection, in WAL mode, with the schema; StoreUnavailable saying why if not."""
    db = None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            # Only a database with no table yet can take it (others need a VACUUM).
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        db.executescript(_SCHEMA)
        # A file with our tables but other columns (another program's, an old layout).
        db.execute("SELECT seq, id, state, run FROM runs LIMIT 0")
        db.execute("SELECT run_id, worker_id, assignment_id, sequence, report FROM deltas LIMIT 0")
        _add_finished_at(db)
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise StoreUnavailable(f"cannot use {path!r} as the master's database: {exc}") from None
    return db


def _add_finished_at(db: sqlite3.Connection) -> None:
    """Give a database of an older master the ``finished_at`` column, filled in from the
    runs' own ``finished_at`` (a run that does not decode keeps NULL), and its index."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    if "finished_at" not in columns:
        db.execute("BEGIN")
        try:
            db.execute("ALTER TABLE runs ADD COLUMN finished_at REAL")
            rows = db.execute("SELECT id, run FROM runs").fetchall()
            for run_id, blob in rows:
                try:
                    finished_at_s = _finished_at_s(_decode(run_id, blob))
                except UnreadableRun:
                    continue
                if finished_at_s is not None:
                    db.execute(
                        "UPDATE runs SET finished_at = ? WHERE id = ?", (finished_at_s, run_id)
                    )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    db.execute("CREATE INDEX IF NOT EXISTS runs_finished ON runs(finished_at)")


def _finished_at_s(run: results_pb2.LoadTestRun) -> float | None:
    return run.finished_at.ToNanoseconds() / 1e9 if run.HasField("finished_at") else None


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
    def runs_ahead(self, run_id: str) -> int: ...
    def add_delta(
        self, run_id: str, worker_id: str, sequence: int, report: bytes, assignment_id: str = ""
    ) -> Future[None]: ...
    def deltas(self, run_id: str) -> list[tuple[str, int, bytes]]: ...
    def run_state(self, run_id: str) -> int | None: ...
    def delete_run(self, run_id: str) -> bool: ...
    def expired_runs(
        self,
        states: Iterable[int],
        keep_runs: int | None = None,
        finished_before_s: float | None = None,
        limit: int = 1000,
    ) -> list[str]: ...
    def reclaim_space(self) -> None: ...
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
                    # Only runs the store holds: a delta that comes after its run was deleted
                    # is dropped, not left behind without its run.
                    run_ids = sorted({row[0] for row, _ in batch})
                    known = {
                        r[0]
                        for r in self._db.execute(
                            f"SELECT id FROM runs WHERE id IN ({','.join('?' * len(run_ids))})",
                            run_ids,
                        )
                    }
                    self._db.executemany(
                        "INSERT OR REPLACE INTO deltas "
                        "(run_id, worker_id, assignment_id, sequence, report) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [row for row, _ in batch if row[0] in known],
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
                "INSERT INTO runs (id, state, run, finished_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state, run = excluded.run, "
                "finished_at = excluded.finished_at",
                (run.id, int(run.state), blob, _finished_at_s(run)),
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

    def runs_ahead(self, run_id: str) -> int:
        """Runs RUNNING or SCHEDULED stored before ``run_id`` (0 for an unknown id)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM runs WHERE state IN (?, ?) "
                "AND seq < (SELECT seq FROM runs WHERE id = ?)",
                (results_pb2.RUNNING, results_pb2.SCHEDULED, run_id),
            ).fetchone()
        return int(row[0])

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

    def run_state(self, run_id: str) -> int | None:
        """The stored state of a run (from its column: also for a run that does not decode);
        None when there is no such run."""
        with self._lock:
            row = self._db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
        return int(row[0]) if row else None

    def delete_run(self, run_id: str) -> bool:
        """Delete the run and its deltas in one transaction; False when there was no such
        run. Deltas still queued for it are written first, and so deleted with it."""
        self.flush()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM deltas WHERE run_id = ?", (run_id,))
                deleted = self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return deleted > 0

    def expired_runs(
        self,
        states: Iterable[int],
        keep_runs: int | None = None,
        finished_before_s: float | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """Ids of runs in ``states`` past the newest ``keep_runs`` of them (by submission) or
        finished before ``finished_before_s`` (seconds since the epoch), oldest first, at most
        ``limit``. A run without a finished time is never old."""
        wanted = sorted({int(s) for s in states})
        if not wanted or (keep_runs is None and finished_before_s is None):
            return []
        in_states = f"state IN ({','.join('?' * len(wanted))})"
        found: dict[int, str] = {}
        with self._lock:
            if keep_runs is not None:
                # Below the oldest run kept, everything in those states goes.
                below: int | None = 2**63 - 1
                if keep_runs > 0:
                    oldest_kept = self._db.execute(
                        f"SELECT seq FROM runs WHERE {in_states} "
                        "ORDER BY seq DESC LIMIT 1 OFFSET ?",
                        [*wanted, keep_runs - 1],
                    ).fetchone()
                    below = oldest_kept[0] if oldest_kept else None
                if below is not None:
                    rows = self._db.execute(
                        f"SELECT seq, id FROM runs WHERE {in_states} AND seq < ? "
                        "ORDER BY seq LIMIT ?",
                        [*wanted, below, limit],
                    ).fetchall()
                    found.update(rows)
            if finished_before_s is not None:
                rows = self._db.execute(
                    f"SELECT seq, id FROM runs WHERE {in_states} AND finished_at < ? "
                    "ORDER BY seq LIMIT ?",
                    [*wanted, finished_before_s, limit],
                ).fetchall()
                found.update(rows)
        return [found[seq] for seq in sorted(found)[:limit]]

    def reclaim_space(self) -> None:
        """Give the pages of deleted runs back to the file system: the free pages go to the
        end of the file and are cut off (``incremental_vacuum``; nothing on a database
        created without ``auto_vacuum``), then a checkpoint writes that to the file."""
        with self._lock:
            # executescript steps the pragma to its end; execute() would free one page.
            self._db.executescript("PRAGMA incremental_vacuum;")
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

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
