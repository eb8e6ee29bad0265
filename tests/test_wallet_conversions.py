"""A client converts between its own wallets at the broker's internal conversion rate (issue 20,
item 1's third direction): the markup booked as FX revenue, both amounts and the rate id
recorded, a retry answers the same conversion, and the FX revenue never goes below zero."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.fx import Direction, Pricing, PricingNotSetError, StaleRateError
from fxcrm_core.kernel import (
    AccessDeniedError,
    Currency,
    ExchangeRate,
    FixedClock,
    IdempotencyConflictError,
    Money,
    RateTable,
    ValidationError,
)
from fxcrm_core.ledger import ExceedsLimitError
from fxcrm_core.payments import PaymentLimits
from fxcrm_core.privacy import MasterKeyring
from tests.test_deposits import T0, world

FINANCE, CHECKER = Actor.staff("fin-1", Role.FINANCE), Actor.staff("fin-2", Role.FINANCE)
USD, EUR = Currency.of("USD"), Currency.of("EUR")


class Desk:
    """Ana with 1,000 USD, EUR/USD at 1.0800 and the broker's conversion markup of 20 pips."""

    def __init__(self, pips: int = 20) -> None:
        self.market = RateTable()
        self.clock = FixedClock(T0)
        self.broker, self.cid, self.me = world(
            broker=Broker.in_memory(
                clock=self.clock,
                keyring=MasterKeyring.generate(),
                payment_limits=PaymentLimits([Money.of(10_000, "USD"), Money.of(10_000, "EUR")]),
                rates=self.market,
            )
        )
        self.eurusd("1.0800")
        dep = self.broker.deposits.initiate(self.me, self.cid, usd(1000), psp="acq", method="card")
        self.broker.deposits.psp_confirmed(dep, "ref-1", usd(1000))
        change = self.broker.fx_rates.set_pricing(
            FINANCE, "EUR", "USD", Direction.CONVERSION, Pricing.pips(pips), reason="launch"
        )
        if change.approval_id is not None:
            self.broker.approvals.approve(CHECKER, change.approval_id)

    def eurusd(self, rate: str) -> None:
        self.market.add(ExchangeRate.of("EUR", "USD", rate, "lp", self.clock.now()))

    def wallet(self, currency: Currency) -> Money:
        money = self.broker.conversions.money
        return self.broker.ledger.balance(money.wallet(self.cid, currency)).net_credit

    def revenue(self, currency: Currency) -> Money:
        return self.broker.ledger.balance(self.broker.fx.revenue(currency)).net_credit


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def test_a_conversion_books_both_amounts_the_rate_and_the_markup_once() -> None:
    d = Desk()
    done = d.broker.conversions.convert(d.me, "c-1", d.cid, usd(108), "EUR")
    # The client buys EUR at the ask (1.0820): 108 / 1.0820 = 99.81..., rounded down.
    assert done.sold == usd(108)
    assert done.bought == Money.of("99.81", "EUR")
    # The rate is recorded as sold-to-bought (USD to EUR): the inverse of the 1.0820 ask.
    assert (1 / done.client_rate).quantize(Decimal("0.0001")) == Decimal("1.0820")
    assert done.rate_id.startswith("EUR-USD-conversion@")
    assert (d.wallet(USD), d.wallet(EUR)) == (usd(892), Money.of("99.81", "EUR"))
    assert d.revenue(EUR) == done.revenue == Money.of("0.19", "EUR")  # 100.00 at the market
    d.eurusd("1.2000")  # the market moves; the app retries after a timeout
    assert d.broker.conversions.convert(d.me, "c-1", d.cid, usd(108), "EUR") == done
    assert (d.wallet(USD), d.wallet(EUR)) == (usd(892), Money.of("99.81", "EUR"))
    with pytest.raises(IdempotencyConflictError):
        d.broker.conversions.convert(d.me, "c-1", d.cid, usd(109), "EUR")


def test_an_exact_quotient_is_not_lost_to_a_rounded_inverse() -> None:
    """108.20 USD at the 1.0820 ask buys exactly 100.00 EUR: divided, not multiplied by a
    floored 1/1.0820 (which gave 99.99, a cent to the house the rate does not give it)."""
    d = Desk()
    done = d.broker.conversions.convert(d.me, "c-1", d.cid, usd("108.20"), "EUR")
    assert done.bought == Money.of("100.00", "EUR")
    assert done.market_value == Money.of("100.18", "EUR")  # 108.20 / 1.0800 = 100.185...
    assert done.revenue == Money.of("0.18", "EUR")


@pytest.mark.parametrize(
    ("why", "call", "error"),
    [
        ("more than the wallet", lambda d: d.broker.conversions.convert(
            d.me, "x", d.cid, usd(1001), "EUR"), ExceedsLimitError),
        ("into the same currency", lambda d: d.broker.conversions.convert(
            d.me, "x", d.cid, usd(5), "USD"), ValidationError),
        ("an unpriced pair", lambda d: d.broker.conversions.convert(
            d.me, "x", d.cid, usd(5), "GBP"), PricingNotSetError),
        ("another client's wallet", lambda d: d.broker.conversions.convert(
            Actor.client("someone"), "x", d.cid, usd(5), "EUR"), AccessDeniedError),
        ("a float", lambda d: d.broker.conversions.convert(
            d.me, "x", d.cid, 5.0, "EUR"), ValidationError),
        ("a stale market rate", lambda d: (d.clock.advance(timedelta(hours=1)),
            d.broker.conversions.convert(d.me, "x", d.cid, usd(5), "EUR")), StaleRateError),
    ],
)  # fmt: skip
def test_a_refused_conversion_moves_nothing(why: str, call: object, error: type[Exception]) -> None:
    d = Desk()
    with pytest.raises(error):
        call(d)  # type: ignore[operator]
    assert d.wallet(USD) == usd(1000), why


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.decimals(min_value=Decimal("0.01"), max_value=Decimal(400), places=2),
            st.decimals(min_value=Decimal("0.9"), max_value=Decimal("1.3"), places=4),
        ),
        max_size=10,
    ),
    st.integers(min_value=0, max_value=50),
)
def test_no_sequence_of_conversions_takes_the_fx_revenue_below_zero_or_makes_money(
    moves: list[tuple[bool, Decimal, Decimal]], pips: int
) -> None:
    d = Desk(pips)
    for n, (to_eur, amount, rate) in enumerate(moves):
        d.eurusd(str(rate))
        sold = usd(str(amount)) if to_eur else Money.of(str(amount), "EUR")
        with contextlib.suppress(ExceedsLimitError, ValidationError):
            d.broker.conversions.convert(d.me, f"c-{n}", d.cid, sold, "EUR" if to_eur else "USD")
    for currency in (USD, EUR):
        assert not d.revenue(currency).is_negative()
        assert not d.wallet(currency).is_negative()
        # Per currency the books balance: what the client holds plus the broker's revenue and
        # position is what came in by deposit (1,000 USD, no EUR).
        accounts = [
            d.broker.conversions.money.wallet(d.cid, currency),
            d.broker.fx.revenue(currency),
            d.broker.fx.position(currency),
        ]
        held = sum((d.broker.ledger.balance(a).net_credit.amount for a in accounts), Decimal(0))
        assert held == (Decimal(1000) if currency == USD else Decimal(0))
