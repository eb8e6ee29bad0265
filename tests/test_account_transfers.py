"""From one trading account to another of the same client (issue 20, item 4): the ledger holds
the amount between the mirrors, each server call is keyed (a retry repeats none), a failure
after the withdrawal leaves the transfer in flight until retried or unwound, and reconciliation
sees every leg."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import Actor, Role
from fxcrm_core.accounts import GroupRule, TradingAccount
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.kernel import (
    AccessDeniedError,
    Currency,
    FixedClock,
    IllegalTransitionError,
    Money,
    ValidationError,
)
from fxcrm_core.ledger import ExceedsLimitError, TransferRequest
from fxcrm_core.payments import reconcile
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.trading import BalanceOperation, SimulatedTradingServer, TradingServerError

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
USD = Currency.of("USD")
FINANCE = Actor.staff("fin-1", Role.FINANCE)
GROUPS = {
    "demo\\usd": GroupRule("demo\\usd", "USD", 500, live=False),
    "demo\\eur": GroupRule("demo\\eur", "EUR", 500, live=False),
}


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


class World:
    """Ana with two USD accounts (300 moved into the first) and a EUR one; Bo with one."""

    def __init__(self) -> None:
        clock = FixedClock(T0)
        self.server = SimulatedTradingServer("mt5-live", seed=3, clock=clock)
        self.b = Broker.in_memory(
            clock=clock, keyring=MasterKeyring.generate(), trading_server=self.server,
            groups=GROUPS,
        )  # fmt: skip
        portal = Actor.system("portal", Role.PORTAL)
        self.ana = self.b.clients.register(
            portal, Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", "ana@example.com")
        )
        bo = self.b.clients.register(
            portal, Registration(ClientKind.INDIVIDUAL, "SC", "Bo Chen", "bo@example.com")
        )
        self.me = Actor.client(self.ana)
        self.first = self.b.accounts.open(self.me, self.ana, "demo\\usd", 30)
        self.second = self.b.accounts.open(self.me, self.ana, "demo\\usd", 30)
        self.euro = self.b.accounts.open(self.me, self.ana, "demo\\eur", 30)
        self.bos = self.b.accounts.open(Actor.client(bo), bo, "demo\\usd", 30)
        money = self.b.client_transfers.money
        wallet = money.wallet(self.ana, USD)
        self.b.ledger.transfer(
            TransferRequest("psp:1", money.broker("psp_clearing", USD), wallet, usd(1000))
        )
        self.b.transfers.move(self.me, "fund-1", self.first, usd(300), to_trading=True)

    def login(self, account_id: str) -> int:
        return self.b.repository.get(TradingAccount, account_id).login

    def on_server(self, account_id: str) -> Money:
        return self.server.account_state(self.login(account_id)).balance

    def mirror(self, account_id: str) -> Any:
        return self.b.ledger.balance(f"mirror:mt5-live:{self.login(account_id)}")

    def send(self, request_id: str, amount: str | int) -> Any:
        return self.b.transfers.between(self.me, request_id, self.first, self.second, usd(amount))

    def reconciled(self) -> list[Any]:
        logins = [self.login(a) for a in (self.first, self.second)]
        return reconcile(self.b.store, self.b.codec, self.server, logins)


def test_money_moves_between_two_accounts_once_and_reconciles() -> None:
    w = World()
    out, into = w.send("a-1", 120)
    assert (w.on_server(w.first), w.on_server(w.second)) == (usd(180), usd(120))
    assert (w.mirror(w.first).net_credit, w.mirror(w.second).net_credit) == (usd(180), usd(120))
    assert w.send("a-1", 120) == (out, into)  # a retry answers the same legs, moves nothing
    assert (w.on_server(w.first), w.on_server(w.second)) == (usd(180), usd(120))
    assert w.reconciled() == []
    deal = w.server.deal(into.deal_ticket)
    assert deal is not None
    assert deal.profit == usd(120)


@pytest.mark.parametrize(
    ("why", "call", "error"),
    [
        ("to another client's account", lambda w: w.b.transfers.between(
            w.me, "x", w.first, w.bos, usd(5)), AccessDeniedError),
        ("in another currency", lambda w: w.b.transfers.between(
            w.me, "x", w.first, w.euro, usd(5)), ValidationError),
        ("to the same account", lambda w: w.b.transfers.between(
            w.me, "x", w.first, w.first, usd(5)), ValidationError),
        ("a zero amount", lambda w: w.send("x", 0), ValidationError),
        ("more than the mirror holds", lambda w: w.send("x", 301), ExceedsLimitError),
        ("by a stranger", lambda w: w.b.transfers.between(
            Actor.staff("s", Role.SUPPORT), "x", w.first, w.second, usd(5)), AccessDeniedError),
        ("a blank request id", lambda w: w.send("", 5), ValidationError),
    ],
)  # fmt: skip
def test_a_refused_transfer_moves_nothing(why: str, call: Any, error: Any) -> None:
    w = World()
    with pytest.raises(error):
        call(w)
    assert (w.on_server(w.first), w.on_server(w.second)) == (usd(300), usd(0)), why
    assert w.reconciled() == []


def test_a_withdrawal_the_server_refuses_releases_the_hold() -> None:
    w = World()
    # A dealer took 250 out by hand: the mirror says 300, the server has 50.
    w.server.balance_operation(
        w.login(w.first), BalanceOperation.WITHDRAWAL, usd(250), comment="dealer",
        idempotency_key="dealer-1",
    )  # fmt: skip
    with pytest.raises(TradingServerError):
        w.send("a-1", 100)
    assert w.mirror(w.first).available_credit == usd(300)  # the hold released
    assert w.on_server(w.second) == usd(0)
    # The hold is gone: the whole 300 is available again on the mirror.
    assert w.b.transfers.between(w.me, "a-2", w.first, w.second, usd(50))[1].amount == usd(50)


def flaky_deposit(w: World, monkeypatch: pytest.MonkeyPatch, failures: int) -> list[str]:
    """The second account's deposit fails ``failures`` times (the server went away after the
    withdrawal): what a crash between the two calls looks like to the CRM."""
    real = w.server.balance_operation
    calls: list[str] = []

    def operation(login: int, op: BalanceOperation, amount: Money, **kw: Any) -> int:
        calls.append(f"{op.value}:{kw['idempotency_key']}")
        if (
            op is BalanceOperation.DEPOSIT
            and login == w.login(w.second)
            and len([c for c in calls if c.startswith("deposit") and c.endswith(":in")]) <= failures
        ):
            raise TradingServerError("connection reset")
        return real(login, op, amount, **kw)

    monkeypatch.setattr(w.server, "balance_operation", operation)
    return calls


def test_a_failure_after_the_withdrawal_is_finished_by_a_retry_without_a_second_withdrawal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World()
    calls = flaky_deposit(w, monkeypatch, failures=1)
    with pytest.raises(TradingServerError, match="retry"):
        w.send("a-1", 100)
    assert (w.on_server(w.first), w.on_server(w.second)) == (usd(200), usd(0))  # in flight
    assert [f.kind.value for f in w.reconciled()] == ["unknown_deal", "balance_mismatch"]
    w.send("a-1", 100)  # the retry
    assert (w.on_server(w.first), w.on_server(w.second)) == (usd(200), usd(100))
    # Called twice, done once (keyed: "a2a:<client>:<request id>:out").
    assert calls.count(f"withdrawal:a2a:{w.ana}:a-1:out") == 2
    assert w.reconciled() == []


def test_a_transfer_in_flight_can_be_unwound_by_finance_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World()
    flaky_deposit(w, monkeypatch, failures=99)
    with pytest.raises(TradingServerError):
        w.send("a-1", 100)
    with pytest.raises(AccessDeniedError):  # the client cannot unwind it
        w.b.transfers.unwind(w.me, "a-1", w.first, w.second, usd(100), reason="stuck")
    with pytest.raises(ValidationError):
        w.b.transfers.unwind(FINANCE, "a-1", w.first, w.second, usd(100), reason=" ")
    w.b.transfers.unwind(FINANCE, "a-1", w.first, w.second, usd(100), reason="second server down")
    assert (w.on_server(w.first), w.on_server(w.second)) == (usd(300), usd(0))
    assert w.reconciled() == []
    with pytest.raises(IllegalTransitionError):
        w.b.transfers.unwind(FINANCE, "a-1", w.first, w.second, usd(100), reason="again")
    with pytest.raises(IllegalTransitionError):
        w.send("a-1", 100)  # an unwound request is not sent again under the same id
    unwound = [
        r
        for r in map(w.b.codec.decode, w.b.store.read_stream(f"internal-a2a:{w.ana}:a-1"))
        if type(r.event).__name__ == "InternalTransferUnwound"
    ]
    assert [(r.metadata.actor, getattr(r.event, "reason", "")) for r in unwound] == [
        (FINANCE.id, "second server down")
    ]


def test_a_completed_transfer_cannot_be_unwound() -> None:
    w = World()
    w.send("a-1", 100)
    with pytest.raises(IllegalTransitionError):
        w.b.transfers.unwind(FINANCE, "a-1", w.first, w.second, usd(100), reason="oops")


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=400)), max_size=8))
def test_no_sequence_of_transfers_changes_the_clients_total_or_breaks_reconciliation(
    moves: list[tuple[bool, int]],
) -> None:
    w = World()
    for n, (forward, amount) in enumerate(moves):
        source, target = (w.first, w.second) if forward else (w.second, w.first)
        with contextlib.suppress(ExceedsLimitError, TradingServerError):
            w.b.transfers.between(w.me, f"a-{n}", source, target, usd(amount))
    assert w.on_server(w.first) + w.on_server(w.second) == usd(300)
    assert w.reconciled() == []
