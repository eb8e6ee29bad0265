"""Bank wires: declared with the payer's reference, matched to a statement line, approved by a
second person, credited once; a duplicate reference or statement line is refused, a rejection
moves nothing and releases both."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from fxcrm_core.access import (
    Actor,
    ApprovalClosedError,
    ApprovalStatus,
    Role,
    SelfApprovalError,
)
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.events import StreamAppend
from fxcrm_core.kernel import Currency, FixedClock, Money
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    ArgumentTypeError,
    CurrencyMismatchError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kyc import KycLevelTooLowError
from fxcrm_core.payments import MoneyAccounts
from fxcrm_core.payments.wires import (
    BankWires,
    DuplicateBankLineError,
    DuplicateWireReferenceError,
    WireStatus,
)
from fxcrm_core.privacy import MasterKeyring, MemoryKeyStore
from fxcrm_core.stores import MemoryEventStore, MemorySnapshotStore
from tests.system_world import just_before_the_next_append

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
KEYRING = MasterKeyring({"m1": bytes(range(32))}, "m1")
IDENTITY_KEY = b"w" * 32
BOOKED = date(2026, 3, 9)
MAKER = Actor.staff("fin-1", Role.FINANCE)
CHECKER = Actor.staff("fin-2", Role.FINANCE)
REFERENCE = "FX-ANA LIMA 0042"  # names the payer: never echoed


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def wires_of(broker: Broker) -> BankWires:
    """The broker's wire service (one per broker: it registers the approval action)."""
    return broker.wires


class Memory:
    """A log and key store in memory that several brokers (a restart, another process) open."""

    def __init__(self) -> None:
        self.store = MemoryEventStore(FixedClock(T0))
        self.keys = MemoryKeyStore()

    def broker(self) -> Broker:
        return Broker(
            self.store, snapshots=MemorySnapshotStore(), keystore=self.keys,
            clock=FixedClock(T0), keyring=KEYRING, identity_key=IDENTITY_KEY,
        )  # fmt: skip


def on_file(path: Path) -> Broker:
    return Broker.sqlite(
        path, clock=FixedClock(T0), keyring=KEYRING, identity_key=IDENTITY_KEY,
        synchronous="NORMAL",
    )  # fmt: skip


def client(broker: Broker, email: str = "ana@example.com", *, verified: bool = True) -> str:
    assert broker.clients is not None
    cid = broker.clients.register(
        Actor.system("portal", Role.PORTAL),
        Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", email),
    )
    if verified:
        officer = Actor.staff("kyc-1", Role.COMPLIANCE)
        for kind, kwargs in (
            ("passport", {"expires_on": date(2030, 1, 1)}),
            ("proof_of_address", {}),
        ):
            doc = broker.kyc.submit(Actor.client(cid), cid, kind, "f", **kwargs)  # type: ignore[arg-type]
            broker.kyc.approve(officer, doc)
    return cid


def world() -> tuple[Broker, BankWires, str]:
    broker = Memory().broker()
    wires = wires_of(broker)
    return broker, wires, client(broker)


def wallet(broker: Broker, cid: str) -> Money:
    return broker.ledger.balance(
        MoneyAccounts(broker.ledger).wallet(cid, Currency.of("USD"))
    ).net_credit


def clearing(broker: Broker) -> Money:
    return broker.ledger.balance(
        MoneyAccounts(broker.ledger).broker("bank_clearing", Currency.of("USD"))
    ).net_credit


def test_a_matched_and_approved_wire_credits_the_wallet_once() -> None:
    broker, wires, cid = world()
    me = Actor.client(cid)
    wire_id = wires.declare(me, cid, usd(5000), bank_reference=REFERENCE, receipt_id="file-1")
    assert wires.get(me, wire_id).status is WireStatus.DECLARED
    # Finance reads the payer's reference off the statement, written the bank's way.
    found = wires.find_by_reference(MAKER, "fx ana-lima/0042")
    assert found is not None
    assert found.id == wire_id
    wire = wires.match(
        MAKER, wire_id, bank_transaction_id="FT26068X1", received=usd(5000), booked_on=BOOKED
    )
    assert wire.status is WireStatus.MATCHED
    assert wire.approval_id is not None
    assert wallet(broker, cid) == usd(0)  # nothing before the checker
    decision = broker.approvals.approve(CHECKER, wire.approval_id)
    assert decision.status is ApprovalStatus.EXECUTED
    assert wallet(broker, cid) == usd(5000)
    assert clearing(broker) == usd(-5000)  # debits equal credits
    done = wires.get(CHECKER, wire_id)
    assert done.status is WireStatus.CREDITED
    assert done.credited == usd(5000)
    # A second approval, a retry, the same match again: nothing more.
    assert not broker.approvals.approve(CHECKER, wire.approval_id).changed
    assert not broker.approvals.retry(CHECKER, wire.approval_id).changed
    assert wires._credit({"wire_id": wire_id}, f"approval:{wire.approval_id}")
    wires.match(
        MAKER, wire_id, bank_transaction_id="ft26068x1", received=usd(5000), booked_on=BOOKED
    )
    assert wallet(broker, cid) == usd(5000)
    assert wires.waiting(MAKER) == []


def test_the_maker_cannot_approve_and_clients_cannot_match() -> None:
    broker, wires, cid = world()
    me = Actor.client(cid)
    wire_id = wires.declare(me, cid, usd(100), bank_reference=REFERENCE, receipt_id="file-1")
    with pytest.raises(AccessDeniedError):
        wires.match(me, wire_id, bank_transaction_id="T1", received=usd(100), booked_on=BOOKED)
    wire = wires.match(
        MAKER, wire_id, bank_transaction_id="T1", received=usd(100), booked_on=BOOKED
    )
    assert wire.approval_id is not None
    with pytest.raises(SelfApprovalError):
        broker.approvals.approve(MAKER, wire.approval_id)
    with pytest.raises(AccessDeniedError):
        broker.approvals.approve(me, wire.approval_id)
    assert wallet(broker, cid) == usd(0)


def test_duplicate_reference_is_refused_and_the_same_declaration_answers_its_wire() -> None:
    broker, wires, cid = world()
    me = Actor.client(cid)
    first = wires.declare(me, cid, usd(300), bank_reference=REFERENCE, receipt_id="file-1")
    # The form sent twice (the reference typed differently): the same wire.
    again = wires.declare(me, cid, usd(300), bank_reference="fx-ana lima-0042", receipt_id="file-1")
    assert again == first
    for amount, receipt in ((usd(301), "file-1"), (usd(300), "file-2")):
        with pytest.raises(DuplicateWireReferenceError) as refused:
            wires.declare(me, cid, amount, bank_reference=REFERENCE, receipt_id=receipt)
        assert "ANA" not in str(refused.value).upper()
        assert "0042" not in str(refused.value)
    other = client(broker, "bo@example.com")
    with pytest.raises(DuplicateWireReferenceError):
        wires.declare(
            Actor.client(other), other, usd(300), bank_reference=REFERENCE, receipt_id="file-1"
        )
    assert [w.wire_id for w in wires.waiting(MAKER)] == [first]


def test_one_statement_line_matches_one_wire() -> None:
    _broker, wires, cid = world()
    me = Actor.client(cid)
    a = wires.declare(me, cid, usd(100), bank_reference="REF A", receipt_id="f-a")
    b = wires.declare(me, cid, usd(100), bank_reference="REF B", receipt_id="f-b")
    wires.match(MAKER, a, bank_transaction_id="T-9", received=usd(100), booked_on=BOOKED)
    with pytest.raises(DuplicateBankLineError):
        wires.match(MAKER, b, bank_transaction_id=" t-9 ", received=usd(100), booked_on=BOOKED)
    with pytest.raises(IllegalTransitionError):  # a matched wire takes no other line
        wires.match(MAKER, a, bank_transaction_id="T-10", received=usd(100), booked_on=BOOKED)
    assert wires.get(MAKER, b).status is WireStatus.DECLARED


def test_a_rejected_wire_leaves_nothing_and_releases_its_reference_and_line() -> None:
    broker, wires, cid = world()
    me = Actor.client(cid)
    wire_id = wires.declare(me, cid, usd(700), bank_reference=REFERENCE, receipt_id="file-1")
    wire = wires.match(
        MAKER, wire_id, bank_transaction_id="T1", received=usd(700), booked_on=BOOKED
    )
    assert wire.approval_id is not None
    before = broker.store.last_position()
    rejected = wires.reject(CHECKER, wire_id, "the statement line belongs to another payer")
    assert rejected.status is WireStatus.REJECTED
    assert broker.approvals.get(wire.approval_id).status is ApprovalStatus.REJECTED
    # Nothing posted: no ledger stream was written by the rejection.
    written = broker.store.read_all(after_position=before)
    assert {s.stream_id.split("-", 1)[0] for s in written} <= {"wire", "wireclaim", "approval"}
    assert wallet(broker, cid) == usd(0)
    with pytest.raises(ApprovalClosedError):
        broker.approvals.approve(CHECKER, wire.approval_id)
    assert wallet(broker, cid) == usd(0)
    assert wires.reject(CHECKER, wire_id, "again").reason == rejected.reason  # a repeat
    # The reference and the line may go to a new declaration, credited normally.
    renewed = wires.declare(me, cid, usd(700), bank_reference=REFERENCE, receipt_id="file-1")
    assert renewed != wire_id
    wire = wires.match(
        MAKER, renewed, bank_transaction_id="T1", received=usd(700), booked_on=BOOKED
    )
    assert wire.approval_id is not None
    broker.approvals.approve(CHECKER, wire.approval_id)
    assert wallet(broker, cid) == usd(700)
    with pytest.raises(IllegalTransitionError):  # credited: a reversal, not a rejection
        wires.reject(CHECKER, renewed, "too late")


def test_the_maker_rejecting_cancels_the_approval_and_a_client_cannot_reject() -> None:
    broker, wires, cid = world()
    me = Actor.client(cid)
    wire_id = wires.declare(me, cid, usd(50), bank_reference=REFERENCE, receipt_id="file-1")
    with pytest.raises(AccessDeniedError):
        wires.reject(me, wire_id, "changed my mind")
    wire = wires.match(MAKER, wire_id, bank_transaction_id="T1", received=usd(50), booked_on=BOOKED)
    assert wire.approval_id is not None
    wires.reject(MAKER, wire_id, "wrong line")
    assert broker.approvals.get(wire.approval_id).status is ApprovalStatus.CANCELLED


def test_what_the_bank_received_is_credited_and_shown_to_the_checker() -> None:
    broker, wires, cid = world()
    me = Actor.client(cid)
    wire_id = wires.declare(me, cid, usd(1000), bank_reference=REFERENCE, receipt_id="file-1")
    wire = wires.match(
        MAKER, wire_id, bank_transaction_id="T1", received=usd("985.50"), booked_on=BOOKED
    )
    assert wire.difference == usd("-14.50")
    [open_wire] = wires.waiting(CHECKER)
    assert open_wire.received == usd("985.50")
    assert open_wire.approval_id == wire.approval_id
    assert wire.approval_id is not None
    broker.approvals.approve(CHECKER, wire.approval_id)
    assert wallet(broker, cid) == usd("985.50")


def test_bad_input_is_refused_with_typed_errors_and_no_echo() -> None:
    _broker, wires, cid = world()
    me = Actor.client(cid)
    with pytest.raises(ValidationError):
        wires.declare(me, cid, usd(1), bank_reference=" -/- ", receipt_id="f")
    with pytest.raises(ValidationError) as bad:
        wires.declare(me, cid, usd(1), bank_reference="ANA\x00LIMA", receipt_id="f")
    assert "ANA" not in str(bad.value)
    with pytest.raises(ValidationError):
        wires.declare(me, cid, usd(0), bank_reference=REFERENCE, receipt_id="f")
    with pytest.raises(ArgumentTypeError):
        wires.declare(me, cid, 100, bank_reference=REFERENCE, receipt_id="f")  # type: ignore[arg-type]
    with pytest.raises(AccessDeniedError):
        wires.declare(me, "someone-else", usd(1), bank_reference=REFERENCE, receipt_id="f")
    with pytest.raises(NotFoundError):
        wires.get(MAKER, "no-such-wire")
    wire_id = wires.declare(me, cid, usd(10), bank_reference=REFERENCE, receipt_id="f")
    with pytest.raises(CurrencyMismatchError):
        wires.match(
            MAKER, wire_id, bank_transaction_id="T", received=Money.of(10, "EUR"),
            booked_on=BOOKED,
        )  # fmt: skip
    with pytest.raises(ArgumentTypeError):
        wires.match(MAKER, wire_id, bank_transaction_id="T", received=usd(10), booked_on=T0)
    with pytest.raises(AccessDeniedError):
        wires.get(Actor.client("c-other"), wire_id)
    assert wires.get(MAKER, wire_id).status is WireStatus.DECLARED


def test_a_client_without_the_deposit_right_cannot_declare_nor_be_credited() -> None:
    broker = Memory().broker()
    wires = wires_of(broker)
    cid = client(broker, verified=False)
    with pytest.raises(KycLevelTooLowError):
        wires.declare(Actor.client(cid), cid, usd(10), bank_reference=REFERENCE, receipt_id="f")


def test_the_reference_is_sealed_in_the_log() -> None:
    broker, wires, cid = world()
    wires.declare(Actor.client(cid), cid, usd(10), bank_reference=REFERENCE, receipt_id="f")
    stored = b"".join(s.data for s in broker.store.read_all(limit=10_000))
    assert b"ANA LIMA" not in stored.upper()
    assert b"ANALIMA0042" not in stored.upper()
    assert b"FX-ANA" not in stored


def test_two_processes_declaring_one_reference_make_one_wire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = on_file(tmp_path / "b.sqlite")
    cid = client(broker)
    other = on_file(tmp_path / "b.sqlite")
    mine, theirs = wires_of(broker), wires_of(other)
    me = Actor.client(cid)
    rival: list[str] = []
    just_before_the_next_append(
        monkeypatch,
        broker,
        lambda: rival.append(
            theirs.declare(me, cid, usd(10), bank_reference=REFERENCE, receipt_id="f")
        ),
    )
    # The same declaration racing: the loser answers the winner's wire.
    assert mine.declare(me, cid, usd(10), bank_reference=REFERENCE, receipt_id="f") == rival[0]
    just_before_the_next_append(
        monkeypatch,
        broker,
        lambda: rival.append(
            theirs.declare(me, cid, usd(20), bank_reference="REF 2", receipt_id="f")
        ),
    )
    with pytest.raises(DuplicateWireReferenceError):
        mine.declare(me, cid, usd(30), bank_reference="ref-2", receipt_id="f")
    assert len(mine.waiting(MAKER)) == 2
    other.close()
    broker.close()


def test_a_rejection_racing_the_credit_leaves_one_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = on_file(tmp_path / "b.sqlite")
    cid = client(broker)
    other = on_file(tmp_path / "b.sqlite")
    mine, theirs = wires_of(broker), wires_of(other)
    wire_id = mine.declare(
        Actor.client(cid), cid, usd(40), bank_reference=REFERENCE, receipt_id="f"
    )
    approval_id = mine.match(
        MAKER, wire_id, bank_transaction_id="T1", received=usd(40), booked_on=BOOKED
    ).approval_id
    assert approval_id is not None
    # The approval commits; right before the credit's append another process rejects the wire
    # (its approval no longer pending, on the wire alone): the credit's append loses.
    real = broker.store.append
    raced: list[str] = []

    def append(*appends: StreamAppend, **kwargs: Any) -> Any:
        if not raced and any(a.stream_id == f"transfer-wire:{wire_id}" for a in appends):
            raced.append("rejected")  # right before the credit's append
            theirs.reject(Actor.staff("fin-3", Role.FINANCE), wire_id, "returned by the bank")
        return real(*appends, **kwargs)

    monkeypatch.setattr(broker.store, "append", append)
    with pytest.raises(IllegalTransitionError):
        broker.approvals.approve(CHECKER, approval_id)
    assert raced == ["rejected"]
    monkeypatch.setattr(broker.store, "append", real)
    assert mine.get(MAKER, wire_id).status is WireStatus.REJECTED
    assert wallet(broker, cid) == usd(0)
    assert clearing(broker) == usd(0)
    # The approval stays approved, its action refused for good.
    with pytest.raises(IllegalTransitionError):
        broker.approvals.retry(CHECKER, approval_id)
    assert wallet(other, cid) == usd(0)
    other.close()
    broker.close()


def before_the_append_of(
    monkeypatch: pytest.MonkeyPatch, broker: Broker, event_type: str, rival: Callable[[], object]
) -> list[str]:
    """Run ``rival`` (another process's command) right before ``broker``'s first append holding
    an event of ``event_type``; answers a list that says whether it ran."""
    real = broker.store.append
    ran: list[str] = []

    def append(*appends: StreamAppend, **kwargs: Any) -> Any:
        if not ran and any(e.event_type == event_type for a in appends for e in a.events):
            ran.append(event_type)
            rival()
        return real(*appends, **kwargs)

    monkeypatch.setattr(broker.store, "append", append)
    return ran


@pytest.mark.parametrize("step", ["WireMatched", "ApprovalRequested", "WireSubmitted"])
def test_two_clerks_matching_one_wire_at_once_open_one_approval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    broker = on_file(tmp_path / "b.sqlite")
    cid = client(broker)
    other = on_file(tmp_path / "b.sqlite")
    mine, theirs = wires_of(broker), wires_of(other)
    wire_id = mine.declare(
        Actor.client(cid), cid, usd(80), bank_reference=REFERENCE, receipt_id="f"
    )
    clerk = Actor.staff("fin-3", Role.FINANCE)

    def line(w: BankWires, who: Actor) -> Any:
        return w.match(who, wire_id, bank_transaction_id="T1", received=usd(80), booked_on=BOOKED)

    ran = before_the_append_of(monkeypatch, broker, step, lambda: line(theirs, clerk))
    line(mine, MAKER)
    assert ran == [step]
    approval_id = mine.get(MAKER, wire_id).approval_id
    assert approval_id is not None
    assert approval_id == theirs.get(clerk, wire_id).approval_id
    requests = [
        broker.approvals.get(s.stream_id.removeprefix("approval-"))
        for s in broker.store.read_all(limit=10_000)
        if s.event_type == "ApprovalRequested"
    ]
    # One request stands; one opened by the loser of the race is cancelled by it.
    assert [r.id for r in requests if r.status is ApprovalStatus.PENDING] == [approval_id]
    assert all(r.status is ApprovalStatus.CANCELLED for r in requests if r.id != approval_id)
    maker = broker.approvals.get(approval_id).maker_id
    checker = CHECKER if maker != CHECKER.id else MAKER
    broker.approvals.approve(checker, approval_id)
    assert wallet(broker, cid) == usd(80)
    other.close()
    broker.close()
