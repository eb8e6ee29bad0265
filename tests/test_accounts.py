"""Trading accounts: opening gated by KYC level, leverage caps, maker-checker, server refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from fxcrm_core.access import Actor, ApprovalStatus, Role, SelfApprovalError
from fxcrm_core.accounts import (
    ACCOUNT_EVENTS,
    Accounts,
    GroupRule,
    LeverageAboveCapError,
    LeverageCaps,
    TradingAccount,
)
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ALL_CLIENT_EVENTS, ClientKind, Clients, IdentityKeys, Registration
from fxcrm_core.kernel import FixedClock, IllegalTransitionError, StoreError, ValidationError
from fxcrm_core.kyc import DOCUMENT_EVENTS, KycLevelTooLowError, KycService
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.trading import SimulatedTradingServer, TradingServerError

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
SUPPORT = Actor.staff("help-1", Role.SUPPORT)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
RISK = Actor.staff("risk-1", Role.COMPLIANCE)
GROUPS = {
    "demo\\usd": GroupRule("demo\\usd", "USD", 1000, live=False),
    "retail\\usd": GroupRule("retail\\usd", "USD", 500, live=True),
}


class World:
    def __init__(self, *, approval_above: int | None = None, server_max: int = 1000) -> None:
        self.clock = FixedClock(T0)
        self.broker = Broker.in_memory(
            clock=self.clock,
            keyring=MasterKeyring.generate(),
            events=(*ALL_CLIENT_EVENTS, *DOCUMENT_EVENTS, *ACCOUNT_EVENTS),
        )
        b = self.broker
        self.clients = Clients(b.repository, b.access, IdentityKeys(b"k" * 32), clock=self.clock)
        self.kyc = KycService(b.repository, b.projections, b.access, clock=self.clock)
        self.server = SimulatedTradingServer(clock=self.clock, max_leverage=server_max)
        self.accounts = Accounts(
            b.repository,
            b.access,
            self.server,
            self.kyc,
            GROUPS,
            caps=LeverageCaps(approval_above=approval_above),
            approvals=b.approvals,
        )

    def client(self, country: str = "SC", email: str = "ana@example.com") -> tuple[str, Actor]:
        cid = self.clients.register(
            PORTAL, Registration(ClientKind.INDIVIDUAL, country, "Ana Lima", email)
        )
        return cid, Actor.client(cid)

    def verify(self, cid: str, me: Actor) -> None:
        passport = self.kyc.submit(me, cid, "passport", "f1", expires_on=date(2030, 1, 1))
        address = self.kyc.submit(me, cid, "proof_of_address", "f2")
        self.kyc.approve(OFFICER, passport)
        self.kyc.approve(OFFICER, address)

    def profile(self, cid: str, me: Actor, points: int) -> None:
        self.clients.assess_risk(me, cid, {"experience": points})


def test_a_demo_account_needs_only_registration() -> None:
    w = World()
    cid, me = w.client()
    account_id = w.accounts.open(me, cid, "demo\\usd", 30)
    account = w.broker.repository.get(TradingAccount, account_id)
    state = w.server.account_state(account.login)
    assert (account.live, account.leverage, state.group, state.leverage) == (
        False,
        30,
        "demo\\usd",
        30,
    )


def test_a_live_account_needs_kyc_level_two_and_nothing_is_created_before() -> None:
    w = World()
    cid, me = w.client()
    with pytest.raises(KycLevelTooLowError):
        w.accounts.open(me, cid, "retail\\usd", 30)
    with pytest.raises(Exception, match="no account"):
        w.server.account_state(500_000)  # nothing was created on the server either
    w.verify(cid, me)
    account_id = w.accounts.open(me, cid, "retail\\usd", 30)
    assert w.broker.repository.get(TradingAccount, account_id).live


@pytest.mark.parametrize(
    ("country", "points", "group", "leverage", "cap"),
    [
        ("SC", 10, "retail\\usd", 501, 500),  # the group's maximum
        ("SC", 0, "retail\\usd", 31, 30),  # an inexperienced client
        ("SC", 5, "retail\\usd", 201, 200),  # an experienced one
        ("DE", 10, "retail\\usd", 31, 30),  # ESMA's retail cap, however sophisticated
        ("SC", None, "retail\\usd", 31, 30),  # not assessed yet: the lowest cap
    ],
)
def test_leverage_above_the_cap_is_refused(
    country: str, points: int | None, group: str, leverage: int, cap: int
) -> None:
    w = World()
    cid, me = w.client(country)
    w.verify(cid, me)
    if points is not None:
        w.profile(cid, me, points)
    before = w.broker.store.last_position()
    with pytest.raises(LeverageAboveCapError, match=f"cap of 1:{cap}"):
        w.accounts.open(me, cid, group, leverage)
    assert w.broker.store.last_position() == before
    assert w.accounts.open(me, cid, group, cap)


def test_leverage_changes_within_the_cap_apply_at_once() -> None:
    w = World()
    cid, me = w.client()
    w.verify(cid, me)
    w.profile(cid, me, 10)
    account_id = w.accounts.open(me, cid, "retail\\usd", 100)
    outcome = w.accounts.request_leverage(me, account_id, 300)
    account = w.broker.repository.get(TradingAccount, account_id)
    assert outcome.applied
    assert (account.leverage, w.server.account_state(account.login).leverage) == (300, 300)
    with pytest.raises(LeverageAboveCapError):
        w.accounts.request_leverage(me, account_id, 501)


def test_leverage_above_the_threshold_needs_approval_with_the_cap_rechecked() -> None:
    w = World(approval_above=100)
    cid, me = w.client()
    w.verify(cid, me)
    w.profile(cid, me, 10)
    account_id = w.accounts.open(me, cid, "retail\\usd", 100)
    login = w.broker.repository.get(TradingAccount, account_id).login
    outcome = w.accounts.request_leverage(me, account_id, 400)
    assert not outcome.applied
    assert outcome.request_id is not None
    assert w.server.account_state(login).leverage == 100
    decision = w.broker.approvals.approve(RISK, outcome.request_id)
    assert decision.status is ApprovalStatus.EXECUTED
    assert w.server.account_state(login).leverage == 400
    assert w.broker.repository.get(TradingAccount, account_id).leverage == 400
    # A later request is refused at approval time once the client's profile no longer allows it.
    second = w.accounts.request_leverage(me, account_id, 500)
    assert second.request_id is not None
    w.profile(cid, me, 5)  # now only "experienced": cap 1:200
    with pytest.raises(LeverageAboveCapError):
        w.broker.approvals.approve(RISK, second.request_id)
    assert w.server.account_state(login).leverage == 400


def test_staff_cannot_approve_their_own_leverage_request() -> None:
    w = World(approval_above=100)
    cid, me = w.client()
    w.verify(cid, me)
    w.profile(cid, me, 10)
    account_id = w.accounts.open(SUPPORT, cid, "retail\\usd", 100)
    maker = Actor.staff("help-1", Role.SUPPORT, Role.COMPLIANCE)
    outcome = w.accounts.request_leverage(maker, account_id, 300)
    assert outcome.request_id is not None
    with pytest.raises(SelfApprovalError):
        w.broker.approvals.approve(maker, outcome.request_id)


def test_server_refusals_leave_nothing_recorded() -> None:
    w = World(server_max=50)
    cid, me = w.client()
    w.verify(cid, me)
    w.profile(cid, me, 10)
    before = w.broker.store.last_position()
    with pytest.raises(TradingServerError):
        w.accounts.open(me, cid, "retail\\usd", 100)
    assert w.broker.store.last_position() == before


def test_bad_requests_are_typed_errors() -> None:
    w = World()
    cid, me = w.client()
    with pytest.raises(ValidationError):
        w.accounts.open(me, cid, "no-such-group", 10)
    with pytest.raises(ValidationError):
        w.accounts.open(me, cid, "demo\\usd", 0)
    other, _ = w.client(email="bo@example.com")
    with pytest.raises(Exception, match="may not"):
        w.accounts.open(me, other, "demo\\usd", 10)
    lead = w.clients.register(
        PORTAL, Registration(ClientKind.INDIVIDUAL, "SC", "Cy", "cy@example.com", lead=True)
    )
    with pytest.raises(IllegalTransitionError):
        w.accounts.open(Actor.client(lead), lead, "demo\\usd", 10)


def test_a_failed_recording_disables_the_server_account(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    cid, me = w.client()

    def broken(*args: object, **kwargs: object) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(w.broker.store, "append", broken)
    with pytest.raises(StoreError):
        w.accounts.open(me, cid, "demo\\usd", 30)
    state = w.server.account_state(500_000)  # the simulated server's first login
    assert not state.enabled
