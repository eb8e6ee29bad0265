"""Points rules as data: points per lot by symbol group, per net deposit, per referral, how long
a lot lives, and what points buy as cashback (frozen, validated values the host passes in)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from decimal import ROUND_DOWN, Context, Decimal, localcontext
from types import MappingProxyType
from typing import Any

import attrs

from fxcrm_core.kernel import MAX_AMOUNT
from fxcrm_core.kernel.errors import AmountOutOfRangeError, ValidationError
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.loyalty.programme import short_name as _name
from fxcrm_core.trading import Deal

__all__ = ["MAX_POINTS", "CashbackRate", "DepositRate", "PointsRules"]

ZERO = Decimal(0)
POINT = Decimal("0.01")  # points are kept to two decimals, rounded down when earned
#: The largest number of points one value (a redemption, an adjustment, an award, a rate) holds.
MAX_POINTS = Decimal(10) ** 12
#: Decimal places of a points value (a rate per lot or per deposit unit may have up to 6).
POINT_PLACES = 2
RATE_PLACES = 6


def check_points(
    value: object, what: str, *, positive: bool = False, places: int = POINT_PLACES
) -> Decimal:
    """``value`` as a points value: a finite Decimal from zero (or above, with ``positive``)
    to :data:`MAX_POINTS`, with at most ``places`` decimals; a ValidationError otherwise (never
    a decimal signal: the bound is checked before any arithmetic)."""
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValidationError(f"{what} is a finite Decimal of zero or more")
    if positive and value == 0:
        raise ValidationError(f"{what} is more than zero")
    if value > MAX_POINTS:
        raise ValidationError(f"{what} is at most {MAX_POINTS:,} points")
    if value != value.quantize(Decimal(1).scaleb(-places)):  # exact: value <= MAX_POINTS
        raise ValidationError(f"{what} has at most {places} decimals")
    return value


def _rates(value: Iterable[DepositRate]) -> tuple[DepositRate, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError("deposit rates are a collection of DepositRate values")
    return tuple(value)


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("expected a mapping")
    return MappingProxyType(dict(value))


# -- rules as data ------------------------------------------------------------------------------


@attrs.frozen
class DepositRate:
    """``points`` for each ``per`` of net deposits in ``per``'s currency (1 point per 10 USD)."""

    per: Money
    points: Decimal

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.per, Money) or not self.per.is_positive():
            raise ValidationError("a deposit rate is per a positive amount of money")
        check_points(self.points, "points per deposit unit", places=RATE_PLACES)


@attrs.frozen
class CashbackRate:
    """``points`` buy ``money`` of cashback (100 points = 1.00 USD)."""

    points: Decimal
    money: Money

    def __attrs_post_init__(self) -> None:
        check_points(self.points, "the points of a cashback rate", positive=True)
        if not isinstance(self.money, Money) or not self.money.is_positive():
            raise ValidationError("a cashback rate buys a positive amount of money")

    def cashback(self, points: Decimal) -> Money:
        """What ``points`` buy; they must buy whole minor units (no fraction of a cent lost)."""
        check_points(points, "points redeemed")
        cur = self.money.currency
        unit = Decimal(1).scaleb(-cur.minor_units)
        # Points and rates are bounded (MAX_POINTS, money below MAX_AMOUNT), so this context
        # holds every quotient's whole part and minor units: no decimal signal can escape.
        with localcontext(Context(prec=_PRECISION, rounding=ROUND_DOWN)):
            exact = points * self.money.amount / self.points
            if exact >= MAX_AMOUNT:
                raise AmountOutOfRangeError("those points buy more than any amount of money")
            if exact != exact.quantize(unit):
                raise ValidationError("those points do not buy a whole number of minor units")
            return Money.of(exact.quantize(unit), cur)


@attrs.frozen
class PointsRules:
    """How points are earned and what they buy.

    ``per_lot`` maps a symbol group to the points each lot closed earns; ``symbol_groups`` maps
    a symbol to its group, and a symbol not listed belongs to ``default_group`` (None: it earns
    nothing). ``per_deposit`` holds one rate per currency (a deposit in another currency earns
    nothing); ``per_referral`` is the flat award of a referrer when the referred client first
    deposits. A lot lives ``validity`` from the instant it was earned. ``cashback`` is the
    redemption rate (None: points buy only host-defined rewards).
    """

    per_lot: Mapping[str, Decimal] = attrs.field(factory=dict, converter=_frozen_map)
    symbol_groups: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)
    default_group: str | None = None
    per_deposit: tuple[DepositRate, ...] = attrs.field(default=(), converter=_rates)
    per_referral: Decimal = ZERO
    validity: timedelta = timedelta(days=365)
    cashback: CashbackRate | None = None

    def __attrs_post_init__(self) -> None:
        for group, points in self.per_lot.items():
            _name(group, "a symbol group")
            check_points(points, "points per lot", places=RATE_PLACES)
        for symbol, group in self.symbol_groups.items():
            _name(symbol, "a symbol")
            if group not in self.per_lot:
                raise ValidationError("every symbol group has its points per lot")
        if self.default_group is not None and self.default_group not in self.per_lot:
            raise ValidationError("the default group has its points per lot")
        if not all(isinstance(r, DepositRate) for r in self.per_deposit):
            raise ValidationError("deposit rates are DepositRate values")
        currencies = [r.per.currency for r in self.per_deposit]
        if len(set(currencies)) != len(currencies):
            raise ValidationError("one deposit rate per currency")
        check_points(self.per_referral, "points per referral")
        if not isinstance(self.validity, timedelta) or self.validity <= timedelta(0):
            raise ValidationError("points live a positive timedelta")
        if self.cashback is not None and not isinstance(self.cashback, CashbackRate):
            raise ValidationError("the cashback rate is a CashbackRate")

    def group_of(self, symbol: str) -> str | None:
        return self.symbol_groups.get(symbol, self.default_group)

    def deal_points(self, deal: Deal) -> tuple[Decimal, tuple[tuple[str, str], ...]]:
        """Points a deal earns before any multiplier: a closing trade deal, by lots closed."""
        if not deal.action.is_trade or not deal.entry.closes:
            return ZERO, ()
        group = self.group_of(deal.symbol)
        if group is None:
            return ZERO, ()
        lots = deal.volume_closed or deal.volume
        rate = self.per_lot[group]
        return lots * rate, (("lots", str(lots)), ("group", group), ("per_lot", str(rate)))

    def deposit_rate(self, currency: Currency) -> DepositRate | None:
        for rate in self.per_deposit:
            if rate.per.currency == currency:
                return rate
        return None


_PRECISION = 100


def earned(base: Decimal, multiplier: Decimal) -> Decimal:
    """An award: ``base`` points times the tier's ``multiplier``, to two decimals rounded
    down, and at most :data:`MAX_POINTS` (an award past it - absurd rates or a hostile
    multiplier - is capped rather than stop the policy that earns it). Never a decimal signal."""
    if base <= 0 or multiplier <= 0:
        return ZERO
    if base.adjusted() + multiplier.adjusted() > MAX_POINTS.adjusted():
        return MAX_POINTS  # checked on the exponents: the product itself could overflow
    with localcontext(Context(prec=_PRECISION, rounding=ROUND_DOWN)):
        return min(base * multiplier, MAX_POINTS).quantize(POINT)
