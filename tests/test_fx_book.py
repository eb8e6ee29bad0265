"""Conversions at the broker's rates, booked in the ledger: single-currency transfers through
the FX positions, the markup as revenue; no sequence of deposits, conversions and withdrawals
at rates with a markup >= 0 takes the broker's FX accounts below zero."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fxcrm_core.fx import Direction, FxConversion, Pricing
from fxcrm_core.kernel import (
    AmountBelowMinimumError,
    Currency,
    IdempotencyConflictError,
    Money,
    Rounding,
)
from fxcrm_core.ledger import Limit
from tests.fx_world import MAKER, Desk

USD, EUR, CNY = (Currency.of(c) for c in ("USD", "EUR", "CNY"))
CURRENCIES = (USD, EUR, CNY)


def trial_balance(desk: Desk, accounts: set[str]) -> dict[str, Money]:
    totals: dict[str, Money] = {}
    for a in accounts:
        b = desk.ledger.balance(a)
        totals[b.currency.code] = totals.get(b.currency.code, Money.zero(b.currency)) + (
            b.net_credit
        )
    return totals


def test_a_cny_deposit_into_usd_books_the_markup_as_revenue() -> None:
    desk = Desk()
    desk.rates.approval_threshold = Decimal("0.01")
    desk.market_rate("USD/CNY", "7.1000")
    desk.rates.set_pricing(MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(500), reason="r")
    clearing = desk.ledger.open_account("psp:CNY", owner="broker", currency="CNY", purpose="psp")
    wallet = desk.ledger.open_account(
        "w:USD", owner="c-1", currency="USD", purpose="wallet", limit=Limit.DEBITS_WITHIN_CREDITS
    )
    quote = desk.rates.quote_between("CNY", "USD", Direction.DEPOSIT)
    settled = desk.book.settle(Money.of("7000.00", "CNY"), "USD", quote)
    # 7000 / 7.1500 = 979.02..., at market 7000 / 7.1 = 985.91...: both rounded down
    assert settled.bought == Money.of("979.02", "USD")
    assert settled.market_value == Money.of("985.91", "USD")
    assert settled.revenue == Money.of("6.89", "USD")
    booked = desk.book.book("dep-1", settled, source=clearing.id, target=wallet.id)
    record = booked.record
    assert not booked.replayed
    assert record.rate_id == quote.rate_id
    assert desk.ledger.balance("w:USD").net_credit == Money.of("979.02", "USD")
    assert desk.ledger.balance("fx_revenue:USD").net_credit == Money.of("6.89", "USD")
    assert desk.ledger.balance("fx_position:CNY").net_credit == Money.of("7000.00", "CNY")
    accounts = {"psp:CNY", "w:USD", "fx_revenue:USD", "fx_position:CNY", "fx_position:USD"}
    assert all(t.is_zero() for t in trial_balance(desk, accounts).values())
    again = desk.book.book("dep-1", settled, source=clearing.id, target=wallet.id)
    assert again.record == record
    assert again.replayed
    assert desk.ledger.balance("w:USD").net_credit == Money.of("979.02", "USD")  # once
    other = desk.book.settle(Money.of("7000.01", "CNY"), "USD", quote)
    with pytest.raises(IdempotencyConflictError):
        desk.book.book("dep-1", other, source=clearing.id, target=wallet.id)
    assert desk.repository.get(FxConversion, "dep-1").recorded == record


def test_a_zero_markup_books_only_the_rounding_and_a_tiny_amount_is_refused() -> None:
    desk = Desk()
    desk.market_rate("USD/CNY", "7.1000")
    desk.rates.set_pricing(MAKER, "USD", "CNY", Direction.WITHDRAWAL, Pricing.pips(0), reason="r")
    quote = desk.rates.quote("USD", "CNY", Direction.WITHDRAWAL)
    settled = desk.book.settle(Money.of("100.00", "USD"), "CNY", quote)
    assert (settled.bought, settled.revenue) == (Money.of("710.00", "CNY"), Money.zero("CNY"))
    assert len(desk.book.transfers("x", settled, source="a", target="b")) == 2
    with pytest.raises(AmountBelowMinimumError):
        desk.book.settle(Money.of("0.10", "USD"), "CNY", quote)


# -- the law ---------------------------------------------------------------------------------

_markups = st.one_of(
    st.integers(0, 800).map(Pricing.pips),
    st.decimals(0, 3, places=3).map(Pricing.percent),
)
_amounts = st.integers(1, 2_000_000).map(lambda n: Decimal(n).scaleb(-2))


@settings(max_examples=60, deadline=None)
@given(
    usdcny=st.integers(60_000, 80_000).map(lambda n: Decimal(n).scaleb(-4)),
    eurusd=st.integers(9_000, 13_000).map(lambda n: Decimal(n).scaleb(-4)),
    pricing=st.lists(_markups, min_size=9, max_size=9),
    fixed=st.booleans(),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["deposit", "convert", "withdraw", "market"]),
            st.permutations(CURRENCIES).map(lambda p: p[:2]),
            _amounts,
            st.integers(-300, 300),
        ),
        min_size=3,
        max_size=14,
    ),
)
def test_no_sequence_takes_the_brokers_fx_accounts_below_zero(
    usdcny: Decimal,
    eurusd: Decimal,
    pricing: list[Pricing],
    fixed: bool,
    steps: list[tuple[str, tuple[Currency, ...], Decimal, int]],
) -> None:
    desk = Desk()
    desk.rates.approval_threshold = Decimal(100)  # the law, not maker-checker, is tested here
    markets = {("USD", "CNY"): usdcny, ("EUR", "USD"): eurusd, ("EUR", "CNY"): usdcny * eurusd}

    def set_market() -> None:
        for (b, q), rate in markets.items():
            desk.market_rate(f"{b}/{q}", str(rate))

    set_market()
    directions = list(Direction)
    for i, ((b, q), rate) in enumerate((k, v) for k in markets for v in [markets[k]]):
        for j, d in enumerate(directions):
            rule = pricing[3 * i + j]
            if fixed and j == 0:  # a fixed rate around today's market: it may be overtaken
                rule = Pricing.fixed(rate * Decimal("0.99"), rate * Decimal("1.01"))
            desk.rates.set_pricing(MAKER, b, q, d, rule, reason="law")
    opened: set[str] = set()

    def account(name: str, cur: Currency, limit: Limit = Limit.NONE) -> str:
        opened.add(
            desk.ledger.open_account(name, owner="x", currency=cur, purpose="t", limit=limit).id
        )
        return name

    def wallet(cur: Currency) -> str:
        return account(f"wallet:{cur.code}", cur, Limit.DEBITS_WITHIN_CREDITS)

    moved = False
    seed = [
        ("deposit", (USD, EUR), Decimal(20_000), 0),
        ("deposit", (EUR, CNY), Decimal(20_000), 0),
    ]
    seed.append(("deposit", (CNY, USD), Decimal(50_000), 0))
    for n, (kind, (sell, buy), amount, move) in enumerate([*seed, *steps]):
        if kind == "market":
            desk.later(timedelta(seconds=1))
            for key in markets:
                markets[key] = (markets[key] * (1 + Decimal(move).scaleb(-4))).quantize(
                    Decimal("1e-8")
                )
            set_market()
            moved = True
            continue
        direction = {
            "deposit": Direction.DEPOSIT,
            "convert": Direction.CONVERSION,
            "withdraw": Direction.WITHDRAWAL,
        }[kind]
        source = account(f"psp:{sell.code}", sell) if kind == "deposit" else wallet(sell)
        target = account(f"psp:{buy.code}", buy) if kind == "withdraw" else wallet(buy)
        sold = Money.of(amount, sell)
        if kind != "deposit":
            held = desk.ledger.balance(source).net_credit
            if held < Money.of("1.00", sell):
                continue
            sold = Money.of(min(amount, held.amount), sell)
        quote = desk.rates.quote_between(sell, buy, direction)
        try:
            settled = desk.book.settle(sold, buy, quote)
        except AmountBelowMinimumError:
            continue
        assert settled.bought <= settled.market_value
        assert not settled.revenue.is_negative()
        desk.book.book(f"c{n}", settled, source=source, target=target)
        event(f"booked {kind}")
        for cur in CURRENCIES:
            opened.add(desk.book.position(cur))
            opened.add(desk.book.revenue(cur))
        for cur in CURRENCIES:
            assert not desk.ledger.balance(f"fx_revenue:{cur.code}").net_credit.is_negative()
        assert all(t.is_zero() for t in trial_balance(desk, opened).values())
        if not moved:
            # At one market, the FX positions are worth zero or more: rounding only, in CNY.
            price = {"CNY": Fraction(1), "USD": Fraction(usdcny), "EUR": Fraction(usdcny * eurusd)}
            value = sum(
                Fraction(desk.ledger.balance(f"fx_position:{c.code}").net_credit.amount)
                * price[c.code]
                for c in CURRENCIES
            )
            assert value >= 0


def test_the_policy_rounds_once_down() -> None:
    desk = Desk()
    assert desk.book.policy.rounding is Rounding.DOWN
