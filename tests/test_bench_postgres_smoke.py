"""The PostgreSQL benchmark keeps running (``--quick``): it completes, prints every ratio with
its target and whether it was met, and drops every database it made. Figures are reported,
never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.pg import pg_blank_dsn

__all__ = ["pg_blank_dsn"]

pytestmark = pytest.mark.postgres

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_postgres.py"
LABELS = [
    "per-command append vs raw BEGIN/INSERT/COMMIT",
    "per-command append vs raw autocommit INSERT",
    "batched append vs raw executemany",
    "batched append vs raw binary COPY",
    "replay (read+decode) vs raw scan+json",
    "full-stack batched append vs raw COPY",
    "PostgreSQL batched append vs eventsourcing",
    "PostgreSQL aggregate replay vs eventsourcing",
]


def _bench_databases(dsn: str, prefix: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_quick_run_completes_prints_every_ratio_and_drops_its_databases(
    pg_blank_dsn: str,  # a server is there (else skip, or fail under FXCRM_REQUIRE_PG=1)
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    # In a process of its own: the eventsourcing library registers the benchmark's aggregate
    # classes by topic (``__main__:EsDesk``), which another benchmark run in this process took.
    run = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    printed, _ = run.communicate(timeout=600)
    assert run.returncode == 0

    report = json.loads(out.read_text())
    assert list(report["ratios"]) == LABELS
    assert all(r["ratio"] > 0 for r in report["ratios"].values())
    assert all(v > 0 for v in report["throughput"].values())
    assert {"raw_tx_commit", "pg_replay", "es_pg_batched"} <= set(report["throughput"])
    for label in LABELS:
        (line,) = [x for x in printed.splitlines() if x.strip().startswith(label)]
        target = report["ratios"][label]["target"]
        if target is None:
            assert line.rstrip().endswith("-")
        else:
            assert line.rstrip().endswith(("met", "MISSED"))
    assert "synchronous_commit=" in printed
    assert ("all ratios meet their targets" in printed) != ("MISSED" in printed)
    # Every database was made under this process's prefix, and none is left.
    assert _bench_databases(pg_blank_dsn, f"fxcrm_bench_{run.pid}_") == []
