"""PostgreSQL leases: one holder per name, passed on when the holder's session ends; two worker
processes over one log hand their policies over on a kill -9, every event handled once."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fxcrm_core.events import (
    Leases,
    Policy,
    PolicyRunner,
    PolicyTracker,
    RecordedEvent,
    UnitOfWork,
    iter_all,
)
from fxcrm_core.kernel import Money, StoreError, ValidationError
from fxcrm_core.stores.postgres.leases import PostgresLeases, lease_key
from tests.lease_worker import POLICIES, Handled, repository
from tests.pg import pg_dsn
from tests.sample_domain import CashPaidIn, Till
from tests.test_policy_runner import META, mirror, mirrored, pay_in

__all__ = ["pg_dsn"]

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def terminate(dsn: str, worker: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (f"fxcrm-worker:{worker}",),
        ).fetchone()
    assert row == (1,)


def test_lease_keys_are_stable_64_bit_and_clear_of_the_migration_lock() -> None:
    # Pinned: workers of two releases during a rolling deploy must agree on every key.
    expected = int.from_bytes(
        hashlib.blake2b(b"deal-feed", digest_size=8, person=b"fxcrm-lease").digest(),
        "big",
        signed=True,
    )
    assert lease_key("deal-feed") == expected
    keys = {lease_key(f"policy-{i}") for i in range(2000)}
    assert len(keys) == 2000
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert 0x66786372_6D000001 not in keys
    with pytest.raises(ValidationError):
        lease_key("")


def test_one_holder_per_name_until_released_or_closed(pg_dsn: str) -> None:
    a = PostgresLeases(pg_dsn, worker_id="a")
    b = PostgresLeases(pg_dsn, worker_id="b")
    try:
        assert isinstance(a, Leases)
        assert a.acquire("deal-feed")
        assert a.acquire("deal-feed")  # idempotent: one lock, not a stack of them
        assert not b.acquire("deal-feed")
        assert b.acquire("payouts")
        assert a.owned() == {"deal-feed"}
        assert b.owned() == {"payouts"}
        a.release("deal-feed")  # one release frees it (the lock was taken once)
        assert a.owned() == frozenset()
        assert b.acquire("deal-feed")
        b.close()
        assert b.owned() == frozenset()
        assert a.acquire("deal-feed")  # a closed session's locks are free at once
        assert a.acquire("payouts")
        assert not b.acquire("payouts")  # closed: takes nothing, as a dead worker
    finally:
        a.close()
        b.close()


def test_a_terminated_session_holds_nothing_and_another_worker_takes_over(
    pg_dsn: str,
) -> None:
    a = PostgresLeases(pg_dsn, worker_id="a")
    b = PostgresLeases(pg_dsn, worker_id="b")
    try:
        assert a.acquire("deal-feed")
        assert not b.acquire("deal-feed")
        terminate(pg_dsn, "a")
        assert wait_for(lambda: b.acquire("deal-feed"), 15)
        # The holder learns it at once (the server's goodbye), not at the next timed check.
        assert a.owned() == frozenset()
        assert not a.acquire("deal-feed")  # a new session of its own, competing again
        assert a.acquire("payouts")
        assert a.owned() == {"payouts"}
    finally:
        a.close()
        b.close()


def test_a_silently_dead_connection_is_found_by_the_timed_check(pg_dsn: str) -> None:
    a = PostgresLeases(pg_dsn, worker_id="a", check_every=0)
    try:
        assert a.acquire("deal-feed")
        conn = a._conn
        assert conn is not None
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, conn.fileno())  # the socket gone under libpq, no goodbye read (the fd
        os.close(null)  # number stays taken, so libpq's own close later closes nobody else's)
        assert a.owned() == frozenset()
    finally:
        a.close()


def test_bad_arguments_and_an_unreachable_server_are_typed_errors() -> None:
    with pytest.raises(ValidationError):
        PostgresLeases("", worker_id="a")
    with pytest.raises(ValidationError):
        PostgresLeases("postgresql://x", worker_id="two words")
    with pytest.raises(StoreError) as caught:
        PostgresLeases(
            "postgresql://postgres:s3cret@127.0.0.1:1/nope", worker_id="a", connect_timeout=1
        )
    assert "s3cret" not in str(caught.value)


def _intervals(trace: Path, killed_at: float | None) -> dict[str, list[tuple[float, float]]]:
    """Per policy, when this worker was inside a handler (an unfinished one runs to the kill)."""
    out: dict[str, list[tuple[float, float]]] = {p: [] for p in POLICIES}
    started: dict[str, float] = {}
    for line in trace.read_text().splitlines():
        kind, policy, _, at = line.split()
        if kind == "start":
            started[policy] = float(at)
        elif kind == "end":
            out[policy].append((started.pop(policy), float(at)))
    for policy, since in started.items():
        assert killed_at is not None, "a live worker left a handler unfinished"
        out[policy].append((since, killed_at))
    return out


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
def test_two_worker_processes_kill_9_the_owner_the_other_resumes_each_event_once(
    pg_dsn: str, tmp_path: Path, where: str
) -> None:
    log = pg_dsn if where == "postgres" else str(tmp_path / "log.sqlite")
    repo = repository(where, log)
    assert (type(repo.store).__name__ == "PostgresEventStore") == (where == "postgres")
    upstream: list[int] = []
    for n in range(150):
        till = repo.load(Till, "a") or Till.blank("a")
        with UnitOfWork(repo, META) as uow:
            if not till.version:
                till = uow.record(till, *till.open("USD", "Ana"))
            uow.record(till, *till.pay_in(Money.of(n + 1, "USD")))
            uow.commit()
        upstream.append(repo.store.last_position())
    traces = {w: tmp_path / f"{w}.trace" for w in ("a", "b")}
    hold = tmp_path / "hold-a"  # while it exists, worker a waits inside its next handler

    def start(worker: str) -> subprocess.Popen[bytes]:
        command = ["-m", "tests.lease_worker", where, log, pg_dsn, worker, str(traces[worker])]
        if worker == "a":
            command.append(str(hold))
        return subprocess.Popen([sys.executable, *command], cwd=ROOT)

    def handled(worker: str) -> int:
        trace = traces[worker]
        return trace.read_text().count("end ") if trace.exists() else 0

    a = start("a")
    b: subprocess.Popen[bytes] | None = None
    try:
        assert wait_for(lambda: handled("a") >= 20, 30), "worker a handled nothing"
        hold.touch()  # a stops mid-handler, however slow b is to start
        b = start("b")
        assert wait_for(
            lambda: "ready" in (traces["b"].read_text() if traces["b"].exists() else ""), 60
        )
        time.sleep(0.3)  # b polls meanwhile: a holds both policies, so b handles nothing
        assert handled("b") == 0
        assert handled("a") < 2 * len(upstream) - 20, "a finished before the kill"
        killed_at = time.time()  # (before the kill: b cannot start a handler before it)
        a.send_signal(signal.SIGKILL)
        a.wait(5)

        def done() -> bool:
            repo.forget()
            return all(
                (t := repo.load(PolicyTracker, p)) is not None and t.position >= upstream[-1]
                for p in POLICIES
            )

        assert wait_for(done, 60), "worker b did not take the policies over"
        b.send_signal(signal.SIGTERM)
        assert b.wait(10) == 0
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert handled("b") > 0
    # Each upstream event handled exactly once per policy, across both workers.
    marks = [
        e
        for e in (repo.codec.decode(s).event for s in iter_all(repo.store))
        if isinstance(e, Handled)
    ]
    close = getattr(repo.store, "close", None)
    if close is not None:
        close()
    for policy in POLICIES:
        count = Counter(m.upstream for m in marks if m.policy == policy)
        assert sorted(count) == upstream
        assert set(count.values()) == {1}
    by = Counter(m.worker for m in marks)
    assert by["a"] > 0
    assert by["b"] > 0
    # Never two workers inside one policy's handler at once.
    spans_a, spans_b = _intervals(traces["a"], killed_at), _intervals(traces["b"], None)
    for policy in POLICIES:
        for a_start, a_end in spans_a[policy]:
            for b_start, b_end in spans_b[policy]:
                assert a_end <= b_start or b_end <= a_start, f"{policy} handled at once"


def test_a_runner_whose_session_is_terminated_mid_handler_commits_nothing(
    pg_dsn: str, tmp_path: Path
) -> None:
    repo = repository("sqlite", str(tmp_path / "log.sqlite"))
    pay_in(repo, "a", 5)
    a = PostgresLeases(pg_dsn, worker_id="a")  # checks every second: the goodbye is seen first
    b = PostgresLeases(pg_dsn, worker_id="b")
    calls: list[str] = []

    def lose_then_mirror(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        calls.append(recorded.stream_id)
        if len(calls) == 1:
            terminate(pg_dsn, "a")
            assert wait_for(lambda: b.acquire("mirror"), 15)
        mirror(recorded, uow)

    policy = Policy("mirror", (CashPaidIn,), lose_then_mirror)
    try:
        assert PolicyRunner(repo, [policy], leases=a).run() == 0
        assert mirrored(repo, "a") is None
        assert PolicyRunner(repo, [policy], leases=b).run() == 2
        assert mirrored(repo, "a") == Money.of(5, "USD")
        assert calls == ["till-a", "till-a", "till-a-mirror"]
    finally:
        a.close()
        b.close()
