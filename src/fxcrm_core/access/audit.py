"""The audit trail: who did what to whom and when, from every event's envelope, hash-chained.

Records hold ids only (actor, event type, stream, correlation id, time, position), never payloads
or free-text reasons, so erasure never has to touch them. Each record's hash covers its fields
and the previous hash (HMAC-SHA256 when a key is given, kept outside the database), so
:meth:`AuditTrail.verify` names the first record that was edited, deleted or moved.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import attrs

from fxcrm_core.events import EventCodec, EventStore, iter_all

__all__ = ["AuditFinding", "AuditLog", "AuditRecord", "AuditTrail", "MemoryAuditLog"]

GENESIS = "0" * 64


@attrs.frozen(slots=True)
class AuditRecord:
    seq: int
    position: int
    at: datetime
    actor: str
    action: str
    target: str
    correlation_id: str | None
    prev_hash: str
    hash: str

    def content(self) -> bytes:
        return json.dumps(
            [
                self.seq,
                self.position,
                self.at.isoformat(),
                self.actor,
                self.action,
                self.target,
                self.correlation_id,
                self.prev_hash,
            ],
            separators=(",", ":"),
        ).encode()


@attrs.frozen
class AuditFinding:
    """The first place where the chain breaks."""

    seq: int
    problem: Literal["edited", "deleted", "reordered"]


@runtime_checkable
class AuditLog(Protocol):
    """Append-only storage of audit records, read back in the order they were written."""

    def append(self, records: Sequence[AuditRecord]) -> None: ...

    def records(self) -> list[AuditRecord]: ...

    def last(self) -> AuditRecord | None: ...


class MemoryAuditLog:
    def __init__(self) -> None:
        self.rows: list[AuditRecord] = []

    def append(self, records: Sequence[AuditRecord]) -> None:
        self.rows.extend(records)

    def records(self) -> list[AuditRecord]:
        return list(self.rows)

    def last(self) -> AuditRecord | None:
        return self.rows[-1] if self.rows else None


class AuditTrail:
    """Keeps the audit log in step with the event store and checks its chain."""

    def __init__(self, log: AuditLog, *, key: bytes | None = None) -> None:
        self.log = log
        self._key = key

    def _digest(self, record: AuditRecord) -> str:
        if self._key is not None:
            return hmac.new(self._key, record.content(), hashlib.sha256).hexdigest()
        return hashlib.sha256(record.content()).hexdigest()

    def catch_up(self, store: EventStore, codec: EventCodec, *, batch: int = 1000) -> int:
        """Add a record for every event after the last one audited; returns how many."""
        last = self.log.last()
        seq, prev, position = (last.seq, last.hash, last.position) if last else (0, GENESIS, 0)
        pending: list[AuditRecord] = []
        added = 0
        for stored in iter_all(store, after_position=position, batch=batch):
            meta = codec.decode_metadata(stored.metadata)  # envelope only: payloads not read
            seq += 1
            draft = AuditRecord(
                seq,
                stored.position,
                stored.recorded_at,
                meta.actor,
                stored.event_type,
                stored.stream_id,
                meta.correlation_id,
                prev,
                "",
            )
            prev = self._digest(draft)
            pending.append(attrs.evolve(draft, hash=prev))
            if len(pending) >= batch:
                self.log.append(pending)
                added += len(pending)
                pending = []
        if pending:
            self.log.append(pending)
            added += len(pending)
        return added

    def verify(self) -> AuditFinding | None:
        """None if the chain is whole, else the first record edited, deleted or moved."""
        records = self.log.records()
        prev = GENESIS
        for i, record in enumerate(records):
            expected = i + 1
            if record.seq != expected:
                later = any(r.seq == expected for r in records[i + 1 :])
                return AuditFinding(expected, "reordered" if later else "deleted")
            if record.prev_hash != prev or self._digest(record) != record.hash:
                return AuditFinding(record.seq, "edited")
            prev = record.hash
        return None
