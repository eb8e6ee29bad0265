"""Service records: notes, calls and tasks on a client, seen through the client's row scope,
sealed under the client's key (erasure leaves them unreadable), the same after a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration, Stage
from fxcrm_core.engagement.records import (
    RECORD_EVENTS,
    CallDirection,
    CallOutcome,
    ServiceRecords,
    TaskStatus,
    with_records_grants,
)
from fxcrm_core.events import ERASED
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    IllegalTransitionError,
    SubjectErasedError,
    ValidationError,
)
from fxcrm_core.privacy import MasterKeyring, RetentionPolicy

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
REP1 = Actor.staff("rep-1", Role.SALES)
REP2 = Actor.staff("rep-2", Role.SALES)
BOSS = Actor.staff("boss", Role.ADMIN)
DPO = Actor.staff("dpo", Role.COMPLIANCE)
POLICY = with_records_grants(DEFAULT_POLICY)


def _reg(name: str, email: str, phone: str, doc: str, owner: str) -> Registration:
    return Registration(ClientKind.INDIVIDUAL, "GB", name, email, phone, doc, owner_id=owner)


ANA = _reg("Ana Lima", "ana@example.com", "07911 123456", "x1234567", "staff:rep-1")
BEN = _reg("Ben Cole", "ben@example.com", "07911 123457", "y7654321", "staff:rep-2")


def _broker(
    clock: FixedClock, path: Path | None = None, keyring: MasterKeyring | None = None
) -> tuple[Broker, ServiceRecords]:
    options: dict[str, object] = {
        "identity_key": b"k" * 32,
        "policy": POLICY,
        "retention": RetentionPolicy(years=0),
        "keyring": keyring or MasterKeyring.generate(),
    }
    if path is None:
        broker = Broker.in_memory(clock=clock, **options)  # type: ignore[arg-type]
    else:
        broker = Broker.sqlite(path, clock=clock, **options)  # type: ignore[arg-type]
    broker.registry.register_all(RECORD_EVENTS)  # the integrator: engagement.register_events
    records = ServiceRecords(
        broker.repository, broker.access, broker.projections, clock=clock, ids=broker.ids
    )
    return broker, records


def test_a_sales_rep_sees_only_its_clients_records_and_an_ib_none() -> None:
    clock = FixedClock(T0)
    broker, records = _broker(clock)
    ana, ben = broker.clients.register(PORTAL, ANA), broker.clients.register(PORTAL, BEN)
    records.add_note(REP1, ana, "Prefers calls after 17:00")
    records.add_note(REP2, ben, "Asked about swap-free")
    with pytest.raises(AccessDeniedError):
        records.add_note(REP1, ben, "not mine")
    assert [n.text for n in records.notes(REP1, ana)] == ["Prefers calls after 17:00"]
    assert records.notes(REP1, ana)[0].author == REP1.id
    with pytest.raises(AccessDeniedError):
        records.notes(REP1, ben)
    with pytest.raises(AccessDeniedError):
        records.notes(Actor.ib("ib-1"), ana)
    with pytest.raises(AccessDeniedError):
        records.notes(Actor.client(ana), ana)  # internal notes: not the client's to read
    assert [n.text for n in records.notes(DPO, ben)] == ["Asked about swap-free"]
    # A reassigned client takes its records' rows along.
    broker.clients.assign_owner(BOSS, ana, REP2.id)
    assert len(records.notes(REP2, ana)) == 1
    with pytest.raises(AccessDeniedError):
        records.notes(REP1, ana)


def test_calls_and_tasks_are_events_with_actor_and_time() -> None:
    clock = FixedClock(T0)
    broker, records = _broker(clock)
    ana = broker.clients.register(PORTAL, ANA)
    records.log_call(
        REP1,
        ana,
        direction=CallDirection.OUTBOUND,
        outcome=CallOutcome.ANSWERED,
        duration=timedelta(minutes=4, seconds=10),
        note="Will deposit on Friday",
    )
    (call,) = records.calls(REP1, ana)
    assert (call.author, call.at, call.duration) == (REP1.id, T0, timedelta(seconds=250))
    assert call.note == "Will deposit on Friday"
    with pytest.raises(ValidationError):
        records.log_call(
            REP1, ana, direction=CallDirection.INBOUND, outcome=CallOutcome.BUSY,
            duration=timedelta(seconds=-1),
        )  # fmt: skip
    task = records.open_task(
        REP1, ana, title="Check the deposit", due_at=T0 + timedelta(days=1), owner_id=REP1.id
    )
    with pytest.raises(AccessDeniedError):  # for another owner: task.assign
        records.open_task(REP1, ana, title="x", due_at=T0, owner_id=REP2.id)
    assert records.overdue(REP1) == []
    clock.advance(timedelta(days=2))
    assert [t.task_id for t in records.overdue(REP1)] == [task]
    with pytest.raises(AccessDeniedError):
        records.overdue(REP1, REP2.id)  # another owner's list: task.assign
    records.reassign_task(BOSS, ana, task, REP2.id)
    assert records.overdue(REP1) == []
    assert records.overdue(BOSS, REP2.id)[0].task_id == task
    # rep-2 owns the task, but not the client: its list leaves out rows it may not read
    assert records.open_tasks_of(REP2) == []
    with pytest.raises(AccessDeniedError):  # not the owner any more: task.assign needed
        records.complete_task(REP1, ana, task)
    broker.clients.assign_owner(BOSS, ana, REP2.id)
    records.complete_task(REP2, ana, task)
    with pytest.raises(IllegalTransitionError):
        records.complete_task(REP2, ana, task)
    (view,) = records.tasks(REP2, ana)
    assert view.status is TaskStatus.DONE
    assert [h[0] for h in view.history] == ["opened", "reassigned", "done"]
    assert [h[2] for h in view.history] == [REP1.id, BOSS.id, REP2.id]
    assert records.open_tasks_of(BOSS, REP2.id) == []


def test_erasure_makes_records_unreadable() -> None:
    clock = FixedClock(T0)
    broker, records = _broker(clock)
    ana = broker.clients.register(PORTAL, ANA)
    records.add_note(REP1, ana, "Lives at 1 High Street")
    records.log_call(
        REP1, ana, direction=CallDirection.INBOUND, outcome=CallOutcome.ANSWERED,
        duration=timedelta(minutes=1), note="spoke with her husband",
    )  # fmt: skip
    records.open_task(REP1, ana, title="Call Ana back", due_at=T0, owner_id=REP1.id)
    broker.clients.move(REP1, ana, Stage.CLOSED)
    broker.erasure.erase(DPO, ana, reason="erasure request")
    assert [n.text for n in records.notes(DPO, ana)] == [ERASED]
    assert [c.note for c in records.calls(DPO, ana)] == [ERASED]
    assert [t.title for t in records.tasks(DPO, ana)] == [ERASED]
    with pytest.raises(SubjectErasedError):
        records.add_note(REP1, ana, "after the erasure")


def test_a_restart_and_a_second_process_answer_the_same(tmp_path: Path) -> None:
    clock, keyring = FixedClock(T0), MasterKeyring.generate()
    path = tmp_path / "b.sqlite"
    first, records = _broker(clock, path, keyring)
    ana = first.clients.register(PORTAL, ANA)
    records.add_note(REP1, ana, "First contact")
    task = records.open_task(REP1, ana, title="Follow up", due_at=T0, owner_id=REP1.id)
    second, other = _broker(clock, path, keyring)  # another process on the same log
    clock.advance(timedelta(hours=1))
    assert [t.task_id for t in other.overdue(REP1)] == [task]
    other.add_note(REP1, ana, "Second contact")
    other.complete_task(REP1, ana, task)
    assert [n.text for n in records.notes(REP1, ana)] == ["First contact", "Second contact"]
    assert records.overdue(REP1) == []  # the read model catches up with the other's commit
    first.close()
    second.close()
    restarted, again = _broker(clock, path, keyring)
    assert [n.text for n in again.notes(REP1, ana)] == ["First contact", "Second contact"]
    assert again.tasks(REP1, ana)[0].status is TaskStatus.DONE
    assert again.overdue(REP1) == []
    restarted.close()


_OPS = st.lists(
    st.tuples(st.sampled_from(["open", "done", "move"]), st.integers(0, 5), st.integers(0, 2)),
    max_size=12,
)
OWNERS = [REP1.id, "staff:rep-3", "staff:rep-4"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_the_open_tasks_read_model_is_the_log_folded(ops: list[tuple[str, int, int]]) -> None:
    """Law: whatever opens, completes and reassigns happen, the read model's open tasks per
    owner are the tasks the log shows open for that owner (and a fresh process agrees)."""
    clock = FixedClock(T0)
    broker, records = _broker(clock)
    ana = broker.clients.register(PORTAL, ANA)
    opened: list[str] = []
    for op, which, owner in ops:
        clock.advance(timedelta(minutes=1))
        if op == "open":
            due = T0 + timedelta(minutes=which)
            opened.append(
                records.open_task(BOSS_REP, ana, title="t", due_at=due, owner_id=OWNERS[owner])
            )
        elif opened:
            task = opened[which % len(opened)]
            try:
                if op == "done":
                    records.complete_task(BOSS_REP, ana, task)
                else:
                    records.reassign_task(BOSS_REP, ana, task, OWNERS[owner])
            except IllegalTransitionError:
                pass
    views = records.tasks(BOSS_REP, ana)
    fresh = ServiceRecords(broker.repository, broker.access, broker.projections, clock=clock)
    for who in OWNERS:
        expected = sorted(
            (v.due_at, v.task_id)
            for v in views
            if v.status is TaskStatus.OPEN and v.owner_id == who
        )
        for service in (records, fresh):
            got = [(t.due_at, t.task_id) for t in service.open_tasks_of(BOSS_REP, who)]
            assert got == expected


BOSS_REP = Actor.staff("lead", Role.SUPPORT, Role.ADMIN)  # writes notes, assigns tasks
