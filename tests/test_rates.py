"""Exchange rates: conversions record their rate; inverses and crosses are explicit."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fxcrm_core.kernel import (
    MAX_RATE,
    MIN_RATE,
    AmountBelowMinimumError,
    AmountOutOfRangeError,
    ConversionPolicy,
    Currency,
    CurrencyMismatchError,
    ExchangeRate,
    FxCrmError,
    Money,
    NaiveDatetimeError,
    NegativeAmountError,
    RateNotFoundError,
    RateTable,
    Rounding,
    ValidationError,
)
from fxcrm_core.kernel._decimal import significant_digits
from fxcrm_core.kernel.rates import MAX_RATE_DIGITS

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


# -- conversions cannot be farmed (issue 14, item 5) ----------------------------------------------


def test_tiny_conversions_rounded_half_even_could_be_farmed() -> None:
    """The issue's case: 200 x 0.01 USD at 0.9213 rounded half-even gives 2.00 EUR (fair: 1.84)."""
    usd_eur = ExchangeRate.of("USD", "EUR", "0.9213", "lp", T)
    farmed = sum(
        (usd_eur.convert(Money.of("0.01", "USD")).round(Rounding.HALF_EVEN) for _ in range(200)),
        Money.zero("EUR"),
    )
    assert farmed == Money.of("2.00", "EUR")


def test_the_default_policy_refuses_conversions_below_its_minimum() -> None:
    usd_eur = ExchangeRate.of("USD", "EUR", "0.9213", "lp", T)
    policy = ConversionPolicy()
    assert policy.rounding is Rounding.DOWN
    with pytest.raises(AmountBelowMinimumError) as info:
        policy.convert(Money.of("0.01", "USD"), usd_eur)
    assert isinstance(info.value, ValueError)
    # Even a policy without a minimum never books a conversion that pays nothing.
    with pytest.raises(AmountBelowMinimumError):
        ConversionPolicy(minimum_units=1).convert(Money.of("0.01", "USD"), usd_eur)
    assert policy.convert(Money.of("1.09", "USD"), usd_eur) == Money.of("1.00", "EUR")


def test_the_policy_rounds_in_the_house_favour_and_keeps_the_record() -> None:
    usd_eur = ExchangeRate.of("USD", "EUR", "0.9213", "lp", T)
    settled = ConversionPolicy().settle(Money.of("10.99", "USD"), usd_eur)
    assert settled.exact.amount == Decimal("10.125087")
    assert settled.result == Money.of("10.12", "EUR")
    assert settled.remainder.amount == Decimal("0.005087")
    assert settled.result.to_unrounded() + settled.remainder == settled.exact
    assert (settled.rounding, settled.rate, settled.source) == (
        Rounding.DOWN,
        usd_eur,
        Money.of("10.99", "USD"),
    )


def test_a_policy_minimum_per_currency() -> None:
    policy = ConversionPolicy(minimums=[Money.of("10", "USD"), Money.of("1000", "JPY")])
    usd_jpy = ExchangeRate.of("USD", "JPY", "150.25", "lp", T)
    with pytest.raises(AmountBelowMinimumError, match="USD"):
        policy.convert(Money.of("9.99", "USD"), usd_jpy)
    assert policy.convert(Money.of("10", "USD"), usd_jpy) == Money.of("1502", "JPY")
    with pytest.raises(NegativeAmountError):
        policy.convert(Money.of("-10", "USD"), usd_jpy)
    with pytest.raises(CurrencyMismatchError):
        policy.convert(Money.of("10", "EUR"), usd_jpy)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConversionPolicy(rounding="DOWN"),
        lambda: ConversionPolicy(minimum_units=0),
        lambda: ConversionPolicy(minimum_units=True),
        lambda: ConversionPolicy(minimum_units="1"),
        lambda: ConversionPolicy(minimums=[Money.of(-1, "USD")]),
        lambda: ConversionPolicy(minimums=[Money.of(1, "USD"), Money.of(2, "USD")]),
        lambda: ConversionPolicy(minimums=["1 USD"]),  # type: ignore[list-item]
        lambda: ConversionPolicy(minimums=None),  # type: ignore[arg-type]
    ],
)
def test_a_policy_validates_when_built(make: object) -> None:
    with pytest.raises(ValidationError):
        make()  # type: ignore[operator]


@st.composite
def rate_pair(draw: st.DrawFn) -> tuple[ExchangeRate, ExchangeRate]:
    """A dealer's two rates for one pair, ``a->b`` and ``b->a``, with a spread >= 0: one round
    trip at the exact rates gives back at most what went in (``there * back <= 1``)."""
    a, b = draw(st.sampled_from(PAIRS))
    there = draw(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(20000), places=6))
    spread = draw(st.sampled_from([0, 0, 1, 10, 250]))  # basis points
    fair = Fraction(1) / Fraction(there)
    back = Fraction(fair) * (10000 - spread) / 10000
    # Quoted to a few digits, rounded down: a quote never narrows the spread below zero.
    digits = draw(st.integers(min_value=6, max_value=12))
    ctx = decimal.Context(prec=digits, rounding=decimal.ROUND_FLOOR)
    back_rate = ctx.divide(Decimal(back.numerator), Decimal(back.denominator))
    return (
        ExchangeRate.of(a, b, there, "lp", T),
        ExchangeRate.of(b, a, back_rate, "lp", T),
    )


def _value(
    balances: dict[str, Money], there: ExchangeRate, back: ExchangeRate, price: Fraction
) -> Fraction:
    """The client's holdings in units of ``there.base``, the other currency at ``price``."""
    return Fraction(balances[there.base.code].amount) + price * Fraction(
        balances[there.quote.code].amount
    )


@given(
    rate_pair(),
    st.integers(min_value=0, max_value=10**9),
    st.lists(
        st.tuples(st.booleans(), st.integers(min_value=1, max_value=10**9)),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([1, 100]),
)
@example(
    (
        ExchangeRate.of("USD", "EUR", "0.9213", "lp", T),
        ExchangeRate.of("EUR", "USD", "1.0854", "lp", T),
    ),
    200,
    [(True, 1)] * 200 + [(False, 10**9)],
    1,
)
def test_no_sequence_of_conversions_increases_the_clients_value(
    rates: tuple[ExchangeRate, ExchangeRate],
    start_units: int,
    steps: list[tuple[bool, int]],
    minimum_units: int,
) -> None:
    there, back = rates
    policy = ConversionPolicy(minimum_units=minimum_units)
    balances = {
        there.base.code: Money.from_minor(start_units, there.base),
        there.quote.code: Money.zero(there.quote),
    }
    # Any price between the client's two exits values the holdings fairly: at the price the
    # dealer pays back (``back``) and at the price it sells for (``1 / there``).
    prices = [Fraction(back.rate), Fraction(1) / Fraction(there.rate)]
    before = [_value(balances, there, back, p) for p in prices]
    for forward, units in steps:
        rate = there if forward else back
        held = balances[rate.base.code]
        amount = Money.from_minor(min(units, held.minor), rate.base)
        if amount.is_zero():
            continue
        try:
            bought = policy.convert(amount, rate)
        except AmountBelowMinimumError:
            continue
        balances[rate.base.code] = held - amount
        balances[rate.quote.code] = balances[rate.quote.code] + bought
        after = [_value(balances, there, back, p) for p in prices]
        assert all(a <= b for a, b in zip(after, before, strict=True))
        before = after


# -- wrong argument types are typed errors (issue 14, item 6: the kernel) ------------------------

JUNK: list[object] = [None, [], {}, object(), b"x", 1.5, True, Decimal("NaN"), "", "1e999999"]


@pytest.mark.parametrize("junk", JUNK)
def test_exchange_rate_of_junk_is_a_typed_error(junk: object) -> None:
    calls: list[Callable[[], object]] = [
        lambda: ExchangeRate.of(junk, "USD", "1.08", "ecb", T),  # type: ignore[arg-type]
        lambda: ExchangeRate.of("EUR", junk, "1.08", "ecb", T),  # type: ignore[arg-type]
        lambda: ExchangeRate.of("EUR", "USD", junk, "ecb", T),  # type: ignore[arg-type]
        lambda: ExchangeRate.of("EUR", "USD", "1.08", "ecb", junk),  # type: ignore[arg-type]
        lambda: ExchangeRate.of("EUR", "USD", "1.08", "ecb", T).inverse(significant_digits=junk),  # type: ignore[arg-type]
        lambda: ExchangeRate.of("EUR", "USD", "1.08", "ecb", T).convert(junk),  # type: ignore[arg-type]
        lambda: ExchangeRate.of("EUR", "USD", "1.08", "ecb", T).cross(junk),  # type: ignore[arg-type]
        lambda: RateTable([ExchangeRate.of("EUR", "USD", "1.08", "ecb", T)]).rate(junk, junk, T),  # type: ignore[arg-type]
        lambda: RateTable([junk]),  # type: ignore[list-item]
    ]
    if not isinstance(junk, str) or not junk:  # any other text names a source
        calls.append(lambda: ExchangeRate.of("EUR", "USD", "1.08", junk, T))  # type: ignore[arg-type]
    if junk is not None:  # no max_age is the default
        calls.append(lambda: RateTable(max_age=junk))  # type: ignore[arg-type]
    for call in calls:
        with pytest.raises(FxCrmError):
            call()


def test_an_out_of_range_time_is_a_typed_error() -> None:
    from datetime import timezone

    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(ValidationError):
        ExchangeRate.of("EUR", "USD", "1.08", "ecb", year_one)


@pytest.mark.parametrize(
    "rate", ["1e999999", "1e-999999", "1e101", "1e31", "1e-31", "1" * 300, "1." + "1" * 50]
)
def test_rates_out_of_range_are_refused_when_built(rate: str) -> None:
    with pytest.raises(ValidationError):
        ExchangeRate.of("EUR", "USD", rate, "ecb", T)


@given(
    st.decimals(min_value=MIN_RATE, max_value=MAX_RATE, allow_nan=False).filter(
        lambda r: significant_digits(r) <= MAX_RATE_DIGITS
    ),
    st.integers(min_value=-(10**20) + 1, max_value=10**20 - 1),
    st.sampled_from(Rounding),
)
@example(MAX_RATE, 10**20 - 1, Rounding.HALF_EVEN)
@example(MIN_RATE, 1, Rounding.UP)
@example(Decimal("0." + "3" * 50), 10**20 - 1, Rounding.DOWN)
@example(Decimal("3" * 30 + "." + "3" * 20), -(10**20) + 1, Rounding.CEILING)
def test_any_accepted_rate_converts_exactly_or_refuses_with_a_typed_error(
    r: Decimal, units: int, mode: Rounding
) -> None:
    if r <= 0:
        return
    rate = ExchangeRate.of("EUR", "USD", r, "lp", T)
    m = Money.from_minor(units, "EUR")
    exact = rate.convert(m).result
    assert Fraction(exact.amount) == Fraction(m.amount) * Fraction(r)
    try:
        rounded = exact.round(mode)
    except ValidationError:
        assert abs(exact.amount) >= Decimal("999999999999999999.995")
    else:
        assert abs(Fraction(rounded.amount) - Fraction(exact.amount)) < Fraction(1, 100)
    inverse = rate.inverse(significant_digits=MAX_RATE_DIGITS)
    assert MIN_RATE <= inverse.rate <= MAX_RATE
    try:
        cross = rate.cross(inverse)
    except AmountOutOfRangeError:  # the exact product has more digits than a rate may
        assert significant_digits(rate.rate) + significant_digits(inverse.rate) > MAX_RATE_DIGITS
    else:
        assert Fraction(cross.rate) == Fraction(rate.rate) * Fraction(inverse.rate)
