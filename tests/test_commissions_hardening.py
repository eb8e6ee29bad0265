"""Hardening of IB commissions (issue 13's review): money never stuck nor paid past a ceiling,
payout policies and schedules that cannot be bent, typed errors for hostile arguments. Each
test failed on the code as first built."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from fxcrm_core.commissions import PayoutPolicy, PlanKind, Rule, Schedule
from fxcrm_core.kernel import Currency, Money
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.trading import Deal
from tests.test_payouts import (
    MON,
    RUNNER,
    USD,
    Env,
    RefusingLedger,
    entry,
    make,
    memory,
)

# -- payouts -------------------------------------------------------------------------------------


def test_an_approved_payout_the_ledger_refuses_is_owed_again_and_paid_by_a_later_run() -> None:
    from tests.test_payouts import CHECKER

    policy = PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(1000, "USD"))
    env = Env(memory(), {"ib-1": policy}, ledger=RefusingLedger)
    ledger = env.ledger
    assert isinstance(ledger, RefusingLedger)
    env.accrue(entry("1500"))
    held = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert held.approval_id is not None
    ledger.refused = {"ib-wallet:ib-1:USD"}
    with pytest.raises(FxCrmError):
        env.approvals.approve(CHECKER, held.approval_id)
    ledger.refused = set()
    # The refusal spent payout:ib-1:1; the 1500 must not stay held for ever.
    again = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2))
    if again.approval_id is not None:
        env.approvals.approve(CHECKER, again.approval_id)
    assert env.wallet() == Money.of(1500, "USD")
    assert env.payouts.account("ib-1").held == ()


def test_one_ibs_policy_with_an_enormous_hold_leaves_the_other_ibs_paid() -> None:
    policies = {
        "ib-1": PayoutPolicy(USD, Money.of(1, "USD")),
        "ib-2": PayoutPolicy(USD, Money.of(1, "USD")),
    }
    env = Env(memory(), policies)
    env.accrue(entry("10", ib="ib-1"), entry("20", ticket=2, ib="ib-2"))
    env.payouts.ensure_policies()
    huge = PayoutPolicy(USD, Money.of(1, "USD"), hold=timedelta(days=999_999_999))
    try:
        env.payouts.set_policy(RUNNER, "ib-1", huge, reason="dispute")
    except ValidationError:
        return  # refused when set: fine
    results = {r.ib_id: r for r in env.payouts.run_all(RUNNER, MON + timedelta(days=1))}
    assert results["ib-2"].paid == Money.of(20, "USD")
    assert results["ib-1"].paid is None


def test_a_payout_policy_set_by_hand_before_the_first_run_is_not_overridden_by_configuration() -> (
    None
):
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("100"))
    # Finance puts this IB's payouts under approval before any run recorded the configuration.
    guarded = PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(50, "USD"))
    env.payouts.set_policy(RUNNER, "ib-1", guarded, reason="under review")
    assert env.payouts.policy("ib-1") == guarded
    result = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert result.paid is None  # waits for a second person, as set by hand
    assert result.approval_id is not None
    assert env.payouts.policy("ib-1") == guarded


@pytest.mark.parametrize("today", ["2026-03-10", None, datetime(2026, 3, 10, tzinfo=UTC), 20260310])
def test_a_payout_run_on_a_day_that_is_not_a_date_is_a_typed_error(today: object) -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("100"))
    with pytest.raises(FxCrmError):
        env.payouts.run(RUNNER, "ib-1", today)  # type: ignore[arg-type]
    with pytest.raises(FxCrmError):
        env.payouts.run_all(RUNNER, today)  # type: ignore[arg-type]
    assert env.wallet() == Money.of(0, "USD")


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.run_all(RUNNER, MON + timedelta(days=1), [None, "ib-1"]),
        lambda p: p.run_all(RUNNER, MON + timedelta(days=1), chunk=1.5),
        lambda p: p.run_all(RUNNER, MON + timedelta(days=1), chunk="2"),
        lambda p: p.run(None, "ib-1", MON + timedelta(days=1)),
    ],
)
def test_payout_runs_refuse_arguments_of_the_wrong_kind_with_typed_errors(call: object) -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("100"))
    with pytest.raises(FxCrmError):
        call(env.payouts)  # type: ignore[operator]
    assert env.wallet() == Money.of(0, "USD")


def test_a_negative_approval_threshold_is_refused() -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    odd = PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(-5, "USD"))
    with pytest.raises(ValidationError):
        env.payouts.set_policy(RUNNER, "ib-1", odd, reason="typo")


# -- the settlement horizon ----------------------------------------------------------------------


# -- the revenue ceiling -------------------------------------------------------------------------


def _mt5(currency: str, commission: str) -> Deal:
    record = {
        "Deal": 1, "Login": 7, "Action": 0, "Entry": 1, "Symbol": "EURUSD", "Volume": 20_000,
        "VolumeClosed": 20_000, "Commission": commission, "Time": 1_773_050_400,
    }  # fmt: skip
    return Deal.from_mt5(record, server="mt5", currency=currency, utc_offset=timedelta(hours=2))


def test_a_commission_ceiling_is_not_skipped_for_a_deal_in_another_currency() -> None:
    schedule = Schedule(
        "std", 1, datetime(2026, 1, 1, tzinfo=UTC), Currency.of("USD"),
        default=Rule(PlanKind.PER_LOT, Money.of(10, "USD")),
    )  # fmt: skip
    usd_line = schedule.line(_mt5("USD", "-1.00"), "std")
    assert usd_line is not None
    assert usd_line.pool.amount == Decimal("1.00")  # limited to the 1.00 commission
    # The same deal on a EUR account: the broker earned 1 EUR; a 20 USD rebate is not
    # "limited to the broker's revenue". Refused (typed) or limited, never paid uncapped.
    try:
        eur_line = schedule.line(_mt5("EUR", "-1.00"), "std")
    except FxCrmError:
        return
    assert eur_line is None or eur_line.pool.amount < Decimal(20)


# -- ids ------------------------------------------------------------------------------------------


def test_an_id_made_of_blanks_is_refused() -> None:
    from fxcrm_core.commissions.tree import check_id

    for blank in (" ", "   ", "\u3000"):
        with pytest.raises(ValidationError):
            check_id(blank, "an IB id")


# -- the rebate book -----------------------------------------------------------------------------


def test_a_sub_cent_remainder_does_not_stop_an_ibs_payouts_after_a_currency_change() -> None:
    from tests.test_payouts import EUR

    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("10.004"))
    first = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert first.paid == Money.of(10, "USD")  # 0.004 USD carried: it can never be paid out
    # The host moves this IB to EUR wallets; it keeps trading.
    env.payouts.policies["ib-1"] = PayoutPolicy(EUR, Money.of(1, "EUR"))
    env.accrue(entry("100", MON + timedelta(days=1), ticket=2))
    later = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=3))
    assert later.paid is not None  # paid in EUR, not refused on every run for 0.004 USD
    assert later.paid.currency == EUR


# -- schedule versions ---------------------------------------------------------------------------


def test_ensure_cannot_record_a_version_taking_effect_before_rates_already_in_force() -> None:
    from fxcrm_core.stores import MemoryEventStore
    from tests.test_schedule_service import ADMIN, APR, JAN, MAR, service, version

    store = MemoryEventStore()
    service(store, now=JAN).record(ADMIN, version(1, JAN), reason="launch")
    # In April a person with ib.schedule "ensures" a version 2 that took effect in March:
    # March's deals were paid at version 1's rates, and record() refuses this very version.
    later = service(store, now=APR)
    with pytest.raises(ValidationError):
        later.record(ADMIN, version(2, MAR, eurusd="9"), reason="backdated")
    with pytest.raises(ValidationError):
        later.ensure(ADMIN, [version(1, JAN), version(2, MAR, eurusd="9")], reason="backdated")
    assert later.as_of("std", MAR + timedelta(days=14)) == version(1, JAN)


@pytest.mark.parametrize("bad", [5, ["a"], None, " ", "ib\x00"])
def test_payout_reads_refuse_an_id_that_is_not_one(bad: object) -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    for read in (env.payouts.account, env.payouts.pending, env.payouts.policy):
        with pytest.raises(ValidationError):
            read(bad)  # type: ignore[arg-type]


def test_recording_the_configured_policies_needs_a_reason() -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    before = env.store.last_position()
    for reason in (None, "", "  "):
        with pytest.raises(ValidationError):
            env.payouts.ensure_policies(reason=reason)  # type: ignore[arg-type]
    assert env.store.last_position() == before
