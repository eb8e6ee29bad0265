"""Erasure by crypto-shredding: destroy the subject's data key, keep everything else.

Ids, amounts and dates stay readable, so the ledger still balances and aggregates replay; every
PII field of the subject reads as ``ERASED``. The erasure is itself an event (who, when, why),
and it is refused while a retention hold applies: by default AML record keeping, 5 years after
the relationship ended.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Self

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

__all__ = ["ERASURE_EVENTS", "Erasure", "ErasureReceipt", "RetentionPolicy", "SubjectErased"]

log = logging.getLogger("fxcrm_core.privacy")


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
    ) -> None:
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
        relationship_ended_at: datetime | None,
        reason: str,
        legal_hold: bool = False,
        snapshot_streams: Iterable[str] = (),
    ) -> ErasureReceipt:
        """Erase a subject's personal data everywhere in the log.

        ``snapshot_streams`` names the streams whose snapshots may hold the subject's PII in
        clear (snapshots are caches: they are deleted, and rebuilt from events when needed).
        """
        self.access.require(actor, "erasure.execute")
        if self.encryption is None:
            raise ValidationError(
                "erasure needs encrypted personal data: this broker stores it in clear"
            )
        now = self.clock.now()
        if legal_hold:
            raise RetentionHoldError("erasure refused: a legal hold applies")
        if relationship_ended_at is None:
            raise RetentionHoldError("erasure refused: the relationship has not ended")
        until = self.policy.hold_until(relationship_ended_at)
        if now < until:
            raise RetentionHoldError(
                f"erasure refused: records must be kept until {until.date().isoformat()}"
            )
        record = self.repository.load(ErasureRecord, subject_id) or ErasureRecord.blank(subject_id)
        if not record.erased:
            with UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason)) as uow:
                uow.record(record, SubjectErased(subject_id, to_utc(relationship_ended_at), until))
                uow.commit(idempotency_key=f"erasure:{subject_id}")
        # Recorded first, destroyed second: after a crash in between, erase() again finishes.
        destroyed = self.encryption.erase(subject_id)
        # Cached states were decrypted before the erasure: drop them all (a cache cannot tell
        # which streams held this subject's PII). Other processes must forget() likewise.
        self.repository.forget()
        if self.snapshots is not None:
            for stream_id in snapshot_streams:
                self.snapshots.delete_snapshot(stream_id)
        log.info("subject erased", extra={"subject_id": subject_id, "actor": actor.id})
        return ErasureReceipt(subject_id, now, destroyed)
