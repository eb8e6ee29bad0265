"""Rebate schedules: effective-dated versions of rules, resolved per deal from the most specific
to the most general (symbol → symbol alias → symbol group → account group → default), turned
into an unrounded pool for the deal, within the broker's revenue on it unless allowed."""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

import attrs

from fxcrm_core.kernel.errors import NotFoundError, ValidationError
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.trading import Deal, DealEntry

__all__ = ["PlanKind", "RebateLine", "Rule", "Schedule", "ScheduleBook", "Trigger", "base_symbol"]


class PlanKind(enum.Enum):
    PER_LOT = "per_lot"  # an amount a lot
    COMMISSION_SHARE = "commission_share"  # a share of the broker's commission on the deal
    SPREAD_SHARE = "spread_share"  # spread mark-up a lot x lots x share
    PIPS = "pips"  # pips x pip value x lots
    PROFIT_SHARE = "profit_share"  # a share of the client's profit, when positive


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

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValidationError("a share is between 0% and 100%")
        needs_amount = self.kind in (PlanKind.PER_LOT, PlanKind.SPREAD_SHARE, PlanKind.PIPS)
        if needs_amount and self.amount is None:
            raise ValidationError(f"a {self.kind.value} rule needs an amount")


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

    def resolve(self, symbol: str, account_group: str) -> tuple[Rule, str] | None:
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

    def line(self, deal: Deal, account_group: str) -> RebateLine | None:
        """The pool this deal earns, or None (no rule, not a trade, wrong trigger, nothing due)."""
        if not deal.action.is_trade:
            return None
        found = self.resolve(deal.symbol, account_group)
        if found is None:
            return None
        rule, level = found
        raw_lots = _counted_lots(deal, rule.trigger)
        if raw_lots == 0:
            return None
        modifier = self.lot_modifiers.get(account_group, Decimal(1))
        lots = raw_lots * modifier
        pool = _pool(rule, deal, lots, self.currency)
        note = f"{level}: {rule.kind.value}, {raw_lots} lots x {modifier} = {lots} lots"
        if rule.cap_per_deal is not None and pool.amount > rule.cap_per_deal.amount:
            pool, note = rule.cap_per_deal.to_unrounded(), f"{note}, capped at {rule.cap_per_deal}"
        revenue = abs(deal.commission) if deal.commission.currency == self.currency else None
        if not self.allow_above_revenue and revenue is not None and pool.amount > revenue.amount:
            pool, note = (
                revenue.to_unrounded(),
                f"{note}, limited to the broker's revenue {revenue}",
            )
        return RebateLine(pool, lots, level, note)


def _counted_lots(deal: Deal, trigger: Trigger) -> Decimal:
    """Lots that count for the trigger: opening volume, closed volume (partial closes count
    what they closed; an in/out reversal both closes and opens), or both."""
    closed = deal.volume_closed if deal.entry.closes else Decimal(0)
    if deal.entry is DealEntry.IN:
        opened = deal.volume
    elif deal.entry is DealEntry.INOUT:
        opened = deal.volume - deal.volume_closed
    else:
        opened = Decimal(0)
    if trigger is Trigger.OPEN:
        return opened
    if trigger is Trigger.CLOSE:
        return closed
    return opened + closed


def _pool(rule: Rule, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
    zero = UnroundedMoney.zero(currency)
    match rule.kind:
        case PlanKind.PER_LOT:
            assert rule.amount is not None
            return rule.amount * lots
        case PlanKind.COMMISSION_SHARE:
            return abs(deal.commission) * rule.share
        case PlanKind.SPREAD_SHARE:
            assert rule.amount is not None
            return rule.amount * (lots * rule.share)
        case PlanKind.PIPS:
            assert rule.amount is not None
            return rule.amount * (rule.pips * lots)
        case PlanKind.PROFIT_SHARE:
            return deal.profit * rule.share if deal.profit.is_positive() else zero
    raise ValidationError("unknown plan kind")


class ScheduleBook:
    """The versions of one schedule over time."""

    def __init__(self) -> None:
        self._versions: list[Schedule] = []

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

    def at(self, when: datetime) -> Schedule:
        i = bisect.bisect_right([s.effective_from for s in self._versions], to_utc(when, "at"))
        if i == 0:
            raise NotFoundError("no schedule version was in force then")
        return self._versions[i - 1]
