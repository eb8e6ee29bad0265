"""The KYC service: submit, review, expire and re-request documents; verification levels and the
rights they unlock. Every command checks the actor's permission on the client's row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.events import (
    DomainEvent,
    EventMetadata,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kyc.documents import (
    DEFAULT_LEVELS,
    DocumentRegister,
    DocumentSubmitted,
    DocumentType,
    KycDocument,
    LevelPolicy,
    Reminder,
    Right,
)
from fxcrm_core.kyc.identifiers import national_id_country, validate_national_id
from fxcrm_core.kyc.levels import KycStatus
from fxcrm_core.kyc.mrz import parse_mrz

__all__ = ["InvalidDocumentError", "KycLevelTooLowError", "KycService"]


class InvalidDocumentError(ValidationError):
    """A document's data failed its checks; the message lists every finding, no personal data."""

    default_message = "the document failed its checks"


class KycLevelTooLowError(FxCrmError, PermissionError):
    default_message = "the client's verification level does not allow this"


class KycService:
    def __init__(
        self,
        repository: Repository,
        projections: ProjectionRunner,
        access: AccessControl,
        *,
        levels: LevelPolicy = DEFAULT_LEVELS,
        clock: Clock | None = None,
        ids: IdGenerator | None = None,
        closed: Callable[[str], bool] | None = None,
    ) -> None:
        self.repository = repository
        self.projections = projections
        self.access = access
        self.levels = levels
        self.closed = closed  # whether a client's relationship is closed (the broker asks clients)
        self.clock = clock or SystemClock()
        self.ids = ids or IdGenerator(self.clock)
        self.register = DocumentRegister()

    def _today(self) -> date:
        return self.clock.now().date()

    def _uow(self, actor: Actor, reason: str) -> UnitOfWork:
        return UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason))

    def _document(self, actor: Actor, document_id: str, permission: str) -> KycDocument:
        doc = self.repository.get(KycDocument, document_id)
        self.access.require(actor, permission, client_id=doc.client_id)
        return doc

    def submit(
        self,
        actor: Actor,
        client_id: str,
        doc_type: DocumentType | str,
        file_ref: str,
        *,
        expires_on: date | None = None,
        number: str | None = None,
        issuing_country: str | None = None,
        mrz: str | None = None,
    ) -> str:
        """Submit a document; an MRZ, when given, is checked and fills number, state, expiry.

        The ``number`` given with a national identity card is the holder's national identity
        number: where the issuing country has a standard it is validated (a typed
        :class:`InvalidIdentifierError` naming the reason) and kept in its compact form.
        """
        self.access.require(actor, "kyc.submit", client_id=client_id)
        kind = doc_type if isinstance(doc_type, DocumentType) else DocumentType.parse(doc_type)
        today = self._today()
        national = kind is DocumentType.NATIONAL_ID and number is not None
        if mrz is not None:
            if not kind.proves_identity:
                raise InvalidDocumentError("only identity documents carry a machine-readable zone")
            parsed = parse_mrz(mrz, today=today)
            findings = [f"{name} check digit" for name, ok in parsed.check_digits.items() if not ok]
            findings += list(parsed.problems)
            if expires_on is not None and parsed.expiry_date not in (None, expires_on):
                findings.append("expiry date differs from the machine-readable zone")
            if findings:
                raise InvalidDocumentError("the document failed: " + "; ".join(findings))
            expires_on = expires_on or parsed.expiry_date
            number = number or parsed.document_number
            issuing_country = issuing_country or parsed.issuing_state
        if national and number is not None and issuing_country:
            code = national_id_country(issuing_country)
            if code is not None:
                number = validate_national_id(code, number)
        if kind.expires and expires_on is None:
            raise InvalidDocumentError("an identity document needs its expiry date")
        if expires_on is not None and expires_on <= today:
            raise InvalidDocumentError("the document has already expired")
        if not file_ref:
            raise ValidationError("a document needs the reference of its stored file")
        document_id = self.ids()
        with self._uow(actor, "document submitted") as uow:
            uow.record(
                KycDocument.blank(document_id),
                DocumentSubmitted(
                    document_id,
                    client_id,
                    kind,
                    file_ref,
                    actor.id,
                    expires_on,
                    issuing_country,
                    number,
                ),
            )
            uow.commit()
        return document_id

    def approve(self, reviewer: Actor, document_id: str) -> KycDocument:
        doc = self._document(reviewer, document_id, "kyc.review")
        return self._record(
            reviewer, doc, "document approved", doc.approve(reviewer.id, self._today())
        )

    def reject(self, reviewer: Actor, document_id: str, reason: str) -> KycDocument:
        doc = self._document(reviewer, document_id, "kyc.review")
        return self._record(reviewer, doc, "document rejected", doc.reject(reviewer.id, reason))

    def rerequest(self, reviewer: Actor, document_id: str, reason: str) -> KycDocument:
        doc = self._document(reviewer, document_id, "kyc.review")
        return self._record(
            reviewer, doc, "document re-requested", doc.rerequest(reviewer.id, reason)
        )

    def _record(
        self, actor: Actor, doc: KycDocument, reason: str, events: list[DomainEvent]
    ) -> KycDocument:
        with self._uow(actor, reason) as uow:
            doc = uow.record(doc, *events)
            uow.commit()
        return doc

    def expire_due(self, actor: Actor) -> list[str]:
        """Mark every approved document past its expiry date as expired; returns their ids."""
        self.access.require(actor, "kyc.review")
        self.projections.catch_up(self.register)
        today = self._today()
        expired = []
        for document_id in self.register.due_to_expire(today):
            doc = self.repository.get(KycDocument, document_id)
            self._record(actor, doc, "document expired", doc.expire(today))
            expired.append(document_id)
        return expired

    def reminders(self, *, days_before: int = 30) -> list[Reminder]:
        """Approved documents expiring within ``days_before`` days: ask for new ones in time."""
        self.projections.catch_up(self.register)
        return self.register.reminders(self._today(), days_before=days_before)

    def expiring_documents(self, client_id: str) -> list[tuple[str, str, date]]:
        """The client's approved documents that expire, as (document id, type, expiry date),
        from every decision committed so far (what engagement rules remind a client of)."""
        self.projections.catch_up(self.register)
        return self.register.expiring_of(client_id)

    def level(self, client_id: str) -> int:
        """The client's verification level now, from every document decision committed so far
        by any process (the register catches up with the log first; expiry counts by date)."""
        self.projections.catch_up(self.register)
        return self.levels.level(self.register.valid_types(client_id, self._today()))

    def recorded_level(self, client_id: str) -> int:
        """The level last recorded by the level policy (0: none yet)."""
        status = self.repository.load(KycStatus, client_id)
        return status.level if status else 0

    def on_decision(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """Policy: after a document decision, record the client's level if it changed (as of
        the decision's trading date, so a replay decides the same)."""
        self.projections.catch_up(self.register)
        client_id = self.register.client_of(recorded.stream_id.removeprefix("kycdoc-"))
        if client_id is None:
            return
        on = recorded.recorded_at.date()
        level = self.levels.level(self.register.valid_types(client_id, on))
        status = uow.load(KycStatus, client_id) or KycStatus.blank(client_id)
        events = status.record(level)
        if events:
            uow.record(status, *events)

    def require(self, client_id: str, right: Right, *, received: bool = False) -> None:
        """Refuse unless the client's level (see :meth:`level`) allows ``right``. A client
        whose relationship is closed (``closed``, asked of the clients context) keeps only the
        right to withdraw what is left: no deposit, wire or transfer in, no new account;
        ``received`` marks money the broker already holds for the client (a bank wire that
        arrived before the close), which is credited still, to be withdrawn."""
        closing = right is not Right.WITHDRAW and not received
        if closing and self.closed is not None and self.closed(client_id):
            raise KycLevelTooLowError("the client's relationship is closed")
        level = self.level(client_id)
        if not self.levels.allows(level, right):
            raise KycLevelTooLowError(
                f"verification level {level} does not allow {right.value.replace('_', ' ')}"
            )
