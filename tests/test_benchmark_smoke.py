"""The benchmark script keeps running (tiny sizes): figures are only reported, never asserted."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
BENCH = BENCHMARKS / "bench_event_store.py"


@pytest.mark.slow
def test_benchmark_runs_and_reports_every_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--quick", "--json", str(out)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(BENCH), run_name="__main__")
    assert done.value.code == 0
    report = json.loads(out.read_text())
    assert len(report["ratios"]) == 8
    assert all(r["ratio"] > 0 for r in report["ratios"].values())
    assert "batched append vs raw executemany" in capsys.readouterr().out


@pytest.mark.slow
def test_encryption_benchmark_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = BENCHMARKS / "bench_encryption.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--quick"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.count("every event has 3 PII fields") == 2
    assert out.count("1 event in 10 has PII") == 2


@pytest.mark.slow
def test_ledger_benchmark_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = BENCHMARKS / "bench_ledger.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--quick"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "SQLite ledger / raw sqlite3 (FULL" in out
    assert "memory ledger / raw Decimal arithmetic" in out
