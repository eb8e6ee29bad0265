"""KYC documents: submission (with its MRZ checked when it has one), review, expiry with
reminders, and the verification level they add up to, which unlocks a client's rights."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent, RecordedEvent
from fxcrm_core.kernel.errors import IllegalTransitionError, ValidationError
from fxcrm_core.privacy.pii import DocumentNumber

__all__ = [
    "DOCUMENT_EVENTS",
    "DEFAULT_LEVELS",
    "DocumentApproved",
    "DocumentExpired",
    "DocumentReRequested",
    "DocumentRegister",
    "DocumentRejected",
    "DocumentStatus",
    "DocumentSubmitted",
    "DocumentType",
    "KycDocument",
    "LevelPolicy",
    "Reminder",
    "Right",
    "UnknownDocumentTypeError",
]


class UnknownDocumentTypeError(ValidationError):
    default_message = "unknown document type"


class DocumentType(enum.Enum):
    PASSPORT = "passport"
    NATIONAL_ID = "national_id"
    DRIVING_LICENCE = "driving_licence"
    PROOF_OF_ADDRESS = "proof_of_address"
    SELFIE = "selfie"
    SOURCE_OF_FUNDS = "source_of_funds"
    PAYMENT_METHOD_PROOF = "payment_method_proof"

    @classmethod
    def parse(cls, code: str) -> DocumentType:
        try:
            return cls(code.strip().lower())
        except ValueError:
            raise UnknownDocumentTypeError(
                f"unknown document type; use one of {', '.join(t.value for t in cls)}"
            ) from None

    @property
    def proves_identity(self) -> bool:
        return self in _IDENTITY

    @property
    def expires(self) -> bool:
        """Identity documents carry an expiry date; the others are valid until re-requested."""
        return self in _IDENTITY


_IDENTITY = frozenset(
    {DocumentType.PASSPORT, DocumentType.NATIONAL_ID, DocumentType.DRIVING_LICENCE}
)


class DocumentStatus(enum.Enum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REREQUESTED = "rerequested"


_NEXT: dict[DocumentStatus, frozenset[DocumentStatus]] = {
    DocumentStatus.SUBMITTED: frozenset(
        {DocumentStatus.APPROVED, DocumentStatus.REJECTED, DocumentStatus.REREQUESTED}
    ),
    DocumentStatus.APPROVED: frozenset({DocumentStatus.EXPIRED, DocumentStatus.REREQUESTED}),
    DocumentStatus.EXPIRED: frozenset({DocumentStatus.REREQUESTED}),
    DocumentStatus.REJECTED: frozenset(),
    DocumentStatus.REREQUESTED: frozenset(),
}


def _document_number(value: str | DocumentNumber | None) -> DocumentNumber | None:
    if value is None or isinstance(value, DocumentNumber):
        return value
    if not isinstance(value, str):
        raise ValidationError("a document number is text")
    return DocumentNumber.from_stored(value)


@attrs.frozen
class DocumentSubmitted(DomainEvent):
    __subject__ = "client_id"
    document_id: str
    client_id: str
    doc_type: DocumentType
    file_ref: str  # the host's storage id of the file; the file itself is not in the log
    submitted_by: str
    expires_on: date | None = None
    issuing_country: str | None = None
    # The document's number as the one DocumentNumber value (upper case, no spaces): given as
    # text (as the service and older code built it), read back through DocumentNumber.from_stored.
    number: DocumentNumber | None = attrs.field(
        default=None, converter=_document_number, metadata={"pii": True}, repr=False
    )


@attrs.frozen
class DocumentApproved(DomainEvent):
    reviewer_id: str
    on: date


@attrs.frozen
class DocumentRejected(DomainEvent):
    reviewer_id: str
    reason: str


@attrs.frozen
class DocumentExpired(DomainEvent):
    on: date


@attrs.frozen
class DocumentReRequested(DomainEvent):
    requested_by: str
    reason: str


DOCUMENT_EVENTS = (
    DocumentSubmitted,
    DocumentApproved,
    DocumentRejected,
    DocumentExpired,
    DocumentReRequested,
)


@attrs.frozen(kw_only=True)
class KycDocument(Aggregate):
    category = "kycdoc"
    client_id: str = ""
    doc_type: DocumentType | None = None
    status: DocumentStatus | None = None
    expires_on: date | None = None
    submitted_by: str = ""
    reason: str | None = None

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case DocumentSubmitted():
                return self.evolve(
                    client_id=event.client_id,
                    doc_type=event.doc_type,
                    status=DocumentStatus.SUBMITTED,
                    expires_on=event.expires_on,
                    submitted_by=event.submitted_by,
                )
            case DocumentApproved():
                return self.evolve(status=DocumentStatus.APPROVED)
            case DocumentRejected(reason=reason):
                return self.evolve(status=DocumentStatus.REJECTED, reason=reason)
            case DocumentExpired():
                return self.evolve(status=DocumentStatus.EXPIRED)
            case DocumentReRequested(reason=reason):
                return self.evolve(status=DocumentStatus.REREQUESTED, reason=reason)
        raise ValidationError(f"KycDocument cannot apply {type(event).__name__}")

    def _to(self, status: DocumentStatus) -> None:
        if self.status is None:
            raise ValidationError("no such document")
        if status not in _NEXT[self.status]:
            raise IllegalTransitionError(
                f"a {self.status.value} document cannot become {status.value}"
            )

    def approve(self, reviewer_id: str, today: date) -> list[DomainEvent]:
        self._to(DocumentStatus.APPROVED)
        if reviewer_id == self.submitted_by:
            raise IllegalTransitionError(
                "a document is reviewed by someone other than its submitter"
            )
        if self.expires_on is not None and self.expires_on <= today:
            raise IllegalTransitionError("an expired document cannot be approved")
        return [DocumentApproved(reviewer_id, today)]

    def reject(self, reviewer_id: str, reason: str) -> list[DomainEvent]:
        self._to(DocumentStatus.REJECTED)
        if not reason.strip():
            raise ValidationError("a rejection needs a reason")
        return [DocumentRejected(reviewer_id, reason)]

    def expire(self, today: date) -> list[DomainEvent]:
        self._to(DocumentStatus.EXPIRED)
        if self.expires_on is None or self.expires_on > today:
            raise IllegalTransitionError("the document has not expired yet")
        return [DocumentExpired(today)]

    def rerequest(self, by: str, reason: str) -> list[DomainEvent]:
        self._to(DocumentStatus.REREQUESTED)
        if not reason.strip():
            raise ValidationError("a re-request needs a reason")
        return [DocumentReRequested(by, reason)]


class Right(enum.Enum):
    OPEN_DEMO = "open_demo"
    OPEN_LIVE = "open_live"
    DEPOSIT = "deposit"
    WITHDRAW = "withdraw"


@attrs.frozen
class LevelPolicy:
    """What each verification level needs (approved, unexpired) and which rights it unlocks.

    Level 1 is any registered client. Each requirement is a set of alternatives: one approved
    document of any type in the set satisfies it.
    """

    requirements: Mapping[int, tuple[frozenset[DocumentType], ...]]
    rights: Mapping[int, frozenset[Right]]

    def level(self, valid: Iterable[DocumentType]) -> int:
        have = frozenset(valid)
        level = 1
        for candidate in sorted(self.requirements):
            if all(have & alternatives for alternatives in self.requirements[candidate]):
                level = candidate
            else:
                break
        return level

    def allows(self, level: int, right: Right) -> bool:
        return right in self.rights.get(level, frozenset())


DEFAULT_LEVELS = LevelPolicy(
    requirements={
        2: (_IDENTITY, frozenset({DocumentType.PROOF_OF_ADDRESS})),
        3: (
            _IDENTITY,
            frozenset({DocumentType.PROOF_OF_ADDRESS}),
            frozenset({DocumentType.SELFIE}),
            frozenset({DocumentType.SOURCE_OF_FUNDS, DocumentType.PAYMENT_METHOD_PROOF}),
        ),
    },
    rights={
        1: frozenset({Right.OPEN_DEMO}),
        2: frozenset({Right.OPEN_DEMO, Right.OPEN_LIVE, Right.DEPOSIT}),
        3: frozenset(Right),
    },
)


@attrs.frozen
class Reminder:
    client_id: str
    document_id: str
    doc_type: DocumentType
    expires_on: date


@attrs.define
class _Entry:
    client_id: str
    doc_type: DocumentType
    status: DocumentStatus
    expires_on: date | None
    document_id: str = ""


class DocumentRegister:
    """A read model of every document's status and expiry, for levels, expiry and reminders."""

    name = "kyc-documents"
    event_types: frozenset[str] | None = frozenset(e.__name__ for e in DOCUMENT_EVENTS)

    def __init__(self) -> None:
        self.documents: dict[str, _Entry] = {}
        self._by_client: dict[str, list[_Entry]] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        document_id = recorded.stream_id.removeprefix("kycdoc-")
        if isinstance(event, DocumentSubmitted):
            new = _Entry(
                event.client_id, event.doc_type, DocumentStatus.SUBMITTED, event.expires_on,
                document_id,
            )  # fmt: skip
            self.documents[document_id] = new
            self._by_client.setdefault(event.client_id, []).append(new)
            return
        entry = self.documents.get(document_id)
        if entry is None:
            return
        entry.status = {
            DocumentApproved: DocumentStatus.APPROVED,
            DocumentRejected: DocumentStatus.REJECTED,
            DocumentExpired: DocumentStatus.EXPIRED,
            DocumentReRequested: DocumentStatus.REREQUESTED,
        }[type(event)]

    def reset(self) -> None:
        self.documents.clear()
        self._by_client.clear()

    def client_of(self, document_id: str) -> str | None:
        entry = self.documents.get(document_id)
        return entry.client_id if entry else None

    def valid_types(self, client_id: str, today: date) -> set[DocumentType]:
        return {
            e.doc_type
            for e in self._by_client.get(client_id, ())
            if e.status is DocumentStatus.APPROVED
            and (e.expires_on is None or e.expires_on > today)
        }

    def expiring_of(self, client_id: str) -> list[tuple[str, str, date]]:
        """The client's approved documents that expire, as (document id, type, expiry date)."""
        return [
            (e.document_id, e.doc_type.value, e.expires_on)
            for e in self._by_client.get(client_id, ())
            if e.status is DocumentStatus.APPROVED and e.expires_on is not None
        ]

    def due_to_expire(self, today: date) -> list[str]:
        return sorted(
            doc_id
            for doc_id, e in self.documents.items()
            if e.status is DocumentStatus.APPROVED
            and e.expires_on is not None
            and e.expires_on <= today
        )

    def reminders(self, today: date, *, days_before: int = 30) -> list[Reminder]:
        horizon = today + timedelta(days=days_before)
        return sorted(
            (
                Reminder(e.client_id, doc_id, e.doc_type, e.expires_on)
                for doc_id, e in self.documents.items()
                if e.status is DocumentStatus.APPROVED
                and e.expires_on is not None
                and today < e.expires_on <= horizon
            ),
            key=lambda r: (r.expires_on, r.document_id),
        )
