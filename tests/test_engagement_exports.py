"""Client exports: client.export on every row (refused, not dropped), masked by role, clear
only with pii.export, capped, audited in the log and the audit trail (a restart sees it)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, Actor, Role, RowScope
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.engagement.exports import (
    EXPORT_EVENTS,
    EXPORT_GRANTS,
    ClientExports,
    ExportFilter,
    ExportTooLargeError,
)
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import AccessDeniedError, ValidationError
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.privacy.pii import PiiExported, RevealLog

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
DPO = Actor.staff("dpo", Role.COMPLIANCE)
REP1 = Actor.staff("rep-1", Role.SALES)
SUPPORT = Actor.staff("desk", Role.SUPPORT)
_grants = {r: set(p) for r, p in DEFAULT_POLICY.grants.items()}
for _role, _perms in EXPORT_GRANTS.items():
    _grants[_role] |= _perms
POLICY = (
    DEFAULT_POLICY.with_role(Role.COMPLIANCE, _grants[Role.COMPLIANCE], RowScope.ALL)
    .with_role(Role.SALES, _grants[Role.SALES] | {"client.export"}, RowScope.OWNED)
    .with_role(Role.SUPPORT, _grants[Role.SUPPORT] | {"client.export"}, RowScope.ALL)
)
PEOPLE = [
    ("Ana Lima", "ana@example.com", "07911 123456", "x1234567", "staff:rep-1"),
    ("Ben Cole", "ben@example.com", "07911 123457", "y7654321", "staff:rep-2"),
    ("Cat Moss", "cat@example.com", "07911 123458", "z1111111", "staff:rep-1"),
]
FIELDS = ["id", "country", "stage", "name", "email", "phone"]


def _broker(clock: FixedClock, path: Path | None = None, keyring: MasterKeyring | None = None,
            cap: int = 1000) -> tuple[Broker, ClientExports]:  # fmt: skip
    options: dict[str, object] = {
        "identity_key": b"k" * 32,
        "policy": POLICY,
        "keyring": keyring or MasterKeyring.generate(),
    }
    if path is None:
        broker = Broker.in_memory(clock=clock, **options)  # type: ignore[arg-type]
    else:
        broker = Broker.sqlite(path, clock=clock, **options)  # type: ignore[arg-type]
    broker.registry.register_all(EXPORT_EVENTS)  # the integrator: engagement.register_events
    exports = ClientExports(
        broker.repository, broker.access, broker.projections, masking=broker.masking,
        audit=broker.audit, max_rows=cap, clock=clock, ids=broker.ids,
    )  # fmt: skip
    return broker, exports


def _clients(broker: Broker) -> list[str]:
    def reg(p: tuple[str, ...]) -> Registration:
        name, email, phone, doc, owner = p
        return Registration(ClientKind.INDIVIDUAL, "GB", name, email, phone, doc, owner_id=owner)

    return [broker.clients.register(PORTAL, reg(p)) for p in PEOPLE]


def _exported(broker: Broker) -> list[str]:
    return [
        r.event_type for r in broker.store.read_all(after_position=0, limit=10_000)
        if r.event_type in ("ClientsExported", "PiiExported")
    ]  # fmt: skip


def test_refused_without_the_permission_on_every_row() -> None:
    broker, exports = _broker(FixedClock(T0))
    ana, ben, cat = _clients(broker)
    with pytest.raises(AccessDeniedError):
        exports.export(Actor.staff("fin", Role.FINANCE), [ana], FIELDS, "campaign")
    with pytest.raises(AccessDeniedError):  # ben is rep-2's: refused as a whole, not dropped
        exports.export(REP1, [ana, ben, cat], FIELDS, "campaign")
    with pytest.raises(AccessDeniedError):  # a filter reaching rep-2's client is refused too
        exports.export(REP1, ExportFilter(countries={"GB"}), FIELDS, "campaign")
    assert _exported(broker) == []
    done = exports.export(REP1, ExportFilter(owner_id=REP1.id), FIELDS, "campaign")
    assert [r["id"] for r in done.rows] == [ana, cat]
    with pytest.raises(AccessDeniedError):  # clear needs pii.export
        exports.export(SUPPORT, [ana], FIELDS, "audit", clear=True)
    with pytest.raises(ValidationError):  # no reason
        exports.export(DPO, [ana], FIELDS, " ")
    with pytest.raises(ValidationError):  # a reason quoting the data
        exports.export(DPO, [ana], FIELDS, "for ana@example.com")
    with pytest.raises(ValidationError):
        exports.export(DPO, [ana], ["id", "password"], "audit")


def test_values_are_masked_by_role_and_clear_only_with_pii_export() -> None:
    broker, exports = _broker(FixedClock(T0))
    ana, _, _ = _clients(broker)
    (desk,) = exports.export(SUPPORT, [ana], FIELDS, "service review").rows
    assert desk["name"] == "Ana Lima"  # support sees names in full
    assert desk["email"] not in ("ana@example.com", None)
    assert desk["phone"] != "+447911123456"
    (rep,) = exports.export(REP1, [ana], [*FIELDS, "birth_date"], "call list").rows
    assert (rep["email"], rep["phone"]) == ("ana@example.com", "+447911123456")
    assert (rep["birth_date"], rep["country"], rep["stage"]) == (None, "GB", "registered")
    (clear,) = exports.export(DPO, [ana], FIELDS, "regulator request", clear=True).rows
    assert clear["email"] == "ana@example.com"
    # PiiExported on the client's reveal log names the fields that left in full
    fields = [
        r.event.fields for r in map(broker.codec.decode, broker.store.read_stream(
            RevealLog.stream_id_for(ana))) if isinstance(r.event, PiiExported)
    ]  # fmt: skip
    assert fields == [("name",), ("name", "email", "phone"), ("name", "email", "phone")]


def test_a_selection_above_the_cap_or_the_limit_is_refused() -> None:
    broker, exports = _broker(FixedClock(T0), cap=2)
    ids = _clients(broker)
    with pytest.raises(ExportTooLargeError):
        exports.export(DPO, ids, FIELDS, "audit")
    with pytest.raises(ExportTooLargeError):
        exports.export(DPO, ExportFilter(), FIELDS, "audit")
    with pytest.raises(ExportTooLargeError):
        exports.export(DPO, ids[:2], FIELDS, "audit", limit=1)
    with pytest.raises(ExportTooLargeError):
        exports.export(DPO, ids[:1], FIELDS, "audit", limit=3)
    assert _exported(broker) == []
    assert len(exports.export(DPO, ids[:2], FIELDS, "audit", limit=2).rows) == 2


def test_the_audit_is_in_the_log_and_the_trail_and_a_restart_sees_it(tmp_path: Path) -> None:
    clock, keyring = FixedClock(T0), MasterKeyring.generate()
    path = tmp_path / "b.sqlite"
    broker, exports = _broker(clock, path, keyring)
    ids = _clients(broker)
    done = exports.export(SUPPORT, ids, ["id", "name"], "quarterly review")
    records = [r for r in broker.audit.log.records() if r.action == "ClientsExported"]
    assert [(r.actor, r.target) for r in records] == [
        (SUPPORT.id, f"clientexport-{done.export_id}")
    ]
    broker.close()
    again, other = _broker(clock, path, keyring)
    recorded = other.history(done.export_id)
    assert recorded is not None
    event = recorded.event
    assert (recorded.metadata.actor, recorded.metadata.reason) == (SUPPORT.id, "quarterly review")
    assert (event.fields, event.rows, event.client_ids) == (("id", "name"), 3, tuple(ids))  # type: ignore[attr-defined]
    assert [r.action for r in again.audit.log.records()].count("ClientsExported") == 1
    assert again.audit.verify(again.store) is None
    again.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.integers(0, 2), min_size=1, max_size=5), cap=st.integers(1, 3))
def test_an_export_returns_every_row_asked_or_records_nothing(picks: list[int], cap: int) -> None:
    """Law: for any selection, either every distinct row asked comes back (and one
    ClientsExported records that count) or the export is refused and the log is unchanged."""
    broker, exports = _broker(FixedClock(T0), cap=cap)
    ids = _clients(broker)
    asked = [ids[i] for i in picks]
    before = len(_exported(broker))
    try:
        done = exports.export(REP1, asked, ["id"], "law")
    except (AccessDeniedError, ExportTooLargeError):
        assert len(_exported(broker)) == before
        distinct = list(dict.fromkeys(asked))
        assert ids[1] in distinct or len(distinct) > cap
        return
    assert [r["id"] for r in done.rows] == list(dict.fromkeys(asked))
    assert _exported(broker).count("ClientsExported") == 1
