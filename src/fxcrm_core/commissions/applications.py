"""IB applications: a client asks to become an IB (under a requested parent), and a second
person approves or rejects it, with reasons; approval registers the IB in the network.

Each application is an aggregate (``ibapplication-<id>``) holding ids only: the client, the IB
id it will get, the requested parent, an optional reference to supporting material kept
elsewhere (a KYC document id) and the maker's actor id (for maker-checker); no personal data.

Approval writes two streams: the application's ``IbApplicationApproved`` and the network's
``IbRegistered`` (same effect as ``register_ib``, with the approver as actor, the approval's
reason, and the application's stream id as correlation id). Both go in **one unit of work**,
one atomic append expecting the version read of each stream, not a policy reacting to the
approval: the registration is checked against the tree when the approver decides (a refused
registration leaves the application pending, and the approver sees why at once), and of two
approvals racing (a retry, a second process, a tree change meanwhile) one append wins and the
other writes nothing. A retry then finds the application decided and gets
:class:`ApplicationClosedError`: the IB is registered exactly once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime
from typing import Self

import attrs

from fxcrm_core.access import AccessControl, Actor, SelfApprovalError
from fxcrm_core.commissions.network import IbNetworkService, IbRegistered
from fxcrm_core.commissions.tree import TreeError, check_id, check_time
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    RecordedEvent,
    UnitOfWork,
)
from fxcrm_core.kernel.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)

__all__ = [
    "APPLY",
    "APPROVE",
    "IB_APPLICATION_EVENTS",
    "ApplicationClosedError",
    "ApplicationStatus",
    "IbApplication",
    "IbApplicationApproved",
    "IbApplicationRejected",
    "IbApplicationSubmitted",
    "IbApplications",
]

APPLY = "ib.apply"  # applying, for a client in the actor's row scope
APPROVE = "ib.approve"  # approving or rejecting an application (not one's own)
_TRIES = 4


class ApplicationClosedError(IllegalTransitionError):
    """A decision on an IB application already approved or rejected."""

    default_message = "the IB application is already decided"


class _Requested(enum.Enum):
    """``approve``'s default parent: the one the applicant requested."""

    PARENT = "requested"


class ApplicationStatus(enum.Enum):
    NONE = "none"  # never submitted
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@attrs.frozen
class IbApplicationSubmitted(DomainEvent):
    """``client_id`` applied to become IB ``ib_id`` under ``requested_parent_id`` (None: a
    master IB); ``details_ref`` names supporting material kept elsewhere; ``maker`` is the
    actor id who submitted it (the client, or staff on its behalf)."""

    application_id: str
    client_id: str
    ib_id: str
    requested_parent_id: str | None
    maker: str
    details_ref: str | None = None


@attrs.frozen
class IbApplicationApproved(DomainEvent):
    """Approved by ``checker``: the IB is registered under ``parent_id`` from ``effective_at``
    (recorded in the same append on the network's stream)."""

    application_id: str
    ib_id: str
    parent_id: str | None
    effective_at: datetime
    checker: str


@attrs.frozen
class IbApplicationRejected(DomainEvent):
    """Rejected by ``checker`` (the reason is the event's metadata)."""

    application_id: str
    checker: str


IB_APPLICATION_EVENTS: tuple[type[DomainEvent], ...] = (
    IbApplicationSubmitted,
    IbApplicationApproved,
    IbApplicationRejected,
)


@attrs.frozen(kw_only=True)
class IbApplication(Aggregate):
    """One application's state: ids only, its status, its maker and its checker."""

    category = "ibapplication"
    status: ApplicationStatus = ApplicationStatus.NONE
    client_id: str | None = None
    ib_id: str | None = None
    requested_parent_id: str | None = None
    details_ref: str | None = None
    maker: str | None = None
    checker: str | None = None
    parent_id: str | None = None  # the parent approved (may differ from the one requested)

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case IbApplicationSubmitted():
                return self.evolve(
                    status=ApplicationStatus.PENDING,
                    client_id=event.client_id,
                    ib_id=event.ib_id,
                    requested_parent_id=event.requested_parent_id,
                    details_ref=event.details_ref,
                    maker=event.maker,
                )
            case IbApplicationApproved():
                return self.evolve(
                    status=ApplicationStatus.APPROVED,
                    checker=event.checker,
                    parent_id=event.parent_id,
                )
            case IbApplicationRejected():
                return self.evolve(status=ApplicationStatus.REJECTED, checker=event.checker)
        raise ValidationError(f"IbApplication cannot apply {type(event).__name__}")

    # -- commands --------------------------------------------------------------------------------
    def submit(self, event: IbApplicationSubmitted) -> list[DomainEvent]:
        """The submission, or nothing if this very one is recorded (a retry)."""
        if self.status is ApplicationStatus.NONE:
            return [event]
        same = (
            self.client_id == event.client_id
            and self.ib_id == event.ib_id
            and self.requested_parent_id == event.requested_parent_id
            and self.details_ref == event.details_ref
        )
        if not same:
            raise IdempotencyConflictError("that application id was used for another request")
        return []

    def _decidable(self, checker: Actor) -> None:
        if self.status is ApplicationStatus.NONE:
            raise NotFoundError("no such IB application")
        if self.status is not ApplicationStatus.PENDING:
            raise ApplicationClosedError(f"the IB application is already {self.status.value}")
        if checker.id == self.maker or (
            checker.client_id is not None and checker.client_id == self.client_id
        ):
            raise SelfApprovalError("the maker or the applicant cannot decide the application")

    def approve(self, checker: Actor, parent_id: str | None, at: datetime) -> list[DomainEvent]:
        self._decidable(checker)
        assert self.ib_id is not None
        return [IbApplicationApproved(self.id, self.ib_id, parent_id, at, checker.id)]

    def reject(self, checker: Actor) -> list[DomainEvent]:
        self._decidable(checker)
        return [IbApplicationRejected(self.id, checker.id)]


class IbApplications:
    """Submits IB applications and decides them (maker-checker), each step an event with its
    actor and reason; approval registers the IB through ``network`` in the same append (see
    the module's docstring).

    ``apply`` needs ``ib.apply`` on the client's row (a client for itself, staff in scope);
    ``approve`` and ``reject`` need ``ib.approve`` and another person than the maker and the
    applicant (:class:`~fxcrm_core.access.SelfApprovalError`). Deciding an application twice
    raises :class:`ApplicationClosedError`. Ids are non-empty printable ``str``; a wrong
    argument is a ValidationError that never holds the value.
    """

    def __init__(self, network: IbNetworkService, access: AccessControl) -> None:
        if not isinstance(network, IbNetworkService):
            raise ValidationError("IB applications need the IB network")
        if not isinstance(access, AccessControl):
            raise ValidationError("IB applications need access control")
        self.network = network
        self.repository = network.repository
        self.access = access

    # -- commands --------------------------------------------------------------------------------
    def apply(
        self,
        actor: Actor,
        application_id: str,
        client_id: str,
        ib_id: str,
        requested_parent_id: str | None = None,
        *,
        details_ref: str | None = None,
        reason: str,
    ) -> None:
        """Record the application (idempotent by ``application_id``: the same request again
        records nothing; other content under the same id is IdempotencyConflictError). The IB
        id must be free and the requested parent registered, now."""
        check_id(application_id, "an application id")
        check_id(client_id, "a client id")
        check_id(ib_id, "an IB id")
        _optional_id(requested_parent_id, "a parent IB id")
        _optional_id(details_ref, "a details reference")
        _check_actor(actor, reason)
        self.access.require(actor, APPLY, client_id=client_id)
        event = IbApplicationSubmitted(
            application_id, client_id, ib_id, requested_parent_id, actor.id, details_ref
        )
        if not self.get(application_id).submit(event):
            return  # a retry of a recorded submission (checked before the tree moved on)
        ibs = set(self.network.tree().ibs())
        if ib_id in ibs:
            raise TreeError("that IB already exists")
        if requested_parent_id is not None and requested_parent_id not in ibs:
            raise NotFoundError("no such parent IB")
        # (submitted meanwhile: the same request again records nothing, other content fails)
        self._decide(actor, reason, application_id, lambda a: a.submit(event))

    def approve(
        self,
        actor: Actor,
        application_id: str,
        *,
        at: datetime | None = None,
        parent_id: str | _Requested | None = _Requested.PARENT,
        reason: str,
    ) -> None:
        """Approve, and register the IB under ``parent_id`` (default: the parent requested;
        None: a master IB)
        from ``at`` (default: the network's clock now), in one atomic append. A registration
        the tree refuses (the IB id taken meanwhile, a parent unknown at ``at``) raises its
        error and writes nothing: the application stays pending."""
        check_id(application_id, "an application id")
        when = self.network.clock.now() if at is None else check_time(at)
        _check_actor(actor, reason)
        self.access.require(actor, APPROVE)
        for _ in range(_TRIES):
            application = self.get(application_id)
            parent = _optional_id(
                application.requested_parent_id if isinstance(parent_id, _Requested) else parent_id,
                "a parent IB id",
            )
            events = application.approve(actor, parent, when)
            assert application.ib_id is not None
            assert application.client_id is not None
            registered = IbRegistered(application.ib_id, parent, when, application.client_id)
            try:
                with self._uow(actor, reason, application) as uow:
                    uow.record(application, *events)
                    self.network.stage(uow, registered)
                    uow.commit()
            except ConcurrencyError:
                continue  # the application or the tree moved: decide again on the new state
            self.network.catch_up()
            return
        raise ConcurrencyError("the application or the IB tree kept changing; try again")

    def reject(self, actor: Actor, application_id: str, *, reason: str) -> None:
        """Reject the application; nothing is registered."""
        check_id(application_id, "an application id")
        _check_actor(actor, reason)
        self.access.require(actor, APPROVE)
        self._decide(actor, reason, application_id, lambda a: a.reject(actor))

    def _decide(
        self,
        actor: Actor,
        reason: str,
        application_id: str,
        decide: Callable[[IbApplication], list[DomainEvent]],
    ) -> None:
        """Record what ``decide`` makes of the application as the log holds it, again on its
        new state if it moved meanwhile (nothing to record: done)."""
        for _ in range(_TRIES):
            application = self.get(application_id)
            events = decide(application)
            if not events:
                return
            try:
                with self._uow(actor, reason, application) as uow:
                    uow.record(application, *events)
                    uow.commit()
                return
            except ConcurrencyError:
                continue
        raise ConcurrencyError("the application kept changing; try again")

    def _uow(self, actor: Actor, reason: str, application: IbApplication) -> UnitOfWork:
        meta = EventMetadata(actor.id, correlation_id=application.stream_id, reason=reason)
        return UnitOfWork(self.repository, meta)

    # -- questions -------------------------------------------------------------------------------
    def get(self, application_id: str) -> IbApplication:
        """The application as the log holds it (status NONE if never submitted)."""
        check_id(application_id, "an application id")
        found = self.repository.load(IbApplication, application_id)
        return found or IbApplication.blank(application_id)

    def history(self, application_id: str) -> list[RecordedEvent[DomainEvent]]:
        """The application's events, oldest first, each with its actor, reason and time."""
        check_id(application_id, "an application id")
        stream = IbApplication.stream_id_for(application_id)
        decode = self.repository.codec.decode
        return [decode(row) for row in self.repository.store.read_stream(stream)]


def _optional_id(value: object, what: str) -> str | None:
    return None if value is None else check_id(value, what)


def _check_actor(actor: object, reason: object) -> None:
    if not isinstance(actor, Actor):
        raise ValidationError("an IB application step needs an actor")
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError("an IB application step needs a reason")
