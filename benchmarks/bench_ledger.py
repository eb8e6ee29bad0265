"""Posted ledger transfers per second (one command each), as ratios against baselines measured
in the same run: raw Decimal arithmetic doing the same balance checks and updates, and raw
sqlite3 transactions inserting the same three rows per transfer (the transfer and its two
entries) into the same table, with the same durability setting.

    python benchmarks/bench_ledger.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from fxcrm_core.events import EventCodec, EventRegistry, EventStore, Repository
from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.ledger import LEDGER_EVENTS, Ledger, Limit, TransferRequest
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _plan(n: int, wallets: int, seed: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    return [(*rng.sample(range(wallets), 2), rng.randint(1, 10_000)) for _ in range(n)]  # type: ignore[misc]


def ledger_run(store: EventStore, plan: list[tuple[int, int, int]], wallets: int) -> float:
    registry = EventRegistry()
    registry.register_all(LEDGER_EVENTS)
    ledger = Ledger(Repository(store, EventCodec(registry)), clock=FixedClock(T0))
    ledger.open_account("omnibus", owner="broker", currency="USD", purpose="omnibus")
    for w in range(wallets):
        ledger.open_account(
            f"w{w}",
            owner=f"c{w}",
            currency="USD",
            purpose="wallet",
            limit=Limit.DEBITS_WITHIN_CREDITS,
        )
        ledger.transfer(
            TransferRequest(f"fund-{w}", "omnibus", f"w{w}", Money.of(1_000_000, "USD"))
        )
    requests = [
        TransferRequest(f"t{i}", f"w{a}", f"w{b}", Money.from_minor(cents, "USD"))
        for i, (a, b, cents) in enumerate(plan)
    ]

    def run() -> None:
        for r in requests:
            ledger.transfer(r)

    return _timed(run)


def raw_decimal(plan: list[tuple[int, int, int]], wallets: int) -> float:
    balances = {w: Decimal(1_000_000) for w in range(wallets)}
    cent = Decimal("0.01")

    def run() -> None:
        for a, b, cents in plan:
            amount = cents * cent
            if amount > balances[a]:
                raise RuntimeError("overdraft")
            balances[a] -= amount
            balances[b] += amount

    return _timed(run)


def raw_sqlite(path: Path, plan: list[tuple[int, int, int]], sync: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute(
        "CREATE TABLE t (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, version INTEGER "
        "NOT NULL, event_type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL, "
        "recorded_at INTEGER NOT NULL, UNIQUE (stream_id, version))"
    )
    versions = dict.fromkeys(range(len(plan) + 1), 0)
    meta = b'{"a":"system:ledger","r":"transfer"}'
    transfer = b'{"transfer_id":"t000000","debit_account":"w00","credit_account":"w00",' + (
        b'"amount":"100.00 USD","pending":false,"timeout_at":null,"reverses":null}'
    )
    entry = b'{"transfer_id":"t000000","debit":true,"amount":"100.00 USD","pending":false}'

    def run() -> None:
        for i, (a, b, _) in enumerate(plan):
            versions[a] += 1
            versions[b] += 1
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO t (stream_id, version, event_type, data, metadata, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (f"transfer-t{i}", 1, "TransferRecorded", transfer, meta, 0),
                    (f"ledger-w{a}", versions[a], "EntryRecorded", entry, meta, 0),
                    (f"ledger-w{b}", versions[b], "EntryRecorded", entry, meta, 0),
                ],
            )
            conn.execute("COMMIT")

    return _timed(run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n, wallets, rounds = (60, 10, 1) if args.quick else (2000, 100, args.rounds)
    print(f"{n} transfers between {wallets} wallets, one command each, rounds {rounds}")
    rows: dict[str, list[float]] = {}
    for r in range(rounds):
        plan = _plan(n, wallets, seed=r)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            sync: Literal["FULL", "NORMAL"]
            got = {
                "raw Decimal arithmetic": n / raw_decimal(plan, wallets),
                "memory ledger": n / ledger_run(MemoryEventStore(FixedClock(T0)), plan, wallets),
            }
            for sync in ("FULL", "NORMAL"):
                got[f"raw sqlite3 3 rows/txn ({sync})"] = n / raw_sqlite(
                    d / f"raw-{sync}.sqlite", plan, sync
                )
                store = SqliteEventStore(
                    d / f"l-{sync}.sqlite", clock=FixedClock(T0), synchronous=sync
                )
                got[f"SQLite ledger ({sync})"] = n / ledger_run(store, plan, wallets)
        for k, v in got.items():
            rows.setdefault(k, []).append(v)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n{'transfers/s (median)':<40}{'':>12}")
    for k, v in med.items():
        print(f"  {k:<38}{v:>12,.0f}")
    print("\nratios")
    arithmetic = med["memory ledger"] / med["raw Decimal arithmetic"]
    print(f"  memory ledger / raw Decimal arithmetic     {arithmetic:.4f}")
    for sync in ("FULL", "NORMAL"):
        ratio = med[f"SQLite ledger ({sync})"] / med[f"raw sqlite3 3 rows/txn ({sync})"]
        print(f"  SQLite ledger / raw sqlite3 ({sync:<6})       {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
