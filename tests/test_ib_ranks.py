"""IB ranks with effective dates: recorded by hand with actor and reason (or staged by a rule),
"the rank as of T" and every IB's ranks at T from the log, the same in a second process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, AccessControl, Actor, Role, RowScope
from fxcrm_core.commissions.network import (
    IB_NETWORK_EVENTS,
    IbNetworkService,
    IbRankChanged,
)
from fxcrm_core.events import (
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import AccessDeniedError, NotFoundError, ValidationError
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore

JAN = datetime(2026, 1, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
JUN = datetime(2026, 6, 1, tzinfo=UTC)
POLICY = DEFAULT_POLICY.with_role(
    Role.ADMIN, DEFAULT_POLICY.grants[Role.ADMIN] | {"ib.manage", "ib.rank"}, RowScope.ALL
)
ADMIN = Actor.staff("7", Role.ADMIN)
NO_RANKS = Actor.staff("8", "ib-desk")


def network(store: EventStore) -> IbNetworkService:
    registry = EventRegistry()
    registry.register_all(IB_NETWORK_EVENTS)
    policy = POLICY.with_role("ib-desk", {"ib.manage"}, RowScope.ALL)
    return IbNetworkService(
        Repository(store, EventCodec(registry)), AccessControl(policy), clock=FixedClock(JUN)
    )


def build(ibs: IbNetworkService) -> None:
    ibs.register_ib(ADMIN, "m", None, JAN, reason="master signed")
    ibs.register_ib(ADMIN, "s", "m", MAR, reason="sub signed")
    ibs.change_rank(ADMIN, "m", 2, JAN, reason="signed as gold")
    ibs.change_rank(ADMIN, "s", 1, MAR + timedelta(days=10), reason="first 100 lots")
    ibs.change_rank(ADMIN, "m", 3, JUN, reason="quarter review: platinum")


def test_the_rank_as_of_any_time_and_its_history() -> None:
    ibs = network(MemoryEventStore())
    build(ibs)
    assert ibs.rank_of("m", JAN) == 2
    assert ibs.rank_of("m", JUN - timedelta(seconds=1)) == 2
    assert ibs.rank_of("m", JUN) == 3
    assert ibs.rank_of("s", MAR) == 0  # registered, no rank yet
    assert ibs.rank_of("s", MAR + timedelta(days=10)) == 1
    with pytest.raises(NotFoundError):
        ibs.rank_of("s", JAN)  # not registered yet
    assert ibs.ranks_at(JAN) == {"m": 2}
    assert ibs.ranks_at(MAR) == {"m": 2, "s": 0}
    assert ibs.ranks_at(JUN) == {"m": 3, "s": 1}
    assert ibs.as_of(JUN).ranks == {"m": 3, "s": 1}
    assert ibs.as_of(MAR).ranks == {"m": 2, "s": 0}
    history = ibs.rank_history("m")
    assert [r.event for r in history] == [IbRankChanged("m", 2, JAN), IbRankChanged("m", 3, JUN)]
    assert [r.metadata.actor for r in history] == [ADMIN.id, ADMIN.id]
    assert [r.metadata.reason for r in history] == ["signed as gold", "quarter review: platinum"]
    assert all(r.recorded_at.tzinfo is not None for r in history)
    assert type(ibs.history("m")[0].event).__name__ == "IbRegistered"


def test_a_rank_change_needs_its_permission_a_reason_time_order_and_a_registered_ib() -> None:
    ibs = network(MemoryEventStore())
    build(ibs)
    version = ibs.version
    with pytest.raises(AccessDeniedError):  # ib.manage alone does not set ranks
        ibs.change_rank(NO_RANKS, "m", 4, JUN, reason="x")
    with pytest.raises(ValidationError):
        ibs.change_rank(ADMIN, "m", 4, JUN, reason=" ")
    with pytest.raises(ValidationError):  # before the IB's last rank change
        ibs.change_rank(ADMIN, "m", 4, MAR, reason="backdated")
    with pytest.raises(NotFoundError):
        ibs.change_rank(ADMIN, "s", 1, JAN, reason="before its registration")
    with pytest.raises(NotFoundError):
        ibs.change_rank(ADMIN, "nobody", 1, JUN, reason="x")
    for bad in (-1, 1001, True, 1.5, "2"):
        with pytest.raises(ValidationError):
            ibs.change_rank(ADMIN, "m", bad, JUN, reason="x")  # type: ignore[arg-type]
    assert ibs.version == version


def test_a_rule_stages_a_rank_change_in_its_own_unit_of_work() -> None:
    """The entry point the loyalty rules will use: stage the change with their own metadata."""
    ibs = network(MemoryEventStore())
    build(ibs)
    with UnitOfWork(ibs.repository, EventMetadata("policy:loyalty", reason="tier gold")) as uow:
        ibs.stage(uow, IbRankChanged("s", 2, JUN))
        uow.commit()
    assert ibs.rank_of("s", JUN) == 2
    assert ibs.rank_history("s")[-1].metadata.actor == "policy:loyalty"
    with (
        UnitOfWork(ibs.repository, EventMetadata("policy:loyalty")) as uow,
        pytest.raises(ValidationError),
    ):
        ibs.stage(uow, IbRankChanged("s", 1, MAR))  # checked like a change by hand


def test_a_second_process_and_a_restart_answer_the_same(tmp_path: Path) -> None:
    path = tmp_path / "ibs.sqlite"
    live = network(SqliteEventStore(path))
    build(live)
    other = network(SqliteEventStore(path))
    for at in (JAN, MAR, MAR + timedelta(days=10), JUN):
        assert other.ranks_at(at) == live.ranks_at(at)
        assert other.as_of(at) == live.as_of(at)
    live.change_rank(ADMIN, "s", 2, JUN, reason="promoted")
    assert other.rank_of("s", JUN) == 2  # seen at once
    assert [r.metadata.reason for r in other.rank_history("s")] == ["first 100 lots", "promoted"]


@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 9)),
        min_size=1,
        max_size=12,
    )
)
def test_the_rank_at_t_is_the_last_change_effective_by_t(changes: list[tuple[int, int]]) -> None:
    """Law: the recorded rank at any T is that of the latest change dated at or before T."""
    ibs = network(MemoryEventStore())
    ibs.register_ib(ADMIN, "m", None, JAN, reason="signed")
    ordered = sorted(changes, key=lambda c: c[0])
    for day, rank in ordered:
        ibs.change_rank(ADMIN, "m", rank, JAN + timedelta(days=day), reason="review")
    for probe in range(0, 402, 7):
        at = JAN + timedelta(days=probe)
        effective = [rank for day, rank in ordered if day <= probe]
        assert ibs.rank_of("m", at) == (effective[-1] if effective else 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda n: n.change_rank(ADMIN, "a@b.com\n", 1, JUN, reason="x"),
        lambda n: n.change_rank(ADMIN, "m", 1, datetime(2026, 6, 1), reason="x"),  # noqa: DTZ001
        lambda n: n.change_rank("staff:7", "m", 1, JUN, reason="x"),
        lambda n: n.rank_of(7, JUN),
        lambda n: n.rank_of("m", "2026-06-01"),
        lambda n: n.ranks_at(None),
        lambda n: n.rank_history(["a@b.com"]),
        lambda n: n.stage("not a unit of work", IbRankChanged("m", 1, JUN)),
    ],
)
def test_hostile_arguments_get_typed_errors_that_echo_nothing(call: Any) -> None:
    ibs = network(MemoryEventStore())
    build(ibs)
    version = ibs.version
    with pytest.raises(ValidationError) as info:
        call(ibs)
    assert "a@b.com" not in str(info.value)
    assert ibs.version == version


def test_a_staged_change_is_stored_in_utc() -> None:
    ibs = network(MemoryEventStore())
    build(ibs)
    tokyo = timezone(timedelta(hours=9))
    with UnitOfWork(ibs.repository, EventMetadata("policy:loyalty", reason="tier")) as uow:
        ibs.stage(uow, IbRankChanged("s", 4, datetime(2026, 6, 1, 9, tzinfo=tokyo)))
        uow.commit()
    assert ibs.rank_history("s")[-1].event.effective_at == JUN
    assert ibs.rank_history("s")[-1].event.effective_at.tzinfo is UTC
