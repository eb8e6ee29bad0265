"""IB payouts: rounded once in the IB's currency at a recorded rate, remainder carried, minimum,
cadence and hold, approval above a threshold, posting through the ledger, clawback."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import attrs
import pytest

from fxcrm_core.access import APPROVAL_EVENTS, AccessControl, Actor, Approvals, ApprovalStatus, Role
from fxcrm_core.commissions import Cadence, EntryKind, PayoutPolicy, Payouts, RebateEntry
from fxcrm_core.events import EventCodec, EventRegistry, Repository, iter_all
from fxcrm_core.kernel import (
    Currency,
    ExchangeRate,
    FixedClock,
    Money,
    RateTable,
    UnroundedMoney,
    ValidationError,
)
from fxcrm_core.ledger import LEDGER_EVENTS, Ledger
from fxcrm_core.stores import MemoryEventStore

USD, EUR = Currency.of("USD"), Currency.of("EUR")
MON = date(2026, 3, 9)
RUNNER = Actor.staff("payouts", Role.FINANCE)
CHECKER = Actor.staff("fin-2", Role.FINANCE)


def entry(
    amount: str, day: date = MON, kind: EntryKind = EntryKind.ACCRUAL, ticket: int = 1
) -> RebateEntry:
    money = UnroundedMoney(Decimal(amount), USD)
    return RebateEntry(
        kind, "mt5", ticket, "ib-1", "rebate", money, 1, "c-1", "EURUSD", Decimal(1), day, "test"
    )


def make(policy: PayoutPolicy) -> tuple[Payouts, Ledger, Approvals]:
    registry = EventRegistry()
    registry.register_all((*LEDGER_EVENTS, *APPROVAL_EVENTS))
    repo = Repository(
        MemoryEventStore(FixedClock(datetime(2026, 3, 10, tzinfo=UTC))), EventCodec(registry)
    )
    ledger = Ledger(repo)
    approvals = Approvals(repo, AccessControl())
    rates = RateTable(
        [ExchangeRate.of("USD", "EUR", "0.9213", "ecb", datetime(2026, 3, 1, tzinfo=UTC))]
    )
    return Payouts(ledger, rates, {"ib-1": policy}, approvals=approvals), ledger, approvals


def wallet(ledger: Ledger, cur: str = "USD") -> Money:
    return ledger.balance(f"ib-wallet:ib-1:{cur}").net_credit


def test_rounded_once_down_with_the_remainder_carried() -> None:
    payouts, ledger, _ = make(PayoutPolicy(USD, Money.of(1, "USD")))
    payouts.accrue([entry("12.3456"), entry("0.0011", ticket=2)])
    first = payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    # 12.3456 + 0.0011 = 12.3467: 12.34 paid, 0.0067 carried.
    assert first.paid == Money.of("12.34", "USD")
    assert first.carried.amount == Decimal("0.0067")
    payouts.accrue([entry("0.9933", MON + timedelta(days=1), ticket=3)])
    second = payouts.run(RUNNER, "ib-1", MON + timedelta(days=2))
    assert second.paid == Money.of("1.00", "USD")  # 0.9933 + 0.0067, nothing lost
    assert second.carried.amount == 0
    assert wallet(ledger) == Money.of("13.34", "USD")
    assert ledger.balance("rebate_expense:USD").net_credit == Money.of("-13.34", "USD")


def test_converted_into_the_ib_currency_at_a_recorded_rate() -> None:
    payouts, ledger, _ = make(PayoutPolicy(EUR, Money.of(1, "EUR")))
    payouts.accrue([entry("100")])
    result = payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert result.paid == Money.of("92.13", "EUR")
    assert result.rate_source is not None
    assert "ecb 0.9213" in result.rate_source
    assert wallet(ledger, "EUR") == Money.of("92.13", "EUR")


def test_minimum_cadence_and_hold() -> None:
    payouts, _, _ = make(
        PayoutPolicy(USD, Money.of(50, "USD"), Cadence.WEEKLY, hold=timedelta(days=2))
    )
    payouts.accrue([entry("30", MON), entry("40", date(2026, 3, 13), ticket=2)])
    # On Monday 16 March a weekly payout covers up to Sunday 15; the 2-day hold moves the
    # cut-off to Friday 13: both entries count, 70 >= 50.
    assert payouts.run(RUNNER, "ib-1", date(2026, 3, 16)).paid == Money.of(70, "USD")
    payouts.accrue([entry("30", date(2026, 3, 16), ticket=3)])
    below = payouts.run(RUNNER, "ib-1", date(2026, 3, 23))
    assert below.paid is None  # 30 < the 50 minimum: carried
    assert below.carried.amount == Decimal(30)
    payouts.accrue([entry("25", date(2026, 3, 20), ticket=4), entry("5", date(2026, 3, 30))])
    assert payouts.pending("ib-1") == [
        (date(2026, 3, 20), UnroundedMoney(Decimal(25), USD)),
        (date(2026, 3, 30), UnroundedMoney(Decimal(5), USD)),
    ]
    # On 30 March the cut-off is Friday 27 (Sunday 29 less the hold): the 30th waits.
    assert payouts.run(RUNNER, "ib-1", date(2026, 3, 30)).paid == Money.of(55, "USD")
    assert payouts.pending("ib-1") == [(date(2026, 3, 30), UnroundedMoney(Decimal(5), USD))]


def test_large_payouts_wait_for_a_second_person() -> None:
    payouts, ledger, approvals = make(
        PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(1000, "USD"))
    )
    payouts.accrue([entry("1500")])
    result = payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert result.paid is None
    assert result.approval_id is not None
    assert approvals.approve(CHECKER, result.approval_id).status is ApprovalStatus.EXECUTED
    assert wallet(ledger) == Money.of(1500, "USD")


def test_reversals_claw_back_from_later_payouts() -> None:
    payouts, ledger, _ = make(PayoutPolicy(USD, Money.of(1, "USD")))
    payouts.accrue([entry("100")])
    payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    payouts.accrue([entry("-100", MON + timedelta(days=1), EntryKind.REVERSAL)])
    clawed = payouts.run(RUNNER, "ib-1", MON + timedelta(days=2))
    assert clawed.paid is None
    assert clawed.carried.amount == Decimal(-100)
    payouts.accrue([entry("130", MON + timedelta(days=2), ticket=2)])
    assert payouts.run(RUNNER, "ib-1", MON + timedelta(days=3)).paid == Money.of(30, "USD")
    assert wallet(ledger) == Money.of(130, "USD")


def test_an_ib_without_a_policy_is_refused() -> None:
    payouts, _, _ = make(PayoutPolicy(USD, Money.of(1, "USD")))
    with pytest.raises(ValueError, match="no payout policy"):
        payouts.run(RUNNER, "ib-unknown", MON)


def test_run_all_pays_as_separate_runs_would_in_one_ledger_command_per_chunk() -> None:
    def day_of(payouts: Payouts, ledger: Ledger) -> list[object]:
        for n in range(7):
            ib = f"ib-{n}"
            payouts.policies[ib] = PayoutPolicy(USD, Money.of(5, "USD"))
            payouts.accrue([attrs.evolve(entry(f"{n * 3}.125", ticket=n), ib_id=ib)])
        return []

    separate, ledger_a, _ = make(PayoutPolicy(USD, Money.of(1, "USD")))
    day_of(separate, ledger_a)
    one_by_one = [
        separate.run(RUNNER, ib, MON + timedelta(days=1)) for ib in sorted(separate.policies)
    ]
    batched, ledger_b, _ = make(PayoutPolicy(USD, Money.of(1, "USD")))
    day_of(batched, ledger_b)
    before = ledger_b.repository.store.last_position()
    together = batched.run_all(RUNNER, MON + timedelta(days=1), chunk=3)
    assert together == one_by_one
    paid = [r for r in together if r.paid is not None]
    assert len(paid) == 5  # ib-0 (0.125) and ib-1 (3.125) are below the $5 minimum
    for r in together:
        account = f"ib-wallet:{r.ib_id}:USD"
        if r.paid is not None:
            assert (
                ledger_b.balance(account).net_credit
                == r.paid
                == ledger_a.balance(account).net_credit
            )
    # 5 payouts in chunks of 3: two all-or-nothing ledger commands, linking 3 and 2 transfers.
    codec = ledger_b.repository.codec
    batches = sorted(
        len(codec.decode(s).event.linked) + 1  # type: ignore[attr-defined]
        for s in iter_all(ledger_b.repository.store)
        if s.position > before and s.event_type == "TransferRecorded"
    )
    assert batches == [2, 2, 3, 3, 3]
    with pytest.raises(ValidationError):
        batched.run_all(RUNNER, MON, chunk=0)
