"""Rebate schedules: effective-dated versions of rules, resolved per deal from the most specific
to the most general (symbol → symbol alias → symbol group → account group → default), turned
into an unrounded pool for the deal, within the broker's revenue on it unless allowed. A version
may also pay a CPA on a client's qualified first deposit and cap what an IB earns per period."""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import attrs

from fxcrm_core.kernel.errors import NotFoundError, ValidationError
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.trading import Deal, DealEntry

__all__ = [
    "CapPeriod",
    "PeriodCap",
    "PlanKind",
    "RebateLine",
    "Rule",
    "Schedule",
    "ScheduleBook",
    "Trigger",
    "base_symbol",
]


class PlanKind(enum.Enum):
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


@attrs.frozen
class Rule:
    kind: PlanKind
    amount: Money | None = None  # PER_LOT: a lot; SPREAD_SHARE: mark-up a lot; PIPS: pip value
    share: Decimal = Decimal(1)  # COMMISSION/SPREAD/PROFIT shares
    pips: Decimal = Decimal(0)
    trigger: Trigger = Trigger.CLOSE
    cap_per_deal: Money | None = None
    # A closing deal earns only if its position was held at least this long; until the
    # position's opening deal is known, the closing deal's rebate waits.
    min_hold: timedelta | None = None
    min_deposit: Money | None = None  # CPA: the first deposit must be at least this
    min_lots: Decimal = Decimal(0)  # CPA: and the client must have traded this many lots

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValidationError("a share is between 0% and 100%")
        needs_amount = (PlanKind.PER_LOT, PlanKind.SPREAD_SHARE, PlanKind.PIPS, PlanKind.CPA)
        if self.kind in needs_amount and self.amount is None:
            raise ValidationError(f"a {self.kind.value} rule needs an amount")
        if self.kind is PlanKind.CPA and self.min_deposit is None:
            raise ValidationError("a CPA rule needs a minimum first deposit")
        if self.min_lots < 0:
            raise ValidationError("a minimum of lots is not negative")
        if self.min_hold is not None:
            if self.min_hold <= timedelta(0):
                raise ValidationError("a minimum holding time is positive")
            if self.trigger is not Trigger.CLOSE or self.kind is PlanKind.CPA:
                raise ValidationError("a minimum holding time applies to rules paid on close")


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
        if self.amount.is_negative():
            raise ValidationError("a cap is not negative")


def base_symbol(symbol: str, known: Sequence[str]) -> str | None:
    """The known symbol an alias stands for: ``XAUUSD.m`` and ``XAUUSD-pro`` → ``XAUUSD``.

    >>> base_symbol("XAUUSD.m", ["EURUSD", "XAUUSD"])
    'XAUUSD'
    """
    candidates = [k for k in known if symbol.startswith(k) and symbol != k]
    return max(candidates, key=len) if candidates else None


@attrs.frozen
class RebateLine:
    """One deal's pool under one rule, before it is shared up the chain."""

    pool: UnroundedMoney
    lots: Decimal  # after the lot modifier
    rule_level: str  # symbol, alias, symbol group, account group or default
    explanation: str


def _utc(value: datetime) -> datetime:
    return to_utc(value, "effective_from")


@attrs.frozen
class Schedule:
    """One version of a schedule, in force from ``effective_from``."""

    schedule_id: str
    version: int
    effective_from: datetime = attrs.field(converter=_utc)
    currency: Currency
    by_symbol: Mapping[str, Rule] = attrs.field(factory=dict)
    symbol_groups: Mapping[str, str] = attrs.field(factory=dict)  # symbol -> group name
    by_symbol_group: Mapping[str, Rule] = attrs.field(factory=dict)
    by_account_group: Mapping[str, Rule] = attrs.field(factory=dict)
    default: Rule | None = None
    lot_modifiers: Mapping[str, Decimal] = attrs.field(factory=dict)  # account group -> factor
    allow_above_revenue: bool = False
    cpa: Rule | None = None  # a PlanKind.CPA rule
    period_cap: PeriodCap | None = None
    _resolved: dict[tuple[str, str], tuple[Rule, str] | None] = attrs.field(
        factory=dict, init=False, eq=False, repr=False
    )
    _heads: dict[str, str] = attrs.field(  # a level's note opening, by level (one rule each)
        factory=dict, init=False, eq=False, repr=False
    )
    #: Whether any rule pays on opening deals (else opening deals earn nothing by themselves).
    pays_on_open: bool = attrs.field(default=False, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.cpa is not None and self.cpa.kind is not PlanKind.CPA:
            raise ValidationError("a schedule's CPA rule is of kind CPA")
        if any(r.kind is PlanKind.CPA for r in self._rules()):
            raise ValidationError("a CPA is paid per client, not per deal: use Schedule.cpa")
        on_open = any(r.trigger is not Trigger.CLOSE for r in self._rules())
        object.__setattr__(self, "pays_on_open", on_open)

    def _rules(self) -> list[Rule]:
        default = [self.default] if self.default else []
        return [*self.by_symbol.values(), *self.by_symbol_group.values(),
                *self.by_account_group.values(), *default]  # fmt: skip

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

    def line(
        self, deal: Deal, account_group: str, *, held: timedelta | None = None
    ) -> RebateLine | None:
        """The pool this deal earns, or None (no rule, not a trade, wrong trigger, nothing due,
        held shorter than the rule's minimum). ``held``: how long the position was open."""
        if not deal.action.is_trade:
            return None
        found = self.resolve(deal.symbol, account_group)
        if found is None:
            return None
        rule, level = found
        head = self._heads.get(level)
        if head is None:
            head = self._heads[level] = f"{level}: {rule.kind.value}, "
        raw_lots = counted_lots(deal, rule.trigger)
        if raw_lots == 0:
            return None
        held_note = ""
        if rule.min_hold is not None and deal.entry.closes:
            if held is None or held < rule.min_hold:
                return None
            held_note = f", held {held} (minimum {rule.min_hold})"
        modifier = self.lot_modifiers.get(account_group, _ONE)
        lots = raw_lots * modifier
        pool = _pool(rule, deal, lots, self.currency)
        # ({d!s}: a plain {d} formats a Decimal four times slower.)
        note = f"{head}{raw_lots!s} lots x {modifier!s} = {lots!s} lots{held_note}"
        if rule.cap_per_deal is not None and pool.amount > rule.cap_per_deal.amount:
            pool, note = rule.cap_per_deal.to_unrounded(), f"{note}, capped at {rule.cap_per_deal}"
        commission = deal.commission
        if (
            not self.allow_above_revenue
            and (commission.currency is self.currency or commission.currency == self.currency)
            and pool.amount > commission.amount.copy_abs()
        ):
            revenue = abs(commission)
            pool = revenue.to_unrounded()
            note = f"{note}, limited to the broker's revenue {revenue}"
        return RebateLine(pool, lots, level, note)


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


def _pool(rule: Rule, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
    kind = rule.kind
    if kind is _PER_LOT:
        assert rule.amount is not None
        return rule.amount * lots
    if kind is _COMMISSION_SHARE:
        return abs(deal.commission) * rule.share
    if kind is _SPREAD_SHARE:
        assert rule.amount is not None
        return rule.amount * (lots * rule.share)
    if kind is _PIPS:
        assert rule.amount is not None
        return rule.amount * (rule.pips * lots)
    if kind is _PROFIT_SHARE:
        if deal.profit.is_positive():
            return deal.profit * rule.share
        return UnroundedMoney.zero(currency)
    if kind is _CPA:
        return UnroundedMoney.zero(currency)  # paid per client by the engine, not per deal
    raise ValidationError("unknown plan kind")


# Members bound once for the per-deal paths: on Python 3.11 ``PlanKind.PER_LOT`` goes through
# the enum metaclass's __getattr__ hook (about 200 ns a lookup).
_PER_LOT, _COMMISSION_SHARE, _SPREAD_SHARE, _PIPS, _PROFIT_SHARE, _CPA = (
    PlanKind.PER_LOT, PlanKind.COMMISSION_SHARE, PlanKind.SPREAD_SHARE, PlanKind.PIPS,
    PlanKind.PROFIT_SHARE, PlanKind.CPA,
)  # fmt: skip
_OPEN, _CLOSE = Trigger.OPEN, Trigger.CLOSE
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
