"""Clients: registration, deduplication on keyed hashes, lifecycle, consents, ownership, risk."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import attrs
import pytest

from fxcrm_core.access import AccessControl, Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import (
    ALL_CLIENT_EVENTS,
    Client,
    ClientKind,
    Clients,
    Consent,
    DedupPolicy,
    DuplicateClientError,
    IdentityKeys,
    IllegalTransitionError,
    Registration,
    RiskProfile,
    Stage,
)
from fxcrm_core.clients.identity import IdentityClaim
from fxcrm_core.events import EventMetadata, UnitOfWork
from fxcrm_core.kernel import AccessDeniedError, ConcurrencyError, FixedClock, ValidationError
from fxcrm_core.kyc import (
    IdentifierChecksumError,
    IdentifierFormatError,
    IdentifierReason,
    ImpossibleIdentifierError,
    InvalidIdentifierError,
    check_national_id,
)
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.privacy.pii import Address, BirthDate, PersonName

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
REP = Actor.staff("rep-1", Role.SALES)
SUPPORT = Actor.staff("desk-1", Role.SUPPORT)
ADMIN = Actor.staff("boss", Role.ADMIN)
ANA = Registration(
    ClientKind.INDIVIDUAL,
    "GB",
    "Ana Lima",
    "Ana.Lima+fx@GMAIL.com",
    "07911 123456",
    "x123 4567",
    owner_id="staff:rep-1",
)


class Owners:
    def __init__(self, clients: Clients) -> None:
        self.clients = clients

    def sales_owner(self, client_id: str) -> str | None:
        return self.clients.repository.get(Client, client_id).owner_id

    def in_downline(self, ib_id: str, client_id: str) -> bool:
        return False


def make(policy: DedupPolicy = DedupPolicy.REFUSE) -> tuple[Broker, Clients]:
    clock = FixedClock(T0)
    broker = Broker.in_memory(
        clock=clock, keyring=MasterKeyring.generate(), events=ALL_CLIENT_EVENTS
    )
    clients = Clients(
        broker.repository,
        broker.access,
        IdentityKeys(b"k" * 32),
        policy=policy,
        clock=clock,
        national_ids=check_national_id,
    )
    clients.access = AccessControl(relationships=Owners(clients))
    return broker, clients


def test_registration_stores_contact_details_encrypted() -> None:
    broker, clients = make()
    cid = clients.register(PORTAL, ANA)
    client = clients.get(REP, cid)
    assert (client.stage, client.kind, client.country, client.owner_id) == (
        Stage.REGISTERED,
        ClientKind.INDIVIDUAL,
        "GB",
        "staff:rep-1",
    )
    assert (client.name, client.email, client.phone) == (
        "Ana Lima",
        "Ana.Lima+fx@gmail.com",
        "+447911123456",
    )
    raw = b"".join(e.data for e in broker.store.read_all())
    assert b"Ana" not in raw
    assert b"7911" not in raw
    assert b"x1234567" not in raw.lower()


@pytest.mark.parametrize(
    ("email", "phone", "document", "matched"),
    [
        ("analima@gmail.com", None, None, ("email",)),
        ("ANA.LIMA@googlemail.com", None, None, ("email",)),
        ("other@example.com", "+44 7911 123456", None, ("phone",)),
        ("other@example.com", "+447911123456", None, ("phone",)),
        ("other@example.com", None, "X1234567", ("document",)),
        ("analima+x@gmail.com", "07911-123-456", "x1234567", ("email", "phone", "document")),
    ],
)
def test_the_same_person_written_differently_is_refused(
    email: str, phone: str | None, document: str | None, matched: tuple[str, ...]
) -> None:
    broker, clients = make()
    first = clients.register(PORTAL, ANA)
    before = broker.store.last_position()
    again = Registration(ClientKind.INDIVIDUAL, "GB", "A. Lima", email, phone, document)
    with pytest.raises(DuplicateClientError) as info:
        clients.register(PORTAL, again)
    # The portal learns that the person is known, never which client it is.
    assert info.value.existing_client_id is None
    assert first not in str(info.value)
    assert info.value.matched_on == matched
    assert "gmail" not in str(info.value)
    # Staff who may read the existing client are told its id (outside the message).
    with pytest.raises(DuplicateClientError) as staff:
        clients.register(SUPPORT, again)
    assert staff.value.existing_client_id == first
    assert first not in str(staff.value)
    assert broker.store.last_position() == before  # nothing half-written


def test_a_refusal_names_the_client_only_to_staff_allowed_to_see_it() -> None:
    _, clients = make()
    first = clients.register(PORTAL, ANA)
    again = Registration(ClientKind.INDIVIDUAL, "GB", "A. Lima", "analima@gmail.com")
    other_rep = Actor.staff("rep-2", Role.SALES)  # may register, but Ana is rep-1's client
    for actor, shown in [(PORTAL, None), (other_rep, None), (REP, first), (SUPPORT, first)]:
        with pytest.raises(DuplicateClientError) as info:
            clients.register(actor, again)
        assert info.value.existing_client_id == shown
        assert first not in str(info.value)
        assert info.value.matched_on == ("email",)


def test_a_different_person_is_not_a_duplicate() -> None:
    _, clients = make()
    clients.register(PORTAL, ANA)
    other = Registration(ClientKind.INDIVIDUAL, "GB", "Bo Chen", "bo@example.com", "07400 123456")
    assert clients.register(PORTAL, other)


def test_the_flag_policy_creates_and_flags_for_merge() -> None:
    _, clients = make(DedupPolicy.FLAG)
    first = clients.register(PORTAL, ANA)
    second = clients.register(PORTAL, ANA)
    flagged = clients.get(REP, second)
    assert flagged.merge_review == (first,)
    assert clients.get(REP, first).merge_review == ()


def test_racing_registrations_of_one_person_create_one_client() -> None:
    for _ in range(5):
        _, clients = make()
        barrier = threading.Barrier(3)
        outcomes: list[str] = []

        def register(
            clients: Clients = clients,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                clients.register(PORTAL, ANA)
                outcomes.append("created")
            except DuplicateClientError:
                outcomes.append("duplicate")
            except ConcurrencyError:
                outcomes.append("conflict")

        threads = [threading.Thread(target=register) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("created") == 1


@pytest.mark.parametrize(
    "path",
    [
        [Stage.VERIFIED, Stage.FUNDED, Stage.ACTIVE, Stage.DORMANT, Stage.ACTIVE, Stage.CLOSED],
        [Stage.VERIFIED, Stage.FUNDED, Stage.DORMANT, Stage.CLOSED],
        [Stage.CLOSED],
    ],
)
def test_every_legal_stage_move(path: list[Stage]) -> None:
    _, clients = make()
    cid = clients.register(PORTAL, ANA)
    for stage in path:
        assert clients.move(REP, cid, stage).stage is stage


@pytest.mark.parametrize(
    ("setup", "illegal"),
    [
        ([], Stage.FUNDED),
        ([], Stage.ACTIVE),
        ([Stage.VERIFIED], Stage.REGISTERED),
        ([Stage.VERIFIED, Stage.FUNDED, Stage.ACTIVE], Stage.FUNDED),
        ([Stage.CLOSED], Stage.ACTIVE),
        ([Stage.CLOSED], Stage.CLOSED),
    ],
)
def test_illegal_stage_moves_are_refused(setup: list[Stage], illegal: Stage) -> None:
    broker, clients = make()
    cid = clients.register(PORTAL, ANA)
    for stage in setup:
        clients.move(REP, cid, stage)
    before = broker.store.last_position()
    with pytest.raises(IllegalTransitionError, match="cannot go from"):
        clients.move(REP, cid, illegal)
    assert broker.store.last_position() == before


def test_leads_become_clients() -> None:
    _, clients = make()
    cid = clients.register(
        PORTAL,
        Registration(
            ClientKind.CORPORATE, "DE", "Acme", "ops@acme.de", owner_id="staff:rep-1", lead=True
        ),
    )
    assert clients.get(REP, cid).stage is Stage.LEAD
    with pytest.raises(IllegalTransitionError):
        clients.move(REP, cid, Stage.VERIFIED)
    assert clients.move(REP, cid, Stage.REGISTERED).stage is Stage.REGISTERED


def test_consents_keep_their_time_and_can_be_withdrawn() -> None:
    broker, clients = make()
    cid = clients.register(PORTAL, ANA)
    clients.give_consent(REP, cid, Consent.MARKETING)
    assert isinstance(broker.clock, FixedClock)
    broker.clock.advance(days=3)
    client = clients.give_consent(REP, cid, Consent.DATA_PROCESSING)
    assert client.consents == (
        (Consent.MARKETING, T0),
        (Consent.DATA_PROCESSING, T0 + timedelta(days=3)),
    )
    assert clients.give_consent(REP, cid, Consent.MARKETING).consents == client.consents  # no-op
    withdrawn = clients.withdraw_consent(REP, cid, Consent.MARKETING)
    assert not withdrawn.has_consent(Consent.MARKETING)
    assert withdrawn.has_consent(Consent.DATA_PROCESSING)


def test_ownership_history_and_row_scope() -> None:
    broker, clients = make()
    cid = clients.register(PORTAL, ANA)
    other_rep = Actor.staff("rep-2", Role.SALES)
    with pytest.raises(AccessDeniedError):
        clients.get(other_rep, cid)
    with pytest.raises(AccessDeniedError):
        clients.assign_owner(REP, cid, "staff:rep-2")  # reps do not reassign themselves
    assert isinstance(broker.clock, FixedClock)
    broker.clock.advance(hours=5)
    client = clients.assign_owner(ADMIN, cid, "staff:rep-2")
    assert client.owner_id == "staff:rep-2"
    assert client.owner_history == (("staff:rep-2", T0 + timedelta(hours=5)),)
    assert clients.get(other_rep, cid).owner_id == "staff:rep-2"
    with pytest.raises(AccessDeniedError):
        clients.get(REP, cid)


def test_the_appropriateness_test_sets_the_risk_profile() -> None:
    _, clients = make()
    cid = clients.register(PORTAL, ANA)
    assert (
        clients.assess_risk(REP, cid, {"q1": 1, "q2": 1}).risk_profile is RiskProfile.INEXPERIENCED
    )
    assert clients.assess_risk(REP, cid, {"q1": 3, "q2": 2}).risk_profile is RiskProfile.EXPERIENCED
    assert (
        clients.assess_risk(REP, cid, {"q1": 5, "q2": 5}).risk_profile is RiskProfile.SOPHISTICATED
    )
    with pytest.raises(ValidationError):
        clients.assess_risk(REP, cid, {"q1": -1})


@pytest.mark.parametrize(
    "bad",
    [
        Registration(ClientKind.INDIVIDUAL, "GB", "Ana", "not-an-email"),
        Registration(ClientKind.INDIVIDUAL, "GB", "Ana", "a@b.co", "12"),
        Registration(ClientKind.INDIVIDUAL, "GBR", "Ana", "a@b.co"),
        Registration(ClientKind.INDIVIDUAL, "GB", "  ", "a@b.co"),
        Registration(ClientKind.INDIVIDUAL, "GB", "Ana", "a@b.co", None, "X-12/3"),
    ],
)
def test_bad_registrations_are_typed_errors_and_write_nothing(bad: Registration) -> None:
    broker, clients = make()
    with pytest.raises(ValidationError):
        clients.register(PORTAL, bad)
    assert broker.store.last_position() == 0


def test_only_permitted_actors_register() -> None:
    _, clients = make()
    with pytest.raises(AccessDeniedError):
        clients.register(Actor.client("c-9"), ANA)


def test_contact_changes_are_encrypted_and_deduplicated() -> None:
    broker, clients = make()
    ana = clients.register(PORTAL, ANA)
    bo = clients.register(
        PORTAL,
        Registration(
            ClientKind.INDIVIDUAL, "GB", "Bo Chen", "bo@example.com", owner_id="staff:rep-1"
        ),
    )
    updated = clients.update_contact(REP, ana, email="ana.new@example.com", phone="07400 111222")
    assert (updated.email, updated.phone) == ("ana.new@example.com", "+447400111222")
    assert b"ana.new" not in b"".join(e.data for e in broker.store.read_all())
    # The new e-mail is Ana's now: Bo cannot take it, nor can a new registration.
    before = broker.store.last_position()
    with pytest.raises(DuplicateClientError) as info:
        clients.update_contact(REP, bo, email="Ana.New+x@EXAMPLE.com")
    assert info.value.existing_client_id == ana  # rep-1 owns Ana: may see her
    assert ana not in str(info.value)
    with pytest.raises(DuplicateClientError) as own:
        clients.update_contact(Actor.client(bo), bo, email="Ana.New+x@EXAMPLE.com")
    assert own.value.existing_client_id is None  # Bo may not learn Ana's id
    assert broker.store.last_position() == before
    with pytest.raises(DuplicateClientError):
        clients.register(
            PORTAL, Registration(ClientKind.INDIVIDUAL, "GB", "X", "ana.new@example.com")
        )
    # Setting one's own identifier again is fine.
    assert (
        clients.update_contact(REP, ana, email="ana.new@example.com").email == "ana.new@example.com"
    )
    with pytest.raises(ValidationError):
        clients.update_contact(REP, ana)


def test_profile_updates_are_encrypted_and_checked() -> None:
    broker, clients = make()
    cid = clients.register(PORTAL, ANA)
    shown = clients.update_profile(
        REP, cid, birth_date=date(1988, 3, 17), address="  1 Harbour St,   Dubai "
    )
    # A sales rep's answer is masked for the rep (birth date and address are not theirs to see).
    assert (shown.birth_date, shown.address, shown.name) == ("****", "****", "Ana Lima")
    client = broker.repository.get(Client, cid)  # the stored record, as the SDK reads it
    assert (client.birth_date, client.address, client.name) == (
        BirthDate("1988-03-17"),
        Address("1 Harbour St, Dubai"),
        PersonName("Ana Lima"),
    )
    assert b"Harbour" not in b"".join(e.data for e in broker.store.read_all())
    assert clients.update_profile(REP, cid, name="Ana  Maria Lima").name == "Ana Maria Lima"
    renamed = broker.repository.get(Client, cid)
    assert renamed.name == PersonName("Ana Maria Lima")
    assert renamed.address == Address("1 Harbour St, Dubai")
    before = broker.store.last_position()
    for bad in (
        {"birth_date": date(2015, 1, 1)},
        {"birth_date": date(1850, 1, 1)},
        {"address": "   "},
        {},
    ):
        with pytest.raises(ValidationError):
            clients.update_profile(REP, cid, **bad)
    assert broker.store.last_position() == before


def _path_to(target: Stage) -> list[Stage]:
    """A shortest legal path from registration to ``target`` (breadth first over the table)."""
    from fxcrm_core.clients.model import _NEXT

    paths: dict[Stage, list[Stage]] = {Stage.REGISTERED: []}
    queue = [Stage.REGISTERED]
    while queue:
        here = queue.pop(0)
        for there in _NEXT[here]:
            if there not in paths:
                paths[there] = [*paths[here], there]
                queue.append(there)
    return paths[target]


@pytest.mark.parametrize("start", [s for s in Stage if s is not Stage.LEAD])
@pytest.mark.parametrize("goal", list(Stage))
def test_the_whole_stage_table(start: Stage, goal: Stage) -> None:
    from fxcrm_core.clients.model import _NEXT

    broker, clients = make()
    cid = clients.register(PORTAL, ANA)
    for stage in _path_to(start):
        clients.move(REP, cid, stage)
    before = broker.store.last_position()
    if goal in _NEXT[start]:
        assert clients.move(REP, cid, goal).stage is goal
    else:
        with pytest.raises(IllegalTransitionError):
            clients.move(REP, cid, goal)
        assert broker.store.last_position() == before


@pytest.mark.parametrize("goal", list(Stage))
def test_the_lead_row_of_the_table(goal: Stage) -> None:
    _, clients = make()
    lead = clients.register(
        PORTAL,
        Registration(
            ClientKind.INDIVIDUAL, "GB", "Lee", "lee@example.com", owner_id=REP.id, lead=True
        ),
    )
    if goal in (Stage.REGISTERED, Stage.CLOSED):
        assert clients.move(REP, lead, goal).stage is goal
    else:
        with pytest.raises(IllegalTransitionError):
            clients.move(REP, lead, goal)


SPAIN = Registration(
    ClientKind.INDIVIDUAL, "ES", "Ana Lima", "ana@example.es", document_number="54362315-k"
)


@pytest.mark.parametrize(
    ("number", "error", "reason"),
    [
        ("54362315-Z", IdentifierChecksumError, IdentifierReason.CHECKSUM),
        ("5436", IdentifierFormatError, IdentifierReason.LENGTH),
    ],
)
def test_a_national_id_number_is_checked_at_registration(
    number: str, error: type[InvalidIdentifierError], reason: IdentifierReason
) -> None:
    broker, clients = make()
    bad = attrs.evolve(SPAIN, document_number=number)
    with pytest.raises(error) as info:
        clients.register(PORTAL, bad)
    assert info.value.reason is reason
    assert number[:4] not in str(info.value)
    assert broker.store.last_position() == 0


def test_an_impossible_national_id_is_told_apart_from_a_typo() -> None:
    _, clients = make()
    pesel = Registration(
        ClientKind.INDIVIDUAL, "PL", "Ola Nowak", "ola@example.pl", document_number="44131401350"
    )
    with pytest.raises(ImpossibleIdentifierError) as info:
        clients.register(PORTAL, pesel)
    assert (info.value.reason, info.value.checksum_valid) == (IdentifierReason.BIRTH_DATE, True)


def test_national_id_numbers_deduplicate_in_their_compact_form() -> None:
    _, clients = make()
    clients.register(PORTAL, SPAIN)
    again = Registration(
        ClientKind.INDIVIDUAL, "ES", "A. Lima", "other@example.es", document_number="54362315K"
    )
    with pytest.raises(DuplicateClientError) as info:
        clients.register(PORTAL, again)
    assert info.value.matched_on == ("document",)


def test_a_released_identity_can_be_claimed_again() -> None:
    broker, clients = make()
    first = clients.register(PORTAL, ANA)
    digests = clients.identities.of(
        email=ANA.email, phone=ANA.phone, country="GB", document=ANA.document_number
    )
    with UnitOfWork(broker.repository, EventMetadata("staff:dpo", reason="erasure")) as uow:
        for digest in digests.values():
            claim = uow.get(IdentityClaim, digest)
            uow.record(claim, *claim.release())
        uow.commit()
    assert clients.find_by_email(ADMIN, ANA.email) is None
    second = clients.register(PORTAL, ANA)
    assert second != first
    assert clients.find_by_email(ADMIN, "analima@gmail.com") == second
    claim = broker.repository.get(IdentityClaim, digests["email"])
    assert claim.release()
    assert claim.evolve(client_id=None).release() == []  # nothing held, nothing to release
