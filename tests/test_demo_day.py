"""The demo's broker day: it runs and reports, and its answers are the same on one broker, with
a fresh process after every command, and across two live processes (the parity harness)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import pytest

from fxcrm_core import demo
from fxcrm_core.testing.parity import Scenario, Step, assert_parity


def test_the_demo_day_runs_and_a_new_process_agrees(tmp_path: Path) -> None:
    lines: list[str] = []
    figures = demo.run_demo(tmp_path / "broker.sqlite", lines.append)
    report = "\n".join(lines)
    assert "answered again from the log alone: equal" in report
    assert figures["stage"] == "dormant"  # funded, active, then 95 quiet days
    assert figures["introducer"] == "ib-north"
    assert figures["kyc_level"] == figures["recorded_level"] == 3
    # 5000 - 3000 to trading - 1000 - 7.00 fee + 979.02 (7000 CNY at the broker's deposit
    # rate) + 2500 by wire - 300 to Chen + 500 back from trading + 1.00 for 100 points + the
    # day's cashback, paid the next trading day
    (day, payable, rates), *more = figures["cashback_fixed"]
    assert (day, more) == ("2026-03-06", [])
    assert figures["cashback_paid"] == payable
    cashback = Decimal(payable.removesuffix(" USD"))
    lots = {Decimal(rate.removesuffix(" USD")): Decimal(n) for rate, n in rates}
    exact = sum((r * n for r, n in lots.items()), Decimal(0))
    assert cashback == exact.quantize(Decimal("0.01"), ROUND_DOWN)
    # Gold's rate: the demo's deals are timed at the instant (its fixed clock) the tier rose
    assert set(lots) == {Decimal("1.00")}
    assert figures["wallet"] == f"{Decimal('4673.02') + cashback} USD"
    # Gold at once on the day's lots, a week's grace after March, bronze; the IB rank set by
    # hand (2), senior partner (3) from the next trading day's start, partner after a quiet April
    assert figures["tier_history"] == ["gold (upgrade_at_once)", "bronze (grace_expired)"]
    assert [rank for _, rank in figures["ib_rank_history"]] == [2, 3, 1]
    assert figures["points"] == "0"  # every lot expired after 60 days
    assert Decimal(figures["bonus_credit"]) < 100  # burnt pro rata on the 500 taken back
    assert figures["rebate_entries"] > 0
    assert all(lag == 0 for lag in figures["policy_lag"].values())


def demo_day() -> Scenario:
    return Scenario(
        build="fxcrm_core.demo:open_demo_broker",
        steps=[Step(step.title, step.ref, *step.args) for step in demo.DAY],
        probes=["fxcrm_core.demo:figures"],
        probe_every_step=False,
        name="the demo's broker day",
    )


@pytest.mark.slow
def test_the_demo_day_gives_the_same_answers_however_it_is_spread_over_processes(
    tmp_path: Path,
) -> None:
    assert_parity(demo_day(), tmp_path, timeout=300)
