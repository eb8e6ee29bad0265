"""Money: exactness, currencies, rounding, allocation laws, parsing and formatting."""

from __future__ import annotations

import contextlib
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


# -- ISO 4217 minor units, not CLDR's cash digits (issue 14, item 3) ------------------------------

# ISO 4217 and CLDR disagree on these: CLDR gives 0 (cash) digits, ISO 4217 gives 2 (IQD: 3).
ISO_NOT_CLDR = {"HUF": 2, "COP": 2, "IDR": 2, "ALL": 2, "LBP": 2, "IQD": 3}


@pytest.mark.parametrize(("code", "units"), sorted(ISO_NOT_CLDR.items()))
def test_minor_units_are_iso_4217_where_cldr_differs(code: str, units: int) -> None:
    assert Currency.of(code).minor_units == units


def test_forint_with_filler_is_money() -> None:
    m = Money.of("1000.50", "HUF")
    assert m.minor == 100050
    # Formatting shows every digit the amount has (CLDR would round to "1 001 Ft").
    assert m.format("hu_HU") == "1\xa0000,50\xa0Ft"
    assert Money.parse_localized(m.format("hu_HU"), "HUF", "hu_HU") == m


@given(
    st.sampled_from(sorted(ISO_NOT_CLDR)),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from(["en_US", "hu_HU", "de_DE", "zh_CN", "ja_JP"]),
)
def test_localized_text_round_trips_where_cldr_differs(code: str, units: int, locale: str) -> None:
    m = Money.from_minor(units, code)
    assert Money.parse_localized(m.format(locale), code, locale) == m


@pytest.mark.parametrize("code", ["XAG", "XTS", "XXX", "XDR"])  # XPT: docs, XPD: doctest
def test_codes_without_a_minor_unit_need_a_declared_scale(code: str) -> None:
    with pytest.raises(UnknownCurrencyError, match="no ISO 4217 minor unit"):
        Currency.of(code)


def test_a_metal_is_money_once_the_host_declares_its_scale() -> None:
    xau = Currency.register("XAU", 3)  # troy ounces to the thousandth
    assert Currency.of("xau") is xau
    assert Money.of("1.125", "XAU").minor == 1125
    with pytest.raises(PrecisionError):
        Money.of("1.1255", "XAU")
    assert Money.parse_localized(Money.of("1.125", xau).format("de_DE"), xau, "de_DE").minor == 1125


@pytest.mark.parametrize(("code", "units"), [("HUF", 0), ("USD", 3), ("JPY", 2)])
def test_an_iso_code_cannot_be_registered_with_another_scale(code: str, units: int) -> None:
    with pytest.raises(ValidationError, match="ISO 4217"):
        Currency.register(code, units)
    assert Currency.register(code, Currency.of(code).minor_units) == Currency.of(code)


# -- the largest amount, and exactness below it (issue 14, item 4) --------------------------------


def test_from_minor_and_minor_are_exact_up_to_the_largest_amount() -> None:
    assert Money.from_minor(10**20 - 1, "USD").minor == 10**20 - 1
    assert str(Money.from_minor(10**20 - 1, "USD")) == "999999999999999999.99 USD"
    wei = Currency.register("WEI18", 18)
    assert Money.from_minor(10**36 - 1, wei).minor == 10**36 - 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: Money.from_minor(10**30 + 1, "USD"),
        lambda: Money.from_minor(-(10**20), "USD"),
        lambda: Money.of("1e18", "USD"),
        lambda: Money.of(10**18, "JPY"),
        lambda: Money.of("999999999999999999.99", "USD") + Money.of("0.01", "USD"),
        lambda: Money.of("-999999999999999999.99", "USD") - Money.of("0.01", "USD"),
        lambda: Money.of("500000000000000000", "USD") * 2,
        lambda: Money.of("0.01", "USD") * 10**5000,
        lambda: (Money.of("1", "USD") * Decimal("1e18")).round(Rounding.HALF_EVEN),
        lambda: Money.parse("1000000000000000000.00 USD"),
        lambda: Money(Decimal("1e18"), Currency.of("USD")),
    ],
)
def test_amounts_past_the_largest_are_refused_with_a_typed_error(make: object) -> None:
    with pytest.raises(ValidationError, match="largest amount"):
        make()  # type: ignore[operator]


def test_money_does_not_depend_on_the_callers_decimal_context() -> None:
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.traps[decimal.Inexact] = True
        assert Money.from_minor(123456789, "USD").minor == 123456789
        assert Money.of("1234567.89", "USD").minor == 123456789
        assert (Money.of("1234567.89", "USD") * Decimal("1.5")).round(
            Rounding.HALF_EVEN
        ) == Money.of("1851851.84", "USD")
        assert Money.of("1234567.89", "USD").format("en_US") == "$1,234,567.89"


big_money = st.builds(
    Money.from_minor,
    st.integers(min_value=-(10**20) + 1, max_value=10**20 - 1),
    st.just(Currency.of("USD")),
)


@given(big_money, ratios)
@example(Money.of("999999999999999999.99", "USD"), [Decimal(1), Decimal(1), Decimal(1)])
@example(Money.of("-999999999999999999.99", "USD"), [Decimal("0.0001"), Decimal(10**6)])
def test_splits_of_the_largest_amounts_sum_to_the_whole(m: Money, rs: list[Decimal]) -> None:
    parts = m.allocate(rs)
    assert sum(parts, Money.zero(m.currency)) == m
    assert sum(p.minor for p in parts) == m.minor


@given(
    big_money,
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**6), max_value=10**6),
)
@example(Money.of("1.01", "USD"), Decimal("1." + "1" * 70))
@example(Money.of("999999999999999999.99", "USD"), Decimal("0." + "9" * 99))
def test_products_with_long_factors_are_exact(m: Money, k: Decimal) -> None:
    product = m * k
    assert Fraction(product.amount) == Fraction(m.amount) * Fraction(k)


@pytest.mark.parametrize(
    "text",
    [
        "1." + "1" * 5000,
        "9" * 5000,
        "1," * 3000 + "0",
        "0." + "0" * 100 + "1",
        "$" + "9" * 30 + ".00",
        "1e999999",
    ],
)
def test_parse_localized_of_long_text_is_a_typed_error(text: str) -> None:
    with pytest.raises(ValidationError):
        Money.parse_localized(text, "USD", "en_US")


@given(st.text(max_size=300), st.sampled_from(["en_US", "de_DE", "hu_HU", "zh_CN"]))
def test_parse_localized_of_any_text_is_money_or_a_typed_error(text: str, locale: str) -> None:
    with contextlib.suppress(FxCrmError):
        Money.parse_localized(text, "USD", locale)


# -- wrong argument types are typed errors (issue 14, item 6: the kernel) ------------------------

JUNK: list[object] = [None, [], {}, (), object(), b"USD", 1.5, True, Decimal("NaN"), set()]


@pytest.mark.parametrize("junk", JUNK)
def test_currency_of_junk_is_a_typed_error(junk: object) -> None:
    with pytest.raises(FxCrmError):
        Currency.of(junk)  # type: ignore[arg-type]
    with pytest.raises(FxCrmError):
        Currency.register(junk, 2)  # type: ignore[arg-type]
    with pytest.raises(FxCrmError):
        Currency.register("JUNKC", junk)  # type: ignore[arg-type]


@pytest.mark.parametrize("junk", JUNK)
def test_money_constructors_refuse_junk_with_typed_errors(junk: object) -> None:
    usd = Money.of(1, "USD")
    for call in (
        lambda: Money.of(junk, "USD"),  # type: ignore[arg-type]
        lambda: Money.of(1, junk),  # type: ignore[arg-type]
        lambda: Money.from_minor(junk, "USD"),  # type: ignore[arg-type]
        lambda: Money.zero(junk),  # type: ignore[arg-type]
        lambda: Money.parse(junk),  # type: ignore[arg-type]
        lambda: Money.parse_localized(junk, "USD", "en_US"),  # type: ignore[arg-type]
        lambda: Money.parse_localized("$1.00", "USD", junk),  # type: ignore[arg-type]
        lambda: Money(junk, Currency.of("USD")),  # type: ignore[arg-type]
        lambda: UnroundedMoney(junk, "USD"),  # type: ignore[arg-type]
        lambda: UnroundedMoney(Decimal(1), junk),  # type: ignore[arg-type]
        lambda: usd.allocate(junk),  # type: ignore[arg-type]
        lambda: usd.split(junk),  # type: ignore[arg-type]
        lambda: usd < junk,  # type: ignore[operator]
        lambda: usd.to_unrounded().round(junk),  # type: ignore[arg-type]
        lambda: usd.format(junk),  # type: ignore[arg-type]
    ):
        with pytest.raises(FxCrmError):
            call()
