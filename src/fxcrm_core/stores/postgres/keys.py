"""The KeyStore port on PostgreSQL (``fx_data_keys``), with the semantics of the SQLite one: the
first key stored for a subject stays, a destroyed key leaves a tombstone, rewrap is all or none.

Erasure and old bytes. :meth:`PostgresKeyStore.destroy` overwrites the row's key bytes with an
empty value, but PostgreSQL never changes a row in place: the old row version stays in the
table's file as a dead tuple until VACUUM reclaims it, and a plain VACUUM frees the space without
wiping it (measured on PostgreSQL 15: fragments of a destroyed key can stay in a page's free
space). :meth:`PostgresKeyStore.purge` rewrites the table into a new file holding live rows only
(``VACUUM FULL``); call it after erasures (a batch a day is enough), or have the host's
maintenance do the same. The write-ahead log, its archive and base backups hold the old bytes
until they are recycled or age out: keep the keys in a database of their own, back it up on a
shorter schedule than the events, and let those copies expire, as with the SQLite key file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from fxcrm_core.kernel.errors import StoreError, ValidationError
from fxcrm_core.kernel.time import from_micros, to_micros
from fxcrm_core.privacy.keys import WrappedKey
from fxcrm_core.stores.postgres._db import OnDatabase, rewrite_table

__all__ = ["PostgresKeyStore"]

_COLUMNS = "subject_id, key_id, master_key_id, wrapped, created_at, destroyed_at"
_SELECT = f"SELECT {_COLUMNS} FROM fx_data_keys WHERE subject_id = %s"  # noqa: S608
_INSERT = (
    "INSERT INTO fx_data_keys (subject_id, key_id, master_key_id, wrapped, created_at) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (subject_id) DO NOTHING"
)
# A tombstone for a subject that never had a key too (no key can be made for it later). The
# conflict branch locks the row and re-checks ``destroyed_at`` on its newest version, so of
# two racing calls exactly one returns a row: the one that destroyed the key.
_DESTROY = (
    "INSERT INTO fx_data_keys (subject_id, key_id, master_key_id, wrapped, created_at, "
    "destroyed_at) VALUES (%s, '', '', '', %s, %s) "
    "ON CONFLICT (subject_id) DO UPDATE SET wrapped = '', destroyed_at = excluded.destroyed_at "
    "WHERE fx_data_keys.destroyed_at IS NULL RETURNING subject_id"
)
_REWRAP = (
    "UPDATE fx_data_keys SET master_key_id = %s, wrapped = %s "
    "WHERE subject_id = %s AND key_id = %s AND destroyed_at IS NULL RETURNING subject_id"
)

Row = tuple[Any, ...]


def _key(row: Row) -> WrappedKey:
    try:
        destroyed = None if row[5] is None else from_micros(int(row[5]))
        return WrappedKey(
            str(row[0]),
            str(row[1]),
            str(row[2]),
            bytes(row[3]),
            from_micros(int(row[4])),
            destroyed,
        )
    except (ValidationError, TypeError, ValueError, OverflowError):
        raise StoreError("the PostgreSQL key table holds a row that is not a key") from None


class PostgresKeyStore(OnDatabase):
    """Wrapped data keys in the ``fx_data_keys`` table of a migrated PostgreSQL database.

    ``db``: a :class:`PostgresDatabase` (shared: the caller closes it), or a connection string
    (this store opens a database of its own and :meth:`close` closes it). Keep the keys in a
    database apart from the events where backups differ (see the module's docstring). Also
    serves the SDK's named secrets (the audit chain's key) through ``FieldEncryption``, like
    any key store.
    """

    def get(self, subject_id: str) -> WrappedKey | None:
        with self.db.transaction() as conn:
            row = conn.execute(_SELECT, (subject_id,)).fetchone()
        return _key(row) if row else None

    def put_new(self, key: WrappedKey) -> WrappedKey:
        with self.db.transaction() as conn:
            # The insert waits for a racing insert of the same subject to commit and then does
            # nothing; the select, a later statement, sees whichever key was stored first.
            with conn.pipeline():
                conn.execute(
                    _INSERT,
                    (
                        key.subject_id,
                        key.key_id,
                        key.master_key_id,
                        key.wrapped,
                        to_micros(key.created_at),
                    ),
                )
                cur = conn.execute(_SELECT, (key.subject_id,))
            row = cur.fetchone()
        if row is None:
            raise StoreError("the key just stored could not be read back")
        return _key(row)

    def destroy(self, subject_id: str, at: datetime) -> bool:
        micros = to_micros(at)
        with self.db.transaction() as conn:
            row = conn.execute(_DESTROY, (subject_id, micros, micros)).fetchone()
        return row is not None

    def rewrap(self, keys: Iterable[WrappedKey]) -> None:
        params: Sequence[tuple[str, bytes, str, str]] = [
            (k.master_key_id, k.wrapped, k.subject_id, k.key_id) for k in keys
        ]
        if not params:
            return
        with self.db.transaction() as conn, conn.cursor() as cur:
            # One round trip for the batch (pipeline mode); one result set per key.
            cur.executemany(_REWRAP, params, returning=True)
            changed = 0
            while True:
                changed += len(cur.fetchall())
                if not cur.nextset():
                    break
            if changed != len(params):
                # Raised inside the transaction: it rolls back, no key is rewrapped.
                raise ValidationError("rewrap applies to existing live keys only")

    def all_keys(self) -> list[WrappedKey]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM fx_data_keys ORDER BY subject_id"  # noqa: S608
            ).fetchall()
        return [_key(r) for r in rows]

    def purge(self, *, lock_wait: float = 5.0) -> None:
        """Rewrite the key table into a new file of live rows only (``VACUUM FULL``), so the
        bytes of destroyed keys leave the table's files (not the WAL nor backups: see the
        module's docstring). It holds an exclusive lock on the table for the rewrite (key reads
        wait; the table is small). It gives up with ConcurrencyError rather than queue every
        reader behind it if, within ``lock_wait`` seconds, that lock is not granted (a long
        transaction reads keys) or an open transaction still may read a destroyed key's old
        row (the rewrite would copy it): call it again later."""
        rewrite_table(self.db, "fx_data_keys", "the key table", lock_wait=lock_wait)
