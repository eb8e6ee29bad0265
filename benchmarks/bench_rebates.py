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

A second mode runs several trading days with the engine's settlement horizon and prints the
process's resident memory after each day (the engine's state is what grows; the day's items
are made day by day from one generated template and dropped):

    python benchmarks/bench_rebates.py --days 10 --deals 200000 --horizon 3 [--cap day]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import attrs

from fxcrm_core.access import AccessControl, Actor, Role
from fxcrm_core.commissions import (
    PAYOUT_EVENTS,
    REBATE_EVENTS,
    Cadence,
    CapPeriod,
    FixedShares,
    IbTree,
    PayoutPolicy,
    Payouts,
    PeriodCap,
    PlanKind,
    RebateBook,
    RebateEngine,
    Rule,
    Schedule,
    ScheduleBook,
    accrual_policy,
)
from fxcrm_core.events import POLICY_EVENTS, EventCodec, EventRegistry, PolicyRunner, Repository
from fxcrm_core.kernel import Currency, FixedClock, Money, RateTable, TradingCalendar
from fxcrm_core.ledger import LEDGER_EVENTS, Ledger
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
T = TypeVar("T")


def usd(amount: str) -> Money:
    return Money.of(amount, USD)


def build_schedule(*, extras: bool = True, cap_period: CapPeriod = CapPeriod.MONTH) -> ScheduleBook:
    """The day's schedule; ``extras`` adds the CPA and the cap (monthly by default)."""
    cpa = Rule(PlanKind.CPA, usd("50.00"), min_deposit=usd("100.00"), min_lots=Decimal("0.5"))
    cap = PeriodCap(usd("1500.00"), cap_period)
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
            cpa=cpa if extras else None,
            period_cap=cap if extras else None,
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
                emit(DealChange.UPDATED, attrs.evolve(d, commission=fixed))
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


class ListFeed:
    """The trading server's deal feed, read by cursor (the TradingServer.deal_feed shape)."""

    name = SERVER

    def __init__(self, items: list[FeedItem]) -> None:
        self._items = items

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        return self._items[after_cursor : after_cursor + limit]


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def engine_for(
    day: Day,
    *,
    extras: bool = True,
    horizon: timedelta | None = None,
    cap_period: CapPeriod = CapPeriod.MONTH,
) -> RebateEngine:
    calendar = TradingCalendar()
    return RebateEngine(
        day.tree,
        build_schedule(extras=extras, cap_period=cap_period),
        FixedShares(SHARES),
        client_of=lambda server, login: day.client_of.get(login),
        account_group_of=lambda server, login: day.group_of[login],
        trading_day_of=lambda deal: calendar.trading_day(deal.time),
        horizon=horizon,
    )


@attrs.frozen
class SdkRun:
    seconds: float
    feed_seconds: float  # feed -> engine -> rebate book (entries recorded in the event log)
    payout_seconds: float  # every IB paid through the ledger
    entries: int
    payouts: int
    paid: Decimal
    accrued: Decimal
    per_lot: Decimal  # the rebate component alone (no CPA, no caps): the baseline's figure


def run_sdk(day: Day, path: Path, batch: int, *, extras: bool = True) -> SdkRun:
    """The whole day through the SDK on one SQLite file (synchronous=FULL, the default)."""
    registry = EventRegistry()
    registry.register_all((*REBATE_EVENTS, *LEDGER_EVENTS, *PAYOUT_EVENTS, *POLICY_EVENTS))
    repository = Repository(SqliteEventStore(path), EventCodec(registry))
    ledger = Ledger(repository, clock=FixedClock(DAY + timedelta(days=1, hours=1)))
    policies = {ib: PayoutPolicy(USD, usd("0.01"), Cadence.INSTANT) for ib in day.ibs}
    payouts = Payouts(ledger, RateTable(), policies, access=AccessControl())
    accruals = PolicyRunner(repository, [accrual_policy()])  # the IBs' accounts, fed by a policy
    for ib in day.ibs:  # the IBs' wallets exist before the day
        ledger.open_account(f"ib-wallet:{ib}:USD", owner=ib, currency=USD, purpose="ib_wallet")
    book = RebateBook(repository, engine_for(day, extras=extras))
    server = ListFeed(day.items)
    runner = Actor.system("payouts", Role.FINANCE)
    start = time.perf_counter()
    cursor, entries = 0, 0
    while items := server.deal_feed(after_cursor=cursor, limit=batch):
        recorded = book.process(server.name, items)
        accruals.run()
        entries += len(recorded)
        cursor = items[-1].cursor
    fed = time.perf_counter()
    results = payouts.run_all(runner, (DAY + timedelta(days=1)).date())
    done = time.perf_counter()
    paid = [r.paid.amount for r in results if r.paid is not None]
    accrued = sum((t.amount for t in book.engine.totals().values()), Decimal(0))
    # The check against the loop reads the book back, untimed (the SDK never needs this sum).
    per_lot = sum(
        (e.amount.amount
         for event in RebateBook.recorded(repository.store, repository.codec)
         for e in event.entries if e.component == "rebate"),
        Decimal(0),
    )  # fmt: skip
    return SdkRun(
        done - start, fed - start, done - fed, entries, len(paid), sum(paid, Decimal(0)),
        accrued, per_lot,
    )  # fmt: skip


def rss_mb() -> float:
    """The process's resident memory now, in MB (Linux /proc; else the peak, from resource)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def shifted(template: list[FeedItem], n: int, days: int) -> list[FeedItem]:
    """Day ``n`` of the run: the template's items ``days`` calendar days later, with tickets,
    positions and cursors of their own."""
    offset, moved = n * 10_000_000, timedelta(days=days)
    out = []
    for item in template:
        d = item.deal
        deal = attrs.evolve(
            d, ticket=d.ticket + offset, order=d.order + offset,
            position_id=d.position_id + offset, time=d.time + moved,
        )  # fmt: skip
        out.append(FeedItem(item.cursor + n * len(template), item.change, deal))
    return out


def run_days(day: Day, args: argparse.Namespace) -> int:
    """Several trading days through the rebate book and the accrual policy on SQLite, with
    the engine's settlement horizon; prints the resident memory after each day."""
    horizon = timedelta(days=args.horizon) if args.horizon else None
    registry = EventRegistry()
    registry.register_all((*REBATE_EVENTS, *PAYOUT_EVENTS, *POLICY_EVENTS))
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        repository = Repository(SqliteEventStore(Path(tmp) / "days.sqlite"), EventCodec(registry))
        accruals = PolicyRunner(repository, [accrual_policy()])
        cap = CapPeriod(args.cap) if args.cap != "none" else CapPeriod.MONTH
        engine = engine_for(day, extras=args.cap != "none", horizon=horizon, cap_period=cap)
        book = RebateBook(repository, engine)
        weekdays = [d for d in range(3 * args.days) if (DAY + timedelta(days=d)).weekday() < 5]
        print(f"\n{'day':>4}{'trading day':>13}{'seconds':>9}{'RSS MB':>9}{'deals held':>12}")
        for n, shift in enumerate(weekdays[: args.days]):
            items = shifted(day.items, n, shift)
            start = time.perf_counter()
            for at in range(0, len(items), args.batch):
                book.process(SERVER, items[at : at + args.batch])
                accruals.run()
            seconds = time.perf_counter() - start
            del items
            gc.collect()
            rss.append(rss_mb())
            held = len(engine._cursor)  # (private: the deals whose state the engine holds)
            when = (DAY + timedelta(days=shift)).date()
            print(f"{n + 1:4}{when.isoformat():>13}{seconds:9.1f}{rss[-1]:9.1f}{held:12,}")
    if len(rss) >= 10:
        growth = rss[9] / rss[4] - 1
        verdict = "meets" if growth <= 0.10 else "MISSES"
        print(f"\nRSS growth from day 5 to day 10: {growth:+.1%} ({verdict} the target of +10%)")
    return 0


def run_baseline(day: Day) -> Decimal:
    """Only the arithmetic: per closing deal, the rule's rate x lots (alias, group and modifier
    looked up in plain dicts), the pool limited to the commission, shares up a precomputed
    chain, per-deal amounts kept so updates and deletes net out; totals per IB."""
    per_lot = {"EURUSD": Decimal("3.00"), "XAUUSD": Decimal("3.50"), "GBPUSD": Decimal("2.50"),
               "USDJPY": Decimal("2.50"), "AUDUSD": Decimal("2.50")}  # fmt: skip
    indices = {"US30", "NAS100", "GER40"}
    modifier = {"vip": Decimal("0.5")}
    one, half, default = Decimal(1), Decimal("0.5"), Decimal("2.00")
    paid: dict[int, list[tuple[str, Decimal]]] = {}
    totals: dict[str, Decimal] = {}
    for item in day.items:
        deal = item.deal
        if not deal.action.is_trade:
            continue
        for ib, amount in paid.pop(deal.ticket, ()):
            totals[ib] -= amount
        chain = day.chains.get(deal.login)
        if item.change is DealChange.DELETED or chain is None or not deal.entry.closes:
            continue
        symbol = deal.symbol.split(".")[0]
        lots = deal.volume_closed * modifier.get(day.group_of[deal.login], one)
        commission = -deal.commission.amount
        pool = commission * half if symbol in indices else per_lot.get(symbol, default) * lots
        pool = min(pool, commission)
        shares = [(ib, pool * share) for ib, share in zip(chain, SHARES, strict=False)]
        for ib, amount in shares:
            totals[ib] = totals.get(ib, Decimal(0)) + amount
        paid[deal.ticket] = shares
    return sum(totals.values(), Decimal(0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--ibs", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--per-lot-only", action="store_true", help="no CPA, no monthly cap")
    parser.add_argument("--days", type=int, default=0, help="trading days (the memory mode)")
    parser.add_argument("--horizon", type=int, default=0, help="settlement horizon, days")
    parser.add_argument("--cap", choices=("month", "week", "day", "none"), default="month",
                        help="the cap period in the memory mode")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.deals, args.clients, args.ibs, args.batch = 5_000, 1_000, 100, 1_000
    t_gen, day = _timed(lambda: Day(clients=args.clients, ibs=args.ibs, deals=args.deals))
    # The generated day stands for the trading server's own data (another process, in real
    # life): keep it out of the cyclic garbage collector's way. The SDK's own state is not frozen.
    gc.freeze()
    depth = max(len(c) for c in day.chains.values())
    print(
        f"{args.deals:,} feed items, {args.clients:,} clients, {args.ibs:,} IBs "
        f"(chains up to {depth} deep); generated in {t_gen:.1f} s (not timed below)"
    )
    if args.days:
        code = run_days(day, args)
        gc.unfreeze()
        sys.exit(code)
    # The loop runs before and twice after the SDK (this machine's speed drifts by 10-20%
    # over minutes); the ratio takes its fastest run, the least favourable to the SDK.
    loops = [_timed(lambda: run_baseline(day))]
    with tempfile.TemporaryDirectory() as tmp:
        sdk = run_sdk(day, Path(tmp) / "rebates.sqlite", args.batch, extras=not args.per_lot_only)
    loops += [_timed(lambda: run_baseline(day)) for _ in range(2)]
    t_base, base_total = min(loops, key=lambda run: run[0])
    assert all(total == base_total for _, total in loops)
    n = args.deals
    rules = "per-lot rules only" if args.per_lot_only else "per-lot rules, CPA, monthly cap"
    print(f"schedule: {rules}")
    print(f"\n{'':44}{'seconds':>9}{'deals/s':>12}")
    print(f"  {'hand-written loop (fastest of 3 runs)':42}{t_base:9.2f}{n / t_base:12,.0f}")
    print(f"  {'  runs: ' + ', '.join(f'{t:.2f} s' for t, _ in loops)}")
    print(f"  {'SDK end to end on SQLite (FULL)':42}{sdk.seconds:9.2f}{n / sdk.seconds:12,.0f}")
    print(f"  {'  feed -> engine -> rebate book':42}{sdk.feed_seconds:9.2f}")
    print(f"  {'  payouts through the ledger':42}{sdk.payout_seconds:9.2f}")
    print(f"\nrebate entries recorded {sdk.entries:,}; IBs paid {sdk.payouts:,}")
    print(f"accrued (unrounded) {sdk.accrued:,.2f} USD; paid {sdk.paid:,.2f} USD (rounded down)")
    agree = "agree" if sdk.per_lot == base_total else "DISAGREE"
    print(f"per-lot rebates before caps: SDK {sdk.per_lot:,.4f}, loop {base_total:,.4f} ({agree})")
    print(f"\nratio SDK / hand-written loop (deals/s)  {t_base / sdk.seconds:.3f}")
    print(f"target: the whole day in under 60 s -> {sdk.seconds:.1f} s")
    gc.unfreeze()
    sys.exit(0 if sdk.per_lot == base_total else 1)


if __name__ == "__main__":
    main()
