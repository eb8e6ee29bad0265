"""The benchmark script keeps running (tiny sizes): figures are only reported, never asserted."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_event_store.py"


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
