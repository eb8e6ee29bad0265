"""The benchmark scripts keep running (tiny sizes): figures are only reported, never asserted."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_script(
    name: str, *args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run a benchmark script as ``python benchmarks/<name> --quick ...``; returns its output."""
    script = BENCHMARKS / name
    monkeypatch.setattr(sys, "argv", [str(script), "--quick", *args])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_benchmark_runs_and_reports_every_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    printed = run_script(
        "bench_event_store.py", "--json", str(out), monkeypatch=monkeypatch, capsys=capsys
    )
    report = json.loads(out.read_text())
    assert len(report["ratios"]) == 8
    assert all(r["ratio"] > 0 for r in report["ratios"].values())
    assert "batched append vs raw executemany" in printed


@pytest.mark.slow
def test_encryption_benchmark_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_script("bench_encryption.py", monkeypatch=monkeypatch, capsys=capsys)
    assert out.count("every event has 3 PII fields") == 2
    assert out.count("1 event in 10 has PII") == 2


@pytest.mark.slow
def test_ledger_benchmark_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_script("bench_ledger.py", monkeypatch=monkeypatch, capsys=capsys)
    assert "SQLite ledger / raw sqlite3 (FULL" in out
    assert "memory ledger / raw Decimal arithmetic" in out


@pytest.mark.slow
def test_rebate_benchmark_runs_and_agrees_with_the_hand_written_loop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_script("bench_rebates.py", monkeypatch=monkeypatch, capsys=capsys)
    assert "(agree)" in out  # the script exits non-zero when the two disagree
    assert "ratio SDK / hand-written loop" in out


@pytest.mark.slow
def test_rebate_memory_mode_runs_days_with_a_settlement_horizon(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_script(
        "bench_rebates.py", "--days", "4", "--horizon", "1", "--cap", "day",
        monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert "RSS MB" in out
    assert len([line for line in out.splitlines() if line.strip().startswith("4 ")]) == 1


@pytest.mark.slow
def test_masking_benchmark_runs_and_reports_its_ratio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_script("bench_masking.py", monkeypatch=monkeypatch, capsys=capsys)
    assert "ratio masked / unmasked:" in out
    assert "200 client views on SQLite, support role" in out


@pytest.mark.slow
def test_loyalty_benchmark_runs_and_agrees_with_the_hand_written_loop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_script(
        "bench_loyalty.py", "--clients", "60", "--deals", "3000", "--no-cache",
        monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert "decisions SDK vs loop: agree" in out  # the script exits non-zero when they differ
    assert "ratio SDK / hand-written loop, re-evaluation" in out
    assert "peak RSS" in out
