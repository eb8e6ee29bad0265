"""The audit trail: ids only, hash-chained; verify() names the first tampered record."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest

from fxcrm_core.access import AuditTrail, MemoryAuditLog
from fxcrm_core.broker import Broker
from fxcrm_core.kernel import Money
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
