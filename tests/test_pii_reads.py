"""Issue 19, items 2 and 4: every read of a client's personal data answers it masked for the
asking actor's roles; the clear value only through an audited reveal or export."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, AccessPolicy, Actor, Role, RowScope
from fxcrm_core.broker import Broker
from fxcrm_core.clients import (
    CLIENT_PII,
    Client,
    ClientKind,
    ClientView,
    Consent,
    Registration,
    Stage,
)
from fxcrm_core.events.event import ERASED
from fxcrm_core.kernel import (
    AccessDeniedError,
    FixedClock,
    FxCrmError,
    IllegalTransitionError,
    ValidationError,
)
from fxcrm_core.privacy import (
    DEFAULT_MASKING,
    HIDDEN,
    MasterKeyring,
    PiiExported,
    PiiKind,
    PiiRevealed,
    Reveal,
    mask,
)
from fxcrm_core.privacy.pii import Email
from tests.system_world import OFFICER, PORTAL, REP, open_broker, register

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
UNKNOWN = "auditor"  # a role neither the access policy's defaults nor the masking policy know
ROLES = sorted({*DEFAULT_POLICY.grants, *DEFAULT_MASKING.rules, UNKNOWN})
CLEAR = {
    "name": "Ana Maria Lima",
    "email": "ana.lima@example.com",
    "phone": "+447911123456",
    "birth_date": "1988-03-17",
    "address": "1 Harbour St, Dubai",
}


def widened() -> AccessPolicy:
    """Every role may read and change every client: what each role then sees is the masking
    policy's doing alone (the row scopes are tested apart, below)."""
    policy = DEFAULT_POLICY
    for role in ROLES:
        extra = {"client.read", "client.update", "client.assign"}
        policy = policy.with_role(role, policy.grants.get(role, set()) | extra, RowScope.ALL)
    return policy


def world() -> tuple[Broker, str]:
    broker = Broker.in_memory(
        clock=FixedClock(T0),
        keyring=MasterKeyring.generate(),
        identity_key=b"i" * 32,
        policy=widened(),
    )
    cid = broker.clients.register(
        PORTAL,
        Registration(
            ClientKind.INDIVIDUAL, "GB", CLEAR["name"], CLEAR["email"], phone=CLEAR["phone"]
        ),
    )
    broker.clients.update_profile(
        OFFICER, cid, birth_date=date.fromisoformat(CLEAR["birth_date"]), address=CLEAR["address"]
    )
    return broker, cid


ReadPath = Callable[[Broker, Actor, str], ClientView]

READ_PATHS: dict[str, ReadPath] = {
    "get": lambda b, a, c: b.clients.get(a, c),
    "update_contact": lambda b, a, c: b.clients.update_contact(a, c, phone=CLEAR["phone"]),
    "update_profile": lambda b, a, c: b.clients.update_profile(a, c, address=CLEAR["address"]),
    "give_consent": lambda b, a, c: b.clients.give_consent(a, c, Consent.MARKETING),
    "withdraw_consent": lambda b, a, c: b.clients.withdraw_consent(a, c, Consent.MARKETING),
    "assign_owner": lambda b, a, c: b.clients.assign_owner(a, c, "staff:rep-9"),
    "assess_risk": lambda b, a, c: b.clients.assess_risk(a, c, {"experience": 5}),
}


@pytest.fixture(scope="module")
def shared() -> tuple[Broker, str]:
    return world()


def test_the_table_covers_every_kind_of_a_clients_personal_data() -> None:
    assert set(CLIENT_PII) == set(CLEAR)
    assert {PiiKind.NAME, PiiKind.EMAIL, PiiKind.PHONE} <= set(CLIENT_PII.values())


@pytest.mark.parametrize("path", sorted(READ_PATHS))
@pytest.mark.parametrize("role", ROLES)
def test_no_role_sees_more_than_the_policy_allows(
    shared: tuple[Broker, str], role: str, path: str
) -> None:
    broker, cid = shared
    view = READ_PATHS[path](broker, Actor.staff(f"who-{role}", role), cid)
    assert view.id == cid
    for field, kind in CLIENT_PII.items():
        shown = getattr(view, field)
        clear = CLEAR[field]
        allowed = DEFAULT_MASKING.reveal_for({role}, kind)
        if role == UNKNOWN:
            assert allowed is Reveal.HIDDEN
        if allowed is Reveal.HIDDEN:
            assert shown == HIDDEN, (role, path, field)
        elif allowed is Reveal.PARTIAL:
            assert clear not in shown, (role, path, field)
            assert shown != HIDDEN or kind is PiiKind.ADDRESS, (role, path, field)
        else:
            assert shown == clear, (role, path, field)
        assert clear not in repr(view)


def test_an_actor_with_several_roles_sees_the_most_one_of_them_allows(
    shared: tuple[Broker, str],
) -> None:
    broker, cid = shared
    view = broker.clients.get(Actor.staff("x", Role.IB, Role.SALES, UNKNOWN), cid)
    assert (view.name, view.email, view.birth_date) == (CLEAR["name"], CLEAR["email"], HIDDEN)


def test_a_host_masking_policy_with_an_unknown_kind_rule_fails_closed() -> None:
    from fxcrm_core.privacy import MaskingPolicy

    policy = MaskingPolicy({"desk": {PiiKind.TEXT: Reveal.FULL}})
    assert all(policy.reveal_for({"desk"}, kind) is Reveal.HIDDEN for kind in CLIENT_PII.values())


def test_row_scopes_apply_before_any_masking(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "b.sqlite")
    ana = register(broker)
    with pytest.raises(AccessDeniedError) as denied:
        broker.clients.get(Actor.staff("rep-2", Role.SALES), ana)  # not the owner
    assert "Ana" not in str(denied.value)
    with pytest.raises(AccessDeniedError):
        broker.clients.get(Actor.client("someone-else"), ana)
    with pytest.raises(AccessDeniedError):
        broker.clients.get(Actor.staff("p", Role.PORTAL), ana)
    assert broker.clients.get(Actor.client(ana), ana).email == "ana.lima@example.com"  # own


# -- reveal ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [r for r in ROLES if r != Role.COMPLIANCE])
def test_a_reveal_is_refused_without_the_permission_and_writes_nothing(role: str) -> None:
    broker, cid = world()
    before = broker.store.last_position()
    with pytest.raises(AccessDeniedError) as denied:
        broker.clients.reveal(Actor.staff("s", role), cid, "email", "the client called")
    assert CLEAR["email"] not in str(denied.value)
    assert broker.store.last_position() == before


def test_a_reveal_needs_the_clients_rows_a_reason_and_a_field(tmp_path: Path) -> None:
    policy = DEFAULT_POLICY.with_role("desk", {"client.read", "pii.reveal"}, RowScope.OWNED)
    broker = Broker.sqlite(
        tmp_path / "b.sqlite",
        clock=FixedClock(T0),
        keyring=MasterKeyring({"m1": bytes(range(32))}, "m1"),
        identity_key=b"i" * 32,
        policy=policy,
    )
    ana = register(broker)
    before = broker.store.last_position()
    with pytest.raises(AccessDeniedError):  # the desk role reveals only clients it owns
        broker.clients.reveal(Actor.staff("desk-1", "desk"), ana, "email", "called")
    for field, reason in [("email", " "), ("email", ""), ("password", "x"), ("birth_date", "x")]:
        with pytest.raises(ValidationError) as bad:
            broker.clients.reveal(OFFICER, ana, field, reason)
        assert "ana.lima" not in str(bad.value)
    assert broker.store.last_position() == before
    assert broker.store.read_stream(f"pii_reveal-{ana}") == []


def test_an_allowed_reveal_is_recorded_before_the_value_and_in_the_audit_trail(
    tmp_path: Path,
) -> None:
    db = tmp_path / "b.sqlite"
    broker = open_broker(db)
    ana = register(broker)
    assert broker.clients.reveal(OFFICER, ana, "email", "KYC call-back 12") == (
        "ana.lima@example.com"
    )
    assert broker.clients.reveal(OFFICER, ana, "name", "sanctions screening") == "Ana Lima"
    # A second process on the file sees the same record: the log is the truth.
    again = open_broker(db)
    recorded = [again.codec.decode(e) for e in again.store.read_stream(f"pii_reveal-{ana}")]
    assert [
        (r.event.field, r.event.kind) for r in recorded if isinstance(r.event, PiiRevealed)
    ] == [
        ("email", "email"),
        ("name", "name"),
    ]
    assert [(r.metadata.actor, r.metadata.reason) for r in recorded] == [
        (OFFICER.id, "KYC call-back 12"),
        (OFFICER.id, "sanctions screening"),
    ]
    assert "ana.lima@example.com" not in b"".join(e.data for e in again.store.read_all()).decode(
        "latin-1"
    )
    again.audit.catch_up(again.store, again.codec)
    trail = [r for r in again.audit.log.records() if r.target == f"pii_reveal-{ana}"]
    assert [(r.actor, r.action) for r in trail] == [(OFFICER.id, "PiiRevealed")] * 2
    assert again.audit.verify(again.store) is None


def test_an_export_needs_its_own_permission_and_is_audited_per_client(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "b.sqlite")
    ana = register(broker)
    bo = register(broker, "bo@example.com")
    before = broker.store.last_position()
    for who in (REP, Actor.staff("s", Role.SUPPORT), Actor.staff("a", Role.ADMIN)):
        with pytest.raises(AccessDeniedError):
            broker.clients.export(who, [ana, bo], "quarterly report")
    with pytest.raises(ValidationError):
        broker.clients.export(OFFICER, [ana, bo], "  ")
    with pytest.raises(ValidationError):
        broker.clients.export(OFFICER, [], "nothing")
    with pytest.raises(ValidationError):
        broker.clients.export(OFFICER, ana, "one id, not a list")
    with pytest.raises(FxCrmError):
        broker.clients.export(OFFICER, [ana, "no-such-client"], "a typo")
    assert broker.store.last_position() == before
    records = broker.clients.export(OFFICER, [ana, bo, ana], "regulator request 4")
    assert [(c.id, c.email) for c in records] == [
        (ana, Email("ana.lima@example.com")),
        (bo, Email("bo@example.com")),
    ]
    assert all(isinstance(c, Client) for c in records)
    for cid in (ana, bo):
        (stored,) = broker.store.read_stream(f"pii_reveal-{cid}")
        seen = broker.codec.decode(stored)
        assert seen.event == PiiExported(cid, ("name", "email"))
        assert (seen.metadata.actor, seen.metadata.reason) == (OFFICER.id, "regulator request 4")
    broker.audit.catch_up(broker.store, broker.codec)
    assert broker.audit.verify(broker.store) is None


def test_a_reveal_of_an_erased_client_is_refused() -> None:
    clock = FixedClock(T0)
    broker = Broker.in_memory(
        clock=clock, keyring=MasterKeyring.generate(), identity_key=b"i" * 32, policy=widened()
    )
    cid = register(broker)
    broker.clients.move(OFFICER, cid, Stage.CLOSED)
    clock.advance(days=5 * 366 + 1)
    assert broker.erasure is not None
    broker.erasure.erase(Actor.staff("dpo", Role.COMPLIANCE), cid, reason="the client asked")
    assert broker.clients.get(OFFICER, cid).email != "ana.lima@example.com"
    before = broker.store.last_position()
    with pytest.raises(ValidationError):
        broker.clients.reveal(OFFICER, cid, "email", "after erasure")
    assert broker.store.last_position() == before


@given(
    st.sampled_from(ROLES),
    st.sampled_from(list(PiiKind)),
    st.one_of(st.text(max_size=30), st.just(ERASED), st.from_regex(r"\A\+[1-9][0-9]{6,14}\Z")),
)
def test_a_masker_masks_as_show_does(role: str, kind: PiiKind, value: str) -> None:
    assert DEFAULT_MASKING.masker({role}, kind)(value) == DEFAULT_MASKING.show({role}, kind, value)


def test_a_policy_changed_on_the_service_applies_to_the_next_read() -> None:
    broker, cid = world()
    support = Actor.staff("sam", Role.SUPPORT)
    assert broker.clients.get(support, cid).address == HIDDEN
    broker.clients.masking = DEFAULT_MASKING.with_role(Role.SUPPORT, {PiiKind.ADDRESS: Reveal.FULL})
    seen = broker.clients.get(support, cid)
    assert (seen.address, seen.name) == (CLEAR["address"], HIDDEN)


# -- payout instruments: the one payments read that carries personal data --------------------

INSTRUMENTS = {
    "card": ("4111 1111 1111 1111", PiiKind.PAN),
    "iban": ("DE89 3704 0044 0532 0130 00", PiiKind.IBAN),
    "ewallet": ("ana.wallet@example.com", PiiKind.EMAIL),
}


INSTRUMENT_PATHS: dict[str, Callable[[Broker, Actor, str, str], str]] = {
    "Withdrawals.instrument": lambda b, actor, iid, wd: b.withdrawals.instrument(actor, iid).masked,
    "Withdrawals.verify_instrument": (
        lambda b, actor, iid, wd: b.withdrawals.verify_instrument(actor, iid).masked
    ),
    "Withdrawals.view": lambda b, actor, iid, wd: b.withdrawals.view(actor, wd).to.masked,
}


@functools.cache
def payments_world(kind: str) -> tuple[Broker, str, str, str]:
    """A verified instrument of ``kind`` and a withdrawal to it, on a broker where every role
    may manage, verify, request and approve everything: what each role sees is the masking
    policy's doing alone."""
    from fxcrm_core.payments import InstrumentKind
    from tests.test_withdrawals import SETTINGS, World, usd

    extra = {"instrument.verify", "instrument.manage", "withdrawal.request", "withdrawal.approve"}
    policy = widened()
    for role in ROLES:
        policy = policy.with_role(role, {*policy.grants[role], *extra}, RowScope.ALL)
    broker = Broker.in_memory(
        clock=FixedClock(T0), keyring=MasterKeyring.generate(), identity_key=b"i" * 32,
        policy=policy, **SETTINGS,
    )  # fmt: skip
    w = World(broker=broker)
    value, _ = INSTRUMENTS[kind]
    iid = broker.withdrawals.add_instrument(w.me, w.cid, InstrumentKind(kind), value)
    broker.withdrawals.verify_instrument(Actor.staff("fin-2", Role.FINANCE), iid)
    wd = broker.withdrawals.request(w.me, w.cid, iid, usd(10))
    return broker, w.cid, iid, wd


@pytest.mark.parametrize("path", sorted(INSTRUMENT_PATHS))
@pytest.mark.parametrize("kind", sorted(INSTRUMENTS))
@pytest.mark.parametrize("role", ROLES)
def test_an_instrument_shows_no_more_than_the_policy_allows_on_every_path(
    role: str, kind: str, path: str
) -> None:
    broker, _, iid, wd = payments_world(kind)
    value, pii_kind = INSTRUMENTS[kind]
    shown = INSTRUMENT_PATHS[path](broker, Actor.staff("v", role), iid, wd)
    assert "".join(value.split()) not in shown  # never in full: in clear only through a reveal
    if DEFAULT_MASKING.reveal_for({role}, pii_kind) is Reveal.HIDDEN:
        assert shown == HIDDEN  # an unknown role included: it fails closed
    else:
        assert shown == mask(pii_kind, value, Reveal.PARTIAL)


def test_an_instrument_read_without_the_permission_is_refused() -> None:
    """Under the default grants: support may not act on instruments or withdrawals, another
    client not on this one's rows; the grant and the row scope come before any mask."""
    from tests.test_withdrawals import World, usd

    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(10))
    for actor in (Actor.staff("sam", Role.SUPPORT), Actor.client("someone-else")):
        for path in INSTRUMENT_PATHS.values():
            with pytest.raises(AccessDeniedError):
                path(w.broker, actor, w.iban, wd)


def test_an_erased_clients_instrument_reads_as_erased_on_every_path() -> None:
    broker, cid, iid, wd = payments_world("iban")
    payments_world.cache_clear()  # this world is spent
    assert broker.encryption is not None
    broker.encryption.erase(cid)
    broker.repository.forget()
    for role in ROLES:
        actor = Actor.staff("v", role)
        for path in ("Withdrawals.instrument", "Withdrawals.view"):
            assert INSTRUMENT_PATHS[path](broker, actor, iid, wd) is ERASED
    with pytest.raises(IllegalTransitionError):
        broker.withdrawals.verify_instrument(Actor.staff("v", Role.FINANCE), iid)
    with pytest.raises(IllegalTransitionError):
        broker.withdrawals.reveal_instrument(OFFICER, iid, reason="chargeback")


def test_an_instrument_in_clear_only_through_an_audited_reveal() -> None:
    broker, cid, iid, _ = payments_world("card")
    with pytest.raises(AccessDeniedError):
        broker.withdrawals.reveal_instrument(Actor.staff("f", Role.FINANCE), iid, reason="psp")
    with pytest.raises(ValidationError):
        broker.withdrawals.reveal_instrument(OFFICER, iid, reason=" ")
    assert not broker.store.read_stream(f"pii_reveal-{cid}")
    clear = broker.withdrawals.reveal_instrument(OFFICER, iid, reason="chargeback 12")
    assert clear == "4111111111111111"
    (seen,) = [broker.codec.decode(r) for r in broker.store.read_stream(f"pii_reveal-{cid}")]
    assert (seen.metadata.actor, seen.metadata.reason) == (OFFICER.id, "chargeback 12")
    assert isinstance(seen.event, PiiRevealed)
    assert seen.event.masked == "411111******1111"
    assert broker.audit.verify(broker.store) is None


# -- IB statements: client names through the same masked read ------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_a_statement_names_clients_no_clearer_than_the_policy_allows(role: str) -> None:
    """Every role granted statement.read on every row (widened) reads the IB's statement; each
    client's name is what the masking policy shows that role, an unknown role sees ``****``."""
    import attrs

    from fxcrm_core.commissions import RebateEntry
    from tests.test_statements import run

    policy = widened()
    policy = policy.with_role(role, {*policy.grants[role], "statement.read"}, RowScope.ALL)
    broker = Broker.in_memory(
        clock=FixedClock(T0), keyring=MasterKeyring.generate(), identity_key=b"i" * 32,
        policy=policy,
    )  # fmt: skip
    names = {"c-1": "Ana Maria Lima", "c-2": "欧阳小明"}
    ids = {
        old: broker.clients.register(
            PORTAL, Registration(ClientKind.INDIVIDUAL, "GB", name, f"{old}@example.com")
        )
        for old, name in names.items()
    }
    _, entries = run()
    moved: list[RebateEntry] = [attrs.evolve(e, client_id=ids[e.client_id]) for e in entries]
    broker.statements.entries = lambda: moved
    statement = broker.statements.for_ib(
        Actor.staff("s", role), "master", date(2026, 3, 9), date(2026, 3, 10),
        currency=moved[0].amount.currency, shares_names=lambda sub: True,
    )  # fmt: skip
    shown = {line.client for line in statement.lines}
    expected = {
        f"{ids[old]} {DEFAULT_MASKING.show({role}, PiiKind.NAME, name)}"
        for old, name in names.items()
    }
    assert shown == expected
    if DEFAULT_MASKING.reveal_for({role}, PiiKind.NAME) is not Reveal.FULL:
        assert not any(name in line for line in shown for name in names.values())
