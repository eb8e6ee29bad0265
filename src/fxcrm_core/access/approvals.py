"""Maker-checker: a request is executed only after N distinct people other than its maker approve.

The business checks of the action run again at every approval, on the state at that moment; a
check that fails refuses the approval. The final approval is committed before the action runs,
so of two checkers racing, one wins and the other gets a ConcurrencyError (and, retrying, finds
the request approved): the action runs once. It runs with the idempotency key
``approval:<request id>``; if it fails, the request stays approved and :meth:`Approvals.retry`
runs it again with the same key. Executed, rejected and cancelled are terminal.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from typing import Self

import attrs

from fxcrm_core.access.control import AccessControl, Actor
from fxcrm_core.events import Aggregate, DomainEvent, EventMetadata, Repository, UnitOfWork
from fxcrm_core.kernel.errors import AccessDeniedError, FxCrmError, ValidationError
from fxcrm_core.kernel.ids import IdGenerator

__all__ = [
    "APPROVAL_EVENTS",
    "ApprovalCancelled",
    "ApprovalClosedError",
    "ApprovalExecuted",
    "ApprovalGranted",
    "ApprovalRejected",
    "ApprovalRequest",
    "ApprovalRequested",
    "ApprovalRule",
    "ApprovalStatus",
    "Approvals",
    "Decision",
    "SelfApprovalError",
]

log = logging.getLogger("fxcrm_core.access")


class SelfApprovalError(AccessDeniedError):
    """The maker of a request tried to approve it (under any of their roles)."""

    default_message = "the maker of a request cannot approve it"


class ApprovalClosedError(FxCrmError, ValueError):
    """A decision on a request that was already executed, rejected or cancelled."""

    default_message = "the request is closed"


class ApprovalStatus(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"  # enough approvals; the action has not completed yet
    EXECUTED = "executed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


@attrs.frozen
class ApprovalRequested(DomainEvent):
    request_id: str
    action: str
    target: str
    client_id: str | None
    maker_id: str
    required: int
    steps: tuple[str, ...]
    params: tuple[tuple[str, str], ...]


@attrs.frozen
class ApprovalGranted(DomainEvent):
    approver_id: str
    role: str


@attrs.frozen
class ApprovalRejected(DomainEvent):
    rejected_by: str
    reason: str


@attrs.frozen
class ApprovalCancelled(DomainEvent):
    cancelled_by: str


@attrs.frozen
class ApprovalExecuted(DomainEvent):
    result: str


APPROVAL_EVENTS = (
    ApprovalRequested,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalCancelled,
    ApprovalExecuted,
)


_TERMINAL = frozenset({ApprovalStatus.EXECUTED, ApprovalStatus.REJECTED, ApprovalStatus.CANCELLED})


@attrs.frozen(kw_only=True)
class ApprovalRequest(Aggregate):
    category = "approval"
    action: str = ""
    target: str = ""
    client_id: str | None = None
    maker_id: str = ""
    required: int = 0
    steps: tuple[str, ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    approvers: tuple[str, ...] = ()
    status: ApprovalStatus = ApprovalStatus.PENDING
    result: str | None = None
    reason: str | None = None

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case ApprovalRequested():
                return self.evolve(
                    action=event.action,
                    target=event.target,
                    client_id=event.client_id,
                    maker_id=event.maker_id,
                    required=event.required,
                    steps=event.steps,
                    params=event.params,
                )
            case ApprovalGranted(approver_id=approver):
                approvers = (*self.approvers, approver)
                done = len(approvers) >= self.required
                return self.evolve(
                    approvers=approvers,
                    status=ApprovalStatus.APPROVED if done else ApprovalStatus.PENDING,
                )
            case ApprovalExecuted(result=result):
                return self.evolve(status=ApprovalStatus.EXECUTED, result=result)
            case ApprovalRejected(reason=reason):
                return self.evolve(status=ApprovalStatus.REJECTED, reason=reason)
            case ApprovalCancelled():
                return self.evolve(status=ApprovalStatus.CANCELLED)
        raise ValidationError(f"ApprovalRequest cannot apply {type(event).__name__}")

    @property
    def terminal(self) -> bool:
        return self.status in _TERMINAL

    @property
    def params_map(self) -> dict[str, str]:
        return dict(self.params)


#: Raises an FxCrmError if the action may not run now (given the request's parameters).
Check = Callable[[Mapping[str, str]], None]
#: Runs the action, committing with the idempotency key given; returns a reference to it.
Execute = Callable[[Mapping[str, str], str], str]


def _no_check(params: Mapping[str, str]) -> None:
    return None


@attrs.frozen
class ApprovalRule:
    """How an action is approved: ``approvals`` distinct checkers, or one per role in ``steps``
    (in that order), then ``check`` re-run and ``execute`` called."""

    execute: Execute
    check: Check = _no_check
    approvals: int = 1
    steps: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.approvals < 1:
            raise ValidationError("a rule needs at least one approval")

    @property
    def required(self) -> int:
        return len(self.steps) if self.steps else self.approvals


@attrs.frozen
class Decision:
    """What a decision call found or did: ``changed`` is False for a repeated decision."""

    request_id: str
    status: ApprovalStatus
    approvals: int
    required: int
    changed: bool
    result: str | None = None


class Approvals:
    """The maker-checker service. Register a rule per action, then request / approve / reject."""

    def __init__(
        self, repository: Repository, access: AccessControl, ids: IdGenerator | None = None
    ) -> None:
        self.repository = repository
        self.access = access
        self.ids = ids or IdGenerator()
        self._rules: dict[str, ApprovalRule] = {}

    def register(self, action: str, rule: ApprovalRule) -> None:
        if action in self._rules:
            raise ValidationError(f"action {action} already has an approval rule")
        self._rules[action] = rule

    def _rule(self, action: str) -> ApprovalRule:
        try:
            return self._rules[action]
        except KeyError:
            raise ValidationError(f"no approval rule for action {action}") from None

    def _uow(self, actor: Actor, reason: str) -> UnitOfWork:
        return UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason))

    def request(
        self,
        maker: Actor,
        action: str,
        target: str,
        params: Mapping[str, str],
        *,
        client_id: str | None = None,
    ) -> str:
        """Open a request; the checks run now too, so a request that cannot run is refused.

        ``params`` are stored in clear in the approval's events: ids and amounts only, never
        personal data (refer to a payout instrument by its id, not its IBAN).
        """
        rule = self._rule(action)
        self.access.require(maker, f"{action}.request", client_id=client_id)
        rule.check(params)
        request_id = self.ids()
        with self._uow(maker, f"request {action}") as uow:
            uow.record(
                ApprovalRequest.blank(request_id),
                ApprovalRequested(
                    request_id,
                    action,
                    target,
                    client_id,
                    maker.id,
                    rule.required,
                    rule.steps,
                    tuple(sorted((str(k), str(v)) for k, v in params.items())),
                ),
            )
            uow.commit()
        log.info("approval requested", extra={"request_id": request_id, "action": action})
        return request_id

    def get(self, request_id: str) -> ApprovalRequest:
        return self.repository.get(ApprovalRequest, request_id)

    def approve(self, checker: Actor, request_id: str) -> Decision:
        req = self.get(request_id)
        rule = self._rule(req.action)
        self.access.require(checker, f"{req.action}.approve", client_id=req.client_id)
        if checker.id == req.maker_id:
            raise SelfApprovalError()
        if checker.id in req.approvers or req.status in (
            ApprovalStatus.APPROVED,
            ApprovalStatus.EXECUTED,
        ):
            return _decision(req, changed=False)  # nothing left for this approval to do
        if req.terminal:
            raise ApprovalClosedError(f"the request is {req.status.value}")
        role = self._step_role(checker, req)
        rule.check(req.params_map)  # on today's state: a broken rule refuses the approval
        with self._uow(checker, f"approve {req.action}") as uow:
            req = uow.record(req, ApprovalGranted(checker.id, role))
            uow.commit()  # racing checkers: one commits, the other gets a ConcurrencyError
        log.info("approval granted", extra={"request_id": request_id, "approver": checker.id})
        if req.status is ApprovalStatus.APPROVED:
            req = self._execute(checker, req, rule)
        return _decision(req, changed=True)

    def retry(self, actor: Actor, request_id: str) -> Decision:
        """Run an approved action whose execution failed before, with the same idempotency key."""
        req = self.get(request_id)
        self.access.require(actor, f"{req.action}.approve", client_id=req.client_id)
        if req.status is not ApprovalStatus.APPROVED:
            return _decision(req, changed=False)
        return _decision(self._execute(actor, req, self._rule(req.action)), changed=True)

    def _execute(self, actor: Actor, req: ApprovalRequest, rule: ApprovalRule) -> ApprovalRequest:
        result = rule.execute(req.params_map, f"approval:{req.id}")
        with self._uow(actor, f"execute {req.action}") as uow:
            req = uow.record(req, ApprovalExecuted(result))
            uow.commit()
        return req

    def reject(self, checker: Actor, request_id: str, reason: str) -> Decision:
        req = self.get(request_id)
        self.access.require(checker, f"{req.action}.approve", client_id=req.client_id)
        if checker.id == req.maker_id:
            raise SelfApprovalError("the maker cancels a request, it does not reject it")
        return self._close(
            checker, req, ApprovalStatus.REJECTED, ApprovalRejected(checker.id, reason)
        )

    def cancel(self, maker: Actor, request_id: str) -> Decision:
        req = self.get(request_id)
        if maker.id != req.maker_id:
            raise AccessDeniedError("only the maker can cancel a request")
        return self._close(maker, req, ApprovalStatus.CANCELLED, ApprovalCancelled(maker.id))

    def _close(
        self, actor: Actor, req: ApprovalRequest, status: ApprovalStatus, event: DomainEvent
    ) -> Decision:
        if req.status is status:
            return _decision(req, changed=False)
        if req.status is not ApprovalStatus.PENDING:
            raise ApprovalClosedError(f"the request is {req.status.value}")
        with self._uow(actor, f"{status.value} {req.action}") as uow:
            req = uow.record(req, event)
            uow.commit()
        return _decision(req, changed=True)

    @staticmethod
    def _step_role(checker: Actor, req: ApprovalRequest) -> str:
        if not req.steps:
            return ",".join(sorted(checker.roles))
        needed = req.steps[len(req.approvers)]
        if needed not in checker.roles:
            raise AccessDeniedError(f"this approval step needs the {needed} role")
        return needed


def _decision(req: ApprovalRequest, *, changed: bool) -> Decision:
    return Decision(
        req.id, req.status, len(req.approvers), req.required, changed, result=req.result
    )
