"""The demo's broker day: it runs and reports, and its answers are the same on one broker, with
a fresh process after every command, and across two live processes (the parity harness)."""

from __future__ import annotations

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
    # rate) + 2500 by wire - 300 to Chen
    assert figures["wallet"] == "4172.02 USD"
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
