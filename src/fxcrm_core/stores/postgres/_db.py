"""One PostgreSQL database shared by the stores built on it: a connection pool a host tunes
(sizes, statement timeout, connect timeout), the schema checked when it opens, errors typed.

Retries: none here. A serialization failure or a deadlock surfaces as ConcurrencyError (the
caller decides again on fresh state, as with any version conflict); a connection lost during a
commit surfaces as StoreError saying the outcome is unknown — retry that only with the same
idempotency key, which makes the store answer from what was recorded.
"""

from __future__ import annotations

import re
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from fxcrm_core.events.store import Snapshot
from fxcrm_core.kernel.errors import ConcurrencyError, StoreError, ValidationError
from fxcrm_core.stores.postgres._schema import check_schema

__all__ = ["OnDatabase", "PostgresDatabase", "rewrite_table"]

Conn = psycopg.Connection[tuple[Any, ...]]


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database whose schema is at the version this
    code knows (else StoreError: run :func:`~fxcrm_core.stores.postgres.migrate` first).

    ``min_size``/``max_size``: the pool's bounds; ``statement_timeout_ms``: what any one
    statement may take (0: no limit); ``connect_timeout``: seconds to wait for a connection,
    from the server or from the pool."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        statement_timeout_ms: int = 30_000,
        connect_timeout: float = 10.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ValidationError("a PostgreSQL database is named by a connection string")
        try:  # read here, not in the pool's threads, which would log libpq's echo of a fragment
            conninfo_to_dict(dsn)
        except psycopg.Error:
            raise ValidationError("the PostgreSQL connection string cannot be read") from None
        for value, what in ((min_size, "min_size"), (max_size, "max_size")):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
                raise ValidationError(f"{what} is a whole number between 0 and 1000")
        if max_size < max(min_size, 1):
            raise ValidationError("max_size is at least min_size, and at least 1")
        if isinstance(statement_timeout_ms, bool) or not 0 <= statement_timeout_ms <= 86_400_000:
            raise ValidationError("statement_timeout_ms is between 0 and a day")
        if isinstance(connect_timeout, bool) or not 0 < connect_timeout <= 3600:
            raise ValidationError("connect_timeout is seconds, between 0 and 3600")
        self.dsn = dsn
        self.statement_timeout_ms = int(statement_timeout_ms)
        self.connect_timeout = float(connect_timeout)
        self._closed = threading.Event()
        self._connect_kwargs: dict[str, Any] = {
            "connect_timeout": max(1, int(connect_timeout)),
            # A host that vanishes mid-append holds the append lock until the server
            # notices: TCP keepalives make it notice in seconds, not hours.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 3,
            "keepalives_count": 3,
        }
        self.pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            kwargs=self._connect_kwargs,
            configure=self._configure,
            check=self._check_idle,
            open=False,
        )
        try:
            self.pool.open(wait=min_size > 0, timeout=connect_timeout)
            with self.pool.connection(timeout=connect_timeout) as conn:
                check_schema(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            self.pool.close()
            raise StoreError(f"cannot open the PostgreSQL database: {type(exc).__name__}") from None
        except BaseException:
            self.pool.close()
            raise

    def _configure(self, conn: Conn) -> None:
        conn.execute(f"SET statement_timeout = {self.statement_timeout_ms}")
        # A transaction left open by a stalled client (holding the append lock, say) ends.
        idle = 2 * self.statement_timeout_ms if self.statement_timeout_ms else 60_000
        conn.execute(f"SET idle_in_transaction_session_timeout = {idle}")
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET client_encoding = 'UTF8'")  # whatever PGCLIENTENCODING says
        conn.commit()

    def _check_idle(self, conn: Conn) -> None:
        """The pool's check of a connection it hands out, costing a round trip only when the
        server spoke while the connection sat idle (a terminated session, a restart or a
        failover says goodbye): such a connection is replaced instead of failing the next
        command with an unknown outcome although nothing was sent. Its idle neighbours most
        likely went the same way: they are swept at once, since the pool backs off longer
        after each dead connection it hands out (0, 1, 2, 4 s...)."""
        if conn.closed or conn.broken:
            raise psycopg.OperationalError("the pooled connection is closed")
        try:
            said = bool(select.select([conn.fileno()], [], [], 0)[0])
        except (OSError, ValueError):
            said = True
        if not said:
            return
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error:
            self.pool.check()  # the others: tested now, the dead replaced
            raise

    def close(self) -> None:
        self._closed.set()
        self.pool.close()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreError("the PostgreSQL database is closed")

    def _own_connection(self) -> Conn:
        """A connection outside the pool, in autocommit, with the pool's settings (VACUUM
        cannot run in a transaction block); psycopg's errors are the caller's to type."""
        self._check_open()
        return psycopg.connect(self.dsn, autocommit=True, **self._connect_kwargs)

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """A connection in a transaction, committed when the block ends, rolled back if it
        raises; PostgreSQL's errors typed (see the module's docstring)."""
        self._check_open()
        try:
            with self.pool.connection(timeout=self.connect_timeout) as conn, conn.transaction():
                yield conn
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
            raise ConcurrencyError("a concurrent transaction conflicted; try again") from None
        except psycopg.errors.LockNotAvailable:
            raise ConcurrencyError("a lock was not granted in time; try again") from None
        except psycopg.errors.ProgramLimitExceeded:
            # (an OperationalError to psycopg, but the server refused a value: nothing written)
            raise ValidationError(
                "a value is too large for PostgreSQL (a text indexed, such as a stream id or "
                "an idempotency key, over about 2,700 bytes); nothing was written"
            ) from None
        except psycopg.DataError:
            raise ValidationError(
                "a value PostgreSQL cannot hold (a text with a NUL character, a number out of "
                "range); nothing was written"
            ) from None
        except UnicodeEncodeError:
            raise ValidationError(
                "a text is not valid Unicode (a lone surrogate); nothing was written"
            ) from None
        except psycopg.errors.QueryCanceled:
            raise StoreError("a statement ran past the statement timeout") from None
        except PoolTimeout:  # (an OperationalError too: caught first, nothing was sent)
            raise StoreError("no PostgreSQL connection was free in time") from None
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"the connection to PostgreSQL failed ({type(exc).__name__}): a write's outcome "
                "is unknown; retry it only with its idempotency key"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL refused the statement ({type(exc).__name__})") from None

    # -- the checkpoint and snapshot ports, next to the events ---------------------------------
    def get_checkpoint(self, name: str) -> int:
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT position FROM fx_checkpoints WHERE name = %s", (name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def set_checkpoint(self, name: str, position: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO fx_checkpoints (name, position) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                (name, position),
            )

    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO fx_snapshots (stream_id, version, state) VALUES (%s, %s, %s) "
                "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
                "state = excluded.state",
                (snapshot.stream_id, snapshot.version, snapshot.state),
            )

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT stream_id, version, state FROM fx_snapshots WHERE stream_id = %s",
                (stream_id,),
            ).fetchone()
        return Snapshot(row[0], row[1], bytes(row[2])) if row else None

    def delete_snapshot(self, stream_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM fx_snapshots WHERE stream_id = %s", (stream_id,))

    def purge_snapshots(self, *, lock_wait: float = 5.0) -> None:
        """Rewrite the snapshot table into a new file of live rows only (``VACUUM FULL``).
        An erasure deletes the snapshots that may hold a subject's PII in clear, but a deleted
        row's bytes stay in the table's file (a dead tuple, and fragments after a plain VACUUM)
        until the table is rewritten: run this after erasures, with
        ``PostgresKeyStore.purge``. Gives up with ConcurrencyError if, within ``lock_wait``
        seconds, the table's lock is not granted (snapshot reads wait while it runs) or an open
        transaction still may read the deleted rows (see :func:`rewrite_table`)."""
        rewrite_table(self, "fx_snapshots", "the snapshot table", lock_wait=lock_wait)


_FIRST_NUMBER = re.compile(r"\d+")


def rewrite_table(db: PostgresDatabase, table: str, what: str, *, lock_wait: float) -> None:
    """``VACUUM FULL`` ``table`` until its new file holds no deleted row.

    A rewrite copies a deleted row that an open transaction in this database (a report, a
    ``pg_dump``) began before the deletion and so may still read: its bytes would move to the
    new file. ``VACUUM FULL VERBOSE`` reports how many such rows it kept ("N dead row versions
    cannot be removed yet", the first number of its INFO notice's detail, in any server
    language); while that is not 0 it waits and rewrites again, then raises ConcurrencyError:
    the purge has not happened, call it again later. A report that cannot be read is a
    StoreError, never taken for a purge done.

    ``lock_wait`` bounds the waiting: no new rewrite starts after it, and each lock a rewrite
    takes (the table's, its TOAST table's) waits at most what is left of it. A rewrite under
    way runs to its end, bounded by the database's ``statement_timeout_ms``. Rows that
    concurrent writers delete while it runs count as kept too: on a busy table a purge may
    give up and ask to be called again."""
    if not isinstance(lock_wait, int | float) or isinstance(lock_wait, bool):
        raise ValidationError("lock_wait is seconds, a number")
    if not 0 < lock_wait <= 3600:
        raise ValidationError("lock_wait is seconds, between 0 and 3600")
    statement = sql.SQL("VACUUM FULL VERBOSE {}").format(sql.Identifier(table))
    deadline = time.monotonic() + lock_wait
    pause = 0.05
    details: list[str] = []
    try:
        with db._own_connection() as conn:
            conn.add_notice_handler(
                lambda d: details.append(d.message_detail) if d.message_detail else None
            )
            conn.execute(f"SET statement_timeout = {db.statement_timeout_ms}")
            while True:
                left = max(0.001, deadline - time.monotonic())
                conn.execute(f"SET lock_timeout = {max(1, int(left * 1000))}")  # 0: no limit
                details.clear()
                conn.execute(statement)
                kept = [int(m.group()) for d in details if (m := _FIRST_NUMBER.search(d))]
                if not kept:
                    raise StoreError(f"the rewrite of {what} gave no report; nothing is known")
                if not any(kept):
                    return
                if time.monotonic() + pause > deadline:
                    raise ConcurrencyError(
                        f"an open transaction may still read rows deleted from {what}: their "
                        "bytes stay in its file until it ends; purge again later"
                    )
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
    except psycopg.errors.LockNotAvailable:
        raise ConcurrencyError(
            f"{what} is in use by a long transaction; purge again later"
        ) from None
    except psycopg.Error as exc:
        raise StoreError(f"cannot purge {what}: {type(exc).__name__}") from None


class OnDatabase:
    """Base of the stores on a :class:`PostgresDatabase`: given one, the store shares it (the
    caller closes it); given a connection string, it opens a database of its own, which
    :meth:`close` closes."""

    def __init__(self, db: PostgresDatabase | str) -> None:
        self._owned = not isinstance(db, PostgresDatabase)
        self.db = db if isinstance(db, PostgresDatabase) else PostgresDatabase(db)

    def close(self) -> None:
        """Close the database if this store opened it (a shared one stays open)."""
        if self._owned:
            self.db.close()
