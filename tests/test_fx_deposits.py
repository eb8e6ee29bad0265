"""Deposits in another currency than the wallet: converted when the PSP confirms, at the
broker's deposit rate then; the markup booked as FX revenue; credited once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from fxcrm_core.broker import Broker
from fxcrm_core.fx import Direction, Pricing, StaleRateError
from fxcrm_core.kernel import ExchangeRate, FixedClock, Money, RateTable, ValidationError
from fxcrm_core.payments import CallbackOutcome, Deposits, DepositStatus, PaymentLimits
from fxcrm_core.privacy import MasterKeyring
from tests.fx_world import CHECKER, MAKER
from tests.test_deposits import T0, world

LIMITS = PaymentLimits([Money.of(10_000, "USD"), Money.of(70_000, "CNY")])


class FxWorld:
    """A broker whose deposits know the broker's rates (wired here as the broker would)."""

    def __init__(self) -> None:
        self.market = RateTable()
        self.broker, self.cid, self.me = world(
            broker=Broker.in_memory(
                clock=FixedClock(T0),
                keyring=MasterKeyring.generate(),
                payment_limits=LIMITS,
                rates=self.market,
            )
        )
        self.rates = self.broker.fx_rates
        self.deposits = self.broker.deposits
        self.usdcny("7.1000")
        change = self.rates.set_pricing(
            MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(500), reason="launch"
        )
        assert change.approval_id is not None  # 0.7% from the market: a second person
        self.approve(change.approval_id)

    def approve(self, approval_id: str) -> None:
        self.broker.approvals.approve(CHECKER, approval_id)

    def usdcny(self, rate: str) -> None:
        self.market.add(ExchangeRate.of("USD", "CNY", rate, "lp", self.broker.clock.now()))

    def later(self, minutes: int) -> None:
        self.broker.clock.advance(timedelta(minutes=minutes))  # type: ignore[attr-defined]

    def balance(self, account: str) -> Money:
        return self.broker.ledger.balance(account).net_credit

    def deposit(self, cny: str) -> str:
        return self.deposits.initiate(
            self.me, self.cid, Money.of(cny, "CNY"), psp="unionpay", method="bank", into="USD"
        )


def test_a_cny_deposit_into_a_usd_wallet_credits_once_and_books_the_markup() -> None:
    w = FxWorld()
    dep = w.deposit("7000.00")
    assert w.deposits.psp_confirmed(dep, "up-1", Money.of("7000.00", "CNY")) is (
        CallbackOutcome.APPLIED
    )
    assert w.deposits.psp_confirmed(dep, "up-1", Money.of("7000.00", "CNY")) is (
        CallbackOutcome.DUPLICATE
    )
    wallet = f"wallet:{w.cid}:USD"
    assert w.balance(wallet) == Money.of("979.02", "USD")  # 7000 / 7.1500, rounded down
    assert w.balance("fx_revenue:USD") == Money.of("6.89", "USD")  # 985.91 at market, less
    accounts = ["psp_clearing:CNY", wallet, "fx_position:CNY", "fx_position:USD", "fx_revenue:USD"]
    balances = w.broker.ledger.balances(accounts)
    for code in ("USD", "CNY"):
        total = sum(
            (b.net_credit for b in balances.values() if b.currency.code == code),
            Money.zero(code),
        )
        assert total.is_zero()
    d = w.deposits.get(dep)
    assert d.status is DepositStatus.CREDITED
    assert d.credited == Money.of("979.02", "USD")
    assert d.conversion is not None
    assert d.conversion.settled == Money.of("7000.00", "CNY")
    assert d.conversion.rate_id == "USD-CNY-deposit@1/lp@2026-03-09T12:00:00+00:00"
    assert d.conversion.market_rate == Decimal("0.14084507042253521126")  # 1 / 7.1, 20 digits
    assert w.deposits.fx.conversion(f"deposit:{dep}").revenue == Money.of("6.89", "USD")


def test_a_conversion_after_a_rate_change_uses_the_new_rate_one_before_the_old() -> None:
    w = FxWorld()
    first, second = w.deposit("7000.00"), w.deposit("7000.00")
    w.deposits.psp_confirmed(first, "up-1", Money.of("7000.00", "CNY"))
    w.later(1)
    w.usdcny("7.1000")
    w.rates.set_pricing(MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(450), reason="r")
    w.deposits.psp_confirmed(second, "up-2", Money.of("7000.00", "CNY"))
    a, b = w.deposits.get(first).conversion, w.deposits.get(second).conversion
    assert a is not None
    assert b is not None
    assert a.rate_id.startswith("USD-CNY-deposit@1/")
    assert b.rate_id.startswith("USD-CNY-deposit@2/")
    assert (a.credited, b.credited) == (Money.of("979.02", "USD"), Money.of("979.70", "USD"))


def test_a_stale_rate_at_confirmation_writes_nothing_and_a_retry_credits() -> None:
    w = FxWorld()
    dep = w.deposit("7000.00")
    w.later(6)
    with pytest.raises(StaleRateError):
        w.deposits.psp_confirmed(dep, "up-1", Money.of("7000.00", "CNY"))
    assert w.deposits.get(dep).status is DepositStatus.INITIATED
    w.usdcny("7.2000")
    assert w.deposits.psp_confirmed(dep, "up-1", Money.of("7000.00", "CNY")) is (
        CallbackOutcome.APPLIED
    )
    assert w.balance(f"wallet:{w.cid}:USD") == Money.of("965.51", "USD")  # 7000 / 7.2500


def test_a_contradicting_confirmation_moves_no_money() -> None:
    w = FxWorld()
    dep = w.deposit("7000.00")
    assert w.deposits.psp_confirmed(dep, "up-1", Money.of("7000.00", "USD")) is (
        CallbackOutcome.CONFLICT
    )
    assert w.deposits.psp_confirmed(dep, "up-1", Money.of("7000.00", "CNY")) is (
        CallbackOutcome.APPLIED
    )
    assert w.deposits.psp_confirmed(dep, "up-2", Money.of("7000.00", "CNY")) is (
        CallbackOutcome.CONFLICT
    )
    assert w.balance(f"wallet:{w.cid}:USD") == Money.of("979.02", "USD")
    assert w.deposits.get(dep).conflicts == 2


def test_another_currency_needs_the_brokers_rates_and_a_priced_pair() -> None:
    broker, cid, me = world()
    plain = Deposits(broker.repository, broker.ledger, broker.access, broker.kyc, LIMITS)
    with pytest.raises(ValidationError):
        plain.initiate(me, cid, Money.of(100, "CNY"), psp="p", method="m", into="USD")
    w = FxWorld()
    with pytest.raises(ValidationError):  # too small to convert (under 1.00 USD)
        w.deposit("5.00")
