"""The AuditLog port on PostgreSQL (``fx_audit``, next to the events it audits), with the
semantics of the SQLite one: records read back in the order they were written (``row``), and an
append that does not continue the log writes nothing and raises ConcurrencyError.

Many processes append at once without a lock: an append checks that its first record follows
the last one committed, and ``seq`` is UNIQUE. Two appends that read the same end both write
its next seq, so the later one waits for the earlier to commit and then fails on that seq: its
transaction rolls back whole and it raises ConcurrencyError (the trail re-reads and goes on from
the winner's end). If the earlier one rolls back instead, the later one goes through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors

from fxcrm_core.access.audit import AuditRecord, check_continues
from fxcrm_core.kernel.errors import ConcurrencyError, StoreError, ValidationError
from fxcrm_core.kernel.time import from_micros, to_micros
from fxcrm_core.stores.postgres._db import OnDatabase

__all__ = ["COPY_FROM", "PostgresAuditLog"]

COPY_FROM = 32  # an append of at least this many records goes in by COPY

_COLUMNS = "seq, position, at, actor, action, target, correlation_id, prev_hash, hash, event_hash"
_INSERT = f"INSERT INTO fx_audit ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"  # noqa: S608
_COPY = f"COPY fx_audit ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ("int8", "int8", "int8", "text", "text", "text", "text", "text", "text", "text")
_LAST = f"SELECT {_COLUMNS} FROM fx_audit ORDER BY row DESC LIMIT 1"  # noqa: S608

Row = tuple[Any, ...]
_Params = tuple[int, int, int, str, str, str, str | None, str, str, str | None]


def _record(r: Row) -> AuditRecord:
    try:
        return AuditRecord(
            int(r[0]),
            int(r[1]),
            from_micros(int(r[2])),
            str(r[3]),
            str(r[4]),
            str(r[5]),
            None if r[6] is None else str(r[6]),
            str(r[7]),
            str(r[8]),
            None if r[9] is None else str(r[9]),
        )
    except (ValidationError, TypeError, ValueError, OverflowError):
        raise StoreError("the PostgreSQL audit table holds a row that is not a record") from None


def _params(r: AuditRecord) -> _Params:
    return (
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


class PostgresAuditLog(OnDatabase):
    """Audit records in the ``fx_audit`` table of a migrated PostgreSQL database.

    ``db``: a :class:`PostgresDatabase` (shared: the caller closes it), or a connection string
    (this log opens a database of its own and :meth:`close` closes it).
    """

    def append(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return
        rows = [_params(r) for r in records]
        with self.db.transaction() as conn:
            row = conn.execute("SELECT seq FROM fx_audit ORDER BY row DESC LIMIT 1").fetchone()
            check_continues(int(row[0]) if row else 0, records)
            try:
                self._insert(conn, rows)
            except psycopg.errors.UniqueViolation:
                # Another process appended from the same end and committed first. Raised inside
                # the transaction: it rolls back, none of these records is written.
                raise ConcurrencyError(
                    "the audit log grew since it was read (another writer audited these "
                    "events); nothing was written"
                ) from None

    def _insert(self, conn: psycopg.Connection[Row], rows: list[_Params]) -> None:
        with conn.cursor() as cur:
            if len(rows) >= COPY_FROM:
                with cur.copy(_COPY) as copy:
                    copy.set_types(list(_COPY_TYPES))
                    for r in rows:
                        copy.write_row(r)
            else:
                cur.executemany(_INSERT, rows)

    def records(self) -> list[AuditRecord]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM fx_audit ORDER BY row"  # noqa: S608
            ).fetchall()
        return [_record(r) for r in rows]

    def last(self) -> AuditRecord | None:
        with self.db.transaction() as conn:
            row = conn.execute(_LAST).fetchone()
        return _record(row) if row else None
