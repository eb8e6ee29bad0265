"""Adversarial review of issue 15 (activity, tiers, points, cashback, bonus, IB ranks, KPIs): each
test names the behaviour it demands and says, in a comment, the attack it makes. The tests that
fail show a defect in ``src/`` (see the review's report); the others pin a behaviour worth
keeping."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, AccessControl, Actor, Approvals, Role, RowScope
from fxcrm_core.access import register_events as access_events
from fxcrm_core.accounts import TradingAccount
from fxcrm_core.activity import Figure
from fxcrm_core.activity import Measure as ActivityMeasure
from fxcrm_core.broker import Broker
from fxcrm_core.commissions import PlanKind, RankSlices, Revenue, Rule, Schedule, ScheduleBook
from fxcrm_core.commissions.book import RebateEntriesRecorded
from fxcrm_core.events import EventCodec, EventRegistry, Policy, PolicyRunner, Repository
from fxcrm_core.events import register_events as core_events
from fxcrm_core.kernel import Currency, FixedClock, Money
from fxcrm_core.kernel.errors import CodecError, ConcurrencyError, FxCrmError
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.ledger import register_events as ledger_events
from fxcrm_core.loyalty import (
    POINTS_POLICY,
    POINTS_UPSTREAM,
    BaselineChurnModel,
    Benefits,
    CalendarMonth,
    CashbackRate,
    Combination,
    DepositRate,
    DowngradeRule,
    InsufficientPointsError,
    Measure,
    Points,
    PointsRules,
    Threshold,
    Tier,
    TierPeriodClosed,
    TierProgramme,
    Tiers,
    UpgradeTiming,
    programme_from_data,
    programme_to_data,
)
from fxcrm_core.loyalty import register_events as loyalty_events
from fxcrm_core.privacy import MemoryKeyStore
from fxcrm_core.stores import MemoryEventStore
from fxcrm_core.trading import (
    AccountState,
    BalanceOperation,
    DealChange,
    SimulatedTradingServer,
    TradingServerError,
)
from fxcrm_core.trading import register_events as trading_events
from tests import loyalty_more_world as m
from tests import loyalty_wired_world as w
from tests.system_world import deposit

ADMIN_1 = Actor.staff("adm-1", Role.ADMIN)
ADMIN_2 = Actor.staff("adm-2", Role.ADMIN)


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


# -- a points service on its own (the docs' recipe) ---------------------------------------------


@attrs.define
class PointsWorld:
    repository: Repository
    ledger: Ledger
    points: Points
    approvals: Approvals
    runner: PolicyRunner
    clearing: str
    wallet: str

    def deposit(self, transfer_id: str, amount: str) -> None:
        self.ledger.transfer(TransferRequest(transfer_id, self.clearing, self.wallet, usd(amount)))
        self.runner.run()

    def log_size(self) -> int:
        return self.repository.store.last_position()


def points_world() -> PointsWorld:
    rules = PointsRules(
        per_lot={"majors": Decimal(10)},
        symbol_groups={"EURUSD": "majors"},
        per_deposit=[DepositRate(usd(10), Decimal(1))],
        validity=timedelta(days=30),
        cashback=CashbackRate(Decimal(100), usd(1)),
    )
    registry = EventRegistry()
    for register in (core_events, access_events, ledger_events, trading_events, loyalty_events):
        register(registry)
    clock = FixedClock(datetime(2026, 3, 2, 12, tzinfo=UTC))
    repository = Repository(MemoryEventStore(clock), EventCodec(registry))
    grants = DEFAULT_POLICY.with_role(
        Role.CLIENT, DEFAULT_POLICY.grants[Role.CLIENT] | {"points.redeem"}, RowScope.OWN
    )
    grants = grants.with_role(
        Role.ADMIN,
        grants.grants[Role.ADMIN] | {"points_adjust.request", "points_adjust.approve"},
        RowScope.ALL,
    )
    access = AccessControl(grants)
    ledger = Ledger(repository, clock=clock)
    approvals = Approvals(repository, access)
    points = Points(
        repository, access, approvals, ledger, rules, client_of=lambda s, n: None, clock=clock
    )
    runner = PolicyRunner(repository, [Policy(POINTS_POLICY, POINTS_UPSTREAM, points.handle)])
    wallet = points.money.wallet("c1", Currency.of("USD"))
    clearing = points.money.broker("psp_clearing", Currency.of("USD"))
    return PointsWorld(repository, ledger, points, approvals, runner, clearing, wallet)


def test_a_deposit_charged_back_in_two_parts_takes_back_all_its_points() -> None:
    # Attack: deposit 1,000 USD (100 points), then have the PSP charge it back in two halves
    # (the ledger allows partial reversals). The first half marks the lot "reversed", so the
    # second half takes nothing back: the client keeps 50 points for money it never left.
    world = points_world()
    world.deposit("deposit:d1", "1000")
    assert world.points.balance("c1") == Decimal(100)
    world.ledger.reverse("deposit:d1", "cb-1", amount=usd(500))
    world.runner.run()
    world.ledger.reverse("deposit:d1", "cb-2", amount=usd(500))
    world.runner.run()
    assert world.ledger.balance(world.wallet).net_credit == usd(0)
    assert world.points.balance("c1") == Decimal(0)


def test_a_redemption_retried_with_the_same_amount_written_differently_is_replayed() -> None:
    # Attack (a client's app retrying): the first call sent Decimal("10"), the retry after a
    # timeout sends Decimal("10.00") - the same 10 points. The retry is refused as a conflict
    # because the request digest compares the Decimal's text, not its value.
    world = points_world()
    world.deposit("deposit:d1", "1000")
    me = Actor.client("c1")
    first = world.points.redeem(me, "c1", Decimal("10"), request_id="r-1")
    again = world.points.redeem(me, "c1", Decimal("10.00"), request_id="r-1")
    assert again.replayed
    assert again.cashback == first.cashback
    assert world.points.balance("c1") == Decimal(90)


@pytest.mark.parametrize("points", ["1E+26", "1E+30", "1E+5000"])
def test_redeeming_an_absurd_number_of_points_is_a_typed_refusal_that_writes_nothing(
    points: str,
) -> None:
    # Attack: a client posts a huge (finite) number of points to redeem. The two-decimal check
    # (quantize) overflows the decimal context: decimal.InvalidOperation escapes instead of
    # a typed refusal (InsufficientPointsError or ValidationError).
    world = points_world()
    world.deposit("deposit:d1", "1000")
    before = world.log_size()
    me = Actor.client("c1")
    with pytest.raises(FxCrmError):
        world.points.redeem(me, "c1", Decimal(points), request_id="big")
    with pytest.raises(FxCrmError):
        world.points.redeem_reward(me, "c1", Decimal(points), "tv", request_id="big-2")
    assert world.log_size() == before


@pytest.mark.parametrize("points", ["1E+5000", "-1E+5000", "1E+40"])
def test_an_absurd_points_adjustment_is_a_typed_refusal_that_writes_nothing(points: str) -> None:
    # Attack: a staff member (or a compromised back-office form) asks for an adjustment of a
    # huge number of points; the rule's check quantizes it and decimal.InvalidOperation
    # escapes from request_adjustment instead of the "within the limit" ValidationError.
    world = points_world()
    before = world.log_size()
    with pytest.raises(FxCrmError):
        world.points.request_adjustment(ADMIN_1, "c1", Decimal(points), reason="typo")
    assert world.log_size() == before


def test_a_client_cannot_redeem_another_clients_points() -> None:
    # Attack: client c2 redeems c1's points into c1's wallet (or any side effect). Pinned.
    world = points_world()
    world.deposit("deposit:d1", "1000")
    before = world.log_size()
    with pytest.raises(FxCrmError):
        world.points.redeem(Actor.client("c2"), "c1", Decimal(10), request_id="steal")
    assert world.log_size() == before
    assert world.points.balance("c1") == Decimal(100)


# -- KPIs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "args"),
    [("month", (0, 1)), ("month", (10000, 1)), ("month", (9999, 12)), ("quarter", (9999, 4))],
)
def test_kpis_of_a_period_outside_the_calendar_are_a_typed_refusal(
    call: str, args: tuple[int, int]
) -> None:
    # Attack: a dashboard's year field set to 0, 10000 or the last month of 9999: a builtin
    # ValueError ("year 10000 is out of range") escapes from date() in kpis.month/quarter.
    broker = Broker.in_memory(clock=FixedClock(datetime(2026, 7, 1, 12, tzinfo=UTC)))
    kpis = broker.kpis()
    with pytest.raises(FxCrmError):
        getattr(kpis, call)(*args)


# -- bonus credit -------------------------------------------------------------------------------


def memory_broker(clock: FixedClock) -> Broker:
    return Broker(
        MemoryEventStore(clock), keystore=MemoryKeyStore(), clock=clock,
        **m.options(clock, "inline"),
    )  # fmt: skip


def test_a_bonus_burn_is_decided_on_the_balance_before_the_withdrawal() -> None:
    # Attack: 1,000 USD in the trading account and 100 USD of bonus credit; the client takes
    # 500 back to the wallet (the pro-rata rule burns 100 x 500 / 1,000 = 50) and, before the
    # scheduler's end_of_day() settles, moves 9,000 in. settle() reads the balance the server
    # shows *now* (9,500 + 500 noted) and burns 5: the client keeps 45 USD of credit it should
    # have lost, and a scheduler running at another time decides another burn.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    ana = m.onboard(broker, "ana.lima@example.com")
    deposit(broker, ana.client_id, "10000", "psp-a")
    me = Actor.client(ana.client_id)
    broker.transfers.move(me, "in-1", ana.account_id, usd(1000), to_trading=True)
    broker.bonus.grant(m.FINANCE, ana.account_id, usd(100), grant_id="welcome", reason="welcome")
    broker.transfers.move(me, "out-1", ana.account_id, usd(500), to_trading=False)
    broker.transfers.move(me, "in-2", ana.account_id, usd(9000), to_trading=True)
    (burnt,) = broker.bonus.settle()
    assert burnt.amount == usd(50)
    assert broker.bonus.account(ana.account_id).credit == Decimal(50)


# -- cashback -----------------------------------------------------------------------------------


def test_a_deal_closed_in_an_excluded_group_never_earns_cashback() -> None:
    # Attack: the account trades 10 lots in the excluded ECN group (the plan pays nothing
    # there); the next day a dealer moves it back to the standard group and the server sends
    # an update of the old deal (a commission correction, same lots). The update finds no
    # counted entry, reads the group *now* and counts the deal as new: 5 USD of cashback is
    # paid for a deal the plan excluded.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    cy = m.onboard(broker, "cy.lima@example.com")
    broker.account_changes.change_group(
        m.FINANCE, cy.account_id, m.ECN, request_id="to-ecn", reason="ecn"
    )
    feed = w.Feed()
    day = date(2026, 7, 1)
    clock.set(w.noon(day))
    closing = m.deal(cy.login, 1, Decimal(10), w.noon(day) - timedelta(hours=1))
    feed.add(DealChange.ADDED, closing)
    broker.feeds.pull(w.cast_feed(feed))
    clock.set(w.noon(date(2026, 7, 2)))
    broker.end_of_day()
    broker.account_changes.change_group(
        m.FINANCE, cy.account_id, w.GROUP, request_id="to-std", reason="standard"
    )
    feed.add(DealChange.UPDATED, closing)
    broker.feeds.pull(w.cast_feed(feed))
    for later in (date(2026, 7, 3), date(2026, 7, 6)):
        clock.set(w.noon(later))
        broker.end_of_day()
    assert broker.policy_failure is None
    assert broker.cashback.paid_total(cy.client_id) == usd(0)


# -- tier programmes ----------------------------------------------------------------------------


def test_a_tier_multiplier_that_cannot_be_computed_never_stops_the_points_policy() -> None:
    # Attack (an admin's typo, or a hostile programme file): the base tier's points
    # multiplier is 1E+999999999 - finite, so Benefits accepts it and record_programme records
    # it. The first closing deal then overflows the decimal context inside the points policy:
    # the loyalty-points policy stops for every client (PolicyError: Overflow). Either the
    # programme is refused when recorded, or the policy keeps running.
    clock = FixedClock(w.START)
    broker = Broker(
        MemoryEventStore(clock), keystore=MemoryKeyStore(), clock=clock,
        **w.options(clock, "inline"),
    )  # fmt: skip
    ana = m.onboard(broker, "ana.lima@example.com")
    good = w.programme()
    huge = Benefits(points_multiplier=Decimal("1E+999999999"))
    bad = attrs.evolve(good, tiers=(Tier("bronze", benefits=huge), *good.tiers[1:]))
    try:
        broker.tiers.record_programme(w.ADMIN, bad, reason="the new quarter")
    except FxCrmError:
        return  # refused when recorded: nothing can stop the policy later
    feed = w.Feed()
    clock.set(w.noon(date(2026, 7, 1)))
    feed.add(DealChange.ADDED, m.deal(ana.login, 1, Decimal(1), w.noon(date(2026, 7, 1))))
    broker.feeds.pull(w.cast_feed(feed))
    assert broker.policy_failure is None


def programme_data() -> dict[str, Any]:
    return programme_to_data(w.programme())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["tiers"][1].__setitem__("points_multiplier", 1.1),
        lambda d: d["tiers"][1].__setitem__("commission_discount", 0.1),
        lambda d: d["tiers"][1].__setitem__("all_of", [["lots", 10.5]]),
    ],
    ids=["multiplier", "discount", "threshold"],
)
def test_a_stored_programme_with_a_float_is_refused(
    mutate: Callable[[dict[str, Any]], None],
) -> None:
    # Attack: a programme file edited by hand (or produced by a JSON tool) carries floats;
    # programme_from_data turns 1.1 into Decimal('1.100000000000000088817841970012523...')
    # silently instead of refusing it (the SDK has FloatNotAllowedError for that).
    data = programme_data()
    mutate(data)
    with pytest.raises(FxCrmError):
        programme_from_data(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["lots", "month", "rolling", "1E+999999", "NaN", "-1", "2026-07-01"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*at, i))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_programme_from_data_answers_a_programme_or_a_codec_error_and_round_trips(
    data: st.DataObject,
) -> None:
    # Fuzz: replace any part of a valid stored programme with arbitrary JSON. The answer is a
    # programme that round-trips through JSON, or a CodecError - never a builtin exception.
    stored: Any = programme_data()
    paths = _paths(stored)
    for _ in range(data.draw(st.integers(0, 3))):
        path = data.draw(st.sampled_from(paths))
        value = data.draw(_json)
        if not path:
            stored = value
            break
        target = stored
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        paths = _paths(stored) if isinstance(stored, dict) else [()]
    try:
        programme = programme_from_data(copy.deepcopy(stored))
    except CodecError:
        return  # (any other exception, builtin or not, fails the test)
    assert isinstance(programme, TierProgramme)
    again = programme_from_data(json.loads(json.dumps(programme_to_data(programme))))
    assert again == programme


# -- tiers: decisions ahead of the clock --------------------------------------------------------


class LotsActivity:
    """A memory activity source: (client, time, lots) rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, datetime, Decimal]] = []

    def measure(self, client_id: str, measure: Measure, start: datetime, end: datetime) -> Decimal:
        rows = [n for c, t, n in self.rows if c == client_id and start <= t < end]
        return sum(rows, Decimal(0)) if measure is Measure.LOTS else Decimal(0)


def tiers_world() -> tuple[Tiers, LotsActivity, FixedClock]:
    """A monthly programme from 1 July 2026: silver at 10 lots, no grace."""
    registry = EventRegistry()
    for register in (core_events, access_events, loyalty_events):
        register(registry)
    clock = FixedClock(datetime(2026, 6, 30, tzinfo=UTC))
    repository = Repository(MemoryEventStore(clock), EventCodec(registry))
    grants = DEFAULT_POLICY.with_role(
        Role.ADMIN, DEFAULT_POLICY.grants[Role.ADMIN] | {"tier.programme"}, RowScope.ALL
    )
    access = AccessControl(grants)
    activity = LotsActivity()
    tiers = Tiers(
        repository, access, Approvals(repository, access), activity, programme="vip", clock=clock
    )
    programme = TierProgramme(
        "vip", 1, datetime(2026, 7, 1, tzinfo=UTC),
        [Tier("bronze"), Tier("silver", all_of=[Threshold(Measure.LOTS, Decimal(10))])],
        CalendarMonth(), UpgradeTiming.AT_ONCE, DowngradeRule(0), Combination.CURRENT_PERIOD,
    )  # fmt: skip
    tiers.record_programme(ADMIN_1, programme, reason="the VIP programme")
    return tiers, activity, clock


def test_a_period_that_has_not_ended_by_the_clock_is_not_closed() -> None:
    # Attack (a backfill script, a host's scheduler with a wrong date, or anyone calling the
    # public close_period): on 2 July, close_period(3 August) closes *July* on its first 5
    # lots. The close is recorded as final (idempotent), it moves last_decided to 31 July, so
    # the client's 10 more lots on 20 July upgrade nothing (decisions go forward) and the real
    # close at 31 July records nothing: a client with 15 lots in July stays bronze.
    tiers, activity, clock = tiers_world()
    clock.set(datetime(2026, 7, 2, 12, tzinfo=UTC))
    activity.rows.append(("c1", datetime(2026, 7, 2, 11, tzinfo=UTC), Decimal(5)))
    with contextlib.suppress(FxCrmError):  # refusing is fine
        tiers.close_period(datetime(2026, 8, 3, 12, tzinfo=UTC), ["c1"])
    clock.set(datetime(2026, 7, 20, 12, tzinfo=UTC))
    activity.rows.append(("c1", datetime(2026, 7, 20, 11, tzinfo=UTC), Decimal(10)))
    tiers.evaluate("c1", clock.now())
    clock.set(datetime(2026, 7, 31, 21, 5, tzinfo=UTC))
    tiers.close_period(clock.now(), ["c1"])
    assert tiers.tier("c1", datetime(2026, 7, 31, 20, tzinfo=UTC)) == "silver"
    closed = [r.event for r in tiers.history("c1") if isinstance(r.event, TierPeriodClosed)]
    assert [(e.period, {m_: v for _, m_, v in e.figures}["lots"]) for e in closed] == [
        ("2026-07", "15")
    ]


def test_an_evaluation_dated_after_the_clock_does_not_freeze_the_clients_tier() -> None:
    # Attack: Tiers.evaluate is public and takes any instant; evaluate(c2, 2030) records a
    # decision dated 2030 (last_decided), and every later evaluation "before the last
    # decision" records nothing: c2 reaching 12 lots now is never upgraded until 2030.
    tiers, activity, clock = tiers_world()
    clock.set(datetime(2026, 7, 2, 12, tzinfo=UTC))
    with contextlib.suppress(FxCrmError):  # refusing is fine
        tiers.evaluate("c2", datetime(2030, 1, 1, tzinfo=UTC))
    activity.rows.append(("c2", datetime(2026, 7, 2, 11, tzinfo=UTC), Decimal(12)))
    tiers.evaluate("c2", clock.now())
    assert tiers.tier("c2", clock.now()) == "silver"


# -- IB ranks: inline and late worker -----------------------------------------------------------


def ib_rank_history(policies: Literal["inline", "worker"]) -> list[tuple[int, datetime]]:
    """Ben (under the IB) closes 25 lots on 1 July; on 2 July end_of_day() closes 1 July (the
    rules make the IB silver from that close) and an admin then sets rank 1 by hand from now.
    A worker broker runs its policies only after the hand-set rank."""
    clock = FixedClock(w.START)
    broker = Broker(
        MemoryEventStore(clock), keystore=MemoryKeyStore(), clock=clock,
        **m.options(clock, policies),
    )  # fmt: skip
    ben = m.onboard(broker, "ben.lima@example.com")
    assert broker.ib_ranks is not None
    broker.ib_network.register_ib(w.ADMIN, m.IB, None, w.START, reason="signed")
    broker.ib_network.attribute(w.ADMIN, ben.client_id, m.IB, w.START, reason="referral")
    broker.ib_ranks.record_programme(w.ADMIN, m.ib_programme(), reason="IB ranks")
    broker.run_policies()
    feed = w.Feed()
    day = date(2026, 7, 1)
    clock.set(w.noon(day))
    feed.add(DealChange.ADDED, m.deal(ben.login, 1, Decimal(25), w.noon(day) - timedelta(hours=1)))
    broker.feeds.pull(w.cast_feed(feed))
    clock.set(w.noon(date(2026, 7, 2)))
    broker.end_of_day()
    if policies == "worker":
        # The rules' decision at the close comes first: a rank by hand waits for it.
        with pytest.raises(ConcurrencyError):
            broker.ib_network.change_rank(w.ADMIN, m.IB, 1, clock.now(), reason="by hand")
        broker.run_policies()
    broker.ib_network.change_rank(w.ADMIN, m.IB, 1, clock.now(), reason="by hand")
    broker.run_policies()
    assert broker.policy_failure is None
    return [(r.event.rank, r.event.effective_at) for r in broker.ib_network.rank_history(m.IB)]


def test_a_late_worker_records_the_same_ib_rank_changes_as_an_inline_broker() -> None:
    # Attack (a worker that runs its policies late, as docs/loyalty.md allows): the rules'
    # decision at the 1 July close is turned into a rank change by IbRanks.handle, which
    # checks it against the IB tree as it stands *when the policy runs*. Inline, the IB holds
    # rank 2 from 1 July 21:00 until the hand-set rank; the late worker finds the hand-set
    # rank already there and drops the decision: deals of that night are paid at rank 0 by
    # one deployment and rank 2 by the other.
    assert ib_rank_history("worker") == ib_rank_history("inline")


def test_a_grant_retried_after_a_crash_with_another_amount_never_records_more_than_credited() -> (
    None
):
    # Attack (a crash between the server call and the append, then a retry that is not the
    # same): the server credited 100 under bonus:<account>:grant:welcome, the process died
    # before BonusGranted was appended, and the retry asks for 1,000 with the same grant id.
    # grant() asks the server only *whether* the key was applied and records 1,000 granted:
    # the log and the server disagree by 900 (the server itself would refuse the key reused
    # for another amount).
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    ana = m.onboard(broker, "ana.lima@example.com")
    deposit(broker, ana.client_id, "1000", "psp-a")
    me = Actor.client(ana.client_id)
    broker.transfers.move(me, "in-1", ana.account_id, usd(1000), to_trading=True)
    key = f"bonus:{ana.account_id}:grant:welcome"
    broker.trading_server.balance_operation(
        ana.login,
        BalanceOperation.CREDIT_IN,
        usd(100),
        comment="bonus welcome",
        idempotency_key=key,
    )  # fmt: skip  (the crashed attempt's call)
    with contextlib.suppress(FxCrmError):  # refusing the retry is fine
        broker.bonus.grant(m.FINANCE, ana.account_id, usd(1000), grant_id="welcome", reason="r")
    server_credit = broker.trading_server.account_state(ana.login).credit
    assert broker.bonus.account(ana.account_id).granted in (Decimal(0), server_credit.amount)


def test_an_activity_window_of_absurd_length_is_a_typed_refusal() -> None:
    # Attack: a report asks for the last 10,000,000 trading days: the read model walks back
    # day by day past the year 1 and an OverflowError escapes (after ~3.6 million steps).
    broker = Broker.in_memory(clock=FixedClock(datetime(2026, 7, 1, 12, tzinfo=UTC)))
    with pytest.raises(FxCrmError):
        broker.activity.window("c1", ActivityMeasure.LOTS, days=10_000_000)


def test_a_fund_flow_statement_asked_without_an_actor_is_a_typed_refusal() -> None:
    # Attack: a host passes the client id where the actor goes; an AttributeError ('str' has no
    # attribute 'roles') escapes from the access check instead of a typed refusal.
    broker = Broker.in_memory(clock=FixedClock(datetime(2026, 7, 1, 12, tzinfo=UTC)))
    start, end = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    with pytest.raises(FxCrmError):
        broker.fund_flows.statement(cast(Actor, "c1"), "c1", start, end)


def test_a_deal_counted_before_the_account_moved_to_an_excluded_group_keeps_its_rate() -> None:
    # Attack (the mirror of the above): 10 lots counted at 0.50 USD on 1 July in the standard
    # group (5 USD paid on 2 July); the account then moves to the ECN group and the server
    # re-sends the old deal (same lots). cashback.md says "an updated deal keeps the rate it
    # was counted at", but the exclusion is read first, at the update: the deal is re-counted
    # at nothing and 5 USD is clawed back from the client's next cashback.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    cy = m.onboard(broker, "cy.lima@example.com")
    feed = w.Feed()
    day = date(2026, 7, 1)
    clock.set(w.noon(day))
    closing = m.deal(cy.login, 1, Decimal(10), w.noon(day) - timedelta(hours=1))
    feed.add(DealChange.ADDED, closing)
    broker.feeds.pull(w.cast_feed(feed))
    clock.set(w.noon(date(2026, 7, 2)))
    broker.end_of_day()
    broker.account_changes.change_group(
        m.FINANCE, cy.account_id, m.ECN, request_id="to-ecn", reason="ecn"
    )
    feed.add(DealChange.UPDATED, closing)
    broker.feeds.pull(w.cast_feed(feed))
    for later in (date(2026, 7, 3), date(2026, 7, 6), date(2026, 7, 7)):
        clock.set(w.noon(later))
        broker.end_of_day()
    assert broker.policy_failure is None
    account = broker.cashback.account(cy.client_id)
    assert account.deals[closing.key].amount == Decimal("5.00")
    assert account.carry >= 0


def test_with_rank_approval_no_single_person_changes_an_ib_rank() -> None:
    # Attack: the broker runs IB ranks with ib_ranks_approval=True (each rank change needs a
    # second person: ranks decide the rank-slice commission). An admin alone still sets any
    # rank from now on with ib_network.change_rank (permission ib.rank): the maker-checker
    # that request_rank offers is bypassed.
    clock = FixedClock(w.START)
    broker = Broker(
        MemoryEventStore(clock), keystore=MemoryKeyStore(), clock=clock,
        **m.options(clock, "inline", approval=True),
    )  # fmt: skip
    broker.ib_network.register_ib(w.ADMIN, m.IB, None, w.START, reason="signed")
    with contextlib.suppress(FxCrmError):
        broker.ib_network.change_rank(w.ADMIN, m.IB, 5, w.START, reason="a friend")
    assert broker.ib_network.rank_of(m.IB, w.START + timedelta(days=1)) == 0


def test_two_processes_redeeming_the_same_points_spend_them_once(tmp_path: Path) -> None:
    # Attack: the client fires two redemptions of 60 of its 100 points at two broker
    # processes over one SQLite file (different request ids), and retries the first at the
    # second process. Pinned: 60 points are spent once, 0.60 USD paid once, the other refused.
    path = tmp_path / "broker.sqlite"
    clock = FixedClock(w.START)
    first = w.open_sqlite(path, clock, "inline")
    try:
        client_id, _ = w.onboard(first, "ana.lima@example.com")
        deposit(first, client_id, "1000", "psp-a")
        second = w.open_sqlite(path, clock, "inline")
        try:
            me = Actor.client(client_id)
            assert first.points.balance(client_id) == Decimal(100)
            done = first.points.redeem(me, client_id, Decimal(60), request_id="r-1")
            assert done.cashback == usd("0.60")
            again = second.points.redeem(me, client_id, Decimal(60), request_id="r-1")
            assert again.replayed
            with pytest.raises(InsufficientPointsError):
                second.points.redeem(me, client_id, Decimal(60), request_id="r-2")
            wallet = f"wallet:{client_id}:USD"
            for broker in (first, second):
                assert broker.points.balance(client_id) == Decimal(40)
                assert broker.ledger.balance(wallet).net_credit == usd(1000) + usd("0.60")
        finally:
            second.close()
    finally:
        first.close()


def test_a_deal_made_before_the_month_end_rollover_and_pulled_after_it_counts_for_that_month() -> (
    None
):
    # Attack (a race of the host's two scheduled jobs, no malice needed): 9 lots on 30 July,
    # the tenth at 16:59 New York on 31 July. The scheduler's end_of_day() runs at 17:01 and
    # closes July (its tier figures: 9 lots) before the next pull_deals() records the tenth
    # lot. The late deal is evaluated in August's period (it is July's activity), July is
    # never re-closed: a client with 10 lots in July stays bronze, though the activity read
    # model says 10 (cashback, by contrast, carries late deals as adjustments).
    clock = FixedClock(w.START)
    broker = Broker(
        MemoryEventStore(clock), keystore=MemoryKeyStore(), clock=clock,
        **w.options(clock, "inline"),
    )  # fmt: skip
    ana = m.onboard(broker, "ana.lima@example.com")
    broker.tiers.record_programme(w.ADMIN, w.programme(), reason="the programme")
    feed = w.Feed()
    clock.set(datetime(2026, 7, 30, 12, tzinfo=UTC))
    feed.add(
        DealChange.ADDED, m.deal(ana.login, 1, Decimal(9), datetime(2026, 7, 30, 11, tzinfo=UTC))
    )
    broker.feeds.pull(w.cast_feed(feed))
    feed.add(
        DealChange.ADDED,
        m.deal(ana.login, 2, Decimal(1), datetime(2026, 7, 31, 20, 59, tzinfo=UTC)),
    )
    clock.set(datetime(2026, 7, 31, 21, 1, tzinfo=UTC))
    assert broker.end_of_day()["closed"] == [date(2026, 7, 31)]
    broker.feeds.pull(w.cast_feed(feed))
    clock.set(datetime(2026, 8, 3, 12, tzinfo=UTC))
    broker.end_of_day()
    assert broker.policy_failure is None
    july = broker.activity.window(ana.client_id, ActivityMeasure.LOTS, days=1,
                                  at=datetime(2026, 7, 31, 20, 59, tzinfo=UTC))  # fmt: skip
    assert july.value == Decimal(1)  # the read model counts it for 31 July
    assert broker.tiers.tier(ana.client_id, datetime(2026, 8, 3, tzinfo=UTC)) == "silver"


@pytest.mark.parametrize("maker", ["adm-1", None], ids=["text", "none"])
@pytest.mark.parametrize("call", ["tier_override", "ib_rank", "points_adjust"])
def test_a_request_without_an_actor_is_a_typed_refusal_that_writes_nothing(
    call: str, maker: object
) -> None:
    # Attack: a host (or a fuzzed API layer) passes an id or None where the maker goes. The
    # loyalty request methods hand it to Approvals unchecked and an AttributeError ("'str'
    # object has no attribute 'roles'") escapes instead of a typed refusal.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    broker.tiers.record_programme(w.ADMIN, w.programme(), reason="the programme")
    broker.ib_network.register_ib(w.ADMIN, m.IB, None, w.START, reason="signed")
    clock.set(datetime(2026, 7, 2, 12, tzinfo=UTC))
    assert broker.ib_ranks is not None
    ib_ranks = broker.ib_ranks
    actor = cast(Actor, maker)
    later = datetime(2026, 7, 20, tzinfo=UTC)
    requests: dict[str, Callable[[], object]] = {
        "tier_override": lambda: broker.tiers.request_override(actor, "c1", "gold", later),
        "ib_rank": lambda: ib_ranks.request_rank(actor, m.IB, 2, later, reason="r"),
        "points_adjust": lambda: broker.points.request_adjustment(
            actor, "c1", Decimal(10), reason="r"
        ),
    }
    before = broker.store.last_position()
    with pytest.raises(FxCrmError):
        requests[call]()
    assert broker.store.last_position() == before


# -- churn --------------------------------------------------------------------------------------


class DayBook:
    """A memory ActivityFigures: per client and trading day, the measures' values."""

    def __init__(self) -> None:
        self.days: dict[str, dict[date, dict[ActivityMeasure, Decimal]]] = {}

    def add(self, client: str, day: date, measure: ActivityMeasure, value: Decimal) -> None:
        row = self.days.setdefault(client, {}).setdefault(day, {})
        row[measure] = row.get(measure, Decimal(0)) + value

    def clients(self) -> list[str]:
        return sorted(self.days)

    def window(
        self, client_id: str, measure: ActivityMeasure, *, days: int, at: datetime
    ) -> Figure:
        last = first = w.CAL.trading_day(at)
        while days > 1:
            first -= timedelta(days=1)
            days -= w.CAL.is_trading_day(first)
        rows = [r for d, r in self.days.get(client_id, {}).items() if first <= d <= last]
        if measure is ActivityMeasure.ACTIVE_DAYS:
            return Figure(measure, Decimal(sum(1 for r in rows if r.get(ActivityMeasure.TRADES))))
        if measure is ActivityMeasure.NET_DEPOSITS:
            zero = Decimal(0)
            ins = sum((r.get(ActivityMeasure.DEPOSITS, zero) for r in rows), zero)
            outs = sum((r.get(ActivityMeasure.WITHDRAWALS, zero) for r in rows), zero)
            return Figure(measure, ins - outs)
        return Figure(measure, sum((r.get(measure, Decimal(0)) for r in rows), Decimal(0)))

    def last_trade(self, client_id: str) -> datetime | None:
        return None

    def last_deposit(self, client_id: str) -> datetime | None:
        return None


def test_a_steady_trader_who_takes_its_profits_out_gets_no_churn_warning() -> None:
    # Attack on "a steady client never does": ana deposited 5,000 USD in January and has
    # traded 2 lots (250,000 USD) every single trading day, to the last one; this week she
    # withdraws 5,000 USD (her profits: the log holds no P&L). The model reads net deposits
    # as her balance: 5,000 "held", -5,000 in the recent window, "drained" 100%, and the
    # broker's steadiest trader gets a churn warning on this signal alone.
    book = DayBook()
    sessions = list(w.trading_days(date(2025, 7, 1), date(2026, 7, 31)))
    book.add("ana", sessions[-140], ActivityMeasure.DEPOSITS, Decimal(5000))
    for day in sessions:
        book.add("ana", day, ActivityMeasure.TRADES, Decimal(4))
        book.add("ana", day, ActivityMeasure.LOTS, Decimal(2))
        book.add("ana", day, ActivityMeasure.VOLUME_USD, Decimal(250_000))
    book.add("ana", sessions[-3], ActivityMeasure.WITHDRAWALS, Decimal(5000))
    at = w.noon(sessions[-1])
    found = BaselineChurnModel().assess("ana", at, book)
    assert found is None, found.reasons if found else None


def test_closing_a_cashback_day_that_has_not_ended_is_refused_and_stops_nothing() -> None:
    # Attack (a host's back-fill script with a typo, or anyone calling the public close_day):
    # close_day(31 December) on 1 July moves the book's last closed day to December. Every
    # real day close until then is "already closed" and fixes nothing: the deals of July are
    # counted as late adjustments that no close ever fixes, and no cashback is paid for months.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    ana = m.onboard(broker, "ana.lima@example.com")
    clock.set(w.noon(date(2026, 7, 1)))
    with contextlib.suppress(FxCrmError):  # refusing is fine
        broker.cashback.close_day(date(2026, 12, 31))
    feed = w.Feed()
    feed.add(DealChange.ADDED, m.deal(ana.login, 1, Decimal(10), w.noon(date(2026, 7, 1))))
    broker.feeds.pull(w.cast_feed(feed))
    for day in (date(2026, 7, 2), date(2026, 7, 3)):
        clock.set(w.noon(day))
        broker.end_of_day()
    assert broker.policy_failure is None
    assert broker.cashback.paid_total(ana.client_id) == usd(5)  # 10 lots at 0.50 USD


def test_expiring_points_at_an_instant_after_the_clock_takes_no_live_points() -> None:
    # Attack (a scheduler with a wrong date, or anyone calling the public expire): on 2 March
    # expire(2030) records the expiry of every lot due by 2030 - points that are live today
    # and can never come back: the client's 100 points are gone.
    world = points_world()
    world.deposit("deposit:d1", "1000")
    with contextlib.suppress(FxCrmError):  # refusing is fine
        world.points.expire(datetime(2030, 1, 1, tzinfo=UTC))
    assert world.points.balance("c1") == Decimal(100)


def test_trading_on_a_demo_account_earns_no_cashback_points_or_tier() -> None:
    # Attack: the account is in a demo group (GroupRule live=False: play money, KYC level 1
    # is enough to open one). Nothing in loyalty (nor in the activity read model) looks at
    # the account's live flag: 40 lots of play money make the client gold at once and are paid
    # 80 USD of real cashback into the wallet (withdrawable), and earn points redeemable for
    # cash.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    ana = m.onboard(broker, "ana.lima@example.com", w.DEMO_GROUP)  # play money
    assert not broker.repository.get(TradingAccount, ana.account_id).live
    broker.tiers.record_programme(w.ADMIN, w.programme(), reason="the programme")
    feed = w.Feed()
    clock.set(w.noon(date(2026, 7, 1)))
    feed.add(DealChange.ADDED, m.deal(ana.login, 1, Decimal(40), w.noon(date(2026, 7, 1))))
    broker.feeds.pull(w.cast_feed(feed))
    for day in (date(2026, 7, 2), date(2026, 7, 3)):
        clock.set(w.noon(day))
        broker.end_of_day()
    assert broker.policy_failure is None
    assert broker.cashback.paid_total(ana.client_id) == usd(0)
    assert broker.points.balance(ana.client_id) == Decimal(0)
    assert broker.tiers.tier(ana.client_id, clock.now()) == "bronze"


class FlakyServer(SimulatedTradingServer):
    """A simulated server that cannot answer for the logins in ``broken`` (an account archived
    on the server, a login moved to another server)."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(w.SERVER, seed=1, clock=clock)
        self.broken: set[int] = set()

    def account_state(self, login: int) -> AccountState:
        if login in self.broken:
            raise TradingServerError("the server does not know that login")
        return super().account_state(login)


def test_one_account_the_server_cannot_answer_for_stops_no_other_accounts_bonus_burn() -> None:
    # Attack (a poison account): two clients hold a bonus and both take money out. The server
    # no longer answers for the first account (archived on the server). Bonus.settle() goes
    # through the holders in id order and the first TradingServerError ends it, and with it
    # end_of_day(): the other account's pro-rata burn (and every check_equity) never happens,
    # day after day, while its client keeps withdrawing.
    clock = FixedClock(w.START)
    server = FlakyServer(clock)
    broker = Broker(
        MemoryEventStore(clock), keystore=MemoryKeyStore(), clock=clock,
        **m.options(clock, "inline", server=server),
    )  # fmt: skip
    members = [m.onboard(broker, f"{n}.lima@example.com") for n in ("ana", "ben")]
    for n, member in enumerate(members):
        deposit(broker, member.client_id, "1000", f"psp-{n}")
        me = Actor.client(member.client_id)
        broker.transfers.move(me, f"in-{n}", member.account_id, usd(1000), to_trading=True)
        broker.bonus.grant(m.FINANCE, member.account_id, usd(100), grant_id="w", reason="bonus")
        broker.transfers.move(me, f"out-{n}", member.account_id, usd(500), to_trading=False)
    poison, good = sorted(members, key=lambda member: member.account_id)
    server.broken.add(poison.login)
    for day in (date(2026, 7, 1), date(2026, 7, 2)):
        clock.set(w.noon(day))
        with contextlib.suppress(FxCrmError):
            broker.end_of_day()
    assert broker.bonus.account(good.account_id).burnt == Decimal(50)


def test_a_rank_decided_at_a_day_close_pays_every_deal_after_its_effective_time_alike() -> None:
    # Attack on "the rank-slice strategy reads the rank for deals after the change": the IB
    # programme makes the IB rank 2 from the 1 July rollover (17:00 New York, 21:00 UTC), but
    # the rank is recorded only when end_of_day() runs the day close, at 21:05. A deal at
    # 21:01, pulled at 21:02, was paid at rank 0 (nothing), one at 21:06 at rank 2 (3 USD):
    # two deals after the same effective time, paid differently by when the scheduler ran (a
    # rank recorded effective in the past; a late worker would pay more deals at rank 0).
    clock = FixedClock(w.START)
    found = m.options(clock, "inline")
    book = ScheduleBook()
    book.add(
        Schedule("std", 1, w.START, Currency.of("USD"), default=Rule(PlanKind.PER_LOT, usd(3)),
                 revenue=Revenue.uncapped())
    )  # fmt: skip
    found["schedules"] = book
    found["distribution"] = RankSlices({1: usd(1), 2: usd(2)})
    broker = Broker(MemoryEventStore(clock), keystore=MemoryKeyStore(), clock=clock, **found)
    ben = m.onboard(broker, "ben.lima@example.com")
    assert broker.ib_ranks is not None
    broker.ib_network.register_ib(w.ADMIN, m.IB, None, w.START, reason="signed")
    broker.ib_network.attribute(w.ADMIN, ben.client_id, m.IB, w.START, reason="referral")
    broker.ib_ranks.record_programme(w.ADMIN, m.ib_programme(), reason="IB ranks")
    broker.record_configuration()
    feed = w.Feed()
    made = {
        1: datetime(2026, 7, 1, 11, tzinfo=UTC),  # 25 lots: the IB's downline reaches silver
        2: datetime(2026, 7, 1, 21, 1, tzinfo=UTC),
        3: datetime(2026, 7, 1, 21, 6, tzinfo=UTC),
    }
    for ticket, pulled in ((1, made[1] + timedelta(hours=1)), (2, made[2] + timedelta(minutes=1))):
        clock.set(pulled)
        lots = Decimal(25) if ticket == 1 else Decimal(1)
        feed.add(DealChange.ADDED, m.deal(ben.login, ticket, lots, made[ticket]))
        broker.feeds.pull(w.cast_feed(feed))
    clock.set(datetime(2026, 7, 1, 21, 5, tzinfo=UTC))
    assert broker.end_of_day()["closed"] == [date(2026, 7, 1)]
    clock.set(made[3] + timedelta(minutes=1))
    feed.add(DealChange.ADDED, m.deal(ben.login, 3, Decimal(1), made[3]))
    broker.feeds.pull(w.cast_feed(feed))
    assert broker.policy_failure is None
    ((rank, effective),) = [
        (r.event.rank, r.event.effective_at) for r in broker.ib_network.rank_history(m.IB)
    ]
    assert rank == 2
    assert effective <= made[2] < made[3]  # both deals after the rank's effective time
    paid: dict[int, Decimal] = {}
    for row in broker.store.read_all(after_position=0, limit=1_000_000):
        event = broker.repository.codec.decode(row).event
        if isinstance(event, RebateEntriesRecorded):
            for entry in event.entries:
                paid[entry.ticket] = paid.get(entry.ticket, Decimal(0)) + entry.amount.amount
    assert paid.get(2, Decimal(0)) == paid[3]


def test_a_points_balance_at_a_past_instant_holds_no_points_earned_later() -> None:
    # Attack (a month-end points statement, an auditor's question): the client earned its
    # 100 points on 2 March at noon; balance(c1, 1 March) answers 100, because a lot counts as
    # "live" at any instant before its expiry, whenever it was earned.
    world = points_world()
    world.deposit("deposit:d1", "1000")
    assert world.points.balance("c1") == Decimal(100)
    assert world.points.balance("c1", datetime(2026, 3, 1, tzinfo=UTC)) == Decimal(0)
