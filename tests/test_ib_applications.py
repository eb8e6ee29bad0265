"""IB applications: a client applies, a second person approves or rejects with a reason, and
approval registers the IB in the network exactly once (one append over both streams), whatever
the retries, restarts or second processes; closed applications refuse new decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from fxcrm_core.access import (
    DEFAULT_POLICY,
    AccessControl,
    Actor,
    Role,
    RowScope,
    SelfApprovalError,
)
from fxcrm_core.commissions.applications import (
    IB_APPLICATION_EVENTS,
    ApplicationClosedError,
    ApplicationStatus,
    IbApplicationApproved,
    IbApplications,
    IbApplicationSubmitted,
)
from fxcrm_core.commissions.network import IB_NETWORK_EVENTS, IbNetworkService, IbRegistered
from fxcrm_core.commissions.tree import TreeError
from fxcrm_core.events import EventCodec, EventRegistry, EventStore, Repository
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    ConcurrencyError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore

JAN = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
POLICY = DEFAULT_POLICY.with_role(
    Role.ADMIN,
    DEFAULT_POLICY.grants[Role.ADMIN] | {"ib.manage", "ib.apply", "ib.approve"},
    RowScope.ALL,
).with_role(Role.CLIENT, DEFAULT_POLICY.grants[Role.CLIENT] | {"ib.apply"}, RowScope.OWN)
ADMIN = Actor.staff("7", Role.ADMIN)
CHECKER = Actor.staff("8", Role.ADMIN)
SALES = Actor.staff("9", Role.SALES)


def world(store: EventStore) -> tuple[IbNetworkService, IbApplications]:
    """The services as a fresh process builds them on ``store``."""
    registry = EventRegistry()
    registry.register_all((*IB_NETWORK_EVENTS, *IB_APPLICATION_EVENTS))
    repository = Repository(store, EventCodec(registry))
    network = IbNetworkService(repository, AccessControl(POLICY), clock=FixedClock(NOW))
    return network, IbApplications(network, AccessControl(POLICY))


def with_master(store: EventStore) -> tuple[IbNetworkService, IbApplications]:
    network, apps = world(store)
    network.register_ib(ADMIN, "m", None, JAN, reason="master signed")
    return network, apps


def test_an_approved_application_registers_the_ib_with_the_approver_and_reason() -> None:
    network, apps = with_master(MemoryEventStore())
    apps.apply(Actor.client("c-1"), "a-1", "c-1", "ib-c1", "m", reason="wants to refer friends")
    assert apps.get("a-1").status is ApplicationStatus.PENDING
    assert network.history("ib-c1") == []
    apps.approve(CHECKER, "a-1", reason="volume checked")
    assert apps.get("a-1").status is ApplicationStatus.APPROVED
    assert network.chain("ib-c1", NOW) == ["ib-c1", "m"]
    assert network.tree().own_client("ib-c1") == "c-1"  # it can never be attributed to itself
    [registered] = network.history("ib-c1")
    assert registered.event == IbRegistered("ib-c1", "m", NOW, "c-1")
    assert registered.metadata.actor == CHECKER.id
    assert registered.metadata.reason == "volume checked"
    assert registered.metadata.correlation_id == "ibapplication-a-1"
    steps = apps.history("a-1")
    assert [type(r.event) for r in steps] == [IbApplicationSubmitted, IbApplicationApproved]
    assert [r.metadata.actor for r in steps] == ["client:c-1", CHECKER.id]
    assert [r.metadata.reason for r in steps] == ["wants to refer friends", "volume checked"]
    # The approval and the registration are one append: the same position's neighbours.
    assert registered.position == steps[1].position + 1


def test_the_approver_may_place_the_ib_elsewhere_or_at_the_top() -> None:
    network, apps = with_master(MemoryEventStore())
    network.register_ib(ADMIN, "m2", None, JAN, reason="second master")
    apps.apply(ADMIN, "a-1", "c-1", "ib-1", "m", reason="signed at the office")
    apps.apply(ADMIN, "a-2", "c-2", "ib-2", "m", reason="signed at the office")
    apps.approve(CHECKER, "a-1", parent_id="m2", reason="m2 covers that region")
    apps.approve(CHECKER, "a-2", parent_id=None, reason="a master in its own right")
    assert network.chain("ib-1", NOW) == ["ib-1", "m2"]
    assert network.chain("ib-2", NOW) == ["ib-2"]
    assert apps.get("a-1").parent_id == "m2"


def test_maker_checker_and_permissions() -> None:
    network, apps = with_master(MemoryEventStore())
    with pytest.raises(AccessDeniedError):  # another client's row
        apps.apply(Actor.client("c-2"), "a-1", "c-1", "ib-1", "m", reason="x")
    with pytest.raises(AccessDeniedError):  # no ib.apply
        apps.apply(SALES, "a-1", "c-1", "ib-1", "m", reason="x")
    apps.apply(ADMIN, "a-1", "c-1", "ib-1", "m", reason="signed at the office")
    with pytest.raises(SelfApprovalError):
        apps.approve(ADMIN, "a-1", reason="my own")
    with pytest.raises(SelfApprovalError):
        apps.reject(ADMIN, "a-1", reason="my own")
    with pytest.raises(AccessDeniedError):
        apps.approve(Actor.client("c-1"), "a-1", reason="me")
    with pytest.raises(AccessDeniedError):
        apps.approve(SALES, "a-1", reason="no right")
    # The applicant, also a staff member acting under another id.
    applicant_as_staff = Actor("staff:33", frozenset({Role.ADMIN}), client_id="c-3")
    apps.apply(Actor.client("c-3"), "a-3", "c-3", "ib-3", None, reason="me")
    with pytest.raises(SelfApprovalError):
        apps.approve(applicant_as_staff, "a-3", reason="my own, under another role")
    assert apps.get("a-1").status is ApplicationStatus.PENDING
    assert network.history("ib-1") == []


def test_decided_applications_refuse_new_decisions_and_write_nothing() -> None:
    network, apps = with_master(MemoryEventStore())
    for n in (1, 2):
        apps.apply(ADMIN, f"a-{n}", f"c-{n}", f"ib-{n}", "m", reason="signed")
    apps.approve(CHECKER, "a-1", reason="ok")
    apps.reject(CHECKER, "a-2", reason="incomplete")
    version = network.version
    stored = len(network.repository.store.read_stream("ibapplication-a-1"))
    with pytest.raises(ApplicationClosedError):
        apps.approve(CHECKER, "a-1", reason="again")
    with pytest.raises(ApplicationClosedError):
        apps.reject(CHECKER, "a-1", reason="too late")
    with pytest.raises(ApplicationClosedError):
        apps.approve(CHECKER, "a-2", reason="changed my mind")
    with pytest.raises(NotFoundError):
        apps.approve(CHECKER, "a-9", reason="never submitted")
    assert network.version == version
    assert len(network.repository.store.read_stream("ibapplication-a-1")) == stored
    assert "ib-2" not in network.tree().ibs()


def test_a_resubmission_is_idempotent_and_other_content_under_its_id_is_refused() -> None:
    _, apps = with_master(MemoryEventStore())
    apps.apply(ADMIN, "a-1", "c-1", "ib-1", "m", details_ref="doc-7", reason="signed")
    apps.apply(ADMIN, "a-1", "c-1", "ib-1", "m", details_ref="doc-7", reason="signed")
    assert len(apps.history("a-1")) == 1
    with pytest.raises(IdempotencyConflictError):
        apps.apply(ADMIN, "a-1", "c-1", "ib-1", None, details_ref="doc-7", reason="signed")
    apps.approve(CHECKER, "a-1", reason="ok")
    apps.apply(ADMIN, "a-1", "c-1", "ib-1", "m", details_ref="doc-7", reason="retry")  # a retry
    assert len(apps.history("a-1")) == 2


def test_an_application_needs_a_free_ib_id_and_a_known_parent() -> None:
    network, apps = with_master(MemoryEventStore())
    with pytest.raises(TreeError):
        apps.apply(ADMIN, "a-1", "c-1", "m", None, reason="x")
    with pytest.raises(NotFoundError):
        apps.apply(ADMIN, "a-1", "c-1", "ib-1", "nobody", reason="x")
    apps.apply(ADMIN, "a-1", "c-1", "ib-1", "m", reason="x")
    network.register_ib(ADMIN, "ib-1", None, JAN, reason="registered by hand meanwhile")
    with pytest.raises(TreeError):  # the tree's own refusal: the IB exists
        apps.approve(CHECKER, "a-1", reason="ok")
    assert apps.get("a-1").status is ApplicationStatus.PENDING
    apps.reject(CHECKER, "a-1", reason="registered by hand")


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.apply(ADMIN, "", "c-1", "ib-1", reason="x"),
        lambda a: a.apply(ADMIN, "a-1", "c@x.com\n", "ib-1", reason="x"),
        lambda a: a.apply(ADMIN, "a-1", "c-1", 7, reason="x"),
        lambda a: a.apply(ADMIN, "a-1", "c-1", "ib-1", reason="  "),
        lambda a: a.apply("staff:7", "a-1", "c-1", "ib-1", reason="x"),
        lambda a: a.approve(CHECKER, "a-1", at=datetime(2026, 1, 1), reason="x"),  # noqa: DTZ001
        lambda a: a.approve(CHECKER, None, reason="x"),
        lambda a: a.reject(CHECKER, "a-1", reason=None),
    ],
)
def test_bad_arguments_get_typed_errors_that_echo_nothing(call: Any) -> None:
    _, apps = with_master(MemoryEventStore())
    with pytest.raises(ValidationError) as info:
        call(apps)
    assert "c@x.com" not in str(info.value)


def test_two_processes_approving_at_once_register_the_ib_once(tmp_path: Path) -> None:
    path = tmp_path / "ibs.sqlite"
    first_net, first = with_master(SqliteEventStore(path))
    first.apply(ADMIN, "a-1", "c-1", "ib-1", "m", reason="signed")
    second_net, second = world(SqliteEventStore(path))
    # Both read the pending application; the second approves between the first's read and
    # its append (as a second process would).
    real = first.repository.store.append

    def append(*args: Any, **kwargs: Any) -> Any:
        first.repository.store.append = real  # type: ignore[method-assign]
        second.approve(Actor.staff("9", Role.ADMIN), "a-1", reason="approved over there")
        return real(*args, **kwargs)

    first.repository.store.append = append  # type: ignore[method-assign]
    with pytest.raises(ApplicationClosedError):
        first.approve(CHECKER, "a-1", reason="approved here")
    for net in (first_net, second_net, world(SqliteEventStore(path))[0]):
        [registered] = net.history("ib-1")
        assert registered.metadata.reason == "approved over there"
    assert first.get("a-1").checker == "staff:9"


def test_a_tree_change_meanwhile_is_seen_before_the_approval_is_written(tmp_path: Path) -> None:
    path = tmp_path / "ibs.sqlite"
    net, apps = with_master(SqliteEventStore(path))
    apps.apply(ADMIN, "a-1", "c-1", "ib-1", "m", reason="signed")
    other_net, _ = world(SqliteEventStore(path))
    real = apps.repository.store.append
    calls = [0]

    def append(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:  # another process registers ib-1 by hand just before
            other_net.register_ib(ADMIN, "ib-1", None, JAN, reason="by hand")
        return real(*args, **kwargs)

    apps.repository.store.append = append  # type: ignore[method-assign]
    with pytest.raises(TreeError):  # retried on the new tree: the IB exists
        apps.approve(CHECKER, "a-1", reason="ok")
    assert apps.get("a-1").status is ApplicationStatus.PENDING
    assert [r.metadata.reason for r in net.history("ib-1")] == ["by hand"]


def test_a_concurrency_error_that_persists_is_raised_and_nothing_written() -> None:
    store = MemoryEventStore()
    net, apps = with_master(store)
    apps.apply(ADMIN, "a-1", "c-1", "ib-1", "m", reason="signed")

    def append(*args: Any, **kwargs: Any) -> Any:
        raise ConcurrencyError()

    store.append = append  # type: ignore[method-assign]
    with pytest.raises(ConcurrencyError):
        apps.approve(CHECKER, "a-1", reason="ok")
    assert apps.get("a-1").status is ApplicationStatus.PENDING
    assert "ib-1" not in net.tree().ibs()


# -- the workflow against a trivial model --------------------------------------------------------
PEOPLE = [ADMIN, CHECKER, Actor.staff("10", Role.ADMIN)]


class Workflow(RuleBasedStateMachine):
    """Applications submitted, approved, rejected and decided again by random people, with
    restarts (a new process on the same store) in between; the model is a dict of statuses."""

    applications = Bundle("applications")

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryEventStore()
        self.net, self.apps = with_master(self.store)
        self.status: dict[str, ApplicationStatus] = {}
        self.maker: dict[str, str] = {}
        self.count = 0

    @rule(target=applications, maker=st.sampled_from(PEOPLE), parent=st.sampled_from(["m", None]))
    def submit(self, maker: Actor, parent: str | None) -> str:
        self.count += 1
        app = f"a-{self.count}"
        self.apps.apply(maker, app, f"c-{self.count}", f"ib-{self.count}", parent, reason="r")
        self.status[app] = ApplicationStatus.PENDING
        self.maker[app] = maker.id
        return app

    def _expect(self, app: str, checker: Actor) -> type[Exception] | None:
        if self.status[app] is not ApplicationStatus.PENDING:
            return ApplicationClosedError
        if checker.id == self.maker[app]:
            return SelfApprovalError
        return None

    @rule(app=applications, checker=st.sampled_from(PEOPLE))
    def approve(self, app: str, checker: Actor) -> None:
        error = self._expect(app, checker)
        if error is None:
            self.apps.approve(checker, app, reason="ok")
            self.status[app] = ApplicationStatus.APPROVED
        else:
            with pytest.raises(error):
                self.apps.approve(checker, app, reason="ok")

    @rule(app=applications, checker=st.sampled_from(PEOPLE))
    def reject(self, app: str, checker: Actor) -> None:
        error = self._expect(app, checker)
        if error is None:
            self.apps.reject(checker, app, reason="no")
            self.status[app] = ApplicationStatus.REJECTED
        else:
            with pytest.raises(error):
                self.apps.reject(checker, app, reason="no")

    @rule()
    def restart(self) -> None:
        self.net, self.apps = world(self.store)

    @precondition(lambda self: self.count > 0)
    @rule(app=consumes(applications))
    def retry_the_submission(self, app: str) -> None:
        n = app.removeprefix("a-")
        maker = next(p for p in PEOPLE if p.id == self.maker[app])
        parent = self.apps.get(app).requested_parent_id
        self.apps.apply(maker, app, f"c-{n}", f"ib-{n}", parent, reason="retry")

    @invariant()
    def the_log_agrees_with_the_model(self) -> None:
        for app, status in self.status.items():
            assert self.apps.get(app).status is status
        approved = {f"ib-{a.removeprefix('a-')}" for a, s in self.status.items()
                    if s is ApplicationStatus.APPROVED}  # fmt: skip
        assert set(self.net.tree().ibs()) == {"m", *approved}
        for ib in approved:
            [registered] = self.net.history(ib)  # exactly once
            assert registered.metadata.correlation_id == f"ibapplication-a-{ib[3:]}"


Workflow.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestWorkflow = Workflow.TestCase
