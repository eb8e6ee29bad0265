"""A broker with one verified client, a USD trading account and a scripted deal feed, for the
activity tests: deals are written exactly as a test needs them (time, lots, price, commission)
and reach the log through the broker's own DealFeeds, like a server's feed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fxcrm_core.access import Actor, Role
from fxcrm_core.accounts import GroupRule, TradingAccount
from fxcrm_core.activity import ClientActivity, FundFlows
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.commissions import PlanKind, Rule, Schedule, ScheduleBook
from fxcrm_core.fx import Direction, Pricing
from fxcrm_core.kernel import Currency, ExchangeRate, FixedClock, Money, RateTable
from fxcrm_core.payments import FeePolicy, InstrumentKind, PaymentLimits
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.trading import (
    Deal,
    DealAction,
    DealChange,
    DealEntry,
    FeedItem,
    SimulatedTradingServer,
)

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)  # a Monday, 08:00 in New York (EDT since 8 March)
SERVER = "mt5-live"
FINANCE, CHECKER = Actor.staff("fin-1", Role.FINANCE), Actor.staff("fin-2", Role.FINANCE)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
KEYRING = MasterKeyring({"m1": bytes(range(32))}, "m1")
USD, EUR = Currency.of("USD"), Currency.of("EUR")


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def schedules() -> ScheduleBook:
    """The IB earns 2.00 USD a lot."""
    book = ScheduleBook()
    book.add(
        Schedule("std", 1, T0 - timedelta(days=60), USD,
                 default=Rule(PlanKind.PER_LOT, usd("2.00")), allow_above_revenue=True)
    )  # fmt: skip
    return book


def settings(market: RateTable) -> dict[str, Any]:
    return {
        "schedules": schedules(),
        "keyring": KEYRING,
        "payment_limits": PaymentLimits([usd(100_000), Money.of(100_000, "EUR")]),
        "withdrawal_fees": FeePolicy({"USD": usd(2)}),
        "rates": market,
        "groups": {"real\\usd": GroupRule("real\\usd", "USD", 100, live=True)},
    }


class ScriptedFeed:
    """The deal feed of ``SERVER`` as a test writes it (the port's ``deal_feed`` only). Its
    cursors start far past the simulated server's own, so the server's items (balance deals)
    can be pulled first."""

    name = SERVER
    first = 1_000_000

    def __init__(self) -> None:
        self.items: list[FeedItem] = []

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        return [i for i in self.items if i.cursor > after_cursor][:limit]

    def add(self, change: DealChange, deal: Deal) -> None:
        self.items.append(FeedItem(self.first + len(self.items), change, deal))


class World:
    """Ana, verified to level 3, with a live USD account, 1,000 USD deposited on ``T0``,
    EUR/USD at 1.0800 and an IBAN to withdraw to."""

    def __init__(self, path: Path | None = None) -> None:
        self.clock = FixedClock(T0)
        self.market = RateTable([ExchangeRate.of("EUR", "USD", "1.0800", "lp", T0)])
        self.server = SimulatedTradingServer(SERVER, seed=1, clock=self.clock)
        self.path = path
        self.broker = self.open()
        self.feed = ScriptedFeed()
        self.activity, self.flows = self.read_models(self.broker)
        self.ticket = 1000
        self.setup()

    def open(self) -> Broker:
        """The broker (on ``path``, another one on the same file each call: a new process)."""
        if self.path is None:
            return Broker.in_memory(
                clock=self.clock, trading_server=self.server, **settings(self.market)
            )
        return Broker.sqlite(
            self.path, clock=self.clock, identity_key=b"x" * 32, trading_server=self.server,
            **settings(self.market),
        )  # fmt: skip

    def read_models(self, broker: Broker) -> tuple[ClientActivity, FundFlows]:
        activity = ClientActivity(
            broker.projections, broker.calendar, rates=self.market, clock=self.clock
        )
        return activity, FundFlows(broker.ledger, broker.access, activity)

    def setup(self) -> None:
        b = self.broker
        assert b.clients is not None
        assert b.accounts is not None
        self.cid = b.clients.register(
            Actor.system("portal", Role.PORTAL),
            Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", "ana@example.com"),
        )
        self.me = Actor.client(self.cid)
        for kind, kwargs in (
            ("passport", {"expires_on": date(2030, 1, 1)}),
            ("proof_of_address", {}),
            ("selfie", {}),
            ("source_of_funds", {}),
        ):
            doc = b.kyc.submit(self.me, self.cid, kind, "f", **kwargs)  # type: ignore[arg-type]
            b.kyc.approve(OFFICER, doc)
        admin = Actor.staff("admin-1", "admin")
        start = T0 - timedelta(days=60)
        b.ib_network.register_ib(admin, "ib-1", None, start, reason="signed")
        b.ib_network.attribute(admin, self.cid, "ib-1", start, reason="referral link")
        self.account_id = b.accounts.open(self.me, self.cid, "real\\usd", 30)
        self.login = b.repository.get(TradingAccount, self.account_id).login
        self.iban = b.withdrawals.add_instrument(
            self.me, self.cid, InstrumentKind.IBAN, "DE89370400440532013000"
        )
        b.withdrawals.verify_instrument(FINANCE, self.iban)
        change = b.fx_rates.set_pricing(
            FINANCE, "EUR", "USD", Direction.CONVERSION, Pricing.pips(20), reason="launch"
        )
        if change.approval_id is not None:
            b.approvals.approve(CHECKER, change.approval_id)

    # -- money ----------------------------------------------------------------------------------
    def deposit(self, amount: str, ref: str) -> str:
        deposits = self.broker.deposits
        dep = deposits.initiate(self.me, self.cid, usd(amount), psp="acq", method="card")
        deposits.psp_confirmed(dep, ref, usd(amount))
        return dep

    def withdraw(self, amount: str, *, pay: bool = True) -> str:
        b = self.broker
        wd = b.withdrawals.request(self.me, self.cid, self.iban, usd(amount))
        approval = b.withdrawals.get(wd).approval_id
        assert approval is not None
        b.approvals.approve(FINANCE, approval)
        if pay:
            b.withdrawals.paid(wd, f"payout-{wd}")
        return wd

    # -- deals ----------------------------------------------------------------------------------
    def trade(
        self,
        at: datetime,
        lots: str = "1",
        *,
        symbol: str = "EURUSD",
        price: str = "1.08000",
        commission: str = "-7.00",
        login: int | None = None,
        closes: Deal | None = None,
    ) -> Deal:
        """A buy of ``lots`` at ``at``; ``closes``: a sell closing that deal's position."""
        self.ticket += 1
        action, entry = DealAction.BUY, DealEntry.IN
        position, closed = self.ticket, Decimal(0)
        if closes is not None:
            action, entry = DealAction.SELL, DealEntry.OUT
            position, closed = closes.position_id, Decimal(lots)
        deal = Deal(
            SERVER, self.ticket, login or self.login, action, entry, symbol,
            Decimal(lots), closed, Decimal(price), position, self.ticket,
            usd(commission), usd(0), usd(0), usd(0), at, timedelta(hours=2),
        )  # fmt: skip
        self.feed.add(DealChange.ADDED, deal)
        return deal

    def change(self, deal: Deal, change: DealChange) -> None:
        self.feed.add(change, deal)

    def pull(self) -> int:
        # The feed records deals stamped no later than a day after the clock: time passes up
        # to the latest deal (the clock never goes back).
        latest = max((i.deal.time for i in self.feed.items), default=self.clock.now())
        if latest > self.clock.now():
            self.clock.set(latest)
        self.broker.record_configuration()
        return self.broker.feeds.pull(self.feed)  # type: ignore[arg-type]
