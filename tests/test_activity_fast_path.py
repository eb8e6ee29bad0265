"""The activity read model's private fast path for scans (one catch-up for a batch of clients, a
window's value without its Figure) answers exactly what the public answers do: the same values
(to the digit), the same RFM scores, the same churn warnings recorded."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.accounts import TradingAccountOpened
from fxcrm_core.activity import ClientActivity, Figure, Measure
from fxcrm_core.events import (
    EventCodec,
    EventMetadata,
    EventRegistry,
    ProjectionRunner,
    Repository,
)
from fxcrm_core.events.store import StreamAppend
from fxcrm_core.kernel import Currency, ExchangeRate, FixedClock, Money, RateTable, TradingCalendar
from fxcrm_core.ledger import register_events as register_ledger_events
from fxcrm_core.ledger.model import (
    AccountOpened,
    Limit,
    TransferRecorded,
    TransferResolved,
    TransferStatus,
)
from fxcrm_core.loyalty import ChurnWatch, Segmentation
from fxcrm_core.loyalty import register_events as register_loyalty_events
from fxcrm_core.stores import MemoryEventStore
from fxcrm_core.trading import Deal, DealAction, DealChange, DealEntry, DealsReceived, FeedItem
from fxcrm_core.trading import register_events as register_trading_events

CAL = TradingCalendar()
START = datetime(2026, 1, 5, 12, tzinfo=UTC)
END = START + timedelta(days=120)
META = EventMetadata("system:test", reason="test")
SYMBOLS = ("EURUSD", "USDJPY", "EURGBP", "XAUUSD", "US30")
CURRENCIES = ("USD", "EUR", "JPY")


def _codec() -> EventCodec:
    registry = EventRegistry()
    for register in (register_ledger_events, register_trading_events, register_loyalty_events):
        register(registry)
    registry.register_all((TradingAccountOpened,))
    return EventCodec(registry)


def _rates() -> RateTable:
    """EUR/USD and GBP/USD direct; JPY only as USD/JPY (priced by division)."""
    table = RateTable()
    for base, quote, rate in (
        ("EUR", "USD", "1.0843"),
        ("GBP", "USD", "1.2671"),
        ("USD", "JPY", "151.37"),
    ):
        table.add(ExchangeRate.of(base, quote, rate, "test", START - timedelta(days=30)))
    return table


# One step of a client's history: (client, day offset, seconds into the day, kind, size, extra)
step = st.tuples(
    st.integers(0, 3),
    st.integers(0, 119),
    st.integers(0, 86_399),
    st.sampled_from(("trade", "trade", "trade", "deposit", "withdrawal", "fix", "delete")),
    st.sampled_from(("0.01", "0.1", "0.33", "1", "2.5")),
    st.integers(0, 4),
)


def _log(steps: list[tuple[int, int, int, str, str, int]]) -> tuple[MemoryEventStore, EventCodec]:
    clock = FixedClock(START - timedelta(days=1))
    store = MemoryEventStore(clock)
    codec = _codec()

    def append(stream: str, *events: Any) -> None:
        store.append(StreamAppend(stream, None, codec.encode_many(stream, events, META)))

    for c in range(4):
        append(
            f"tradingaccount-c{c}",
            TradingAccountOpened(
                f"mt5:{100 + c}", f"c{c}", "mt5", 100 + c, "real", "USD", 100, True
            ),
        )
        for code in CURRENCIES:
            wallet = f"wallet:c{c}:{code}"
            append(
                f"account-{wallet}",
                AccountOpened(
                    wallet, f"c{c}", Currency.of(code), "wallet", Limit.DEBITS_WITHIN_CREDITS
                ),
            )
    deals: list[Deal] = []
    ordered = sorted(steps, key=lambda s: (s[1], s[2]))
    for n, (c, day, second, kind, size, extra) in enumerate(ordered):
        at = START + timedelta(days=day, seconds=second)
        clock.set(at)
        code = CURRENCIES[extra % 3]
        amount = Money.of(Decimal(size) * 1000 + extra, code)
        if kind == "deposit":
            tid = f"deposit:{n}"
            append(
                f"transfer-{tid}",
                TransferRecorded(
                    tid, f"psp:{code}", f"wallet:c{c}:{code}", amount, False, None, None, (), "t"
                ),
            )
        elif kind == "withdrawal":
            tid = f"wd:{n}"
            append(
                f"transfer-{tid}",
                TransferRecorded(
                    tid, f"wallet:c{c}:{code}", f"payout:{code}", amount, True, None, None, (), "t"
                ),
                TransferResolved(TransferStatus.POSTED_FROM_PENDING, amount),
            )
        else:
            if kind in ("fix", "delete") and deals:
                old = deals[extra % len(deals)]
                change = DealChange.DELETED if kind == "delete" else DealChange.UPDATED
                deal = Deal(
                    old.server,
                    old.ticket,
                    old.login,
                    old.action,
                    old.entry,
                    old.symbol,
                    Decimal(size),
                    old.volume_closed,
                    old.price,
                    old.position_id,
                    old.order,
                    old.commission,
                    old.fee,
                    old.swap,
                    old.profit,
                    old.time,
                    old.server_offset,
                )
            else:
                change = DealChange.ADDED
                lots = Decimal(size)
                deal = Deal(
                    "mt5",
                    n + 1,
                    100 + c,
                    DealAction(n % 2),
                    DealEntry.IN,
                    SYMBOLS[extra],
                    lots,
                    Decimal(0),
                    Decimal("1.08437"),
                    n + 1,
                    n + 1,
                    Money.of(-lots * 7, "USD"),
                    Money.zero("USD"),
                    Money.zero("USD"),
                    Money.zero("USD"),
                    at,
                    timedelta(hours=2),
                )
                deals.append(deal)
            append("dealfeed-mt5", DealsReceived("mt5", n + 1, (FeedItem(n + 1, change, deal),)))
    return store, codec


def _activity(store: MemoryEventStore, codec: EventCodec) -> ClientActivity:
    return ClientActivity(
        ProjectionRunner(store, codec),
        CAL,
        rates=_rates(),
        clock=FixedClock(END),
        horizon=timedelta(days=3),
    )


class Plain:
    """The read model's public answers only: scans through it take the plain path."""

    def __init__(self, activity: ClientActivity) -> None:
        self.activity = activity

    def clients(self) -> list[str]:
        return self.activity.clients()

    def window(self, client_id: str, measure: Measure, *, days: int, at: datetime) -> Figure:
        return self.activity.window(client_id, measure, days=days, at=at)

    def last_trade(self, client_id: str) -> datetime | None:
        return self.activity.last_trade(client_id)

    def last_deposit(self, client_id: str) -> datetime | None:
        return self.activity.last_deposit(client_id)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=60),
    asks=st.lists(
        st.tuples(
            st.integers(0, 4),
            st.sampled_from(list(Measure)),
            st.integers(1, 130),
            st.integers(-5, 130),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_a_windows_fast_value_is_the_figures_value_to_the_digit(
    steps: list[tuple[int, int, int, str, str, int]], asks: list[tuple[int, Measure, int, int]]
) -> None:
    activity = _activity(*_log(steps))
    with activity._batch():
        for c, measure, days, day in asks:
            at = START + timedelta(days=day, hours=3)
            fast = activity._value(f"c{c}", measure, days, at)
            plain = activity.window(f"c{c}", measure, days=days, at=at).value
            assert (str(fast), fast) == (str(plain), plain)


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=80), day=st.integers(20, 125))
def test_scans_through_the_fast_path_score_and_warn_as_the_plain_path(
    steps: list[tuple[int, int, int, str, str, int]], day: int
) -> None:
    at = START + timedelta(days=day, hours=5)
    runs = []
    for wrap in (False, True):
        store, codec = _log(steps)
        activity = _activity(store, codec)
        figures: Any = Plain(activity) if wrap else activity
        scores = Segmentation(figures, calendar=CAL).score_all(at)
        repository = Repository(store, codec)
        watch = ChurnWatch(
            repository, figures, calendar=CAL, batch=2, projections=ProjectionRunner(store, codec)
        )
        warned = watch.evaluate_all(at)
        events = [
            (type(r.event).__name__, r.event) for c in activity.clients() for r in watch.history(c)
        ]
        runs.append((scores, warned, events))
    assert runs[0] == runs[1]


def test_inside_a_batch_answers_come_from_one_catch_up() -> None:
    store, codec = _log([(0, 1, 100, "trade", "1", 0)])
    activity = _activity(store, codec)
    at = START + timedelta(days=2)
    with activity._batch():
        before = activity.window("c0", Measure.TRADES, days=5, at=at).value
        store.append(
            StreamAppend(
                "dealfeed-mt5",
                None,
                codec.encode_many(
                    "dealfeed-mt5",
                    [
                        DealsReceived(
                            "mt5",
                            99,
                            (
                                FeedItem(
                                    99,
                                    DealChange.ADDED,
                                    Deal(
                                        "mt5",
                                        99,
                                        100,
                                        DealAction.BUY,
                                        DealEntry.IN,
                                        "EURUSD",
                                        Decimal(1),
                                        Decimal(0),
                                        Decimal("1.1"),
                                        99,
                                        99,
                                        Money.zero("USD"),
                                        Money.zero("USD"),
                                        Money.zero("USD"),
                                        Money.zero("USD"),
                                        START + timedelta(days=1, hours=1),
                                        timedelta(hours=2),
                                    ),
                                ),
                            ),
                        )
                    ],
                    META,
                ),
            )
        )
        assert activity.window("c0", Measure.TRADES, days=5, at=at).value == before
    assert activity.window("c0", Measure.TRADES, days=5, at=at).value == before + 1
    assert activity._batched == 0


def test_a_scan_of_a_day_reads_the_log_once(monkeypatch: Any) -> None:
    store, codec = _log([(c, d, 3600, "trade", "1", 0) for c in range(4) for d in range(0, 60, 3)])
    activity = _activity(store, codec)
    activity.clients()
    calls: list[Any] = []
    original = activity.projections.catch_up

    def counted(projection: Any) -> int:
        calls.append(projection)
        return original(projection)

    monkeypatch.setattr(activity.projections, "catch_up", counted)
    at = START + timedelta(days=61)
    Segmentation(activity, calendar=CAL).score_all(at)
    assert len(calls) == 1
    day: date = CAL.trading_day(at)
    assert day.year == 2026
