"""Rebate schedules: effective-dated versions of rules, resolved per deal from the most specific
to the most general (symbol → symbol alias → symbol group → account group → default), turned
into an unrounded pool for the deal by the rule's plan (:mod:`~fxcrm_core.commissions.plans`),
within the revenue the version names. A version may also pay a CPA on a client's qualified
first deposit and cap what an IB earns per period."""

from __future__ import annotations

import bisect
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import attrs

from fxcrm_core.commissions.plans import (
    COMMISSION,
    MARKUP,
    CommissionShare,
    Cpa,
    PerLot,
    Pips,
    Plan,
    ProfitShare,
    SpreadShare,
    plan_kinds,
)
from fxcrm_core.kernel._decimal import EXACT, to_decimal
from fxcrm_core.kernel.errors import NotFoundError, ValidationError
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.trading import Deal, DealEntry

log = logging.getLogger("fxcrm_core.commissions")

__all__ = [
    "CapPeriod",
    "Ceiling",
    "PeriodCap",
    "PlanKind",
    "RebateLine",
    "Revenue",
    "Rule",
    "Schedule",
    "ScheduleBook",
    "Trigger",
    "UnfundedPlanError",
    "base_symbol",
]


class PlanKind(enum.StrEnum):
    """The built-in plan kinds' names, for the short spelling ``Rule(PlanKind.PER_LOT, amount)``
    (a convenience over the plan classes of :mod:`~fxcrm_core.commissions.plans`)."""

    PER_LOT = "per_lot"  # an amount a lot
    COMMISSION_SHARE = "commission_share"  # a share of the broker's commission on the deal
    SPREAD_SHARE = "spread_share"  # spread mark-up a lot x lots x share
    PIPS = "pips"  # pips x pip value x lots
    PROFIT_SHARE = "profit_share"  # a share of the client's profit, when positive
    CPA = "cpa"  # an amount once per client, on a qualified first deposit (Schedule.cpa)


class Trigger(enum.Enum):
    OPEN = "open"
    CLOSE = "close"
    BOTH = "both"


class UnfundedPlanError(ValidationError):
    """A schedule holds a plan its revenue ceiling cannot pay from (a spread share against the
    commission alone, say): count the markup too, or set no ceiling."""

    default_message = "a plan cannot be paid from the schedule's revenue"


@attrs.frozen
class _Short:
    """The arguments of the short spelling ``Rule(PlanKind..., amount, share=, pips=, ...)``."""

    amount: Any
    share: Any
    pips: Any
    min_deposit: Any
    min_lots: Any


def _cpa(a: _Short) -> Plan:
    if a.min_deposit is None:
        raise ValidationError("a CPA rule needs a minimum first deposit")
    return Cpa(a.amount, a.min_deposit, a.min_lots if a.min_lots is not None else Decimal(0))


#: What each short spelling builds, and whether it needs an amount (a convenience over the plan
#: classes: a new kind needs no entry here, it is spelled with its class).
_SHORT: dict[PlanKind, tuple[bool, Callable[[_Short], Plan]]] = {
    PlanKind.PER_LOT: (True, lambda a: PerLot(a.amount)),
    PlanKind.COMMISSION_SHARE: (False, lambda a: CommissionShare(a.share)),
    PlanKind.SPREAD_SHARE: (True, lambda a: SpreadShare(a.amount, a.share)),
    PlanKind.PIPS: (True, lambda a: Pips(a.pips or Decimal(0), a.amount.amount, a.amount.currency)),
    PlanKind.PROFIT_SHARE: (False, lambda a: ProfitShare(a.share)),
    PlanKind.CPA: (True, _cpa),
}


def _legacy_plan(
    kind: PlanKind,
    amount: Money | None,
    share: object,
    pips: object,
    min_deposit: Money | None,
    min_lots: object,
) -> Plan:
    """The plan the short spelling stands for."""
    needs_amount, build = _SHORT[kind]
    if kind is not PlanKind.CPA and (min_deposit is not None or min_lots is not None):
        raise ValidationError("a minimum deposit or of lots belongs to a CPA rule")
    if needs_amount and not isinstance(amount, Money):
        raise ValidationError(f"a {kind.value} rule needs an amount (Money)")
    return build(
        _Short(amount, Decimal(1) if share is None else share, pips, min_deposit, min_lots)
    )


def _trigger(value: object) -> Trigger:
    if not isinstance(value, Trigger):
        raise ValidationError("a rule's trigger is a Trigger")
    return value


@attrs.frozen(init=False)
class Rule:
    """A plan and when it pays: on opening or closing deals (``trigger``), at most
    ``cap_per_deal`` a deal, only for positions held ``min_hold`` or longer (a closing deal whose
    opening is not known yet waits).

    ``Rule(PerLot(usd(2)))`` names the plan class; ``Rule(PlanKind.PER_LOT, usd(2))``,
    ``Rule(PlanKind.COMMISSION_SHARE, share=...)`` and ``Rule(PlanKind.CPA, amount,
    min_deposit=..., min_lots=...)`` are the short spellings of the built-in kinds.
    """

    plan: Plan
    trigger: Trigger = Trigger.CLOSE
    cap_per_deal: Money | None = None
    min_hold: timedelta | None = None

    def __init__(
        self,
        plan: Plan | PlanKind,
        amount: Money | None = None,
        *,
        share: Decimal | None = None,
        pips: Decimal | None = None,
        trigger: Trigger = Trigger.CLOSE,
        cap_per_deal: Money | None = None,
        min_hold: timedelta | None = None,
        min_deposit: Money | None = None,
        min_lots: Decimal | None = None,
    ) -> None:
        if isinstance(plan, PlanKind):
            plan = _legacy_plan(plan, amount, share, pips, min_deposit, min_lots)
        elif not _is_plan(plan):
            raise ValidationError("a rule's plan is a registered plan kind (or a PlanKind)")
        elif any(v is not None for v in (amount, share, pips, min_deposit, min_lots)):
            raise ValidationError("a plan object holds its own amounts: pass them to the plan")
        if cap_per_deal is not None and (
            not isinstance(cap_per_deal, Money) or cap_per_deal.is_negative()
        ):
            raise ValidationError("a cap per deal is Money, not negative")
        if min_hold is not None:
            if not isinstance(min_hold, timedelta) or min_hold <= timedelta(0):
                raise ValidationError("a minimum holding time is positive")
            if _trigger(trigger) is not Trigger.CLOSE or plan.per_client:
                raise ValidationError("a minimum holding time applies to rules paid on close")
        self.__attrs_init__(plan, _trigger(trigger), cap_per_deal, min_hold)

    @property
    def kind(self) -> str:
        """The plan's registered kind name (equal to a :class:`PlanKind` for built-in kinds)."""
        return self.plan.kind

    @property
    def amount(self) -> Money | None:
        """The plan's ``amount`` (per lot, a CPA's), if it has one."""
        value = getattr(self.plan, "amount", None)
        return value if isinstance(value, Money) else None

    @property
    def min_deposit(self) -> Money | None:
        """A CPA's minimum first deposit (None for other plans)."""
        value = getattr(self.plan, "min_deposit", None)
        return value if isinstance(value, Money) else None

    @property
    def min_lots(self) -> Decimal:
        """A CPA's minimum of lots traded (0 for other plans)."""
        value = getattr(self.plan, "min_lots", None)
        return value if isinstance(value, Decimal) else _NONE


def _is_plan(value: object) -> bool:
    return plan_kinds().get(getattr(value, "kind", None) or "") is type(value)


class Ceiling(enum.Enum):
    """What a schedule's pools may not exceed, per deal."""

    COMMISSION = "commission"  # the deal's commission
    COMMISSION_AND_MARKUP = "commission_and_markup"  # the commission plus the spread markup
    NONE = "none"  # no ceiling


def _markups(value: object) -> dict[str, Money]:
    if not isinstance(value, Mapping):
        raise ValidationError("a markup table maps symbols to Money a lot")
    out = {}
    for symbol, markup in value.items():
        _name(symbol, "a symbol")
        if not isinstance(markup, Money) or markup.is_negative():
            raise ValidationError("a markup a lot is Money, not negative")
        out[symbol] = markup
    return out


@attrs.frozen
class Revenue:
    """What a schedule's ceiling compares a deal's pool with: the deal's commission
    (:meth:`commission`), the commission plus the spread markup (:meth:`commission_and_markup`:
    ``markups[symbol]`` a lot counted, else the deal's own ``markup``), or nothing
    (:meth:`uncapped`)."""

    ceiling: Ceiling = Ceiling.COMMISSION
    markups: Mapping[str, Money] = attrs.field(factory=dict, converter=_markups)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.ceiling, Ceiling):
            raise ValidationError("a revenue's ceiling is a Ceiling")
        if self.markups and self.ceiling is not Ceiling.COMMISSION_AND_MARKUP:
            raise ValidationError("a markup table belongs to a commission-and-markup revenue")

    @classmethod
    def commission(cls) -> Revenue:
        return cls(Ceiling.COMMISSION)

    @classmethod
    def commission_and_markup(cls, markups: Mapping[str, Money] | None = None) -> Revenue:
        return cls(Ceiling.COMMISSION_AND_MARKUP, markups or {})

    @classmethod
    def uncapped(cls) -> Revenue:
        return cls(Ceiling.NONE)

    @property
    def sources(self) -> frozenset[str]:
        """The revenue sources counted (empty: no ceiling)."""
        if self.ceiling is Ceiling.COMMISSION:
            return frozenset((COMMISSION,))
        if self.ceiling is Ceiling.COMMISSION_AND_MARKUP:
            return frozenset((COMMISSION, MARKUP))
        return frozenset()

    def markup_for(self, symbol: str) -> Money | None:
        """The markup a lot of ``symbol`` (or of the symbol it is an alias of), if listed."""
        found = self.markups.get(symbol)
        if found is None:
            base = base_symbol(symbol, list(self.markups))
            found = self.markups.get(base) if base is not None else None
        return found


class CapPeriod(enum.Enum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    def start(self, day: date) -> date:
        """The first trading day of the period holding ``day``."""
        if self is CapPeriod.DAY:
            return day
        if self is CapPeriod.WEEK:
            return day - timedelta(days=day.weekday())
        return day.replace(day=1)

    def next_start(self, day: date) -> date:
        start = self.start(day)
        if self is CapPeriod.DAY:
            return start + timedelta(days=1)
        if self is CapPeriod.WEEK:
            return start + timedelta(days=7)
        return (start + timedelta(days=32)).replace(day=1)


@attrs.frozen
class PeriodCap:
    """At most ``amount`` per IB per period (by forex trading day), rebates and CPAs together."""

    amount: Money
    period: CapPeriod = CapPeriod.MONTH

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.amount, Money) or self.amount.is_negative():
            raise ValidationError("a cap is Money, not negative")
        if not isinstance(self.period, CapPeriod):
            raise ValidationError("a cap's period is a CapPeriod")


def base_symbol(symbol: str, known: Sequence[str]) -> str | None:
    """The known symbol an alias stands for: ``XAUUSD.m`` and ``XAUUSD-pro`` → ``XAUUSD``, and
    the lower-case names with suffixes MT4 statements show (``eurgbp-2`` → ``EURGBP``).

    >>> base_symbol("XAUUSD.m", ["EURUSD", "XAUUSD"])
    'XAUUSD'
    >>> base_symbol("eurgbp-2", ["EURGBP", "EURUSD"])
    'EURGBP'
    """
    upper = symbol.upper()
    candidates = [k for k in known if upper.startswith(k.upper()) and symbol != k]
    return max(candidates, key=len) if candidates else None


@attrs.frozen
class RebateLine:
    """One deal's pool under one rule, before it is shared up the chain. ``revenue``: what the
    schedule's ceiling allowed on this deal (None: no ceiling applies), which also bounds a
    strategy that pays its own rates rather than shares of the pool, together with the rule's
    cap per deal (None: nothing bounds the deal)."""

    pool: UnroundedMoney
    lots: Decimal  # after the lot modifier
    rule_level: str  # symbol, alias, symbol group, account group or default
    explanation: str
    revenue: Decimal | None = None


def _utc(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError("a schedule's effective_from is an aware datetime")
    return to_utc(value, "effective_from")


_MAX_NAME = 200


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME or not value.isprintable():
        raise ValidationError(f"{what} is a non-empty printable name of at most {_MAX_NAME}")
    return value


def _schedule_id(value: object) -> str:
    return _name(value, "a schedule id")


def _version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
        raise ValidationError("a schedule version is a whole number from 1")
    return value


def _currency(value: object) -> Currency:
    if not isinstance(value, Currency | str):
        raise ValidationError("a schedule's currency is a Currency or an ISO code")
    return Currency.of(value)


def _rules_by(value: object, what: str) -> dict[str, Rule]:
    if not isinstance(value, Mapping):
        raise ValidationError(f"a schedule's {what} maps names to rules")
    for key, rule in value.items():
        _name(key, f"a key of {what}")
        if not isinstance(rule, Rule):
            raise ValidationError(f"a schedule's {what} maps names to Rule objects")
    return dict(value)


def _by_symbol(value: object) -> dict[str, Rule]:
    return _rules_by(value, "by_symbol")


def _by_symbol_group(value: object) -> dict[str, Rule]:
    return _rules_by(value, "by_symbol_group")


def _by_account_group(value: object) -> dict[str, Rule]:
    return _rules_by(value, "by_account_group")


def _symbol_groups(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError("symbol groups map symbols to group names")
    for symbol, group in value.items():
        _name(symbol, "a symbol")
        _name(group, "a symbol group")
    return dict(value)


_MAX_MODIFIER = Decimal(1000)


def _modifiers(value: object) -> dict[str, Decimal]:
    if not isinstance(value, Mapping):
        raise ValidationError("lot modifiers map account groups to factors")
    out = {}
    for group, factor in value.items():
        _name(group, "an account group")
        number = to_decimal(factor, "a lot modifier")
        if not 0 < number <= _MAX_MODIFIER:
            raise ValidationError("a lot modifier is above 0 and at most 1000")
        out[group] = number
    return out


def _optional_rule(value: object) -> Rule | None:
    if value is not None and not isinstance(value, Rule):
        raise ValidationError("a schedule's default and CPA are Rule objects (or None)")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("allow_above_revenue is True or False")
    return value


#: A rule resolved for a (symbol, account group) and what line() needs of it, bound once:
#: the rule, its level, the note's head, the plan's pool and note methods (None: no note),
#: the trigger, the minimum holding time, the cap a deal, the markup a lot the ceiling counts.
_Bound = tuple[
    Rule,
    str,
    str,
    Callable[[Deal, Decimal, Currency], UnroundedMoney],
    Callable[[Deal], str] | None,
    Trigger,
    timedelta | None,
    Money | None,
    Money | None,
]


@attrs.frozen
class Schedule:
    """One version of a schedule, in force from ``effective_from``.

    ``revenue`` says what a deal's pool may not exceed (:class:`Revenue`; the commission by
    default). ``allow_above_revenue=True`` is the older spelling of ``Revenue.uncapped()``
    (deprecated: kept so existing code reads the same). A plan that the revenue cannot pay
    from (a spread share against the commission alone) is refused with
    :class:`UnfundedPlanError`.
    """

    schedule_id: str = attrs.field(converter=_schedule_id)
    version: int = attrs.field(converter=_version)
    effective_from: datetime = attrs.field(converter=_utc)
    currency: Currency = attrs.field(converter=_currency)
    by_symbol: Mapping[str, Rule] = attrs.field(factory=dict, converter=_by_symbol)
    symbol_groups: Mapping[str, str] = attrs.field(  # symbol -> group name
        factory=dict, converter=_symbol_groups
    )
    by_symbol_group: Mapping[str, Rule] = attrs.field(factory=dict, converter=_by_symbol_group)
    by_account_group: Mapping[str, Rule] = attrs.field(factory=dict, converter=_by_account_group)
    default: Rule | None = attrs.field(default=None, converter=_optional_rule)
    lot_modifiers: Mapping[str, Decimal] = attrs.field(  # account group -> factor
        factory=dict, converter=_modifiers
    )
    allow_above_revenue: bool = attrs.field(default=False, converter=_flag)
    cpa: Rule | None = attrs.field(default=None, converter=_optional_rule)  # a CPA plan's rule
    period_cap: PeriodCap | None = None
    revenue: Revenue = attrs.field(default=None)  # None: from allow_above_revenue
    _resolved: dict[tuple[str, str], tuple[Rule, str] | None] = attrs.field(
        factory=dict, init=False, eq=False, repr=False
    )
    _bound: dict[tuple[str, str], _Bound | None] = attrs.field(
        factory=dict, init=False, eq=False, repr=False
    )
    #: Whether any rule pays on opening deals (else opening deals earn nothing by themselves).
    pays_on_open: bool = attrs.field(default=False, init=False, eq=False, repr=False)
    _ceiling: Ceiling = attrs.field(default=Ceiling.COMMISSION, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        revenue = self.revenue
        if revenue is None:
            revenue = Revenue.uncapped() if self.allow_above_revenue else Revenue.commission()
        elif not isinstance(revenue, Revenue):
            raise ValidationError("a schedule's revenue is a Revenue")
        elif self.allow_above_revenue and revenue.ceiling is not Ceiling.NONE:
            raise ValidationError("allow_above_revenue=True contradicts a revenue with a ceiling")
        object.__setattr__(self, "revenue", revenue)
        object.__setattr__(self, "_ceiling", revenue.ceiling)
        object.__setattr__(self, "allow_above_revenue", revenue.ceiling is Ceiling.NONE)
        if self.period_cap is not None and not isinstance(self.period_cap, PeriodCap):
            raise ValidationError("a schedule's period cap is a PeriodCap")
        if self.cpa is not None and not self.cpa.plan.per_client:
            raise ValidationError("a schedule's CPA rule is of kind CPA")
        if any(r.plan.per_client for r in self._rules()):
            raise ValidationError("a CPA is paid per client, not per deal: use Schedule.cpa")
        sources = revenue.sources
        for rule in self._rules():
            self._check_currency(rule)
            if sources and not rule.plan.funded_by & sources:
                raise UnfundedPlanError(
                    f"a {rule.kind} plan cannot be paid from the {revenue.ceiling.value} "
                    "revenue: count the spread markup (Revenue.commission_and_markup) or set no "
                    "ceiling (Revenue.uncapped())"
                )
        for money in (*revenue.markups.values(), *_cap_amount(self.period_cap)):
            if money.currency != self.currency:
                raise ValidationError("a schedule's amounts are in its currency")
        cpa_amount = self.cpa.amount if self.cpa is not None else None
        if cpa_amount is not None and cpa_amount.currency != self.currency:
            raise ValidationError("a schedule's amounts are in its currency")
        on_open = any(r.trigger is not Trigger.CLOSE for r in self._rules())
        object.__setattr__(self, "pays_on_open", on_open)

    def _check_currency(self, rule: Rule) -> None:
        plan_fields = attrs.fields(cast(Any, type(rule.plan)))
        values = [getattr(rule.plan, f.name) for f in plan_fields]
        values.append(rule.cap_per_deal)
        for value in values:
            code = value.currency if isinstance(value, Money) else value
            if isinstance(code, Currency) and code != self.currency:
                raise ValidationError("a schedule's amounts are in its currency")

    def _rules(self) -> list[Rule]:
        default = [self.default] if self.default else []
        return [*self.by_symbol.values(), *self.by_symbol_group.values(),
                *self.by_account_group.values(), *default]  # fmt: skip

    def rules(self) -> list[Rule]:
        """Every per-deal rule of the version (by symbol, symbol group, account group, default)."""
        return self._rules()

    @property
    def needs_history(self) -> bool:
        """Whether deals depend on earlier deals (a CPA, or a minimum holding time)."""
        return self.cpa is not None or self.needs_openings

    @property
    def needs_openings(self) -> bool:
        """Whether a closing deal's rebate depends on when its position opened."""
        return any(r.min_hold is not None for r in self._rules())

    def resolve(self, symbol: str, account_group: str) -> tuple[Rule, str] | None:
        """The rule for a symbol on an account group, and the level it was found at."""
        key = (symbol, account_group)
        try:
            return self._resolved[key]
        except KeyError:
            found = self._resolved[key] = self._resolve(symbol, account_group)
            return found

    def _resolve(self, symbol: str, account_group: str) -> tuple[Rule, str] | None:
        if symbol in self.by_symbol:
            return self.by_symbol[symbol], f"symbol {symbol}"
        known = list(self.by_symbol) + list(self.symbol_groups)
        base = base_symbol(symbol, known)
        if base is not None and base in self.by_symbol:
            return self.by_symbol[base], f"alias {symbol} of {base}"
        group = self.symbol_groups.get(symbol) or (self.symbol_groups.get(base) if base else None)
        if group is not None and group in self.by_symbol_group:
            return self.by_symbol_group[group], f"symbol group {group}"
        if account_group in self.by_account_group:
            return self.by_account_group[account_group], f"account group {account_group}"
        if self.default is not None:
            return self.default, "default"
        return None

    def _bind(self, symbol: str, account_group: str) -> _Bound | None:
        found = self.resolve(symbol, account_group)
        if found is None:
            return None
        rule, level = found
        plan = rule.plan
        markup = None
        if self.revenue.ceiling is _AND_MARKUP:
            markup = self.revenue.markup_for(symbol)
        return (rule, level, f"{level}: {rule.kind}, ", plan.pool,
                plan.note if plan.explains else None, rule.trigger, rule.min_hold,
                rule.cap_per_deal, markup)  # fmt: skip

    def line(
        self, deal: Deal, account_group: str, *, held: timedelta | None = None
    ) -> RebateLine | None:
        """The pool this deal earns, or None (no rule, not a trade, wrong trigger, nothing due,
        held shorter than the rule's minimum). ``held``: how long the position was open.

        An explanation that states an amount for the pool (a cap, the revenue ceiling) states
        the pool itself."""
        try:
            if not deal.action.is_trade:
                return None
            key = (deal.symbol, account_group)
        except AttributeError:
            raise ValidationError("a schedule prices a Deal") from None
        try:
            bound = self._bound[key]
        except KeyError:
            if not isinstance(account_group, str) or not isinstance(deal, Deal):
                raise ValidationError("a schedule prices a Deal in an account group") from None
            bound = self._bound[key] = self._bind(deal.symbol, account_group)
        if bound is None:
            return None
        _, level, head, pool_of, note_of, trigger, min_hold, cap, markup = bound
        raw_lots = counted_lots(deal, trigger)
        if raw_lots == 0:
            return None
        held_note = ""
        if min_hold is not None and deal.entry.closes:
            if held is None or held < min_hold:
                return None
            held_note = f", held {held} (minimum {min_hold})"
        modifier = self.lot_modifiers.get(account_group, _ONE)
        lots = raw_lots * modifier
        currency = self.currency
        pool = pool_of(deal, lots, currency)
        # ({d!s}: a plain {d} formats a Decimal four times slower.)
        note = f"{head}{raw_lots!s} lots x {modifier!s} = {lots!s} lots{held_note}"
        if note_of is not None:
            note += note_of(deal)
        capped = None
        if cap is not None:
            capped = cap.amount
            if pool.amount > capped:
                pool, note = cap.to_unrounded(), f"{note}, capped at {cap}"
        ceiling = self._ceiling
        if ceiling is _NO_CEILING:
            return RebateLine(pool, lots, level, note, capped)
        commission = deal.commission
        if not (commission.currency is currency or commission.currency == currency):
            # The ceiling cannot compare a revenue in another currency (the schedule holds no
            # rates): nothing is paid rather than an amount no ceiling checked. Such accounts
            # take a schedule in their own currency, or an uncapped revenue.
            _warn_currency(self.schedule_id, currency, commission.currency)
            note = (
                f"{note}, limited to nothing: the broker's revenue is in "
                f"{commission.currency.code}, not {currency.code}"
            )
            return RebateLine(UnroundedMoney.zero(currency), lots, level, note, _NONE)
        # The broker's revenue is the commission it charged (negative on the deal); a
        # commission credited to the client is no revenue.
        charged = -commission.amount
        revenue = charged if charged > 0 else _NONE
        if ceiling is _AND_MARKUP:
            earned = _markup(deal, markup, raw_lots, currency)
            limit = EXACT.add(revenue, earned)
            if pool.amount > limit:
                total = UnroundedMoney(limit, currency)
                note = (
                    f"{note}, limited to the broker's revenue {total.amount!s} {currency.code} "
                    f"(commission {revenue!s} + markup {earned!s})"
                )
                return RebateLine(total, lots, level, note, _least(limit, capped))
            return RebateLine(pool, lots, level, note, _least(limit, capped))
        if pool.amount > revenue:
            pool = UnroundedMoney(revenue, currency)
            note = f"{note}, limited to the broker's revenue {pool.amount!s} {currency.code}"
        return RebateLine(pool, lots, level, note, _least(revenue, capped))


def _least(limit: Decimal, cap: Decimal | None) -> Decimal:
    return limit if cap is None or limit <= cap else cap


_WARNED: set[tuple[str, str, str]] = set()


def _warn_currency(schedule_id: str, ours: Currency, theirs: Currency) -> None:
    """Say once per schedule and currency pair that deals in ``theirs`` earn nothing."""
    key = (schedule_id, ours.code, theirs.code)
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(
            "deals with a commission in another currency than their schedule's earn nothing "
            "under its commission ceiling",
            extra={"schedule": schedule_id, "schedule_currency": ours.code,
                   "deal_currency": theirs.code},
        )  # fmt: skip


def _markup(deal: Deal, per_lot: Money | None, lots: Decimal, currency: Currency) -> Decimal:
    """The spread markup the broker earned on the deal: the table's rate a lot, else the
    deal's own markup (in the schedule's currency), else nothing."""
    if per_lot is not None:
        return EXACT.multiply(per_lot.amount, lots)
    own = deal.markup
    if own is not None and own.currency == currency:
        return own.amount.copy_abs()
    return _NONE


def _cap_amount(cap: PeriodCap | None) -> tuple[Money, ...]:
    return () if cap is None else (cap.amount,)


def lots_opened_closed(deal: Deal) -> tuple[Decimal, Decimal]:
    """The lots a deal opened and closed (partial closes count what they closed; an in/out
    reversal both closes and opens)."""
    entry = deal.entry
    if entry is _IN:
        return deal.volume, _NONE
    if entry is _INOUT:
        return deal.volume - deal.volume_closed, deal.volume_closed
    return _NONE, deal.volume_closed


_NONE, _ONE = Decimal(0), Decimal(1)


def counted_lots(deal: Deal, trigger: Trigger) -> Decimal:
    """Lots that count for the trigger: opening volume, closed volume (partial closes count
    what they closed; an in/out reversal both closes and opens), or both."""
    opened, closed = lots_opened_closed(deal)
    if trigger is _OPEN:
        return opened
    if trigger is _CLOSE:
        return closed
    return opened + closed


# Members bound once for the per-deal paths: on Python 3.11 ``Trigger.OPEN`` goes through
# the enum metaclass's __getattr__ hook (about 200 ns a lookup).
_OPEN, _CLOSE = Trigger.OPEN, Trigger.CLOSE
_NO_CEILING, _AND_MARKUP = Ceiling.NONE, Ceiling.COMMISSION_AND_MARKUP
_IN, _INOUT = DealEntry.IN, DealEntry.INOUT


class ScheduleBook:
    """The versions of one schedule over time."""

    def __init__(self) -> None:
        self._versions: list[Schedule] = []
        self._starts: list[datetime] = []
        self.needs_history = False  # some version pays a CPA or has a minimum holding time
        self.needs_openings = False  # some version has a minimum holding time
        self.pays_cpa = False  # some version pays a CPA
        self.counts_opened_lots = False  # ... counting opened lots
        self.pays_on_open = False  # some version has a rule paid on opening deals
        self.has_caps = False  # some version caps what an IB earns per period
        self._caps: dict[tuple[CapPeriod, date], Money] = {}
        self._cap_of_day: dict[date, tuple[CapPeriod, date, Money] | None] = {}

    def add(self, schedule: Schedule) -> None:
        if self._versions:
            last = self._versions[-1]
            if schedule.schedule_id != last.schedule_id or schedule.version != last.version + 1:
                raise ValidationError("schedule versions follow each other: 1, 2, 3 ...")
            if schedule.effective_from <= last.effective_from:
                raise ValidationError("a new version takes effect after the previous one")
        elif schedule.version != 1:
            raise ValidationError("a schedule starts at version 1")
        self._versions.append(schedule)
        self._starts.append(schedule.effective_from)
        self.needs_history = self.needs_history or schedule.needs_history
        self.needs_openings = self.needs_openings or schedule.needs_openings
        self.pays_cpa = self.pays_cpa or schedule.cpa is not None
        self.pays_on_open = self.pays_on_open or schedule.pays_on_open
        self.counts_opened_lots = self.counts_opened_lots or (
            schedule.cpa is not None and schedule.cpa.trigger is not Trigger.CLOSE
        )
        self.has_caps = self.has_caps or schedule.period_cap is not None
        self._caps.clear()
        self._cap_of_day.clear()

    def __len__(self) -> int:
        return len(self._versions)

    def catch_up(self) -> int:
        """Read versions recorded since (a book fed from the log does; this one holds only what
        was added): returns how many."""
        return 0

    def version(self, number: int) -> Schedule:
        """Version ``number`` (versions count from 1)."""
        if not 1 <= number <= len(self._versions):
            raise NotFoundError("no such schedule version")
        return self._versions[number - 1]

    def at(self, when: datetime) -> Schedule:
        i = bisect.bisect_right(self._starts, to_utc(when, "at"))
        if i == 0:
            raise NotFoundError("no schedule version was in force then")
        return self._versions[i - 1]

    def cap_for(self, day: date) -> tuple[CapPeriod, date, Money] | None:
        """The cap on the period holding trading day ``day``: the period of the version in force
        that day, and the strictest amount of any version in force during that period (a new
        version cannot raise the cap of a period already under way). None: no cap."""
        try:
            return self._cap_of_day[day]
        except KeyError:
            found = self._cap_of_day[day] = self._cap_for(day)
            return found

    def _cap_for(self, day: date) -> tuple[CapPeriod, date, Money] | None:
        try:
            today = self.at(_midnight(day)).period_cap
        except NotFoundError:
            return None
        if today is None:
            return None
        period, start = today.period, today.period.start(day)
        key = (period, start)
        if key not in self._caps:
            first = bisect.bisect_right(self._starts, _midnight(start))
            end = bisect.bisect_left(self._starts, _midnight(period.next_start(day)))
            caps = [
                v.period_cap.amount
                for v in self._versions[max(first - 1, 0) : end]
                if v.period_cap is not None and v.period_cap.period is period
            ]
            self._caps[key] = min(caps, key=lambda m: m.amount)
        return period, start, self._caps[key]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
