"""A broker with loyalty wired, on SQLite or in memory, and a scripted deal feed: clients trade
day by day through a quarter while the broker closes its trading days. Shared by the wired
loyalty tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

from fxcrm_core.access import Actor, Role
from fxcrm_core.accounts import GroupRule
from fxcrm_core.broker import Broker, BrokerOptions
from fxcrm_core.events import EventStore
from fxcrm_core.kernel import FixedClock, IdGenerator, Money, TradingCalendar
from fxcrm_core.loyalty import (
    Benefits,
    CalendarMonth,
    CashbackRate,
    Combination,
    DepositRate,
    DowngradeRule,
    Measure,
    PointsRules,
    Threshold,
    Tier,
    TierProgramme,
    UpgradeTiming,
)
from fxcrm_core.payments import PaymentLimits
from fxcrm_core.privacy import KeyStore
from fxcrm_core.trading import (
    Deal,
    DealAction,
    DealChange,
    DealEntry,
    FeedItem,
    SimulatedTradingServer,
    TradingServer,
)
from tests.system_world import IDENTITY_KEY, LEVEL_2, approve, keyring, register

SERVER = "mt5-live"
GROUP = "real\\usd"
DEMO_GROUP = "demo\\usd"  # play money: no loyalty
ADMIN = Actor.staff("admin-1", Role.ADMIN)
START = datetime(2026, 6, 30, 12, tzinfo=UTC)  # before the quarter: onboarding
CAL = TradingCalendar()


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


RULES = PointsRules(
    per_lot={"majors": Decimal(10)},
    symbol_groups={"EURUSD": "majors"},
    per_deposit=[DepositRate(usd(10), Decimal(1))],
    validity=timedelta(days=30),
    cashback=CashbackRate(Decimal(100), usd(1)),
)


def programme() -> TierProgramme:
    """Calendar months; Silver at 10 lots (x1.5 points), Gold at 30 (x2); no grace."""
    return TierProgramme(
        "main",
        1,
        datetime(2026, 7, 1, tzinfo=UTC),
        [
            Tier("bronze"),
            Tier(
                "silver",
                all_of=[Threshold(Measure.LOTS, Decimal(10))],
                benefits=Benefits(usd("1.00"), Decimal("1.5"), 500, Decimal("0.1")),
            ),
            Tier(
                "gold",
                all_of=[Threshold(Measure.LOTS, Decimal(30))],
                benefits=Benefits(usd("2.00"), Decimal(2), 200, Decimal("0.2")),
            ),
        ],
        CalendarMonth(),
        UpgradeTiming.AT_ONCE,
        DowngradeRule(grace_trading_days=0),
        Combination.CURRENT_PERIOD,
    )


class Feed:
    """A deal feed the test scripts (named as the broker's trading server)."""

    name = SERVER

    def __init__(self) -> None:
        self.items: list[FeedItem] = []

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        return [i for i in self.items if i.cursor > after_cursor][:limit]

    def add(self, change: DealChange, deal: Deal) -> None:
        self.items.append(FeedItem(len(self.items) + 1, change, deal))


def closing(login: int, ticket: int, lots: Decimal, at: datetime) -> Deal:
    return Deal(SERVER, ticket, login, DealAction.SELL, DealEntry.OUT, "EURUSD", lots, lots,
                Decimal("1.1"), ticket, ticket, usd(0), usd(0), usd(0), usd(0), at,
                timedelta(hours=3))  # fmt: skip


def options(clock: FixedClock, policies: Literal["inline", "worker"]) -> BrokerOptions:
    return BrokerOptions(
        keyring=keyring(),
        identity_key=IDENTITY_KEY,
        trading_server=SimulatedTradingServer(SERVER, seed=1, clock=clock),
        groups={
            GROUP: GroupRule(GROUP, "USD", 30, live=True),
            DEMO_GROUP: GroupRule(DEMO_GROUP, "USD", 30, live=False),
        },
        payment_limits=PaymentLimits([usd("50000")]),
        points_rules=RULES,
        policies=policies,
        ids=IdGenerator(clock, seed=7),  # the same ids in every broker the test builds
    )


def open_sqlite(path: Path, clock: FixedClock, policies: Literal["inline", "worker"]) -> Broker:
    return Broker.sqlite(path, clock=clock, synchronous="NORMAL", **options(clock, policies))


def open_memory(
    store: EventStore, keys: KeyStore, clock: FixedClock, policies: Literal["inline", "worker"]
) -> Broker:
    """A broker over a given memory store (a second one over the same store is a restart)."""
    return Broker(store, keystore=keys, clock=clock, **options(clock, policies))


def onboard(broker: Broker, email: str) -> tuple[str, int]:
    """A verified client with a live USD trading account; returns (client id, login)."""
    client_id = register(broker, email)
    approve(broker, client_id, *LEVEL_2)
    broker.accounts.open(Actor.client(client_id), client_id, GROUP, 30)
    broker.run_policies()  # (a worker broker: the KYC level before the deposit is judged)
    ((_, login),) = broker.activity.logins(client_id)
    return client_id, login


def trading_days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        if CAL.is_trading_day(day):
            yield day
        day += timedelta(days=1)


def noon(day: date) -> datetime:
    """Noon UTC inside ``day``'s trading session (before the 17:00 New York rollover)."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def as_data(value: Any) -> Any:
    """An event's fields, comparable across logs."""
    import attrs

    if attrs.has(type(value)):
        return (type(value).__name__, attrs.asdict(value, recurse=False))
    return value


def cast_feed(feed: Feed) -> TradingServer:
    return cast(TradingServer, feed)
