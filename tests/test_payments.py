"""Money between wallets and trading accounts through the port; reconciliation finds every
difference the simulated server is made to have."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.accounts import GroupRule, TradingAccount
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.kernel import Currency, FixedClock, Money
from fxcrm_core.ledger import ExceedsLimitError, TransferRequest
from fxcrm_core.payments import FindingKind, MoneyAccounts, reconcile
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.trading import BalanceOperation, SimulatedTradingServer, TradingServerError

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
USD = Currency.of("USD")


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


class World:
    def __init__(self) -> None:
        clock = FixedClock(T0)
        self.server = SimulatedTradingServer("mt5-live", seed=3, clock=clock)
        self.broker = Broker.in_memory(
            clock=clock,
            keyring=MasterKeyring.generate(),
            trading_server=self.server,
            groups={"demo\\usd": GroupRule("demo\\usd", "USD", 500, live=False)},
        )
        b = self.broker
        assert b.clients is not None
        assert b.accounts is not None
        assert b.transfers is not None
        self.transfers = b.transfers
        self.cid = b.clients.register(
            Actor.system("portal", Role.PORTAL),
            Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", "ana@example.com"),
        )
        self.me = Actor.client(self.cid)
        self.account_id = b.accounts.open(self.me, self.cid, "demo\\usd", 30)
        self.login = b.repository.get(TradingAccount, self.account_id).login
        money = MoneyAccounts(b.ledger)
        self.wallet = money.wallet(self.cid, USD)
        psp = money.broker("psp_clearing", USD)
        b.ledger.transfer(TransferRequest("psp:1", psp, self.wallet, usd(1000)))

    def move(self, request_id: str, amount: str, *, to_trading: bool = True) -> int:
        return self.transfers.move(
            self.me, request_id, self.account_id, usd(amount), to_trading=to_trading
        ).deal_ticket


def test_to_and_from_the_trading_account() -> None:
    w = World()
    ticket = w.move("r1", "300")
    assert w.broker.ledger.balance(w.wallet).net_credit == usd(700)
    assert w.server.account_state(w.login).balance == usd(300)
    deal = w.server.deal(ticket)
    assert deal is not None
    assert deal.profit == usd(300)
    w.move("r2", "120", to_trading=False)
    assert w.broker.ledger.balance(w.wallet).net_credit == usd(820)
    assert w.server.account_state(w.login).balance == usd(180)


def test_a_retried_request_moves_the_money_once() -> None:
    w = World()
    first = w.move("r1", "300")
    again = w.move("r1", "300")
    assert first == again
    assert w.server.account_state(w.login).balance == usd(300)
    assert w.broker.ledger.balance(w.wallet).net_credit == usd(700)


def test_refusals_leave_both_sides_unchanged() -> None:
    w = World()
    with pytest.raises(ExceedsLimitError):
        w.move("too-much", "1000.01")
    feed_before = len(w.server.deal_feed(limit=10_000))
    w.move("r1", "100")
    # The server holds 100; a dealer already took 50 out by hand: asking for 100 back fails.
    w.server.balance_operation(
        w.login, BalanceOperation.WITHDRAWAL, usd(50), comment="dealer", idempotency_key="x"
    )
    with pytest.raises(TradingServerError):
        w.move("r2", "100", to_trading=False)
    assert w.broker.ledger.balance(w.wallet).net_credit == usd(900)
    assert w.broker.ledger.balance(w.wallet).available_credit == usd(900)  # hold voided
    assert len(w.server.deal_feed(limit=10_000)) == feed_before + 2


def test_reconciliation_reports_every_difference() -> None:
    w = World()
    tickets = [w.move(f"r{n}", "100") for n in range(4)]
    b = w.broker
    assert reconcile(b.store, b.codec, w.server, [w.login]) == []
    w.server.inject_update(tickets[0], usd(90))  # a dealer "fixed" an amount
    w.server.inject_delete(tickets[1])  # and deleted a deal
    manual = w.server.balance_operation(
        w.login, BalanceOperation.DEPOSIT, usd(5), comment="manual", idempotency_key="m1"
    )
    findings = reconcile(b.store, b.codec, w.server, [w.login])
    kinds = sorted((f.kind.value, f.ticket) for f in findings)
    assert kinds == sorted(
        [
            (FindingKind.AMOUNT_MISMATCH.value, tickets[0]),
            (FindingKind.MISSING_DEAL.value, tickets[1]),
            (FindingKind.UNKNOWN_DEAL.value, manual),
            (FindingKind.BALANCE_MISMATCH.value, None),
        ]
    )
    mismatch = next(f for f in findings if f.kind is FindingKind.BALANCE_MISMATCH)
    assert (mismatch.crm, mismatch.on_server) == (usd(400), usd(295))
