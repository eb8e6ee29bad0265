"""A broker with cashback, bonus credit and IB ranks wired (on top of the tiers and points of
``loyalty_wired_world``), and a scripted month of trading: clients trade day by day while the
scheduler's ``end_of_day()`` closes days and pays. Shared by the further wired loyalty tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import attrs

from fxcrm_core.access import Actor, Role
from fxcrm_core.accounts import GroupRule, TradingAccount
from fxcrm_core.broker import Broker, BrokerOptions
from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.loyalty import (
    CalendarMonth,
    DowngradeRule,
    Measure,
    Threshold,
    Tier,
    TierProgramme,
    UpgradeTiming,
)
from fxcrm_core.loyalty.cashback import (
    CashbackAccount,
    CashbackDayFixed,
    CashbackPaid,
    CashbackPlan,
)
from fxcrm_core.trading import Deal, DealAction, DealChange, DealEntry, TradingServer
from tests import loyalty_wired_world as w
from tests.system_world import LEVEL_2, approve, deposit, register

ECN = "real\\ecn"  # a group the cashback plan excludes
FINANCE = Actor.staff("fin-1", Role.FINANCE)
IB = "ib-1"
#: The tier names of the IB rank programme and the network rank each gives.
IB_RANKS = {"base": 1, "silver": 2}
#: What the plan pays per lot: gold at 10 USD a lot (its own rate), else the tier's rate, else
#: half a dollar; nothing on the ECN group.
PLAN = CashbackPlan(
    "USD", per_symbol={"XAUUSD": w.usd(10)}, default_rate=w.usd("0.50"), excluded_groups={ECN}
)
#: The client tier programme's cashback per lot (``w.programme()``: bronze has none).
TIER_RATE = {"bronze": None, "silver": w.usd("1.00"), "gold": w.usd("2.00")}

FIRST, LAST = date(2026, 7, 1), date(2026, 8, 4)
GROUP_CHANGE_ON = date(2026, 7, 15)  # cy's account moves to the ECN group before that day's pull
GOLD_ON = date(2026, 7, 20)  # ana closes half a lot of gold too
BONUS_ON = date(2026, 7, 8)  # ana's bonus granted, then 250 USD back to the wallet
END = datetime(2026, 8, 5, 12, tzinfo=UTC)


def ib_programme(upgrade: UpgradeTiming = UpgradeTiming.NEXT_TRADING_DAY) -> TierProgramme:
    """IB ranks by calendar month: silver at 20 downline lots, decided at day closes."""
    return TierProgramme(
        "ib-ranks", 1, datetime(2026, 7, 1, tzinfo=UTC),
        [Tier("base"), Tier("silver", all_of=[Threshold(Measure.LOTS, Decimal(20))])],
        CalendarMonth(), upgrade, DowngradeRule(0),
    )  # fmt: skip


def options(
    clock: FixedClock,
    policies: Literal["inline", "worker"],
    *,
    approval: bool = False,
    server: TradingServer | None = None,
) -> BrokerOptions:
    """The wired world's options with cashback, IB ranks and an ECN group; ``server``: the
    trading server of an earlier broker (a restart: the simulated server keeps its accounts)."""
    found = w.options(clock, policies)
    if server is not None:
        found["trading_server"] = server
    found["groups"] = {
        w.GROUP: GroupRule(w.GROUP, "USD", 30, live=True),
        ECN: GroupRule(ECN, "USD", 30, live=True),
        w.DEMO_GROUP: GroupRule(w.DEMO_GROUP, "USD", 30, live=False),
    }
    found["cashback_plan"] = PLAN
    found["ib_ranks"] = IB_RANKS
    found["ib_ranks_approval"] = approval
    return found


def open_sqlite(
    path: Path,
    clock: FixedClock,
    policies: Literal["inline", "worker"],
    *,
    approval: bool = False,
    server: TradingServer | None = None,
) -> Broker:
    found = options(clock, policies, approval=approval, server=server)
    return Broker.sqlite(path, clock=clock, synchronous="NORMAL", **found)


@attrs.frozen
class Member:
    """A verified client with one USD trading account."""

    client_id: str
    login: int
    account_id: str


def onboard(broker: Broker, email: str, group: str = w.GROUP) -> Member:
    client_id = register(broker, email)
    approve(broker, client_id, *LEVEL_2)
    account_id = broker.accounts.open(Actor.client(client_id), client_id, group, 30)
    broker.run_policies()  # (a worker broker: the KYC level before the deposit is judged)
    login = broker.repository.get(TradingAccount, account_id).login
    return Member(client_id, login, account_id)


def deal(login: int, ticket: int, lots: Decimal, at: datetime, symbol: str = "EURUSD") -> Deal:
    return Deal(w.SERVER, ticket, login, DealAction.SELL, DealEntry.OUT, symbol, lots, lots,
                Decimal("1.1"), ticket, ticket, w.usd(0), w.usd(0), w.usd(0), w.usd(0), at,
                timedelta(hours=3))  # fmt: skip


@attrs.define
class Month:
    """What the scripted month did: the members, every deal made (client, day, symbol, lots,
    time), what each day's ``end_of_day()`` paid (the day it ran, client, day paid, amount) and
    burnt (the day it ran, account, amount), and the trading server (it outlives a restart)."""

    members: dict[str, Member]
    server: TradingServer = attrs.field(eq=False)
    deals: list[tuple[str, date, str, Decimal, datetime]] = attrs.field(factory=list)
    paid: list[tuple[date, str, date, Money]] = attrs.field(factory=list)
    burnt: list[tuple[date, str, Money]] = attrs.field(factory=list)


def run_month(broker: Broker, clock: FixedClock, *, worker: bool) -> Month:
    """Ana trades 1 lot a day (and half a lot of gold on GOLD_ON), ben 2 lots, cy 1 lot (its
    account moved to the ECN group on GROUP_CHANGE_ON); ben and cy came through the IB. Every
    trading day at noon the scheduler runs ``end_of_day()``, then the day's deals are pulled.
    A worker broker runs its policies only at onboarding and once at the end."""
    feed = w.Feed()
    clock.set(w.START)
    members = {n: onboard(broker, f"{n}.lima@example.com") for n in ("ana", "ben", "cy")}
    month = Month(members, broker.trading_server)
    ana, ben, cy = (month.members[n] for n in ("ana", "ben", "cy"))
    broker.tiers.record_programme(w.ADMIN, w.programme(), reason="the month's programme")
    assert broker.ib_ranks is not None
    broker.ib_network.register_ib(w.ADMIN, IB, None, w.START, reason="signed")
    for member in (ben, cy):
        broker.ib_network.attribute(w.ADMIN, member.client_id, IB, w.START, reason="referral")
    broker.ib_ranks.record_programme(w.ADMIN, ib_programme(), reason="IB ranks")
    for n, member in month.members.items():
        deposit(broker, member.client_id, "1000", f"psp-{n}")
    broker.transfers.move(
        Actor.client(ana.client_id), "in-ana", ana.account_id, w.usd(1000), to_trading=True
    )
    ticket = 0
    for day in w.trading_days(FIRST, LAST):
        clock.set(w.noon(day))
        done = broker.end_of_day()
        month.paid += [(day, p.client_id, p.trading_day, p.amount) for p in done["cashback_paid"]]
        month.burnt += [(day, b.account_id, b.amount) for b in done["bonus_burnt"]]
        if day == GROUP_CHANGE_ON:
            broker.account_changes.change_group(
                FINANCE, cy.account_id, ECN, request_id="cy-ecn", reason="moved to ECN"
            )
        if day == BONUS_ON:
            broker.bonus.grant(FINANCE, ana.account_id, w.usd(100), grant_id="welcome",
                               reason="welcome bonus")  # fmt: skip
            broker.transfers.move(
                Actor.client(ana.client_id), "out-ana", ana.account_id, w.usd(250),
                to_trading=False,
            )  # fmt: skip
        at = w.noon(day) - timedelta(hours=1)
        trades = [("ana", "EURUSD", Decimal(1)), ("ben", "EURUSD", Decimal(2)),
                  ("cy", "EURUSD", Decimal(1))]  # fmt: skip
        if day == GOLD_ON:
            trades.append(("ana", "XAUUSD", Decimal("0.5")))
        for name, symbol, lots in trades:
            ticket += 1
            feed.add(DealChange.ADDED, deal(month.members[name].login, ticket, lots, at, symbol))
            month.deals.append((month.members[name].client_id, day, symbol, lots, at))
        broker.feeds.pull(w.cast_feed(feed))
    clock.set(END)
    if worker:
        broker.close_trading_days()
        broker.run_policies()
    done = broker.end_of_day()
    month.paid += [
        (END.date(), p.client_id, p.trading_day, p.amount) for p in done["cashback_paid"]
    ]
    month.burnt += [(END.date(), b.account_id, b.amount) for b in done["bonus_burnt"]]
    return month


#: Instants the answers are read at.
INSTANTS = [
    datetime(2026, 7, 1, 12, tzinfo=UTC),
    datetime(2026, 7, 2, 12, tzinfo=UTC),
    datetime(2026, 7, 9, 12, tzinfo=UTC),
    datetime(2026, 7, 10, 12, tzinfo=UTC),
    datetime(2026, 7, 31, 20, 59, tzinfo=UTC),
    datetime(2026, 8, 4, 12, tzinfo=UTC),
]


def cashback_events(broker: Broker, client_id: str) -> list[Any]:
    """Every event of the client's cashback stream, oldest first (the aggregate forgets days
    past the plan's correction horizon; the log keeps them)."""
    stream_id = CashbackAccount.stream_id_for(client_id)
    decode = broker.repository.codec.decode
    return [decode(row).event for row in broker.store.read_stream(stream_id)]


def answers(broker: Broker, members: Mapping[str, Member]) -> dict[str, Any]:
    """What a host would ask of cashback, bonus, IB ranks and KPIs."""
    out: dict[str, Any] = {}
    for name, m in members.items():
        events = cashback_events(broker, m.client_id)
        out[f"{name} fixed"] = {
            e.trading_day: w.as_data(e) for e in events if isinstance(e, CashbackDayFixed)
        }
        out[f"{name} paid"] = {
            e.trading_day: w.as_data(e) for e in events if isinstance(e, CashbackPaid)
        }
        out[f"{name} paid total"] = broker.cashback.paid_total(m.client_id)
        out[f"{name} wallet"] = broker.ledger.balance(f"wallet:{m.client_id}:USD").net_credit
        bonus = broker.bonus.account(m.account_id)
        out[f"{name} bonus"] = (bonus.granted, bonus.burnt, bonus.credit, dict(bonus.burns))
    assert broker.ib_ranks is not None
    out["ib ranks"] = [broker.ib_network.rank_of(IB, t) for t in INSTANTS]
    out["ib decisions"] = [w.as_data(r.event) for r in broker.ib_ranks.history(IB)]
    kpis = broker.kpis()
    out["kpis"] = [kpis.month(2026, m) for m in (7, 8, 9)] + [kpis.quarter(2026, 3)]
    return out
