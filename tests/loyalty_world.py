"""A small world for the tier tests: a memory activity source, a tier service as a fresh process
builds it, actors and programmes."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import attrs

from fxcrm_core.access import (
    DEFAULT_POLICY,
    AccessControl,
    Actor,
    Approvals,
    Role,
    RowScope,
)
from fxcrm_core.access import register_events as register_access_events
from fxcrm_core.events import EventCodec, EventRegistry, EventStore, Repository
from fxcrm_core.kernel import FixedClock, Money, TradingCalendar
from fxcrm_core.loyalty import (
    Benefits,
    CalendarMonth,
    Combination,
    DowngradeRule,
    Measure,
    Threshold,
    Tier,
    TierProgramme,
    Tiers,
    UpgradeTiming,
    Window,
    register_events,
)

LOYALTY_GRANTS = {"tier.programme", "tier_override.request", "tier_override.approve"}
POLICY = DEFAULT_POLICY.with_role(
    Role.ADMIN, DEFAULT_POLICY.grants[Role.ADMIN] | LOYALTY_GRANTS, RowScope.ALL
)
ADMIN = Actor.staff("7", Role.ADMIN)
OTHER_ADMIN = Actor.staff("8", Role.ADMIN)
SUPPORT = Actor.staff("9", Role.SUPPORT)
CAL = TradingCalendar()
NEW_YORK = ZoneInfo("America/New_York")


@attrs.define
class MemoryActivity:
    """The activity source the tier engine asks: deals and deposits in lists, summed per span
    (start included, end excluded); equity is the last level set before the span's end."""

    deals: dict[str, list[tuple[datetime, Decimal]]] = attrs.Factory(lambda: defaultdict(list))
    deposits: dict[str, list[tuple[datetime, Decimal]]] = attrs.Factory(lambda: defaultdict(list))
    equity: dict[str, list[tuple[datetime, Decimal]]] = attrs.Factory(lambda: defaultdict(list))
    asked: int = 0

    def trade(self, client_id: str, at: datetime, lots: str | Decimal) -> None:
        self.deals[client_id].append((at, Decimal(lots)))

    def deposit(self, client_id: str, at: datetime, amount: str | Decimal) -> None:
        self.deposits[client_id].append((at, Decimal(amount)))

    def measure(self, client_id: str, measure: Measure, start: datetime, end: datetime) -> Decimal:
        self.asked += 1
        deals = [(t, lots) for t, lots in self.deals[client_id] if start <= t < end]
        if measure is Measure.LOTS:
            return sum((lots for _, lots in deals), Decimal(0))
        if measure is Measure.VOLUME_USD:
            return sum((lots * 100_000 for _, lots in deals), Decimal(0))
        if measure is Measure.TRADES:
            return Decimal(len(deals))
        if measure is Measure.ACTIVE_DAYS:
            return Decimal(len({CAL.trading_day(t) for t, _ in deals}))
        if measure is Measure.NET_DEPOSITS:
            return sum((a for t, a in self.deposits[client_id] if start <= t < end), Decimal(0))
        levels = [v for t, v in self.equity[client_id] if t < end]
        return levels[-1] if levels else Decimal(0)


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


BRONZE = Tier("bronze")
SILVER = Tier(
    "silver",
    all_of=[Threshold(Measure.LOTS, Decimal(10))],
    benefits=Benefits(usd("1.00"), Decimal("1.5"), 500, Decimal("0.1")),
)
GOLD = Tier(
    "gold",
    all_of=[Threshold(Measure.LOTS, Decimal(50))],
    any_of=[Threshold(Measure.NET_DEPOSITS, Decimal(5000)), Threshold(Measure.TRADES, Decimal(40))],
    benefits=Benefits(usd("2.50"), Decimal(2), 200, Decimal("0.25")),
)


def programme(
    start: datetime,
    *,
    version: int = 1,
    window: Window | None = None,
    upgrade: UpgradeTiming = UpgradeTiming.AT_ONCE,
    grace: int = 0,
    combination: Combination = Combination.CURRENT_PERIOD,
    tiers: tuple[Tier, ...] = (BRONZE, SILVER, GOLD),
) -> TierProgramme:
    return TierProgramme(
        "vip", version, start, tiers, window or CalendarMonth(), upgrade,
        DowngradeRule(grace), combination,
    )  # fmt: skip


@attrs.define
class World:
    store: EventStore
    activity: MemoryActivity
    clock: FixedClock
    tiers: Tiers
    approvals: Approvals

    def until(self, at: datetime) -> datetime:
        """Time passes up to ``at`` (the clock never goes back), and ``at`` is answered: a tier
        decision is dated no later than the clock's now."""
        if at > self.clock.now():
            self.clock.set(at)
        return at

    def fresh(self) -> Tiers:
        """A tier service as a new process builds it on the same log (nothing cached)."""
        return build(self.store, self.activity, self.clock).tiers


def build(store: EventStore, activity: MemoryActivity, clock: FixedClock) -> World:
    registry = EventRegistry()
    register_events(registry)
    register_access_events(registry)
    repository = Repository(store, EventCodec(registry))
    access = AccessControl(POLICY)
    approvals = Approvals(repository, access)
    tiers = Tiers(repository, access, approvals, activity, programme="vip", clock=clock)
    return World(store, activity, clock, tiers, approvals)


def world(prog: TierProgramme) -> World:
    from fxcrm_core.stores import MemoryEventStore

    clock = FixedClock(prog.effective_from - timedelta(days=1))
    w = build(MemoryEventStore(clock), MemoryActivity(), clock)
    w.tiers.record_programme(ADMIN, prog, reason="the VIP programme")
    return w


def ny(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    """A New York wall-clock time as UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK).astimezone(UTC)
