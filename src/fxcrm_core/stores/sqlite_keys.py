"""The KeyStore port on SQLite. Keep it in its own file, apart from the events, and back it up on
a shorter schedule: a destroyed key must also age out of the backups for erasure to hold."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from fxcrm_core.kernel.errors import StoreError, ValidationError
from fxcrm_core.kernel.time import from_micros, to_micros
from fxcrm_core.privacy.keys import WrappedKey
from fxcrm_core.stores.sqlite import SqliteDatabase

__all__ = ["SqliteKeyStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fx_data_keys (
    subject_id    TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    destroyed_at  INTEGER
)
"""
_COLUMNS = "subject_id, key_id, master_key_id, wrapped, created_at, destroyed_at"


def _key(row: tuple[str, str, str, bytes, int, int | None]) -> WrappedKey:
    destroyed = None if row[5] is None else from_micros(row[5])
    return WrappedKey(row[0], row[1], row[2], bytes(row[3]), from_micros(row[4]), destroyed)


class SqliteKeyStore:
    """Wrapped data keys in a SQLite file. A destroyed key is overwritten in place and the WAL
    folded into the file and truncated; if other connections keep the WAL busy for longer than
    ``checkpoint_wait`` seconds, :meth:`destroy` raises :class:`StoreError` (call it again once
    they are done) rather than leave the old key bytes in the WAL."""

    def __init__(self, path: str | Path | SqliteDatabase, *, checkpoint_wait: float = 5.0) -> None:
        if isinstance(checkpoint_wait, bool) or not 0 <= checkpoint_wait <= 3600:
            raise ValidationError("checkpoint_wait is seconds, between 0 and 3600")
        self.checkpoint_wait = float(checkpoint_wait)
        self.db = path if isinstance(path, SqliteDatabase) else SqliteDatabase(path)
        with self.db.write() as conn:
            conn.execute(_SCHEMA)

    def get(self, subject_id: str) -> WrappedKey | None:
        row = (
            self.db.connection()
            .execute(
                f"SELECT {_COLUMNS} FROM fx_data_keys WHERE subject_id = ?",  # noqa: S608
                (subject_id,),
            )
            .fetchone()
        )
        return _key(row) if row else None

    def put_new(self, key: WrappedKey) -> WrappedKey:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO fx_data_keys (subject_id, key_id, master_key_id, wrapped, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (subject_id) DO NOTHING",
                (
                    key.subject_id,
                    key.key_id,
                    key.master_key_id,
                    key.wrapped,
                    to_micros(key.created_at),
                ),
            )
        stored = self.get(key.subject_id)
        assert stored is not None
        return stored

    def destroy(self, subject_id: str, at: datetime) -> bool:
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT destroyed_at FROM fx_data_keys WHERE subject_id = ?", (subject_id,)
            ).fetchone()
            already = row is not None and row[0] is not None
            if not already:
                conn.execute(
                    "INSERT INTO fx_data_keys (subject_id, key_id, master_key_id, wrapped, "
                    "created_at, destroyed_at) VALUES (?, '', '', x'', ?, ?) "
                    "ON CONFLICT (subject_id) DO UPDATE SET wrapped = x'', "
                    "destroyed_at = excluded.destroyed_at",
                    (subject_id, to_micros(at), to_micros(at)),
                )
        # Also after an earlier call that destroyed the key but could not checkpoint.
        self._checkpoint()
        return not already

    def _checkpoint(self) -> None:
        """Fold the WAL into the file and truncate it, retrying while other connections read;
        StoreError if it still cannot complete (the old key bytes would stay in the WAL)."""
        conn = self.db.connection()
        deadline = time.monotonic() + self.checkpoint_wait
        (saved,) = conn.execute("PRAGMA busy_timeout").fetchone()
        try:
            while True:
                left = deadline - time.monotonic()
                conn.execute(f"PRAGMA busy_timeout={max(0, min(int(left * 1000), 250))}")
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if not busy:
                    return
                if time.monotonic() >= deadline:
                    raise StoreError(
                        "the destroyed key may still be in the key file's WAL: another "
                        "connection keeps it busy; close it and erase again"
                    )
                time.sleep(0.02)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot checkpoint the key file: {exc}") from None
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(saved)}")

    def rewrap(self, keys: Iterable[WrappedKey]) -> None:
        with self.db.write() as conn:
            for k in keys:
                changed = conn.execute(
                    "UPDATE fx_data_keys SET master_key_id = ?, wrapped = ? "
                    "WHERE subject_id = ? AND key_id = ? AND destroyed_at IS NULL",
                    (k.master_key_id, k.wrapped, k.subject_id, k.key_id),
                ).rowcount
                if changed != 1:
                    raise ValidationError("rewrap applies to existing live keys only")

    def all_keys(self) -> list[WrappedKey]:
        cur = self.db.connection().execute(f"SELECT {_COLUMNS} FROM fx_data_keys")  # noqa: S608
        return [_key(r) for r in cur]

    def close(self) -> None:
        self.db.close()
