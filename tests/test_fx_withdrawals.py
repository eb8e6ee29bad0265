"""Withdrawals paid out in another currency: the broker's withdrawal rate locked at approval,
the conversion booked when the PSP pays, the markup as FX revenue; nothing converted otherwise."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from fxcrm_core.access import Approvals, ApprovalStatus
from fxcrm_core.fx import BrokerRates, Direction, FxBook, Pricing, StaleRateError
from fxcrm_core.fx import register_events as register_fx_events
from fxcrm_core.kernel import ExchangeRate, Money, RateTable, ValidationError
from fxcrm_core.payments import Withdrawals, WithdrawalStatus
from tests.fx_world import MAKER
from tests.test_withdrawals import FINANCE, SETTINGS, World


def cny(amount: str) -> Money:
    return Money.of(amount, "CNY")


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


class FxWorld(World):
    """The withdrawals world with withdrawals that know the broker's rates (wired here)."""

    def __init__(self, *, rates: bool = True) -> None:
        super().__init__()
        b = self.broker
        register_fx_events(b.registry)
        self.approvals = Approvals(b.repository, b.access, b.ids)
        self.market = RateTable()
        self.rates = BrokerRates(b.repository, self.market, b.access, self.approvals, clock=b.clock)
        self.withdrawals = Withdrawals(
            b.repository, b.ledger, b.access, b.kyc, self.approvals, SETTINGS["payment_limits"],
            daily=SETTINGS["daily_withdrawal_limits"], fees=SETTINGS["withdrawal_fees"],
            clock=b.clock, ids=b.ids, rates=self.rates if rates else None,
            fx=FxBook(b.ledger),
        )  # fmt: skip
        self.usdcny("7.1000")
        self.rates.set_pricing(
            MAKER, "USD", "CNY", Direction.WITHDRAWAL, Pricing.pips(50), reason="launch"
        )

    def usdcny(self, rate: str) -> None:
        self.market.add(ExchangeRate.of("USD", "CNY", rate, "lp", self.broker.clock.now()))

    def later(self, minutes: int) -> None:
        self.broker.clock.advance(timedelta(minutes=minutes))  # type: ignore[attr-defined]

    def request_cny(self, amount: str = "200") -> str:
        return self.withdrawals.request(
            self.me, self.cid, self.iban, usd(amount), payout_currency="CNY"
        )

    def approve_fx(self, withdrawal_id: str) -> ApprovalStatus:
        approval_id = self.withdrawals.get(withdrawal_id).approval_id
        assert approval_id is not None
        return self.approvals.approve(FINANCE, approval_id).status


def test_a_usd_withdrawal_paid_in_cny_converts_at_the_withdrawal_rate() -> None:
    w = FxWorld()
    wd = w.request_cny()
    assert w.approve_fx(wd) is ApprovalStatus.EXECUTED
    quoted = w.withdrawals.get(wd).payout_quote
    assert quoted is not None
    # 200 USD at the bid 7.0950: 1,419.00 CNY; at the market 1,420.00: 1.00 CNY earned
    assert (quoted.payout, quoted.market_value, quoted.revenue) == (
        cny("1419.00"), cny("1420.00"), cny("1.00"),
    )  # fmt: skip
    assert quoted.rate_id.startswith("USD-CNY-withdrawal@1/lp@")
    assert quoted.client_rate == Decimal("7.0950")
    shown = w.withdrawals.view(FINANCE, wd)  # both amounts and the rate, as finance sees it
    assert (shown.amount, shown.payout, shown.rate, shown.rate_id) == (
        usd("200.00"), cny("1419.00"), Decimal("7.0950"), quoted.rate_id,
    )  # fmt: skip
    for _ in range(2):  # the PSP's callback again: nothing more
        assert w.withdrawals.paid(wd, "payout-1").status is WithdrawalStatus.PAID
    assert w.balance(w.wallet) == usd("797.00")  # 200 and the 3.00 fee
    assert w.balance("psp_clearing:CNY") == cny("1419.00")  # what the PSP paid out for us
    assert w.balance("fx_revenue:CNY") == cny("1.00")
    assert w.balance("fx_position:USD") == usd("200.00")
    assert w.balance("fx_position:CNY") == cny("-1420.00")
    accounts = [
        w.wallet, w.clearing, w.fees, "psp_clearing:CNY", "fx_revenue:CNY", "fx_position:USD",
        "fx_position:CNY",
    ]  # fmt: skip
    balances = w.broker.ledger.balances(accounts)
    for code in ("USD", "CNY"):
        assert sum(
            (b.net_credit for b in balances.values() if b.currency.code == code),
            Money.zero(code),
        ).is_zero()
    assert w.withdrawals.fx.conversion(f"withdrawal:{wd}").bought == cny("1419.00")


def test_the_rate_is_locked_at_approval_and_a_change_before_it_applies() -> None:
    w = FxWorld()
    early, late = w.request_cny(), w.request_cny("100")
    w.approve_fx(early)
    w.later(1)
    w.usdcny("7.1000")
    w.rates.set_pricing(MAKER, "USD", "CNY", Direction.WITHDRAWAL, Pricing.pips(100), reason="r")
    w.approve_fx(late)
    w.withdrawals.paid(early, "p-1")
    w.withdrawals.paid(late, "p-2")
    first, second = w.withdrawals.get(early).payout_quote, w.withdrawals.get(late).payout_quote
    assert first is not None
    assert second is not None
    assert (first.payout, first.rate_id.split("/")[0]) == (cny("1419.00"), "USD-CNY-withdrawal@1")
    assert (second.payout, second.rate_id.split("/")[0]) == (cny("709.00"), "USD-CNY-withdrawal@2")


def test_no_rate_no_approval_and_a_cancel_after_approval_converts_nothing() -> None:
    w = FxWorld()
    wd = w.request_cny()
    w.later(6)
    with pytest.raises(StaleRateError):
        w.approve_fx(wd)
    assert w.withdrawals.get(wd).status is WithdrawalStatus.REQUESTED
    w.usdcny("7.1000")
    assert w.approve_fx(wd) is ApprovalStatus.EXECUTED
    w.withdrawals.close(w.me, wd, WithdrawalStatus.CANCELLED, "changed my mind")
    assert w.available() == usd("1000.00")
    assert w.withdrawals.fx.find(f"withdrawal:{wd}") is None
    with pytest.raises(ValidationError):
        FxWorld(rates=False).request_cny()
