"""Import of a MetaTrader5-package deal dump (pandas ``to_csv`` of ``history_deals_get``), in
rows per second and as a ratio to Python's ``csv`` module merely reading the same file in the
same run (median of paired rounds; the import decodes, parses, validates and builds Deals).

    python benchmarks/bench_mt5_import.py [--quick] [--deals N] [--rounds R]
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from fxcrm_core.trading.mt5_package import PACKAGE_FIELDS, read_mt5_package_csv

EET = timedelta(hours=2)
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "EURGBP-2")


def dump(path: Path, count: int, seed: int = 17) -> None:
    """``count`` deals as pandas writes them: an unnamed index column, floats by ``repr``."""
    rng = random.Random(seed)
    t0 = 1_767_225_600  # 2026-01-01, server time
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["", *PACKAGE_FIELDS])
        for n in range(count):
            balance = n % 500 == 0
            msc = (t0 + n * 7) * 1000 + rng.randrange(1000)
            writer.writerow(
                [
                    n,
                    10_000_000 + n,
                    0 if balance else 20_000_000 + n,
                    msc // 1000,
                    msc,
                    2 if balance else n % 2,
                    0 if balance else (n // 2) % 2,
                    0,
                    0 if balance else 30_000_000 + n // 2,
                    3,
                    0.0 if balance else rng.randrange(1, 500) / 100,
                    0.0 if balance else rng.randrange(100_000, 200_000) / 100_000 + 1e-17 * n,
                    0.0 if balance else -rng.randrange(0, 1000) / 100 * 1.0000000000000002,
                    0.0 if balance else rng.randrange(-500, 0) / 100,
                    1000.0 if balance else rng.randrange(-100_000, 100_000) / 100 * 1.1 / 1.1,
                    0.0,
                    "" if balance else SYMBOLS[n % len(SYMBOLS)],
                    "deposit" if balance else "",
                    "",
                ]
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    count, rounds = (500, 1) if args.quick else (args.deals, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deals.csv"
        dump(path, count)
        imports: list[float] = []
        reads: list[float] = []
        ratios: list[float] = []
        for _ in range(rounds):
            started = time.perf_counter()
            rows = sum(1 for _ in csv.reader(io.StringIO(path.read_text("utf-8"), newline="")))
            read = time.perf_counter() - started
            started = time.perf_counter()
            result = read_mt5_package_csv(
                path, login=1001, server="mt5-live", currency="USD", utc_offset=EET
            )
            took = time.perf_counter() - started
            if len(result.deals) != count or result.problems or rows != count + 1:
                print("the import did not read every deal")
                return 1
            imports.append(took)
            reads.append(read)
            ratios.append(took / read)
    best = statistics.median(imports)
    print(f"deals: {count}, rounds: {rounds}")
    print(f"import: {count / best:,.0f} rows/s ({best:.3f} s)")
    print(f"csv.reader alone: {count / statistics.median(reads):,.0f} rows/s")
    print(f"import vs csv.reader reading the same file: {statistics.median(ratios):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
