"""Loyalty re-evaluation of a broker's whole book on SQLite: tiers, RFM scores and churn warnings
for 100,000 clients with 90 calendar days of activity (about 5,000,000 trade deals), reported as
clients/s and as a ratio to a hand-written loop over the same rows in the same run.

**The input log** (SQLite, synchronous=FULL): each client's trading account
(``TradingAccountOpened``) and wallet (``AccountOpened``); its trade deals from 1 January to
31 March 2026 as ``DealsReceived`` events of 100 items (the size ``DealFeeds.pull`` writes), 1% of
them updated and 0.3% deleted by the dealer a little later; its deposits (``TransferRecorded``,
``deposit:`` into the wallet, at their recording time) and, for a few, withdrawals (a pending
``wd:`` hold posted by ``TransferResolved``). Clients are steady, heavy, fading (trading stops
in the last two weeks), new (from March) or dormant. Generating it takes minutes, so the input
log ONLY is cached between runs in ``$TMPDIR/fxcrm-bench-loyalty/`` (keyed by the sizes, the
seed and the generator's version; ``--no-cache`` regenerates); every run copies it to a fresh
file (untimed) and writes its decisions there.

**Measured, in one process, in this order:**

1. *Read-model rebuild* (its own figure, NOT in the re-evaluation's time): the SDK's
   ``ClientActivity`` (correction horizon ``--horizon`` days, so per-deal marks stay bounded)
   caught up from position 0 through a ``ProjectionRunner``, exactly as a process builds it on
   start. The loop's counterpart reads the same rows (``SELECT`` of the same event types), parses
   their JSON and adds each deal and deposit to plain per-client per-day dicts.
2. *Re-evaluation* (the target: under 20 s, and at least 0.25 of the loop's clients/s):
   - tiers: the docs/loyalty.md programme (bronze, silver at 10 lots, gold at 50 lots and 5,000
     USD net deposits or 40 trades; calendar month) recorded before the run (untimed);
     ``Tiers.close_period`` closes March for every client, in units of work of ``--batch``
     clients committed to the SQLite log (a ``TierPeriodClosed`` and the first ``TierChanged``
     per client); the tier engine reads the activity read model through the library's
     ``ClientActivitySource`` (the broker's adapter);
   - RFM: ``Segmentation(...).score_all`` with the default ``RfmModel`` (a read: nothing
     recorded);
   - churn: ``ChurnWatch(..., projections=...).evaluate_all`` with the default
     ``BaselineChurnModel``, its warnings committed to the log.
   The loop starts from its own per-client per-day dicts (built in step 1, the same figures the
   read model holds), computes the same decisions with plain dict and Decimal arithmetic and
   writes one row per event the SDK records (same count) to a table of the same SQLite file
   with ``executemany`` in one transaction. The two agree client by client (tier, RFM code and
   segment, churn reasons) or the script exits non-zero.

Peak RSS (the process's high-water mark) is reported at the end.

    python benchmarks/bench_loyalty.py [--quick] [--clients N] [--deals N] [--batch N]
                                       [--horizon DAYS] [--no-cache] [--profile FILE]
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import gc
import hashlib
import json
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fxcrm_core.access import AccessControl, Actor, Approvals, Role
from fxcrm_core.access import register_events as register_access_events
from fxcrm_core.accounts import TradingAccountOpened
from fxcrm_core.activity import ClientActivity, ClientActivitySource
from fxcrm_core.activity import Measure as ActivityMeasure
from fxcrm_core.events import (
    EventCodec,
    EventMetadata,
    EventRegistry,
    ProjectionRunner,
    Repository,
    UnitOfWork,
)
from fxcrm_core.events import register_events as register_core_events
from fxcrm_core.events.store import StreamAppend
from fxcrm_core.kernel import Currency, FixedClock, Money, TradingCalendar
from fxcrm_core.ledger import register_events as register_ledger_events
from fxcrm_core.ledger.model import (
    AccountOpened,
    Limit,
    TransferRecorded,
    TransferResolved,
    TransferStatus,
)
from fxcrm_core.loyalty import (
    Benefits,
    CalendarMonth,
    ChurnWatch,
    Combination,
    DowngradeRule,
    Measure,
    Segmentation,
    Threshold,
    Tier,
    TierProgramme,
    Tiers,
    UpgradeTiming,
)
from fxcrm_core.loyalty import register_events as register_loyalty_events
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import Deal, DealAction, DealChange, DealEntry, DealsReceived, FeedItem
from fxcrm_core.trading import register_events as register_trading_events

GENERATOR = "loyalty-log-1"  # bump when the generated log changes (the cache key includes it)
SERVER = "mt5-live"
USD = Currency.of("USD")
FIRST, LAST = date(2026, 1, 1), date(2026, 3, 31)  # 90 calendar days
CLOSE_AT = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)  # just after March's last rollover
TICK = timedelta(microseconds=1)
SYMBOLS = (
    ("EURUSD", "1.08450", 40),
    ("GBPUSD", "1.26710", 20),
    ("XAUUSD", "2034.50", 15),
    ("AUDUSD", "0.65420", 10),
    ("US30", "38500.0", 10),
    ("EURUSD.m", "1.08460", 5),
)
LOTS = ("0.01", "0.05", "0.10", "0.50", "1.00", "2.00")
PROFILES = (("steady", 55), ("heavy", 10), ("fading", 15), ("new", 10), ("dormant", 10))
ITEMS_PER_EVENT, EVENTS_PER_APPEND = 100, 10
ZERO, CENT = Decimal(0), Decimal("0.01")


def _registry() -> EventRegistry:
    registry = EventRegistry()
    for register in (
        register_core_events,
        register_access_events,
        register_ledger_events,
        register_trading_events,
        register_loyalty_events,
    ):
        register(registry)
    registry.register_all((TradingAccountOpened,))
    return registry


def client_id(n: int) -> str:
    return f"c{n:06d}"


# -- the input log --------------------------------------------------------------------------------


def trading_days(cal: TradingCalendar) -> list[date]:
    days, day = [], FIRST
    while day <= LAST:
        if cal.is_trading_day(day):
            days.append(day)
        day += timedelta(days=1)
    return days


def generate(path: Path, clients: int, deals: int, seed: int) -> tuple[int, int]:
    """Write the input log; returns (deal items, deposits and withdrawals)."""
    rng = random.Random(seed)
    cal = TradingCalendar()
    days = trading_days(cal)
    n_days = len(days)
    clock = FixedClock(datetime(2025, 12, 31, 12, tzinfo=UTC))
    store = SqliteEventStore(path, clock=clock)
    codec = EventCodec(_registry())
    meta = EventMetadata("system:bench", reason="generated")
    # Per client: profile, and the probability of trading on each day.
    profile = rng.choices([p for p, _ in PROFILES], [w for _, w in PROFILES], k=clients)
    weight = {"steady": 0.35, "heavy": 0.8, "fading": 0.6, "new": 0.5, "dormant": 0.03}
    fade_from, new_from = n_days - 10, next(i for i, d in enumerate(days) if d.month == 3)

    def p_active(c: int, i: int) -> float:
        kind = profile[c]
        if kind == "fading" and i >= fade_from:
            return 0.03
        if kind == "new" and i < new_from:
            return 0.0
        return weight[kind]

    expected = sum(p_active(c, i) for c in range(min(clients, 2000)) for i in range(n_days))
    expected *= clients / min(clients, 2000)
    per_day = max(1.0, deals / max(expected, 1.0))  # mean deals per active client-day

    def append(stream: str, *events: Any) -> None:
        store.append(StreamAppend(stream, None, codec.encode_many(stream, events, meta)))

    opened = []
    for c in range(clients):
        cid = client_id(c)
        opened.append(
            StreamAppend(
                f"tradingaccount-{cid}",
                None,
                codec.encode_many(
                    f"tradingaccount-{cid}",
                    [
                        TradingAccountOpened(
                            f"{SERVER}:{1_000_000 + c}",
                            cid,
                            SERVER,
                            1_000_000 + c,
                            "real\\std",
                            "USD",
                            100,
                            True,
                        )
                    ],
                    meta,
                ),
            )
        )
        wallet = f"wallet:{cid}:USD"
        opened.append(
            StreamAppend(
                f"account-{wallet}",
                None,
                codec.encode_many(
                    f"account-{wallet}",
                    [AccountOpened(wallet, cid, USD, "wallet", Limit.DEBITS_WITHIN_CREDITS)],
                    meta,
                ),
            )
        )
        if len(opened) >= 2000:
            store.append(*opened)
            opened = []
    if opened:
        store.append(*opened)
    # Deposit habits: every `cycle` trading days from a random start; a few drain in March.
    cycle = [rng.choice((5, 10, 15, 20, 30)) for _ in range(clients)]
    start = [rng.randrange(cycle[c]) if profile[c] != "new" else new_from for c in range(clients)]
    drains = {c for c in range(clients) if rng.random() < 0.03}
    balance = [ZERO] * clients
    ticket, cursor, moves = 0, 0, 0
    items: list[FeedItem] = []
    recent: list[Deal] = []  # yesterday's and today's deals: the dealer corrects some
    prices = {s: Decimal(p) for s, p, _ in SYMBOLS}
    symbols, sym_weights = [s for s, _, _ in SYMBOLS], [w for _, _, w in SYMBOLS]
    lots = [Decimal(x) for x in LOTS]
    feed = 0

    def flush(final: bool = False) -> None:
        nonlocal items, feed
        while len(items) >= ITEMS_PER_EVENT * EVENTS_PER_APPEND or (final and items):
            chunk = items[: ITEMS_PER_EVENT * EVENTS_PER_APPEND]
            items = items[len(chunk) :]
            events = [
                DealsReceived(SERVER, part[-1].cursor, tuple(part))
                for part in (
                    chunk[k : k + ITEMS_PER_EVENT] for k in range(0, len(chunk), ITEMS_PER_EVENT)
                )
            ]
            stream = f"dealfeed-{SERVER}"
            store.append(StreamAppend(stream, feed, codec.encode_many(stream, events, meta)))
            feed += len(events)

    for i, day in enumerate(days):
        open_, close = cal.session(day)
        span = (close - open_).total_seconds()
        clock.set(open_ + timedelta(hours=2))
        # Money first: deposits on the client's cycle, withdrawals of the drainers.
        money = []
        for c in range(clients):
            if i >= start[c] and (i - start[c]) % cycle[c] == 0 and profile[c] != "dormant":
                amount = Decimal(rng.choice((100, 250, 500, 1000, 2500, 5000)))
                balance[c] += amount
                tid = f"deposit:{c}-{i}"
                money.append(
                    StreamAppend(
                        f"transfer-{tid}",
                        None,
                        codec.encode_many(
                            f"transfer-{tid}",
                            [
                                TransferRecorded(
                                    tid,
                                    "psp_clearing:USD",
                                    f"wallet:{client_id(c)}:USD",
                                    Money.of(amount, USD),
                                    False,
                                    None,
                                    None,
                                    (),
                                    "bench",
                                )
                            ],
                            meta,
                        ),
                    )
                )
            elif c in drains and i == fade_from + 2 and balance[c] > 0:
                tid = f"wd:{c}-{i}"
                amount = (balance[c] * Decimal("0.9")).quantize(CENT)
                money.append(
                    StreamAppend(
                        f"transfer-{tid}",
                        None,
                        codec.encode_many(
                            f"transfer-{tid}",
                            [
                                TransferRecorded(
                                    tid,
                                    f"wallet:{client_id(c)}:USD",
                                    "psp_payout:USD",
                                    Money.of(amount, USD),
                                    True,
                                    None,
                                    None,
                                    (),
                                    "bench",
                                ),
                                TransferResolved(
                                    TransferStatus.POSTED_FROM_PENDING, Money.of(amount, USD)
                                ),
                            ],
                            meta,
                        ),
                    )
                )
        moves += len(money)
        for k in range(0, len(money), 2000):
            store.append(*money[k : k + 2000])
        # Then the day's deals, in time order, with yesterday's corrections among them.
        todays: list[tuple[float, int]] = []
        for c in range(clients):
            if rng.random() < p_active(c, i):
                for _ in range(max(1, round(rng.expovariate(1 / per_day)))):
                    todays.append((rng.random(), c))
        todays.sort()
        corrections = [d for d in recent if rng.random() < 0.013]
        recent = []
        for at, c in todays:
            ticket += 1
            cursor += 1
            symbol = rng.choices(symbols, sym_weights)[0]
            volume = rng.choice(lots)
            entry = DealEntry.IN if ticket % 2 else DealEntry.OUT
            deal = Deal(
                SERVER,
                ticket,
                1_000_000 + c,
                DealAction(ticket % 2),
                entry,
                symbol,
                volume,
                volume if entry is DealEntry.OUT else ZERO,
                prices[symbol],
                ticket,
                ticket,
                Money.of(-(volume * 7).quantize(CENT), USD),
                Money.zero(USD),
                Money.zero(USD),
                Money.zero(USD),
                open_ + timedelta(seconds=at * span),
                timedelta(hours=2),
            )
            items.append(FeedItem(cursor, DealChange.ADDED, deal))
            recent.append(deal)
            if corrections and rng.random() < len(corrections) / max(len(todays), 1):
                fixed = corrections.pop()
                cursor += 1
                if rng.random() < 0.25:
                    items.append(FeedItem(cursor, DealChange.DELETED, fixed))
                else:
                    again = Deal(
                        SERVER,
                        fixed.ticket,
                        fixed.login,
                        fixed.action,
                        fixed.entry,
                        fixed.symbol,
                        fixed.volume * 2,
                        fixed.volume_closed * 2,
                        fixed.price,
                        fixed.position_id,
                        fixed.order,
                        fixed.commission,
                        fixed.fee,
                        fixed.swap,
                        fixed.profit,
                        fixed.time,
                        fixed.server_offset,
                    )
                    items.append(FeedItem(cursor, DealChange.UPDATED, again))
        clock.set(close - timedelta(minutes=1))
        flush()
    flush(final=True)
    store.close()
    return cursor, moves


def input_log(args: argparse.Namespace) -> tuple[Path, float, bool]:
    """The cached input log's path (generated if missing), seconds spent generating, cached?"""
    key = hashlib.sha256(
        f"{GENERATOR}:{args.clients}:{args.deals}:{args.seed}".encode()
    ).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "fxcrm-bench-loyalty"
    folder.mkdir(exist_ok=True)
    path = folder / f"input-{key}.sqlite"
    if path.exists() and not args.no_cache:
        return path, 0.0, True
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    generate(partial, args.clients, args.deals, args.seed)
    partial.replace(path)
    return path, time.perf_counter() - started, False


# -- the SDK side ---------------------------------------------------------------------------------

VIP = TierProgramme(
    "vip",
    1,
    datetime(2026, 1, 1, tzinfo=UTC),
    [
        Tier("bronze"),
        Tier(
            "silver",
            all_of=[Threshold(Measure.LOTS, Decimal(10))],
            benefits=Benefits(Money.of("1.00", USD), Decimal("1.5"), 500, Decimal("0.1")),
        ),
        Tier(
            "gold",
            all_of=[Threshold(Measure.LOTS, Decimal(50))],
            any_of=[
                Threshold(Measure.NET_DEPOSITS, Decimal(5000)),
                Threshold(Measure.TRADES, Decimal(40)),
            ],
            benefits=Benefits(Money.of("2.50", USD), Decimal(2), 200, Decimal("0.25")),
        ),
    ],
    CalendarMonth(),
    UpgradeTiming.AT_ONCE,
    DowngradeRule(grace_trading_days=0),
    Combination.CURRENT_PERIOD,
)


class SpanCachedSource(ClientActivitySource):
    """``--tier-source cached``: the library's adapter with each (start, end) span's trading
    days and anchor worked out once (what the library's adapter works out on every call),
    then the same public ``window``. Not the library path: it shows what that change buys."""

    def __init__(self, activity: ClientActivity) -> None:
        super().__init__(activity)
        self._spans: dict[tuple[datetime, datetime], tuple[int, datetime]] = {}

    def measure(self, client_id: str, measure: Any, start: datetime, end: datetime) -> Decimal:
        span = self._spans.get((start, end))
        if span is None:
            cal = self.calendar
            first, last = cal.trading_day(start), cal.trading_day(end - TICK)
            n, day = 0, first
            while day <= last:
                n += cal.is_trading_day(day)
                day += timedelta(days=1)
            span = self._spans[(start, end)] = (n, cal.session(last)[1] - TICK)
        days, anchor = span
        if end <= start or days < 1:
            return ZERO
        figure = ActivityMeasure(measure.value)
        return self.activity.window(client_id, figure, days=days, at=anchor).value


class Sdk:
    """The library's services over one SQLite log, built as a process builds them."""

    def __init__(self, path: Path, horizon: int, tier_source: str = "library") -> None:
        self.store = SqliteEventStore(path, clock=FixedClock(CLOSE_AT))
        self.repository = Repository(self.store, EventCodec(_registry()))
        self.projections = ProjectionRunner(self.store, self.repository.codec)
        self.calendar = TradingCalendar()
        self.activity = ClientActivity(
            self.projections,
            self.calendar,
            clock=FixedClock(CLOSE_AT),
            horizon=timedelta(days=horizon),
        )
        access = AccessControl()
        self.tiers = Tiers(
            self.repository,
            access,
            Approvals(self.repository, access),
            (SpanCachedSource if tier_source == "cached" else ClientActivitySource)(self.activity),
            programme="vip",
            calendar=self.calendar,
            clock=(tier_clock := FixedClock(datetime(2025, 12, 31, tzinfo=UTC))),
        )
        if not self.tiers.programmes():  # recorded before it takes effect
            self.tiers.record_programme(Actor.staff("7", Role.ADMIN), VIP, reason="benchmark")
        tier_clock.set(CLOSE_AT)  # March is closed at CLOSE_AT
        self.segmentation = Segmentation(self.activity, calendar=self.calendar)
        self.churn = ChurnWatch(
            self.repository, self.activity, calendar=self.calendar, projections=self.projections
        )


def sdk_rebuild(sdk: Sdk) -> None:
    sdk.activity.clients()  # caught up from position 0 before its first answer


def sdk_reevaluate(sdk: Sdk, at: datetime, batch: int) -> dict[str, Any]:
    """Close March's tiers for every client, score every client, evaluate churn for every
    client; returns the decisions (for the agreement check) and the phase times."""
    clients = sdk.activity.clients()
    t0 = time.perf_counter()
    for k in range(0, len(clients), batch):
        with UnitOfWork(sdk.repository, EventMetadata("system:tiers", reason="month")) as uow:
            sdk.tiers.close_period(CLOSE_AT, clients[k : k + batch], uow=uow)
            uow.commit()
    t1 = time.perf_counter()
    scores = sdk.segmentation.score_all(at)
    t2 = time.perf_counter()
    warned = sdk.churn.evaluate_all(at)
    t3 = time.perf_counter()
    return {
        "clients": clients,
        "scores": scores,
        "warned": warned,
        "times": (t1 - t0, t2 - t1, t3 - t2),
    }


def sdk_decisions(sdk: Sdk, run: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Each client's decisions as recorded (read back, untimed)."""
    out: dict[str, list[Any]] = {c: [None, None, None, ()] for c in run["clients"]}
    for score in run["scores"]:
        out[score.client_id][1] = score.code
        out[score.client_id][2] = score.segment.value
    conn = sqlite3.connect(sdk.store.db.path)
    codec = sdk.repository.codec
    for stream, etype, data in conn.execute(
        "SELECT stream_id, event_type, data FROM fx_events WHERE event_type IN "
        "('TierChanged', 'ChurnWarningRaised') ORDER BY position"
    ):
        event = codec.decode_event(stream, etype, data)
        if etype == "TierChanged":
            out[event.client_id][0] = event.to_tier  # type: ignore[attr-defined]
        else:
            out[event.client_id][3] = event.reasons  # type: ignore[attr-defined]
    conn.close()
    return {c: tuple(v) for c, v in out.items()}


# -- the hand-written loop -------------------------------------------------------------------------


class LoopCalendar:
    """The trading days' rollovers (microseconds), precomputed: a deal's day by bisection."""

    def __init__(self, cal: TradingCalendar) -> None:
        day, self.ends, self.days = FIRST - timedelta(days=10), [], []
        while day <= LAST + timedelta(days=10):
            if cal.is_trading_day(day):
                close = cal.session(day)[1]
                self.ends.append(int(close.timestamp() * 1_000_000))
                self.days.append(day)
            day += timedelta(days=1)

    def index(self, micros: int) -> int:
        return bisect.bisect_right(self.ends, micros)


def loop_rebuild(path: Path, horizon: int) -> tuple[dict[str, dict[int, list[Any]]], LoopCalendar]:
    """Per client and trading-day index: [trades, lots, volume USD, deposits, withdrawals,
    last trade micros, a deposit that day], from the same rows the read model reads."""
    lc = LoopCalendar(TradingCalendar())
    contract = {
        "EURUSD": Decimal(100_000),
        "GBPUSD": Decimal(100_000),
        "AUDUSD": Decimal(100_000),
        "XAUUSD": Decimal(100),
    }
    logins: dict[int, str] = {}
    wallets: dict[str, str] = {}
    held: dict[str, tuple[str, Decimal]] = {}
    days: dict[str, dict[int, list[Any]]] = {}
    marks: dict[int, tuple[str, int, Decimal, Decimal]] = {}
    bucket: list[Any] | None
    latest = -1
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT stream_id, event_type, data, recorded_at FROM fx_events WHERE event_type IN "
        "('DealsReceived', 'TradingAccountOpened', 'AccountOpened', 'TransferRecorded', "
        "'TransferResolved') ORDER BY position"
    )
    loads = json.loads
    for stream, etype, data, recorded in rows:
        body = loads(data)
        if etype == "DealsReceived":
            for row in body["items"]:
                ticket, change, login, action = row[3], row[1], row[4], row[5]
                old = marks.pop(ticket, None)
                if old is not None:
                    bucket = days[old[0]][old[1]]
                    bucket[0] -= 1
                    bucket[1] -= old[2]
                    bucket[2] -= old[3]
                if change == "deleted" or action > 1:
                    continue
                client = logins.get(login)
                if client is None:
                    continue
                micros = row[18]
                i = lc.index(micros)
                lots = Decimal(row[8])
                symbol = row[7][:6]
                size = contract.get(symbol)
                usd = lots * size * Decimal(row[10]) if size is not None else ZERO
                bucket = days.setdefault(client, {}).get(i)
                if bucket is None:
                    bucket = days[client][i] = [0, ZERO, ZERO, ZERO, ZERO, 0, False]
                bucket[0] += 1
                bucket[1] += lots
                bucket[2] += usd
                if micros > bucket[5]:
                    bucket[5] = micros
                marks[ticket] = (client, i, lots, usd)
                if i > latest:
                    latest = i
                    cutoff = lc.days[i] - timedelta(days=horizon)
                    first = bisect.bisect_left(lc.days, cutoff)
                    marks = {t: m for t, m in marks.items() if m[1] >= first}
        elif etype == "TransferRecorded":
            tid, amount = body["transfer_id"], Decimal(body["amount"].split(" ")[0])
            if body["pending"]:
                if tid.startswith("wd:") and body["debit_account"] in wallets:
                    held[tid] = (wallets[body["debit_account"]], amount)
            elif tid.startswith(("deposit:", "wire:")) and body["credit_account"] in wallets:
                client = wallets[body["credit_account"]]
                bucket = days.setdefault(client, {}).get(i := lc.index(recorded))
                if bucket is None:
                    bucket = days[client][i] = [0, ZERO, ZERO, ZERO, ZERO, 0, False]
                bucket[3] += amount
                bucket[6] = True
        elif etype == "TransferResolved":
            found = held.pop(stream.removeprefix("transfer-"), None)
            if found is not None and body["status"] == "posted_from_pending":
                client, _ = found
                bucket = days.setdefault(client, {}).get(i := lc.index(recorded))
                if bucket is None:
                    bucket = days[client][i] = [0, ZERO, ZERO, ZERO, ZERO, 0, False]
                bucket[4] += Decimal(body["posted"].split(" ")[0])
        elif etype == "AccountOpened":
            if body["purpose"] == "wallet":
                wallets[body["account_id"]] = body["owner"]
        elif etype == "TradingAccountOpened":
            logins[body["login"]] = body["client_id"]
    conn.close()
    return days, lc


def loop_reevaluate(
    path: Path, days: dict[str, dict[int, list[Any]]], lc: LoopCalendar, at: datetime
) -> dict[str, tuple[Any, ...]]:
    """The same decisions with plain dicts: tiers for March, RFM, churn; one row per event the
    SDK records, written to the same SQLite file in one transaction."""
    today = lc.index(int(at.timestamp() * 1_000_000))
    march = [i for i, d in enumerate(lc.days) if d.month == 3 and d.year == 2026]
    m_first, m_last = march[0], march[-1]
    recent_first = today - 9  # churn: the last 10 trading days
    base_first, base_last = recent_first - 60, recent_first - 1
    window_first = today - 89  # RFM: 90 trading days
    c_first = today - 19  # the current deposit cycle (20 days) and the three before it
    cycles = [(today - 20 * k - 19, today - 20 * k) for k in (1, 2, 3)]
    bal_first = recent_first - 250
    cuts_r, cuts_f = (5, 20, 45, 90), (1, 5, 15, 40)
    cuts_m = (Decimal(1), Decimal(1000), Decimal(5000), Decimal(25000))
    min_vol, half, drained = Decimal(100_000), Decimal("0.5"), Decimal("0.8")
    out: dict[str, tuple[Any, ...]] = {}
    rows: list[tuple[str, str, str]] = []
    for client in sorted(days):
        lots = trades = ZERO
        net_m = net_w = vol_r = vol_b = dep_c = net_b = net_r = ZERO
        dep_cycles = [ZERO, ZERO, ZERO]
        active_w = active_r = active_b = 0
        last_trade = last_dep = -1
        for i, b in days[client].items():
            if i > today:
                continue
            t, net = b[0], b[3] - b[4]
            if m_first <= i <= m_last:
                lots += b[1]
                trades += t
                net_m += net
            if i >= window_first:
                net_w += net
                active_w += t > 0
            if i >= recent_first:
                active_r += t > 0
                vol_r += b[2]
                net_r += net
            elif i >= base_first:
                active_b += t > 0
                vol_b += b[2]
            if bal_first <= i <= base_last:
                net_b += net
            if i >= c_first:
                dep_c += b[3]
            for k, (lo, hi) in enumerate(cycles):
                if lo <= i <= hi:
                    dep_cycles[k] += b[3]
            if t > 0 and i > last_trade:
                last_trade = i
            if b[6] and i > last_dep:
                last_dep = i
        # tiers
        net_m = net_m.quantize(CENT)
        tier = "bronze"
        if lots >= 10:
            tier = "silver"
        if lots >= 50 and (net_m >= 5000 or trades >= 40):
            tier = "gold"
        rows.append((client, "TierPeriodClosed", tier))
        rows.append((client, "TierChanged", tier))
        # RFM
        last = max(last_trade, last_dep)
        since = None if last < 0 else min(today - last, 91)
        r = 1 if since is None else 1 + sum(1 for p in cuts_r if since <= p)
        f = 1 + sum(1 for p in cuts_f if active_w >= p)
        m = 1 + sum(1 for p in cuts_m if net_w.quantize(CENT) >= p)
        if r >= 4:
            segment = "loyal" if f >= 4 else "potential"
        else:
            segment = "at_risk" if r >= 2 else "lost"
        # churn
        reasons: list[str] = []
        if active_b >= 5:
            if Decimal(active_r) / 10 / (Decimal(active_b) / 60) < half:
                reasons.append("frequency_drop")
            vb = vol_b.quantize(CENT)
            if vb >= min_vol and vb > 0 and vol_r.quantize(CENT) / 10 / (vb / 60) < half:
                reasons.append("volume_drop")
        if dep_c <= 0 and all(d > 0 for d in dep_cycles):
            reasons.append("deposits_stopped")
        held = net_b.quantize(CENT)
        trading = active_r > 0 and "frequency_drop" not in reasons  # profit taken, not leaving
        if (
            not trading
            and held >= 100
            and held > 0
            and held + net_r.quantize(CENT) <= held * (1 - drained)
        ):
            reasons.append("balance_drained")
        if reasons:
            rows.append((client, "ChurnWarningRaised", ",".join(reasons)))
        out[client] = (tier, f"{r}{f}{m}", segment, tuple(reasons))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS loop_decisions (client TEXT, kind TEXT, data TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO loop_decisions VALUES (?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.close()
    return out


# -- the run ------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # Linux: KB


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, help="default 100,000 (--quick: 1,000)")
    parser.add_argument("--deals", type=int, help="default 5,000,000 (--quick: 50,000)")
    parser.add_argument("--batch", type=int, default=1000, help="clients per unit of work")
    parser.add_argument("--horizon", type=int, default=5, help="correction horizon, days")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--no-cache", action="store_true", help="regenerate the input log")
    parser.add_argument("--profile", help="cProfile the re-evaluation into this file")
    parser.add_argument(
        "--tier-source", choices=("library", "cached"), default="library",
        help="cached: the adapter with its spans worked out once (not the library path)",
    )  # fmt: skip
    args = parser.parse_args()
    args.clients = args.clients or (1_000 if args.quick else 100_000)
    args.deals = args.deals or (50_000 if args.quick else 5_000_000)
    source, t_gen, cached = input_log(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "loyalty.sqlite"
        shutil.copyfile(source, work)
        conn = sqlite3.connect(work)
        events = conn.execute("SELECT count(*) FROM fx_events").fetchone()[0]
        conn.close()
        how = "cached input log" if cached else f"generated in {t_gen:.1f} s"
        print(
            f"{args.clients:,} clients, 90 days; input log: {events:,} events, "
            f"{source.stat().st_size / 1e6:,.0f} MB ({how}; not timed)"
        )
        print(f"tier source: {args.tier_source}; clients per unit of work: {args.batch:,}")
        at = TradingCalendar().session(LAST)[1] - TICK  # the last instant of 31 March
        gc.collect()
        # the loop first (its memory is freed before the SDK's is built)
        t_loop_build, (days, lc) = timed(loop_rebuild, work, args.horizon)
        deal_count = sum(b[0] for d in days.values() for b in d.values())
        gc.freeze()  # its per-day dicts are long-lived too: the same treatment as the SDK's
        t_loop_eval, loop_out = timed(loop_reevaluate, work, days, lc, at)
        gc.unfreeze()
        del days, lc
        gc.collect()
        sdk = Sdk(work, args.horizon, args.tier_source)
        t_sdk_build, _ = timed(sdk_rebuild, sdk)
        gc.freeze()  # the rebuilt read model is long-lived: out of the cyclic collector's way
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        t_sdk_eval, run = timed(sdk_reevaluate, sdk, at, args.batch)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        gc.unfreeze()
        sdk_out = sdk_decisions(sdk, run)
        held = len(sdk.activity._marks)  # (private: the per-deal marks the horizon keeps)
        sdk.store.close()
    n = len(sdk_out)
    t_tier, t_rfm, t_churn = run["times"]
    print(
        f"trade deals counted {deal_count:,}; clients {len(sdk_out):,}; "
        f"marks held after the rebuild {held:,} (horizon {args.horizon} days)"
    )
    print(f"\n{'':52}{'seconds':>9}{'clients/s':>12}")
    rows = (
        ("read-model rebuild: hand-written loop", t_loop_build),
        ("read-model rebuild: SDK ClientActivity", t_sdk_build),
        ("re-evaluation: hand-written loop", t_loop_eval),
        ("re-evaluation: SDK (tiers + RFM + churn)", t_sdk_eval),
        ("  tiers: close_period, committed", t_tier),
        ("  RFM: score_all", t_rfm),
        ("  churn: evaluate_all, committed", t_churn),
    )
    for label, seconds in rows:
        print(f"  {label:50}{seconds:9.2f}{n / seconds:12,.0f}")
    differ = [c for c in loop_out if loop_out[c] != sdk_out.get(c)]
    differ += [c for c in sdk_out if c not in loop_out]
    tiers = {t: sum(1 for v in sdk_out.values() if v[0] == t) for t in ("bronze", "silver", "gold")}
    print(f"\ntiers {tiers}; churn warnings {run['warned']:,}")
    verdict = "agree" if not differ else f"DISAGREE on {len(differ):,} clients, e.g. {differ[:3]}"
    print(f"decisions SDK vs loop: {verdict}")
    if differ:
        print(f"  SDK {sdk_out.get(differ[0])}\n  loop {loop_out.get(differ[0])}")
    ratio = t_loop_eval / t_sdk_eval
    rebuild_ratio = t_loop_build / t_sdk_build
    print(f"\nratio SDK / hand-written loop, rebuild (clients/s)        {rebuild_ratio:.3f}")
    print(f"ratio SDK / hand-written loop, re-evaluation (clients/s)  {ratio:.3f}")
    ok = ratio >= 0.25 and t_sdk_eval < 20
    print(
        f"target: re-evaluation >= 0.25 of the loop and under 20 s -> "
        f"{ratio:.3f}, {t_sdk_eval:.1f} s ({'met' if ok else 'NOT met'})"
    )
    print(f"peak RSS {peak_rss_mb():,.0f} MB")
    sys.exit(0 if not differ else 1)


if __name__ == "__main__":
    main()
