"""A broker-sized day of IB rebates, end to end on SQLite: the deal feed → the rebate engine →
the rebate book (the engine's entries and cursors in the event log) → payouts posted through
the ledger. Reported as deals/s and as a ratio to a minimal hand-written loop doing only the
arithmetic (the same pools, the same shares up the same chains) in the same run.

The day: 100,000 clients (90% came through an IB), 5,000 IBs in trees up to 6 deep, 1,000,000
feed items — opens, full and partial closes, first deposits, dealer corrections and deletes —
across 20 symbols (aliases such as ``EURUSD.m`` included) and three account groups. Rebates:
per lot by symbol, by symbol group and by default, a lot modifier for one group, capped at the
broker's commission, shared 50/20/10/10/5/5% up the chain, a CPA on qualified first deposits
and a monthly cap per IB. At the end of the day every IB is paid through the ledger.

    python benchmarks/bench_rebates.py [--quick] [--deals N] [--clients N] [--ibs N]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from fxcrm_core.commissions import (
    REBATE_EVENTS,
    FixedShares,
    IbTree,
    PlanKind,
    RebateBook,
    RebateEngine,
    Rule,
    Schedule,
    ScheduleBook,
)
from fxcrm_core.events import EventCodec, EventRegistry, Repository
from fxcrm_core.kernel import Currency, Money, TradingCalendar
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import Deal, DealAction, DealChange, DealEntry, FeedItem

SERVER = "mt5-live"
DAY = datetime(2026, 3, 10, tzinfo=UTC)  # a Tuesday
SHARES = (Decimal("0.5"), Decimal("0.2"), Decimal("0.1"), Decimal("0.1"), Decimal("0.05"),
          Decimal("0.05"))  # fmt: skip
SYMBOLS = ("EURUSD", "EURUSD.m", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "USDCAD", "NZDUSD",
           "EURGBP", "EURJPY", "GBPJPY", "XAUUSD", "XAUUSD.m", "XAGUSD", "US30", "NAS100",
           "GER40", "BTCUSD", "ETHUSD", "UKOIL")  # fmt: skip
GROUPS = ("std", "pro", "vip")
USD = Currency.of("USD")


def usd(amount: str) -> Money:
    return Money.of(amount, USD)


def build_schedule() -> ScheduleBook:
    book = ScheduleBook()
    book.add(
        Schedule(
            "ib-standard",
            1,
            DAY - timedelta(days=90),
            USD,
            by_symbol={"EURUSD": Rule(PlanKind.PER_LOT, usd("3.00")),
                       "XAUUSD": Rule(PlanKind.PER_LOT, usd("3.50"))},
            symbol_groups={"GBPUSD": "majors", "USDJPY": "majors", "AUDUSD": "majors",
                           "US30": "indices", "NAS100": "indices", "GER40": "indices"},
            by_symbol_group={"majors": Rule(PlanKind.PER_LOT, usd("2.50")),
                             "indices": Rule(PlanKind.COMMISSION_SHARE, share=Decimal("0.5"))},
            default=Rule(PlanKind.PER_LOT, usd("2.00")),
            lot_modifiers={"vip": Decimal("0.5")},
        )
    )  # fmt: skip
    return book


class Day:
    """The generated broker day: the tree, the clients' accounts and the feed."""

    def __init__(self, *, clients: int, ibs: int, deals: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        start = DAY - timedelta(days=60)
        self.tree = IbTree(max_depth=6)
        weights = (0.10, 0.18, 0.22, 0.22, 0.16, 0.12)  # IBs at depth 1..6
        levels: list[list[str]] = [[] for _ in weights]
        for n in range(ibs):
            depth = 0 if n < max(1, ibs // 10) else rng.choices(range(6), weights)[0]
            while depth and not levels[depth - 1]:
                depth -= 1
            ib = f"ib{n}"
            parent = rng.choice(levels[depth - 1]) if depth else None
            self.tree.add_ib(ib, parent, start)
            levels[depth].append(ib)
        self.ibs = [ib for level in levels for ib in level]
        self.client_of: dict[int, str] = {}
        self.group_of: dict[int, str] = {}
        self.chains: dict[int, list[str]] = {}  # for the hand-written baseline
        for c in range(clients):
            login = 1_000_000 + c
            client = f"c{c}"
            self.client_of[login] = client
            self.group_of[login] = rng.choice(GROUPS)
            if rng.random() < 0.9:
                ib = rng.choice(self.ibs)
                self.tree.attribute(client, ib, start)
                self.chains[login] = self.tree.chain(ib, DAY)
        self.items = self._feed(rng, deals, list(self.client_of))

    def _feed(self, rng: random.Random, n: int, logins: list[int]) -> list[FeedItem]:
        items: list[FeedItem] = []
        open_positions: dict[int, list[tuple[int, str, int, bool]]] = {}
        closes: list[Deal] = []
        funded: set[int] = set()
        step = timedelta(seconds=86_000) / n
        ticket = 0

        def emit(change: DealChange, deal: Deal) -> None:
            items.append(FeedItem(len(items) + 1, change, deal))

        def deal(login: int, action: DealAction, entry: DealEntry, symbol: str, units: int,
                 closed: int, position: int, commission: int, profit: int) -> Deal:  # fmt: skip
            nonlocal ticket
            ticket += 1
            return Deal(
                server=SERVER, ticket=ticket, login=login, action=action, entry=entry,
                symbol=symbol, volume=Decimal(units) / 10_000,
                volume_closed=Decimal(closed) / 10_000, price=Decimal("1.08450"),
                position_id=position or ticket, order=ticket,
                commission=Money.from_minor(commission, USD), fee=Money.zero(USD),
                swap=Money.zero(USD), profit=Money.from_minor(profit, USD),
                time=DAY + step * len(items), server_offset=timedelta(hours=2),
            )  # fmt: skip

        while len(items) < n:
            login = rng.choice(logins)
            roll = rng.random()
            mine = open_positions.get(login)
            if login not in funded:
                funded.add(login)
                amount = rng.choice((5_000, 10_000, 50_000, 100_000, 500_000))
                emit(DealChange.ADDED, deal(login, DealAction.BALANCE, DealEntry.IN, "", 0, 0, 0,
                                            0, amount))  # fmt: skip
            elif roll < 0.02 and closes:
                d = rng.choice(closes)
                fixed = Money.from_minor(d.commission.minor - 50, USD)
                emit(DealChange.UPDATED, _evolve(d, commission=fixed))
            elif roll < 0.03 and closes:
                emit(DealChange.DELETED, closes.pop(rng.randrange(len(closes))))
            elif mine and roll < 0.5:
                position, symbol, units, buy = mine.pop(rng.randrange(len(mine)))
                part = units // 2 if rng.random() < 0.2 and units > 100 else units
                d = deal(login, DealAction.SELL if buy else DealAction.BUY, DealEntry.OUT,
                         symbol, part, part, position, -(part * 350 // 10_000),
                         rng.randint(-50_000, 60_000) * part // 10_000)  # fmt: skip
                if part < units:
                    mine.append((position, symbol, units - part, buy))
                closes.append(d)
                emit(DealChange.ADDED, d)
            else:
                symbol = rng.choice(SYMBOLS)
                units = rng.choice((100, 1000, 2500, 10_000, 50_000))
                buy = rng.random() < 0.5
                d = deal(login, DealAction.BUY if buy else DealAction.SELL, DealEntry.IN,
                         symbol, units, 0, 0, -(units * 350 // 10_000), 0)  # fmt: skip
                open_positions.setdefault(login, []).append((d.ticket, symbol, units, buy))
                emit(DealChange.ADDED, d)
        return items[:n]


def _evolve(deal: Deal, **changes: object) -> Deal:
    import attrs

    return attrs.evolve(deal, **changes)


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def engine_for(day: Day) -> RebateEngine:
    calendar = TradingCalendar()
    return RebateEngine(
        day.tree,
        build_schedule(),
        FixedShares(SHARES),
        client_of=lambda server, login: day.client_of.get(login),
        account_group_of=lambda server, login: day.group_of[login],
        trading_day_of=lambda deal: calendar.trading_day(deal.time),
    )


def run_sdk(day: Day, path: Path, batch: int) -> dict[str, object]:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    store = SqliteEventStore(path)
    repository = Repository(store, EventCodec(registry))
    book = RebateBook(repository, engine_for(day))
    entries = 0
    for i in range(0, len(day.items), batch):
        entries += len(book.process(SERVER, day.items[i : i + batch]))
    return {"entries": entries}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--ibs", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    if args.quick:
        args.deals, args.clients, args.ibs, args.batch = 5_000, 1_000, 100, 1_000
    t, day = _timed(lambda: Day(clients=args.clients, ibs=args.ibs, deals=args.deals))
    print(f"generated in {t:.1f} s")
    assert isinstance(day, Day)
    with tempfile.TemporaryDirectory() as tmp:
        t, result = _timed(lambda: run_sdk(day, Path(tmp) / "rebates.db", args.batch))
        print(f"sdk: {t:.1f} s, {args.deals / t:,.0f} deals/s, {result}")


if __name__ == "__main__":
    main()
