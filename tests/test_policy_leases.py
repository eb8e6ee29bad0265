"""Leases: with several runners, each policy runs in the one holding its lease; a dead holder's
policies pass to a live runner, which resumes from the recorded position."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from fxcrm_core.events import (
    Leases,
    LocalLeases,
    Policy,
    PolicyRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel import Money, ValidationError
from fxcrm_core.stores import SqliteEventStore
from tests.sample_domain import CashPaidIn
from tests.test_policy_runner import mirror, mirrored, pay_in, repository


def test_local_leases_one_holder_per_name_until_released_or_closed() -> None:
    a = LocalLeases()
    b = a.peer()
    assert isinstance(a, Leases)
    assert a.acquire("p")
    assert a.acquire("p")
    assert not b.acquire("p")
    assert b.acquire("q")
    assert a.owned() == {"p"}
    assert b.owned() == {"q"}
    a.release("p")
    a.release("p")  # releasing what is not held: nothing
    assert a.owned() == frozenset()
    assert b.acquire("p")
    b.close()  # a worker dying lets go of everything
    assert b.owned() == frozenset()
    assert not b.acquire("p")  # closed for good
    assert a.acquire("p")
    assert a.acquire("q")
    assert not LocalLeases().owned()  # another table: independent
    assert LocalLeases().acquire("p")
    with pytest.raises(ValidationError):
        a.acquire("")


def test_a_runner_without_the_lease_handles_nothing_and_takes_over_when_the_holder_dies(
    tmp_path: Path,
) -> None:
    repo = repository(SqliteEventStore(tmp_path / "log.sqlite"))
    policy = Policy("mirror", (CashPaidIn,), mirror)
    first_leases = LocalLeases()
    first = PolicyRunner(repo, [policy], leases=first_leases)
    second = PolicyRunner(repo, [policy], leases=first_leases.peer())
    pay_in(repo, "a", 5, 7)
    assert first.run() == 4
    assert first_leases.owned() == {"mirror"}
    pay_in(repo, "a", 1)
    assert second.run() == 0  # the first holds the policy: the second leaves it alone
    assert second.leases is not None
    assert second.leases.owned() == frozenset()
    assert first.position("mirror") < repo.store.last_position()
    first_leases.close()  # the first worker dies
    assert second.run() == 2  # taken over, from the recorded position: nothing repeated
    assert mirrored(repo, "a") == Money.of(13, "USD")
    assert second.leases.owned() == {"mirror"}
    assert first.run() == 0  # a dead worker's runner does nothing


def test_policies_split_between_runners_each_runs_only_its_own(tmp_path: Path) -> None:
    repo = repository(SqliteEventStore(tmp_path / "log.sqlite"))
    seen: dict[str, list[int]] = {"one": [], "two": []}

    def note(name: str) -> Any:
        def handle(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
            seen[name].append(recorded.position)

        return handle

    policies = [Policy(n, (CashPaidIn,), note(n)) for n in ("one", "two")]
    mine = LocalLeases()
    theirs = mine.peer()
    assert theirs.acquire("two")
    pay_in(repo, "a", 1, 2)
    runner = PolicyRunner(repo, policies, leases=mine)
    assert runner.run() == 2
    assert seen == {"one": [2, 3], "two": []}
    assert runner.position("two") == 0
    theirs.release("two")
    assert runner.run() == 2  # now free: taken at the next pass
    assert seen == {"one": [2, 3], "two": [2, 3]}


def test_a_lease_lost_while_handling_commits_nothing_and_the_new_owner_handles_it_once(
    tmp_path: Path,
) -> None:
    repo = repository(SqliteEventStore(tmp_path / "log.sqlite"))
    first_leases = LocalLeases()
    second_leases = first_leases.peer()
    calls: list[str] = []

    def lose_then_mirror(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        calls.append("first" if first_leases.owned() else "second")
        if len(calls) == 1:
            first_leases.close()  # lost during the handler: its output must not land
            assert second_leases.acquire("mirror")
        mirror(recorded, uow)

    policy = Policy("mirror", (CashPaidIn,), lose_then_mirror)
    pay_in(repo, "a", 5)
    first = PolicyRunner(repo, [policy], leases=first_leases)
    assert first.run() == 0  # not a failure: it stopped, committing nothing
    assert mirrored(repo, "a") is None
    assert first.position("mirror") == 0
    second = PolicyRunner(repo, [policy], leases=second_leases)
    assert second.run() == 2  # the payment, then the mirror's payment (a no-op)
    assert mirrored(repo, "a") == Money.of(5, "USD")
    assert calls[:2] == ["first", "second"]


def test_follow_hands_its_policies_over_when_it_stops(tmp_path: Path) -> None:
    repo = repository(SqliteEventStore(tmp_path / "log.sqlite"))
    leases = LocalLeases()
    runner = PolicyRunner(repo, [Policy("mirror", (CashPaidIn,), mirror)], leases=leases)
    pay_in(repo, "a", 3)
    stop = threading.Event()
    worker = threading.Thread(target=runner.follow, args=(stop,), kwargs={"interval": 0.01})
    worker.start()
    try:
        for _ in range(3000):  # (up to 30 s on a loaded machine)
            if mirrored(repo, "a") is not None:
                break
            stop.wait(0.01)
        assert leases.owned() == {"mirror"}
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert leases.owned() == frozenset()
    assert leases.peer().acquire("mirror")
    assert mirrored(repo, "a") == Money.of(3, "USD")


def test_leases_must_be_a_leases_adapter(tmp_path: Path) -> None:
    repo: Repository = repository(SqliteEventStore(tmp_path / "log.sqlite"))
    with pytest.raises(ValidationError):
        PolicyRunner(repo, [], leases=object())  # type: ignore[arg-type]
