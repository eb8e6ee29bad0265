"""Issue 19's review: the holes a broker's engineer or an attacker found in the personal-data
paths, each shown closed: personal data in a loosely typed event field, an erased client's
export, masking rules a host can break or change under a running service, builtin errors from
hostile input, a short card number nearly unmasked, IB statements naming clients in clear, and
a lookup by e-mail that answered anyone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, Actor, Role, RowScope
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration, Stage
from fxcrm_core.commissions import RebateEntry
from fxcrm_core.events import DomainEvent, EventCodec, EventMetadata, EventRegistry
from fxcrm_core.kernel import (
    AccessDeniedError,
    CodecError,
    Currency,
    FixedClock,
    FxCrmError,
    ValidationError,
)
from fxcrm_core.privacy import (
    DEFAULT_MASKING,
    Email,
    MaskingPolicy,
    MasterKeyring,
    PiiExported,
    PiiKind,
    PiiReveals,
    Reveal,
)
from tests.test_statements import run

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
OFFICER = Actor.staff("dpo", Role.COMPLIANCE)
ADMIN = Actor.staff("boss", Role.ADMIN)
USD = Currency.of("USD")


def broker(**options: Any) -> Broker:
    return Broker.in_memory(
        clock=FixedClock(T0), keyring=MasterKeyring.generate(), identity_key=b"i" * 32, **options
    )


def register(b: Broker, name: str, email: str) -> str:
    return b.clients.register(PORTAL, Registration(ClientKind.INDIVIDUAL, "GB", name, email))


# -- a value type in a field the codec cannot see is personal -----------------------------------


@attrs.frozen
class NoteTaken(DomainEvent):
    client_id: str
    extra: Any  # a host's loosely typed field


@attrs.frozen
class TagsSet(DomainEvent):
    client_id: str
    tags: tuple[object, ...]


def test_personal_data_in_a_loosely_typed_field_is_refused_at_encode() -> None:
    registry = EventRegistry()
    registry.register_all([NoteTaken, TagsSet])
    codec = EventCodec(registry)
    meta = EventMetadata("staff:x")
    email = Email.parse("ana.lima@example.com")
    for event in (
        NoteTaken("c-1", email),
        NoteTaken("c-1", {"to": [email]}),
        TagsSet("c-1", (1, email)),
    ):
        with pytest.raises(CodecError, match="outside a pii"):
            codec.encode("note-1", event, meta)
    # Without personal data the same fields store as before.
    assert b'"extra":{"n":1}' in codec.encode("note-1", NoteTaken("c-1", {"n": 1}), meta).data


def test_nothing_is_written_when_a_loose_field_holds_personal_data() -> None:
    b = broker()
    b.registry.register(NoteTaken, name="host.NoteTaken")
    from fxcrm_core.events import Aggregate, UnitOfWork

    @attrs.frozen(kw_only=True)
    class Note(Aggregate):
        category = "note"

        def apply(self, event: DomainEvent) -> Note:
            return self

    before = b.store.last_position()
    uow = UnitOfWork(b.repository, EventMetadata("staff:x"))
    uow.record(Note.blank("n-1"), NoteTaken("c-1", Email.parse("ana@example.com")))
    with pytest.raises(CodecError):
        uow.commit()
    assert b.store.last_position() == before


def test_an_event_whose_field_types_cannot_be_resolved_is_refused_at_registration() -> None:
    namespace: dict[str, Any] = {}
    exec(  # a host module with a forward reference it never defines
        "from __future__ import annotations\n"
        "import attrs\n"
        "from fxcrm_core.events import DomainEvent\n"
        "@attrs.frozen\n"
        "class Broken(DomainEvent):\n"
        "    client_id: str\n"
        "    thing: Missing\n",
        namespace,
    )
    with pytest.raises(ValidationError, match="cannot be resolved"):
        EventRegistry().register(namespace["Broken"])


# -- export of an erased client ----------------------------------------------------------------


def test_an_erased_clients_export_records_no_field_as_exported() -> None:
    clock = FixedClock(T0)
    b = Broker.in_memory(clock=clock, keyring=MasterKeyring.generate(), identity_key=b"i" * 32)
    cid = register(b, "Bo Chen", "bo@example.com")
    b.clients.move(Actor.client(cid), cid, Stage.CLOSED)
    clock.set(T0 + timedelta(days=5 * 366 + 1))
    assert b.erasure.erase(OFFICER, cid, reason="GDPR art. 17").key_destroyed
    b.clients.export(OFFICER, [cid], "regulator request")
    (exported,) = [
        r.event
        for r in map(b.codec.decode, b.store.read_stream(f"pii_reveal-{cid}"))
        if isinstance(r.event, PiiExported)
    ]
    assert exported.fields == ()  # nothing left in clear, so nothing is recorded as left


# -- masking rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rules",
    [
        {"desk": {PiiKind.PAN: 0}},
        {"desk": {PiiKind.PAN: "full"}},
        {"desk": {"pan": Reveal.FULL}},
        {"": {PiiKind.PAN: Reveal.FULL}},
        {"desk": [PiiKind.PAN]},
        {5: {PiiKind.PAN: Reveal.FULL}},
    ],
)
def test_a_masking_rule_of_the_wrong_type_is_refused(rules: Any) -> None:
    with pytest.raises(ValidationError):
        MaskingPolicy(rules)
    with pytest.raises(ValidationError):
        DEFAULT_MASKING.with_role("desk", next(iter(rules.values())) if "desk" in rules else rules)


def test_the_shared_default_policy_cannot_be_changed_under_running_services() -> None:
    mine = {PiiKind.EMAIL: Reveal.PARTIAL}
    policy = MaskingPolicy({"desk": mine})
    mine[PiiKind.EMAIL] = Reveal.FULL  # the host's own dict changed afterwards ...
    assert policy.reveal_for({"desk"}, PiiKind.EMAIL) is Reveal.PARTIAL  # ... not the policy
    with pytest.raises(TypeError):
        DEFAULT_MASKING.rules["support"][PiiKind.ADDRESS] = Reveal.FULL  # type: ignore[index]
    with pytest.raises(TypeError):
        DEFAULT_MASKING.rules["auditor"] = {}  # type: ignore[index]
    assert DEFAULT_MASKING.reveal_for({"support"}, PiiKind.ADDRESS) is Reveal.HIDDEN


# -- hostile input at the client paths ----------------------------------------------------------

ANY = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.binary(max_size=4),
    st.lists(st.integers(), max_size=2), st.dates(),
)  # fmt: skip


@given(kind=ANY, country=ANY, name=ANY, email=ANY, phone=ANY, lead=ANY)
def test_a_registration_of_any_shape_is_a_typed_error_or_a_client(
    kind: Any, country: Any, name: Any, email: Any, phone: Any, lead: Any
) -> None:
    b = SHARED
    reg = Registration(kind, country, name, email, phone=phone, lead=lead)
    message = ""
    try:
        b.clients.register(PORTAL, reg)
    except FxCrmError as error:
        message = str(error)
    for value in (name, email, phone):
        if isinstance(value, str) and len(value) > 3:
            assert value not in message


SHARED = broker()


def _reg(kind: Any, country: Any) -> Registration:
    return Registration(kind, country, "A B", "a@b.cc")


OLD_DATE = datetime(1980, 1, 1, tzinfo=UTC)
HOSTILE: dict[str, Any] = {
    "no registration": lambda b, cid: b.clients.register(PORTAL, None),
    "kind as text": lambda b, cid: b.clients.register(PORTAL, _reg("individual", "GB")),
    "no country": lambda b, cid: b.clients.register(PORTAL, _reg(ClientKind.INDIVIDUAL, None)),
    "birth date as text": (
        lambda b, cid: b.clients.update_profile(Actor.client(cid), cid, birth_date="1980-01-01")
    ),
    "birth date as datetime": (
        lambda b, cid: b.clients.update_profile(Actor.client(cid), cid, birth_date=OLD_DATE)
    ),
    "export None": lambda b, cid: b.clients.export(OFFICER, None, "x"),
    "export a number": lambda b, cid: b.clients.export(OFFICER, [cid, 5], "x"),
    "reveal bare text": lambda b, cid: PiiReveals(b.repository, b.access).reveal(
        OFFICER,
        "4111111111111111",  # type: ignore[arg-type]
        subject_id=cid,
        reason="r",
    ),
    "find None": lambda b, cid: b.clients.find_by_email(OFFICER, None),
}


@pytest.mark.parametrize("call", sorted(HOSTILE))
def test_hostile_input_at_the_personal_data_paths_is_a_typed_error(call: str) -> None:
    b = broker()
    cid = register(b, "Ana Lima", "ana@example.com")
    before = b.store.last_position()
    with pytest.raises(ValidationError):
        HOSTILE[call](b, cid)
    assert b.store.last_position() == before


# -- IB statements and the lookup by e-mail: through the masked read path ------------------------


def ib_world() -> tuple[Broker, str, str]:
    b = broker()
    ana, bo = register(b, "Ana Lima", "ana@example.com"), register(b, "Bo Chen", "bo@example.com")
    net = b.ib_network
    net.register_ib(ADMIN, "master", None, T0 - timedelta(days=90), reason="signed")
    net.register_ib(ADMIN, "sub", "master", T0 - timedelta(days=90), reason="signed")
    net.register_ib(ADMIN, "other", None, T0 - timedelta(days=90), reason="signed")
    net.attribute(ADMIN, ana, "sub", T0 - timedelta(days=90), reason="came through sub")
    net.attribute(ADMIN, bo, "master", T0 - timedelta(days=90), reason="came through master")
    return b, ana, bo


def with_entries(b: Broker, ana: str, bo: str) -> None:
    """The statement tests' engine run, its entries moved onto this broker's clients."""
    _, entries = run()
    ids = {"c-1": ana, "c-2": bo}
    moved: list[RebateEntry] = [attrs.evolve(e, client_id=ids[e.client_id]) for e in entries]
    b.statements.entries = lambda: moved


def test_an_ib_statement_names_clients_as_the_ib_may_see_them() -> None:
    b, ana, bo = ib_world()
    with_entries(b, ana, bo)
    start, end = date(2026, 3, 9), date(2026, 3, 10)
    statement = b.statements.for_ib(Actor.ib("master"), "master", start, end, currency=USD)
    clients = {line.client for line in statement.lines}
    assert clients == {f"{ana} A. L.", f"{bo} B. C."}  # masked for the IB role, never clear
    assert statement.total.amount > 0
    # A back office granted statement.read on every row reads any IB's, names as it may see them.
    policy = DEFAULT_POLICY.with_role("desk", {"statement.read", "client.read"}, RowScope.ALL)
    b.access.policy = policy
    b.clients.masking = DEFAULT_MASKING.with_role("desk", {PiiKind.NAME: Reveal.FULL})
    desk = b.statements.for_ib(Actor.staff("d", "desk"), "master", start, end, currency=USD)
    # Ana is the sub-IB's client: masked on the master's statement unless the sub-IB shares.
    assert {line.client for line in desk.lines} == {f"{ana} A. L.", f"{bo} Bo Chen"}
    shared = b.statements.for_ib(
        Actor.staff("d", "desk"), "master", start, end, currency=USD, shares_names=lambda s: True
    )
    assert {line.client for line in shared.lines} == {f"{ana} Ana Lima", f"{bo} Bo Chen"}
    assert desk.total == statement.total == shared.total


def test_an_ib_reads_no_other_ibs_statement_and_a_role_without_the_grant_none() -> None:
    b, ana, bo = ib_world()
    with_entries(b, ana, bo)
    start, end = date(2026, 3, 9), date(2026, 3, 10)
    for actor, ib in (
        (Actor.ib("other"), "master"),
        (Actor.ib("sub"), "master"),  # not even its parent's
        (Actor.staff("s", Role.SUPPORT), "master"),
        (Actor.client(ana), "sub"),
    ):
        with pytest.raises(AccessDeniedError):
            b.statements.for_ib(actor, ib, start, end, currency=USD)
    with pytest.raises(ValidationError):
        b.statements.for_ib(Actor.ib("sub"), "sub", end, start, currency=USD)
    # The sub-IB's own statement: its client Ana, masked; Bo is not its client.
    sub = b.statements.for_ib(Actor.ib("sub"), "sub", start, end, currency=USD)
    assert {line.client for line in sub.lines} == {f"{ana} A. L."}


def test_a_client_out_of_the_ibs_rows_shows_its_id_only() -> None:
    b, ana, bo = ib_world()
    with_entries(b, ana, bo)
    # Bo moves to another IB after the deals: the master's statement keeps his deals, not a name.
    b.ib_network.attribute(ADMIN, bo, "other", T0, reason="moved")
    statement = b.statements.for_ib(
        Actor.ib("master"), "master", date(2026, 3, 9), date(2026, 3, 10), currency=USD
    )
    assert {line.client for line in statement.lines} == {f"{ana} A. L.", bo}


def test_the_lookup_by_email_answers_only_who_may_read_the_client() -> None:
    b, ana, bo = ib_world()
    assert b.clients.find_by_email(OFFICER, "ANA@example.com") == ana
    assert b.clients.find_by_email(Actor.ib("sub"), "ana@example.com") == ana  # its downline
    assert b.clients.find_by_email(Actor.ib("other"), "ana@example.com") is None  # not its own
    assert b.clients.find_by_email(Actor.client(bo), "ana@example.com") is None
    with pytest.raises(AccessDeniedError):
        b.clients.find_by_email(PORTAL, "ana@example.com")  # the portal reads no client
