"""SQLite adapters of the storage ports: the embedded default (one file, WAL, stdlib sqlite3).

Writers take the database's write lock up front (``BEGIN IMMEDIATE``), check versions, insert,
and commit, so concurrent writers in threads or processes serialise and global positions are
handed out in commit order (a reader following positions never skips a late commit).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
from pathlib import Path
from types import TracebackType
from typing import Literal

from fxcrm_core.events.store import (
    AppendResult,
    Snapshot,
    StoredEvent,
    StreamAppend,
    append_digest,
    check_appends,
    replay_result,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ConcurrencyError, StoreError, ValidationError
from fxcrm_core.kernel.time import from_micros, to_micros

__all__ = ["SqliteDatabase", "SqliteEventStore"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS fx_events (
    position    INTEGER PRIMARY KEY,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    metadata    BLOB    NOT NULL,
    recorded_at INTEGER NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS fx_idempotency (
    key    TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fx_checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fx_snapshots (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL,
    state     BLOB NOT NULL
);
"""

_INSERT = (
    "INSERT INTO fx_events (stream_id, version, event_type, data, metadata, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "position, stream_id, version, event_type, data, metadata, recorded_at"


_HEADS_CHUNK = 200  # streams read by one statement (SQLite caps a query's terms)
_HEAD = "(SELECT coalesce(max(version), 0) FROM fx_events WHERE stream_id = ?)"


@functools.lru_cache(maxsize=64)
def _heads_query(streams: int) -> str:
    """One row: the version of each of ``streams`` streams, then the log's last position. Each
    term reads the end of an index, like ``max`` alone; one statement costs far less than one
    per stream."""
    heads = ", ".join([_HEAD] * streams)
    return f"SELECT {heads}, (SELECT coalesce(max(position), 0) FROM fx_events)"  # noqa: S608


def _heads(conn: sqlite3.Connection, stream_ids: list[str]) -> tuple[list[int], int]:
    """The streams' versions and the log's last position, read in the caller's transaction."""
    versions: list[int] = []
    last = 0
    for start in range(0, len(stream_ids), _HEADS_CHUNK):
        chunk = stream_ids[start : start + _HEADS_CHUNK]
        *heads, last = conn.execute(_heads_query(len(chunk)), chunk).fetchone()
        versions += heads
    return versions, last


class _Write:
    """The write transaction of :meth:`SqliteDatabase.write` (a class: cheaper than a
    generator-based context manager on the append path)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # busy, or a damaged file
            raise StoreError(f"cannot start a write transaction: {exc}") from None
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        if exc_type is not None:
            _rollback(conn)
            if isinstance(exc, sqlite3.Error):  # a full disk, an I/O error: the cause, typed
                raise StoreError(f"write failed, nothing was written: {exc}") from None
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreError(f"commit failed, nothing was written: {exc}") from None


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open. SQLite ends the transaction itself on some
    errors (SQLITE_FULL, SQLITE_IOERR); a failed ROLLBACK must not hide the error that caused
    it, which the caller raises."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


_TYPES_MAX = 200  # more types than this: read the tail and filter here (SQLite caps terms)


@functools.lru_cache(maxsize=64)
def _typed_query(types: int) -> str:
    """Rows of ``types`` event types in (after, head], in position order, at most a limit.
    The table is walked by its primary key from ``after`` on; only ``event_type`` is compared
    for a row left out, and its data is never copied out of SQLite."""
    marks = ", ".join(["?"] * types)
    return (
        f"SELECT {_COLUMNS} FROM fx_events "  # noqa: S608
        f"WHERE position > ? AND position <= ? AND event_type IN ({marks}) "
        "ORDER BY position LIMIT ?"
    )


def _row(r: tuple[int, str, int, str, bytes, bytes, int]) -> StoredEvent:
    return StoredEvent(r[0], r[1], r[2], r[3], r[4], r[5], from_micros(r[6]))


def _damaged(exc: Exception) -> StoreError:
    """The typed error for a read that failed: SQLite's own message (a damaged page, an I/O
    error) or, for a row whose time is no time, a fixed one; never a row's contents."""
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"cannot read the SQLite database: {exc}")
    return StoreError("the SQLite database holds a row that is not a stored event")


# A read fails with these on a damaged file, or on a row written by hand (an out-of-range time).
_READ_ERRORS = (sqlite3.Error, ValidationError, TypeError, OverflowError)


def _select(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[StoredEvent]:
    try:
        return [_row(r) for r in conn.execute(sql, params)]
    except _READ_ERRORS as exc:
        raise _damaged(exc) from None


class SqliteDatabase:
    """One SQLite file shared by the stores built on it; one connection per thread.

    ``synchronous="FULL"`` (the default) makes every commit durable across power loss;
    ``"NORMAL"`` is durable across application crashes only, and faster.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 30_000,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValidationError("synchronous must be FULL or NORMAL")
        self.path = str(path)
        self.synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._lock:
            conn = self.connection()
            try:
                conn.executescript(_SCHEMA)
            except sqlite3.Error as exc:  # not a database, a damaged one, a read-only file
                self.close()
                raise StoreError(f"cannot open SQLite database: {exc}") from None

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                    check_same_thread=False,
                    timeout=self._busy_timeout_ms / 1000,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
                # Overwrite deleted content (destroyed keys, replaced snapshots) with zeros.
                conn.execute("PRAGMA secure_delete=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite database: {exc}") from None
            self._local.conn = conn
            self._all.append(conn)
        return conn

    def write(self) -> _Write:
        """A write transaction holding the database's write lock from the start."""
        return _Write(self.connection())

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and truncate it (after destroying key bytes)."""
        try:
            self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"checkpoint failed: {exc}") from None

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._local = threading.local()

    # The checkpoint and snapshot ports live in the same file, next to the events.
    def get_checkpoint(self, name: str) -> int:
        try:
            row = (
                self.connection()
                .execute("SELECT position FROM fx_checkpoints WHERE name = ?", (name,))
                .fetchone()
            )
            return int(row[0]) if row else 0
        except (sqlite3.Error, TypeError, ValueError) as exc:
            raise _damaged(exc) from None

    def set_checkpoint(self, name: str, position: int) -> None:
        with self.write() as conn:
            conn.execute(
                "INSERT INTO fx_checkpoints (name, position) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                (name, position),
            )

    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self.write() as conn:
            conn.execute(
                "INSERT INTO fx_snapshots (stream_id, version, state) VALUES (?, ?, ?) "
                "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
                "state = excluded.state",
                snapshot,
            )

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        try:
            row = (
                self.connection()
                .execute(
                    "SELECT stream_id, version, state FROM fx_snapshots WHERE stream_id = ?",
                    (stream_id,),
                )
                .fetchone()
            )
            return Snapshot(row[0], row[1], bytes(row[2])) if row else None
        except (sqlite3.Error, TypeError) as exc:
            raise _damaged(exc) from None

    def delete_snapshot(self, stream_id: str) -> None:
        with self.write() as conn:
            conn.execute("DELETE FROM fx_snapshots WHERE stream_id = ?", (stream_id,))


class SqliteEventStore:
    """The EventStore port on a SQLite file.

    >>> import tempfile, os
    >>> from fxcrm_core.events import NewEvent, StreamAppend
    >>> store = SqliteEventStore(os.path.join(tempfile.mkdtemp(), "log.sqlite"))
    >>> store.append(StreamAppend("wallet-1", 0, [NewEvent("Opened", b"{}", b"{}")])).versions
    {'wallet-1': 1}
    >>> store.close()
    """

    def __init__(
        self,
        path: str | Path | SqliteDatabase,
        *,
        clock: Clock | None = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        self.db = (
            path
            if isinstance(path, SqliteDatabase)
            else SqliteDatabase(path, synchronous=synchronous)
        )
        self._clock = clock or SystemClock()

    def close(self) -> None:
        self.db.close()

    def append(self, *appends: StreamAppend, idempotency_key: str | None = None) -> AppendResult:
        check_appends(appends)
        digest = append_digest(appends) if idempotency_key is not None else b""
        recorded = to_micros(self._clock.now())
        with _Write(self.db.connection()) as conn:
            if idempotency_key is not None:
                found = conn.execute(
                    "SELECT digest, result FROM fx_idempotency WHERE key = ?", (idempotency_key,)
                ).fetchone()
                if found is not None:
                    try:
                        doc = json.loads(found[1])
                        previous = AppendResult(doc["last_position"], doc["versions"])
                        stored_digest = bytes(found[0])
                    except (ValueError, LookupError, TypeError, RecursionError):
                        raise StoreError("a stored idempotency record is corrupt") from None
                    return replay_result(stored_digest, previous, digest)
            # One statement reads every stream's version and the log's last position.
            stream_ids = [a.stream_id for a in appends]
            if len(stream_ids) <= _HEADS_CHUNK:
                *heads, before = conn.execute(_heads_query(len(stream_ids)), stream_ids).fetchone()
            else:
                heads, before = _heads(conn, stream_ids)
            rows: list[tuple[str, int, str, bytes, bytes, int]] = []
            versions: dict[str, int] = {}
            for a, current in zip(appends, heads, strict=True):
                if a.expected_version is not None and current != a.expected_version:
                    raise ConcurrencyError(
                        f"stream {a.stream_id} is at version {current}, "
                        f"expected {a.expected_version}; nothing was written"
                    )
                for e in a.events:
                    current += 1
                    rows.append((a.stream_id, current, e.event_type, e.data, e.metadata, recorded))
                versions[a.stream_id] = current
            try:
                conn.executemany(_INSERT, rows)
            except sqlite3.IntegrityError:
                # Only reachable if another writer bypassed the write lock.
                raise ConcurrencyError("a stream changed during the append") from None
            # Under the write lock SQLite numbers new rows from the largest position on, one by
            # one (an INTEGER PRIMARY KEY without AUTOINCREMENT), so ours end here.
            last = before + len(rows)
            result = AppendResult(last, versions)
            if idempotency_key is not None:
                conn.execute(
                    "INSERT INTO fx_idempotency (key, digest, result) VALUES (?, ?, ?)",
                    (
                        idempotency_key,
                        digest,
                        json.dumps({"last_position": last, "versions": versions}),
                    ),
                )
        return result

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        return _select(
            self.db.connection(),
            f"SELECT {_COLUMNS} FROM fx_events WHERE stream_id = ? AND version > ? "  # noqa: S608
            "ORDER BY version",
            (stream_id, after_version),
        )

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        return _select(
            self.db.connection(),
            f"SELECT {_COLUMNS} FROM fx_events WHERE position > ? "  # noqa: S608
            "ORDER BY position LIMIT ?",
            (after_position, limit),
        )

    def read_all_of_types(
        self, after_position: int, types: frozenset[str], limit: int
    ) -> tuple[list[StoredEvent], int]:
        """The events of ``types`` among those :meth:`read_all` would return from
        ``after_position`` on, up to ``limit`` of them, and the position read up to: every
        event of those types in (``after_position``, that position] is in the list.

        An optional capability (not part of the EventStore port): runners that want a few
        types use it, when a store has it, to skip the rest without fetching them.

        The head is read first, then the rows up to it. Writers hold the write lock from
        before they read the last position until their commit, so positions become visible
        in order: once a head H is visible, every row at or below H is committed (a rolled
        back write leaves no row and its positions are handed out again, above H at the
        earliest). The second statement, started later, therefore sees every row up to H, and
        ``position <= H`` keeps out rows committed between the two, which the next read
        (from H on) finds: none is skipped, none is read twice.
        """
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        try:
            return self._read_all_of_types(after_position, types, limit)
        except _READ_ERRORS as exc:
            raise _damaged(exc) from None

    def _read_all_of_types(
        self, after_position: int, types: frozenset[str], limit: int
    ) -> tuple[list[StoredEvent], int]:
        conn = self.db.connection()
        (head,) = conn.execute("SELECT coalesce(max(position), 0) FROM fx_events").fetchone()
        head = max(int(head), after_position)
        if not types or head == after_position:
            return [], head
        if len(types) > _TYPES_MAX:
            cur = conn.execute(
                f"SELECT {_COLUMNS} FROM fx_events "  # noqa: S608
                "WHERE position > ? AND position <= ? ORDER BY position",
                (after_position, head),
            )
            found = []
            for r in cur:
                if r[3] in types:
                    found.append(_row(r))
                    if len(found) == limit:
                        cur.close()
                        return found, found[-1].position
            return found, head
        cur = conn.execute(_typed_query(len(types)), (after_position, head, *sorted(types), limit))
        rows = [_row(r) for r in cur]
        return rows, (rows[-1].position if len(rows) == limit else head)

    def stream_version(self, stream_id: str) -> int:
        try:
            (version,) = (
                self.db.connection()
                .execute(
                    "SELECT coalesce(max(version), 0) FROM fx_events WHERE stream_id = ?",
                    (stream_id,),
                )
                .fetchone()
            )
            return int(version)
        except (sqlite3.Error, TypeError, ValueError) as exc:
            raise _damaged(exc) from None

    def last_position(self) -> int:
        try:
            (last,) = (
                self.db.connection()
                .execute("SELECT coalesce(max(position), 0) FROM fx_events")
                .fetchone()
            )
            return int(last)
        except sqlite3.Error as exc:
            raise _damaged(exc) from None
