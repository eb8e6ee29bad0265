"""Leases on PostgreSQL: a worker owns a named job (a policy) while it holds a session advisory
lock on the job's key, on one connection of its own (not the pool's: a pooled connection would
carry the lock to whoever borrows it next).

When does a lease pass to another worker?

- The worker releases it (``release``, ``close``, or a ``PolicyRunner.follow`` that stops).
- The worker's process dies (a crash, ``kill -9``, an OOM kill): its socket closes, the server
  ends the session and releases its locks at once.
- The server ends the session (``pg_terminate_backend``, a restart): the holder sees it at its
  next ``owned()`` (the server's goodbye makes the socket readable, checked on every call) and
  holds nothing from then on.
- A network partition: both sides notice only through TCP. The session sets the server's
  keepalives (``tcp_keepalives_idle`` 5 s, ``interval`` 2 s, ``count`` 3: a silent client is
  dropped, and its locks released, some 11 s after its last word), and the client's libpq
  keepalives and ``tcp_user_timeout`` (5 s) with a ``SELECT 1`` at most once a second from
  ``owned()``, so the old holder gives up (about 6 s) before the server hands the lease on.

A lease is not the guard of correctness: a policy's output and position are committed together
under a version check, so even two owners at once never apply an upstream event twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import select
import threading
import time
from typing import Any

import psycopg

from fxcrm_core.events.leases import check_name
from fxcrm_core.kernel.errors import StoreError, ValidationError
from fxcrm_core.stores.postgres._schema import _LOCK as _MIGRATION_LOCK

__all__ = ["PostgresLeases", "lease_key"]

Conn = psycopg.Connection[tuple[Any, ...]]

_SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
)
_CLIENT_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,  # ms: a write unanswered this long fails (Linux)
}
_WORKER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,50}")  # application_name holds 63 bytes


def lease_key(name: str) -> int:
    """The advisory lock key of a lease name: a stable signed 64-bit hash (the same in every
    process and release), salted so it stays clear of the migration lock and of other keys."""
    digest = hashlib.blake2b(
        check_name(name).encode("utf-8", "surrogatepass"), digest_size=8, person=b"fxcrm-lease"
    ).digest()
    key = int.from_bytes(digest, "big", signed=True)
    return key ^ 1 if key == _MIGRATION_LOCK else key


class PostgresLeases:
    """The leases of one worker (``worker_id`` names it in ``pg_stat_activity``'s
    application_name, so an operator sees who holds what) on a dedicated autocommit connection.

    ``check_every``: how often (seconds) ``owned()`` proves the connection alive with a round
    trip; between checks it answers from memory unless the server has said goodbye."""

    def __init__(
        self,
        dsn: str,
        *,
        worker_id: str,
        connect_timeout: float = 10.0,
        check_every: float = 1.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ValidationError("a PostgreSQL database is named by a connection string")
        if not isinstance(worker_id, str) or not _WORKER_ID.fullmatch(worker_id):
            raise ValidationError(
                "a worker id is up to 50 ASCII letters, digits, '_', '.', ':' and '-'"
            )
        if isinstance(connect_timeout, bool) or not 0 < connect_timeout <= 3600:
            raise ValidationError("connect_timeout is seconds, between 0 and 3600")
        if isinstance(check_every, bool) or not 0 <= check_every <= 60:
            raise ValidationError("check_every is seconds, between 0 and 60")
        self.dsn = dsn
        self.worker_id = worker_id
        self.connect_timeout = float(connect_timeout)
        self.check_every = float(check_every)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._checked = 0.0
        self._closed = False
        self._conn: Conn | None = self._connect()

    def _connect(self) -> Conn:
        try:
            conn: Conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name=f"fxcrm-worker:{self.worker_id}",
                **_CLIENT_KEEPALIVES,
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open the leases connection to PostgreSQL: {type(exc).__name__}"
            ) from None
        try:
            for statement in _SERVER_KEEPALIVES:
                conn.execute(statement)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot set up the leases connection to PostgreSQL: {type(exc).__name__}"
            ) from None
        self._checked = time.monotonic()
        return conn

    def acquire(self, name: str) -> bool:
        key = lease_key(name)
        with self._lock:
            if self._closed:
                return False  # as a dead worker: it holds nothing and takes nothing
            conn = self._alive()
            if name in self._held and conn is not None:
                return True
            if conn is None:  # lost: a new session, holding nothing yet
                conn = self._conn = self._connect()
            try:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            except psycopg.Error as exc:
                self._lose()
                raise StoreError(
                    f"the leases connection to PostgreSQL failed: {type(exc).__name__}"
                ) from None
            if row is not None and row[0] is True:
                self._held.add(name)
                return True
            return False

    def release(self, name: str) -> None:
        key = lease_key(name)
        with self._lock:
            if name not in self._held:
                return
            self._held.discard(name)
            conn = self._conn
            if conn is None or conn.closed:
                return
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except psycopg.Error:
                self._lose()  # the session is gone, and its locks with it

    def owned(self) -> frozenset[str]:
        with self._lock:
            if not self._held:
                return frozenset()
            if self._alive() is None:
                return frozenset()
            return frozenset(self._held)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn = self._conn
            if self._held and conn is not None and not (conn.closed or conn.broken):
                # The server frees a closed session's locks only when its backend has exited,
                # a moment after the socket closes: unlocked here, they are free on return.
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock_all()")
            self._lose()

    def _alive(self) -> Conn | None:
        """The connection if its session still stands, else None (and nothing held)."""
        conn = self._conn
        if conn is None:
            return None
        if conn.closed or conn.broken:
            self._lose()
            return None
        now = time.monotonic()
        # Idle in autocommit, the server sends nothing unasked but its goodbye (a terminated
        # session, a shutdown): a readable socket is worth a round trip now.
        try:
            said = bool(select.select([conn.fileno()], [], [], 0)[0])
        except (OSError, ValueError, psycopg.Error):
            said = True
        if said or now - self._checked >= self.check_every:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error:
                self._lose()
                return None
            self._checked = now
        return conn

    def _lose(self) -> None:
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
