"""A persistent broker keeps a keyed audit trail that covers its events, by default."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fxcrm_core.access import AuditFinding, AuditHead
from fxcrm_core.broker import Broker
from fxcrm_core.kernel import Money
from fxcrm_core.privacy import MasterKeyring
from tests.sample_domain import EVENTS, Till


def test_a_persistent_broker_keeps_a_keyed_trail_covering_its_events(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    ring = MasterKeyring({"m1": b"m" * 32}, "m1")

    def open_broker() -> Broker:
        return Broker.sqlite(path, events=EVENTS, keyring=ring, identity_key=b"i" * 32)

    broker = open_broker()
    for n in range(3):
        with broker.unit_of_work(f"staff:{n}", reason="cash") as uow:
            till = Till.blank(f"t{n}")
            till = uow.record(till, *till.open("USD", f"Holder {n}"))
            uow.record(till, *till.pay_in(Money.of(10 + n, "USD")))
            uow.commit()
    assert broker.audit.keyed
    assert broker.audit.catch_up(broker.store, broker.codec) == 6
    anchor = AuditHead.parse(broker.audit.head().export())
    assert anchor.signature is not None
    broker.close()
    again = open_broker()  # another process: the same key, from the key file
    assert again.audit.verify(again.store, anchor=anchor) is None
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(
        "UPDATE fx_events SET data = CAST(replace(CAST(data AS TEXT), '11.00', '911.00') AS BLOB)"
        " WHERE position = 4"
    )
    assert again.audit.verify(again.store) == AuditFinding(4, "event-changed", 4)
    raw.execute("DELETE FROM fx_audit WHERE seq > 4")
    assert again.audit.verify(anchor=anchor) == AuditFinding(5, "deleted")
    again.close()
