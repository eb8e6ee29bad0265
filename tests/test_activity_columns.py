"""The activity read model keeps each client's days in columns (day order, one slice per
window). Its windows equal a trivial model of the feed and the ledger, computed here from the
deals as they stand and the deposits as recorded, whatever order the days arrive in (a late
deal of an older day, an update moving a deal's size, a delete emptying a day)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.accounts import TradingAccountOpened
from fxcrm_core.activity import ClientActivity, Measure
from fxcrm_core.events import EventCodec, EventMetadata, EventRegistry, ProjectionRunner
from fxcrm_core.events.store import StreamAppend
from fxcrm_core.kernel import Currency, ExchangeRate, FixedClock, Money, RateTable, TradingCalendar
from fxcrm_core.ledger import register_events as register_ledger_events
from fxcrm_core.ledger.model import AccountOpened, Limit, TransferRecorded
from fxcrm_core.stores import MemoryEventStore
from fxcrm_core.trading import Deal, DealAction, DealChange, DealEntry, DealsReceived, FeedItem
from fxcrm_core.trading import register_events as register_trading_events

CAL = TradingCalendar()
START = datetime(2026, 1, 5, 12, tzinfo=UTC)
END = START + timedelta(days=80)
META = EventMetadata("system:test", reason="test")
EURUSD = Decimal("1.0843")
# symbol -> (contract size, price) with a USD quote; US30 has no notional
SYMBOLS = {
    "EURUSD": (Decimal(100_000), Decimal("1.08437")),
    "XAUUSD": (Decimal(100), Decimal("2011.5")),
    "US30": None,
}
CENT = Decimal("0.01")

# (kind, client, day offset, seconds, size, pick)
step = st.tuples(
    st.sampled_from(("trade", "trade", "trade", "fix", "delete", "deposit", "deposit_eur")),
    st.integers(0, 2),
    st.integers(0, 75),
    st.integers(0, 86_399),
    st.sampled_from(("0.01", "0.1", "0.33", "1", "2.5", "7")),
    st.integers(0, 50),
)


def _codec() -> EventCodec:
    registry = EventRegistry()
    register_ledger_events(registry)
    register_trading_events(registry)
    registry.register_all((TradingAccountOpened,))
    return EventCodec(registry)


class Oracle:
    """The deals as they stand and the deposits as recorded, summed by trading day on demand."""

    def __init__(self) -> None:
        self.deals: dict[int, tuple[int, Deal]] = {}  # ticket -> (client, deal)
        self.deposits: list[tuple[int, date, Decimal]] = []  # (client, trading day, USD)

    def value(self, client: int, measure: Measure, first: date, last: date) -> Decimal:
        deals = [
            d for c, d in self.deals.values()
            if c == client and first <= CAL.trading_day(d.time) <= last
        ]  # fmt: skip
        if measure is Measure.TRADES:
            return Decimal(len(deals))
        if measure is Measure.LOTS:
            return sum((d.volume for d in deals), Decimal(0))
        if measure is Measure.ACTIVE_DAYS:
            return Decimal(len({CAL.trading_day(d.time) for d in deals}))
        if measure is Measure.VOLUME_USD:
            total = Decimal(0)
            for d in deals:
                spec = SYMBOLS[d.symbol]
                if spec is not None:
                    total += d.volume * spec[0] * d.price
            return total.quantize(CENT)
        if measure is Measure.REVENUE:
            return sum((-d.commission.amount for d in deals), Decimal(0)).quantize(CENT)
        assert measure in (Measure.DEPOSITS, Measure.NET_DEPOSITS)
        return sum(
            (usd for c, day, usd in self.deposits if c == client and first <= day <= last),
            Decimal(0),
        ).quantize(CENT)


def _first(last: date, days: int) -> date:
    day, seen = last, 1
    while seen < days:
        day -= timedelta(days=1)
        seen += CAL.is_trading_day(day)
    return day


def _world(steps: list[tuple[str, int, int, int, str, int]]) -> tuple[ClientActivity, Oracle]:
    clock = FixedClock(START - timedelta(days=1))
    store = MemoryEventStore(clock)
    codec = _codec()
    oracle = Oracle()

    def append(stream: str, *events: Any) -> None:
        store.append(StreamAppend(stream, None, codec.encode_many(stream, events, META)))

    for c in range(3):
        append(f"tradingaccount-c{c}", TradingAccountOpened(
            f"mt5:{100 + c}", f"c{c}", "mt5", 100 + c, "real", "USD", 100, True))  # fmt: skip
        for code in ("USD", "EUR"):
            wallet = f"wallet:c{c}:{code}"
            opened = AccountOpened(
                wallet, f"c{c}", Currency.of(code), "wallet", Limit.DEBITS_WITHIN_CREDITS
            )
            append(f"account-{wallet}", opened)
    made: list[tuple[int, Deal]] = []
    # Deposits are recorded in time order (the ledger's clock); deals arrive in the steps'
    # order, whatever their times: days reach the model out of order.
    deposits = sorted((s for s in steps if s[0].startswith("deposit")), key=lambda s: (s[2], s[3]))
    for n, (kind, c, day, second, size, _pick) in enumerate(deposits):
        at = START + timedelta(days=day, seconds=second)
        clock.set(at)
        code = "EUR" if kind == "deposit_eur" else "USD"
        amount = Money.of(Decimal(size) * 1000, code)
        tid = f"deposit:{n}"
        credit = f"wallet:c{c}:{code}"
        recorded = TransferRecorded(
            tid, f"psp:{code}", credit, amount, False, None, None, (), "t"
        )  # fmt: skip
        append(f"transfer-{tid}", recorded)
        usd = amount.amount * (EURUSD if code == "EUR" else 1)
        oracle.deposits.append((c, CAL.trading_day(at), usd))
    clock.set(END)
    for n, (kind, c, day, second, size, pick) in enumerate(steps):
        if kind.startswith("deposit"):
            continue
        if kind in ("fix", "delete") and made:
            owner, old = made[pick % len(made)]
            change = DealChange.DELETED if kind == "delete" else DealChange.UPDATED
            deal = Deal(
                old.server, old.ticket, old.login, old.action, old.entry, old.symbol,
                Decimal(size), old.volume_closed, old.price, old.position_id, old.order,
                Money.of(-Decimal(size) * 7, "USD"), old.fee, old.swap, old.profit, old.time,
                old.server_offset,
            )  # fmt: skip
            if change is DealChange.DELETED:
                oracle.deals.pop(deal.ticket, None)
            else:  # an update carries the whole deal: it stands (again, after a delete)
                oracle.deals[deal.ticket] = (owner, deal)
        else:
            change = DealChange.ADDED
            symbol = list(SYMBOLS)[pick % 3]
            spec = SYMBOLS[symbol]
            lots = Decimal(size)
            deal = Deal(
                "mt5", n + 1, 100 + c, DealAction(n % 2), DealEntry.IN, symbol, lots, Decimal(0),
                spec[1] if spec else Decimal(39_000), n + 1, n + 1, Money.of(-lots * 7, "USD"),
                Money.zero("USD"), Money.zero("USD"), Money.zero("USD"),
                START + timedelta(days=day, seconds=second), timedelta(hours=2),
            )  # fmt: skip
            made.append((c, deal))
            oracle.deals[deal.ticket] = (c, deal)
        append("dealfeed-mt5", DealsReceived("mt5", n + 1, (FeedItem(n + 1, change, deal),)))
    rates = RateTable()
    rates.add(ExchangeRate.of("EUR", "USD", str(EURUSD), "test", START - timedelta(days=30)))
    activity = ClientActivity(
        ProjectionRunner(store, codec), CAL, rates=rates, clock=FixedClock(END)
    )
    return activity, oracle


MEASURES = [Measure.TRADES, Measure.LOTS, Measure.ACTIVE_DAYS, Measure.VOLUME_USD,
            Measure.REVENUE, Measure.DEPOSITS, Measure.NET_DEPOSITS]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=70),
    asks=st.lists(
        st.tuples(
            st.integers(0, 2), st.sampled_from(MEASURES), st.integers(1, 90), st.integers(-3, 80)
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_windows_equal_a_trivial_model_whatever_order_days_arrive_in(
    steps: list[tuple[str, int, int, int, str, int]], asks: list[tuple[int, Measure, int, int]]
) -> None:
    activity, oracle = _world(steps)
    for c, measure, days, offset in asks:
        at = START + timedelta(days=offset, hours=3)
        last = CAL.trading_day(at)
        expected = oracle.value(c, measure, _first(last, days), last)
        fast = activity._value(f"c{c}", measure, days, at)
        assert activity.window(f"c{c}", measure, days=days, at=at).value == expected == fast
    for c in range(3):
        standing = [d.time for o, d in oracle.deals.values() if o == c]
        if standing:
            # the latest day's latest deal (a deleted one's day keeps its last time: same day)
            found = activity.last_trade(f"c{c}")
            assert found is not None
            assert CAL.trading_day(found) == CAL.trading_day(max(standing))
        lifetime = activity.lifetime(f"c{c}", Measure.LOTS).value
        assert lifetime == oracle.value(c, Measure.LOTS, date.min, date.max)
