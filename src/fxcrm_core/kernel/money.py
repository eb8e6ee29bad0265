"""Currencies and money: exact Decimal amounts at the currency's minor unit.

``Money`` is always exact at its currency's minor unit, taken from ISO 4217 itself (the
``iso4217`` package tracks the published list; Babel's CLDR data gives cash digits instead, and
is used only for names, symbols and formats). ``UnroundedMoney`` holds intermediate results
(rates times amounts, shares of fees) and becomes ``Money`` only through
:meth:`UnroundedMoney.round`, which names its rounding mode.
"""

from __future__ import annotations

import copy
import decimal
import enum
import functools
import re
import threading
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import overload

import attrs
import babel
import babel.numbers

from fxcrm_core.kernel._decimal import (
    EXACT,
    MAX_AMOUNT_DIGITS,
    MAX_MINOR_UNITS,
    MAX_TEXT,
    MONEY,
    TEXT,
    DecimalLike,
    out_of_range,
    to_decimal,
    too_large,
)
from fxcrm_core.kernel.errors import (
    ArgumentTypeError,
    CurrencyMismatchError,
    NegativeAmountError,
    PrecisionError,
    UnknownCurrencyError,
    ValidationError,
)

__all__ = ["Currency", "Money", "Rounding", "UnroundedMoney"]


class Rounding(enum.Enum):
    """Named rounding modes; every rounding in fxcrm_core says which one it uses."""

    HALF_EVEN = decimal.ROUND_HALF_EVEN
    HALF_UP = decimal.ROUND_HALF_UP
    HALF_DOWN = decimal.ROUND_HALF_DOWN
    DOWN = decimal.ROUND_DOWN  # towards zero
    UP = decimal.ROUND_UP  # away from zero
    FLOOR = decimal.ROUND_FLOOR
    CEILING = decimal.ROUND_CEILING


_CODE = re.compile(r"^[A-Z][A-Z0-9]{2,9}$")
_registry: dict[str, Currency] = {}
_registry_lock = threading.Lock()


@functools.cache
def _iso_minor_units() -> dict[str, int | None]:
    """ISO 4217's minor unit per current code; None where the standard has none ("N.A.":
    precious metals, testing and special codes)."""
    import iso4217  # here, not at the top: reading the table costs ~40 ms at first use

    return {c.code: c.exponent for c in iso4217.Currency}


@attrs.frozen(slots=True, repr=False)
class Currency:
    """A currency and the number of decimal places of its minor unit.

    >>> [Currency.of(code).minor_units for code in ("JPY", "USD", "KWD")]
    [0, 2, 3]
    """

    code: str
    minor_units: int
    quantum: Decimal = attrs.field(init=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.code, str) or not _CODE.match(self.code):
            raise ValidationError("currency code must be 3-10 upper-case letters or digits")
        units = self.minor_units
        if isinstance(units, bool) or not isinstance(units, int):
            raise ValidationError(f"minor_units must be an int from 0 to {MAX_MINOR_UNITS}")
        if not 0 <= units <= MAX_MINOR_UNITS:
            raise ValidationError(f"minor_units must be an int from 0 to {MAX_MINOR_UNITS}")
        object.__setattr__(self, "quantum", Decimal(1).scaleb(-units, context=EXACT))

    @classmethod
    def of(cls, code: str | Currency) -> Currency:
        """The currency for an ISO 4217 code (or one the host registered).

        >>> Currency.of("HUF").minor_units  # ISO 4217's 2, not CLDR's cash digits (0)
        2
        >>> Currency.of("XPD")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fxcrm_core.kernel.errors.UnknownCurrencyError: XPD has no ISO 4217 minor unit: ...
        """
        if isinstance(code, Currency):
            return code
        if not isinstance(code, str):
            raise UnknownCurrencyError("a currency code must be a string")
        found = _registry.get(code)
        if found is not None:
            return found
        normal = code.strip().upper()
        if not _CODE.match(normal):
            raise UnknownCurrencyError("a currency code is 3-10 letters or digits")
        found = _registry.get(normal)  # registered by the host, asked for in lower case
        if found is not None:
            return found
        iso = _iso_minor_units()
        if normal not in iso:
            raise UnknownCurrencyError(
                "unknown currency code: use an ISO 4217 code or Currency.register() it first"
            )
        units = iso[normal]
        if units is None:
            raise UnknownCurrencyError(
                f"{normal} has no ISO 4217 minor unit: declare its scale once with "
                f"Currency.register({normal!r}, places)"
            )
        with _registry_lock:
            # Only the normal form is a key: a host's odd spellings do not grow the registry.
            return _registry.setdefault(normal, cls(normal, units))

    @classmethod
    def register(cls, code: str, minor_units: int) -> Currency:
        """Declare a currency's decimal places: a code outside ISO 4217 (a stablecoin, a bonus
        unit), or an ISO code that has no minor unit (metals such as XAU, testing codes).

        An ISO 4217 code with a minor unit keeps it: registering it with another is an error.
        """
        if not isinstance(code, str) or not _CODE.match(code):
            raise ValidationError("currency code must be 3-10 upper-case letters or digits")
        iso = _iso_minor_units()
        if iso.get(code) is not None and iso[code] != minor_units:
            raise ValidationError(f"{code} is an ISO 4217 currency with {iso[code]} decimal places")
        currency = cls(code, minor_units)
        with _registry_lock:
            existing = _registry.get(code)
            if existing is not None:
                if existing.minor_units != minor_units:
                    raise ValidationError(f"currency {code} is already defined differently")
                return existing  # one instance per code: Money compares currencies by identity
            _registry[code] = currency
        return currency

    @property
    def is_iso(self) -> bool:
        """Whether the code is on ISO 4217's current list (metals included)."""
        return self.code in _iso_minor_units()

    def __repr__(self) -> str:
        return f"Currency({self.code!r})"

    def __str__(self) -> str:
        return self.code


# Quantizing in this context raises when a non-zero digit would be lost (dropping zeros is fine),
# and when the amount is at or past MAX_AMOUNT.
_CHECK = MONEY
_WS = re.compile(r"\s+")
# Rounding to the minor unit with each named mode, still refusing amounts past MAX_AMOUNT.
_ROUNDING: dict[Rounding, decimal.Context] = {}
for _mode in Rounding:
    _ROUNDING[_mode] = MONEY.copy()
    _ROUNDING[_mode].rounding = _mode.value
    _ROUNDING[_mode].traps[decimal.Inexact] = False


def _locale(name: str) -> babel.Locale:
    if not isinstance(name, str) or len(name) > 40:
        raise ValidationError("unknown locale")
    return _parse_locale(name)


@functools.lru_cache(maxsize=64)
def _parse_locale(name: str) -> babel.Locale:
    try:
        return babel.Locale.parse(name)
    except (ValueError, TypeError, babel.UnknownLocaleError):
        raise ValidationError("unknown locale") from None


@functools.lru_cache(maxsize=256)
def _currency_pattern(locale: babel.Locale, places: int) -> babel.numbers.NumberPattern:
    """The locale's currency pattern showing exactly the currency's ISO decimal places (Babel's
    own would use CLDR's, and round 1000.50 HUF to "1 001 Ft")."""
    pattern: babel.numbers.NumberPattern = copy.copy(locale.currency_formats["standard"])
    pattern.frac_prec = (places, places)
    return pattern


def _same(a: Currency, b: Currency) -> None:
    if a is not b and a != b:
        raise CurrencyMismatchError(f"cannot combine {a.code} with {b.code}")


def _exact(amount: Decimal, currency: Currency) -> Decimal:
    try:
        return amount.quantize(currency.quantum, context=_CHECK)
    except decimal.Inexact:
        raise PrecisionError(
            f"{currency.code} amounts have at most {currency.minor_units} decimal places"
        ) from None
    except decimal.DecimalException:
        raise too_large() from None


_object_new = object.__new__
_add = EXACT.add
_multiply = EXACT.multiply
_money_add = MONEY.add
_money_subtract = MONEY.subtract
_money_multiply = MONEY.multiply
_scaleb = EXACT.scaleb  # exact: moves the point, keeps the digits
# from_minor's bounds: minor units of an amount below MAX_AMOUNT, per number of decimals.
_MINOR_LIMITS = tuple(10 ** (MAX_AMOUNT_DIGITS + n) for n in range(MAX_MINOR_UNITS + 1))
# An int factor at least this large makes any non-zero amount (>= 10**-18) too large.
_INT_FACTOR_LIMIT = 10 ** (MAX_AMOUNT_DIGITS + MAX_MINOR_UNITS)


def _new_money(amount: Decimal, currency: Currency) -> Money:
    # Internal fast path for values already known exact at the minor unit.
    m = _object_new(Money)
    _money_amount(m, amount)
    _money_currency(m, currency)
    return m


def _new_unrounded(amount: Decimal, currency: Currency) -> UnroundedMoney:
    # Internal fast path for results of Decimal arithmetic in a known currency.
    m = _object_new(UnroundedMoney)
    _unrounded_amount(m, amount)
    _unrounded_currency(m, currency)
    return m


@attrs.frozen(slots=True, repr=False, eq=True, order=False)
class Money:
    """An exact amount of one currency, always at the currency's minor unit.

    >>> Money.of("10.5", "USD")
    Money('10.50', 'USD')
    >>> Money.of("10.50", "USD") + Money.of(1, "USD")
    Money('11.50', 'USD')
    >>> Money.parse(str(Money.of("-3", "JPY")))
    Money('-3', 'JPY')
    """

    amount: Decimal
    currency: Currency

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.currency, Currency):
            raise UnknownCurrencyError("Money needs a Currency; use Money.of(amount, code)")
        value = to_decimal(self.amount)
        object.__setattr__(self, "amount", _exact(value, self.currency))

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def of(cls, amount: DecimalLike, currency: str | Currency) -> Money:
        """Money from a Decimal, int or decimal string; floats are refused."""
        cur = Currency.of(currency)
        return _new_money(_exact(to_decimal(amount), cur), cur)

    @classmethod
    def zero(cls, currency: str | Currency) -> Money:
        cur = Currency.of(currency)
        return _new_money(Decimal(0).quantize(cur.quantum, context=MONEY), cur)

    @classmethod
    def from_minor(cls, units: int, currency: str | Currency) -> Money:
        """Money from a whole number of minor units (cents, fils, yen)."""
        if isinstance(units, bool) or not isinstance(units, int):
            raise ValidationError("minor units must be an int")
        cur = Currency.of(currency)
        limit = _MINOR_LIMITS[cur.minor_units]
        if not -limit < units < limit:
            raise too_large()
        return _new_money(_scaleb(Decimal(units), -cur.minor_units), cur)

    @classmethod
    def parse(cls, text: str) -> Money:
        """Parse the canonical form ``"10.50 USD"`` (``"USD 10.50"`` is accepted too)."""
        if not isinstance(text, str):
            raise ValidationError("Money.parse takes a string")
        amount, _, code = text.rpartition(" ")
        currency = _registry.get(code)
        if currency is not None:
            # The canonical form, as stored by the codec: skip the general parser.
            return _new_money(_exact(to_decimal(amount), currency), currency)
        parts = text.split()
        if len(parts) != 2:
            raise ValidationError("money text must be '<amount> <currency>'")
        a, b = parts
        if _CODE.match(a.upper()) and not _CODE.match(b.upper()):
            a, b = b, a
        return cls.of(a, b)

    @classmethod
    def parse_localized(cls, text: str, currency: str | Currency, locale: str) -> Money:
        """Parse what :meth:`format` printed for ``locale`` back into Money."""
        if not isinstance(text, str):
            raise ValidationError("Money.parse_localized takes a string")
        if len(text) > MAX_TEXT:
            raise ValidationError(f"money text has at most {MAX_TEXT} characters")
        cur = Currency.of(currency)
        loc = _locale(locale)
        try:
            # Babel computes in the thread's decimal context: give it one that cannot round.
            with decimal.localcontext(TEXT):
                symbol = babel.numbers.get_currency_symbol(cur.code, loc)
                rest = text.replace(symbol, "") if symbol else text
                rest = _WS.sub("", rest.replace(cur.code, ""))
                value = babel.numbers.parse_decimal(rest, locale=loc, strict=True)
        except (babel.numbers.NumberFormatError, decimal.DecimalException, ValueError):
            raise ValidationError("not a money amount in that locale's format") from None
        return cls.of(value, cur)

    # -- views -----------------------------------------------------------------------------
    @property
    def minor(self) -> int:
        """The amount as a whole number of minor units."""
        return int(_scaleb(self.amount, self.currency.minor_units))

    def is_zero(self) -> bool:
        return not self.amount

    def is_positive(self) -> bool:
        return self.amount > 0

    def is_negative(self) -> bool:
        return self.amount < 0

    def require_positive(self, what: str = "amount") -> Money:
        """Return self if strictly positive, else raise :class:`NegativeAmountError`."""
        if self.amount <= 0:
            raise NegativeAmountError(f"{what} must be positive")
        return self

    def require_non_negative(self, what: str = "amount") -> Money:
        if self.amount < 0:
            raise NegativeAmountError(f"{what} must not be negative")
        return self

    def format(self, locale: str = "en_US") -> str:
        """Locale-aware text, e.g. ``$1,234.50`` (en_US) or ``US$1,234.50`` (zh_CN), with the
        currency's ISO 4217 decimal places."""
        loc = _locale(locale)
        code = self.currency.code
        with decimal.localcontext(TEXT):
            if self.currency.is_iso or babel.numbers.is_currency(code):
                pattern = _currency_pattern(loc, self.currency.minor_units)
                return babel.numbers.format_currency(
                    self.amount, code, format=pattern, locale=loc, currency_digits=False
                )
            number = babel.numbers.format_decimal(
                self.amount, locale=loc, decimal_quantization=False
            )
        return f"{number} {code}"

    def to_unrounded(self) -> UnroundedMoney:
        return _new_unrounded(self.amount, self.currency)

    # -- arithmetic ----------------------------------------------------------------------
    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        if other.currency is not self.currency:
            _same(self.currency, other.currency)
        try:
            return _new_money(_money_add(self.amount, other.amount), self.currency)
        except decimal.DecimalException:
            raise too_large("the sum") from None

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        if other.currency is not self.currency:
            _same(self.currency, other.currency)
        try:
            return _new_money(_money_subtract(self.amount, other.amount), self.currency)
        except decimal.DecimalException:
            raise too_large("the difference") from None

    def __neg__(self) -> Money:
        return _new_money(EXACT.minus(self.amount), self.currency)

    def __abs__(self) -> Money:
        return _new_money(EXACT.abs(self.amount), self.currency)

    @overload
    def __mul__(self, factor: int) -> Money: ...
    @overload
    def __mul__(self, factor: Decimal) -> UnroundedMoney: ...
    def __mul__(self, factor: int | Decimal) -> Money | UnroundedMoney:
        """Times an int stays exact Money; times a Decimal gives UnroundedMoney."""
        if type(factor) is Decimal:  # the common case, inlined: commissions run it per deal
            try:
                product = _multiply(self.amount, factor)
            except decimal.DecimalException as e:
                raise out_of_range(e, "the product") from None
            if product.is_finite():
                return _new_unrounded(product, self.currency)
            raise ValidationError("factor: must be a finite number")
        if isinstance(factor, bool):
            return NotImplemented
        if isinstance(factor, int):
            if not -_INT_FACTOR_LIMIT < factor < _INT_FACTOR_LIMIT:
                if self.amount:
                    raise too_large("the product")
                factor = 0
            try:
                return _new_money(_money_multiply(self.amount, Decimal(factor)), self.currency)
            except decimal.DecimalException:
                raise too_large("the product") from None
        if isinstance(factor, Decimal):
            return _new_unrounded(_product(self.amount, to_decimal(factor)), self.currency)
        return NotImplemented

    __rmul__ = __mul__

    def _cmp(self, other: object) -> tuple[Decimal, Decimal]:
        if not isinstance(other, Money):
            raise ArgumentTypeError("Money compares only with Money")
        _same(self.currency, other.currency)
        return self.amount, other.amount

    def __lt__(self, other: Money) -> bool:
        a, b = self._cmp(other)
        return a < b

    def __le__(self, other: Money) -> bool:
        a, b = self._cmp(other)
        return a <= b

    def __gt__(self, other: Money) -> bool:
        a, b = self._cmp(other)
        return a > b

    def __ge__(self, other: Money) -> bool:
        a, b = self._cmp(other)
        return a >= b

    # -- splitting ---------------------------------------------------------------------------
    def allocate(self, ratios: Sequence[DecimalLike]) -> list[Money]:
        """Split by ratios, to the minor unit, so that the parts always sum to the whole.

        Each part is the exact share rounded down, and the leftover minor units go one each
        to the parts with the largest remainders (earlier parts first on ties).

        >>> [str(m) for m in Money.of("100", "USD").allocate([1, 1, 1])]
        ['33.34 USD', '33.33 USD', '33.33 USD']
        """
        if isinstance(ratios, str | bytes) or not isinstance(ratios, Sequence):
            raise ArgumentTypeError("allocate takes a list of ratios")
        weights = [to_decimal(r, "ratio") for r in ratios]
        if not weights:
            raise ValidationError("allocate needs at least one ratio")
        if any(w < 0 for w in weights):
            raise NegativeAmountError("ratios must not be negative")
        total = sum((Fraction(w) for w in weights), Fraction(0))
        if total == 0:
            raise ValidationError("ratios must not all be zero")
        whole = self.minor
        sign = -1 if whole < 0 else 1
        whole = abs(whole)
        exact = [Fraction(whole) * Fraction(w) / total for w in weights]
        parts = [int(x) for x in exact]  # floor: all non-negative
        leftover = whole - sum(parts)
        order = sorted(range(len(parts)), key=lambda i: (-(exact[i] - parts[i]), i))
        for i in order[:leftover]:
            parts[i] += 1
        return [Money.from_minor(sign * p, self.currency) for p in parts]

    def split(self, n: int) -> list[Money]:
        """Split into ``n`` parts as equal as the minor unit allows."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValidationError("split needs a positive number of parts")
        return self.allocate([1] * n)

    def __repr__(self) -> str:
        return f"Money({str(self.amount)!r}, {self.currency.code!r})"

    def __str__(self) -> str:
        return f"{self.amount!s} {self.currency.code}"  # (a plain {d}: 4x slower)


def _product(a: Decimal, b: Decimal) -> Decimal:
    """``a * b`` exactly, or a typed error (never a decimal signal, never NaN or infinity)."""
    try:
        result = _multiply(a, b)
    except decimal.DecimalException as e:
        raise out_of_range(e, "the product") from None
    if not result.is_finite():
        raise ValidationError("factor: must be a finite number")
    return result


def _any_decimal(value: DecimalLike) -> Decimal:
    return to_decimal(value)


def _any_currency(value: str | Currency) -> Currency:
    return Currency.of(value)


@attrs.frozen(slots=True, repr=False)
class UnroundedMoney:
    """An intermediate amount of any precision; becomes Money only via :meth:`round`.

    >>> fee = Money.of("7.00", "USD") * Decimal("0.3333")
    >>> fee
    UnroundedMoney('2.333100', 'USD')
    >>> fee.round(Rounding.HALF_EVEN)
    Money('2.33', 'USD')
    """

    amount: Decimal = attrs.field(converter=_any_decimal)
    currency: Currency = attrs.field(converter=_any_currency)

    @classmethod
    def zero(cls, currency: str | Currency) -> UnroundedMoney:
        return cls(Decimal(0), Currency.of(currency))

    def round(self, mode: Rounding) -> Money:
        """Round to the currency's minor unit with the named mode."""
        if not isinstance(mode, Rounding):
            raise ValidationError("round() needs a Rounding mode")
        try:
            amount = self.amount.quantize(self.currency.quantum, context=_ROUNDING[mode])
        except decimal.DecimalException:
            raise too_large("the rounded amount") from None
        return _new_money(amount, self.currency)

    def round_with_remainder(self, mode: Rounding) -> tuple[Money, UnroundedMoney]:
        """The rounded Money and what rounding left over (``rounded + remainder == self``)."""
        rounded = self.round(mode)
        # Exact: the remainder is smaller than the quantum and has no more digits than self.
        return rounded, _new_unrounded(EXACT.subtract(self.amount, rounded.amount), self.currency)

    def __add__(self, other: UnroundedMoney | Money) -> UnroundedMoney:
        if type(other) is UnroundedMoney and other.currency is self.currency:
            try:
                return _new_unrounded(_add(self.amount, other.amount), self.currency)
            except decimal.DecimalException as e:
                raise out_of_range(e, "the sum") from None
        if not isinstance(other, UnroundedMoney | Money):
            return NotImplemented
        _same(self.currency, other.currency)
        try:
            return _new_unrounded(EXACT.add(self.amount, other.amount), self.currency)
        except decimal.DecimalException as e:
            raise out_of_range(e, "the sum") from None

    __radd__ = __add__

    def __sub__(self, other: UnroundedMoney | Money) -> UnroundedMoney:
        if not isinstance(other, UnroundedMoney | Money):
            return NotImplemented
        _same(self.currency, other.currency)
        try:
            return _new_unrounded(EXACT.subtract(self.amount, other.amount), self.currency)
        except decimal.DecimalException as e:
            raise out_of_range(e, "the difference") from None

    def __neg__(self) -> UnroundedMoney:
        return _new_unrounded(EXACT.minus(self.amount), self.currency)

    def __mul__(self, factor: int | Decimal) -> UnroundedMoney:
        if type(factor) is Decimal:
            return _new_unrounded(_product(self.amount, factor), self.currency)
        if isinstance(factor, bool) or not isinstance(factor, int | Decimal):
            return NotImplemented
        return _new_unrounded(_product(self.amount, to_decimal(factor)), self.currency)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"UnroundedMoney({str(self.amount)!r}, {self.currency.code!r})"

    def __str__(self) -> str:
        return f"{self.amount} {self.currency.code} (unrounded)"


# Slot setters for the internal fast paths (frozen classes refuse ordinary attribute setting).
_money_amount = Money.__dict__["amount"].__set__
_money_currency = Money.__dict__["currency"].__set__
_unrounded_amount = UnroundedMoney.__dict__["amount"].__set__
_unrounded_currency = UnroundedMoney.__dict__["currency"].__set__
