"""KYC documents: every workflow step, refusals, MRZ checks at submission, expiry, reminders,
and the verification levels that unlock rights."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.kernel import (
    AccessDeniedError,
    FixedClock,
    IllegalTransitionError,
    ValidationError,
)
from fxcrm_core.kyc import (
    DOCUMENT_EVENTS,
    DocumentStatus,
    DocumentType,
    IdentifierChecksumError,
    IdentifierFormatError,
    IdentifierReason,
    ImpossibleIdentifierError,
    InvalidDocumentError,
    InvalidIdentifierError,
    KycDocument,
    KycLevelTooLowError,
    KycService,
    MrzFormatError,
    Right,
    UnknownDocumentTypeError,
    check_digit,
)
from fxcrm_core.kyc.documents import DocumentSubmitted
from fxcrm_core.privacy import DocumentNumber, MasterKeyring

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
CLIENT = Actor.client("c-1")
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
IN_A_YEAR = date(2027, 11, 2)


def passport_mrz(expiry: date, *, break_digit: bool = False) -> str:
    doc, dob, exp = "L898902C3", "740812", expiry.strftime("%y%m%d")
    exp_cd = check_digit(exp) if not break_digit else str((int(check_digit(exp)) + 1) % 10)
    personal = "ZE184226B<<<<<"
    line2 = doc + check_digit(doc) + "DEU" + dob + check_digit(dob) + "F" + exp + exp_cd
    line2 += personal + check_digit(personal)
    line2 += check_digit(line2[0:10] + line2[13:20] + line2[21:43])
    return "P<DEUERIKSSON<<ANNA<MARIA".ljust(44, "<") + "\n" + line2


def make() -> tuple[Broker, KycService, FixedClock]:
    clock = FixedClock(T0)
    broker = Broker.in_memory(clock=clock, keyring=MasterKeyring.generate(), events=DOCUMENT_EVENTS)
    return (
        broker,
        KycService(broker.repository, broker.projections, broker.access, clock=clock),
        clock,
    )


def level_two(kyc: KycService) -> tuple[str, str]:
    passport = kyc.submit(CLIENT, "c-1", "passport", "file-1", mrz=passport_mrz(IN_A_YEAR))
    address = kyc.submit(CLIENT, "c-1", DocumentType.PROOF_OF_ADDRESS, "file-2")
    kyc.approve(OFFICER, passport)
    kyc.approve(OFFICER, address)
    return passport, address


def test_submission_with_an_mrz_fills_expiry_and_encrypts_the_number() -> None:
    broker, kyc, _ = make()
    doc_id = kyc.submit(CLIENT, "c-1", "passport", "file-1", mrz=passport_mrz(IN_A_YEAR))
    doc = broker.repository.get(KycDocument, doc_id)
    assert (doc.status, doc.expires_on, doc.doc_type) == (
        DocumentStatus.SUBMITTED,
        IN_A_YEAR,
        DocumentType.PASSPORT,
    )
    assert b"L898902C3" not in b"".join(e.data for e in broker.store.read_all())


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (
            {"mrz": passport_mrz(IN_A_YEAR, break_digit=True)},
            InvalidDocumentError,
            "expiry_date check digit",
        ),
        ({"mrz": "P<DEU\nNONSENSE"}, MrzFormatError, "lines"),
        (
            {"mrz": passport_mrz(IN_A_YEAR), "expires_on": date(2030, 1, 1)},
            InvalidDocumentError,
            "differs",
        ),
        ({"mrz": passport_mrz(date(2026, 1, 1))}, InvalidDocumentError, "already expired"),
        ({}, InvalidDocumentError, "needs its expiry date"),
        ({"expires_on": date(2026, 11, 2)}, InvalidDocumentError, "already expired"),
    ],
)
def test_bad_identity_documents_are_refused_with_every_finding(
    kwargs: dict[str, object], error: type[Exception], fragment: str
) -> None:
    broker, kyc, _ = make()
    with pytest.raises(error, match=fragment):
        kyc.submit(CLIENT, "c-1", "passport", "file-1", **kwargs)  # type: ignore[arg-type]
    assert broker.store.last_position() == 0


def test_impossible_mrz_dates_are_findings() -> None:
    _, kyc, _ = make()
    mrz = passport_mrz(IN_A_YEAR)
    l1, l2 = mrz.split("\n")
    l2 = l2[:13] + "741332" + check_digit("741332") + l2[20:]
    l2 = l2[:43] + check_digit(l2[0:10] + l2[13:20] + l2[21:43])
    with pytest.raises(InvalidDocumentError, match="impossible date of birth"):
        kyc.submit(CLIENT, "c-1", "passport", "f", mrz=l1 + "\n" + l2)


def test_unknown_document_types_are_typed_errors() -> None:
    _, kyc, _ = make()
    with pytest.raises(UnknownDocumentTypeError) as info:
        kyc.submit(CLIENT, "c-1", "library_card", "f")
    assert isinstance(info.value, ValidationError)


@pytest.mark.parametrize(
    ("steps", "final"),
    [
        (["approve"], DocumentStatus.APPROVED),
        (["reject"], DocumentStatus.REJECTED),
        (["rerequest"], DocumentStatus.REREQUESTED),
        (["approve", "rerequest"], DocumentStatus.REREQUESTED),
        (["approve", "expire", "rerequest"], DocumentStatus.REREQUESTED),
    ],
)
def test_every_review_step(steps: list[str], final: DocumentStatus) -> None:
    _, kyc, clock = make()
    doc_id = kyc.submit(CLIENT, "c-1", "passport", "f", expires_on=IN_A_YEAR)
    for step in steps:
        if step == "approve":
            doc = kyc.approve(OFFICER, doc_id)
        elif step == "reject":
            doc = kyc.reject(OFFICER, doc_id, "blurred")
        elif step == "rerequest":
            doc = kyc.rerequest(OFFICER, doc_id, "new address")
        else:
            clock.set(datetime(2027, 11, 3, tzinfo=UTC))
            assert kyc.expire_due(OFFICER) == [doc_id]
            doc = kyc.repository.get(KycDocument, doc_id)
    assert doc.status is final


@pytest.mark.parametrize(
    ("steps", "illegal"),
    [
        (["reject"], "approve"),
        (["reject"], "rerequest"),
        (["approve"], "approve"),
        (["approve"], "reject"),
        (["rerequest"], "approve"),
        ([], "expire"),
    ],
)
def test_illegal_review_steps_are_refused(steps: list[str], illegal: str) -> None:
    broker, kyc, _ = make()
    doc_id = kyc.submit(CLIENT, "c-1", "passport", "f", expires_on=IN_A_YEAR)
    actions: dict[str, Callable[[], object]] = {
        "approve": lambda: kyc.approve(OFFICER, doc_id),
        "reject": lambda: kyc.reject(OFFICER, doc_id, "no"),
        "rerequest": lambda: kyc.rerequest(OFFICER, doc_id, "again"),
        "expire": lambda: kyc.repository.get(KycDocument, doc_id).expire(date(2027, 12, 1)),
    }
    for step in steps:
        actions[step]()
    before = broker.store.last_position()
    with pytest.raises(IllegalTransitionError):
        actions[illegal]()
    assert broker.store.last_position() == before


def test_reviews_need_a_reviewer_other_than_the_submitter_and_the_permission() -> None:
    _, kyc, _ = make()
    own = kyc.submit(OFFICER, "c-1", "proof_of_address", "f")
    with pytest.raises(IllegalTransitionError, match="other than its submitter"):
        kyc.approve(OFFICER, own)
    with pytest.raises(AccessDeniedError):
        kyc.approve(Actor.staff("s", Role.SUPPORT), own)
    with pytest.raises(AccessDeniedError):
        kyc.submit(Actor.client("c-2"), "c-1", "selfie", "f")
    with pytest.raises(ValidationError):
        kyc.reject(Actor.staff("o2", Role.COMPLIANCE), own, "   ")


def test_expiry_reminders_before_the_date() -> None:
    _, kyc, clock = make()
    passport, _ = level_two(kyc)
    clock.set(datetime(2027, 9, 1, tzinfo=UTC))
    assert kyc.reminders(days_before=30) == []
    clock.set(datetime(2027, 10, 10, tzinfo=UTC))
    (reminder,) = kyc.reminders(days_before=30)
    assert (reminder.document_id, reminder.client_id, reminder.expires_on) == (
        passport,
        "c-1",
        IN_A_YEAR,
    )
    clock.set(datetime(2027, 11, 2, tzinfo=UTC))
    assert kyc.expire_due(OFFICER) == [passport]
    assert kyc.reminders() == []
    assert kyc.expire_due(OFFICER) == []


def test_levels_unlock_rights_and_expiry_takes_them_back() -> None:
    _, kyc, clock = make()
    assert kyc.level("c-1") == 1
    kyc.require("c-1", Right.OPEN_DEMO)
    with pytest.raises(KycLevelTooLowError, match="open live"):
        kyc.require("c-1", Right.OPEN_LIVE)
    level_two(kyc)
    assert kyc.level("c-1") == 2
    kyc.require("c-1", Right.DEPOSIT)
    with pytest.raises(KycLevelTooLowError):
        kyc.require("c-1", Right.WITHDRAW)
    selfie = kyc.submit(CLIENT, "c-1", "selfie", "f3")
    funds = kyc.submit(CLIENT, "c-1", "source_of_funds", "f4")
    kyc.approve(OFFICER, selfie)
    assert kyc.level("c-1") == 2
    kyc.approve(OFFICER, funds)
    assert kyc.level("c-1") == 3
    kyc.require("c-1", Right.WITHDRAW)
    clock.set(datetime(2027, 11, 2, tzinfo=UTC) + timedelta(days=1))
    assert kyc.level("c-1") == 1  # the passport expired: no identity, no level 2


@pytest.mark.parametrize(
    ("country", "number", "error", "reason"),
    [
        ("ES", "54362315-Z", IdentifierChecksumError, IdentifierReason.CHECKSUM),
        ("ESP", "54362315-Z", IdentifierChecksumError, IdentifierReason.CHECKSUM),
        ("PL", "44051401358", IdentifierChecksumError, IdentifierReason.CHECKSUM),
        # PESEL 1944-13-14 with a right check digit: no typo, an impossible number.
        ("PL", "44131401350", ImpossibleIdentifierError, IdentifierReason.BIRTH_DATE),
        ("ES", "5436", IdentifierFormatError, IdentifierReason.LENGTH),
    ],
)
def test_a_national_id_number_is_checked_at_submission(
    country: str, number: str, error: type[InvalidIdentifierError], reason: IdentifierReason
) -> None:
    broker, kyc, _ = make()
    before = broker.store.last_position()
    with pytest.raises(error) as info:
        kyc.submit(
            CLIENT, "c-1", "national_id", "file-1",
            expires_on=IN_A_YEAR, number=number, issuing_country=country,
        )  # fmt: skip
    assert info.value.reason is reason
    assert number[:5] not in str(info.value)
    assert broker.store.last_position() == before


def test_a_valid_national_id_number_is_kept_compact() -> None:
    broker, kyc, _ = make()
    doc_id = kyc.submit(
        CLIENT, "c-1", "national_id", "file-1",
        expires_on=IN_A_YEAR, number="54362315-k", issuing_country="ES",
    )  # fmt: skip
    stored = broker.codec.decode(broker.store.read_stream(f"kycdoc-{doc_id}")[0]).event
    assert isinstance(stored, DocumentSubmitted)
    assert (stored.number, stored.issuing_country) == (DocumentNumber("54362315K"), "ES")
    # A country without a known standard, and a passport's number, are not national numbers.
    assert kyc.submit(
        CLIENT, "c-1", "national_id", "file-2",
        expires_on=IN_A_YEAR, number="X1234567", issuing_country="GB",
    )  # fmt: skip
    assert kyc.submit(
        CLIENT, "c-1", "passport", "file-3",
        expires_on=IN_A_YEAR, number="54362315Z", issuing_country="ES",
    )  # fmt: skip
