"""The audit trail: ids only, hash-chained; verify() names the first tampered record."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import (
    AUDIT_SECRET,
    AuditFinding,
    AuditHead,
    AuditRecord,
    AuditTrail,
    MemoryAuditLog,
)
from fxcrm_core.broker import Broker
from fxcrm_core.events import EventStore, StoredEvent
from fxcrm_core.kernel import ConcurrencyError, Money, ValidationError
from fxcrm_core.kernel.time import to_micros
from fxcrm_core.privacy import FieldEncryption, MasterKeyring, MemoryKeyStore
from fxcrm_core.privacy.keys import secret_subject
from fxcrm_core.stores import SqliteDatabase
from fxcrm_core.stores.sqlite_audit import SqliteAuditLog
from tests.sample_domain import EVENTS, Till


def busy_broker(path: Path | None = None) -> Broker:
    broker = (
        Broker.sqlite(
            path,
            events=EVENTS,
            synchronous="NORMAL",
            allow_clear_pii=True,
            identity_key=b"i" * 32,
        )
        if path
        else Broker.in_memory(events=EVENTS)
    )
    for n in range(4):
        with broker.unit_of_work(f"staff:{n}", reason="cash") as uow:
            till = Till.blank(f"t{n}")
            till = uow.record(till, *till.open("USD", f"Holder {n}"))
            uow.record(till, *till.pay_in(Money.of(10 + n, "USD")))
            uow.commit()
    return broker


def test_audit_follows_the_log_with_ids_only() -> None:
    broker = busy_broker()
    assert broker.audit.catch_up(broker.store, broker.codec) == 8
    assert broker.audit.catch_up(broker.store, broker.codec) == 0
    records = broker.audit.log.records()
    assert [r.seq for r in records] == list(range(1, 9))
    assert [r.position for r in records] == list(range(1, 9))
    assert (records[0].actor, records[0].action, records[0].target) == (
        "staff:0",
        "host.TillOpened",
        "till-t0",
    )
    assert "Holder" not in repr(records)
    assert "cash" not in repr(records)  # free-text reasons stay out
    assert broker.audit.verify() is None


def _memory_trail(key: bytes | None = None) -> AuditTrail:
    broker = busy_broker()
    trail = AuditTrail(MemoryAuditLog(), key=key)
    trail.catch_up(broker.store, broker.codec)
    return trail


@pytest.mark.parametrize("key", [None, b"k" * 32])
def test_an_edited_record_is_named(key: bytes | None) -> None:
    trail = _memory_trail(key)
    log = trail.log
    assert isinstance(log, MemoryAuditLog)
    log.rows[4] = attrs.evolve(log.rows[4], actor="staff:innocent")
    finding = trail.verify()
    assert finding is not None
    assert (finding.seq, finding.problem) == (5, "edited")


def test_a_rehashed_edit_still_breaks_the_next_link() -> None:
    trail = _memory_trail()
    log = trail.log
    assert isinstance(log, MemoryAuditLog)
    forged = attrs.evolve(log.rows[2], actor="staff:innocent")
    log.rows[2] = attrs.evolve(forged, hash=trail._digest(forged))
    finding = trail.verify()
    assert finding is not None
    assert (finding.seq, finding.problem) == (4, "edited")


def test_a_hmac_chain_cannot_be_recomputed_without_the_key() -> None:
    trail = _memory_trail(b"secret-key-held-outside-the-db!!")
    log = trail.log
    assert isinstance(log, MemoryAuditLog)
    plain = AuditTrail(MemoryAuditLog())  # a forger without the key
    forged = attrs.evolve(log.rows[0], actor="staff:innocent")
    log.rows[0] = attrs.evolve(forged, hash=plain._digest(forged))
    finding = trail.verify()
    assert finding is not None
    assert finding.seq == 1


def test_deleted_and_swapped_records_are_named() -> None:
    trail = _memory_trail()
    log = trail.log
    assert isinstance(log, MemoryAuditLog)
    rows = list(log.rows)
    log.rows = rows[:6] + rows[7:]
    finding = trail.verify()
    assert finding is not None
    assert (finding.seq, finding.problem) == (7, "deleted")
    log.rows = [*rows[:2], rows[3], rows[2], *rows[4:]]
    finding = trail.verify()
    assert finding is not None
    assert (finding.seq, finding.problem) == (3, "reordered")
    log.rows = rows[:-1]  # the newest record removed: the chain alone cannot tell
    assert trail.verify() is None


def test_tampering_in_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    broker = busy_broker(path)
    broker.audit.catch_up(broker.store, broker.codec)
    assert broker.audit.verify() is None
    broker.close()

    def trail() -> AuditTrail:
        return AuditTrail(SqliteAuditLog(SqliteDatabase(path)))

    raw = sqlite3.connect(path, isolation_level=None)
    # Flip one byte of one field.
    (actor,) = raw.execute("SELECT actor FROM fx_audit WHERE seq = 5").fetchone()
    raw.execute("UPDATE fx_audit SET actor = ? WHERE seq = 5", (actor[:-1] + "X",))
    finding = trail().verify()
    assert finding is not None
    assert (finding.seq, finding.problem) == (5, "edited")
    raw.execute("UPDATE fx_audit SET actor = ? WHERE seq = 5", (actor,))
    assert trail().verify() is None
    # Swap the contents of two rows.
    cols = "seq, position, at, actor, action, target, correlation_id, prev_hash, hash"
    r3 = raw.execute(f"SELECT {cols} FROM fx_audit WHERE row = 3").fetchone()
    r4 = raw.execute(f"SELECT {cols} FROM fx_audit WHERE row = 4").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    raw.execute(f"UPDATE fx_audit SET {sets} WHERE row = 3", r4)
    raw.execute(f"UPDATE fx_audit SET {sets} WHERE row = 4", r3)
    finding = trail().verify()
    assert finding is not None
    assert (finding.seq, finding.problem) == (3, "reordered")
    raw.execute(f"UPDATE fx_audit SET {sets} WHERE row = 3", r3)
    raw.execute(f"UPDATE fx_audit SET {sets} WHERE row = 4", r4)
    # Delete a row.
    raw.execute("DELETE FROM fx_audit WHERE seq = 2")
    finding = trail().verify()
    assert finding is not None
    assert (finding.seq, finding.problem) == (2, "deleted")


# -- the trail covers what was written (issue 14, item 2) ------------------------------------------


class _Tampered:
    """An event store that returns one event altered (as if its row had been edited)."""

    def __init__(
        self, store: EventStore, position: int, change: Callable[[StoredEvent], StoredEvent | None]
    ) -> None:
        self.store, self.position, self.change = store, position, change

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        rows = self.store.read_all(after_position=after_position, limit=limit)
        out = [self.change(r) if r.position == self.position else r for r in rows]
        return [r for r in out if r is not None]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _flip(blob: bytes, at: int) -> bytes:
    i = at % len(blob)
    return blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]


_CHANGES: dict[str, Callable[[StoredEvent, int], StoredEvent]] = {
    "data": lambda e, n: e._replace(data=_flip(e.data, n)),
    "metadata": lambda e, n: e._replace(metadata=_flip(e.metadata, n)),
    "event_type": lambda e, n: e._replace(event_type=e.event_type + "X"),
    "stream_id": lambda e, n: e._replace(stream_id=e.stream_id + "X"),
    "version": lambda e, n: e._replace(version=e.version + 1),
    "recorded_at": lambda e, n: e._replace(recorded_at=e.recorded_at + timedelta(microseconds=1)),
}


@given(
    position=st.integers(1, 8),
    field=st.sampled_from(sorted(_CHANGES)),
    at=st.integers(0, 10_000),
    key=st.sampled_from([None, b"k" * 32]),
)
@settings(max_examples=60, deadline=None)
def test_any_change_to_a_stored_event_is_named(
    position: int, field: str, at: int, key: bytes | None
) -> None:
    broker = _BUSY
    trail = AuditTrail(MemoryAuditLog(), key=key)
    trail.catch_up(broker.store, broker.codec)
    assert trail.verify(broker.store) is None
    store = _Tampered(broker.store, position, lambda e: _CHANGES[field](e, at))
    finding = trail.verify(store)
    assert finding == AuditFinding(position, "event-changed", position)


_BUSY = busy_broker()


def test_a_deleted_event_is_named() -> None:
    trail = AuditTrail(MemoryAuditLog())
    trail.catch_up(_BUSY.store, _BUSY.codec)
    assert trail.verify(_Tampered(_BUSY.store, 6, lambda e: None)) == AuditFinding(
        6, "event-missing", 6
    )
    assert trail.verify(_Tampered(_BUSY.store, 8, lambda e: None)) == AuditFinding(
        8, "event-missing", 8
    )


def test_an_edited_amount_in_the_sqlite_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    broker = busy_broker(path)
    broker.audit.catch_up(broker.store, broker.codec)
    assert broker.audit.verify(broker.store) is None
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(
        "UPDATE fx_events SET data = CAST(replace(CAST(data AS TEXT), '11.00', '911.00') AS BLOB) "
        "WHERE position = 4"
    )
    assert raw.execute("SELECT data FROM fx_events WHERE position = 4").fetchone()[0] == (
        b'{"amount":"911.00 USD"}'
    )
    assert broker.audit.verify(broker.store) == AuditFinding(4, "event-changed", 4)
    raw.execute("DELETE FROM fx_events WHERE position = 7")
    assert broker.audit.verify(broker.store) == AuditFinding(4, "event-changed", 4)
    raw.execute(
        "UPDATE fx_events SET data = CAST(replace(CAST(data AS TEXT), '911.00', '11.00') AS BLOB) "
        "WHERE position = 4"
    )
    assert broker.audit.verify(broker.store) == AuditFinding(7, "event-missing", 7)
    broker.close()


def _forge_plain_chain(log: MemoryAuditLog, seq: int) -> None:
    """What a forger without the key can do: edit one record and recompute SHA-256 onwards."""
    plain = AuditTrail(MemoryAuditLog())
    prev = log.rows[seq - 2].hash if seq > 1 else "0" * 64
    for i in range(seq - 1, len(log.rows)):
        row = log.rows[i]
        if i == seq - 1:
            row = attrs.evolve(row, actor="staff:innocent")
        row = attrs.evolve(row, prev_hash=prev)
        row = attrs.evolve(row, hash=plain._digest(row))
        log.rows[i] = row
        prev = row.hash


def _secrets() -> FieldEncryption:
    return FieldEncryption(MemoryKeyStore(), MasterKeyring.generate())


def test_a_keyed_trail_from_the_key_store_refuses_a_recomputed_chain() -> None:
    secrets = _secrets()
    log = MemoryAuditLog()
    trail = AuditTrail.keyed_from(log, secrets)
    assert trail.keyed
    trail.catch_up(_BUSY.store, _BUSY.codec)
    again = AuditTrail.keyed_from(log, secrets)  # another process: the same key
    assert again.verify(_BUSY.store) is None
    _forge_plain_chain(log, 3)
    assert again.verify(_BUSY.store) == AuditFinding(3, "edited")
    other = AuditTrail.keyed_from(MemoryAuditLog(), _secrets())  # another key store
    other.log = log
    assert other.verify() is not None


def test_a_trail_keyed_later_keeps_its_plain_prefix_and_refuses_a_downgrade() -> None:
    broker = busy_broker()
    log = MemoryAuditLog()
    plain = AuditTrail(log)
    plain.catch_up(broker.store, broker.codec)  # 8 plain records, written before keying
    secrets = _secrets()
    keyed = AuditTrail.keyed_from(log, secrets)
    assert keyed.verify(broker.store) is None
    with broker.unit_of_work("staff:9", reason="cash") as uow:
        till = Till.blank("t9")
        uow.record(till, *till.open("USD", "Holder 9"))
        uow.commit()
    assert keyed.catch_up(broker.store, broker.codec) == 1
    assert AuditTrail.keyed_from(log, secrets).verify(broker.store) is None
    # Rewriting the plain prefix breaks the link the first keyed record holds.
    rows = list(log.rows)
    _forge_plain_chain(log, 2)
    assert keyed.verify(broker.store) == AuditFinding(9, "edited")
    # Rewriting everything as one plain chain (a downgrade) is named at the first keyed record.
    log.rows = rows
    _forge_plain_chain(log, 9)
    assert keyed.verify(broker.store) == AuditFinding(9, "edited")


def test_the_audit_secret_is_never_erased_nor_used_as_a_data_key() -> None:
    secrets = _secrets()
    AuditTrail.keyed_from(MemoryAuditLog(), secrets)
    subject = secret_subject(AUDIT_SECRET)
    assert secrets.keystore.get(subject) is not None
    with pytest.raises(ValidationError):
        secrets.erase(subject)
    with pytest.raises(ValidationError):
        secrets.encrypt_for(subject, "ctx", b"x")
    with pytest.raises(ValidationError):
        secrets.named_secret("bad name\0")
    assert not secrets.is_erased(subject)
    value, _ = secrets.named_secret(AUDIT_SECRET)
    secrets.keyring.add("m2", b"m" * 32)
    assert secrets.rotate_master() == 1  # rotation re-wraps it like any key
    assert secrets.named_secret(AUDIT_SECRET)[0] == value


@pytest.mark.parametrize("key", [None, b"k" * 32])
def test_a_cut_tail_is_named_against_the_exported_head(key: bytes | None) -> None:
    trail = _memory_trail(key)
    head = trail.head()
    assert (head.count, head.hash) == (8, trail.log.records()[-1].hash)
    assert (head.signature is not None) == (key is not None)
    printed = head.export()  # e.g. a line in the daily report
    anchor = AuditHead.parse(printed)
    assert anchor == head
    assert trail.verify(anchor=anchor) is None
    log = trail.log
    assert isinstance(log, MemoryAuditLog)
    rows = list(log.rows)
    log.rows = rows[:6]
    assert trail.verify(anchor=anchor) == AuditFinding(7, "deleted")
    assert trail.verify() is None  # the chain alone cannot tell
    log.rows = rows
    if key is None:  # a recomputed plain chain is caught by the anchor
        _forge_plain_chain(log, 3)
        assert trail.verify() is None
        assert trail.verify(anchor=anchor) == AuditFinding(8, "edited")


def test_an_anchor_must_carry_this_trails_signature() -> None:
    trail = _memory_trail(b"k" * 32)
    head = trail.head()
    with pytest.raises(ValidationError):
        trail.verify(anchor=attrs.evolve(head, signature="0" * 64))
    with pytest.raises(ValidationError):
        trail.verify(anchor=attrs.evolve(head, count=7))
    with pytest.raises(ValidationError):
        trail.verify(anchor=attrs.evolve(head, signature=None))
    for bad in ("", "fxcrm-audit-head/v9 1 ab -", "fxcrm-audit-head/v1 x y z", None):
        with pytest.raises(ValidationError):
            AuditHead.parse(bad)  # type: ignore[arg-type]
    empty = AuditTrail(MemoryAuditLog()).head()
    assert (empty.count, empty.hash) == (0, "0" * 64)


def test_records_written_before_event_hashes_stay_readable(tmp_path: Path) -> None:
    """A file from before this change: the old table, old rows, old chain."""
    path = tmp_path / "old.sqlite"
    broker = busy_broker(path)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("DROP TABLE fx_audit")  # made anew by this version: put back the old one
    raw.execute(
        "CREATE TABLE fx_audit (row INTEGER PRIMARY KEY, seq INTEGER NOT NULL, position INTEGER "
        "NOT NULL, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT "
        "NOT NULL, correlation_id TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
    )
    prev = "0" * 64
    for e in broker.store.read_all()[:5]:
        meta = broker.codec.decode_metadata(e.metadata)
        at = to_micros(e.recorded_at)
        fields = [e.position, e.position, e.recorded_at.isoformat(), meta.actor, e.event_type]
        fields += [e.stream_id, meta.correlation_id, prev]
        digest = hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()
        raw.execute(
            "INSERT INTO fx_audit (seq, position, at, actor, action, target, correlation_id, "
            "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.position,
                e.position,
                at,
                meta.actor,
                e.event_type,
                e.stream_id,
                meta.correlation_id,
                prev,
                digest,
            ),
        )
        prev = digest
    broker.close()
    log = SqliteAuditLog(SqliteDatabase(path))
    trail = AuditTrail(log)
    assert [r.event_hash for r in log.records()] == [None] * 5
    assert trail.verify(broker.store) is None
    assert trail.catch_up(broker.store, broker.codec) == 3
    assert [r.event_hash is None for r in log.records()] == [True] * 5 + [False] * 3
    assert trail.verify(broker.store) is None
    # An old record still names what it can: its event's place, stream, type and time.
    raw.execute("UPDATE fx_events SET event_type = 'host.Other' WHERE position = 2")
    assert trail.verify(broker.store) == AuditFinding(2, "event-changed", 2)
    raw.execute("UPDATE fx_events SET event_type = 'host.CashPaidIn' WHERE position = 2")
    # A new record cannot be turned into an old one (dropping its event hash).
    raw.execute("UPDATE fx_audit SET event_hash = NULL WHERE seq = 7")
    assert trail.verify(broker.store) == AuditFinding(7, "edited")


class _Stale(SqliteAuditLog):
    """A log whose first last() is read before another process appended (a race)."""

    stale = True

    def last(self) -> AuditRecord | None:
        if self.stale:
            self.stale = False
            return None
        return super().last()


def test_two_writers_never_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    broker = busy_broker(path)
    first = AuditTrail(SqliteAuditLog(SqliteDatabase(path)))
    assert first.catch_up(broker.store, broker.codec) == 8
    with pytest.raises(ConcurrencyError):  # records that do not continue the log
        first.log.append([first.log.records()[0]])
    racing = AuditTrail(_Stale(SqliteDatabase(path)))
    assert racing.catch_up(broker.store, broker.codec) == 0  # it re-reads and finds none due
    assert [r.seq for r in first.log.records()] == list(range(1, 9))
    assert first.verify(broker.store) is None
    memory = MemoryAuditLog()
    memory.append(first.log.records()[:2])
    with pytest.raises(ConcurrencyError):
        memory.append(first.log.records()[:1])
    broker.close()


def test_an_event_slipped_into_a_gap_between_audited_events_is_named() -> None:
    """A store whose positions have gaps (a PostgreSQL sequence after rolled-back appends): an
    event put into a gap behind the trail's back is named, not skipped."""

    class Gapped:
        def __init__(self, inner: EventStore, extra: StoredEvent | None = None) -> None:
            self.inner, self.extra = inner, extra
            self.append = inner.append
            self.stream_version = inner.stream_version

        def _rows(self) -> list[StoredEvent]:
            rows = [s._replace(position=s.position * 10) for s in self.inner.read_all(limit=10**6)]
            if self.extra is not None:
                rows.append(self.extra)
            return sorted(rows, key=lambda s: s.position)

        def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
            return [s for s in self._rows() if s.position > after_position][:limit]

        def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
            return self.inner.read_stream(stream_id, after_version=after_version)

        def last_position(self) -> int:
            rows = self._rows()
            return rows[-1].position if rows else 0

    broker = busy_broker()
    gapped = Gapped(broker.store)
    trail = AuditTrail(MemoryAuditLog())
    trail.catch_up(gapped, broker.codec)
    assert trail.verify(gapped) is None
    forged = gapped.read_all()[1]._replace(position=25)  # between the 2nd and 3rd (20, 30)
    assert trail.verify(Gapped(broker.store, forged)) == AuditFinding(3, "event-unaudited", 25)
