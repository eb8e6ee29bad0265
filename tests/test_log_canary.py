"""Canary: a scenario full of real-looking PII, under DEBUG logging and repr of every object;
none of the PII appears in clear anywhere."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Role
from fxcrm_core.broker import Broker
from fxcrm_core.kernel import FixedClock, FxCrmError, Money
from fxcrm_core.privacy import DocumentNumber, Email, Iban, MasterKeyring, Pan, PersonName, Phone
from tests.sample_domain import EVENTS, Till
from tests.test_erasure import ClientFile, PersonRegistered

CANARIES = {
    "pan": "4111111111111111",
    "pan_spaced": "4111 1111 1111 1111",
    "iban": "DE89370400440532013000",
    "passport": "X1234567",
    "name": "Ana Lima",
    "email": "ana.lima@example.com",
    "phone": "+447911123456",
}


def test_no_pii_in_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    clock = FixedClock(datetime(2032, 1, 1, tzinfo=UTC))
    broker = Broker.in_memory(
        clock=clock, keyring=MasterKeyring.generate(), events=(*EVENTS, PersonRegistered)
    )
    values = [
        Pan.parse(CANARIES["pan_spaced"]),
        Iban.parse(CANARIES["iban"]),
        DocumentNumber.parse(CANARIES["passport"]),
        PersonName.parse(CANARIES["name"]),
        Email.parse(CANARIES["email"]),
        Phone.parse(CANARIES["phone"]),
    ]
    seen += [repr(v) for v in values] + [str(v) for v in values]
    event = PersonRegistered("c-1", "GB", CANARIES["name"], CANARIES["email"], CANARIES["passport"])
    seen.append(repr(event))
    with broker.unit_of_work(Actor.staff("s", Role.SALES), reason="signup") as uow:
        uow.record(ClientFile.blank("c-1"), event)
        till = uow.record(Till.blank("c-1"), *Till.blank("c-1").open("USD", CANARIES["name"]))
        uow.record(till, *till.pay_in(Money.of(100, "USD")))
        uow.commit()
    for stored in broker.store.read_all():
        seen.append(repr(stored))
        seen.append(repr(broker.codec.decode(stored)))
    seen.append(repr(broker.repository.get(Till, "c-1")))
    seen.append(repr(broker.repository.get(ClientFile, "c-1")))

    broker.approvals.register("adjustment", ApprovalRule(execute=lambda params, key: "done"))
    rid = broker.approvals.request(
        Actor.staff("m", Role.FINANCE), "adjustment", "w-1", {"iban_ref": "instrument-7"}
    )
    broker.approvals.approve(Actor.staff("c", Role.FINANCE), rid)
    seen.append(repr(broker.approvals.get(rid)))

    for bad, parse in [
        (CANARIES["pan"][:-1] + "2", Pan.parse),
        (CANARIES["iban"][:-1] + "1", Iban.parse),
        ("ana.lima@", Email.parse),
        (CANARIES["phone"][:-3], Phone.parse),
    ]:
        with pytest.raises(FxCrmError) as info:
            parse(bad)
        seen.append(f"{info.value!r} {info.value}")
    with pytest.raises(FxCrmError) as denied:
        AccessControl().require(Actor.client("c-2"), "client.read", client_id="c-1")
    seen.append(str(denied.value))
    assert broker.erasure is not None
    broker.erasure.erase(
        Actor.staff("dpo", Role.COMPLIANCE),
        "c-1",
        relationship_ended_at=datetime(2020, 1, 1, tzinfo=UTC),
        reason="request",
    )
    seen.append(repr(broker.repository.get(ClientFile, "c-1")))
    broker.audit.catch_up(broker.store, broker.codec)
    seen.append(repr(broker.audit.log.records()))

    # The library did log (so this test is not vacuous) ...
    assert any(r.name.startswith("fxcrm_core") for r in caplog.records)
    logged = caplog.text + " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    everything = logged + "\n".join(seen)
    # ... and nothing anywhere shows a canary in clear.
    for label, value in CANARIES.items():
        assert value not in everything, label


def test_no_pii_in_logs_reprs_or_errors_of_client_reads_reveals_and_exports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19: the masked reads, the audited reveal and the export, their refusals and the
    audit records they leave show no canary (the revealed values go to the caller only)."""
    from fxcrm_core.clients import ClientKind, Registration

    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    broker = _canary_broker()
    portal, officer = PORTAL, OFFICER
    reg = Registration(
        ClientKind.INDIVIDUAL,
        "GB",
        CANARIES["name"],
        CANARIES["email"],
        phone=CANARIES["phone"],
        document_number=CANARIES["passport"],
    )
    seen.append(repr(reg))
    cid = broker.clients.register(portal, reg)
    for role in (Role.SUPPORT, Role.IB, Role.FINANCE, "unknown-role"):
        actor = Actor.staff("s", role)
        try:
            seen.append(repr(broker.clients.get(actor, cid)))
        except FxCrmError as error:
            seen.append(f"{error!r} {error}")
        with pytest.raises(FxCrmError) as refused:
            broker.clients.reveal(actor, cid, "email", "curious")
        seen.append(f"{refused.value!r} {refused.value}")
        with pytest.raises(FxCrmError) as refused:
            broker.clients.export(actor, [cid], "list")
        seen.append(f"{refused.value!r} {refused.value}")
    for bad_field, reason in (("password", "x"), ("email", " ")):
        with pytest.raises(FxCrmError) as invalid:
            broker.clients.reveal(officer, cid, bad_field, reason)
        seen.append(f"{invalid.value!r} {invalid.value}")
    seen.append(repr(broker.clients.update_contact(Actor.client(cid), cid, phone="+447400111222")))
    revealed = broker.clients.reveal(officer, cid, "email", "call-back")
    exported = broker.clients.export(officer, [cid], "regulator")
    assert revealed == CANARIES["email"]  # the caller got it; it must go nowhere else
    seen.append(repr(exported))
    everything = _stored_and_logged(broker, caplog, seen)
    assert any(r.name.startswith("fxcrm_core") for r in caplog.records)
    for label, value in CANARIES.items():
        assert value not in everything, label


def test_no_pii_in_logs_reprs_or_errors_of_payout_instruments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19, item 3: instruments hold the value type and mask it when shown; their views,
    the aggregate, a refused or allowed reveal and the log show no card or IBAN in clear."""
    from fxcrm_core.clients import ClientKind, Registration
    from fxcrm_core.payments import InstrumentKind, PayoutInstrument

    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    broker = _canary_broker()
    portal, officer = PORTAL, OFFICER
    cid = broker.clients.register(
        portal, Registration(ClientKind.INDIVIDUAL, "GB", CANARIES["name"], CANARIES["email"])
    )
    me = Actor.client(cid)
    card = broker.withdrawals.add_instrument(me, cid, InstrumentKind.CARD, CANARIES["pan_spaced"])
    iban = broker.withdrawals.add_instrument(me, cid, InstrumentKind.IBAN, CANARIES["iban"])
    for bad in ("4111 1111 1111 1112", CANARIES["iban"][:-1] + "1"):
        with pytest.raises(FxCrmError) as refused:
            broker.withdrawals.add_instrument(me, cid, InstrumentKind.CARD, bad)
        seen.append(f"{refused.value!r} {refused.value}")
    for instrument_id in (card, iban):
        seen.append(repr(broker.repository.get(PayoutInstrument, instrument_id)))
        for actor in (me, officer, Actor.staff("f", Role.FINANCE), Actor.staff("s", Role.SUPPORT)):
            try:
                seen.append(repr(broker.withdrawals.instrument(actor, instrument_id)))
            except FxCrmError as error:
                seen.append(f"{error!r} {error}")
        with pytest.raises(FxCrmError) as refused:
            broker.withdrawals.reveal_instrument(Actor.staff("f", Role.FINANCE), card, "psp")
        seen.append(f"{refused.value!r} {refused.value}")
        assert broker.withdrawals.reveal_instrument(officer, instrument_id, "chargeback") in (
            CANARIES["pan"],
            CANARIES["iban"],
        )
    everything = _stored_and_logged(broker, caplog, seen)
    for label, value in CANARIES.items():
        assert value not in everything, label


PORTAL, OFFICER = Actor.system("portal", Role.PORTAL), Actor.staff("dpo", Role.COMPLIANCE)


def _canary_broker() -> Broker:
    return Broker.in_memory(
        clock=FixedClock(datetime(2032, 1, 1, tzinfo=UTC)),
        keyring=MasterKeyring.generate(),
        identity_key=b"i" * 32,
    )


def _stored_and_logged(broker: Broker, caplog: pytest.LogCaptureFixture, seen: list[str]) -> str:
    """Every stored event (raw and decoded), the audit trail, the logs and ``seen``, as text."""
    for stored in broker.store.read_all():
        seen.append(repr(stored))
        seen.append(repr(broker.codec.decode(stored)))
    broker.audit.catch_up(broker.store, broker.codec)
    seen.append(repr(broker.audit.log.records()))
    logged = caplog.text + " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    return logged + "\n".join(seen)
