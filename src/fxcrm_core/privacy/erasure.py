"""Erasure by crypto-shredding: destroy the subject's data key, keep everything else.

Ids, amounts and dates stay readable, so the ledger still balances and aggregates replay; every
PII field of the subject reads as ``ERASED``. The erasure is itself an event (who, when, why),
and it is refused while a retention hold applies: by default AML record keeping, 5 years after
the relationship ended. For a client, the end of the relationship comes from the client's own
record (when it was closed), and the erasure is refused while money or an account remains
(:class:`ErasureChecks`, answered by the rest of the system).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, Self

import attrs
import pendulum

from fxcrm_core.access.control import AccessControl, Actor
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    Repository,
    SnapshotStore,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import RetentionHoldError, ValidationError
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.privacy.encryption import FieldEncryption
from fxcrm_core.privacy.keys import is_reserved_subject

__all__ = [
    "ERASURE_EVENTS",
    "Erasure",
    "ErasureBlockedError",
    "ErasureChecks",
    "ErasureReceipt",
    "RetentionPolicy",
    "SubjectErased",
]

log = logging.getLogger("fxcrm_core.privacy")


class ErasureBlockedError(RetentionHoldError):
    """Erasure refused: the subject still has money or an account with the broker
    (``remaining`` names what: ``balance``, ``hold``, ``open account``, ``open wire``,
    ``rebates owed``)."""

    default_message = "erasure refused: the client still has a balance, a hold or an account"

    def __init__(self, remaining: tuple[str, ...]) -> None:
        super().__init__(f"erasure refused: the client still has: {', '.join(remaining)}")
        self.remaining = remaining


class ErasureChecks(Protocol):
    """What the rest of the system knows about a subject, asked before erasing it (the broker
    wires ``fxcrm_core.erasure_checks.BrokerErasureChecks``: clients, ledger, accounts)."""

    def knows(self, subject_id: str) -> bool:
        """True if the system keeps the subject's relationship (a client): its end then comes
        from :meth:`relationship_ended_at`, never from the caller."""
        ...

    def relationship_ended_at(self, subject_id: str) -> datetime | None:
        """When the relationship ended, from the subject's own record; None if it has not."""
        ...

    def open_positions(self, subject_id: str) -> list[str]:
        """What still ties the subject to the broker: ``balance``, ``hold``, ``open account``,
        ``open wire`` (empty: nothing)."""
        ...

    def release(self, subject_id: str, uow: UnitOfWork) -> None:
        """Record, in the erasure's own commit, what goes with the subject's personal data
        (its deduplication claims, so the person may register again)."""
        ...

    def shred_with(self, subject_id: str) -> list[str]:
        """The other data subjects whose keys are destroyed with this one's (its deduplication
        claims, each sealed under a key of its own so that it names nobody once erased). Asked
        after the erasure is recorded, on every call: from the log, so a retry finds them."""
        ...


@attrs.frozen
class SubjectErased(DomainEvent):
    subject_id: str
    relationship_ended_at: datetime
    retention_until: datetime


ERASURE_EVENTS = (SubjectErased,)


@attrs.frozen(kw_only=True)
class ErasureRecord(Aggregate):
    category = "erasure"
    erased: bool = False

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, SubjectErased):
            return self.evolve(erased=True)
        raise ValidationError(f"ErasureRecord cannot apply {type(event).__name__}")


@attrs.frozen
class RetentionPolicy:
    """How long records are kept after the relationship ends before erasure is allowed."""

    years: int = 5

    def __attrs_post_init__(self) -> None:
        if self.years < 0:
            raise ValidationError("retention years must not be negative")

    def hold_until(self, relationship_ended_at: datetime) -> datetime:
        ended = pendulum.instance(to_utc(relationship_ended_at, "relationship_ended_at"))
        return to_utc(ended.add(years=self.years))


@attrs.frozen
class ErasureReceipt:
    subject_id: str
    erased_at: datetime
    key_destroyed: bool  # False when a previous call had already destroyed it


class Erasure:
    """The erasure service: checks permission and retention, records, then destroys the key."""

    def __init__(
        self,
        repository: Repository,
        encryption: FieldEncryption | None,
        access: AccessControl,
        *,
        policy: RetentionPolicy | None = None,
        snapshots: SnapshotStore | None = None,
        clock: Clock | None = None,
        checks: ErasureChecks | None = None,
    ) -> None:
        self.checks = checks
        self.repository = repository
        self.encryption = encryption
        self.access = access
        self.policy = policy or RetentionPolicy()
        self.snapshots = snapshots
        self.clock = clock or SystemClock()

    def erase(
        self,
        actor: Actor,
        subject_id: str,
        *,
        relationship_ended_at: datetime | None = None,
        reason: str,
        legal_hold: bool = False,
        snapshot_streams: Iterable[str] = (),
    ) -> ErasureReceipt:
        """Erase a subject's personal data everywhere in the log.

        For a client the system knows (see :class:`ErasureChecks`), the relationship ended when
        the client was closed: ``relationship_ended_at`` may be left out (a different date is
        refused), and the erasure is refused while a balance, a hold, an open account or an
        open wire remains. For a subject of the host's own, the caller says when the
        relationship ended.
        ``snapshot_streams`` names the streams whose snapshots may hold the subject's PII in
        clear (snapshots are caches: they are deleted, and rebuilt from events when needed).
        """
        self.access.require(actor, "erasure.execute")
        if is_reserved_subject(subject_id):
            # The SDK's own secrets (the audit chain's key) are never a data subject.
            raise ValidationError("that id is reserved and cannot be erased")
        if self.encryption is None:
            raise ValidationError(
                "erasure needs encrypted personal data: this broker stores it in clear"
            )
        now = self.clock.now()
        if legal_hold:
            raise RetentionHoldError("erasure refused: a legal hold applies")
        record = self.repository.load(ErasureRecord, subject_id) or ErasureRecord.blank(subject_id)
        if not record.erased:
            ended = self._ended(subject_id, relationship_ended_at)
            until = self.policy.hold_until(ended)
            if now < until:
                raise RetentionHoldError(
                    f"erasure refused: records must be kept until {until.date().isoformat()}"
                )
            remaining = self.checks.open_positions(subject_id) if self.checks else []
            if remaining:
                raise ErasureBlockedError(tuple(remaining))
            with UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason)) as uow:
                uow.record(record, SubjectErased(subject_id, ended, until))
                if self.checks is not None:
                    self.checks.release(subject_id, uow)
                uow.commit(idempotency_key=f"erasure:{subject_id}")
        # Recorded first, destroyed second: after a crash in between, erase() again finishes.
        # The claims' keys go first: a retry finds them from the log while they still open
        # (the subject's own key opens none of them).
        try:
            others = self.checks.shred_with(subject_id) if self.checks else []
            self.encryption.shred(o for o in others if o != subject_id)
            destroyed = self.encryption.erase(subject_id)
        finally:
            # Cached states were decrypted before the erasure: drop them all (a cache cannot
            # tell which streams held this subject's PII), even if the key store then failed.
            # Other processes must forget() likewise.
            self.encryption.forget(subject_id)
            self.repository.forget()
        if self.snapshots is not None:
            for stream_id in snapshot_streams:
                self.snapshots.delete_snapshot(stream_id)
        log.info("subject erased", extra={"subject_id": subject_id, "actor": actor.id})
        return ErasureReceipt(subject_id, now, destroyed)

    def _ended(self, subject_id: str, claimed: datetime | None) -> datetime:
        """When the relationship ended: a known client's own record, else the caller's word."""
        given = None if claimed is None else to_utc(claimed, "relationship_ended_at")
        if self.checks is not None and self.checks.knows(subject_id):
            ended = self.checks.relationship_ended_at(subject_id)
            if ended is None:
                raise RetentionHoldError(
                    "erasure refused: the relationship has not ended (the client is not closed)"
                )
            ended = to_utc(ended)
            if given is not None and given != ended:
                raise ValidationError(
                    "erasure refused: the relationship ended when the client was closed, "
                    f"on {ended.date().isoformat()}, not on the date given"
                )
            return ended
        if given is None:
            raise RetentionHoldError("erasure refused: the relationship has not ended")
        return given
