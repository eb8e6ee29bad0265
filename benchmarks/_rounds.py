"""What the event-store benchmarks share: their command line, their rounds, and their report
(throughput medians, then each ratio as the median of the rounds' own ratios, with its target)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Ratio = tuple[str, str, str, float | None]  # (label, ours, baseline, target or None)


def run_rounds(
    doc: str | None,
    argv: list[str] | None,
    one_round: Callable[[int, int, int], dict[str, float]],
    ratios: Sequence[Ratio],
    settings: str,
) -> int:
    """Parse ``--quick/--rounds/--json``, run the rounds, print the report; returns 0."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    n, batch, commands, rounds = (
        (600, 100, 30, 1) if args.quick else (20_000, 1_000, 300, args.rounds or 5)
    )
    print(
        f"events per round {n}, batch {batch}, commands {commands}, rounds {rounds}, "
        f"{settings}, python {sys.version.split()[0]}, cpus {os.cpu_count()}"
    )
    results = [one_round(n, batch, commands) for _ in range(rounds)]
    print(f"\n{'throughput (median, events/s)':<40}{'':>14}")
    for key in results[0]:
        print(f"  {key:<38}{statistics.median(r[key] for r in results):>14,.0f}")
    print(f"\n{'ratio (median of paired rounds)':<48}{'ratio':>8}{'target':>9}")
    report: dict[str, Any] = {"throughput": {}, "ratios": {}}
    missed = 0
    for label, ours, base, target in ratios:
        ratio = statistics.median(r[ours] / r[base] for r in results)
        mark = "" if target is None else ("  met" if ratio >= target else "  MISSED")
        missed += target is not None and ratio < target
        shown = "-" if target is None else f">= {target:g}"
        print(f"  {label:<46}{ratio:>8.2f}{shown:>9}{mark}")
        report["ratios"][label] = {"ratio": ratio, "target": target}
    for key in results[0]:
        report["throughput"][key] = statistics.median(r[key] for r in results)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(f"\n{missed} ratio(s) MISSED" if missed else "\nall ratios meet their targets")
    return 0
