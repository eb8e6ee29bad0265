"""The EventStore port on PostgreSQL: positions gapless and in commit order, so a follower reading
``position > p`` never skips an event that a slower transaction commits late.

Why a lock. A sequence or identity column hands out numbers at insert time, not commit time: a
transaction holding position 7 may commit after one holding 8, and a follower that already read
8 and moved on never sees 7. So every append transaction first takes one transaction-scoped
advisory lock (``pg_advisory_xact_lock`` on a constant), then, in a later statement and hence a
later READ COMMITTED snapshot, reads ``max(position)`` and the heads of its streams and numbers
its rows from there. PostgreSQL releases a transaction's locks only after its commit is visible
to new snapshots, so the next writer's snapshot sees the previous commit: positions follow
commit order, a rolled-back append leaves no row and its numbers are handed out again, and any
snapshot sees a prefix of the log (1..H with no hole). A typed read therefore takes the head and
the rows in one statement (one snapshot) and knows it missed nothing up to that head.

The cost: appends serialize, one transaction at a time across every process on the database (a
few round trips each: about a thousand small appends a second seen on a busy two-core machine
with a local server, whatever the number of writers); a writer stalled inside its transaction
holds up every other append (they wait at most the statement timeout, then fail with
StoreError, nothing written). Version checks need no other locking. Reads never take the lock
and never wait for a writer. The
alternative, letting writers run in parallel with a sequence and having readers hold back
positions whose transaction may still be in flight (recording ``pg_current_xact_id()`` with each
row and reading only rows with ``xid < pg_snapshot_xmin(pg_current_snapshot())``), keeps writers
parallel but makes every read depend on the oldest open transaction anywhere on the server (a
stuck session stalls every follower, even one on another database), needs a second column and
index, and still leaves holes (rolled-back numbers) a reader must tell from late commits. A
broker CRM's write rate is far below what one serialized writer sustains, so the simpler
invariant wins.

Rows go in by ``executemany`` (pipelined with the idempotency record: one round trip), and an
append of :data:`COPY_FROM` rows or more by binary ``COPY``: measured on a local server, alike
up to about 16 rows, about half the time from 32 on (2,000 rows of 200 bytes: 14 ms against
32 ms).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from fxcrm_core.events.store import (
    AppendResult,
    StoredEvent,
    StreamAppend,
    append_digest,
    check_appends,
    replay_result,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ConcurrencyError, StoreError, ValidationError
from fxcrm_core.kernel.time import from_micros, to_micros
from fxcrm_core.stores.postgres._db import OnDatabase, PostgresDatabase

__all__ = ["PostgresEventStore"]

APPEND_LOCK = 0x66786372_6D000002  # the advisory lock every append holds ("fxcrm" + 2)
COPY_FROM = 32  # an append of at least this many rows goes in by COPY

_COLUMNS = "position, stream_id, version, event_type, data, metadata, recorded_at"
_INSERT = (
    f"INSERT INTO fx_events ({_COLUMNS}) "  # noqa: S608
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_INSERT_KEY = "INSERT INTO fx_idempotency (key, digest, result) VALUES (%s, %s, %s)"
_COPY = f"COPY fx_events ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ("int8", "text", "int4", "text", "bytea", "bytea", "int8")
# One row: the log's last position, then each stream's version in the order given. Each
# version reads the end of the (stream_id, version) index.
_HEADS = (
    "SELECT (SELECT coalesce(max(position), 0) FROM fx_events), "
    "array(SELECT coalesce((SELECT max(e.version) FROM fx_events e WHERE e.stream_id = s.id), 0) "
    "FROM unnest(%s::text[]) WITH ORDINALITY AS s(id, n) ORDER BY s.n)"
)
# The same for one stream (most commands): two plain index reads, a plan PostgreSQL caches
# (the array form above is planned afresh on every call: about 110 us more an append).
_HEAD_ONE = (
    "SELECT (SELECT coalesce(max(position), 0) FROM fx_events), "
    "(SELECT coalesce(max(version), 0) FROM fx_events WHERE stream_id = %s)"
)
# One event on one stream without a key (most commands): the schema's function, one statement.
_APPEND_ONE = "SELECT out_position, out_version FROM fx_append_one(%s, %s, %s, %s, %s, %s, %s)"
_VERSION = "SELECT coalesce(max(version), 0) FROM fx_events WHERE stream_id = %s"
_READ_ALL = (
    f"SELECT {_COLUMNS} FROM fx_events WHERE position > %s "  # noqa: S608
    "ORDER BY position LIMIT %s"
)
_READ_STREAM = (
    f"SELECT {_COLUMNS} FROM fx_events WHERE stream_id = %s AND version > %s "  # noqa: S608
    "ORDER BY version"
)
# The head and the rows of some types in (after, head], in one statement and so one snapshot.
# Per type, the (event_type, position) index gives at most ``limit`` positions in order (row
# comparisons and that order, which only that index serves: with ``event_type = x AND position
# > y`` the planner may walk the primary key and filter, slow for a rare type); the
# first ``limit`` of all of them are joined to their rows, so the payloads of rows left out are
# never read. The head row comes back even when no event matches.
_TYPED = (
    "WITH head AS MATERIALIZED (SELECT coalesce(max(position), 0) AS h FROM fx_events), "
    "picked AS ("
    " SELECT p.position FROM unnest(%(types)s::text[]) AS t(event_type)"
    " CROSS JOIN LATERAL ("
    "  SELECT e.position FROM fx_events e"
    "  WHERE (e.event_type, e.position) > (t.event_type, %(after)s)"
    "  AND (e.event_type, e.position) <= (t.event_type, (SELECT h FROM head))"
    "  ORDER BY e.event_type, e.position LIMIT %(limit)s) AS p"
    " ORDER BY p.position LIMIT %(limit)s) "
    "SELECT head.h, e.position, e.stream_id, e.version, e.event_type, e.data, e.metadata, "
    "e.recorded_at FROM head LEFT JOIN (picked JOIN fx_events e USING (position)) ON true "
    "ORDER BY e.position"
)

Row = tuple[Any, ...]


def _row(r: Row) -> StoredEvent:
    # The columns' types make the values (bigint, text, integer, text, bytea, bytea): int, str
    # and bytes already, nothing to convert or copy; only the time is checked.
    return StoredEvent(r[0], r[1], r[2], r[3], r[4], r[5], from_micros(r[6]))


def _rows(rows: Sequence[Row]) -> list[StoredEvent]:
    try:
        return [_row(r) for r in rows]
    except (ValidationError, TypeError, ValueError, OverflowError):
        raise StoreError("the PostgreSQL database holds a row that is not a stored event") from None


class PostgresEventStore(OnDatabase):
    """The EventStore port on a PostgreSQL database whose schema is migrated (see
    :func:`~fxcrm_core.stores.postgres.migrate`).

    ``db``: a :class:`PostgresDatabase` shared with other stores (the caller closes it), or a
    connection string (this store opens a database of its own and :meth:`close` closes it).
    Also offers ``read_all_of_types``, which the projection and policy runners use.
    """

    _append_lock = APPEND_LOCK  # a class attribute only so a test can show what it prevents

    def __init__(self, db: PostgresDatabase | str, *, clock: Clock | None = None) -> None:
        super().__init__(db)
        self._clock = clock or SystemClock()

    # -- writing ---------------------------------------------------------------------------
    def append(self, *appends: StreamAppend, idempotency_key: str | None = None) -> AppendResult:
        check_appends(appends)
        recorded = to_micros(self._clock.now())
        if idempotency_key is None and len(appends) == 1 and len(appends[0].events) == 1:
            return self._append_one(appends[0], recorded)
        digest = append_digest(appends) if idempotency_key is not None else b""
        stream_ids = [a.stream_id for a in appends]
        with self.db.transaction() as conn:
            # One round trip: the lock, then (later statements, so later snapshots that see
            # every append committed before the lock was granted) the key and the heads.
            with conn.pipeline():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._append_lock,))
                found_cur = (
                    conn.execute(
                        "SELECT digest, result FROM fx_idempotency WHERE key = %s",
                        (idempotency_key,),
                    )
                    if idempotency_key is not None
                    else None
                )
                one = len(stream_ids) == 1
                heads_cur = conn.execute(
                    _HEAD_ONE if one else _HEADS, (stream_ids[0] if one else stream_ids,)
                )
            if found_cur is not None and (found := found_cur.fetchone()) is not None:
                return _replay(found, digest)
            heads_row = heads_cur.fetchone()
            if heads_row is None:  # pragma: no cover - a SELECT without FROM returns one row
                raise StoreError("PostgreSQL returned no heads")
            before = int(heads_row[0])
            heads = [int(heads_row[1])] if one else heads_row[1]
            rows: list[tuple[int, str, int, str, bytes, bytes, int]] = []
            versions: dict[str, int] = {}
            position = before
            for a, current in zip(appends, heads, strict=True):
                if a.expected_version is not None and current != a.expected_version:
                    raise ConcurrencyError(
                        f"stream {a.stream_id} is at version {current}, "
                        f"expected {a.expected_version}; nothing was written"
                    )
                for e in a.events:
                    current += 1
                    position += 1
                    rows.append(
                        (position, a.stream_id, current, e.event_type, e.data, e.metadata, recorded)
                    )
                versions[a.stream_id] = current
            result = AppendResult(position, versions)
            key_row = (
                (
                    idempotency_key,
                    digest,
                    json.dumps({"last_position": position, "versions": versions}),
                )
                if idempotency_key is not None
                else None
            )
            try:
                self._insert(conn, rows, key_row)
            except psycopg.errors.UniqueViolation:
                # Only reachable if another writer bypassed the append lock.
                raise ConcurrencyError("a stream changed during the append") from None
        return result

    def _append_one(self, a: StreamAppend, recorded: int) -> AppendResult:
        """:meth:`append` of one event on one stream, without a key, as one call of the
        schema's ``fx_append_one`` (the lock, then the head read, the version check and the
        insert): the same rows, positions and errors as the general path, in the round trips
        of a plain one-row transaction."""
        e = a.events[0]
        params = (
            a.stream_id, e.event_type, e.data, e.metadata, recorded, a.expected_version,
            self._append_lock,
        )  # fmt: skip
        with self.db.transaction() as conn:
            row = conn.execute(_APPEND_ONE, params).fetchone()
            if row is None:
                found = conn.execute(_VERSION, (a.stream_id,)).fetchone()
                current = int(found[0]) if found else 0
                raise ConcurrencyError(
                    f"stream {a.stream_id} is at version {current}, "
                    f"expected {a.expected_version}; nothing was written"
                )
        return AppendResult(int(row[0]), {a.stream_id: int(row[1])})

    def _insert(
        self,
        conn: psycopg.Connection[Row],
        rows: list[tuple[int, str, int, str, bytes, bytes, int]],
        key_row: tuple[str, bytes, str] | None,
    ) -> None:
        """The rows and the idempotency record, in one round trip (COPY: two)."""
        with conn.cursor() as cur:
            if len(rows) >= COPY_FROM:
                with cur.copy(_COPY) as copy:
                    copy.set_types(list(_COPY_TYPES))
                    for r in rows:
                        copy.write_row(r)
                if key_row is not None:
                    cur.execute(_INSERT_KEY, key_row)
                return
            if len(rows) == 1 and key_row is None:  # (one row: no pipeline to set up)
                cur.execute(_INSERT, rows[0])
                return
            with conn.pipeline():
                cur.executemany(_INSERT, rows)
                if key_row is not None:
                    cur.execute(_INSERT_KEY, key_row)

    # -- reading ---------------------------------------------------------------------------
    def _select(self, sql: str, params: Sequence[object]) -> list[StoredEvent]:
        with self.db.transaction() as conn:
            fetched = conn.execute(sql, params, binary=True).fetchall()
        return _rows(fetched)

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        return self._select(_READ_STREAM, (stream_id, after_version))

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        return self._select(_READ_ALL, (after_position, limit))

    def read_all_of_types(
        self, after_position: int, types: frozenset[str], limit: int
    ) -> tuple[list[StoredEvent], int]:
        """The events of ``types`` among those :meth:`read_all` would return from
        ``after_position`` on, up to ``limit`` of them, and the position read up to: every
        event of those types in (``after_position``, that position] is in the list (the last
        one's position when ``limit`` is reached, else the head).

        The head and the rows come from one snapshot, which holds every position up to the
        head and none above (see the module's docstring): none is skipped, none read twice.
        """
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        if not types:
            return [], max(self.last_position(), after_position)
        params = {"types": sorted(types), "after": after_position, "limit": limit}
        with self.db.transaction() as conn:
            fetched = conn.execute(_TYPED, params, binary=True).fetchall()
        head = max(int(fetched[0][0]), after_position) if fetched else after_position
        events = _rows([r[1:] for r in fetched if r[1] is not None])
        return events, (events[-1].position if len(events) == limit else head)

    def stream_version(self, stream_id: str) -> int:
        with self.db.transaction() as conn:
            row = conn.execute(_VERSION, (stream_id,)).fetchone()
        return int(row[0]) if row else 0

    def last_position(self) -> int:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT coalesce(max(position), 0) FROM fx_events").fetchone()
        return int(row[0]) if row else 0


def _replay(found: Row, digest: bytes) -> AppendResult:
    try:
        doc = json.loads(found[1])
        previous = AppendResult(int(doc["last_position"]), dict(doc["versions"]))
        stored_digest = bytes(found[0])
    except (ValueError, LookupError, TypeError, RecursionError):
        raise StoreError("a stored idempotency record is corrupt") from None
    return replay_result(stored_digest, previous, digest)
