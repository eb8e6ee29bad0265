"""A month of IB commissions gives the same statements, payouts and wallets whether the process
restarts after every day's batch, runs as two processes, or never restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fxcrm_core import demo
from fxcrm_core.kernel import FixedClock
from fxcrm_core.testing.parity import Mode, resolve, run_parity
from tests import commission_month


def test_a_month_of_commissions_is_paid_and_stated(tmp_path: Path) -> None:
    broker = demo.open_demo_broker(tmp_path / "month.sqlite", seed=1)
    try:
        clock = broker.clock
        assert isinstance(clock, FixedClock)
        for step in commission_month.scenario().steps:
            if step.at is not None:
                clock.set(step.at)
            resolve(step.call)(broker, *step.args)
        month = commission_month.month(broker)
    finally:
        broker.close()
    assert month["kinds"].get("accrual", 0) > 100
    assert month["kinds"].get("adjustment", 0) + month["kinds"].get("reversal", 0) > 0
    # Before the switch Ana's deals pay ib-north (70%) and ib-apex (30%); after it ib-east.
    assert month["ib-north"]["total"] != "0"
    assert month["ib-east"]["total"] != "0"
    north_days = month["ib-north"]["by_day"]
    east_days = month["ib-east"]["by_day"]
    assert max(north_days) < str(commission_month.SWITCH) <= min(east_days)
    # Every Friday paid what was due (ib-east's policy was set by hand mid-month): nothing is
    # left pending after the last Friday.
    for ib in commission_month.IBS:
        assert month[ib]["wallet"] is not None
        assert month[ib]["payouts"] >= 1
        assert month[ib]["pending"] == []
    assert all(lag == 0 for lag in month["lag"].values())


@pytest.mark.slow
def test_a_month_of_commissions_is_the_same_however_often_the_process_restarts(
    tmp_path: Path,
) -> None:
    report = run_parity(commission_month.scenario(), tmp_path, timeout=600)
    assert report.ok, str(report)
    assert {o.mode for o in report.outcomes} == set(Mode)
