"""Withdrawals: held at once, approved by a second person with checks re-run, paid or released."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from fxcrm_core.access import Actor, ApprovalStatus, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration, Stage
from fxcrm_core.events import ERASED
from fxcrm_core.kernel import (
    AccessDeniedError,
    Currency,
    FixedClock,
    IllegalTransitionError,
    Money,
    ValidationError,
)
from fxcrm_core.kyc import KycLevelTooLowError
from fxcrm_core.payments import (
    FeePolicy,
    InstrumentKind,
    LimitExceededError,
    MoneyAccounts,
    PaymentLimits,
    PayoutInstrument,
    WithdrawalStatus,
)
from fxcrm_core.privacy import Iban, MasterKeyring
from tests.system_world import just_before_the_next_append

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
FINANCE = Actor.staff("fin-1", Role.FINANCE)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
IBAN = "DE89370400440532013000"


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


SETTINGS: dict[str, Any] = {
    "payment_limits": PaymentLimits([usd(10_000)]),
    "daily_withdrawal_limits": {"USD": usd(500)},
    "withdrawal_fees": FeePolicy({"USD": usd(2)}, Decimal("0.005")),
}
KEYRING = MasterKeyring({"m1": bytes(range(32))}, "m1")


def on_file(path: Path) -> Broker:
    """A broker on a SQLite file that another one (another process, say) may open as well."""
    return Broker.sqlite(
        path, clock=FixedClock(T0), keyring=KEYRING, identity_key=b"x" * 32,
        synchronous="NORMAL", **SETTINGS,
    )  # fmt: skip


class World:
    def __init__(self, *, level: int = 3, broker: Broker | None = None) -> None:
        self.broker = broker or Broker.in_memory(
            clock=FixedClock(T0), keyring=MasterKeyring.generate(), **SETTINGS
        )
        b = self.broker
        assert b.clients is not None
        self.cid = self.register("ana@example.com")
        self.me = Actor.client(self.cid)
        docs = [("passport", {"expires_on": date(2030, 1, 1)}), ("proof_of_address", {})]
        if level == 3:
            docs += [("selfie", {}), ("source_of_funds", {})]
        for kind, kwargs in docs:
            doc = b.kyc.submit(self.me, self.cid, kind, "f", **kwargs)  # type: ignore[arg-type]
            b.kyc.approve(OFFICER, doc)
        dep = b.deposits.initiate(self.me, self.cid, usd(1000), psp="acq", method="card")
        b.deposits.psp_confirmed(dep, "ref-1", usd(1000))
        self.iban = b.withdrawals.add_instrument(self.me, self.cid, InstrumentKind.IBAN, IBAN)
        b.withdrawals.verify_instrument(FINANCE, self.iban)
        money = MoneyAccounts(b.ledger)
        self.wallet = money.wallet(self.cid, Currency.of("USD"))
        self.clearing = money.broker("psp_clearing", Currency.of("USD"))
        self.fees = money.broker("fees", Currency.of("USD"))

    def register(self, email: str) -> str:
        assert self.broker.clients is not None
        return self.broker.clients.register(
            Actor.system("portal", Role.PORTAL),
            Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", email),
        )

    def balance(self, account: str) -> Money:
        return self.broker.ledger.balance(account).net_credit

    def available(self) -> Money:
        return self.broker.ledger.balance(self.wallet).available_credit

    def approve(self, withdrawal_id: str) -> ApprovalStatus:
        w = self.broker.withdrawals.get(withdrawal_id)
        assert w.approval_id is not None
        return self.broker.approvals.approve(FINANCE, w.approval_id).status


def test_request_hold_approve_pay() -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(200))
    # 200 held and a 2 + 0.5% = 3.00 fee held too; nothing has left the wallet yet.
    assert (w.balance(w.wallet), w.available()) == (usd(1000), usd(797))
    with pytest.raises(IllegalTransitionError):
        w.broker.withdrawals.paid(wd, "payout-1")  # not approved yet
    assert w.approve(wd) is ApprovalStatus.EXECUTED
    assert w.broker.withdrawals.get(wd).status is WithdrawalStatus.APPROVED
    w.broker.withdrawals.paid(wd, "payout-1")
    w.broker.withdrawals.paid(wd, "payout-1")  # the PSP's callback again: nothing more
    assert w.balance(w.wallet) == usd(797)
    assert w.balance(w.fees) == usd(3)
    assert w.broker.withdrawals.get(wd).status is WithdrawalStatus.PAID


def test_instruments_are_encrypted_masked_and_the_clients_own() -> None:
    w = World()
    instrument = w.broker.repository.get(PayoutInstrument, w.iban)
    assert isinstance(instrument.value, Iban)  # the value type, masked in its repr
    assert instrument.value.reveal() == IBAN
    assert IBAN not in repr(instrument)
    assert w.broker.withdrawals.instrument(w.me, w.iban).masked == "DE****************3000"
    assert w.broker.withdrawals.instrument(FINANCE, w.iban).masked == "DE****************3000"
    assert IBAN.encode() not in b"".join(e.data for e in w.broker.store.read_all())
    other = w.register("bo@example.com")
    theirs = w.broker.withdrawals.add_instrument(
        Actor.client(other), other, InstrumentKind.EWALLET, "bo@wallet.example"
    )
    w.broker.withdrawals.verify_instrument(FINANCE, theirs)
    with pytest.raises(AccessDeniedError):
        w.broker.withdrawals.request(w.me, w.cid, theirs, usd(10))
    unverified = w.broker.withdrawals.add_instrument(
        w.me, w.cid, InstrumentKind.CARD, "4111 1111 1111 1111"
    )
    with pytest.raises(IllegalTransitionError, match="not verified"):
        w.broker.withdrawals.request(w.me, w.cid, unverified, usd(10))
    with pytest.raises(ValidationError):
        w.broker.withdrawals.add_instrument(w.me, w.cid, InstrumentKind.CARD, "4111 1111 1111 1112")


def test_a_removed_instrument_refuses_the_approval() -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100))
    w.broker.withdrawals.remove_instrument(w.me, w.iban)
    with pytest.raises(IllegalTransitionError, match="not verified"):
        w.approve(wd)
    assert w.broker.withdrawals.get(wd).status is WithdrawalStatus.REQUESTED


def test_changing_the_instrument_restarts_approval() -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100))
    first = w.broker.withdrawals.get(wd).approval_id
    assert w.approve(wd) is ApprovalStatus.EXECUTED
    card = w.broker.withdrawals.add_instrument(
        w.me, w.cid, InstrumentKind.CARD, "4111 1111 1111 1111"
    )
    w.broker.withdrawals.verify_instrument(FINANCE, card)
    w.broker.withdrawals.change_instrument(w.me, wd, card)
    changed = w.broker.withdrawals.get(wd)
    assert (changed.status, changed.instrument_id) == (WithdrawalStatus.REQUESTED, card)
    assert changed.approval_id not in (None, first)
    with pytest.raises(IllegalTransitionError):
        w.broker.withdrawals.paid(wd, "p")
    assert w.approve(wd) is ApprovalStatus.EXECUTED
    assert w.broker.withdrawals.paid(wd, "p").status is WithdrawalStatus.PAID


@pytest.mark.parametrize("status", [WithdrawalStatus.REJECTED, WithdrawalStatus.CANCELLED])
def test_rejection_and_cancellation_release_the_holds(status: WithdrawalStatus) -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(200))
    actor = FINANCE if status is WithdrawalStatus.REJECTED else w.me
    closed = w.broker.withdrawals.close(actor, wd, status, "documents missing")
    assert closed.status is status
    assert (w.balance(w.wallet), w.available()) == (usd(1000), usd(1000))
    assert w.broker.withdrawals.close(actor, wd, status, "again").status is status
    with pytest.raises(IllegalTransitionError):
        w.broker.withdrawals.paid(wd, "p")


def test_withdrawals_need_kyc_level_three_and_respect_the_daily_limit() -> None:
    w = World(level=2)
    with pytest.raises(KycLevelTooLowError):
        w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(10))
    w = World()
    w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(300))
    with pytest.raises(LimitExceededError, match="a day"):
        w.broker.withdrawals.request(w.me, w.cid, w.iban, usd("200.01"))
    w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(200))
    # Held: 300 + a 3.50 fee, 200 + a 3.00 fee.
    assert w.available() == usd("493.50")


def test_two_processes_withdrawing_at_once_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World(broker=on_file(tmp_path / "b.sqlite"))
    other = on_file(tmp_path / "b.sqlite")
    # The rival opens the fee account and counts 100 on today's counter after this request read
    # both: the request looks again instead of failing with a ConcurrencyError.
    rival: list[str] = []
    just_before_the_next_append(
        monkeypatch,
        w.broker,
        lambda: rival.append(other.withdrawals.request(w.me, w.cid, w.iban, usd(100))),
    )
    mine = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(150))
    # Held: 100 + a 2.50 fee, 150 + a 2.75 fee.
    assert w.available() == usd("744.75")
    assert {w.broker.withdrawals.get(i).status for i in (*rival, mine)} == {
        WithdrawalStatus.REQUESTED
    }
    # The daily limit is checked on the counter as it stands after the rival: 100 + 150 + 300
    # is above 500, refused as such.
    just_before_the_next_append(
        monkeypatch,
        w.broker,
        lambda: other.withdrawals.request(w.me, w.cid, w.iban, usd(200)),
    )
    with pytest.raises(LimitExceededError, match="a day"):
        w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100))
    assert w.available() == usd("541.75")  # the rival's 200 + 3.00 held, nothing of ours
    other.close()
    w.broker.close()


def test_two_threads_withdrawing_at_once_never_see_a_conflict(tmp_path: Path) -> None:
    w = World(broker=on_file(tmp_path / "b.sqlite"))
    brokers = [w.broker, on_file(tmp_path / "b.sqlite")]
    errors: list[BaseException] = []
    for _ in range(3):
        barrier = threading.Barrier(2)

        def withdraw(broker: Broker, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                broker.withdrawals.request(w.me, w.cid, w.iban, usd(50))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=withdraw, args=(b,)) for b in brokers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    # Six withdrawals of 50, each with a 2.25 fee.
    assert w.available() == usd("686.50")
    for b in brokers:
        b.close()


def old_instrument_row(w: World, instrument_id: str) -> bytes:
    """An InstrumentAdded as version 1 stored it: the masked string in clear, beside the sealed
    value."""
    assert w.broker.encryption is not None
    token = w.broker.encryption.encrypt_for(w.cid, "InstrumentAdded:value", IBAN.encode())
    return json.dumps(
        {
            "instrument_id": instrument_id,
            "client_id": w.cid,
            "kind": "iban",
            "masked": "DE****************3000",
            "$pii": f"value|{token}",
        }
    ).encode()


def v2_instrument_row(w: World, instrument_id: str) -> bytes:
    """An InstrumentAdded as version 2 stored it: the masked string sealed beside the value."""
    assert w.broker.encryption is not None
    sealed = w.broker.encryption.encrypt_for(
        w.cid, "InstrumentAdded:masked,value", b"DE****************3000\0" + IBAN.encode()
    )
    return json.dumps(
        {
            "_v": 2,
            "instrument_id": instrument_id,
            "client_id": w.cid,
            "kind": "iban",
            "$pii": f"masked,value|{sealed}",
        }
    ).encode()


def test_nothing_but_the_sealed_value_is_stored_and_old_masks_are_dropped() -> None:
    w = World()
    stored = b"".join(e.data for e in w.broker.store.read_all())
    assert b"DE***" not in stored
    assert b"3000" not in stored
    added = [
        w.broker.codec.decode(r).event
        for r in w.broker.store.read_stream(f"instrument-{w.iban}")
        if r.event_type == "InstrumentAdded"
    ]
    assert [sorted(attrs.fields_dict(type(e))) for e in added] == [  # type: ignore[arg-type]
        ["client_id", "instrument_id", "kind", "value"]
    ]
    rows = ((1, old_instrument_row(w, "old-1")), (2, v2_instrument_row(w, "old-2")))
    for version, row in rows:
        old = w.broker.codec.decode_event(f"instrument-old-{version}", "InstrumentAdded", row)
        # Versions 1 and 2's masked strings are dropped on read; the state holds the value type.
        assert not hasattr(old, "masked")
        state = PayoutInstrument.blank(f"old-{version}").apply(old)
        assert isinstance(state.value, Iban)
        assert state.value.reveal() == IBAN
        assert state.value.masked() == "DE****************3000"

    assert w.broker.encryption is not None
    w.broker.encryption.erase(w.cid)  # the key destroyed (what an erasure does) ...
    w.broker.repository.forget()  # ... and the states cached before it dropped
    assert w.broker.withdrawals.instrument(FINANCE, w.iban).masked is ERASED
    assert w.broker.repository.get(PayoutInstrument, w.iban).erased
    for version, row in rows:
        old = w.broker.codec.decode_event(f"instrument-old-{version}", "InstrumentAdded", row)
        assert PayoutInstrument.blank("old").apply(old).erased
    for recorded in w.broker.store.read_all():
        event = w.broker.codec.decode(recorded).event
        assert "DE***" not in repr(attrs.asdict(event))  # type: ignore[arg-type]


def test_an_erased_clients_instruments_read_as_erased() -> None:
    """Through the broker's own erasure: closed, past the retention period, no money."""
    clock = FixedClock(T0)
    broker = Broker.in_memory(clock=clock, keyring=MasterKeyring.generate(), **SETTINGS)
    assert broker.clients is not None
    portal = Actor.system("portal", Role.PORTAL)
    cid = broker.clients.register(
        portal, Registration(ClientKind.INDIVIDUAL, "SC", "Bo Chen", "bo@example.com")
    )
    card = broker.withdrawals.add_instrument(
        Actor.client(cid), cid, InstrumentKind.CARD, "4111 1111 1111 1111"
    )
    masked = broker.withdrawals.instrument(Actor.client(cid), card).masked
    assert masked.endswith("1111")
    assert masked.encode() not in b"".join(e.data for e in broker.store.read_all())
    broker.clients.move(Actor.client(cid), cid, Stage.CLOSED)  # the client leaves
    clock.set(T0 + timedelta(days=5 * 366 + 1))
    officer = Actor.staff("dpo-1", Role.COMPLIANCE)
    assert broker.erasure.erase(officer, cid, reason="GDPR art. 17 request").key_destroyed
    assert broker.withdrawals.instrument(officer, card).masked is ERASED
    assert broker.repository.get(PayoutInstrument, card).erased
