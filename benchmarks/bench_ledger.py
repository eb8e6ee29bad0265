"""Posted ledger transfers per second (one command each), as ratios against baselines measured
in the same run: raw Decimal arithmetic doing the same balance checks and updates, and raw
sqlite3 transactions inserting the same three rows per transfer (the transfer and its two
entries, byte for byte as the ledger stores them) into a table of the same shape, with the same
durability setting. The script checks that both files end up holding the same rows, and exits
non-zero if they do not.

    python benchmarks/bench_ledger.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
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

from fxcrm_core.events import EventCodec, EventRegistry, EventStore, Repository, iter_all
from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.kernel.time import to_micros
from fxcrm_core.ledger import LEDGER_EVENTS, Ledger, Limit, TransferRequest
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _plan(n: int, wallets: int, seed: int) -> list[tuple[int, int, int]]:
    """``n`` transfers (from wallet, to wallet, cents) between ``wallets`` wallets."""
    rng = random.Random(seed)
    plan = []
    for _ in range(n):
        a, b = rng.sample(range(wallets), 2)
        plan.append((a, b, rng.randint(1, 10_000)))
    return plan


def ledger_run(
    store: EventStore, plan: list[tuple[int, int, int]], wallets: int
) -> tuple[float, int]:
    """Seconds for the plan's transfers, and the last position of the set-up before them."""
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
    set_up = store.last_position()

    def run() -> None:
        for r in requests:
            ledger.transfer(r)

    return _timed(run), set_up


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


Row = tuple[str, int, str, bytes, bytes, int]
_COLUMNS = "stream_id, version, event_type, data, metadata, recorded_at"
_INSERT = f"INSERT INTO t ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"


def stored_rows(store: MemoryEventStore, set_up: int) -> tuple[list[Row], list[list[Row]]]:
    """The rows a ledger run stored: those of its set-up, and those of each transfer."""
    rows = [
        (e.stream_id, e.version, e.event_type, e.data, e.metadata, to_micros(e.recorded_at))
        for e in iter_all(store)
    ]
    timed = rows[set_up:]
    per_transfer = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert all(t[0][2] == "TransferRecorded" and len(t) == 3 for t in per_transfer)
    return rows[:set_up], per_transfer


def raw_sqlite(path: Path, set_up: list[Row], per_transfer: list[list[Row]], sync: str) -> float:
    """Seconds to insert each transfer's rows in its own transaction (the set-up is untimed)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute(
        "CREATE TABLE t (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, version INTEGER "
        "NOT NULL, event_type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL, "
        "recorded_at INTEGER NOT NULL, UNIQUE (stream_id, version))"
    )
    conn.execute("BEGIN")
    conn.executemany(_INSERT, set_up)
    conn.execute("COMMIT")

    def run() -> None:
        for rows in per_transfer:
            conn.execute("BEGIN")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")

    seconds = _timed(run)
    conn.close()
    return seconds


def same_rows(raw: Path, ledger: Path) -> bool:
    """Whether the baseline's file and the ledger's hold the same rows at the same positions."""
    query = f"SELECT position, {_COLUMNS} FROM {{}} ORDER BY position"
    with (
        contextlib.closing(sqlite3.connect(raw)) as a,
        contextlib.closing(sqlite3.connect(ledger)) as b,
    ):
        return (
            a.execute(query.format("t")).fetchall()
            == b.execute(query.format("fx_events")).fetchall()
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    n, wallets, rounds = (60, 10, 1) if args.quick else (2000, 100, args.rounds)
    print(f"{n} transfers between {wallets} wallets, one command each, rounds {rounds}")
    rows: dict[str, list[float]] = {}
    agree = True
    for r in range(rounds):
        plan = _plan(n, wallets, seed=r)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            sync: Literal["FULL", "NORMAL"]
            memory = MemoryEventStore(FixedClock(T0))
            seconds, set_up = ledger_run(memory, plan, wallets)
            got = {
                "raw Decimal arithmetic": n / raw_decimal(plan, wallets),
                "memory ledger": n / seconds,
            }
            setup_rows, per_transfer = stored_rows(memory, set_up)
            for sync in ("FULL", "NORMAL"):
                raw, led = d / f"raw-{sync}.sqlite", d / f"l-{sync}.sqlite"
                store = SqliteEventStore(led, clock=FixedClock(T0), synchronous=sync)
                # Alternate which goes first, so neither always meets a warmer (or busier) disk.
                for first in (r % 2, 1 - r % 2):
                    if first:
                        got[f"SQLite ledger ({sync})"] = n / ledger_run(store, plan, wallets)[0]
                    else:
                        got[f"raw sqlite3 3 rows/txn ({sync})"] = n / raw_sqlite(
                            raw, setup_rows, per_transfer, sync
                        )
                store.close()
                agree = agree and same_rows(raw, led)
        for k, v in got.items():
            rows.setdefault(k, []).append(v)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n{'transfers/s (median)':<40}{'':>12}")
    for k, v in med.items():
        print(f"  {k:<38}{v:>12,.0f}")
    # A round's figures share that round's noise: each ratio is taken within its round, and the
    # report gives their median and range.
    print("\nratios (median of the rounds' ratios, and their range)")
    pairs = [("memory ledger", "raw Decimal arithmetic", "memory ledger / raw Decimal arithmetic")]
    pairs += [
        (f"SQLite ledger ({sync})", f"raw sqlite3 3 rows/txn ({sync})",
         f"SQLite ledger / raw sqlite3 ({sync:<6})")
        for sync in ("FULL", "NORMAL")
    ]  # fmt: skip
    for ours, base, label in pairs:
        ratios = [a / b for a, b in zip(rows[ours], rows[base], strict=True)]
        digits = 4 if ours == "memory ledger" else 2
        spread = f"{min(ratios):.{digits}f}-{max(ratios):.{digits}f}"
        print(f"  {label:<42}{statistics.median(ratios):>7.{digits}f}   ({spread})")
    print(
        "\nthe baseline wrote the same rows as the ledger"
        if agree
        else "\nthe baseline's rows differ from the ledger's: its figures do not compare"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
