"""Maker-checker: distinct approvers, no self-approval, checks re-run, terminal decisions."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from fxcrm_core.access import (
    APPROVAL_EVENTS,
    AccessControl,
    Actor,
    ApprovalClosedError,
    ApprovalRule,
    Approvals,
    ApprovalStatus,
    Role,
    SelfApprovalError,
)
from fxcrm_core.events import EventCodec, EventMetadata, EventRegistry, Repository, UnitOfWork
from fxcrm_core.kernel import AccessDeniedError, ConcurrencyError, Money, NegativeAmountError
from fxcrm_core.stores import MemoryEventStore
from tests.sample_domain import EVENTS, Till

MAKER = Actor.staff("maker", Role.FINANCE)
CHECKER = Actor.staff("checker", Role.FINANCE)
COMPLIANCE = Actor.staff("officer", Role.COMPLIANCE)
TWO_HATS = Actor.staff("maker", Role.FINANCE, Role.COMPLIANCE)  # the maker under a second role


class Desk:
    """A till whose payouts need approval; counts executions to catch doubles."""

    def __init__(self) -> None:
        registry = EventRegistry()
        registry.register_all((*EVENTS, *APPROVAL_EVENTS))
        self.store = MemoryEventStore()
        self.repo = Repository(self.store, EventCodec(registry))
        self.approvals = Approvals(self.repo, AccessControl())
        self.executions = 0
        with UnitOfWork(self.repo, EventMetadata("system")) as uow:
            till = Till.blank("t1")
            till = uow.record(till, *till.open("USD", "Desk"))
            uow.record(till, *till.pay_in(Money.of("100", "USD")))
            uow.commit()

    def balance(self) -> Money:
        till = self.repo.get(Till, "t1")
        assert till.balance is not None
        return till.balance

    def check(self, params: Mapping[str, str]) -> None:
        if Money.parse(params["amount"]) > self.balance():
            raise NegativeAmountError("not enough cash for this payout")

    def execute(self, params: Mapping[str, str], key: str) -> str:
        self.executions += 1
        till = self.repo.get(Till, "t1")
        with UnitOfWork(self.repo, EventMetadata("system:payout")) as uow:
            uow.record(till, *till.pay_out(Money.parse(params["amount"])))
            result = uow.commit(idempotency_key=key)
        return f"position:{result.last_position}"

    def rule(self, **kwargs: object) -> ApprovalRule:
        return ApprovalRule(execute=self.execute, check=self.check, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def desk() -> Desk:
    d = Desk()
    d.approvals.register("withdrawal", d.rule())
    return d


def test_a_checker_approves_and_the_action_runs_once(desk: Desk) -> None:
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "30.00 USD"})
    decision = desk.approvals.approve(CHECKER, rid)
    assert decision.status is ApprovalStatus.EXECUTED
    assert decision.changed
    assert decision.result is not None
    assert desk.balance() == Money.of("70", "USD")
    again = desk.approvals.approve(CHECKER, rid)
    other = desk.approvals.approve(COMPLIANCE, rid)
    assert not again.changed
    assert not other.changed
    assert desk.executions == 1
    assert desk.balance() == Money.of("70", "USD")


def test_self_approval_is_refused_even_under_a_second_role(desk: Desk) -> None:
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "10.00 USD"})
    with pytest.raises(SelfApprovalError):
        desk.approvals.approve(MAKER, rid)
    with pytest.raises(SelfApprovalError):
        desk.approvals.approve(TWO_HATS, rid)
    with pytest.raises(SelfApprovalError):
        desk.approvals.reject(TWO_HATS, rid, "no")
    assert desk.approvals.get(rid).status is ApprovalStatus.PENDING
    assert desk.executions == 0


def test_checkers_need_the_approve_permission(desk: Desk) -> None:
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "10.00 USD"})
    with pytest.raises(AccessDeniedError):
        desk.approvals.approve(Actor.staff("help", Role.SUPPORT), rid)
    with pytest.raises(AccessDeniedError):
        desk.approvals.request(Actor.staff("help", Role.SUPPORT), "withdrawal", "w", {})


def test_a_state_change_that_breaks_the_rule_refuses_the_approval(desk: Desk) -> None:
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "80.00 USD"})
    other = desk.approvals.request(MAKER, "withdrawal", "w-2", {"amount": "50.00 USD"})
    desk.approvals.approve(CHECKER, other)  # the cash drops to 50 meanwhile
    with pytest.raises(NegativeAmountError):
        desk.approvals.approve(CHECKER, rid)
    assert desk.approvals.get(rid).status is ApprovalStatus.PENDING
    assert desk.approvals.get(rid).approvers == ()
    assert desk.executions == 1
    with pytest.raises(NegativeAmountError):  # and a request that cannot run is not opened
        desk.approvals.request(MAKER, "withdrawal", "w-3", {"amount": "999.00 USD"})


def _race_two_checkers() -> Desk:
    desk = Desk()
    desk.approvals.register("withdrawal", desk.rule())
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "30.00 USD"})
    barrier = threading.Barrier(2)

    def approve(actor: Actor) -> None:
        barrier.wait()
        try:
            desk.approvals.approve(actor, rid)
        except ConcurrencyError:
            desk.approvals.approve(actor, rid)  # the retry finds it done

    threads = [threading.Thread(target=approve, args=(a,)) for a in (CHECKER, COMPLIANCE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert desk.approvals.get(rid).status is ApprovalStatus.EXECUTED
    return desk


@pytest.mark.parametrize("attempt", range(10))
def test_racing_checkers_execute_once(attempt: int) -> None:
    desk = _race_two_checkers()
    assert desk.executions == 1
    assert desk.balance() == Money.of("70", "USD")


def test_ordered_steps_need_each_role_in_turn() -> None:
    desk = Desk()
    desk.approvals.register("withdrawal", desk.rule(steps=(Role.FINANCE, Role.COMPLIANCE)))
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "10.00 USD"})
    with pytest.raises(AccessDeniedError, match="finance"):
        desk.approvals.approve(COMPLIANCE, rid)
    first = desk.approvals.approve(CHECKER, rid)
    assert (first.status, first.approvals, first.required) == (ApprovalStatus.PENDING, 1, 2)
    assert desk.approvals.approve(COMPLIANCE, rid).status is ApprovalStatus.EXECUTED
    assert desk.executions == 1


def test_n_distinct_approvers() -> None:
    desk = Desk()
    desk.approvals.register("withdrawal", desk.rule(approvals=2))
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "10.00 USD"})
    desk.approvals.approve(CHECKER, rid)
    assert not desk.approvals.approve(CHECKER, rid).changed  # the same person twice counts once
    assert desk.approvals.get(rid).status is ApprovalStatus.PENDING
    assert desk.approvals.approve(COMPLIANCE, rid).status is ApprovalStatus.EXECUTED


def test_rejections_and_cancellations_are_terminal_and_idempotent(desk: Desk) -> None:
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "10.00 USD"})
    assert desk.approvals.reject(CHECKER, rid, "documents missing").changed
    assert not desk.approvals.reject(COMPLIANCE, rid, "again").changed
    with pytest.raises(ApprovalClosedError):
        desk.approvals.approve(COMPLIANCE, rid)
    with pytest.raises(ApprovalClosedError):
        desk.approvals.cancel(MAKER, rid)
    rid2 = desk.approvals.request(MAKER, "withdrawal", "w-2", {"amount": "10.00 USD"})
    with pytest.raises(AccessDeniedError):
        desk.approvals.cancel(CHECKER, rid2)
    assert desk.approvals.cancel(MAKER, rid2).status is ApprovalStatus.CANCELLED
    assert not desk.approvals.cancel(MAKER, rid2).changed
    assert desk.executions == 0


def test_a_failed_execution_leaves_the_request_approved_for_a_retry() -> None:
    desk = Desk()
    failures = [RuntimeError("psp down")]

    def flaky(params: Mapping[str, str], key: str) -> str:
        if failures:
            raise failures.pop()
        return desk.execute(params, key)

    desk.approvals.register("withdrawal", ApprovalRule(execute=flaky, check=desk.check))
    rid = desk.approvals.request(MAKER, "withdrawal", "w-1", {"amount": "10.00 USD"})
    with pytest.raises(RuntimeError):
        desk.approvals.approve(CHECKER, rid)
    assert desk.approvals.get(rid).status is ApprovalStatus.APPROVED
    assert not desk.approvals.approve(COMPLIANCE, rid).changed
    assert desk.approvals.retry(CHECKER, rid).status is ApprovalStatus.EXECUTED
    assert desk.executions == 1


ACTORS = [MAKER, CHECKER, COMPLIANCE, TWO_HATS, Actor.staff("help", Role.SUPPORT)]


class ApprovalMachine(RuleBasedStateMachine):
    """Random requests and decisions against a trivial model of the rules."""

    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.desk = Desk()
        self.desk.approvals.register("withdrawal", self.desk.rule(approvals=2))
        self.model: dict[str, dict[str, object]] = {}

    @rule(target=requests, cents=st.integers(1, 3000))
    def request(self, cents: int) -> str:
        amount = Money.from_minor(cents, "USD")
        try:
            rid = self.desk.approvals.request(MAKER, "withdrawal", "w", {"amount": str(amount)})
        except NegativeAmountError:
            assert amount > self.desk.balance()
            return "refused"
        self.model[rid] = {"status": "pending", "approvers": set(), "amount": amount}
        return rid

    @rule(rid=requests, who=st.sampled_from(ACTORS))
    def approve(self, rid: str, who: Actor) -> None:
        if rid == "refused":
            return
        m = self.model[rid]
        approvers: set[str] = m["approvers"]  # type: ignore[assignment]
        before = self.desk.executions
        try:
            self.desk.approvals.approve(who, rid)
        except SelfApprovalError:
            assert who.id == MAKER.id
            return
        except AccessDeniedError:
            assert Role.SUPPORT in who.roles
            return
        except ApprovalClosedError:
            assert m["status"] in ("rejected", "cancelled")
            return
        except NegativeAmountError:
            assert m["amount"] > self.desk.balance()  # type: ignore[operator]
            return
        if m["status"] == "pending" and who.id not in approvers:
            approvers.add(who.id)
            if len(approvers) == 2:
                m["status"] = "executed"
                assert self.desk.executions == before + 1
                return
        assert self.desk.executions == before

    @rule(rid=requests, who=st.sampled_from([CHECKER, COMPLIANCE]))
    def reject(self, rid: str, who: Actor) -> None:
        if rid == "refused":
            return
        m = self.model[rid]
        try:
            self.desk.approvals.reject(who, rid, "no")
        except ApprovalClosedError:
            assert m["status"] in ("executed", "cancelled")
            return
        assert m["status"] in ("pending", "rejected")
        m["status"] = "rejected"

    @rule(rid=requests)
    def cancel(self, rid: str) -> None:
        if rid == "refused":
            return
        m = self.model[rid]
        try:
            self.desk.approvals.cancel(MAKER, rid)
        except ApprovalClosedError:
            assert m["status"] in ("executed", "rejected")
            return
        m["status"] = "cancelled"

    @invariant()
    def matches_the_model(self) -> None:
        executed = sum(m["status"] == "executed" for m in self.model.values())
        assert self.desk.executions == executed
        for rid, m in self.model.items():
            real = self.desk.approvals.get(rid)
            assert real.status.value == m["status"]
            assert MAKER.id not in real.approvers
            assert set(real.approvers) == m["approvers"]


ApprovalMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestApprovalWorkflow = ApprovalMachine.TestCase
