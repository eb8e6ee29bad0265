"""Loyalty points (issue 15, item 3): accrual by lots per symbol group, by net deposits and by
referral; lots spent and expired oldest first; a balance that never goes negative; redemption
as cashback through the ledger (in the same append as the points) or as a host reward;
reversal on a deleted deal or a charged-back deposit; idempotency; a second process on SQLite."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest

from fxcrm_core.access import DEFAULT_POLICY, AccessControl, Actor, Approvals, Role, RowScope
from fxcrm_core.access import register_events as register_access_events
from fxcrm_core.events import (
    EventCodec,
    EventRegistry,
    EventStore,
    Policy,
    PolicyError,
    PolicyRunner,
    Repository,
)
from fxcrm_core.events import register_events as register_core_events
from fxcrm_core.kernel import Currency, FixedClock, Money
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    IdempotencyConflictError,
    ValidationError,
)
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.ledger import register_events as register_ledger_events
from fxcrm_core.loyalty import (
    POINTS_POLICY,
    POINTS_UPSTREAM,
    CashbackRate,
    DepositRate,
    InsufficientPointsError,
    Points,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    PointsRepriced,
    PointsReversed,
    PointsRules,
    register_events,
)
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

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
SERVER = "mt5"
USD = Currency.of("USD")
GRANTS = {"points.redeem", "points_adjust.request", "points_adjust.approve"}
POLICY = DEFAULT_POLICY.with_role(
    Role.ADMIN, DEFAULT_POLICY.grants[Role.ADMIN] | GRANTS, RowScope.ALL
).with_role(Role.CLIENT, DEFAULT_POLICY.grants[Role.CLIENT] | {"points.redeem"}, RowScope.OWN)
ADMIN, OTHER_ADMIN = Actor.staff("7", Role.ADMIN), Actor.staff("8", Role.ADMIN)
RULES = PointsRules(
    per_lot={"majors": Decimal(10), "metals": Decimal(20)},
    symbol_groups={"EURUSD": "majors", "XAUUSD": "metals"},
    per_deposit=[DepositRate(Money.of(10, "USD"), Decimal(1))],
    per_referral=Decimal(50),
    validity=timedelta(days=30),
    cashback=CashbackRate(Decimal(100), Money.of(1, "USD")),
)
LOGINS = {(SERVER, 1001): "c1", (SERVER, 1002): "c2"}


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


class Feed:
    name = SERVER

    def __init__(self) -> None:
        self.items: list[FeedItem] = []

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        return [i for i in self.items if i.cursor > after_cursor][:limit]


class World:
    """A points service on a log, as one process builds it: the ledger, the deal feed and the
    points policy run by a PolicyRunner."""

    def __init__(
        self,
        store: EventStore | None = None,
        *,
        clock: FixedClock | None = None,
        rules: PointsRules = RULES,
        multiplier: Callable[[str, datetime], Decimal] | None = None,
        referrer: Callable[[str], str | None] | None = None,
        feed: Feed | None = None,
    ) -> None:
        self.clock = clock or FixedClock(T0)
        registry = EventRegistry()
        for register in (register_core_events, register_access_events, register_ledger_events,
                         register_trading_events, register_events):  # fmt: skip
            register(registry)
        self.repository = Repository(store or MemoryEventStore(self.clock), EventCodec(registry))
        self.access = AccessControl(POLICY)
        self.approvals = Approvals(self.repository, self.access)
        self.ledger = Ledger(self.repository, clock=self.clock)
        self.points = Points(
            self.repository, self.access, self.approvals, self.ledger, rules,
            client_of=lambda server, login: LOGINS.get((server, login)),
            referrer_of=referrer, multiplier=multiplier, clock=self.clock,
        )  # fmt: skip
        self.runner = PolicyRunner(
            self.repository, [Policy(POINTS_POLICY, POINTS_UPSTREAM, self.points.handle)]
        )
        self.feed = feed or Feed()
        self.ticket = 0

    # -- the outside world ----------------------------------------------------------------------
    def deal(
        self,
        lots: str,
        *,
        login: int = 1001,
        symbol: str = "EURUSD",
        at: datetime | None = None,
        closes: bool = True,
        ticket: int | None = None,
        change: DealChange = DealChange.ADDED,
    ) -> Deal:
        if ticket is None:
            self.ticket += 1
            ticket = self.ticket
        entry = DealEntry.OUT if closes else DealEntry.IN
        deal = Deal(
            SERVER, ticket, login, DealAction.SELL, entry, symbol, Decimal(lots),
            Decimal(lots) if closes else Decimal(0), Decimal("1.1"), ticket, ticket,
            usd(0), usd(0), usd(0), usd(0), at or self.clock.now(), timedelta(hours=2),
        )  # fmt: skip
        self.feed.items.append(FeedItem(len(self.feed.items) + 1, change, deal))
        return deal

    def change(self, deal: Deal, change: DealChange, lots: str | None = None) -> None:
        if lots is not None:
            import attrs

            deal = attrs.evolve(deal, volume=Decimal(lots), volume_closed=Decimal(lots))
        self.feed.items.append(FeedItem(len(self.feed.items) + 1, change, deal))

    def pull(self) -> None:
        # Deals are recorded once made: time passes up to the latest (never back).
        latest = max((i.deal.time for i in self.feed.items), default=self.clock.now())
        if latest > self.clock.now():
            self.clock.set(latest)
        DealFeeds(self.repository, clock=self.clock).pull(cast(TradingServer, self.feed))
        self.runner.run()

    def wallet(self, client_id: str) -> str:
        return self.points.money.wallet(client_id, USD)

    def deposit(self, deposit_id: str, client_id: str, amount: int | str) -> None:
        clearing = self.points.money.broker("psp_clearing", USD)
        self.ledger.transfer(
            TransferRequest(f"deposit:{deposit_id}", clearing, self.wallet(client_id), usd(amount))
        )
        self.runner.run()

    def chargeback(self, deposit_id: str, amount: int | None = None) -> None:
        self.ledger.reverse(
            f"deposit:{deposit_id}", f"chargeback:{deposit_id}",
            amount=None if amount is None else usd(amount),
        )  # fmt: skip
        self.runner.run()

    def withdraw(self, withdrawal_id: str, client_id: str, amount: int) -> None:
        clearing = self.points.money.broker("psp_clearing", USD)
        self.ledger.transfer(
            TransferRequest(f"wd:{withdrawal_id}", self.wallet(client_id), clearing,
                            usd(amount), pending=True)
        )  # fmt: skip
        self.ledger.post_pending(f"wd:{withdrawal_id}")
        self.runner.run()

    # -- reading --------------------------------------------------------------------------------
    def lots(self, client_id: str) -> list[tuple[str, Decimal]]:
        return [(lot.source, lot.remaining) for lot in self.points.account(client_id).lots]

    def balance(self, client_id: str) -> Decimal:
        return self.points.balance(client_id)


def trial_balance(world: World) -> Decimal:
    accounts = [world.wallet(c) for c in ("c1", "c2")] + [
        world.points.money.broker(p, USD) for p in ("loyalty", "psp_clearing")
    ]
    total = Decimal(0)
    for account_id in accounts:
        b = world.ledger.balance(account_id)
        total += b.credits_posted.amount - b.debits_posted.amount
    return total


# -- rules as data ------------------------------------------------------------------------------


def test_rules_refuse_a_symbol_in_a_group_without_points_and_two_rates_for_a_currency() -> None:
    with pytest.raises(ValidationError):
        PointsRules(per_lot={"majors": Decimal(10)}, symbol_groups={"EURUSD": "minors"})
    with pytest.raises(ValidationError):
        PointsRules(per_deposit=[DepositRate(usd(10), Decimal(1)), DepositRate(usd(5), Decimal(1))])
    with pytest.raises(ValidationError):
        PointsRules(per_lot={"majors": 10.0})
    with pytest.raises(ValidationError):
        CashbackRate(Decimal(0), usd(1))


def test_points_buy_whole_cents_only() -> None:
    rate = CashbackRate(Decimal(100), usd(1))
    assert rate.cashback(Decimal(250)) == usd("2.50")
    with pytest.raises(ValidationError):
        rate.cashback(Decimal("0.5"))


# -- earning ------------------------------------------------------------------------------------


def test_closed_deals_earn_per_lot_by_symbol_group_opening_and_unknown_ones_do_not() -> None:
    w = World()
    w.deal("1.5")  # majors: 15
    w.deal("0.5", symbol="XAUUSD")  # metals: 10
    w.deal("2", closes=False)  # opens a position: nothing
    w.deal("3", symbol="BTCUSD")  # no group, no default: nothing
    w.deal("1", login=9999)  # not a client's login
    w.pull()
    assert w.lots("c1") == [("deal:mt5:1", Decimal(15)), ("deal:mt5:2", Decimal(10))]
    assert w.balance("c1") == Decimal(25)


def test_the_tier_multiplier_scales_an_award_and_is_kept_with_it() -> None:
    w = World(multiplier=lambda client, at: Decimal("1.5"))
    w.deal("1")
    w.pull()
    assert w.balance("c1") == Decimal(15)
    earned = w.points.history("c1")[0].event
    assert isinstance(earned, PointsEarned)
    assert ("multiplier", "1.5") in earned.figures
    assert ("group", "majors") in earned.figures


def test_a_deal_replayed_earns_once() -> None:
    w = World()
    deal = w.deal("1")
    w.change(deal, DealChange.ADDED)  # the server sends the same deal again
    w.pull()
    w.change(deal, DealChange.UPDATED)  # an update that changes nothing
    w.pull()
    assert w.lots("c1") == [("deal:mt5:1", Decimal(10))]
    assert len(w.points.history("c1")) == 1


def test_an_update_re_prices_the_deal_up_and_down_taking_from_its_own_lot_first() -> None:
    w = World()
    deal = w.deal("2", at=T0)  # 20
    w.deal("1", at=T0 + timedelta(hours=1))  # 10, a younger lot
    w.pull()
    w.change(deal, DealChange.UPDATED, lots="3")
    w.pull()
    assert w.lots("c1") == [("deal:mt5:1", Decimal(30)), ("deal:mt5:2", Decimal(10))]
    w.change(deal, DealChange.UPDATED, lots="1")
    w.pull()
    assert w.lots("c1") == [("deal:mt5:1", Decimal(10)), ("deal:mt5:2", Decimal(10))]
    repriced = [r.event for r in w.points.history("c1") if isinstance(r.event, PointsRepriced)]
    assert [(e.points, e.added, e.taken) for e in repriced] == [
        (Decimal(30), Decimal(10), ()),
        (Decimal(10), Decimal(0), (("deal:mt5:1", Decimal(20)),)),
    ]


def test_net_deposits_earn_once_money_withdrawn_and_deposited_again_earns_nothing() -> None:
    w = World()
    w.deposit("d1", "c1", 1000)  # 100 points
    w.withdraw("w1", "c1", 600)  # net 400
    w.deposit("d2", "c1", 500)  # net 900, below the 1000 reached: nothing
    w.deposit("d3", "c1", 300)  # net 1200: 200 above the high earns 20
    assert w.lots("c1") == [("deposit:d1", Decimal(100)), ("deposit:d3", Decimal(20))]
    assert w.points.account("c1").net["USD"] == (Decimal(1200), Decimal(1200))


def test_a_referred_clients_first_deposit_earns_its_referrer_once() -> None:
    w = World(referrer=lambda client: "c2" if client == "c1" else None)
    w.deposit("d1", "c1", 100)
    w.deposit("d2", "c1", 100)
    assert w.lots("c2") == [("referral:c1", Decimal(50))]
    assert w.balance("c1") == Decimal(20)


# -- reversal -----------------------------------------------------------------------------------


def test_a_deleted_deal_reverses_its_points_taking_from_what_remains() -> None:
    w = World()
    first = w.deal("3", at=T0)  # 30
    w.deal("2", at=T0 + timedelta(hours=1))  # 20
    w.deal("1", at=T0 + timedelta(hours=2))  # 10
    w.pull()
    w.points.redeem(ADMIN, "c1", Decimal(25), request_id="r1")  # 25 of the first lot
    assert w.lots("c1") == [
        ("deal:mt5:1", Decimal(5)), ("deal:mt5:2", Decimal(20)), ("deal:mt5:3", Decimal(10)),
    ]  # fmt: skip
    w.change(first, DealChange.DELETED)
    w.pull()
    # 30 back: the 5 left on its own lot, then 20 and 5 from the oldest others.
    assert w.lots("c1") == [
        ("deal:mt5:1", Decimal(0)), ("deal:mt5:2", Decimal(0)), ("deal:mt5:3", Decimal(5)),
    ]  # fmt: skip
    reversed_ = w.points.history("c1")[-1].event
    assert isinstance(reversed_, PointsReversed)
    assert reversed_.reason == "deal_deleted"
    assert reversed_.taken == (
        ("deal:mt5:1", Decimal(5)), ("deal:mt5:2", Decimal(20)), ("deal:mt5:3", Decimal(5)),
    )  # fmt: skip
    assert reversed_.shortfall == 0
    # A deleted deal never earns again, whatever the feed sends after.
    w.change(first, DealChange.UPDATED)
    w.pull()
    assert w.balance("c1") == Decimal(5)


def test_a_reversal_larger_than_the_balance_takes_what_remains_and_records_the_shortfall() -> None:
    w = World()
    deal = w.deal("5")  # 50
    w.pull()
    w.points.redeem(ADMIN, "c1", Decimal(40), request_id="r1")
    w.change(deal, DealChange.DELETED)
    w.pull()
    assert w.balance("c1") == 0
    event = w.points.history("c1")[-1].event
    assert isinstance(event, PointsReversed)
    assert event.taken == (("deal:mt5:1", Decimal(10)),)
    assert event.shortfall == Decimal(40)
    assert w.points.account("c1").shortfall == Decimal(40)


def test_a_chargeback_reverses_the_deposits_points_and_its_referral_and_lowers_the_high() -> None:
    w = World(referrer=lambda client: "c2" if client == "c1" else None)
    w.deposit("d1", "c1", 500)  # 50, and 50 to c2
    w.chargeback("d1")
    assert w.balance("c1") == 0
    assert w.balance("c2") == 0
    assert w.points.account("c1").net["USD"] == (Decimal(0), Decimal(0))
    w.deposit("d2", "c1", 300)  # real money earns again
    assert w.balance("c1") == Decimal(30)


def test_a_partial_chargeback_takes_back_its_share() -> None:
    w = World()
    w.deposit("d1", "c1", 1000)  # 100
    w.chargeback("d1", 250)
    assert w.balance("c1") == Decimal(75)


# -- expiry -------------------------------------------------------------------------------------


def test_lots_are_spent_and_expire_oldest_first() -> None:
    w = World()
    w.deal("1", at=T0)  # 10, expires T0 + 30 days
    w.deal("2", at=T0 + timedelta(days=10))  # 20
    w.deal("4", at=T0 + timedelta(days=20))  # 40
    w.pull()
    w.clock.set(T0 + timedelta(days=21))
    w.points.redeem(ADMIN, "c1", Decimal(15), request_id="r1")  # all of the first, 5 of the 2nd
    assert [r for _, r in w.lots("c1")] == [Decimal(0), Decimal(15), Decimal(40)]
    # Before any expiry is recorded, points past their time are not spendable.
    assert w.points.balance("c1", T0 + timedelta(days=40)) == Decimal(40)
    w.clock.set(T0 + timedelta(days=40))
    assert w.points.expire(T0 + timedelta(days=40)) == 1
    assert w.points.expire(T0 + timedelta(days=40)) == 0  # idempotent
    expired = [r.event for r in w.points.history("c1") if isinstance(r.event, PointsExpired)]
    assert [e.taken for e in expired] == [(("deal:mt5:2", Decimal(15)),)]
    assert w.balance("c1") == Decimal(40)
    w.clock.set(T0 + timedelta(days=60))
    w.points.expire(T0 + timedelta(days=60))
    assert w.points.account("c1").balance == 0


def test_a_redemption_never_spends_points_past_their_time() -> None:
    w = World()
    w.deal("1", at=T0)
    w.deal("1", at=T0 + timedelta(days=10))
    w.pull()
    w.clock.set(T0 + timedelta(days=31))  # the first lot has expired, unrecorded
    with pytest.raises(InsufficientPointsError):
        w.points.redeem(ADMIN, "c1", Decimal(20), request_id="r1")
    result = w.points.redeem(ADMIN, "c1", Decimal(10), request_id="r2")
    assert result.cashback == usd("0.10")
    kinds = [type(r.event).__name__ for r in w.points.history("c1")]
    assert kinds[-2:] == ["PointsExpired", "PointsRedeemed"]  # one append
    assert w.points.history("c1")[-1].position == w.points.history("c1")[-2].position + 1


def test_a_deleted_deal_whose_lot_expired_takes_back_only_what_was_spent() -> None:
    w = World()
    deal = w.deal("3", at=T0)  # 30
    w.deal("5", at=T0 + timedelta(days=20))  # 50
    w.pull()
    w.points.redeem(ADMIN, "c1", Decimal(10), request_id="r1")  # 10 of the first lot
    w.clock.set(T0 + timedelta(days=31))
    w.points.expire(T0 + timedelta(days=31))  # the other 20 of it expire
    w.change(deal, DealChange.DELETED)
    w.pull()
    assert w.balance("c1") == Decimal(40)


# -- redemption through the ledger -------------------------------------------------------------


def test_a_redemption_posts_cashback_through_the_ledger_in_the_same_append() -> None:
    w = World()
    w.deal("50")  # 500 points
    w.pull()
    client = Actor.client("c1")
    result = w.points.redeem(client, "c1", Decimal(250), request_id="r1")
    assert (result.cashback, result.transfer_id) == (usd("2.50"), "points:c1:r1")
    assert w.ledger.balance(w.wallet("c1")).available_credit == usd("2.50")
    loyalty = w.ledger.balance(w.points.money.broker("loyalty", USD))
    assert loyalty.debits_posted == usd("2.50")
    assert trial_balance(w) == 0
    assert w.balance("c1") == Decimal(250)
    redeemed = next(r for r in w.points.history("c1") if isinstance(r.event, PointsRedeemed))
    transfer = w.repository.store.read_stream("transfer-points:c1:r1")[0]
    assert transfer.position < redeemed.position <= transfer.position + 3  # one append
    assert redeemed.metadata.actor == "client:c1"


def test_a_retried_redemption_posts_once_and_another_amount_under_its_id_is_refused() -> None:
    w = World()
    w.deal("50")
    w.pull()
    first = w.points.redeem(ADMIN, "c1", Decimal(100), request_id="r1")
    again = w.points.redeem(ADMIN, "c1", Decimal(100), request_id="r1")
    assert not first.replayed
    assert again.replayed
    assert again.cashback == first.cashback
    assert w.ledger.balance(w.wallet("c1")).available_credit == usd("1.00")
    assert w.balance("c1") == Decimal(400)
    with pytest.raises(IdempotencyConflictError):
        w.points.redeem(ADMIN, "c1", Decimal(200), request_id="r1")


def test_a_redemption_beyond_the_balance_writes_nothing() -> None:
    w = World()
    w.deal("1")
    w.pull()
    before = w.repository.store.last_position()
    with pytest.raises(InsufficientPointsError):
        w.points.redeem(ADMIN, "c1", Decimal(11), request_id="r1")
    assert w.repository.store.last_position() == before


def test_a_client_redeems_only_its_own_points() -> None:
    w = World()
    w.deal("1")
    w.pull()
    with pytest.raises(AccessDeniedError):
        w.points.redeem(Actor.client("c2"), "c1", Decimal(5), request_id="r1")
    with pytest.raises(AccessDeniedError):
        w.points.redeem(Actor.staff("9", Role.SUPPORT), "c1", Decimal(5), request_id="r1")


def test_a_reward_redemption_records_the_reward_for_the_host_and_moves_no_money() -> None:
    w = World()
    w.deal("10")
    w.pull()
    result = w.points.redeem_reward(ADMIN, "c1", Decimal(60), "mug-1", request_id="r1")
    assert result.reward_id == "mug-1"
    assert result.cashback is None
    assert w.points.redeem_reward(ADMIN, "c1", Decimal(60), "mug-1", request_id="r1").replayed
    assert w.balance("c1") == Decimal(40)
    assert w.repository.store.read_stream("transfer-points:c1:r1") == []


# -- adjustments through maker-checker ----------------------------------------------------------


def test_a_manual_adjustment_needs_a_second_person_and_a_taking_never_goes_negative() -> None:
    w = World()
    w.deal("1")
    w.pull()
    request = w.points.request_adjustment(ADMIN, "c1", Decimal(25), reason="goodwill")
    assert w.balance("c1") == Decimal(10)
    w.approvals.approve(OTHER_ADMIN, request)
    assert w.balance("c1") == Decimal(35)
    take = w.points.request_adjustment(ADMIN, "c1", Decimal(-50), reason="abuse")
    w.approvals.approve(OTHER_ADMIN, take)
    assert w.balance("c1") == 0
    assert w.points.account("c1").shortfall == Decimal(15)
    with pytest.raises(AccessDeniedError):
        w.points.request_adjustment(Actor.client("c1"), "c1", Decimal(5), reason="me")


# -- a restart, a second process ---------------------------------------------------------------


def test_a_second_process_on_one_sqlite_file_answers_the_same(tmp_path: Path) -> None:
    feed = Feed()
    # The SQLite store stamps events with the wall clock: the deals are from the last hour.
    now = datetime.now(UTC)
    clock = FixedClock(now)
    first = World(SqliteEventStore(tmp_path / "events.db"), feed=feed, clock=clock)
    deal = first.deal("3", at=now - timedelta(hours=1))
    first.deal("2", at=now - timedelta(minutes=30))
    first.pull()
    second = World(SqliteEventStore(tmp_path / "events.db"), feed=feed, clock=clock)
    second.ticket = first.ticket
    assert second.lots("c1") == first.lots("c1")
    second.points.redeem(ADMIN, "c1", Decimal(10), request_id="r1")
    # A retry of the same redemption in the first process posts nothing more.
    assert first.points.redeem(ADMIN, "c1", Decimal(10), request_id="r1").replayed
    first.change(deal, DealChange.DELETED)
    first.pull()
    second.runner.run()  # the policy already handled it: nothing twice
    third = World(SqliteEventStore(tmp_path / "events.db"), feed=feed, clock=clock)
    assert third.lots("c1") == first.lots("c1") == second.lots("c1")
    assert third.lots("c1") == [("deal:mt5:1", Decimal(0)), ("deal:mt5:2", Decimal(10))]
    assert third.ledger.balance(third.wallet("c1")).available_credit == usd("0.10")
    assert third.points.holders() == ["c1"]


def test_an_update_re_prices_with_the_multiplier_the_deal_earned_with() -> None:
    tier = {"multiplier": Decimal(2)}
    w = World(multiplier=lambda client, at: tier["multiplier"])
    deal = w.deal("1")
    w.change(deal, DealChange.UPDATED, lots="2")  # in the same batch as the add
    w.pull()
    assert w.lots("c1") == [("deal:mt5:1", Decimal(40))]
    tier["multiplier"] = Decimal(1)  # the client's tier fell since
    w.change(deal, DealChange.UPDATED, lots="3")
    w.pull()
    assert w.lots("c1") == [("deal:mt5:1", Decimal(60))]


def test_a_deal_re_priced_down_after_its_lot_expired_takes_back_only_what_was_spent() -> None:
    w = World()
    deal = w.deal("3", at=T0)  # 30
    w.deal("5", at=T0 + timedelta(days=20))  # 50
    w.pull()
    w.points.redeem(ADMIN, "c1", Decimal(10), request_id="r1")  # 10 of the first lot
    w.clock.set(T0 + timedelta(days=31))
    w.points.expire(T0 + timedelta(days=31))  # its other 20 expire
    w.clock.set(T0 + timedelta(days=32))
    w.change(deal, DealChange.UPDATED, lots="1")  # earns 10 now: the 10 spent stand
    w.pull()
    assert w.balance("c1") == Decimal(50)
    w.change(deal, DealChange.UPDATED, lots="0.5")  # earns 5: 5 of the spent 10 come back
    w.pull()
    assert w.balance("c1") == Decimal(45)
    w.change(deal, DealChange.DELETED)  # the other 5
    w.pull()
    assert w.balance("c1") == Decimal(40)


# -- hostile input ------------------------------------------------------------------------------


@pytest.mark.parametrize("points", [5.0, Decimal(-5), Decimal("0.001"), Decimal("NaN"), "5"])
def test_a_redemption_of_anything_but_points_to_two_decimals_is_refused(points: object) -> None:
    w = World()
    w.deal("1")
    w.pull()
    before = w.repository.store.last_position()
    with pytest.raises(ValidationError):
        w.points.redeem(ADMIN, "c1", points, request_id="r1")  # type: ignore[arg-type]
    assert w.repository.store.last_position() == before


def test_ids_with_control_characters_are_refused_without_echoing_them() -> None:
    w = World()
    with pytest.raises(ValidationError) as caught:
        w.points.redeem(ADMIN, "ana\x00lima", Decimal(1), request_id="r1")
    assert "ana" not in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        w.points.redeem(ADMIN, "c1", Decimal(1), request_id="secret\x07")
    assert "secret" not in str(caught.value)


def test_a_multiplier_answering_a_float_fails_the_policy_and_records_nothing() -> None:
    w = World(multiplier=lambda client, at: 1.5)  # type: ignore[arg-type, return-value]
    w.deal("1")
    with pytest.raises(PolicyError):
        w.pull()
    assert w.points.history("c1") == []
    assert w.runner.lag()[POINTS_POLICY] == 1  # it stays before the deals, to be retried


def test_rules_without_cashback_refuse_a_cashback_redemption() -> None:
    w = World(rules=PointsRules(per_lot={"majors": Decimal(10)}, default_group="majors"))
    w.deal("1", symbol="GBPJPY")  # the default group
    w.pull()
    assert w.balance("c1") == Decimal(10)
    with pytest.raises(ValidationError):
        w.points.redeem(ADMIN, "c1", Decimal(5), request_id="r1")


def test_two_processes_redeeming_at_once_never_spend_more_than_the_balance(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    clock = FixedClock(now)
    feed = Feed()
    first = World(SqliteEventStore(tmp_path / "events.db"), feed=feed, clock=clock)
    first.deal("5", at=now - timedelta(hours=1))  # 50 points
    first.pull()
    second = World(SqliteEventStore(tmp_path / "events.db"), feed=feed, clock=clock)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def redeem(world: World, request_id: str) -> None:
        barrier.wait()
        try:
            world.points.redeem(ADMIN, "c1", Decimal(30), request_id=request_id)
            outcomes.append("paid")
        except InsufficientPointsError:
            outcomes.append("refused")

    threads = [
        threading.Thread(target=redeem, args=(first, "r1")),
        threading.Thread(target=redeem, args=(second, "r2")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["paid", "refused"]
    third = World(SqliteEventStore(tmp_path / "events.db"), feed=feed, clock=clock)
    assert third.balance("c1") == Decimal(20)
    assert third.ledger.balance(third.wallet("c1")).net_credit == usd("0.30")
