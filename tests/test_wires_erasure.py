"""Bank wires and erasure: a client with a wire declared or matched cannot be erased; once erased,
its wires' reference and statement-line claims (found by anyone holding the deduplication key)
and the hashes in its wires' streams name nobody, while the claims stay held; old rows read."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration, Stage
from fxcrm_core.events import ERASED, DomainEvent, NewEvent, StreamAppend
from fxcrm_core.kernel import Currency, FixedClock, Money, StoreError
from fxcrm_core.ledger import TransferRequest
from fxcrm_core.payments import MoneyAccounts
from fxcrm_core.payments.wires import (
    WIRE_EVENTS_VERSION,
    DuplicateBankLineError,
    DuplicateWireReferenceError,
    WireClaim,
    WireClaimed,
    WireClaimReleased,
    WireDeclared,
    WireMatched,
    normalise_bank_reference,
    register_wire_events,
)
from fxcrm_core.privacy import ErasureBlockedError, MasterKeyring, MemoryKeyStore
from fxcrm_core.stores import MemoryEventStore, MemorySnapshotStore

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
LATER = datetime(2032, 1, 1, tzinfo=UTC)  # past the AML retention of a client closed at T0
KEYRING = MasterKeyring({"m1": bytes(range(32))}, "m1")
IDENTITY_KEY = b"w" * 32
BOOKED = date(2026, 3, 9)
MAKER = Actor.staff("fin-1", Role.FINANCE)
CHECKER = Actor.staff("fin-2", Role.FINANCE)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
REP = Actor.staff("rep-1", Role.SALES)
REFERENCE = "FX-0042 Ana Lima"  # names the payer
LINE = "FT26068X1"


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def v2(broker: Broker) -> Broker:
    """The wire events at version 2 with their upcasters (a no-op once the payments context
    registers them so itself)."""
    if broker.registry.spec_for_class(WireClaimed).version < WIRE_EVENTS_VERSION:
        register_wire_events(broker.registry)
    return broker


def memory() -> Broker:
    return v2(
        Broker(
            MemoryEventStore(FixedClock(T0)),
            snapshots=MemorySnapshotStore(),
            keystore=MemoryKeyStore(),
            clock=FixedClock(T0),
            keyring=KEYRING,
            identity_key=IDENTITY_KEY,
        )
    )


def on_file(path: Path, at: datetime = T0) -> Broker:
    return v2(
        Broker.sqlite(
            path,
            clock=FixedClock(at),
            keyring=KEYRING,
            identity_key=IDENTITY_KEY,
            synchronous="NORMAL",
        )
    )


def client(broker: Broker) -> str:
    cid = broker.clients.register(
        Actor.system("portal", Role.PORTAL),
        Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", "ana@example.com", owner_id=REP.id),
    )
    for kind, kwargs in (("passport", {"expires_on": date(2030, 1, 1)}), ("proof_of_address", {})):
        doc = broker.kyc.submit(Actor.client(cid), cid, kind, "f", **kwargs)  # type: ignore[arg-type]
        broker.kyc.approve(OFFICER, doc)
    return cid


def declare(broker: Broker, cid: str, reference: str = REFERENCE) -> str:
    return broker.wires.declare(
        Actor.client(cid), cid, usd(500), bank_reference=reference, receipt_id="file-1"
    )


def credit(broker: Broker, wire_id: str, line: str = LINE) -> None:
    wire = broker.wires.match(
        MAKER, wire_id, bank_transaction_id=line, received=usd(500), booked_on=BOOKED
    )
    assert wire.approval_id is not None
    broker.approvals.approve(CHECKER, wire.approval_id)


def pay_out(broker: Broker, cid: str) -> None:
    """Empty the client's wallet (as a withdrawal would), so only the wires are left to check."""
    usd_ = Currency.of("USD")
    money = MoneyAccounts(broker.ledger)
    wallet = money.wallet(cid, usd_)
    balance = broker.ledger.balance(wallet).net_credit
    if not balance.is_zero():
        out = TransferRequest(f"out:{cid}", wallet, money.broker("bank_clearing", usd_), balance)
        broker.ledger.transfer(out)


def close_and_wait(broker: Broker, cid: str) -> None:
    broker.clients.move(REP, cid, Stage.CLOSED)
    assert isinstance(broker.clock, FixedClock)
    broker.clock.set(LATER)


def erase(broker: Broker, cid: str) -> bool:
    assert broker.erasure is not None
    return broker.erasure.erase(OFFICER, cid, reason="the client asked").key_destroyed


def keys(broker: Broker, reference: str = REFERENCE, line: str = LINE) -> list[str]:
    """What anyone holding the deduplication key computes from a guessed reference and line."""
    digest = broker.clients.identities.digest
    return [
        "reference:" + digest("wire_reference", normalise_bank_reference(reference)),
        "line:" + digest("wire_bank_line", line),
    ]


def events(broker: Broker, stream_id: str) -> list[DomainEvent]:
    return [broker.codec.decode(s).event for s in broker.store.read_stream(stream_id)]


def claims(broker: Broker, key: str) -> list[WireClaimed]:
    found = events(broker, WireClaim.stream_id_for(key))
    return [e for e in found if isinstance(e, WireClaimed)]


def test_each_claim_seals_its_wire_under_a_random_key_and_the_wire_seals_its_hashes() -> None:
    b = memory()
    cid = client(b)
    wire_id = declare(b, cid)
    credit(b, wire_id)
    made = [c for key in keys(b) for c in claims(b, key)]
    assert [c.wire_id for c in made] == [wire_id, wire_id]  # readable while the client is
    ids = {c.claim_id for c in made}
    assert len(ids) == 2
    assert wire_id not in ids
    assert cid not in ids
    for claim_id in ids:
        # Random (v4), not the time-ordered generator's next id (the wire's id plus one).
        assert uuid.UUID(claim_id).version == 4
        assert abs(uuid.UUID(claim_id).int - uuid.UUID(wire_id).int) > 2**64
    for key in keys(b):
        (row,) = b.store.read_stream(WireClaim.stream_id_for(key))
        assert wire_id.encode() not in row.data
    # The wire's own stream names the client, but neither hash nor the line in clear.
    wire_rows = b"".join(s.data for s in b.store.read_stream(f"wire-{wire_id}"))
    for text in (*keys(b), LINE):
        assert text.encode() not in wire_rows
    matched = [e for e in events(b, f"wire-{wire_id}") if isinstance(e, WireMatched)]
    assert [(m.client_id, m.bank_transaction_id, m.line_key) for m in matched] == [
        (cid, LINE, keys(b)[1])
    ]


@pytest.mark.parametrize("step", ["declared", "matched"])
def test_an_open_wire_blocks_the_erasure_until_it_is_rejected(step: str) -> None:
    b = memory()
    cid = client(b)
    wire_id = declare(b, cid)
    if step == "matched":
        b.wires.match(MAKER, wire_id, bank_transaction_id=LINE, received=usd(500), booked_on=BOOKED)
    close_and_wait(b, cid)
    with pytest.raises(ErasureBlockedError) as blocked:
        erase(b, cid)
    assert blocked.value.remaining == ("open wire",)
    assert "Ana" not in str(blocked.value)
    b.wires.reject(CHECKER, wire_id, "no money arrived")
    assert erase(b, cid)


def test_a_credited_wire_stops_blocking_once_its_money_is_paid_out() -> None:
    b = memory()
    cid = client(b)
    credit(b, declare(b, cid))
    close_and_wait(b, cid)
    with pytest.raises(ErasureBlockedError) as blocked:
        erase(b, cid)
    assert blocked.value.remaining == ("balance",)  # the wire is closed; its money is not
    pay_out(b, cid)
    assert erase(b, cid)


def test_after_the_erasure_a_guessed_reference_or_line_finds_nobody_and_stays_held() -> None:
    b = memory()
    cid = client(b)
    wire_id = declare(b, cid)
    credit(b, wire_id)
    made = [c.claim_id for key in keys(b) for c in claims(b, key)]
    pay_out(b, cid)
    close_and_wait(b, cid)
    assert erase(b, cid)
    assert b.encryption is not None
    assert all(b.encryption.is_erased(claim_id) for claim_id in made)
    for key in keys(b):
        assert [c.wire_id for c in claims(b, key)] == [ERASED]
        claim = b.repository.get(WireClaim, key)
        assert claim.held
        assert claim.wire_id is None
    assert b.wires.find_by_reference(MAKER, REFERENCE) is None
    # The wire's stream no longer holds the hashes either (sealed under the client's key).
    declared, matched = (
        e for e in events(b, f"wire-{wire_id}") if isinstance(e, WireDeclared | WireMatched)
    )
    assert isinstance(declared, WireDeclared)
    assert declared.reference_key is ERASED
    assert isinstance(matched, WireMatched)
    assert (matched.line_key, matched.bank_transaction_id) == (ERASED, ERASED)
    # The bank's money is not declared nor matched again under another client.
    other = b.clients.register(
        Actor.system("portal", Role.PORTAL),
        Registration(ClientKind.INDIVIDUAL, "SC", "Bo Chen", "bo@example.com"),
    )
    for kind, kwargs in (("passport", {"expires_on": date(2035, 1, 1)}), ("proof_of_address", {})):
        doc = b.kyc.submit(Actor.client(other), other, kind, "f", **kwargs)  # type: ignore[arg-type]
        b.kyc.approve(OFFICER, doc)
    with pytest.raises(DuplicateWireReferenceError):
        declare(b, other)
    fresh = declare(b, other, reference="FX-0043 Bo Chen")
    with pytest.raises(DuplicateBankLineError):
        b.wires.match(MAKER, fresh, bank_transaction_id=LINE, received=usd(500), booked_on=BOOKED)


def test_a_rejected_wire_releases_its_claims_without_naming_the_wire() -> None:
    b = memory()
    cid = client(b)
    wire_id = declare(b, cid)
    b.wires.match(MAKER, wire_id, bank_transaction_id=LINE, received=usd(500), booked_on=BOOKED)
    b.wires.reject(CHECKER, wire_id, "no money arrived")
    for key in keys(b):
        (claimed, released) = events(b, WireClaim.stream_id_for(key))
        assert isinstance(claimed, WireClaimed)
        assert released == WireClaimReleased(claimed.claim_id)
        assert not b.repository.get(WireClaim, key).held
        rows = b"".join(s.data for s in b.store.read_stream(WireClaim.stream_id_for(key)))
        assert wire_id.encode() not in rows
    assert declare(b, cid) != wire_id  # the reference is free again


def test_other_processes_see_the_open_wire_and_the_erasure(tmp_path: Path) -> None:
    path = tmp_path / "fx.db"
    a, other = on_file(path), on_file(path, at=LATER)
    cid = client(a)
    wire_id = declare(a, cid)
    a.clients.move(REP, cid, Stage.CLOSED)
    # Another process, which has not served this client before, answers from the log.
    with pytest.raises(ErasureBlockedError) as blocked:
        erase(other, cid)
    assert blocked.value.remaining == ("open wire",)
    credit(a, wire_id)
    assert other.wires.find_by_reference(MAKER, REFERENCE) is not None  # keys cached there
    pay_out(a, cid)
    assert erase(other, cid)
    # The first process reads the claims as erased on its next load (the erasure watch).
    assert a.wires.find_by_reference(MAKER, REFERENCE) is None
    third = on_file(path, at=LATER)
    for b in (a, third):
        for key in keys(b):
            assert [c.wire_id for c in claims(b, key)] == [ERASED]


def test_a_crash_between_record_and_shred_is_finished_by_erasing_again(tmp_path: Path) -> None:
    path = tmp_path / "fx.db"
    a = on_file(path)
    cid = client(a)
    credit(a, declare(a, cid))
    made = [c.claim_id for key in keys(a) for c in claims(a, key)]
    pay_out(a, cid)
    a.clients.move(REP, cid, Stage.CLOSED)
    crashing = on_file(path, at=LATER)
    assert crashing.encryption is not None

    def down(subject_id: str, at: datetime) -> bool:
        raise StoreError("the key store is down")

    crashing.encryption.keystore.destroy = down  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        erase(crashing, cid)
    fresh = on_file(path, at=LATER)
    assert fresh.encryption is not None
    assert not any(fresh.encryption.is_erased(c) for c in made)
    assert erase(fresh, cid)  # found again from the log
    assert all(fresh.encryption.is_erased(c) for c in made)
    for key in keys(fresh):
        assert [c.wire_id for c in claims(fresh, key)] == [ERASED]


def test_version_1_rows_still_read_and_still_hold_their_reference_and_line() -> None:
    """Rows written before version 2: a claim naming its wire in clear (no claim id, no key to
    shred: its bytes keep the wire's id after an erasure, a documented limit), a release naming
    it, a match with the line in clear; they read, and they still hold the reference."""
    b = memory()
    cid = client(b)
    wire_id = declare(b, cid, reference="FX-0001 old")
    held = "reference:" + b.clients.identities.digest("wire_reference", "FX0099OLD")
    meta = b.codec.encode_metadata(b.codec.decode_metadata(b'{"a":"portal"}'))
    old = NewEvent("WireClaimed", f'{{"wire_id":"{wire_id}"}}'.encode(), meta)
    b.store.append(StreamAppend(WireClaim.stream_id_for(held), 0, (old,)))
    (v1,) = claims(b, held)
    assert (v1.claim_id, v1.wire_id) == ("", wire_id)
    assert b.wires.find_by_reference(MAKER, "FX-0099 old") is not None
    assert declare(b, cid, reference="fx 0099 OLD") == wire_id  # the same declaration
    with pytest.raises(DuplicateWireReferenceError):
        b.wires.declare(
            Actor.client(cid), cid, usd(500), bank_reference="FX0099 OLD", receipt_id="file-2"
        )
    decode = b.codec.decode_event
    assert decode("wireclaim-x", "WireClaimReleased", b'{"wire_id":"w-1"}') == (
        WireClaimReleased("")
    )
    matched = decode(
        f"wire-{wire_id}", "WireMatched",
        b'{"bank_transaction_id":"T1","line_key":"line:ab","received":"5.00 USD",'
        b'"booked_on":"2026-03-09"}',
    )  # fmt: skip
    assert isinstance(matched, WireMatched)
    assert (matched.client_id, matched.bank_transaction_id, matched.line_key) == (
        "", "T1", "line:ab",
    )  # fmt: skip
    assert matched.received == usd(5)
    # The erasure checks know no key for a version-1 claim: nothing of it is shredded.
    assert b.erasure is not None
    assert b.erasure.checks is not None
    ours = "reference:" + b.clients.identities.digest("wire_reference", "FX0001OLD")
    (mine,) = claims(b, ours)
    shredded = b.erasure.checks.shred_with(cid)
    assert mine.claim_id in shredded
    assert "" not in shredded
