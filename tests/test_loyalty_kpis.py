"""Loyalty KPIs (issue 15, item 8): churn rate, tier distribution, points flows with redemption
and participation rates, lifetime value per period and cohort, hand-computed on a small world;
period edges at 17:00 New York either side of the March DST change; a fresh process over
SQLite answers the same; laws (rates within [0, 1], tiers summing to the clients counted, a
replay counting nothing twice) under hypothesis."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.access import register_events as register_access_events
from fxcrm_core.accounts import TradingAccount, TradingAccountOpened
from fxcrm_core.accounts import register_events as register_account_events
from fxcrm_core.activity import ClientActivity, Period
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    ProjectionRunner,
    Repository,
    UnitOfWork,
)
from fxcrm_core.events import register_events as register_core_events
from fxcrm_core.kernel import FixedClock, Money, TradingCalendar
from fxcrm_core.kernel.errors import ArgumentTypeError, ValidationError
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.ledger import register_events as register_ledger_events
from fxcrm_core.loyalty import (
    CalendarMonth,
    ChurnState,
    ChurnWarningCleared,
    ChurnWarningRaised,
    ClientTier,
    Combination,
    DowngradeRule,
    PointsAccount,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    PointsRepriced,
    PointsReversed,
    Tier,
    TierChanged,
    TierOverrideSet,
    TierProgramme,
    TierProgrammeRecorded,
    UpgradeTiming,
    register_events,
)
from fxcrm_core.loyalty.events import TierProgrammeStream
from fxcrm_core.loyalty.kpis import CohortValue, KpiReport, LoyaltyKpis, PointsFlows
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore
from fxcrm_core.trading import (
    Deal,
    DealAction,
    DealChange,
    DealEntry,
    DealFeeds,
    FeedItem,
    TradingServer,
)
from fxcrm_core.trading import register_events as register_trading_events

CAL = TradingCalendar()
SINCE = date(2026, 1, 1)
SERVER = "mt5"
D = Decimal
VIP = TierProgramme(
    "vip", 1, datetime(2026, 1, 1, tzinfo=UTC),
    [Tier("bronze"), Tier("silver"), Tier("gold")],
    CalendarMonth(), UpgradeTiming.AT_ONCE, DowngradeRule(), Combination.CURRENT_PERIOD,
)  # fmt: skip


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


class Feed:
    name = SERVER

    def __init__(self) -> None:
        self.items: list[FeedItem] = []

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        return [i for i in self.items if i.cursor > after_cursor][:limit]


class World:
    """A log with the events the KPIs read, written with the real event classes: wallets and
    deposits through the ledger, deals through the deal feed, loyalty events through units of
    work; the clock says when each is recorded."""

    def __init__(self, store: EventStore | None = None, clock: FixedClock | None = None) -> None:
        self.clock = clock or FixedClock(utc(2026, 1, 2, 12))
        registry = EventRegistry()
        for register in (
            register_core_events,
            register_access_events,
            register_ledger_events,
            register_trading_events,
            register_account_events,
            register_events,
        ):
            register(registry)
        self.store = store or MemoryEventStore(self.clock)
        self.repository = Repository(self.store, EventCodec(registry))
        self.ledger = Ledger(self.repository, clock=self.clock)
        self.clearing = self.ledger.open_account(
            "psp_clearing:USD", owner="broker", currency="USD", purpose="psp_clearing"
        ).id
        self.feed = Feed()
        self.logins: dict[str, int] = {}
        self.ticket = 0

    def kpis(self) -> LoyaltyKpis:
        """The KPIs as a new process builds them: a fresh runner and read models."""
        runner = ProjectionRunner(self.store, self.repository.codec)
        activity = ClientActivity(runner, CAL, clock=self.clock)
        return LoyaltyKpis(runner, activity, since=SINCE, calendar=CAL)

    def at(self, when: datetime) -> World:
        self.clock.set(when)
        return self

    def record(self, cls: type[Aggregate], aggregate_id: str, *events: DomainEvent) -> None:
        with UnitOfWork(self.repository, EventMetadata("system:test")) as uow:
            state = uow.load(cls, aggregate_id) or cls.blank(aggregate_id)
            uow.record(state, *events)
            uow.commit()

    # -- activity -------------------------------------------------------------------------------
    def client(self, client_id: str) -> None:
        login = 1001 + len(self.logins)
        self.logins[client_id] = login
        self.ledger.open_account(f"wallet:{client_id}:USD", owner=client_id, currency="USD",
                                 purpose="wallet")  # fmt: skip
        self.record(TradingAccount, f"acc-{client_id}", TradingAccountOpened(
            f"acc-{client_id}", client_id, SERVER, login, "real\\usd", "USD", 100, True,
        ))  # fmt: skip

    def trade(self, client_id: str, at: datetime, commission: str) -> Deal:
        self.ticket += 1
        deal = Deal(
            SERVER, self.ticket, self.logins[client_id], DealAction.SELL, DealEntry.OUT,
            "EURUSD", D(1), D(1), D("1.1"), self.ticket, self.ticket, usd("-" + commission),
            usd(0), usd(0), usd(0), at, timedelta(hours=2),
        )  # fmt: skip
        self.feed.items.append(FeedItem(len(self.feed.items) + 1, DealChange.ADDED, deal))
        DealFeeds(self.repository).pull(cast(TradingServer, self.feed))
        return deal

    def deposit(self, client_id: str, deposit_id: str, amount: int) -> None:
        wallet = f"wallet:{client_id}:USD"
        self.ledger.transfer(
            TransferRequest(f"deposit:{deposit_id}", self.clearing, wallet, usd(amount))
        )

    # -- loyalty --------------------------------------------------------------------------------
    def earn(self, client_id: str, source: str, points: int, at: datetime) -> None:
        self.at(at).record(PointsAccount, client_id, PointsEarned(
            client_id, source, D(points), at, at + timedelta(days=90), (),
        ))  # fmt: skip

    def redeem(self, client_id: str, request: str, taken: tuple[tuple[str, Decimal], ...]) -> None:
        points = sum((p for _, p in taken), D(0))
        redeemed = PointsRedeemed(client_id, request, points, taken, None, None, "mug")
        self.record(PointsAccount, client_id, redeemed)

    def tier(self, client_id: str, to: str, effective: datetime, before: str | None) -> None:
        self.record(ClientTier, f"vip/{client_id}", TierChanged(
            client_id, 1, before, to, effective, effective, "upgrade_at_once",
            "current_period", "x", (), (),
        ))  # fmt: skip


def a_world(world: World | None = None) -> World:
    """Ana trades and deposits from January; Ben deposits in February and trades at the
    February rollover (so in March); Cy trades in January only; Dee never trades but holds a
    tier. The clock follows each write."""
    w = world or World()
    w.record(TierProgrammeStream, "vip", TierProgrammeRecorded(VIP))
    for client in ("ana", "ben", "cy", "dee"):
        w.client(client)
    # January
    w.at(utc(2026, 1, 15, 12)).deposit("ana", "d1", 1000)
    w.trade("ana", utc(2026, 1, 15, 13), "3")
    w.earn("ana", "deal:1", 30, utc(2026, 1, 15, 13))
    w.earn("ana", "deposit:d1", 100, utc(2026, 1, 15, 13))
    w.tier("ana", "silver", utc(2026, 1, 15, 21), None)
    w.at(utc(2026, 1, 20, 12)).trade("cy", utc(2026, 1, 20, 12), "10.01")
    w.earn("cy", "deal:2", 50, utc(2026, 1, 20, 12))
    # February
    w.at(utc(2026, 2, 5, 12)).tier("dee", "silver", utc(2026, 2, 5, 12), None)
    w.at(utc(2026, 2, 10, 12)).deposit("ben", "d2", 500)
    w.earn("ben", "deposit:d2", 60, utc(2026, 2, 10, 12))
    w.at(utc(2026, 2, 10, 13)).redeem("ana", "r1", (("deal:1", D(30)), ("deposit:d1", D(10))))
    w.at(utc(2026, 2, 13, 12)).record(ChurnState, "cy", ChurnWarningRaised(
        "cy", utc(2026, 2, 13, 12), "2026-02", "baseline", ("frequency_drop",), (),
    ))  # fmt: skip
    w.at(utc(2026, 2, 19, 12)).record(
        PointsAccount, "cy", PointsExpired("cy", utc(2026, 2, 19, 12), (("deal:2", D(50)),))
    )
    # Friday 27 February, New York on winter time: the day rolls at 22:00 UTC
    w.at(utc(2026, 2, 27, 21, 59)).trade("ana", utc(2026, 2, 27, 21, 59), "5")  # February
    w.at(utc(2026, 2, 27, 22)).trade("ben", utc(2026, 2, 27, 22), "4")  # Monday 2 March
    w.tier("ana", "gold", utc(2026, 2, 27, 22), "silver")  # effective at February's end
    # March (New York on summer time from the 8th: the day rolls at 21:00 UTC)
    w.at(utc(2026, 3, 5, 12)).record(ChurnState, "ana", ChurnWarningRaised(
        "ana", utc(2026, 3, 5, 12), "2026-03", "baseline", ("deposits_stopped",), (),
    ))  # fmt: skip
    w.record(ClientTier, "vip/dee", TierOverrideSet(
        "dee", "gold", utc(2026, 3, 5, 12), utc(2026, 4, 10, 12), "ovr-1"))  # fmt: skip
    w.at(utc(2026, 3, 10, 12)).trade("ana", utc(2026, 3, 10, 12), "2")
    w.earn("ana", "deal:5", 20, utc(2026, 3, 10, 12))
    w.at(utc(2026, 3, 12, 12)).record(PointsAccount, "ana", PointsReversed(
        "ana", "deal:5", "deal_deleted", (("deal:5", D(20)),), D(0)))  # fmt: skip
    w.at(utc(2026, 3, 20, 12)).record(ChurnState, "ana", ChurnWarningCleared(
        "ana", utc(2026, 3, 20, 12), "2026-03"))  # fmt: skip
    w.record(PointsAccount, "ben", PointsAdjusted(
        "ben", "adj-1", D(15), utc(2026, 6, 30, 12), (), D(0), utc(2026, 3, 20, 12)))  # fmt: skip
    w.at(utc(2026, 3, 31, 21)).tier("ana", "silver", utc(2026, 3, 31, 21), "gold")  # March's end
    w.deposit("ben", "d3", 200)  # Tuesday 31 March 17:00 New York: Wednesday 1 April
    # April
    w.at(utc(2026, 4, 14, 12)).redeem("ana", "r2", (("deposit:d1", D(30)),))
    return w


@pytest.fixture(scope="module")
def world() -> World:
    return a_world()


def tiers(report: KpiReport) -> dict[str, int]:
    (vip,) = report.tiers
    assert (vip.programme, vip.version) == ("vip", 1)
    assert vip.clients == sum(n for _, n in vip.counts)
    return dict(vip.counts)


def test_periods_roll_at_17_new_york_summer_and_winter(world: World) -> None:
    kpis = world.kpis()
    feb, mar = kpis.month(2026, 2), kpis.month(2026, 3)
    assert (feb.label, feb.first_day, feb.last_day) == (
        "2026-02",
        date(2026, 2, 2),
        date(2026, 2, 27),
    )
    assert (feb.start, feb.end) == (utc(2026, 1, 30, 22), utc(2026, 2, 27, 22))
    assert (mar.start, mar.end) == (utc(2026, 2, 27, 22), utc(2026, 3, 31, 21))
    # the same month asked from any instant of its trading days, and not from the rollover on
    assert kpis.report(utc(2026, 2, 27, 21, 59)) == feb
    assert kpis.report(utc(2026, 2, 27, 22)) == mar
    assert kpis.report(utc(2026, 3, 31, 21)).label == "2026-04"
    q1 = kpis.quarter(2026, 1)
    assert (q1.label, q1.start, q1.end) == ("2026-Q1", utc(2025, 12, 31, 22), utc(2026, 3, 31, 21))
    assert kpis.report(utc(2026, 2, 1), Period.QUARTER) == q1


def test_churn_rate_and_warnings(world: World) -> None:
    kpis = world.kpis()
    jan, feb, mar, apr = (kpis.month(2026, m) for m in (1, 2, 3, 4))
    assert (jan.active_clients, jan.previous_active_clients, jan.churn_rate) == (2, 0, None)
    # ana traded at 16:59 New York on 27 Feb; ben's deposit made him active in February
    assert (feb.active_clients, feb.previous_active_clients, feb.churned_clients) == (2, 2, 1)
    assert feb.churn_rate == D("0.5000")  # cy
    # ben's deal at 17:00 New York on 27 Feb counts for March
    assert (mar.active_clients, mar.churned_clients, mar.churn_rate) == (2, 0, D("0.0000"))
    # ben's deposit at 17:00 New York on 31 March counts for April; ana is gone
    assert (apr.active_clients, apr.churned_clients, apr.churn_rate) == (1, 1, D("0.5000"))
    assert [(r.warnings_raised, r.warnings_cleared) for r in (jan, feb, mar, apr)] == [
        (0, 0), (1, 0), (1, 1), (0, 0),
    ]  # fmt: skip
    q1, q2 = kpis.quarter(2026, 1), kpis.quarter(2026, 2)
    assert (q1.active_clients, q1.churn_rate) == (3, None)
    assert (q2.previous_active_clients, q2.churned_clients, q2.churn_rate) == (3, 2, D("0.6667"))


def test_tier_distribution_at_each_period_end(world: World) -> None:
    kpis = world.kpis()
    # January: ana silver, cy base (activity); ben nothing yet; dee's tier starts in February
    assert tiers(kpis.month(2026, 1)) == {"bronze": 1, "silver": 1, "gold": 0}
    # February: ana gold from the rollover that ends February; dee silver with no activity
    assert tiers(kpis.month(2026, 2)) == {"bronze": 2, "silver": 1, "gold": 1}
    # March: ana silver from March's end, dee gold by an override, ben and cy base
    assert tiers(kpis.month(2026, 3)) == {"bronze": 2, "silver": 1, "gold": 1}
    # April: dee's override has expired
    assert tiers(kpis.month(2026, 4)) == {"bronze": 2, "silver": 2, "gold": 0}
    assert tiers(kpis.quarter(2026, 1)) == tiers(kpis.month(2026, 3))


def test_points_flows_and_rates(world: World) -> None:
    kpis = world.kpis()
    jan, feb, mar, apr = (kpis.month(2026, m) for m in (1, 2, 3, 4))
    zero = D(0)
    assert jan.points == PointsFlows(D(180), zero, zero, zero, zero)
    assert (jan.redemption_rate, jan.participants, jan.participation_rate) == (
        D("0.0000"), 2, D("1.0000"))  # fmt: skip
    assert feb.points == PointsFlows(D(60), D(40), D(50), zero, zero)
    assert feb.redemption_rate == D("0.6667")  # 40 / 60, to 4 places half-even
    assert (feb.participants, feb.participation_rate) == (
        2,
        D("1.0000"),
    )  # ana redeemed, ben earned
    assert mar.points == PointsFlows(D(20), zero, zero, D(20), D(15))
    assert (mar.participants, mar.participation_rate) == (1, D("0.5000"))  # ben: adjusted only
    # April: nothing earned; ana redeemed but is not active, ben is
    assert apr.points == PointsFlows(zero, D(30), zero, zero, zero)
    assert (apr.redemption_rate, apr.participants, apr.participation_rate) == (None, 0, D("0.0000"))
    q1 = kpis.quarter(2026, 1)
    assert q1.points == PointsFlows(D(260), D(40), D(50), D(20), D(15))
    assert q1.redemption_rate == D("0.1538")
    assert (q1.participants, q1.participation_rate) == (3, D("1.0000"))
    assert kpis.month(2026, 5).participation_rate is None  # no one active


def test_lifetime_value_and_cohorts(world: World) -> None:
    kpis = world.kpis()
    jan, feb, mar, apr = (kpis.month(2026, m) for m in (1, 2, 3, 4))
    # January: ana 3.00, cy 10.01: the average 6.505 rounds half-even to 6.50
    assert (jan.lifetime_value.clients, jan.lifetime_value.average) == (2, D("6.50"))
    assert jan.lifetime_value.median == D("6.50")
    assert jan.lifetime_value.cohorts == (
        CohortValue("2026-01", 2, D("13.01"), D("6.50"), D("6.50")),
    )
    # February: ana 8.00, ben 0.00 (his deal is March's)
    assert (feb.lifetime_value.average, feb.lifetime_value.median) == (D("4.00"), D("4.00"))
    assert feb.lifetime_value.cohorts == (
        CohortValue("2026-01", 2, D("18.01"), D("9.00"), D("9.00")),
        CohortValue("2026-02", 1, D("0.00"), D("0.00"), D("0.00")),
    )
    assert (mar.lifetime_value.average, mar.lifetime_value.median) == (D("7.00"), D("7.00"))
    assert [c.total for c in mar.lifetime_value.cohorts] == [D("20.01"), D("4.00")]
    assert (apr.lifetime_value.clients, apr.lifetime_value.average) == (1, D("4.00"))
    q1 = kpis.quarter(2026, 1).lifetime_value
    # ana 10.00, ben 4.00, cy 10.01: average 8.0033 -> 8.00, median 10.00
    assert (q1.clients, q1.average, q1.median) == (3, D("8.00"), D("10.00"))
    empty = kpis.month(2026, 5).lifetime_value
    assert (empty.clients, empty.average, empty.median) == (0, None, None)
    assert len(empty.cohorts) == 2  # cohorts still hold their clients


def test_repricing_counts_up_as_earned_and_down_as_reversed() -> None:
    w = World()
    w.client("ana")
    w.at(utc(2026, 1, 12, 12)).trade("ana", utc(2026, 1, 12, 12), "1")
    w.earn("ana", "deal:1", 30, utc(2026, 1, 12, 12))
    w.at(utc(2026, 1, 13, 12)).record(
        PointsAccount, "ana", PointsRepriced("ana", "deal:1", D(40), D(10), (), D(0), ())
    )
    w.at(utc(2026, 2, 3, 12)).record(
        PointsAccount, "ana",
        PointsRepriced("ana", "deal:1", D(25), D(0), (("deal:1", D(15)),), D(0), ()),
    )  # fmt: skip
    kpis = w.kpis()
    assert kpis.month(2026, 1).points.earned == D(40)
    assert kpis.month(2026, 2).points.reversed == D(15)
    assert kpis.month(2026, 2).tiers == ()  # no programme recorded


def test_only_the_programmes_named_are_reported() -> None:
    ib = TierProgramme("ib-ranks", 1, utc(2026, 1, 1), [Tier("partner"), Tier("master")])
    w = a_world()
    w.record(TierProgrammeStream, "ib-ranks", TierProgrammeRecorded(ib))
    w.record(ClientTier, "ib-ranks/ib-1", TierChanged(
        "ib-1", 1, None, "master", utc(2026, 1, 5), utc(2026, 1, 5), "upgrade_at_once",
        "current_period", "2026-01", (), (),
    ))  # fmt: skip
    every = w.kpis().month(2026, 1).tiers
    assert [(t.programme, t.clients) for t in every] == [("ib-ranks", 3), ("vip", 2)]
    kpis = w.kpis()
    named = LoyaltyKpis(kpis.projections, kpis.activity, since=SINCE, programmes=("vip",))
    assert named.month(2026, 1).tiers == every[1:]
    with pytest.raises(ArgumentTypeError):
        LoyaltyKpis(kpis.projections, kpis.activity, since=SINCE, programmes="vip")


def test_answers_are_the_same_in_a_fresh_process_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "kpis.db"
    clock = FixedClock(utc(2026, 1, 2, 12))
    live = a_world(World(SqliteEventStore(path, clock=clock), clock))
    first = live.kpis()
    answers = [first.month(2026, m) for m in (1, 2, 3, 4)] + [first.quarter(2026, 1)]
    again = World(SqliteEventStore(path, clock=clock), clock).kpis()
    assert [again.month(2026, m) for m in (1, 2, 3, 4)] + [again.quarter(2026, 1)] == answers
    # asking again, or rebuilding from position 0, counts nothing twice
    assert first.month(2026, 2) == answers[1]
    first.projections.rebuild(first)
    assert first.month(2026, 2) == answers[1]
    # a later event is seen by the instance already built
    live.at(utc(2026, 2, 20, 12)).redeem("ben", "r9", (("deposit:d2", D(10)),))
    assert first.month(2026, 2).points.redeemed == D(50)
    assert again.month(2026, 2).redemption_rate == D("0.8333")


def test_bad_input_is_refused(world: World) -> None:
    kpis = world.kpis()
    with pytest.raises(ValidationError):
        kpis.month(2026, 13)
    with pytest.raises(ValidationError):
        kpis.quarter(2026, 0)
    with pytest.raises(ValidationError, match="before the first month"):
        kpis.month(2025, 12)
    with pytest.raises(ArgumentTypeError):
        kpis.report(utc(2026, 2, 1), "month")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        LoyaltyKpis(kpis.projections, kpis.activity, since=utc(2026, 1, 1))
    with pytest.raises(ArgumentTypeError):
        LoyaltyKpis(object(), kpis.activity, since=SINCE)  # type: ignore[arg-type]


# -- laws ---------------------------------------------------------------------------------------

DAYS = [
    d for d in (date(2026, 1, 5) + timedelta(days=i) for i in range(80)) if CAL.is_trading_day(d)
]
CLIENTS = ("c1", "c2", "c3", "c4")
#: per client, the days it trades, deposits, earns and redeems on (indices into DAYS)
acts = st.lists(
    st.tuples(st.sampled_from(CLIENTS), st.sampled_from(("trade", "deposit", "earn", "redeem",
                                                          "tier")),
              st.integers(0, len(DAYS) - 1), st.integers(1, 90)),
    max_size=25,
)  # fmt: skip


@given(acts)
def test_rates_stay_in_bounds_tiers_sum_and_replay_counts_once(
    script: list[tuple[str, str, int, int]],
) -> None:
    w = World()
    w.record(TierProgrammeStream, "vip", TierProgrammeRecorded(VIP))
    for client in CLIENTS:
        w.client(client)
    held: dict[str, list[tuple[str, Decimal]]] = {c: [] for c in CLIENTS}
    redeemed = D(0)
    for n, (client, kind, index, amount) in enumerate(sorted(script, key=lambda s: s[2])):
        at = datetime.combine(DAYS[index], datetime.min.time(), UTC) + timedelta(
            hours=12, minutes=n
        )
        w.at(at)
        if kind == "trade":
            w.trade(client, at, str(amount))
        elif kind == "deposit":
            w.deposit(client, f"d{n}", amount)
        elif kind == "earn":
            w.earn(client, f"s{n}", amount, at)
            held[client].append((f"s{n}", D(amount)))
        elif kind == "redeem" and held[client]:
            source, points = held[client].pop(0)
            w.redeem(client, f"r{n}", ((source, points),))
            redeemed += points
        elif kind == "tier":
            w.tier(client, ("bronze", "silver", "gold", "platinum")[amount % 4], at, None)
    kpis = w.kpis()
    reports = [kpis.month(2026, m) for m in (1, 2, 3, 4)]
    for r in reports:
        for rate in (r.churn_rate, r.participation_rate):
            assert rate is None or D(0) <= rate <= D(1)
        assert r.churned_clients <= r.previous_active_clients
        assert r.participants <= r.active_clients
        (vip,) = r.tiers
        assert vip.clients == sum(n for _, n in vip.counts) <= len(CLIENTS)
        assert r.lifetime_value.clients == r.active_clients
        assert sum(c.clients for c in r.lifetime_value.cohorts) <= vip.clients
    # every redemption falls in exactly one month, once, however often the log is read
    assert sum((r.points.redeemed for r in reports), D(0)) == redeemed
    kpis.projections.rebuild(kpis)
    assert [kpis.month(2026, m) for m in (1, 2, 3, 4)] == reports
    assert [w.kpis().month(2026, m) for m in (1, 2, 3, 4)] == reports
