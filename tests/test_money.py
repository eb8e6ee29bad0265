"""Money: exactness, currencies, rounding, allocation laws, parsing and formatting."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fxcrm_core.kernel import (
    Currency,
    CurrencyMismatchError,
    FloatNotAllowedError,
    FxCrmError,
    Money,
    NegativeAmountError,
    PrecisionError,
    Rounding,
    UnknownCurrencyError,
    UnroundedMoney,
    ValidationError,
)

CODES = ["USD", "EUR", "JPY", "KWD", "GBP", "CNY", "BHD", "CLF"]
currencies = st.sampled_from(CODES).map(Currency.of)


@st.composite
def money(draw: st.DrawFn, currency: Currency | None = None) -> Money:
    cur = currency or draw(currencies)
    units = draw(st.integers(min_value=-(10**15), max_value=10**15))
    return Money.from_minor(units, cur)


ratios = st.lists(
    st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=12,
).filter(lambda rs: sum(rs) > 0)


def test_minor_units_come_from_iso_4217() -> None:
    assert [Currency.of(c).minor_units for c in ["JPY", "USD", "KWD", "CLF"]] == [0, 2, 3, 4]


@pytest.mark.parametrize("code", ["XXY", "US", "", "usd dollars", "EURO"])
def test_unknown_currencies_are_typed_errors(code: str) -> None:
    with pytest.raises(UnknownCurrencyError) as info:
        Currency.of(code)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, FxCrmError)


def test_lower_case_codes_are_normalised() -> None:
    assert Currency.of("usd") == Currency.of("USD")


def test_registered_currency() -> None:
    usdt = Currency.register("USDT", 6)
    assert Money.of("1.123456", "USDT").currency is usdt
    with pytest.raises(PrecisionError):
        Money.of("1.1234567", "USDT")
    with pytest.raises(ValidationError):
        Currency.register("USDT", 2)


@pytest.mark.parametrize("bad", [0.1, 1.0, float("nan")])
def test_floats_are_type_errors_everywhere(bad: float) -> None:
    with pytest.raises(FloatNotAllowedError) as info:
        Money.of(bad, "USD")  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    with pytest.raises(FloatNotAllowedError):
        Money.of("1", "USD").allocate([bad])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Money.of("1", "USD") * bad  # type: ignore[operator]


@pytest.mark.parametrize(("amount", "code"), [("10.001", "USD"), ("1.5", "JPY"), ("0.0001", "KWD")])
def test_over_precise_amounts_are_refused(amount: str, code: str) -> None:
    with pytest.raises(PrecisionError, match=f"{code} amounts have at most"):
        Money.of(amount, code)


@pytest.mark.parametrize("text", ["abc", "1e", "NaN", "Infinity", "--1"])
def test_garbage_amounts_are_validation_errors_without_echo(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        Money.of(text, "USD")
    assert text not in str(info.value) or text in {"NaN"}


def test_trailing_zeros_are_exact() -> None:
    assert Money.of("10.5000", "USD") == Money.of("10.50", "USD")
    assert str(Money.of("10.5", "USD")) == "10.50 USD"


def test_mixing_currencies_is_an_error() -> None:
    with pytest.raises(CurrencyMismatchError):
        Money.of(1, "USD") + Money.of(1, "EUR")
    with pytest.raises(CurrencyMismatchError):
        _ = Money.of(1, "USD") < Money.of(1, "EUR")
    with pytest.raises(CurrencyMismatchError):
        Money.of(1, "USD").to_unrounded() + Money.of(1, "EUR")


def test_positive_checks() -> None:
    with pytest.raises(NegativeAmountError):
        Money.of("-1", "USD").require_positive("deposit")
    with pytest.raises(NegativeAmountError):
        Money.zero("USD").require_positive()
    assert Money.zero("USD").require_non_negative().is_zero()


def test_multiplying_by_a_decimal_needs_an_explicit_rounding() -> None:
    product = Money.of("10.00", "USD") * Decimal("0.125")
    assert isinstance(product, UnroundedMoney)
    assert product.round(Rounding.HALF_EVEN) == Money.of("1.25", "USD")
    assert (Money.of("0.05", "USD") * Decimal("0.5")).round(Rounding.HALF_EVEN) == Money.of(
        "0.02", "USD"
    )
    assert (Money.of("0.05", "USD") * Decimal("0.5")).round(Rounding.HALF_UP) == Money.of(
        "0.03", "USD"
    )
    assert Money.of("3", "USD") * 3 == Money.of("9", "USD")


def test_round_needs_a_named_mode() -> None:
    with pytest.raises(ValidationError):
        UnroundedMoney(Decimal("1.005"), Currency.of("USD")).round("HALF_UP")  # type: ignore[arg-type]


@given(money(), st.decimals(min_value=-1000, max_value=1000, places=6), st.sampled_from(Rounding))
def test_rounding_remainder_adds_back_to_the_whole(m: Money, k: Decimal, mode: Rounding) -> None:
    raw = m * k
    rounded, remainder = raw.round_with_remainder(mode)
    assert (rounded.to_unrounded() + remainder).amount == raw.amount
    assert abs(remainder.amount) < m.currency.quantum


@given(money(), ratios)
@example(Money.of("0.01", "USD"), [Decimal(1), Decimal(1), Decimal(1)])
@example(Money.of("-100", "JPY"), [Decimal("0.3333"), Decimal("0.6667"), Decimal(0)])
def test_allocation_sums_to_the_whole(m: Money, rs: list[Decimal]) -> None:
    parts = m.allocate(rs)
    assert len(parts) == len(rs)
    assert sum(parts, Money.zero(m.currency)) == m
    total = sum(rs)
    for part, r in zip(parts, rs, strict=True):
        exact = Fraction(m.minor) * Fraction(r) / Fraction(total)
        # Each part is its exact share rounded one way or the other, never further off.
        assert abs(Fraction(part.minor) - exact) < 1
        if r == 0:
            assert part.is_zero()


@given(money(), st.integers(min_value=1, max_value=50))
def test_split_is_fair(m: Money, n: int) -> None:
    parts = m.split(n)
    assert sum(parts, Money.zero(m.currency)) == m
    assert max(p.minor for p in parts) - min(p.minor for p in parts) <= 1


def test_allocate_refuses_bad_ratios() -> None:
    m = Money.of("10", "USD")
    with pytest.raises(NegativeAmountError):
        m.allocate([1, -1])
    with pytest.raises(ValidationError):
        m.allocate([0, 0])
    with pytest.raises(ValidationError):
        m.allocate([])


@given(money())
def test_canonical_text_round_trips(m: Money) -> None:
    assert Money.parse(str(m)) == m
    assert Money.parse(f"{m.currency.code} {m.amount}") == m
    assert Money.from_minor(m.minor, m.currency) == m


@given(money(), st.sampled_from(["en_US", "zh_CN", "de_DE", "ja_JP", "fr_FR", "en_GB"]))
def test_localized_text_round_trips(m: Money, locale: str) -> None:
    assert Money.parse_localized(m.format(locale), m.currency, locale) == m


def test_formatting_by_locale() -> None:
    m = Money.of("1234.5", "USD")
    assert m.format("en_US") == "$1,234.50"
    assert m.format("zh_CN") == "US$1,234.50"
    assert Money.of("1234", "JPY").format("en_US") == "¥1,234"


def test_repr_is_evaluable_looking_and_short() -> None:
    assert repr(Money.of("1", "KWD")) == "Money('1.000', 'KWD')"


def test_money_constructor_validates() -> None:
    with pytest.raises(PrecisionError):
        Money(Decimal("1.001"), Currency.of("USD"))
    with pytest.raises(UnknownCurrencyError):
        Money(Decimal(1), "USD")  # type: ignore[arg-type]
