"""The wire workflow against a trivial model: in whatever order wires are declared, matched,
approved, retried and rejected, with restarts (a fresh broker and service on the same log) in
between, each wire's money is credited at most once, only after a second person approves, and
the ledger balances."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fxcrm_core.access import (
    Actor,
    ApprovalClosedError,
    Role,
    SelfApprovalError,
)
from fxcrm_core.kernel import Currency, Money
from fxcrm_core.kernel.errors import IllegalTransitionError
from fxcrm_core.payments import MoneyAccounts
from fxcrm_core.payments.wires import (
    BankWires,
    DuplicateBankLineError,
    DuplicateWireReferenceError,
    WireStatus,
    normalise_bank_reference,
)
from tests.test_wires import BOOKED, CHECKER, MAKER, Memory, client, wires_of

REFERENCES = ("ref 1", "REF-1", "ref 2", "ref 3")  # the first two normalise alike
LINES = ("T1", "T2", "T3")
AMOUNTS = ("100", "250.50")


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


@attrs.define
class Model:
    client: str
    amount: str
    receipt: str
    reference: str  # normalised
    status: WireStatus = WireStatus.DECLARED
    line: str | None = None
    received: str | None = None


class WireWorkflow(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.memory = Memory()
        self.broker = self.memory.broker()
        self.wires = wires_of(self.broker)
        self.clients = [client(self.broker), client(self.broker, "bo@example.com")]
        self.model: dict[str, Model] = {}
        self.credited: dict[str, Money] = {}

    def restart(self) -> None:
        self.broker = self.memory.broker()
        self.wires = wires_of(self.broker)

    def holder(self, **match: Any) -> str | None:
        for wire_id, m in self.model.items():
            if m.status is not WireStatus.REJECTED and all(
                getattr(m, k) == v for k, v in match.items()
            ):
                return wire_id
        return None

    def pick(self, data: st.DataObject, *wanted: WireStatus) -> str:
        """A wire in one of the ``wanted`` states if there is one (else any), so that long
        workflows happen often; by declaration order, as the ids are random and the draws must
        not depend on them."""
        ids = [i for i, m in self.model.items() if m.status in wanted] or list(self.model)
        return ids[data.draw(st.integers(0, len(ids) - 1))]

    @rule()
    def restart_between_steps(self) -> None:
        self.restart()

    @rule(
        who=st.integers(0, 1),
        reference=st.sampled_from(REFERENCES),
        amount=st.sampled_from(AMOUNTS),
        receipt=st.sampled_from(("f1", "f2")),
        by_finance=st.booleans(),
    )
    def declare(
        self, who: int, reference: str, amount: str, receipt: str, by_finance: bool
    ) -> None:
        cid = self.clients[who]
        actor = MAKER if by_finance else Actor.client(cid)
        normalised = normalise_bank_reference(reference)
        held = self.holder(reference=normalised)
        try:
            wire_id = self.wires.declare(
                actor, cid, usd(amount), bank_reference=reference, receipt_id=receipt
            )
        except DuplicateWireReferenceError:
            event("a duplicate reference refused")
            assert held is not None
            m = self.model[held]
            assert (m.client, m.amount, m.receipt) != (cid, amount, receipt)
            return
        if held is not None:
            assert wire_id == held
        else:
            assert wire_id not in self.model
            self.model[wire_id] = Model(cid, amount, receipt, normalised)

    @precondition(lambda self: bool(self.model))
    @rule(
        data=st.data(),
        line=st.sampled_from(LINES),
        received=st.sampled_from((*AMOUNTS, "99.99")),
    )
    def match(self, data: st.DataObject, line: str, received: str) -> None:
        wire_id = self.pick(data, WireStatus.DECLARED)
        m = self.model[wire_id]
        held = self.holder(line=line)
        try:
            self.wires.match(
                MAKER, wire_id, bank_transaction_id=line, received=usd(received),
                booked_on=BOOKED,
            )  # fmt: skip
        except DuplicateBankLineError:
            event("a statement line held by another wire refused")
            assert m.status is WireStatus.DECLARED
            assert held is not None
            assert held != wire_id
            return
        except IllegalTransitionError:
            assert m.status is WireStatus.REJECTED or (m.line, m.received) != (line, received)
            return
        if m.status is WireStatus.DECLARED:
            assert held is None
            m.status, m.line, m.received = WireStatus.MATCHED, line, received
        else:
            assert (m.line, m.received) == (line, received)  # a repeat

    def approval(self, wire_id: str) -> str | None:
        return self.wires.get(MAKER, wire_id).approval_id

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), how=st.sampled_from(("checker", "checker", "checker", "maker", "retry")))
    def approve(self, data: st.DataObject, how: str) -> None:
        by_maker, retry = how == "maker", how == "retry"
        wire_id = self.pick(data, WireStatus.MATCHED)
        m = self.model[wire_id]
        approval_id = self.approval(wire_id)
        if approval_id is None:
            assert m.status in (WireStatus.DECLARED, WireStatus.REJECTED)
            return
        checker = MAKER if by_maker else CHECKER
        try:
            if retry:
                self.broker.approvals.retry(checker, approval_id)
            else:
                self.broker.approvals.approve(checker, approval_id)
        except SelfApprovalError:
            assert by_maker
            assert not retry
            return
        except (ApprovalClosedError, IllegalTransitionError):
            assert m.status is WireStatus.REJECTED
            return
        if retry:
            return  # nothing approved yet, or already done: changes nothing
        if m.status is WireStatus.MATCHED:
            event("a wire credited")
            m.status = WireStatus.CREDITED
            assert m.received is not None
            self.credited[m.client] = self.credited.get(m.client, usd("0")) + usd(m.received)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), by_maker=st.booleans())
    def reject(self, data: st.DataObject, by_maker: bool) -> None:
        wire_id = self.pick(data)
        m = self.model[wire_id]
        if data.draw(st.integers(0, 2)):
            return  # a rejection now and then, so that most wires get the chance to be credited
        try:
            self.wires.reject(MAKER if by_maker else CHECKER, wire_id, "not on the statement")
        except IllegalTransitionError:
            assert m.status is WireStatus.CREDITED
            return
        assert m.status is not WireStatus.CREDITED
        event(f"a {m.status.value} wire rejected")
        m.status = WireStatus.REJECTED

    @invariant()
    def money_is_credited_once_and_the_ledger_balances(self) -> None:
        accounts = MoneyAccounts(self.broker.ledger)
        usd_ = Currency.of("USD")
        total = usd("0")
        for cid in self.clients:
            held = self.broker.ledger.balance(accounts.wallet(cid, usd_)).net_credit
            assert held == self.credited.get(cid, usd("0"))
            total += held
        clearing = self.broker.ledger.balance(accounts.broker("bank_clearing", usd_))
        assert clearing.net_credit + total == usd("0")

    @invariant()
    def statuses_and_the_waiting_list_follow_the_model(self) -> None:
        for wire_id, m in self.model.items():
            wire = self.wires.get(MAKER, wire_id)
            assert wire.status is m.status
            if m.status is WireStatus.CREDITED:
                assert m.received is not None
                assert wire.credited == usd(m.received)
        waiting = {w.wire_id for w in self.wires.waiting(CHECKER)}
        expected = {
            wire_id
            for wire_id, m in self.model.items()
            if m.status in (WireStatus.DECLARED, WireStatus.MATCHED)
        }
        assert waiting == expected


WireWorkflow.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_wire_workflow = WireWorkflow.TestCase


def test_a_fresh_service_reads_the_same_wires() -> None:
    """The log is the only truth: a restarted broker answers what the first one did."""
    memory = Memory()
    broker = memory.broker()
    wires = wires_of(broker)
    cid = client(broker)
    wire_id = wires.declare(
        Actor.client(cid), cid, usd("100"), bank_reference="ref 9", receipt_id="f"
    )
    wires.match(MAKER, wire_id, bank_transaction_id="T9", received=usd("100"), booked_on=BOOKED)
    again: BankWires = wires_of(memory.broker())
    assert again.get(MAKER, wire_id) == wires.get(MAKER, wire_id)
    found = again.find_by_reference(MAKER, "REF-9")
    assert found is not None
    assert found.id == wire_id
    assert [w.wire_id for w in again.waiting(MAKER)] == [wire_id]
    with_role = Actor.staff("fin-9", Role.FINANCE)
    assert again.get(with_role, wire_id).approval_id is not None
