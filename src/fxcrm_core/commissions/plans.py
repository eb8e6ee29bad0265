"""Plan kinds: what one deal earns under one rule. Each kind is one small attrs class behind the
:class:`Plan` protocol and one :func:`register_plan` line; the registry names kinds for the
stored form of schedules, so a new kind stores and reads back without codec edits.

>>> from fxcrm_core.kernel import Money
>>> plan = PerLot(Money.of("2.50", "USD"))
>>> plan_from_data(plan_to_data(plan)) == plan
True
>>> plan_to_data(Pips(Decimal("0.3"), Decimal("0.0125"), Currency.of("USD")))
{'kind': 'pips', 'pips': '0.3', 'pip_value': '0.0125', 'currency': 'USD'}
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, DecimalException
from typing import Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

import attrs

from fxcrm_core.events import make_converter
from fxcrm_core.kernel._decimal import DIVISION, EXACT, MAX_AMOUNT, out_of_range, to_decimal
from fxcrm_core.kernel.errors import CodecError, FxCrmError, ValidationError
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.trading import Deal

__all__ = [
    "COMMISSION",
    "MARKUP",
    "CommissionShare",
    "Cpa",
    "PerLot",
    "Pips",
    "Plan",
    "ProfitShare",
    "SpreadShare",
    "plan_from_data",
    "plan_kinds",
    "plan_to_data",
    "register_plan",
]

#: Revenue sources a plan can be paid from (see ``Revenue`` in the schedule module).
COMMISSION = "commission"
MARKUP = "markup"


@runtime_checkable
class Plan(Protocol):
    """One kind of rebate plan: the pool one deal earns for ``lots`` counted lots.

    ``kind`` is the registered name; ``funded_by`` the revenue sources a ceiling may compare the
    plan with (a schedule refuses a plan none of whose sources its revenue counts);
    ``per_client`` is True for a plan paid once per client, not per deal (a CPA); ``explains``
    says whether :meth:`note` adds to the explanation (bound once, at definition).
    """

    kind: ClassVar[str]
    funded_by: ClassVar[frozenset[str]]
    per_client: ClassVar[bool]
    explains: ClassVar[bool]

    def pool(self, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
        """The unrounded pool of ``deal`` for ``lots`` lots, in the schedule's ``currency``."""
        ...

    def note(self, deal: Deal) -> str:
        """What to add to the explanation for ``deal`` ("" for nothing); called only when
        ``explains`` is True."""
        ...


_PLANS: dict[str, type[Any]] = {}
_CONVERTER = make_converter()


P = TypeVar("P")


def register_plan(cls: type[P]) -> type[P]:
    """Register a plan class under its ``kind`` (usable as a decorator)."""
    kind = getattr(cls, "kind", None)
    if not (isinstance(cls, type) and attrs.has(cls)):
        raise ValidationError("a plan kind is an attrs class")
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValidationError("a plan kind names itself in a 'kind' class attribute")
    known = _PLANS.get(kind)
    if known is not None and known is not cls:
        raise ValidationError("that plan kind name is already registered")
    if not all(hasattr(cls, n) for n in ("pool", "note", "funded_by", "per_client", "explains")):
        raise ValidationError("a plan kind implements the Plan protocol")
    _PLANS[kind] = cls
    return cast(type[P], cls)


def plan_kinds() -> Mapping[str, type[Any]]:
    """The registered plan kinds, by name."""
    return dict(_PLANS)


def plan_to_data(plan: Plan) -> dict[str, Any]:
    """The JSON-ready form of a plan: its kind and its fields (amounts as text)."""
    if _PLANS.get(getattr(plan, "kind", None) or "") is not type(plan):
        raise ValidationError("only a registered plan kind can be stored")
    data: dict[str, Any] = _CONVERTER.unstructure(plan)
    return {"kind": plan.kind, **data}


def plan_from_data(data: object) -> Plan:
    """A plan from its stored form; an unknown kind or malformed fields are a CodecError."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise CodecError("a stored plan is an object with a kind")
    fields = dict(data)
    cls = _PLANS.get(fields.pop("kind"))
    if cls is None:
        raise CodecError("a stored plan is of a kind this code does not know")
    try:
        plan: Plan = _CONVERTER.structure(fields, cls)
    except FxCrmError as error:
        raise CodecError(f"a stored {cls.kind} plan is invalid: {error}") from None
    except Exception:  # cattrs wraps errors in several types; never echo the values
        raise CodecError(f"a stored {cls.kind} plan is malformed") from None
    return plan


# -- validation of plan fields ------------------------------------------------------------------


def _money(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Money):
        raise ValidationError(f"a plan's {attribute.name} is Money")
    if value.is_negative():
        raise ValidationError(f"a plan's {attribute.name} is not negative")


def _share(value: object) -> Decimal:
    share = to_decimal(value, "a share")
    if not 0 <= share <= 1:
        raise ValidationError("a share is between 0% and 100%")
    return share


def _rate(value: object) -> Decimal:
    """A non-negative rate below the largest amount (pips, a pip value, a spread)."""
    rate = to_decimal(value, "a rate")
    if not 0 <= rate < MAX_AMOUNT:
        raise ValidationError("a rate is not negative and below 10**18")
    return rate


def _optional_positive_rate(value: object) -> Decimal | None:
    if value is None:
        return None
    rate = _rate(value)
    if rate == 0:
        raise ValidationError("an average spread is positive")
    return rate


def _lots(value: object) -> Decimal:
    lots = to_decimal(value, "a number of lots")
    if not 0 <= lots < MAX_AMOUNT:
        raise ValidationError("a minimum of lots is not negative")
    return lots


def _currency(value: object) -> Currency:
    if not isinstance(value, str | Currency):
        raise ValidationError("a currency is a Currency or an ISO code")
    return Currency.of(value)


_BOTH = frozenset((COMMISSION, MARKUP))
_EXACT = EXACT


# -- the kinds ----------------------------------------------------------------------------------


@register_plan
@attrs.frozen(slots=True)
class PerLot:
    """``amount`` a lot. Payable from the commission or the spread markup."""

    kind: ClassVar[str] = "per_lot"
    funded_by: ClassVar[frozenset[str]] = _BOTH
    per_client: ClassVar[bool] = False
    explains: ClassVar[bool] = False

    amount: Money = attrs.field(validator=_money)

    def pool(self, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
        return self.amount * lots

    def note(self, deal: Deal) -> str:
        return ""


@register_plan
@attrs.frozen(slots=True)
class CommissionShare:
    """A share of the broker's commission on the deal. Payable from the commission only."""

    kind: ClassVar[str] = "commission_share"
    funded_by: ClassVar[frozenset[str]] = frozenset((COMMISSION,))
    per_client: ClassVar[bool] = False
    explains: ClassVar[bool] = False

    share: Decimal = attrs.field(converter=_share)

    def pool(self, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
        return abs(deal.commission) * self.share

    def note(self, deal: Deal) -> str:
        return ""


@register_plan
@attrs.frozen(slots=True)
class SpreadShare:
    """A share of the spread markup: ``markup`` a lot x lots x ``share``. With an
    ``average_spread`` (in price units, as the deal's ``spread``), a deal whose spread was
    wider than the average earns ``average / spread`` of that (never more when narrower).
    Payable from the spread markup only."""

    kind: ClassVar[str] = "spread_share"
    funded_by: ClassVar[frozenset[str]] = frozenset((MARKUP,))
    per_client: ClassVar[bool] = False
    explains: ClassVar[bool] = True

    markup: Money = attrs.field(validator=_money)
    share: Decimal = attrs.field(default=Decimal(1), converter=_share)
    average_spread: Decimal | None = attrs.field(default=None, converter=_optional_positive_rate)

    def factor(self, deal: Deal) -> Decimal | None:
        """``average / spread`` when the deal's spread is above the average, else None."""
        average, spread = self.average_spread, deal.spread
        if average is None or spread is None or spread <= average:
            return None
        # Inexact in general (2/3): 60 significant digits, rounded half-even, named here.
        return DIVISION.divide(average, spread)

    def pool(self, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
        pool = self.markup * _EXACT.multiply(lots, self.share)
        factor = self.factor(deal) if self.average_spread is not None else None
        return pool if factor is None else pool * factor

    def note(self, deal: Deal) -> str:
        if self.factor(deal) is None:
            return ""
        return f", spread {deal.spread!s} above the average {self.average_spread!s}"


@register_plan
@attrs.frozen(slots=True)
class Pips:
    """``pips`` x ``pip_value`` a lot x lots. A pip value is a rate (any precision, say
    0.0125 USD a pip and lot), not an amount of money. Payable from the spread markup."""

    kind: ClassVar[str] = "pips"
    funded_by: ClassVar[frozenset[str]] = frozenset((MARKUP,))
    per_client: ClassVar[bool] = False
    explains: ClassVar[bool] = False

    pips: Decimal = attrs.field(converter=_rate)
    pip_value: Decimal = attrs.field(converter=_rate)
    currency: Currency = attrs.field(converter=_currency)

    def pool(self, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
        try:
            amount = _EXACT.multiply(_EXACT.multiply(self.pip_value, self.pips), lots)
        except DecimalException as error:
            raise out_of_range(error, "a pips pool") from None
        return UnroundedMoney(amount, self.currency)

    def note(self, deal: Deal) -> str:
        return ""


@register_plan
@attrs.frozen(slots=True)
class ProfitShare:
    """A share of the client's profit on the deal, when positive. No revenue of the deal's pays
    for it: only a schedule without a ceiling may hold it."""

    kind: ClassVar[str] = "profit_share"
    funded_by: ClassVar[frozenset[str]] = frozenset()
    per_client: ClassVar[bool] = False
    explains: ClassVar[bool] = False

    share: Decimal = attrs.field(converter=_share)

    def pool(self, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
        if deal.profit.is_positive():
            return deal.profit * self.share
        return UnroundedMoney.zero(currency)

    def note(self, deal: Deal) -> str:
        return ""


@register_plan
@attrs.frozen(slots=True)
class Cpa:
    """``amount`` once per client whose first deposit is at least ``min_deposit`` and who traded
    ``min_lots`` lots (paid by the engine, per client: a schedule holds it as ``cpa``)."""

    kind: ClassVar[str] = "cpa"
    funded_by: ClassVar[frozenset[str]] = frozenset()
    per_client: ClassVar[bool] = True
    explains: ClassVar[bool] = False

    amount: Money = attrs.field(validator=_money)
    min_deposit: Money = attrs.field(validator=_money)
    min_lots: Decimal = attrs.field(default=Decimal(0), converter=_lots)

    def pool(self, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
        return UnroundedMoney.zero(currency)  # paid per client by the engine, not per deal

    def note(self, deal: Deal) -> str:
        return ""
