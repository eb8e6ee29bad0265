"""The AuditLog port on SQLite (in the events file, next to what it audits).

The ``event_hash`` column came later: a table without it gains it on open, and its old rows read
back with ``event_hash`` None (records of the older format, which still verify as a chain).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fxcrm_core.access.audit import AuditRecord, check_continues
from fxcrm_core.kernel.time import from_micros, to_micros
from fxcrm_core.stores.sqlite import SqliteDatabase

__all__ = ["SqliteAuditLog"]

_COLUMNS = "seq, position, at, actor, action, target, correlation_id, prev_hash, hash, event_hash"


def _record(
    r: tuple[int, int, int, str, str, str, str | None, str, str, str | None],
) -> AuditRecord:
    return AuditRecord(r[0], r[1], from_micros(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9])


class SqliteAuditLog:
    """Audit records in the ``fx_audit`` table; an append that does not continue the log (another
    process audited first) writes nothing and raises ConcurrencyError."""

    def __init__(self, path: str | Path | SqliteDatabase) -> None:
        self.db = path if isinstance(path, SqliteDatabase) else SqliteDatabase(path)
        with self.db.write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS fx_audit (row INTEGER PRIMARY KEY, seq INTEGER NOT "
                "NULL, position INTEGER NOT NULL, at INTEGER NOT NULL, actor TEXT NOT NULL, "
                "action TEXT NOT NULL, target TEXT NOT NULL, correlation_id TEXT, "
                "prev_hash TEXT NOT NULL, hash TEXT NOT NULL, event_hash TEXT)"
            )
            columns = {row[1] for row in conn.execute("PRAGMA table_info(fx_audit)")}
            if "event_hash" not in columns:  # a file from before records bound their events
                conn.execute("ALTER TABLE fx_audit ADD COLUMN event_hash TEXT")

    def append(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return
        with self.db.write() as conn:
            row = conn.execute("SELECT seq FROM fx_audit ORDER BY row DESC LIMIT 1").fetchone()
            check_continues(row[0] if row else 0, records)
            conn.executemany(
                f"INSERT INTO fx_audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                [
                    (
                        r.seq,
                        r.position,
                        to_micros(r.at),
                        r.actor,
                        r.action,
                        r.target,
                        r.correlation_id,
                        r.prev_hash,
                        r.hash,
                        r.event_hash,
                    )
                    for r in records
                ],
            )

    def records(self) -> list[AuditRecord]:
        cur = self.db.connection().execute(
            f"SELECT {_COLUMNS} FROM fx_audit ORDER BY row"  # noqa: S608
        )
        return [_record(r) for r in cur]

    def last(self) -> AuditRecord | None:
        row = (
            self.db.connection()
            .execute(f"SELECT {_COLUMNS} FROM fx_audit ORDER BY row DESC LIMIT 1")  # noqa: S608
            .fetchone()
        )
        return _record(row) if row else None
