"""Exchange rates: conversions record their rate; inverses and crosses are explicit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.kernel import (
    Currency,
    CurrencyMismatchError,
    ExchangeRate,
    Money,
    NaiveDatetimeError,
    NegativeAmountError,
    RateNotFoundError,
    RateTable,
    Rounding,
)

T = datetime(2026, 1, 5, 12, tzinfo=UTC)
CODES = ["USD", "EUR", "JPY", "KWD", "GBP", "CHF"]


def test_conversion_records_rate_source_and_time() -> None:
    rate = ExchangeRate.of("EUR", "JPY", "162.345", "lp-feed", T)
    conversion = rate.convert(Money.of("10.00", "EUR"))
    assert conversion.rate.source == "lp-feed"
    assert conversion.rate.as_of == T
    assert conversion.result.amount == Decimal("1623.45000")
    assert conversion.round(Rounding.HALF_EVEN) == Money.of("1623", "JPY")


def test_converting_the_wrong_currency_is_an_error() -> None:
    rate = ExchangeRate.of("EUR", "USD", "1.08", "x", T)
    with pytest.raises(CurrencyMismatchError):
        rate.convert(Money.of(1, "USD"))


def test_rates_must_be_positive_exact_and_dated() -> None:
    with pytest.raises(NegativeAmountError):
        ExchangeRate.of("EUR", "USD", "0", "x", T)
    with pytest.raises(TypeError):
        ExchangeRate.of("EUR", "USD", 1.08, "x", T)  # type: ignore[arg-type]
    with pytest.raises(NaiveDatetimeError):
        ExchangeRate.of("EUR", "USD", "1.08", "x", datetime(2026, 1, 5))  # noqa: DTZ001


def test_table_never_inverts_silently() -> None:
    table = RateTable([ExchangeRate.of("EUR", "USD", "1.08", "ecb", T)])
    with pytest.raises(RateNotFoundError, match=r"inverse\(\)"):
        table.rate(Currency.of("USD"), Currency.of("EUR"), T)
    explicit = table.rate(Currency.of("EUR"), Currency.of("USD"), T).inverse()
    assert explicit.source == "inverse(ecb)"
    assert explicit.base == Currency.of("USD")


def test_table_picks_the_latest_rate_at_or_before_the_time() -> None:
    table = RateTable(
        [
            ExchangeRate.of("EUR", "USD", "1.08", "ecb", T),
            ExchangeRate.of("EUR", "USD", "1.09", "ecb", T + timedelta(hours=1)),
        ],
        max_age=timedelta(days=1),
    )
    eur, usd = Currency.of("EUR"), Currency.of("USD")
    assert table.rate(eur, usd, T + timedelta(minutes=59)).rate == Decimal("1.08")
    assert table.rate(eur, usd, T + timedelta(hours=1)).rate == Decimal("1.09")
    with pytest.raises(RateNotFoundError):
        table.rate(eur, usd, T - timedelta(seconds=1))
    with pytest.raises(RateNotFoundError, match="too old"):
        table.rate(eur, usd, T + timedelta(days=2))


def test_cross_rates_are_explicit_products() -> None:
    eurusd = ExchangeRate.of("EUR", "USD", "1.08", "a", T)
    usdjpy = ExchangeRate.of("USD", "JPY", "150.25", "b", T + timedelta(minutes=1))
    cross = eurusd.cross(usdjpy)
    assert (cross.base.code, cross.quote.code, cross.rate) == ("EUR", "JPY", Decimal("162.2700"))
    assert cross.source == "cross(a,b)"
    assert cross.as_of == T
    with pytest.raises(CurrencyMismatchError):
        usdjpy.cross(eurusd)


PAIRS = [(a, b) for a in CODES for b in CODES if a != b]


@st.composite
def pair_and_rate(draw: st.DrawFn) -> tuple[Currency, Currency, Decimal]:
    """Two currencies and a rate at which the target's minor unit is worth no more than the
    source's: otherwise the first rounding alone can lose more than one source unit."""
    a, b = draw(st.sampled_from(PAIRS))
    src, dst = Currency.of(a), Currency.of(b)
    low = max(Decimal("0.0001"), dst.quantum / src.quantum)
    return src, dst, draw(st.decimals(min_value=low, max_value=Decimal(50000), places=6))


@given(
    pair_and_rate(),
    st.integers(min_value=0, max_value=10**12),
    st.sampled_from([Rounding.HALF_EVEN, Rounding.HALF_UP]),
)
def test_there_and_back_stays_within_one_minor_unit(
    pair: tuple[Currency, Currency, Decimal], units: int, mode: Rounding
) -> None:
    src, dst, r = pair
    rate = ExchangeRate(src, dst, r, "law", T)
    m = Money.from_minor(units, src)
    there = rate.convert(m).round(mode)
    back = rate.inverse(significant_digits=28).convert(there).round(mode)
    assert abs(back.minor - m.minor) <= 1
