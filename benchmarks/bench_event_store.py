"""Event-store throughput as ratios against baselines measured in the same run.

Each round runs every measurement once, on fresh files, and computes its ratios; the report
gives the median of the rounds (this machine is noisy, pairs within a round share its noise).

What each row times: ``*_batched`` and ``*_per_command`` append rows (raw rows pre-encoded; the
full stack turns commands into events, records and commits them through the broker, with what
the broker runs after a commit, its inline policies by default); ``*_replay`` reads and decodes
the whole log; ``*_aggregate_replay`` rebuilds one aggregate from its events, on a repository
with no state cache and no snapshots (eventsourcing: no aggregate cache either).

    python benchmarks/bench_event_store.py            # the full run (about two minutes)
    python benchmarks/bench_event_store.py --quick    # a smoke run with tiny sizes
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from eventsourcing.application import Application as EsApplication

from fxcrm_core.broker import Broker
from fxcrm_core.events import (
    NewEvent,
    StreamAppend,
)
from fxcrm_core.kernel import FixedClock
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore

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

SYNC: Literal["FULL"] = "FULL"  # the same durability for our store and the raw baselines


def _raw_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={SYNC}")
    conn.execute(
        "CREATE TABLE t (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, "
        "version INTEGER NOT NULL, event_type TEXT NOT NULL, data BLOB NOT NULL, "
        "metadata BLOB NOT NULL, recorded_at INTEGER NOT NULL, UNIQUE (stream_id, version))"
    )
    return conn


# -- measurements: each returns seconds for the work it names -------------------------------
def raw_executemany(d: Path, rows: list[NewEvent], batch: int) -> float:
    conn = _raw_db(d / "raw_many.sqlite")
    tuples = [
        ("desk-bench", i + 1, r.event_type, r.data, r.metadata, 0) for i, r in enumerate(rows)
    ]

    def run() -> None:
        for i in range(0, len(tuples), batch):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO t (stream_id, version, event_type, data, metadata, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                tuples[i : i + batch],
            )
            conn.execute("COMMIT")

    return _timed(run)


def store_batched(d: Path, rows: list[NewEvent], batch: int, name: str) -> float:
    store = SqliteEventStore(d / f"{name}.sqlite", clock=FixedClock(T0), synchronous=SYNC)

    def run() -> None:
        for i in range(0, len(rows), batch):
            store.append(StreamAppend("desk-bench", i, rows[i : i + batch]))

    return _timed(run)


def raw_commits(d: Path, rows: list[NewEvent]) -> float:
    conn = _raw_db(d / "raw_commit.sqlite")

    def run() -> None:
        for i, r in enumerate(rows):
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO t (stream_id, version, event_type, data, metadata, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ("desk-bench", i + 1, r.event_type, r.data, r.metadata, 0),
            )
            conn.execute("COMMIT")

    return _timed(run)


def store_per_command(d: Path, rows: list[NewEvent]) -> float:
    store = SqliteEventStore(d / "per_cmd.sqlite", clock=FixedClock(T0), synchronous=SYNC)

    def run() -> None:
        for i, r in enumerate(rows):
            store.append(StreamAppend("desk-bench", i, [r]))

    return _timed(run)


def raw_scan_decode(path: Path) -> float:
    conn = sqlite3.connect(path)

    def run() -> None:
        loads = json.loads
        for row in conn.execute(
            "SELECT position, stream_id, version, event_type, data, metadata, recorded_at "
            "FROM fx_events ORDER BY position"
        ):
            loads(row[4])
            loads(row[5])

    seconds = _timed(run)
    conn.close()
    return seconds


# -- the eventsourcing library doing the same work -------------------------------------------


def _es_app(db: Path | None) -> Any:
    # No aggregate cache whatever the process environment says: its loads are replays too.
    env = {"AGGREGATE_CACHE_MAXSIZE": ""}
    if db:
        env |= {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(db)}
    return EsApplication(env=env), EsDesk


def es_batched(db: Path | None, n: int, batch: int) -> tuple[float, Any, Any]:
    app, desk_cls = _es_app(db)
    amounts = [(Decimal(10_000 + i) / 100, f"psp-{i:09d}") for i in range(n)]

    def run() -> Any:
        desk = desk_cls()
        for i in range(0, n, batch):
            for amount, ref in amounts[i : i + batch]:
                desk.receive(amount, ref)
            app.save(desk)
        return desk

    start = time.perf_counter()
    desk = run()
    return time.perf_counter() - start, app, desk.id


def es_replay(app: Any, desk_id: Any) -> float:
    assert app.repository.cache is None
    return _timed(lambda: app.repository.get(desk_id))


# -- the run ---------------------------------------------------------------------------------
def one_round(n: int, batch: int, commands: int) -> dict[str, float]:
    codec = _codec()
    rows = _rows(codec, n)
    cmd_rows = rows[:commands]
    r: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        r["raw_executemany"] = n / raw_executemany(d, rows, batch)
        r["sqlite_batched"] = n / store_batched(d, rows, batch, "batched")
        r["raw_commit"] = commands / raw_commits(d, cmd_rows)
        r["sqlite_per_command"] = commands / store_per_command(d, cmd_rows)

        sq = Broker.sqlite(
            d / "full.sqlite",
            clock=FixedClock(T0),
            events=DESK_EVENTS,
            synchronous=SYNC,
            allow_clear_pii=True,  # the desk's events hold no personal data
            identity_key=BENCH_IDENTITY_KEY,
        )
        r["sqlite_full_stack_batched"] = n / full_stack_batched(sq, n, batch)
        logged = sq.store.last_position()  # the desk's events, and any the broker adds
        r["raw_scan_decode"] = logged / raw_scan_decode(d / "full.sqlite")
        r["sqlite_replay"] = logged / store_replay(sq.store, sq.codec)
        r["sqlite_aggregate_replay"] = (n + 1) / aggregate_replay(sq)
        sq.close()

        mem = Broker.in_memory(clock=FixedClock(T0), events=DESK_EVENTS, allow_clear_pii=True)
        r["memory_full_stack_batched"] = n / full_stack_batched(mem, n, batch)
        assert isinstance(mem.store, MemoryEventStore)
        r["memory_replay"] = mem.store.last_position() / store_replay(mem.store, mem.codec)
        r["memory_aggregate_replay"] = (n + 1) / aggregate_replay(mem)

        secs, app, desk_id = es_batched(d / "es.sqlite", n, batch)
        r["es_sqlite_batched"] = n / secs
        r["es_sqlite_aggregate_replay"] = (n + 1) / es_replay(app, desk_id)
        secs, app, desk_id = es_batched(None, n, batch)
        r["es_popo_batched"] = n / secs
        r["es_popo_aggregate_replay"] = (n + 1) / es_replay(app, desk_id)
    return r


RATIOS: list[tuple[str, str, str, float | None]] = [
    ("batched append vs raw executemany", "sqlite_batched", "raw_executemany", 0.40),
    ("per-command append vs raw commit", "sqlite_per_command", "raw_commit", 0.60),
    ("replay (read+decode) vs raw scan+json", "sqlite_replay", "raw_scan_decode", 0.35),
    (
        "full-stack batched append vs raw executemany",
        "sqlite_full_stack_batched",
        "raw_executemany",
        None,
    ),
    (
        "SQLite batched append vs eventsourcing",
        "sqlite_full_stack_batched",
        "es_sqlite_batched",
        2.5,
    ),
    (
        "SQLite aggregate replay vs eventsourcing",
        "sqlite_aggregate_replay",
        "es_sqlite_aggregate_replay",
        2.0,
    ),
    (
        "memory batched append vs eventsourcing POPO",
        "memory_full_stack_batched",
        "es_popo_batched",
        2.5,
    ),
    (
        "memory aggregate replay vs eventsourcing POPO",
        "memory_aggregate_replay",
        "es_popo_aggregate_replay",
        2.0,
    ),
]


def main(argv: list[str] | None = None) -> int:
    return run_rounds(__doc__, argv, one_round, RATIOS, f"synchronous={SYNC}")


if __name__ == "__main__":
    raise SystemExit(main())
