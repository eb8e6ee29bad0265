"""Account services (issue 20, item 5): password reset, group change, status. Each is refused
without its permission (and out of row scope), audited with it, idempotent under retry (a crash
between the server call and the append changes nothing twice), and a group change re-checks the
leverage against the new group's cap. A password never reaches the log, a repr or an error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fxcrm_core.access import Actor, ApprovalStatus, Role, SelfApprovalError
from fxcrm_core.accounts import (
    AccountChange,
    AccountChanges,
    AccountGroupChanged,
    Accounts,
    AccountStatus,
    AccountStatusChanged,
    GroupRule,
    LeverageAboveCapError,
    LeverageCaps,
    PasswordLostError,
    TradingAccount,
    TradingPasswordReset,
    WeakPasswordError,
)
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.events import DomainEvent, RecordedEvent, Repository
from fxcrm_core.kernel import (
    AccessDeniedError,
    FixedClock,
    IdempotencyConflictError,
    IllegalTransitionError,
    StoreError,
    ValidationError,
)
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.trading import NewTradingAccount, SimulatedTradingServer, TradingServerError

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
SUPPORT = Actor.staff("help-1", Role.SUPPORT)
SALES = Actor.staff("rep-1", Role.SALES)
FINANCE = Actor.staff("fin-1", Role.FINANCE)
COMPLIANCE = Actor.staff("cmp-1", Role.COMPLIANCE)
GROUPS = {
    "demo\\usd": GroupRule("demo\\usd", "USD", 1000, live=False),
    "demo\\pro": GroupRule("demo\\pro", "USD", 1000, live=False),
    "demo\\cent": GroupRule("demo\\cent", "USD", 100, live=False),
    "demo\\eur": GroupRule("demo\\eur", "EUR", 1000, live=False),
    "retail\\usd": GroupRule("retail\\usd", "USD", 500, live=True),
}
CANARY = "Canary-Pw-9137!"


class SpyServer(SimulatedTradingServer):
    """The simulated server, counting the account changes it made (not the keyed no-ops)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, bool]] = []

    def change_password(
        self, login: int, secret: str, *, idempotency_key: str | None = None
    ) -> bool:
        applied = super().change_password(login, secret, idempotency_key=idempotency_key)
        self.calls.append(("password", applied))
        return applied

    def change_group(self, login: int, group: str, *, idempotency_key: str | None = None) -> bool:
        applied = super().change_group(login, group, idempotency_key=idempotency_key)
        self.calls.append(("group", applied))
        return applied

    def set_status(
        self, login: int, status: AccountStatus, *, idempotency_key: str | None = None
    ) -> bool:
        applied = super().set_status(login, status, idempotency_key=idempotency_key)
        self.calls.append(("status", applied))
        return applied

    def changes(self, kind: str) -> int:
        return sum(1 for k, applied in self.calls if k == kind and applied)


class World:
    def __init__(self, *, approve: tuple[AccountChange, ...] = (), **options: Any) -> None:
        self.clock = FixedClock(T0)
        self.server = SpyServer(clock=self.clock)
        self.broker = Broker.in_memory(
            clock=self.clock,
            keyring=MasterKeyring.generate(),
            trading_server=self.server,
            groups=GROUPS,
            caps=LeverageCaps(),
            **options,
        )
        self.changes = AccountChanges(self.broker.accounts, approve=approve)

    def client(self, email: str = "ana@example.com", points: int | None = None) -> Actor:
        cid = self.broker.clients.register(
            PORTAL, Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", email)
        )
        me = Actor.client(cid)
        if points is not None:
            self.broker.clients.assess_risk(me, cid, {"experience": points})
        return me

    def account(self, me: Actor, group: str = "demo\\usd", leverage: int = 30) -> str:
        assert me.client_id is not None
        return self.broker.accounts.open(me, me.client_id, group, leverage)

    def state(self, account_id: str) -> TradingAccount:
        return self.broker.repository.get(TradingAccount, account_id)

    def login(self, account_id: str) -> int:
        return self.state(account_id).login

    def recorded(self, account_id: str) -> list[RecordedEvent[DomainEvent]]:
        stream = TradingAccount.stream_id_for(account_id)
        return [self.broker.codec.decode(e) for e in self.broker.store.read_stream(stream)]


@pytest.fixture
def world() -> World:
    return World()


Operation = Callable[[World, Actor, str, str], object]


def reset(w: World, actor: Actor, account_id: str, request_id: str) -> object:
    # The client chooses its password; staff only trigger a generated one.
    chosen = CANARY if actor.client_id is not None else None
    return w.changes.reset_password(
        actor, account_id, request_id=request_id, password=chosen, reason="forgot it"
    )


def regroup(w: World, actor: Actor, account_id: str, request_id: str) -> object:
    return w.changes.change_group(
        actor, account_id, "demo\\pro", request_id=request_id, reason="moved to pro pricing"
    )


def restrict(w: World, actor: Actor, account_id: str, request_id: str) -> object:
    return w.changes.set_status(
        actor, account_id, AccountStatus.READ_ONLY, request_id=request_id, reason="AML review"
    )


OTHER_CLIENT = object()  # stands for another client (made in the test)
OPERATIONS: list[tuple[str, Operation, str, list[object], list[object]]] = [
    # name, operation, event type, allowed, refused
    ("password", reset, "TradingPasswordReset", ["self", SUPPORT], [OTHER_CLIENT, SALES, FINANCE]),
    ("group", regroup, "AccountGroupChanged", [FINANCE], ["self", SUPPORT, SALES, COMPLIANCE]),
    ("status", restrict, "AccountStatusChanged", [COMPLIANCE], ["self", SUPPORT, FINANCE]),
]


def _actor(w: World, who: object, me: Actor) -> Actor:
    if who == "self":
        return me
    if who is OTHER_CLIENT:
        return w.client("bea@example.com")
    assert isinstance(who, Actor)
    return who


@pytest.mark.parametrize(("name", "operation", "refused"), [(o[0], o[1], o[4]) for o in OPERATIONS])
def test_each_service_is_refused_without_its_permission_or_out_of_scope(
    name: str, operation: Operation, refused: list[object]
) -> None:
    w = World()
    me = w.client()
    account_id = w.account(me)
    before_log, before_server = w.broker.store.last_position(), list(w.server.calls)
    for n, who in enumerate(refused):
        actor = _actor(w, who, me)
        before_log = w.broker.store.last_position()
        with pytest.raises(AccessDeniedError):
            operation(w, actor, account_id, f"r-{n}")
        assert w.broker.store.last_position() == before_log
    assert w.server.calls == before_server
    state = w.server.account_state(w.login(account_id))
    assert (state.group, state.status) == ("demo\\usd", AccountStatus.ENABLED)


@pytest.mark.parametrize(
    ("name", "operation", "event_type", "allowed"), [(o[0], o[1], o[2], o[3]) for o in OPERATIONS]
)
def test_each_service_is_audited_with_actor_and_reason(
    name: str, operation: Operation, event_type: str, allowed: list[object]
) -> None:
    w = World()
    me = w.client()
    account_id = w.account(me)
    stream = TradingAccount.stream_id_for(account_id)
    for n, who in enumerate(allowed):
        actor = _actor(w, who, me)
        operation(w, actor, account_id, f"req-{name}-{n}")
        last = w.broker.store.read_stream(stream)[-1]
        assert last.event_type.endswith(event_type)
        meta = w.broker.codec.decode_metadata(last.metadata)
        assert meta.actor == actor.id
        assert meta.reason in ("forgot it", "moved to pro pricing", "AML review")
    w.broker.audit.catch_up(w.broker.store, w.broker.codec)
    audited = [r for r in w.broker.audit.log.records() if r.target == stream]
    assert [r.actor for r in audited[1:]] == [_actor(w, who, me).id for who in allowed]
    assert all(r.action.endswith(event_type) for r in audited[1:])
    assert w.broker.audit.verify(w.broker.store) is None
    assert w.server.changes(name) == len(allowed)


def test_the_services_change_the_server_and_the_record() -> None:
    w = World()
    me = w.client()
    account_id = w.account(me)
    login = w.login(account_id)
    done = w.changes.reset_password(me, account_id, request_id="p1", password=CANARY)
    assert done.password is not None
    assert done.password.reveal() == CANARY
    assert w.server.check_password(login, CANARY)
    generated = w.changes.reset_password(SUPPORT, account_id, request_id="p2", reason="locked out")
    assert generated.password is not None
    secret = generated.password.reveal()
    assert secret != CANARY
    assert w.server.check_password(login, secret)
    assert not w.server.check_password(login, CANARY)
    w.changes.change_group(FINANCE, account_id, "demo\\pro", request_id="g1", reason="pro")
    w.changes.set_status(
        COMPLIANCE, account_id, AccountStatus.DISABLED, request_id="s1", reason="fraud check"
    )
    state, server = w.state(account_id), w.server.account_state(login)
    assert (state.group, state.status) == (server.group, server.status)
    assert (state.group, state.status) == ("demo\\pro", AccountStatus.DISABLED)
    assert [type(e.event).__name__ for e in w.recorded(account_id)][1:] == [
        "TradingPasswordReset",
        "TradingPasswordReset",
        "AccountGroupChanged",
        "AccountStatusChanged",
    ]
    generated_flags = [
        e.event.generated
        for e in w.recorded(account_id)
        if isinstance(e.event, TradingPasswordReset)
    ]
    assert generated_flags == [False, True]


# -- idempotency -------------------------------------------------------------------------------


@pytest.fixture
def crash_next_append(world: World, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Arm a crash of the next append (after the server call, before the event is recorded)."""
    store = world.broker.store
    real = store.append
    armed = [False]

    def append(*args: Any, **kwargs: Any) -> Any:
        if armed[0]:
            armed[0] = False
            raise StoreError("the process died here")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "append", append)

    def arm() -> None:
        armed[0] = True

    return arm


def test_a_retried_password_reset_changes_the_password_once(
    world: World, crash_next_append: Callable[[], None]
) -> None:
    w = world
    me = w.client()
    account_id = w.account(me)
    login = w.login(account_id)
    crash_next_append()
    with pytest.raises(StoreError):
        w.changes.reset_password(me, account_id, request_id="r1", password=CANARY)
    assert w.server.changes("password") == 1
    assert w.recorded(account_id)[-1].version == 1
    again = w.changes.reset_password(me, account_id, request_id="r1", password=CANARY)
    assert again.password is not None
    assert not again.replayed
    assert w.server.calls == [("password", True), ("password", False)]  # no second change
    last = w.recorded(account_id)[-1].event
    assert last == TradingPasswordReset("r1", generated=False, applied=False)
    third = w.changes.reset_password(me, account_id, request_id="r1", password=CANARY)
    assert third.replayed
    assert third.password is None
    assert len(w.server.calls) == 2  # answered from the log: the server is not asked
    with pytest.raises(IdempotencyConflictError):
        w.changes.set_status(
            COMPLIANCE, account_id, AccountStatus.DISABLED, request_id="r1", reason="x"
        )
    assert w.server.check_password(login, CANARY)


def test_a_retry_with_another_password_under_the_same_request_is_refused(
    world: World, crash_next_append: Callable[[], None]
) -> None:
    w = world
    me = w.client()
    account_id = w.account(me)
    crash_next_append()
    with pytest.raises(StoreError):
        w.changes.reset_password(me, account_id, request_id="r1", password=CANARY)
    with pytest.raises(IdempotencyConflictError) as refused:
        w.changes.reset_password(me, account_id, request_id="r1", password="Other-Pw-4242!")
    assert "Other-Pw" not in str(refused.value)
    assert CANARY not in str(refused.value)
    assert w.server.check_password(w.login(account_id), CANARY)
    assert len(w.recorded(account_id)) == 1


def test_a_generated_password_lost_in_a_crash_is_recorded_not_changed_again(
    world: World, crash_next_append: Callable[[], None]
) -> None:
    w = world
    me = w.client()
    account_id = w.account(me)
    crash_next_append()
    with pytest.raises(StoreError):
        w.changes.reset_password(me, account_id, request_id="r1")
    with pytest.raises(PasswordLostError):
        w.changes.reset_password(me, account_id, request_id="r1")
    assert w.server.changes("password") == 1
    assert w.recorded(account_id)[-1].event == TradingPasswordReset("r1", True, applied=False)
    fresh = w.changes.reset_password(me, account_id, request_id="r2")
    assert fresh.password is not None
    assert w.server.check_password(w.login(account_id), fresh.password.reveal())


def test_a_generated_reset_under_the_id_of_a_crashed_status_change_is_not_a_lost_password(
    world: World, crash_next_append: Callable[[], None]
) -> None:
    w = world
    me = w.client()
    account_id = w.account(me)
    crash_next_append()
    with pytest.raises(StoreError):
        w.changes.set_status(
            COMPLIANCE, account_id, AccountStatus.DISABLED, request_id="x", reason="review"
        )
    done = w.changes.reset_password(me, account_id, request_id="x")
    assert done.password is not None
    assert w.server.check_password(w.login(account_id), done.password.reveal())
    assert w.recorded(account_id)[-1].event == TradingPasswordReset("x", True, applied=True)


def test_a_late_retry_of_a_status_change_does_not_flip_the_status(
    world: World, crash_next_append: Callable[[], None]
) -> None:
    w = world
    account_id = w.account(w.client())
    login = w.login(account_id)
    crash_next_append()
    with pytest.raises(StoreError):
        w.changes.set_status(
            COMPLIANCE, account_id, AccountStatus.DISABLED, request_id="a", reason="review"
        )
    w.changes.set_status(
        COMPLIANCE, account_id, AccountStatus.READ_ONLY, request_id="b", reason="review done"
    )
    w.changes.set_status(
        COMPLIANCE, account_id, AccountStatus.DISABLED, request_id="a", reason="review"
    )
    last = w.recorded(account_id)[-1].event
    assert last == AccountStatusChanged(
        "a", AccountStatus.DISABLED, AccountStatus.READ_ONLY, AccountStatus.READ_ONLY, False
    )
    assert w.server.account_state(login).status is AccountStatus.READ_ONLY
    assert w.state(account_id).status is AccountStatus.READ_ONLY
    assert w.server.changes("status") == 2


def test_a_retried_group_change_changes_the_group_once(
    world: World, crash_next_append: Callable[[], None]
) -> None:
    w = world
    account_id = w.account(w.client())
    crash_next_append()
    with pytest.raises(StoreError):
        w.changes.change_group(FINANCE, account_id, "demo\\pro", request_id="g", reason="pro")
    w.changes.change_group(FINANCE, account_id, "demo\\pro", request_id="g", reason="pro")
    again = w.changes.change_group(FINANCE, account_id, "demo\\pro", request_id="g", reason="pro")
    assert again.replayed
    assert w.server.calls == [("group", True), ("group", False)]
    assert w.recorded(account_id)[-1].event == AccountGroupChanged(
        "g", "demo\\pro", "demo\\usd", "demo\\pro", False
    )
    with pytest.raises(IdempotencyConflictError):
        w.changes.change_group(FINANCE, account_id, "demo\\cent", request_id="g", reason="x")


def test_one_request_id_on_two_accounts_is_two_requests(world: World) -> None:
    w = world
    me = w.client()
    first, second = w.account(me), w.account(me)
    for account_id in (first, second):
        w.changes.set_status(
            COMPLIANCE, account_id, AccountStatus.DISABLED, request_id="same", reason="review"
        )
        assert w.server.account_state(w.login(account_id)).status is AccountStatus.DISABLED
    assert w.server.calls == [("status", True), ("status", True)]


# -- group change and leverage ----------------------------------------------------------------


def test_a_group_change_rechecks_the_leverage_against_the_new_groups_cap(world: World) -> None:
    w = world
    me = w.client(points=10)  # sophisticated: the risk cap is 1:500
    account_id = w.account(me, leverage=300)
    before = w.broker.store.last_position()
    with pytest.raises(LeverageAboveCapError, match="cap of 1:100"):
        w.changes.change_group(FINANCE, account_id, "demo\\cent", request_id="g1", reason="cent")
    assert w.broker.store.last_position() == before
    assert w.server.calls == []
    assert w.server.account_state(w.login(account_id)).group == "demo\\usd"
    w.broker.accounts.request_leverage(me, account_id, 100)  # lower first, then move
    w.changes.change_group(FINANCE, account_id, "demo\\cent", request_id="g2", reason="cent")
    assert (w.state(account_id).group, w.state(account_id).leverage) == ("demo\\cent", 100)


def test_an_unassessed_clients_risk_cap_holds_in_any_group(world: World) -> None:
    w = world
    me = w.client(points=10)
    account_id = w.account(me, leverage=200)
    w.broker.clients.assess_risk(me, me.client_id or "", {"experience": 0})  # now 1:30
    with pytest.raises(LeverageAboveCapError, match="cap of 1:30"):
        w.changes.change_group(FINANCE, account_id, "demo\\pro", request_id="g", reason="pro")


@pytest.mark.parametrize(
    ("group", "error"),
    [
        ("retail\\usd", IllegalTransitionError),  # demo to live: open a live account
        ("demo\\eur", ValidationError),  # another currency
        ("nowhere\\usd", ValidationError),  # not configured
    ],
)
def test_a_group_change_keeps_the_kind_and_currency(
    world: World, group: str, error: type[Exception]
) -> None:
    account_id = world.account(world.client())
    with pytest.raises(error):
        world.changes.change_group(FINANCE, account_id, group, request_id="g", reason="x")
    assert world.server.calls == []


# -- maker-checker ----------------------------------------------------------------------------


def test_a_group_change_under_maker_checker_rechecks_the_cap_at_approval() -> None:
    w = World(approve=(AccountChange.GROUP,))
    me = w.client(points=10)
    account_id = w.account(me, leverage=100)
    both = Actor.staff("fc-1", Role.FINANCE, Role.COMPLIANCE)
    outcome = w.changes.change_group(
        both, account_id, "demo\\cent", request_id="g1", reason="cent pricing"
    )
    assert not outcome.applied
    assert outcome.approval_id is not None
    assert w.server.calls == []
    assert w.state(account_id).group == "demo\\usd"
    with pytest.raises(SelfApprovalError):
        w.broker.approvals.approve(both, outcome.approval_id)
    with pytest.raises(AccessDeniedError):
        w.broker.approvals.approve(FINANCE, outcome.approval_id)  # finance makes, not checks
    w.broker.accounts.request_leverage(me, account_id, 200)  # above the cent group's 1:100 now
    with pytest.raises(LeverageAboveCapError):
        w.broker.approvals.approve(COMPLIANCE, outcome.approval_id)
    w.broker.accounts.request_leverage(me, account_id, 100)
    decision = w.broker.approvals.approve(COMPLIANCE, outcome.approval_id)
    assert decision.status is ApprovalStatus.EXECUTED
    assert w.server.account_state(w.login(account_id)).group == "demo\\cent"
    last = w.recorded(account_id)[-1]
    assert isinstance(last.event, AccountGroupChanged)
    assert last.event.request_id == "g1"
    assert last.metadata.actor == "system:approvals"
    assert last.metadata.reason == "cent pricing (approved)"


def test_a_status_change_under_maker_checker_waits_for_a_second_person() -> None:
    policy_world = World(approve=(AccountChange.STATUS,))
    w = policy_world
    account_id = w.account(w.client())
    maker = Actor.staff("cmp-2", Role.COMPLIANCE, Role.FINANCE)  # may request account changes
    outcome = w.changes.set_status(
        maker, account_id, AccountStatus.DISABLED, request_id="s1", reason="sanctions hit"
    )
    assert not outcome.applied
    assert w.server.calls == []
    assert outcome.approval_id is not None
    w.broker.approvals.approve(COMPLIANCE, outcome.approval_id)
    assert w.state(account_id).status is AccountStatus.DISABLED
    assert w.server.account_state(w.login(account_id)).status is AccountStatus.DISABLED


def test_maker_checker_is_configured_per_change_kind(world: World) -> None:
    with pytest.raises(ValidationError):
        AccountChanges(world.broker.accounts, approve=("password",))  # type: ignore[arg-type]


# -- the password never shows ----------------------------------------------------------------


class LeakyServer(SpyServer):
    """A host adapter whose error quotes the password it was given."""

    def change_password(
        self, login: int, secret: str, *, idempotency_key: str | None = None
    ) -> bool:
        raise TradingServerError(f"server refused password {secret} for {login}")


def test_the_password_never_reaches_the_log_a_repr_or_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    w = World()
    me = w.client()
    account_id = w.account(me)
    done = w.changes.reset_password(me, account_id, request_id="r1", password=CANARY)
    assert CANARY not in repr(done)
    assert CANARY not in str(done.password)
    generated = w.changes.reset_password(me, account_id, request_id="r2")
    assert generated.password is not None
    secrets_used = [CANARY, generated.password.reveal()]
    for stored in w.broker.store.read_all(limit=10_000):
        for secret in secrets_used:
            assert secret.encode() not in stored.data
            assert secret.encode() not in stored.metadata
    w.broker.audit.catch_up(w.broker.store, w.broker.codec)
    shown = [
        repr(w.broker.audit.log.records()),
        repr(w.state(account_id)),
        repr(w.recorded(account_id)),
        caplog.text,
        repr(generated),
    ]
    for secret in secrets_used:
        assert all(secret not in text for text in shown)
    # A weak password is refused naming the rule, not the password.
    with pytest.raises(WeakPasswordError) as weak:
        w.changes.reset_password(me, account_id, request_id="r3", password="weakpass1!")
    assert "weakpass1!" not in str(weak.value)
    # A host adapter that quotes the password: the error that reaches the host does not.
    w.broker.accounts.server = w.changes.server = LeakyServer(clock=w.clock)
    with pytest.raises(TradingServerError) as refused:
        w.changes.reset_password(me, account_id, request_id="r4", password=CANARY)
    error: BaseException | None = refused.value
    while error is not None:
        assert CANARY not in str(error)
        assert CANARY not in repr(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    assert CANARY not in caplog.text
    # A simulated server's state file keeps a salted digest, never the password.
    path = tmp_path / "sim.json"
    sim = SimulatedTradingServer(clock=w.clock, state_path=path)
    login = sim.create_account(NewTradingAccount("demo\\usd", 30, "USD", "c-1"))
    sim.change_password(login, CANARY, idempotency_key="k")
    assert CANARY.encode() not in path.read_bytes()
    assert SimulatedTradingServer(clock=w.clock, state_path=path).check_password(login, CANARY)


# -- restarts: the log answers ------------------------------------------------------------------


def test_status_and_group_after_a_restart_come_from_the_log(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    ring = MasterKeyring({"m1": b"m" * 32}, "m1")
    server = SpyServer(clock=FixedClock(T0))

    def open_broker() -> Broker:
        return Broker.sqlite(
            path,
            clock=FixedClock(T0),
            keyring=ring,
            identity_key=b"i" * 32,
            trading_server=server,
            groups=GROUPS,
        )

    first = open_broker()
    cid = first.clients.register(
        PORTAL, Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", "ana@example.com")
    )
    account_id = first.accounts.open(Actor.client(cid), cid, "demo\\usd", 30)
    changes = AccountChanges(first.accounts)
    changes.change_group(FINANCE, account_id, "demo\\pro", request_id="g", reason="pro")
    changes.set_status(
        COMPLIANCE, account_id, AccountStatus.READ_ONLY, request_id="s", reason="review"
    )
    second = open_broker()  # another process on the same file
    for broker in (first, second):
        state = broker.repository.get(TradingAccount, account_id)
        assert (state.group, state.status) == ("demo\\pro", AccountStatus.READ_ONLY)
    again = AccountChanges(second.accounts).set_status(
        COMPLIANCE, account_id, AccountStatus.READ_ONLY, request_id="s", reason="review"
    )
    assert again.replayed
    assert server.changes("status") == 1


class Restartable:
    """A CRM over one log and one server that can crash between the server call and the append
    and restart (new repository and services: nothing kept from before but the log)."""

    def __init__(self) -> None:
        self.w = World()
        self.account_id = self.w.account(self.w.client())
        self.crash = False
        store = self.w.broker.store
        real = store.append

        def append(*args: Any, **kwargs: Any) -> Any:
            if self.crash:
                self.crash = False
                raise StoreError("crash")
            return real(*args, **kwargs)

        store.append = append  # type: ignore[method-assign]
        self.restart()

    def restart(self) -> None:
        b = self.w.broker
        self.repository = Repository(b.store, b.codec)
        accounts = Accounts(self.repository, b.access, self.w.server, b.kyc, GROUPS)
        self.changes = AccountChanges(accounts)

    def status(self) -> AccountStatus:
        return self.repository.get(TradingAccount, self.account_id).status


STEP = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(AccountStatus), st.booleans()),
    st.tuples(st.just("retry"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("restart"), st.none(), st.just(False)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=14))
@example([("set", AccountStatus.ENABLED, False), ("set", AccountStatus.READ_ONLY, True),
          ("retry", 0, False)])  # fmt: skip
def test_status_sequences_with_crashes_retries_and_restarts(
    steps: list[tuple[str, Any, bool]],
) -> None:
    """Laws: a retry never changes the server; each request id is recorded once and changes
    the server once at most; the log's status (as a fresh process reads it too) equals the
    server's after every request that reached the log, once no crashed request is left
    unretried, and at the end when every crashed request has been retried."""
    crm = Restartable()
    login = crm.w.login(crm.account_id)
    asked: list[tuple[str, AccountStatus]] = []
    crashed: set[str] = set()

    def in_step() -> None:
        assert crm.status() is crm.w.server.account_state(login).status
        fresh = Repository(crm.w.broker.store, crm.w.broker.codec)
        assert fresh.get(TradingAccount, crm.account_id).status is crm.status()

    def call(request: tuple[str, AccountStatus], crash: bool) -> bool:
        crm.crash = crash
        before = len(crm.w.server.calls)
        retry = request[0] in crashed or request[0] in crm_requests()
        try:
            outcome = crm.changes.set_status(
                COMPLIANCE, crm.account_id, request[1], request_id=request[0], reason="test"
            )
        except StoreError:
            assert crash
            crashed.add(request[0])
            return False
        if retry:
            assert all(not applied for _, applied in crm.w.server.calls[before:])
        crashed.discard(request[0])
        return not outcome.replayed

    def crm_requests() -> frozenset[str]:
        return frozenset(crm.repository.get(TradingAccount, crm.account_id).requests)

    for kind, value, crash in steps:
        if kind == "restart":
            crm.restart()
            continue
        if kind == "set":
            request = (f"req-{len(asked)}", value)
            asked.append(request)
        elif asked:
            request = asked[value % len(asked)]
        else:
            continue
        reached_log = call(request, crash)
        if reached_log or not crashed:
            in_step()
    for request in asked:
        if request[0] in crashed:
            assert call(request, crash=False)
    in_step()
    ids = [getattr(e.event, "request_id", None) for e in crm.w.recorded(crm.account_id)[1:]]
    assert len(ids) == len(set(ids)) == len(asked)
    assert crm.w.server.changes("status") <= len(asked)


def test_only_typed_errors_reach_the_host(world: World) -> None:
    account_id = world.account(world.client())
    for bad in ("", " ", "x" * 201, "a\nb"):
        with pytest.raises(ValidationError):
            world.changes.set_status(
                COMPLIANCE, account_id, AccountStatus.ENABLED, request_id=bad, reason="r"
            )
    with pytest.raises(ValidationError):
        world.changes.set_status(
            COMPLIANCE,
            account_id,
            "disabled",  # type: ignore[arg-type]
            request_id="x",
            reason="r",
        )
    with pytest.raises(FxCrmError):
        world.changes.reset_password(SUPPORT, "no-such-account", request_id="x")
    assert world.server.calls == []
