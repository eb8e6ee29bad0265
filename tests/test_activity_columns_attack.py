"""Attacks on the activity read model in columns (``Days``), its fast path caches, the activity
source's measure cache and the tier programme's cached measures. Each test states what a
broker (or an attacker feeding odd input) may rely on: windows equal a trivial recomputation
of the feed and the ledger, a second model over the same log answers digit for digit alike,
and only FxCrmError subclasses reach a caller."""

from __future__ import annotations

import enum
import pickle
import threading
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest

from fxcrm_core.accounts import TradingAccountOpened
from fxcrm_core.activity import ClientActivity, Measure
from fxcrm_core.activity.source import ClientActivitySource
from fxcrm_core.commissions import RebateEntriesRecorded
from fxcrm_core.commissions import register_events as register_commission_events
from fxcrm_core.commissions.engine import EntryKind, RebateEntry
from fxcrm_core.events import EventCodec, EventMetadata, EventRegistry, ProjectionRunner
from fxcrm_core.events.store import StreamAppend
from fxcrm_core.kernel import Currency, ExchangeRate, FixedClock, Money, RateTable, TradingCalendar
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.kernel.money import UnroundedMoney
from fxcrm_core.ledger import register_events as register_ledger_events
from fxcrm_core.ledger.model import (
    AccountOpened,
    Limit,
    TransferRecorded,
    TransferResolved,
    TransferStatus,
)
from fxcrm_core.loyalty.programme import Measure as LoyaltyMeasure
from fxcrm_core.loyalty.programme import (
    Threshold,
    Tier,
    TierProgramme,
    programme_from_data,
    programme_to_data,
)
from fxcrm_core.stores import MemoryEventStore
from fxcrm_core.trading import Deal, DealAction, DealChange, DealEntry, DealsReceived, FeedItem
from fxcrm_core.trading import register_events as register_trading_events

CAL = TradingCalendar()
META = EventMetadata("system:test", reason="test")
START = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday, noon UTC
EURUSD = Decimal("1.0843")
CENT = Decimal("0.01")
CONTRACT = {"EURUSD": Decimal(100_000), "USDJPY": Decimal(100_000), "XAUUSD": Decimal(100)}


def _codec() -> EventCodec:
    registry = EventRegistry()
    register_ledger_events(registry)
    register_trading_events(registry)
    register_commission_events(registry)
    registry.register_all((TradingAccountOpened,))
    return EventCodec(registry)


class World:
    """A log with one live trading account and USD/EUR wallets per client, fed by hand."""

    def __init__(self, clients: int = 1) -> None:
        self.clock = FixedClock(START - timedelta(days=400))
        self.store = MemoryEventStore(self.clock)
        self.codec = _codec()
        self.rates = RateTable()
        self.rates.add(
            ExchangeRate.of("EUR", "USD", str(EURUSD), "test", START - timedelta(days=900))
        )
        self.cursor = 0
        self.deals: dict[int, tuple[str, Deal]] = {}  # ticket -> (client, deal) as they stand
        for c in range(clients):
            self.append(
                f"tradingaccount-c{c}",
                TradingAccountOpened(f"mt5:{100 + c}", f"c{c}", "mt5", 100 + c, "real", "USD",
                                     100, True),
            )  # fmt: skip
            for code in ("USD", "EUR"):
                wallet = f"wallet:c{c}:{code}"
                self.append(
                    f"account-{wallet}",
                    AccountOpened(wallet, f"c{c}", Currency.of(code), "wallet",
                                  Limit.DEBITS_WITHIN_CREDITS),
                )  # fmt: skip

    def append(self, stream: str, *events: Any) -> None:
        self.store.append(StreamAppend(stream, None, self.codec.encode_many(stream, events, META)))

    def model(self) -> ClientActivity:
        return ClientActivity(
            ProjectionRunner(self.store, self.codec), CAL, rates=self.rates,
            clock=FixedClock(START + timedelta(days=400)),
        )  # fmt: skip

    def deal(
        self,
        ticket: int,
        at: datetime,
        lots: str = "1",
        *,
        client: int = 0,
        symbol: str = "EURUSD",
        price: str = "1.1",
        commission: Money | None = None,
        change: DealChange = DealChange.ADDED,
    ) -> Deal:
        volume = Decimal(lots)
        deal = Deal(
            "mt5", ticket, 100 + client, DealAction.BUY, DealEntry.IN, symbol, volume,
            Decimal(0), Decimal(price), ticket, ticket,
            commission if commission is not None else Money.of(-volume * 7, "USD"),
            Money.zero("USD"), Money.zero("USD"), Money.zero("USD"), at, timedelta(hours=2),
        )  # fmt: skip
        self.cursor += 1
        item = FeedItem(self.cursor, change, deal)
        self.append("dealfeed-mt5", DealsReceived("mt5", self.cursor, (item,)))
        if change is DealChange.DELETED:
            self.deals.pop(ticket, None)
        else:
            self.deals[ticket] = (f"c{client}", deal)
        return deal

    def transfer(self, tid: str, debit: str, credit: str, money: Money, at: datetime,
                 *, pending: bool = False, reverses: str | None = None) -> None:  # fmt: skip
        self.clock.set(at)
        self.append(
            f"transfer-{tid}",
            TransferRecorded(tid, debit, credit, money, pending, None, reverses, (), "t"),
        )

    def deposit(self, n: int, amount: str, code: str, at: datetime, client: int = 0) -> None:
        money = Money.of(Decimal(amount), code)
        self.transfer(f"deposit:{n}", f"psp:{code}", f"wallet:c{client}:{code}", money, at)

    def chargeback(self, n: int, amount: str, code: str, at: datetime, client: int = 0) -> None:
        money = Money.of(Decimal(amount), code)
        self.transfer(f"cb:{n}", f"wallet:c{client}:{code}", f"psp:{code}", money, at,
                      reverses=f"deposit:{n}")  # fmt: skip

    def withdraw(self, n: int, amount: str, code: str, at: datetime, client: int = 0) -> None:
        money = Money.of(Decimal(amount), code)
        tid = f"wd:{n}"
        self.transfer(tid, f"wallet:c{client}:{code}", f"psp:{code}", money, at, pending=True)
        self.append(f"transfer-{tid}", TransferResolved(TransferStatus.POSTED_FROM_PENDING, money))

    def rebate(self, n: int, amount: str, code: str, day: date, at: datetime,
               client: int = 0) -> None:  # fmt: skip
        self.clock.set(at)
        entry = RebateEntry(
            kind=EntryKind.ACCRUAL, server="mt5", ticket=n, ib_id="ib1", component="c",
            amount=UnroundedMoney(Decimal(amount), Currency.of(code)), level=1,
            client_id=f"c{client}", symbol="EURUSD", lots=Decimal(1), trading_day=day,
            explanation="test",
        )  # fmt: skip
        self.append("rebatebook-mt5", RebateEntriesRecorded("mt5", n, (entry,), ()))


def _day(n: int) -> datetime:
    """Noon UTC of the n-th calendar day after START (a trading day when a weekday)."""
    return START + timedelta(days=n)


def _trivial_lots(world: World, client: str, first: date, last: date) -> Decimal:
    return sum(
        (d.volume for c, d in world.deals.values()
         if c == client and first <= CAL.trading_day(d.time) <= last),
        Decimal(0),
    )  # fmt: skip


def _columns_aligned(activity: ClientActivity, client: str) -> None:
    activity.clients()  # caught up
    days = activity._days[client]
    n = len(days.days)
    assert days.days == sorted(set(days.days))
    for column in (days.trades, days.active, days.lots, days.last, days.flows):
        assert len(column) == n
    for column in days.usd.values():
        assert len(column) == n


# -- columns: insertion in the middle, a new money kind on an older day -------------------------


def test_money_kind_first_seen_on_an_older_day_lands_on_that_day() -> None:
    world = World()
    for k in (0, 7, 14, 21, 28):  # five Mondays of deals, no money yet
        world.deal(k + 1, _day(k), "1")
    # a deal of a middle day arriving late (insertion in the middle)
    world.deal(100, _day(9), "2")
    # money first seen (new usd columns) on an older day than all the deals, then a middle one
    world.deposit(1, "1000", "EUR", _day(-3))
    world.deposit(2, "500", "USD", _day(16))
    world.rebate(1, "3.5", "USD", CAL.trading_day(_day(2)), _day(2))
    activity = world.model()
    _columns_aligned(activity, "c0")
    for n, expected in ((-3, Decimal("1084.30")), (16, Decimal("500.00")), (0, Decimal("0.00"))):
        at = _day(n)
        assert activity.window("c0", Measure.DEPOSITS, days=1, at=at).value == expected
        assert activity._value("c0", Measure.DEPOSITS, 1, at) == expected
    assert activity.window("c0", Measure.REBATES, days=1, at=_day(2)).value == Decimal("3.50")
    assert activity.window("c0", Measure.REBATES, days=1, at=_day(1)).value == Decimal("0.00")
    assert activity.window("c0", Measure.LOTS, days=1, at=_day(9)).value == Decimal(2)
    lifetime = activity.lifetime("c0", Measure.NET_DEPOSITS)
    assert lifetime.value == Decimal("1584.30")
    assert {m.currency.code: m.amount for m in lifetime.by_currency} == {
        "EUR": Decimal("1000"), "USD": Decimal("500")}  # fmt: skip


def test_far_past_day_costs_one_row_not_a_calendar_of_rows() -> None:
    world = World()
    world.deal(1, _day(0))
    world.deal(2, datetime(1990, 1, 3, 12, tzinfo=UTC))
    activity = world.model()
    _columns_aligned(activity, "c0")
    assert len(activity._days["c0"].days) == 2
    assert activity.lifetime("c0", Measure.TRADES).value == Decimal(2)
    assert activity.window("c0", Measure.TRADES, days=1, at=_day(0)).value == Decimal(1)


# -- updates, deletes, another symbol -----------------------------------------------------------


def test_update_moving_a_deal_to_another_day_and_symbol_leaves_nothing_behind() -> None:
    world = World()
    world.deal(1, _day(0), "1", symbol="EURUSD", price="1.1")
    world.deal(2, _day(1), "1", symbol="EURUSD", price="1.1")
    # ticket 1 moved to day 3, to a JPY-quoted symbol (no JPY rate: unpriced) and EUR commission
    world.deal(1, _day(3), "2", symbol="USDJPY", price="150",
               commission=Money.of(Decimal("-10"), "EUR"), change=DealChange.UPDATED)  # fmt: skip
    activity = world.model()
    _columns_aligned(activity, "c0")
    first = activity.window("c0", Measure.VOLUME_USD, days=1, at=_day(0))
    assert first.value == Decimal("0.00")
    assert first.by_currency == ()
    assert first.unpriced == ()
    assert activity.window("c0", Measure.TRADES, days=1, at=_day(0)).value == 0
    assert activity.window("c0", Measure.ACTIVE_DAYS, days=1, at=_day(0)).value == 0
    moved = activity.window("c0", Measure.VOLUME_USD, days=1, at=_day(3))
    assert moved.value == Decimal("0.00")  # unpriced notional kept out of USD
    assert [(m.currency.code, m.amount) for m in moved.unpriced] == [("JPY", Decimal(30_000_000))]
    revenue = activity.window("c0", Measure.REVENUE, days=1, at=_day(3))
    assert revenue.value == (Decimal(10) * EURUSD).quantize(CENT)
    total = activity.lifetime("c0", Measure.VOLUME_USD)
    assert total.value == Decimal("110000.00")
    assert [(m.currency.code, m.amount) for m in total.unpriced] == [("JPY", Decimal(30_000_000))]


def test_last_trade_after_deletes_falls_back_to_the_latest_standing_day() -> None:
    world = World()
    world.deal(1, _day(0) + timedelta(hours=1))
    world.deal(2, _day(1) + timedelta(hours=2))
    world.deal(3, _day(2) + timedelta(hours=3))
    world.deal(3, _day(2) + timedelta(hours=3), change=DealChange.DELETED)
    world.deal(2, _day(1) + timedelta(hours=2), change=DealChange.DELETED)
    activity = world.model()
    assert activity.last_trade("c0") == _day(0) + timedelta(hours=1)
    world.deal(1, _day(0) + timedelta(hours=1), change=DealChange.DELETED)
    assert activity.last_trade("c0") is None
    assert activity.lifetime("c0", Measure.TRADES).value == 0
    assert activity.lifetime("c0", Measure.ACTIVE_DAYS).value == 0


# -- money: deposits, withdrawals, reversals, revenue, rebates ----------------------------------


def test_money_windows_equal_a_trivial_recomputation() -> None:
    world = World()
    flows: list[tuple[str, date, Decimal]] = []  # (kind, trading day, USD)

    def usd(amount: str, code: str) -> Decimal:
        return Decimal(amount) * (EURUSD if code == "EUR" else 1)

    plan = [
        ("dep", 1, "1000.00", "USD", 5), ("dep", 2, "333.33", "EUR", 3),
        ("wd", 3, "120.55", "USD", 7), ("dep", 4, "0.01", "EUR", 7),
        ("cb", 2, "333.33", "EUR", 9), ("wd", 5, "99.99", "EUR", 1),
        ("rev", 6, "-12.34", "EUR", 4), ("reb", 7, "5.555", "EUR", 4),
        ("reb", 8, "-1.001", "USD", 2), ("dep", 9, "0.05", "EUR", 2),
    ]  # fmt: skip
    # the ledger records in time order; the feed's deals and rebates may come in any order
    for kind, n, amount, code, day in sorted(plan, key=lambda p: p[4]):
        at = _day(day)
        if kind == "dep":
            world.deposit(n, amount, code, at)
            flows.append(("dep", CAL.trading_day(at), usd(amount, code)))
        elif kind == "cb":
            world.chargeback(n, amount, code, at)
            flows.append(("dep", CAL.trading_day(at), -usd(amount, code)))
        elif kind == "wd":
            world.withdraw(n, amount, code, at)
            flows.append(("wd", CAL.trading_day(at), usd(amount, code)))
        elif kind == "reb":
            world.rebate(n, amount, code, CAL.trading_day(at), at)
            flows.append(("reb", CAL.trading_day(at), usd(amount, code)))
    for kind, n, amount, code, day in plan:
        if kind == "rev":
            world.deal(n, _day(day), "1", commission=Money.of(Decimal(amount), code))
            flows.append(("rev", CAL.trading_day(_day(day)), -usd(amount, code)))
            flows.append(("vol", CAL.trading_day(_day(day)), Decimal("110000.0")))
    activity = world.model()
    _columns_aligned(activity, "c0")
    kinds = {
        Measure.DEPOSITS: (("dep",), ()), Measure.WITHDRAWALS: (("wd",), ()),
        Measure.NET_DEPOSITS: (("dep",), ("wd",)), Measure.REVENUE: (("rev",), ()),
        Measure.REBATES: (("reb",), ()), Measure.CONTRIBUTION: (("rev",), ("reb",)),
        Measure.VOLUME_USD: (("vol",), ()),
    }  # fmt: skip
    for measure, (plus, minus) in kinds.items():
        for days in (1, 2, 3, 5, 10):
            for end in range(12):
                at = _day(end)
                last = CAL.trading_day(at)
                first = activity._first_day(last, days)
                total = sum(
                    (v if k in plus else -v for k, d, v in flows
                     if first <= d <= last and (k in plus or k in minus)),
                    Decimal(0),
                )  # fmt: skip
                expected = total.quantize(CENT)
                assert activity.window("c0", measure, days=days, at=at).value == expected, (
                    measure, days, end)  # fmt: skip
                assert activity._value("c0", measure, days, at) == expected


# -- the trading day: rollover, DST, the (at, days) cache ---------------------------------------


def test_days_1_at_the_rollover_instant_across_dst() -> None:
    ny = zoneinfo.ZoneInfo("America/New_York")
    world = World()
    # around the March 2026 US DST change (Sunday 8 March): deals a microsecond either side
    # of 17:00 New York on the Friday before and the Monday after
    friday = datetime(2026, 3, 6, 17, tzinfo=ny)
    monday = datetime(2026, 3, 9, 17, tzinfo=ny)
    tick = timedelta(microseconds=1)
    world.deal(1, friday - tick, "1")
    world.deal(2, friday, "2")
    world.deal(3, monday - tick, "4")
    world.deal(4, monday, "8")
    activity = world.model()
    for at in (friday - tick, friday, monday - tick, monday, monday.astimezone(UTC)):
        last = CAL.trading_day(at)
        expected = _trivial_lots(world, "c0", last, last)
        assert activity.window("c0", Measure.LOTS, days=1, at=at).value == expected, at
        assert activity._value("c0", Measure.LOTS, 1, at) == expected, at


def test_same_instant_in_other_zones_answers_alike() -> None:
    world = World()
    world.deal(1, _day(0))
    world.deal(2, _day(1), "3")
    activity = world.model()
    at = _day(1)
    for zone in ("UTC", "Asia/Tokyo", "America/New_York", "Pacific/Chatham"):
        local = at.astimezone(zoneinfo.ZoneInfo(zone))
        assert activity._value("c0", Measure.LOTS, 1, local) == Decimal(3)
        assert activity._value("c0", Measure.LOTS, 2, local) == Decimal(4)


def test_naive_at_is_refused_with_an_fxcrm_error() -> None:
    world = World()
    world.deal(1, _day(0))
    activity = world.model()
    with pytest.raises(FxCrmError):
        activity.window("c0", Measure.LOTS, days=1, at=_day(0).replace(tzinfo=None))
    assert activity._value("c0", Measure.LOTS, 1, _day(0)) == Decimal(1)
    with pytest.raises(FxCrmError):
        activity._value("c0", Measure.LOTS, 1, _day(0).replace(tzinfo=None))


def test_fold_instants_do_not_share_a_cached_window() -> None:
    """Cairo's clocks fall back from 24:00 to 23:00 on 29 October 2026: the wall time 23:00
    happens twice, at 20:00 UTC (16:00 New York, Thursday's trading day) and at 21:00 UTC
    (17:00 New York, Friday's). The two instants are equal and hash alike as dict keys (the
    same tzinfo compares wall times), so a window cached for one is served for the other."""
    cairo = zoneinfo.ZoneInfo("Africa/Cairo")
    thursday = datetime(2026, 10, 29, 23, tzinfo=cairo, fold=0)
    friday = datetime(2026, 10, 29, 23, tzinfo=cairo, fold=1)
    assert CAL.trading_day(thursday) != CAL.trading_day(friday)
    world = World()
    world.deal(1, thursday.astimezone(UTC) - timedelta(hours=1), "1")  # Thursday's day
    world.deal(2, friday.astimezone(UTC) + timedelta(hours=1), "5")  # Friday's day
    activity = world.model()
    assert activity.window("c0", Measure.LOTS, days=1, at=thursday).value == Decimal(1)
    assert activity.window("c0", Measure.LOTS, days=1, at=friday).value == Decimal(5)
    assert activity._value("c0", Measure.LOTS, 1, thursday) == Decimal(1)
    assert activity._value("c0", Measure.LOTS, 1, friday) == Decimal(5)


# -- a second model, threads ---------------------------------------------------------------------


def _busy_world() -> World:
    world = World(clients=2)
    t = 0
    for k in range(30):
        for c in range(2):
            t += 1
            world.deal(t, _day((k * 7) % 40) + timedelta(minutes=k), str(Decimal(k + 1) / 100),
                       client=c, symbol=("EURUSD", "XAUUSD", "USDJPY")[k % 3],
                       price=("1.08437", "2011.55", "151.3")[k % 3],
                       commission=Money.of((Decimal(-k - 1) / 3).quantize(CENT), "EUR"),
                   )  # fmt: skip
    for k in range(0, 60, 4):
        world.deal(k + 1, _day(k % 37), "0.07", client=0,
                   change=DealChange.UPDATED)  # fmt: skip
    for k in range(15):
        world.deposit(k, str((Decimal(k * 37 + 1) / 7).quantize(CENT)), ("EUR", "USD")[k % 2],
                      _day(k * 2),
                      client=k % 2)  # fmt: skip
    return world


ALL = list(Measure)


def test_a_second_model_over_the_same_log_answers_digit_for_digit() -> None:
    world = _busy_world()
    one, two = world.model(), world.model()
    for c in ("c0", "c1"):
        for measure in ALL:
            assert str(one.lifetime(c, measure)) == str(two.lifetime(c, measure))
            for days in (1, 5, 20):
                for end in range(0, 45, 3):
                    at = _day(end)
                    a = one.window(c, measure, days=days, at=at)
                    b = two.window(c, measure, days=days, at=at)
                    assert str(a.value) == str(b.value)
                    assert a.by_currency == b.by_currency
                    assert a.unpriced == b.unpriced
                    assert str(one._value(c, measure, days, at)) == str(a.value)
                    assert str(two._value(c, measure, days, at)) == str(a.value)


def test_two_threads_asking_get_the_single_thread_answers() -> None:
    world = _busy_world()
    reference = world.model()
    questions = [
        (c, m, days, _day(end))
        for c in ("c0", "c1") for m in ALL for days in (1, 3, 11) for end in range(0, 42, 5)
    ]  # fmt: skip
    expected = [str(reference.window(c, m, days=d, at=at).value) for c, m, d, at in questions]
    shared = world.model()
    source = ClientActivitySource(shared)
    errors: list[BaseException] = []
    results: list[list[str]] = [[], []]

    def ask(slot: int) -> None:
        try:
            for _ in range(3):
                got = [str(shared._value(c, m, d, at)) for c, m, d, at in questions]
                results[slot] = got
                for c, m, _d, at in questions[:40]:
                    shared._windows.clear()  # the bounded caches being emptied meanwhile
                    if m.value in ("lots", "trades"):
                        source.measure(c, LoyaltyMeasure(m.value), at - timedelta(days=1), at)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results[0] == expected
    assert results[1] == expected


# -- the activity source's measure cache ---------------------------------------------------------


def _source() -> tuple[ClientActivitySource, datetime, datetime]:
    world = World()
    world.deal(1, _day(0), "2")
    return ClientActivitySource(world.model()), _day(-1), _day(1)


class StrMeasure(enum.StrEnum):
    LOTS = "lots"
    EQUITY = "equity"


def test_source_accepts_a_str_enum_and_refuses_its_equity() -> None:
    source, start, end = _source()
    assert source.measure("c0", StrMeasure.LOTS, start, end) == Decimal(2)
    with pytest.raises(FxCrmError):
        source.measure("c0", StrMeasure.EQUITY, start, end)
    with pytest.raises(FxCrmError):
        source.measure("c0", "lots", start, end)  # type: ignore[arg-type]
    with pytest.raises(FxCrmError):
        source.measure("c0", ["lots"], start, end)  # type: ignore[arg-type]


class EqMeasure(enum.Enum):
    """A host's enum that defines its own equality (so Python makes it unhashable)."""

    LOTS = "lots"
    EQUITY = "equity"

    def __eq__(self, other: object) -> bool:
        return self is other


def test_source_with_an_unhashable_host_enum_raises_only_fxcrm_errors() -> None:
    source, start, end = _source()
    try:
        value = source.measure("c0", EqMeasure.LOTS, start, end)
    except FxCrmError:
        pass
    else:
        assert value == Decimal(2)
    with pytest.raises(FxCrmError):
        source.measure("c0", EqMeasure.EQUITY, start, end)


class _Labelled(str, enum.Enum):  # noqa: UP042 (a str mixin with its own text)
    """A str-mixin enum whose text is a label and whose value is the measure's name."""

    def __new__(cls, label: str, value: str) -> _Labelled:
        member = str.__new__(cls, label)
        member._value_ = value
        return member


class HostA(_Labelled):
    FIRST = ("first", "lots")


class HostB(_Labelled):
    FIRST = ("first", "equity")


def test_source_cache_does_not_map_an_equal_member_of_another_enum() -> None:
    """HostA.FIRST == HostB.FIRST (str equality) and both hash by name: a cache keyed by the
    member must not answer HostB.FIRST (value 'equity') with HostA.FIRST's LOTS."""
    source, start, end = _source()
    assert source.measure("c0", HostA.FIRST, start, end) == Decimal(2)
    with pytest.raises(FxCrmError):
        source.measure("c0", HostB.FIRST, start, end)


# -- the tier programme's cached measures --------------------------------------------------------


def _programme() -> TierProgramme:
    return TierProgramme(
        "vip", 1, datetime(2026, 1, 1, tzinfo=UTC),
        (Tier("base"), Tier("gold", all_of=(Threshold(LoyaltyMeasure.LOTS, Decimal(5)),),
                            any_of=(Threshold(LoyaltyMeasure.TRADES, Decimal(3)),))),
    )  # fmt: skip


def test_programme_measures_survive_evolve_equality_and_round_trips() -> None:
    programme = _programme()
    assert programme.measures == (LoyaltyMeasure.LOTS, LoyaltyMeasure.TRADES) or set(
        programme.measures) == {LoyaltyMeasure.LOTS, LoyaltyMeasure.TRADES}  # fmt: skip
    before = programme.measures
    changed = attrs.evolve(
        programme,
        tiers=(Tier("base"), Tier("gold", all_of=(Threshold(LoyaltyMeasure.VOLUME_USD,
                                                            Decimal(1)),))),
    )  # fmt: skip
    assert changed.measures == (LoyaltyMeasure.VOLUME_USD,)
    assert programme.measures == before
    fresh = _programme()
    assert fresh == programme
    assert hash(fresh) == hash(programme)
    again = programme_from_data(programme_to_data(programme))
    assert again == programme
    assert again.measures == before
    assert programme_to_data(again) == programme_to_data(programme)
    assert pickle.loads(pickle.dumps(programme)).measures == before
    assert changed.tiers[1].measures == frozenset({LoyaltyMeasure.VOLUME_USD})


# -- money: one USD column per kind and day, whatever the currencies ----------------------------


def _charged_back_world() -> ClientActivity:
    world = World()
    world.append(
        "account-wallet:c0:JPY",
        AccountOpened("wallet:c0:JPY", "c0", Currency.of("JPY"), "wallet",
                      Limit.DEBITS_WITHIN_CREDITS),
    )  # fmt: skip
    world.rates.add(ExchangeRate.of("USD", "JPY", "151.37", "test", START - timedelta(days=900)))
    minute = timedelta(minutes=1)
    for day, base in ((0, 0), (1, 10)):
        at = _day(day)
        world.deposit(base + 1, "10000.00", "USD", at)
        world.deposit(base + 2, "100001", "JPY", at + minute)
        world.chargeback(base + 1, "10000.00", "USD", at + 2 * minute)
        world.chargeback(base + 2, "100001", "JPY", at + 3 * minute)
    world.deposit(30, "50.00", "EUR", _day(1) + 4 * minute)
    return world.model()


def test_a_charged_back_deposit_leaves_no_residue_in_its_days_usd_sum() -> None:
    """A day's USD column of deposits mixes currencies: 10,000.00 USD (exact) plus 100,001 JPY
    priced through USD/JPY 151.37 (a 28-digit quotient). ``(a + b) - a - b`` in the default
    28-digit context is -4.1E-24, not 0: after both deposits are charged back the day's
    deposits read ``-0.00`` (the exact sum, and a flat trivial sum, is 0.00)."""
    activity = _charged_back_world()
    emptied = activity.window("c0", Measure.DEPOSITS, days=1, at=_day(0))
    assert emptied.by_currency == ()
    assert str(emptied.value) == "0.00"
    assert str(activity._value("c0", Measure.NET_DEPOSITS, 1, _day(0))) == "0.00"


def test_a_charged_back_deposit_does_not_move_a_half_cent_window() -> None:
    """As above: the -4.1E-24 left by the charged-back USD and JPY deposits tips a later
    50.00 EUR deposit of the same day (54.215 USD) from 54.22 (half-even) to 54.21."""
    activity = _charged_back_world()
    exact = (Decimal("50.00") * EURUSD).quantize(CENT)  # 54.215 -> 54.22 (half-even)
    assert exact == Decimal("54.22")
    assert activity.window("c0", Measure.DEPOSITS, days=1, at=_day(1)).value == exact
    assert activity.lifetime("c0", Measure.DEPOSITS).value == exact


def test_deleted_deals_leave_no_residue_in_a_days_volume() -> None:
    """The same through the deal feed: a gold deal (201,155.00 USD) and a 0.01-lot USDJPY deal
    (151,300 JPY, priced through USD/JPY 151.37) on one day, both deleted: the day's VOLUME_USD
    column holds ``(x + u) - x - u`` = -1.98E-23, and the day's volume reads ``-0.00``."""
    world = World()
    world.rates.add(ExchangeRate.of("USD", "JPY", "151.37", "test", START - timedelta(days=900)))
    world.deal(1, _day(0), "1", symbol="XAUUSD", price="2011.55")
    world.deal(2, _day(0) + timedelta(minutes=1), "0.01", symbol="USDJPY", price="151.3")
    world.deal(1, _day(0), "1", symbol="XAUUSD", price="2011.55", change=DealChange.DELETED)
    world.deal(2, _day(0) + timedelta(minutes=1), "0.01", symbol="USDJPY", price="151.3",
               change=DealChange.DELETED)  # fmt: skip
    activity = world.model()
    figure = activity.window("c0", Measure.VOLUME_USD, days=1, at=_day(0))
    assert figure.by_currency == ()
    assert figure.unpriced == ()
    assert activity.lifetime("c0", Measure.TRADES).value == 0
    assert str(figure.value) == "0.00"
    assert str(activity._value("c0", Measure.VOLUME_USD, 1, _day(0))) == "0.00"


def test_source_measure_cache_stays_bounded_with_many_host_enums() -> None:
    """Every enum member hashes by its name alone: a host that builds its measure enum per
    request (the functional API) gives the source a new LOTS key each time, all in one hash
    bucket. The other caches of the read model and the source are bounded (4096 entries)."""
    source, start, end = _source()
    for n in range(5000):
        host = enum.Enum(f"Host{n}", {"LOTS": "lots"})  # type: ignore[misc]
        assert source.measure("c0", getattr(host, "LOTS"), start, end) == Decimal(2)  # noqa: B009
    assert len(source._measures) <= 4096


def test_programme_event_codec_round_trip_ignores_the_cached_measures() -> None:
    from fxcrm_core.loyalty import register_events as register_loyalty_events
    from fxcrm_core.loyalty.events import TierProgrammeRecorded

    registry = EventRegistry()
    register_loyalty_events(registry)
    codec = EventCodec(registry)
    used = _programme()
    assert used.measures  # the cache filled before encoding
    encoded = codec.encode_many("tierprogramme-vip", (TierProgrammeRecorded(used),), META)
    plain = codec.encode_many("tierprogramme-vip", (TierProgrammeRecorded(_programme()),), META)
    assert [e.data for e in encoded] == [e.data for e in plain]
    store = MemoryEventStore(FixedClock(START))
    store.append(StreamAppend("tierprogramme-vip", None, encoded))
    runner = ProjectionRunner(store, codec)
    from fxcrm_core.events.store import read_types

    rows, _, _ = read_types(runner.store, 0, frozenset({"TierProgrammeRecorded"}), 10)
    decoded = codec.decode(rows[0]).event
    assert isinstance(decoded, TierProgrammeRecorded)
    assert decoded.programme == used
    assert decoded.programme.measures == used.measures


class ListMeasure(enum.Enum):
    """A host's enum whose member's value is unhashable."""

    LOTS = ["lots"]  # noqa: RUF012


def test_source_with_an_unhashable_member_value_raises_only_fxcrm_errors() -> None:
    source, start, end = _source()
    with pytest.raises(FxCrmError):
        source.measure("c0", ListMeasure.LOTS, start, end)
