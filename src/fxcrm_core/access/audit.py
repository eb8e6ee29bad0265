"""The audit trail: who did what to whom and when, one record per stored event, hash-chained.

Records hold ids only (actor, event type, stream, correlation id, time, position) and a SHA-256
of the event's stored row, never payloads or free-text reasons, so erasure never has to touch
them (the row's bytes do not change when a subject's key is destroyed). Each record's hash covers
its fields and the previous hash: HMAC-SHA256 under a key kept outside the database (``key=``, or
:meth:`AuditTrail.keyed_from` a secret in the key store), plain SHA-256 without one.
:meth:`AuditTrail.verify` names the first record that was edited, deleted or moved, and the first
event whose stored row no longer matches its record; a cut tail shows only against a head
exported earlier (:meth:`AuditTrail.head`), so export one regularly and keep it elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import attrs

from fxcrm_core.events import EventCodec, EventStore, StoredEvent, iter_all
from fxcrm_core.kernel.errors import CodecError, ConcurrencyError, ValidationError

__all__ = [
    "AUDIT_SECRET",
    "AuditFinding",
    "AuditHead",
    "AuditLog",
    "AuditRecord",
    "AuditSecrets",
    "AuditTrail",
    "MemoryAuditLog",
    "check_continues",
    "event_digest",
]

GENESIS = "0" * 64
AUDIT_SECRET = "audit-chain"  # noqa: S105 (the name of the trail's secret in the key store)
_RECORD_V2 = "fxcrm-audit/v2"
_HEAD = "fxcrm-audit-head/v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RETRIES = 5


def event_digest(stored: StoredEvent) -> str:
    """SHA-256 of an event's stored row: every column, each length-prefixed (so no two rows share
    an encoding)."""
    h = hashlib.sha256()
    for part in (
        str(stored.position).encode(),
        stored.stream_id.encode(),
        str(stored.version).encode(),
        stored.event_type.encode(),
        stored.data,
        stored.metadata,
        stored.recorded_at.isoformat().encode(),
    ):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


@attrs.frozen(slots=True)
class AuditRecord:
    """One audited event. ``event_hash`` is :func:`event_digest` of its stored row; it is None
    only on records written before the trail bound event rows (those still verify as a chain)."""

    seq: int
    position: int
    at: datetime
    actor: str
    action: str
    target: str
    correlation_id: str | None
    prev_hash: str
    hash: str
    event_hash: str | None = None

    def content(self) -> bytes:
        """The bytes the record's hash covers (the layout of its format version)."""
        fields: list[object] = [
            self.seq,
            self.position,
            self.at.isoformat(),
            self.actor,
            self.action,
            self.target,
            self.correlation_id,
            self.prev_hash,
        ]
        if self.event_hash is not None:
            fields = [_RECORD_V2, *fields, self.event_hash]
        return json.dumps(fields, separators=(",", ":")).encode()


@attrs.frozen
class AuditFinding:
    """The first place where the trail and the log disagree.

    ``edited``, ``deleted``, ``reordered``: the record ``seq`` itself (or, against an anchor, the
    tail from ``seq`` on is gone, or the chain up to ``seq`` was rewritten). ``event-changed``,
    ``event-missing``: the stored event at ``position``, audited by record ``seq``.
    ``event-unaudited``: an event at ``position``, before record ``seq``'s, that no record
    covers (slipped into the log behind the trail's back).
    """

    seq: int
    problem: Literal[
        "edited", "deleted", "reordered", "event-changed", "event-missing", "event-unaudited"
    ]
    position: int | None = None


@attrs.frozen
class AuditHead:
    """The chain's head: how many records and the last hash, signed (HMAC) by a keyed trail.

    Export it (a line in a daily report, a ticket, another system) and pass it back to
    :meth:`AuditTrail.verify` as ``anchor``: records cut from the tail since then are named.
    """

    count: int
    hash: str
    signature: str | None = None

    def export(self) -> str:
        """One printable line: ``fxcrm-audit-head/v1 <count> <hash> <signature or ->``."""
        return f"{_HEAD} {self.count} {self.hash} {self.signature or '-'}"

    @classmethod
    def parse(cls, text: str) -> AuditHead:
        """Read back a line made by :meth:`export`."""
        parts = text.split() if isinstance(text, str) else []
        if (
            len(parts) != 4
            or parts[0] != _HEAD
            or not parts[1].isascii()
            or not parts[1].isdigit()
            or not _HEX64.fullmatch(parts[2])
            or not (parts[3] == "-" or _HEX64.fullmatch(parts[3]))
        ):
            raise ValidationError(f"not an audit head line ('{_HEAD} <count> <hash> <sig>')")
        return cls(int(parts[1]), parts[2], None if parts[3] == "-" else parts[3])


@runtime_checkable
class AuditLog(Protocol):
    """Append-only storage of audit records, read back in the order they were written."""

    def append(self, records: Sequence[AuditRecord]) -> None:
        """Add records that continue the log (the first one's seq is the last seq + 1), all or
        none; raises ConcurrencyError if another writer got there first."""
        ...

    def records(self) -> list[AuditRecord]: ...

    def last(self) -> AuditRecord | None: ...


class MemoryAuditLog:
    """An AuditLog in a list (tests, in-memory brokers)."""

    def __init__(self) -> None:
        self.rows: list[AuditRecord] = []

    def append(self, records: Sequence[AuditRecord]) -> None:
        if records:
            check_continues(self.rows[-1].seq if self.rows else 0, records)
        self.rows.extend(records)

    def records(self) -> list[AuditRecord]:
        return list(self.rows)

    def last(self) -> AuditRecord | None:
        return self.rows[-1] if self.rows else None


def check_continues(last_seq: int, records: Sequence[AuditRecord]) -> None:
    """Refuse records that do not continue a log ending at ``last_seq`` (for every adapter)."""
    if records[0].seq != last_seq + 1:
        raise ConcurrencyError(
            "the audit log grew since it was read (another writer audited these events); "
            "nothing was written"
        )


@runtime_checkable
class AuditSecrets(Protocol):
    """Where a trail's key lives: a named secret wrapped in the key store (FieldEncryption).

    ``label`` is kept with the secret when this call creates it, and the stored one is returned.
    """

    def named_secret(self, name: str, *, label: str = "") -> tuple[bytes, str]: ...


class AuditTrail:
    """Keeps the audit log in step with the event store and checks it against the log.

    ``keyed_after``: records up to this seq were written before the trail had its key and may
    carry a plain SHA-256 (the first keyed record's link still protects them).
    """

    def __init__(self, log: AuditLog, *, key: bytes | None = None, keyed_after: int = 0) -> None:
        self.log = log
        self._key = key
        self._keyed_after = keyed_after if key is not None else 0

    @classmethod
    def keyed_from(cls, log: AuditLog, secrets: AuditSecrets) -> AuditTrail:
        """A trail keyed by the key store's audit secret, made on first use. The records already
        in the log then (plain ones, from before) are remembered with the secret, so a forger
        cannot pass off later records as plain ones."""
        last = log.last()
        value, label = secrets.named_secret(AUDIT_SECRET, label=str(last.seq if last else 0))
        if not label.isascii() or not label.isdigit():
            raise CodecError("the audit secret's label is not a record count")
        key = hmac.new(value, b"fxcrm-audit-chain/v1", hashlib.sha256).digest()
        return cls(log, key=key, keyed_after=int(label))

    @property
    def keyed(self) -> bool:
        """True if records are HMAC'd under a key kept outside the database."""
        return self._key is not None

    def _digest(self, record: AuditRecord) -> str:
        if self._key is not None:
            return hmac.new(self._key, record.content(), hashlib.sha256).hexdigest()
        return hashlib.sha256(record.content()).hexdigest()

    def _sign(self, count: int, digest: str) -> str | None:
        if self._key is None:
            return None
        message = f"{_HEAD}\0{count}\0{digest}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def catch_up(self, store: EventStore, codec: EventCodec, *, batch: int = 1000) -> int:
        """Add a record for every event after the last one audited; returns how many. Another
        process auditing at the same time is waited out: the chain never forks."""
        added = 0
        for _ in range(_RETRIES):
            done, raced = self._catch_up(store, codec, batch)
            added += done
            if not raced:
                return added
        raise ConcurrencyError("other writers kept extending the audit log; try again")

    def _catch_up(self, store: EventStore, codec: EventCodec, batch: int) -> tuple[int, bool]:
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
                event_digest(stored),
            )
            prev = self._digest(draft)
            pending.append(attrs.evolve(draft, hash=prev))
            if len(pending) >= batch:
                if not self._append(pending):
                    return added, True
                added += len(pending)
                pending = []
        if pending:
            if not self._append(pending):
                return added, True
            added += len(pending)
        return added, False

    def _append(self, records: list[AuditRecord]) -> bool:
        try:
            self.log.append(records)
        except ConcurrencyError:
            return False  # another process audited these first: start again from its end
        return True

    def head(self) -> AuditHead:
        """The chain's head now (signed if the trail is keyed), to export for anchoring."""
        last = self.log.last()
        count, digest = (last.seq, last.hash) if last else (0, GENESIS)
        return AuditHead(count, digest, self._sign(count, digest))

    def verify(
        self,
        store: EventStore | None = None,
        *,
        anchor: AuditHead | None = None,
        batch: int = 1000,
    ) -> AuditFinding | None:
        """None if the trail is whole, else the first problem (by seq).

        With ``store``, every audited event is re-read and compared with its record. With
        ``anchor`` (a head exported earlier), the chain must still reach it: a cut tail or a
        chain recomputed without the key is named. A keyed trail refuses an anchor it did not
        sign (ValidationError).
        """
        if anchor is not None:
            self._check_anchor(anchor)
        records = self.log.records()
        finding = self._verify_chain(records, store, batch)
        if anchor is not None:
            at_anchor = self._against(anchor, records)
            if at_anchor is not None and (finding is None or at_anchor.seq < finding.seq):
                return at_anchor
        return finding

    def _check_anchor(self, anchor: AuditHead) -> None:
        if not isinstance(anchor, AuditHead):
            raise ValidationError("an anchor is an AuditHead (see AuditHead.parse)")
        if self._key is None:
            return  # nothing to check it with: its trust is where it was kept
        expected = self._sign(anchor.count, anchor.hash)
        if anchor.signature is None or not hmac.compare_digest(anchor.signature, expected or ""):
            raise ValidationError("the anchored head is not signed with this trail's key")

    @staticmethod
    def _against(anchor: AuditHead, records: list[AuditRecord]) -> AuditFinding | None:
        if anchor.count == 0:
            return None
        if len(records) < anchor.count:
            return AuditFinding(len(records) + 1, "deleted")
        if not hmac.compare_digest(records[anchor.count - 1].hash, anchor.hash):
            return AuditFinding(anchor.count, "edited")
        return None

    def _verify_chain(
        self, records: list[AuditRecord], store: EventStore | None, batch: int
    ) -> AuditFinding | None:
        events = _Events(store, batch) if store is not None else None
        prev = GENESIS
        bound = False  # a record bound its event: no older-format record may follow
        for i, record in enumerate(records):
            expected = i + 1
            if record.seq != expected:
                later = any(r.seq == expected for r in records[i + 1 :])
                return AuditFinding(expected, "reordered" if later else "deleted")
            if record.prev_hash != prev or not self._authentic(record, bound):
                return AuditFinding(record.seq, "edited")
            bound = bound or record.event_hash is not None
            prev = record.hash
            if events is not None:
                problem = events.check(record)
                if problem is not None:
                    return AuditFinding(record.seq, problem[0], problem[1])
        return None

    def _authentic(self, record: AuditRecord, bound: bool) -> bool:
        if bound and record.event_hash is None:
            return False  # a newer record turned into an old one: its event hash was dropped
        if hmac.compare_digest(self._digest(record), record.hash):
            return True
        # Written before the trail was keyed: a plain hash, protected by the next keyed link.
        return record.seq <= self._keyed_after and hmac.compare_digest(
            hashlib.sha256(record.content()).hexdigest(), record.hash
        )


class _Events:
    """The log read alongside the records, in position order (one pass, in batches)."""

    def __init__(self, store: EventStore, batch: int) -> None:
        self._it: Iterator[StoredEvent] = iter_all(store, batch=batch)
        self._next: StoredEvent | None = next(self._it, None)

    def check(
        self, record: AuditRecord
    ) -> tuple[Literal["event-changed", "event-missing", "event-unaudited"], int] | None:
        if self._next is not None and self._next.position < record.position:
            # The trail records every event of the log in order: an event between two audited
            # ones was put there behind the trail's back.
            return "event-unaudited", self._next.position
        stored = self._next
        self._next = next(self._it, None) if stored is not None else None
        if stored is None or stored.position != record.position:
            return "event-missing", record.position
        if record.event_hash is not None:
            same = hmac.compare_digest(event_digest(stored), record.event_hash)
        else:  # an older record: what it holds of the event must still match
            same = (stored.stream_id, stored.event_type, stored.recorded_at) == (
                record.target,
                record.action,
                record.at,
            )
        return None if same else ("event-changed", record.position)
