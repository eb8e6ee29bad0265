"""PostgreSQL event-store throughput as ratios against baselines measured in the same run.

Every measurement runs on a fresh database that the benchmark creates on the server at
``FXCRM_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``, the admin connection)
and drops afterwards. Each round runs every measurement once and computes its ratios; the report
gives the median of the rounds (this machine is noisy, pairs within a round share its noise).
Durability is the server's default for every row (``synchronous_commit`` as configured, shown).

What each row times (events/s):

- ``raw_tx_commit``: raw psycopg, one connection, one ``BEGIN; INSERT one row; COMMIT`` per event
  into ``fx_events`` of a migrated database (same table, indexes and row bytes as the store's;
  positions from a client counter, no lock, no version check).
- ``raw_autocommit``: the same rows, one autocommitted ``INSERT`` each (one round trip; shown,
  no target).
- ``pg_per_command``: ``PostgresEventStore.append`` of one pre-encoded event per call.
- ``raw_executemany``: raw psycopg ``executemany`` (pipelined) of ``batch`` rows per transaction.
- ``raw_copy``: raw psycopg binary ``COPY`` of ``batch`` rows per transaction.
- ``pg_batched``: ``PostgresEventStore.append`` of ``batch`` pre-encoded events per call (the
  store uses binary COPY from 32 rows on).
- ``pg_full_stack_batched``: commands in, events recorded through ``Broker.postgres`` units of
  work (``batch`` commands per commit), with what the broker runs after a commit.
- ``raw_scan_decode``: one raw ``SELECT`` of the full-stack database's whole log (binary), each
  row's data and metadata ``json.loads``-ed.
- ``pg_replay``: ``read_all`` in pages of 5,000 from that database and ``EventCodec.decode`` of
  every event (read from the database each time: the store has no cache).
- ``pg_aggregate_replay``: the desk rebuilt from its stream by a new repository with no state
  cache and no snapshots (reads and folds every event).
- ``es_pg_batched`` / ``es_pg_aggregate_replay``: the ``eventsourcing`` library's PostgreSQL
  persistence (``eventsourcing.postgres``, its defaults: executemany in a pipeline under a table
  lock), the same commands and ``batch`` per save; its replay is ``repository.get`` with no
  aggregate cache.

    python benchmarks/bench_postgres.py            # the full run (a minute or two)
    python benchmarks/bench_postgres.py --quick    # a smoke run with tiny sizes
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from eventsourcing.application import Application as EsApplication
from psycopg import sql

from fxcrm_core.broker import Broker
from fxcrm_core.events import (
    NewEvent,
    StreamAppend,
)
from fxcrm_core.kernel import FixedClock
from fxcrm_core.stores.postgres import PostgresEventStore, migrate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _desk import DESK_EVENTS
from _rounds import (
    BENCH_IDENTITY_KEY,
    T0,
    EsDesk,
    _codec,
    _rows,
    _timed,
    aggregate_replay,
    full_stack_batched,
    run_rounds,
    store_replay,
)

SERVER = os.environ.get("FXCRM_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DB_PREFIX = f"fxcrm_bench_{os.getpid()}_"  # each database this process makes, and drops

_INSERT = (
    "INSERT INTO fx_events (position, stream_id, version, event_type, data, metadata, "
    "recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_COPY = (
    "COPY fx_events (position, stream_id, version, event_type, data, metadata, recorded_at) "
    "FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["int8", "text", "int4", "text", "bytea", "bytea", "int8"]


def _tuples(rows: list[NewEvent]) -> list[tuple[int, str, int, str, bytes, bytes, int]]:
    return [
        (i + 1, "desk-bench", i + 1, r.event_type, r.data, r.metadata, 0)
        for i, r in enumerate(rows)
    ]


# -- fresh databases -------------------------------------------------------------------------
def _dsn_of(name: str) -> str:
    return urlunsplit(urlsplit(SERVER)._replace(path=f"/{name}"))


@contextmanager
def fresh_database(*, migrated: bool = True) -> Iterator[str]:
    """A new database on the server (schema migrated unless told not to), dropped afterwards."""
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _dsn_of(name)
    try:
        if migrated:
            migrate(dsn)
        yield dsn
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# -- measurements: each returns seconds for the work it names -------------------------------
def raw_tx_commits(rows: list[NewEvent]) -> float:
    tuples = _tuples(rows)
    with fresh_database() as dsn, psycopg.connect(dsn) as conn:

        def run() -> None:
            for t in tuples:
                with conn.transaction():
                    conn.execute(_INSERT, t)

        return _timed(run)


def raw_autocommits(rows: list[NewEvent]) -> float:
    tuples = _tuples(rows)
    with fresh_database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:

        def run() -> None:
            for t in tuples:
                conn.execute(_INSERT, t)

        return _timed(run)


def store_per_command(rows: list[NewEvent]) -> float:
    with fresh_database() as dsn:
        store = PostgresEventStore(dsn, clock=FixedClock(T0))
        try:

            def run() -> None:
                for i, r in enumerate(rows):
                    store.append(StreamAppend("desk-bench", i, [r]))

            return _timed(run)
        finally:
            store.close()


def raw_executemany(rows: list[NewEvent], batch: int) -> float:
    tuples = _tuples(rows)
    with fresh_database() as dsn, psycopg.connect(dsn) as conn:

        def run() -> None:
            for i in range(0, len(tuples), batch):
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(_INSERT, tuples[i : i + batch])

        return _timed(run)


def raw_copy(rows: list[NewEvent], batch: int) -> float:
    tuples = _tuples(rows)
    with fresh_database() as dsn, psycopg.connect(dsn) as conn:

        def run() -> None:
            for i in range(0, len(tuples), batch):
                with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for t in tuples[i : i + batch]:
                        copy.write_row(t)

        return _timed(run)


def store_batched(rows: list[NewEvent], batch: int) -> float:
    with fresh_database() as dsn:
        store = PostgresEventStore(dsn, clock=FixedClock(T0))
        try:

            def run() -> None:
                for i in range(0, len(rows), batch):
                    store.append(StreamAppend("desk-bench", i, rows[i : i + batch]))

            return _timed(run)
        finally:
            store.close()


def raw_scan_decode(dsn: str) -> float:
    with psycopg.connect(dsn) as conn:

        def run() -> None:
            loads = json.loads
            rows = conn.execute(
                "SELECT position, stream_id, version, event_type, data, metadata, recorded_at "
                "FROM fx_events ORDER BY position",
                binary=True,
            ).fetchall()
            for row in rows:
                loads(row[4])
                loads(row[5])

        return _timed(run)


# -- the eventsourcing library doing the same work -------------------------------------------


def _es_app(dsn: str) -> Any:
    parts = urlsplit(dsn)
    # No aggregate cache whatever the process environment says: its loads are replays too.
    env = {
        "AGGREGATE_CACHE_MAXSIZE": "",
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",
    }
    return EsApplication(env=env)


def es_round(n: int, batch: int) -> tuple[float, float]:
    """Seconds for the batched saves, then for one replay of the desk."""
    amounts = [(Decimal(10_000 + i) / 100, f"psp-{i:09d}") for i in range(n)]
    with fresh_database(migrated=False) as dsn:
        app = _es_app(dsn)
        try:

            def run() -> Any:
                desk = EsDesk()
                for i in range(0, n, batch):
                    for amount, ref in amounts[i : i + batch]:
                        desk.receive(amount, ref)
                    app.save(desk)
                return desk

            start = time.perf_counter()
            desk = run()
            saving = time.perf_counter() - start
            assert app.repository.cache is None
            replaying = _timed(lambda: app.repository.get(desk.id))
            assert app.repository.get(desk.id).version == n + 1
            return saving, replaying
        finally:
            app.close()


# -- the run ---------------------------------------------------------------------------------
def one_round(n: int, batch: int, commands: int) -> dict[str, float]:
    codec = _codec()
    rows = _rows(codec, n)
    cmd_rows = rows[:commands]
    r: dict[str, float] = {}
    r["raw_tx_commit"] = commands / raw_tx_commits(cmd_rows)
    r["raw_autocommit"] = commands / raw_autocommits(cmd_rows)
    r["pg_per_command"] = commands / store_per_command(cmd_rows)
    r["raw_executemany"] = n / raw_executemany(rows, batch)
    r["raw_copy"] = n / raw_copy(rows, batch)
    r["pg_batched"] = n / store_batched(rows, batch)

    with fresh_database() as dsn:
        pg = Broker.postgres(
            dsn,
            clock=FixedClock(T0),
            events=DESK_EVENTS,
            allow_clear_pii=True,  # the desk's events hold no personal data
            identity_key=BENCH_IDENTITY_KEY,
        )
        try:
            r["pg_full_stack_batched"] = n / full_stack_batched(pg, n, batch)
            assert isinstance(pg.store, PostgresEventStore)
            logged = pg.store.last_position()  # the desk's events, and any the broker adds
            r["raw_scan_decode"] = logged / raw_scan_decode(dsn)
            r["pg_replay"] = logged / store_replay(pg.store, pg.codec)
            r["pg_aggregate_replay"] = (n + 1) / aggregate_replay(pg)
        finally:
            pg.close()

    saving, replaying = es_round(n, batch)
    r["es_pg_batched"] = n / saving
    r["es_pg_aggregate_replay"] = (n + 1) / replaying
    return r


RATIOS: list[tuple[str, str, str, float | None]] = [
    ("per-command append vs raw BEGIN/INSERT/COMMIT", "pg_per_command", "raw_tx_commit", 0.60),
    ("per-command append vs raw autocommit INSERT", "pg_per_command", "raw_autocommit", None),
    ("batched append vs raw executemany", "pg_batched", "raw_executemany", 0.40),
    ("batched append vs raw binary COPY", "pg_batched", "raw_copy", 0.40),
    ("replay (read+decode) vs raw scan+json", "pg_replay", "raw_scan_decode", 0.50),
    ("full-stack batched append vs raw COPY", "pg_full_stack_batched", "raw_copy", None),
    ("PostgreSQL batched append vs eventsourcing", "pg_full_stack_batched", "es_pg_batched", 2.0),
    (
        "PostgreSQL aggregate replay vs eventsourcing",
        "pg_aggregate_replay",
        "es_pg_aggregate_replay",
        2.0,
    ),
]


def _server_settings() -> str:
    with psycopg.connect(SERVER) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    return (
        f"PostgreSQL {version[0] if version else '?'}, "
        f"synchronous_commit={sync[0] if sync else '?'}, fsync={fsync[0] if fsync else '?'}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_rounds(__doc__, argv, one_round, RATIOS, _server_settings())


if __name__ == "__main__":
    raise SystemExit(main())
