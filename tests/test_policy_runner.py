"""The policy runner: each upstream event handled exactly once, output and position together."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.events import (
    POLICY_EVENTS,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    Policy,
    PolicyError,
    PolicyRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel import Money, ValidationError
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore
from tests.sample_domain import EVENTS, CashPaidIn, CashPaidOut, Till, TillOpened
from tests.test_events import CountingTypedReads, WithoutTypedReads

META = EventMetadata("staff:7", "req-1")


def repository(store: EventStore) -> Repository:
    registry = EventRegistry()
    registry.register_all((*EVENTS, *POLICY_EVENTS))
    return Repository(store, EventCodec(registry))


def mirror(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
    """Pays the same amount into the till's mirror ("<id>-mirror"), opening it if needed."""
    event = recorded.event
    assert isinstance(event, CashPaidIn)
    if "-mirror" in recorded.stream_id:
        return
    mirror_id = recorded.stream_id.removeprefix("till-") + "-mirror"
    till = uow.load(Till, mirror_id) or Till.blank(mirror_id)
    if not till.version:
        till = uow.record(till, *till.open("USD", "mirror"))
    uow.record(till, *till.pay_in(event.amount))


def pay_in(repo: Repository, till_id: str, *amounts: int) -> None:
    for amount in amounts:
        till = repo.load(Till, till_id) or Till.blank(till_id)
        with UnitOfWork(repo, META) as uow:
            if not till.version:
                till = uow.record(till, *till.open("USD", "Ana"))
            uow.record(till, *till.pay_in(Money.of(amount, "USD")))
            uow.commit()


def mirrored(repo: Repository, till_id: str) -> Money | None:
    repo.forget()
    till = repo.load(Till, f"{till_id}-mirror")
    return till.balance if till else None


def test_each_event_is_handled_once_across_runs_and_new_runners(tmp_path: Path) -> None:
    repo = repository(SqliteEventStore(tmp_path / "log.sqlite"))
    policy = Policy("mirror", (CashPaidIn,), mirror)
    pay_in(repo, "a", 5, 7)
    # Both payments, then the two the policy recorded (of its type, so handled: no-ops).
    assert PolicyRunner(repo, [policy]).run() == 4
    assert PolicyRunner(repo, [policy]).run() == 0  # a restart: the position is in the log
    pay_in(repo, "a", 1)
    fresh = repository(SqliteEventStore(tmp_path / "log.sqlite"))  # a second process
    assert PolicyRunner(fresh, [policy]).run() == 2
    assert mirrored(repo, "a") == Money.of(13, "USD")
    assert PolicyRunner(repo, [policy]).lag() == {"mirror": 0}


def test_a_crash_before_the_policy_commit_repeats_nothing_and_loses_nothing() -> None:
    repo = repository(MemoryEventStore())
    calls = 0

    def crashing(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        mirror(recorded, uow)
        if calls == 2:
            raise ValidationError("the worker died here")  # before the runner commits

    pay_in(repo, "a", 5, 7, 9)
    with pytest.raises(PolicyError, match="position"):
        PolicyRunner(repo, [Policy("mirror", (CashPaidIn,), crashing)]).run()
    assert mirrored(repo, "a") == Money.of(5, "USD")  # the first event only
    assert PolicyRunner(repo, [Policy("mirror", (CashPaidIn,), mirror)]).run() == 5
    assert mirrored(repo, "a") == Money.of(21, "USD")


def test_two_workers_racing_handle_every_event_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    repo = repository(SqliteEventStore(path))
    for till in ("a", "b", "c"):
        pay_in(repo, till, *range(1, 11))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            PolicyRunner(
                repository(SqliteEventStore(path)), [Policy("m", (CashPaidIn,), mirror)]
            ).run()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for till in ("a", "b", "c"):
        assert mirrored(repo, till) == Money.of(55, "USD")


def test_events_with_nothing_to_do_are_recorded_as_handled_in_bulk() -> None:
    repo = repository(MemoryEventStore())
    seen: list[int] = []

    def count(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        seen.append(recorded.position)

    pay_in(repo, "a", *range(1, 21))
    runner = PolicyRunner(repo, [Policy("count", (CashPaidIn,), count)])
    assert runner.run() == 20
    assert PolicyRunner(repo, [Policy("count", (CashPaidIn,), count)]).run() == 0
    assert len(seen) == 20
    tracking = repo.store.read_stream("policy-count")
    assert len(tracking) == 1  # one small event for the twenty no-ops of one read


def test_policy_output_feeds_other_policies_in_the_same_run() -> None:
    repo = repository(MemoryEventStore())

    def second(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """Mirrors the mirrors (once: a mirror of a mirror is left alone)."""
        event = recorded.event
        assert isinstance(event, CashPaidIn)
        if recorded.stream_id.endswith("-mirror") and recorded.stream_id.count("-mirror") == 1:
            till_id = recorded.stream_id.removeprefix("till-") + "-mirror"
            till = uow.load(Till, till_id) or Till.blank(till_id)
            if not till.version:
                till = uow.record(till, *till.open("USD", "mirror"))
            uow.record(till, *till.pay_in(event.amount))

    pay_in(repo, "a", 3)
    runner = PolicyRunner(
        repo, [Policy("first", (CashPaidIn,), mirror), Policy("second", (CashPaidIn,), second)]
    )
    runner.run()
    assert mirrored(repo, "a-mirror") == Money.of(3, "USD")


def test_policy_definitions_are_checked() -> None:
    with pytest.raises(ValidationError):
        Policy("bad name!", (CashPaidIn,), mirror)
    with pytest.raises(ValidationError):
        Policy("empty", (), mirror)
    runner = PolicyRunner(repository(MemoryEventStore()), [Policy("m", (CashPaidIn,), mirror)])
    with pytest.raises(ValidationError):
        runner.add(Policy("m", (CashPaidIn,), mirror))


def test_a_builtin_error_in_a_handler_reaches_the_host_as_a_policy_error() -> None:
    repo = repository(MemoryEventStore())

    def broken(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        raise KeyError("Ana Lima")  # a careless handler: its text must not be echoed

    pay_in(repo, "a", 1)
    with pytest.raises(PolicyError) as caught:
        PolicyRunner(repo, [Policy("broken", (CashPaidIn,), broken)]).run()
    assert "Ana" not in str(caught.value)
    assert "KeyError" in str(caught.value)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 50)), min_size=1, max_size=25),
    st.lists(st.integers(1, 25), max_size=5),
)
def test_running_at_any_points_gives_the_same_result_as_running_once(
    payments: list[tuple[str, int]], run_after: list[int]
) -> None:
    """Law: however often the runner runs in between, each till's mirror sums its payments."""
    repo = repository(MemoryEventStore())
    policy = Policy("m", (CashPaidIn,), mirror)
    for i, (till, amount) in enumerate(payments, 1):
        pay_in(repo, till, amount)
        if i in run_after:
            PolicyRunner(repo, [policy]).run()
    PolicyRunner(repo, [policy]).run()
    for till in "abc":
        total = sum(a for t, a in payments if t == till)
        assert mirrored(repo, till) == (Money.of(total, "USD") if total else None)


def test_a_failing_policy_stops_only_itself() -> None:
    repo = repository(MemoryEventStore())

    def broken(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        raise ValidationError("a poison event")

    pay_in(repo, "a", 5)
    runner = PolicyRunner(
        repo, [Policy("a-broken", (CashPaidIn,), broken), Policy("b-mirror", (CashPaidIn,), mirror)]
    )
    with pytest.raises(PolicyError, match="a-broken"):
        runner.run()
    assert mirrored(repo, "a") == Money.of(5, "USD")  # the policy after it in the table ran
    assert runner.position("a-broken") == 0  # stays before the event it failed on


def test_a_failure_to_record_a_policy_output_is_a_policy_error() -> None:
    from fxcrm_core.events import AppendResult, StreamAppend
    from fxcrm_core.kernel import StoreError

    class FullDisk(MemoryEventStore):
        def append(
            self, *appends: StreamAppend, idempotency_key: str | None = None
        ) -> AppendResult:
            if any(a.stream_id.startswith("policy-") for a in appends):
                raise StoreError("disk full")
            return super().append(*appends, idempotency_key=idempotency_key)

    repo = repository(FullDisk())
    pay_in(repo, "a", 5)
    with pytest.raises(PolicyError, match=r"could not record its output.*StoreError"):
        PolicyRunner(repo, [Policy("m", (CashPaidIn,), mirror)]).run()
    assert mirrored(repo, "a") is None  # nothing of the output was written


def test_a_worker_outlives_any_failure() -> None:
    repo = repository(MemoryEventStore())
    calls: list[int] = []

    def broken(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        calls.append(recorded.position)
        raise RuntimeError("a bug in a host's handler")

    pay_in(repo, "a", 5)
    stop = threading.Event()
    seen: list[PolicyError] = []

    def on_error(error: PolicyError) -> None:
        seen.append(error)
        if len(seen) == 2:
            stop.set()

    PolicyRunner(repo, [Policy("b", (CashPaidIn,), broken)]).follow(
        stop, interval=0.01, on_error=on_error
    )
    assert len(seen) == 2  # reported, and retried at the next poll
    assert all("RuntimeError" in str(e) for e in seen)


def test_a_policy_far_behind_with_nothing_to_do_records_how_far_it_read() -> None:
    """A policy whose events never occur still records its position now and then, so a new
    process does not read the whole log again."""
    repo = repository(MemoryEventStore())
    pay_in(repo, "a", *([1] * 30))
    from tests.sample_domain import TillClosed

    runner = PolicyRunner(repo, [Policy("never", (TillClosed,), mirror)], progress_every=10)
    runner.run()
    assert runner.position("never") >= 30


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["in", "out"]), st.sampled_from("ab"), st.integers(1, 20)),
            st.just(("run", "", 0)),
        ),
        max_size=25,
    ),
    st.integers(1, 4),
    st.sampled_from([1, 3, 1000]),
)
def test_policies_run_the_same_with_typed_reads_and_without(
    steps: list[tuple[str, str, int]], read_batch: int, progress_every: int
) -> None:
    """Law: through a store's typed reads the policies handle the same events, in the same
    order, record the same output, fail on the same events and wait on the same lag as through
    read_all alone (only their own bookkeeping may land in fewer events)."""

    def scenario(typed: bool) -> tuple[list[Any], dict[str, list[Any]], int, int]:
        inner = MemoryEventStore()
        store = CountingTypedReads(inner) if typed else WithoutTypedReads(inner)
        repo = repository(store)
        calls: list[Any] = []

        def seen(name: str) -> Any:
            def handler(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
                calls.append((name, recorded.stream_id, recorded.version))
                if name == "poison" and getattr(recorded.event, "amount", None) == Money.of(
                    13, "USD"
                ):
                    raise ValidationError("a poison event")
                if name == "mirror":
                    mirror(recorded, uow)

            return handler

        runner = PolicyRunner(
            repo,
            [
                Policy("mirror", (CashPaidIn,), seen("mirror")),
                Policy("opened", (TillOpened,), seen("opened")),
                Policy("poison", (CashPaidOut,), seen("poison")),
            ],
            read_batch=read_batch,
            progress_every=progress_every,
        )
        for step, till_id, amount in [*steps, ("run", "", 0)]:
            if step == "run":
                try:
                    calls.append(("ran", runner.run()))
                except PolicyError as exc:
                    calls.append(("failed", "poison" in str(exc)))
                calls.append(("lag", runner.lag()))
            elif step == "in":
                pay_in(repo, till_id, amount)
            else:
                till = repo.load(Till, till_id)
                balance = till.balance if till is not None else None
                if till is not None and balance is not None and balance >= Money.of(amount, "USD"):
                    with UnitOfWork(repo, META) as uow:
                        uow.record(till, *till.pay_out(Money.of(amount, "USD")))
                        uow.commit()
        streams: dict[str, list[Any]] = {}
        for stored in inner.read_all(limit=100_000):
            if not stored.stream_id.startswith("policy-"):
                streams.setdefault(stored.stream_id, []).append((stored.event_type, stored.data))
        handled = sum(runner._tracker(name).handled for name in ("mirror", "opened", "poison"))
        return calls, streams, handled, store.read_alls

    with_typed, without = scenario(True), scenario(False)
    # Each policy handles its events in log order; how the policies' turns interleave depends
    # on where batches end (with either kind of read), so each one's sequence is compared.
    for name in ("mirror", "opened", "poison", "ran", "failed", "lag"):
        assert [c for c in with_typed[0] if c[0] == name] == [c for c in without[0] if c[0] == name]
    assert with_typed[1:3] == without[1:3]
    assert with_typed[3] == 0  # the typed store's read_all was never used
