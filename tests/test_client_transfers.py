"""Client-to-client transfers (issue 20, item 4): both verified, limits, a second person above a
threshold, the receiver's consent where required, held at once and posted once; racing
transfers on one balance: one wins; a retry answers the same transfer."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import Actor, ApprovalStatus, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.kernel import (
    AccessDeniedError,
    Currency,
    FixedClock,
    IdempotencyConflictError,
    IllegalTransitionError,
    Money,
    ValidationError,
)
from fxcrm_core.kyc import KycLevelTooLowError
from fxcrm_core.ledger import ExceedsLimitError
from fxcrm_core.payments import ClientTransferStatus, LimitExceededError, PaymentLimits
from fxcrm_core.privacy import MasterKeyring

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
FINANCE = Actor.staff("fin-1", Role.FINANCE)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
PORTAL = Actor.system("portal", Role.PORTAL)
USD = Currency.of("USD")
KEYRING = MasterKeyring({"m1": bytes(range(32))}, "m1")


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


SETTINGS: dict[str, Any] = {
    "payment_limits": PaymentLimits([usd(10_000)]),
    "daily_client_transfer_limits": {"USD": usd(700)},
}


def verify(b: Broker, cid: str, level: int) -> dict[str, str]:
    """Approve the documents of ``level``; their ids by kind."""
    me = Actor.client(cid)
    docs = [("passport", {"expires_on": date(2030, 1, 1)}), ("proof_of_address", {})]
    if level == 3:
        docs += [("selfie", {}), ("source_of_funds", {})]
    ids = {}
    for kind, kwargs in docs:
        ids[kind] = b.kyc.submit(me, cid, kind, "f", **kwargs)  # type: ignore[arg-type]
        b.kyc.approve(OFFICER, ids[kind])
    return ids


class World:
    """Ana (level 3, 1,000 USD in her wallet) and Bo (level 2: may receive, not send)."""

    def __init__(self, broker: Broker | None = None, **options: Any) -> None:
        self.b = broker or Broker.in_memory(
            clock=FixedClock(T0), keyring=MasterKeyring.generate(), **{**SETTINGS, **options}
        )
        self.ana = self.register("Ana Lima", "ana@example.com")
        self.bo = self.register("Bo Chen", "bo@example.com")
        verify(self.b, self.ana, 3)
        self.bo_documents = verify(self.b, self.bo, 2)
        dep = self.b.deposits.initiate(
            Actor.client(self.ana), self.ana, usd(1000), psp="acq", method="card"
        )
        self.b.deposits.psp_confirmed(dep, "ref-1", usd(1000))

    def register(self, name: str, email: str) -> str:
        return self.b.clients.register(
            PORTAL, Registration(ClientKind.INDIVIDUAL, "SC", name, email)
        )

    def wallet(self, cid: str) -> Money:
        return self.b.ledger.balance(f"wallet:{cid}:USD").net_credit

    def available(self, cid: str) -> Money:
        return self.b.ledger.balance(f"wallet:{cid}:USD").available_credit

    def send(self, request_id: str, amount: str | int, actor: Actor | None = None) -> Any:
        me = actor or Actor.client(self.ana)
        return self.b.client_transfers.request(me, request_id, self.ana, self.bo, usd(amount))


def test_a_transfer_moves_money_once_and_a_retry_answers_the_same_transfer() -> None:
    w = World()
    done = w.send("t-1", 250)
    assert done.status is ClientTransferStatus.COMPLETED
    assert (w.wallet(w.ana), w.wallet(w.bo)) == (usd(750), usd(250))
    again = w.send("t-1", 250)  # the client's app retries after a timeout
    assert again.status is ClientTransferStatus.COMPLETED
    assert (w.wallet(w.ana), w.wallet(w.bo)) == (usd(750), usd(250))
    with pytest.raises(IdempotencyConflictError):
        w.send("t-1", 251)  # the same id for another transfer
    # The trial balance: what left the clearing account is in the two wallets.
    clearing = w.b.ledger.balance("psp_clearing:USD")
    assert clearing.debits_posted.amount == w.wallet(w.ana).amount + w.wallet(w.bo).amount
    # Both sides read it; a stranger does not.
    assert w.b.client_transfers.get(Actor.client(w.bo), "t-1").amount == usd(250)
    carl = w.register("Carl Diaz", "carl@example.com")
    with pytest.raises(AccessDeniedError):
        w.b.client_transfers.get(Actor.client(carl), "t-1")


@pytest.mark.parametrize(
    ("why", "call", "error"),
    [
        ("over the per-payment limit", lambda w: w.send("t", 10_001), LimitExceededError),
        ("to themselves", lambda w: w.b.client_transfers.request(
            Actor.client(w.ana), "t", w.ana, w.ana, usd(5)), ValidationError),
        ("Bo may not send (level 2)", lambda w: w.b.client_transfers.request(
            Actor.client(w.bo), "t", w.bo, w.ana, usd(5)), KycLevelTooLowError),
        ("to an unverified client", lambda w: w.b.client_transfers.request(
            Actor.client(w.ana), "t", w.ana, w.register("Cy", "cy@example.com"), usd(5)),
            KycLevelTooLowError),
        ("from another's wallet", lambda w: w.b.client_transfers.request(
            Actor.client(w.bo), "t", w.ana, w.bo, usd(5)), AccessDeniedError),
        ("a blank id", lambda w: w.send(" ", 5), ValidationError),
        ("a float", lambda w: w.b.client_transfers.request(
            Actor.client(w.ana), "t", w.ana, w.bo, 5.0), ValidationError),
        ("more than the wallet", lambda w: w.send("t", 1001), ExceedsLimitError),
    ],
)  # fmt: skip
def test_a_refused_transfer_writes_nothing(why: str, call: Any, error: Any) -> None:
    w = World(daily_client_transfer_limits={"USD": usd(5000)})
    before = w.b.store.last_position()
    with pytest.raises(error):
        call(w)
    after = [r.event_type for r in w.b.store.read_all(after_position=before)]
    assert not [t for t in after if t.startswith("ClientTransfer") or t == "PaymentCounted"], why
    assert w.wallet(w.ana) == usd(1000)


def test_the_daily_limit_counts_every_transfer_of_the_trading_day() -> None:
    w = World()
    w.send("t-1", 400)
    w.send("t-2", 300)
    with pytest.raises(LimitExceededError):
        w.send("t-3", "0.01")
    assert w.wallet(w.bo) == usd(700)


def test_above_the_threshold_a_second_person_approves_and_the_amount_waits_held() -> None:
    w = World(client_transfer_approval_above={"USD": usd(100)})
    waiting = w.send("t-1", 300)
    assert waiting.status is ClientTransferStatus.WAITING
    assert waiting.approval_id is not None
    assert (w.available(w.ana), w.wallet(w.bo)) == (usd(700), usd(0))  # held, not moved
    with pytest.raises(AccessDeniedError):  # the sender is no checker
        w.b.approvals.approve(Actor.client(w.ana), waiting.approval_id)
    assert w.b.approvals.approve(FINANCE, waiting.approval_id).status is ApprovalStatus.EXECUTED
    assert w.b.client_transfers.get(FINANCE, "t-1").status is ClientTransferStatus.COMPLETED
    assert (w.wallet(w.ana), w.wallet(w.bo)) == (usd(700), usd(300))
    small = w.send("t-2", 100)  # at the threshold: no approval
    assert small.status is ClientTransferStatus.COMPLETED


def test_a_rejected_transfer_leaves_nothing_moved_and_a_second_rejection_changes_nothing() -> None:
    w = World(client_transfer_approval_above={"USD": usd(100)})
    w.send("t-1", 300)
    closed = w.b.client_transfers.reject(FINANCE, "t-1", "source of funds unclear")
    assert (closed.status, closed.reason) == (
        ClientTransferStatus.REJECTED,
        "source of funds unclear",
    )
    assert (
        w.b.client_transfers.reject(FINANCE, "t-1", "again").status is ClientTransferStatus.REJECTED
    )
    assert (w.available(w.ana), w.wallet(w.ana), w.wallet(w.bo)) == (usd(1000), usd(1000), usd(0))
    approval = w.b.client_transfers.get(FINANCE, "t-1").approval_id
    assert approval is not None
    assert w.b.approvals.get(approval).status is ApprovalStatus.REJECTED
    with pytest.raises(IllegalTransitionError):
        w.b.client_transfers.cancel(Actor.client(w.ana), "t-1", "changed my mind")


def test_where_consent_is_required_only_the_receiver_accepts_or_declines() -> None:
    w = World(client_transfer_consent=True)
    assert w.send("t-1", 50).status is ClientTransferStatus.WAITING
    for stranger in (FINANCE, Actor.client(w.ana)):
        with pytest.raises(AccessDeniedError):  # staff and the sender do not consent for Bo
            w.b.client_transfers.accept(stranger, "t-1")
    done = w.b.client_transfers.accept(Actor.client(w.bo), "t-1")
    assert done.status is ClientTransferStatus.COMPLETED
    assert (
        w.b.client_transfers.accept(Actor.client(w.bo), "t-1").status
        is ClientTransferStatus.COMPLETED
    )
    assert w.wallet(w.bo) == usd(50)
    w.send("t-2", 70)
    declined = w.b.client_transfers.decline(Actor.client(w.bo), "t-2", "I do not know Ana")
    assert declined.status is ClientTransferStatus.DECLINED
    assert (w.available(w.ana), w.wallet(w.bo)) == (usd(950), usd(50))


@pytest.mark.parametrize("consent_first", [True, False])
def test_approval_and_consent_both_pass_before_the_money_moves_in_either_order(
    consent_first: bool,
) -> None:
    w = World(client_transfer_consent=True, client_transfer_approval_above={"USD": usd(10)})
    approval_id = w.send("t-1", 60).approval_id
    assert approval_id is not None

    def accept() -> object:
        return w.b.client_transfers.accept(Actor.client(w.bo), "t-1")

    def approve() -> object:
        return w.b.approvals.approve(FINANCE, approval_id)

    first, second = (accept, approve) if consent_first else (approve, accept)
    first()
    assert w.wallet(w.bo) == usd(0)
    second()
    assert w.b.client_transfers.get(FINANCE, "t-1").status is ClientTransferStatus.COMPLETED
    assert w.wallet(w.bo) == usd(60)


def test_a_level_revoked_while_waiting_stops_the_approval() -> None:
    w = World(client_transfer_approval_above={"USD": usd(10)})
    t = w.send("t-1", 60)
    w.b.kyc.rerequest(OFFICER, w.bo_documents["passport"], "forged")
    assert t.approval_id is not None
    with pytest.raises(KycLevelTooLowError):
        w.b.approvals.approve(FINANCE, t.approval_id)
    assert w.wallet(w.bo) == usd(0)
    assert w.b.client_transfers.get(FINANCE, "t-1").status is ClientTransferStatus.WAITING


def on_file(path: Path, **options: Any) -> Broker:
    return Broker.sqlite(
        path, clock=FixedClock(T0), keyring=KEYRING, identity_key=b"x" * 32,
        synchronous="NORMAL", **{**SETTINGS, **options},
    )  # fmt: skip


def test_a_waiting_transfer_approved_in_another_process_completes_once(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    first = on_file(db, client_transfer_approval_above={"USD": usd(10)})
    w = World(broker=first)
    t = w.send("t-1", 60)
    first.close()
    second = on_file(db, client_transfer_approval_above={"USD": usd(10)})
    assert t.approval_id is not None
    second.approvals.approve(FINANCE, t.approval_id)
    assert second.ledger.balance(f"wallet:{w.bo}:USD").net_credit == usd(60)
    second.close()
    third = on_file(db, client_transfer_approval_above={"USD": usd(10)})
    assert third.client_transfers.get(FINANCE, "t-1").status is ClientTransferStatus.COMPLETED
    assert third.ledger.balance(f"wallet:{w.ana}:USD").net_credit == usd(940)
    third.close()


def test_two_transfers_racing_on_one_balance_one_wins(tmp_path: Path) -> None:
    """Two processes (brokers on one file) send 600 each from Ana's 1,000 at the same time:
    one completes, the other is refused; nothing goes below zero."""
    db = tmp_path / "crm.db"
    w = World(broker=on_file(db, daily_client_transfer_limits={"USD": usd(5000)}))
    w.b.close()
    brokers = [on_file(db, daily_client_transfer_limits={"USD": usd(5000)}) for _ in range(2)]
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def send(b: Broker, request_id: str) -> None:
        start.wait()
        try:
            b.client_transfers.request(Actor.client(w.ana), request_id, w.ana, w.bo, usd(600))
            outcomes.append("done")
        except ExceedsLimitError:
            outcomes.append("refused")

    threads = [threading.Thread(target=send, args=(b, f"t-{i}")) for i, b in enumerate(brokers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["done", "refused"]
    fresh = on_file(db)
    ana = fresh.ledger.balance(f"wallet:{w.ana}:USD")
    assert (ana.net_credit, ana.available_credit) == (usd(400), usd(400))
    assert fresh.ledger.balance(f"wallet:{w.bo}:USD").net_credit == usd(600)
    for b in (*brokers, fresh):
        b.close()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ana", "bo", "cy"]),
            st.sampled_from(["ana", "bo", "cy"]),
            st.decimals(min_value=Decimal("0.01"), max_value=Decimal(700), places=2),
        ),
        max_size=12,
    )
)
def test_no_sequence_of_transfers_creates_loses_or_overdraws_money(
    moves: list[tuple[str, str, Decimal]],
) -> None:
    w = World(daily_client_transfer_limits={"USD": usd(100_000)})
    cy = w.register("Cy Wu", "cy@example.com")
    verify(w.b, cy, 3)
    verify(w.b, w.bo, 3)  # everyone may send here
    ids = {"ana": w.ana, "bo": w.bo, "cy": cy}
    for n, (sender, receiver, amount) in enumerate(moves):
        with contextlib.suppress(ValidationError, ExceedsLimitError, LimitExceededError):
            w.b.client_transfers.request(
                Actor.client(ids[sender]), f"t-{n}", ids[sender], ids[receiver], usd(str(amount))
            )
    money = w.b.client_transfers.money
    wallets = [w.b.ledger.balance(money.wallet(cid, USD)) for cid in ids.values()]
    assert sum((b.net_credit.amount for b in wallets), Decimal(0)) == Decimal(1000)
    assert all(not b.available_credit.is_negative() for b in wallets)
