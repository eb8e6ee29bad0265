"""The shared contract suites. An adapter is done when it passes the same suite as ours."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.events.store import (
    CheckpointStore,
    EventStore,
    NewEvent,
    Snapshot,
    SnapshotStore,
    StreamAppend,
)
from fxcrm_core.kernel.clock import FixedClock
from fxcrm_core.kernel.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    ValidationError,
)
from fxcrm_core.privacy.keys import KeyStore, WrappedKey
from fxcrm_core.testing import _workers

__all__ = [
    "CheckpointStoreContract",
    "EventStoreContract",
    "KeyStoreContract",
    "SharedEventStoreContract",
    "SnapshotStoreContract",
]

T0 = datetime(2026, 3, 8, 20, 59, 59, 123456, tzinfo=UTC)


def _ev(n: int, kind: str = "Happened") -> NewEvent:
    return NewEvent(kind, f'{{"n":{n}}}'.encode(), b'{"a":"test"}')


_payloads = st.binary(min_size=0, max_size=64)
_new_events = st.builds(NewEvent, st.sampled_from(["A", "B", "Ünïcode"]), _payloads, _payloads)


class EventStoreContract:
    """Subclass and implement :meth:`make_store`; every ``test_*`` here then runs on it.

    A store that several processes share (a file, a server) should use
    :class:`SharedEventStoreContract` instead, which adds the cross-process tests.
    """

    clock: FixedClock

    def make_store(self, directory: Path, clock: FixedClock) -> EventStore:
        raise NotImplementedError

    def close_store(self, store: EventStore) -> None:
        close = getattr(store, "close", None)
        if callable(close):
            close()

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        self.clock = FixedClock(T0)
        made = self.make_store(tmp_path, self.clock)
        yield made
        self.close_store(made)

    # -- basic reading and writing ----------------------------------------------------------
    def test_append_then_read_stream(self, store: EventStore) -> None:
        result = store.append(StreamAppend("s-1", 0, [_ev(1), _ev(2)]))
        assert result.versions == {"s-1": 2}
        assert not result.replayed
        events = store.read_stream("s-1")
        assert [(e.stream_id, e.version) for e in events] == [("s-1", 1), ("s-1", 2)]
        assert [e.data for e in events] == [_ev(1).data, _ev(2).data]
        assert [e.metadata for e in events] == [b'{"a":"test"}'] * 2
        assert all(
            e.recorded_at == T0 and e.recorded_at.utcoffset() == timedelta(0) for e in events
        )
        assert events[0].position < events[1].position == result.last_position

    def test_read_stream_after_version_and_unknown_stream(self, store: EventStore) -> None:
        store.append(StreamAppend("s-1", 0, [_ev(i) for i in range(5)]))
        assert [e.version for e in store.read_stream("s-1", after_version=3)] == [4, 5]
        assert store.read_stream("nope") == []
        assert store.stream_version("nope") == 0
        assert store.stream_version("s-1") == 5

    def test_positions_are_gapless_and_ordered_across_streams(self, store: EventStore) -> None:
        store.append(StreamAppend("a", 0, [_ev(1)]))
        store.append(StreamAppend("b", 0, [_ev(2), _ev(3)]), StreamAppend("c", 0, [_ev(4)]))
        store.append(StreamAppend("a", 1, [_ev(5)]))
        everything = store.read_all()
        assert [e.position for e in everything] == list(range(1, 6))
        assert [e.data for e in everything] == [_ev(n).data for n in range(1, 6)]
        assert store.last_position() == 5
        assert [e.position for e in store.read_all(after_position=2, limit=2)] == [3, 4]
        assert store.read_all(after_position=5) == []

    def test_empty_store(self, store: EventStore) -> None:
        assert store.last_position() == 0
        assert store.read_all() == []

    def test_recorded_at_comes_from_the_clock(self, store: EventStore) -> None:
        store.append(StreamAppend("s", 0, [_ev(1)]))
        self.clock.advance(hours=1)
        store.append(StreamAppend("s", 1, [_ev(2)]))
        first, second = store.read_stream("s")
        assert second.recorded_at - first.recorded_at == timedelta(hours=1)

    # -- optimistic concurrency --------------------------------------------------------------
    @pytest.mark.parametrize("expected", [0, 1, 3])
    def test_wrong_expected_version_writes_nothing(self, store: EventStore, expected: int) -> None:
        store.append(StreamAppend("s", 0, [_ev(1), _ev(2)]))
        with pytest.raises(ConcurrencyError):
            store.append(StreamAppend("s", expected, [_ev(3)]))
        assert store.stream_version("s") == 2
        assert store.last_position() == 2

    def test_conflict_in_one_stream_writes_no_stream(self, store: EventStore) -> None:
        store.append(StreamAppend("taken", 0, [_ev(1)]))
        with pytest.raises(ConcurrencyError):
            store.append(
                StreamAppend("fresh", 0, [_ev(2), _ev(3)]),
                StreamAppend("taken", 0, [_ev(4)]),
            )
        assert store.read_stream("fresh") == []
        assert store.last_position() == 1

    def test_no_expected_version_appends_at_the_end(self, store: EventStore) -> None:
        store.append(StreamAppend("audit", None, [_ev(1)]))
        result = store.append(StreamAppend("audit", None, [_ev(2)]))
        assert result.versions == {"audit": 2}

    # -- idempotency ---------------------------------------------------------------------
    def test_same_key_same_content_returns_the_first_result(self, store: EventStore) -> None:
        first = store.append(StreamAppend("s", 0, [_ev(1)]), idempotency_key="psp:1")
        again = store.append(StreamAppend("s", 1, [_ev(1)]), idempotency_key="psp:1")
        assert again.replayed
        assert (again.last_position, dict(again.versions)) == (
            first.last_position,
            dict(first.versions),
        )
        assert store.last_position() == 1

    def test_same_key_other_content_is_a_conflict(self, store: EventStore) -> None:
        store.append(StreamAppend("s", 0, [_ev(1)]), idempotency_key="psp:1")
        with pytest.raises(IdempotencyConflictError):
            store.append(StreamAppend("s", 1, [_ev(2)]), idempotency_key="psp:1")
        assert store.last_position() == 1

    def test_a_failed_append_does_not_consume_its_key(self, store: EventStore) -> None:
        store.append(StreamAppend("s", 0, [_ev(1)]))
        with pytest.raises(ConcurrencyError):
            store.append(StreamAppend("s", 0, [_ev(2)]), idempotency_key="k")
        result = store.append(StreamAppend("s", 1, [_ev(2)]), idempotency_key="k")
        assert not result.replayed
        assert store.stream_version("s") == 2

    # -- bad input ---------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "appends",
        [
            (),
            (StreamAppend("s", 0, []),),
            (StreamAppend("s", -1, [_ev(1)]),),
            (StreamAppend("", 0, [_ev(1)]),),
            (StreamAppend("s", 0, [_ev(1)]), StreamAppend("s", 1, [_ev(2)])),
            # What some adapter cannot hold is refused by all (a log moves between them).
            (StreamAppend("a\x00b", 0, [_ev(1)]),),
            (StreamAppend("a\ud800b", 0, [_ev(1)]),),
            (StreamAppend("s" * 513, 0, [_ev(1)]),),
            (StreamAppend("s", 0, [NewEvent("A\x00", b"{}", b"{}")]),),
            (StreamAppend("s", 0, [NewEvent("A\udfff", b"{}", b"{}")]),),
            (StreamAppend("s", 0, [NewEvent("", b"{}", b"{}")]),),
        ],
        ids=[
            "nothing",
            "no-events",
            "negative-version",
            "empty-id",
            "same-stream-twice",
            "nul-in-id",
            "surrogate-in-id",
            "id-too-long",
            "nul-in-type",
            "surrogate-in-type",
            "empty-type",
        ],
    )
    def test_bad_appends_are_refused(
        self, store: EventStore, appends: tuple[StreamAppend, ...]
    ) -> None:
        with pytest.raises(ValidationError):
            store.append(*appends)
        assert store.last_position() == 0

    # -- laws --------------------------------------------------------------------------------
    @settings(
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
        deadline=None,
    )
    @given(batches=st.lists(st.lists(_new_events, min_size=1, max_size=4), max_size=6))
    def test_what_is_read_is_what_was_written(
        self, store: EventStore, batches: list[list[NewEvent]]
    ) -> None:
        start = store.last_position()
        stream = f"law-{start}-{len(batches)}"
        for i, batch in enumerate(batches):
            store.append(StreamAppend(stream, sum(map(len, batches[:i])), batch))
        written = [e for batch in batches for e in batch]
        read = store.read_stream(stream)
        assert [NewEvent(e.event_type, e.data, e.metadata) for e in read] == written
        assert [e.version for e in read] == list(range(1, len(written) + 1))
        tail = store.read_all(after_position=start, limit=10_000)
        assert [e.position for e in tail] == list(range(start + 1, start + len(written) + 1))

    # -- concurrency: threads ------------------------------------------------------------------
    def test_racing_threads_exactly_one_wins(self, store: EventStore) -> None:
        writers = 6
        barrier = threading.Barrier(writers)
        outcomes: list[str] = []
        lock = threading.Lock()

        def write(n: int) -> None:
            barrier.wait()
            try:
                store.append(StreamAppend("race", 0, [_ev(n), _ev(n)]))
                result = f"won:{n}"
            except ConcurrencyError:
                result = "conflict"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o.startswith("won")]
        assert len(winners) == 1
        assert outcomes.count("conflict") == writers - 1
        winner = int(winners[0].split(":")[1])
        assert [e.data for e in store.read_stream("race")] == [_ev(winner).data] * 2
        assert store.last_position() == 2

    def test_threads_retrying_on_conflict_lose_nothing(self, store: EventStore) -> None:
        per_thread, writers = 15, 4

        def write(n: int) -> None:
            for i in range(per_thread):
                while True:
                    version = store.stream_version("counter")
                    try:
                        store.append(
                            StreamAppend("counter", version, [_ev(n * 1000 + i)]),
                            StreamAppend(f"own-{n}", i, [_ev(i)]),
                        )
                        break
                    except ConcurrencyError:
                        continue

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.stream_version("counter") == per_thread * writers
        assert all(store.stream_version(f"own-{n}") == per_thread for n in range(writers))
        positions = [e.position for e in store.read_all(limit=10_000)]
        assert positions == list(range(1, 2 * per_thread * writers + 1))


class SharedEventStoreContract(EventStoreContract):
    """The contract for stores shared by processes: also implement :meth:`opener`."""

    def opener(self, directory: Path) -> Callable[[], EventStore]:
        """A picklable zero-argument callable opening the store made in ``directory``."""
        raise NotImplementedError

    def test_racing_processes_exactly_one_wins(self, store: EventStore, tmp_path: Path) -> None:
        opener = self.opener(tmp_path)
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        results: multiprocessing.Queue[str] = ctx.Queue()
        procs = [
            ctx.Process(target=_workers.race, args=(opener, barrier, results, name))
            for name in ("p1", "p2")
        ]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert [o.split(":")[0] for o in outcomes] == ["conflict", "won"]
        winner = next(o for o in outcomes if o.startswith("won")).split(":")[1]
        assert [e.data for e in store.read_stream("race-1")] == [winner.encode()] * 2
        assert store.last_position() == 2

    @pytest.mark.parametrize("payload_size", [10, 200_000])
    def test_killed_writer_leaves_no_partial_command(
        self, store: EventStore, tmp_path: Path, payload_size: int
    ) -> None:
        opener = self.opener(tmp_path)
        ctx = multiprocessing.get_context("spawn")
        started = ctx.Event()
        proc = ctx.Process(target=_workers.command_loop, args=(opener, started, payload_size))
        proc.start()
        assert started.wait(timeout=60), "the writer process never got going"
        time.sleep(0.05)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        events = store.read_all(limit=10_000_000)
        commands: dict[str, int] = {}
        for e in events:
            n = e.stream_id.rsplit("-", 1)[1]
            commands[n] = commands.get(n, 0) + 1
        assert len(commands) >= 5
        # Every command that landed landed whole: 3 events on one stream, 2 on the other.
        assert set(commands.values()) == {5}
        assert sorted(int(n) for n in commands) == list(range(len(commands)))
        # And the store takes writes afterwards.
        store.append(StreamAppend("after-crash", 0, [_ev(1)]))
        assert store.stream_version("after-crash") == 1


class CheckpointStoreContract:
    def make_checkpoints(self, directory: Path) -> CheckpointStore:
        raise NotImplementedError

    def test_unknown_checkpoint_is_zero_and_set_is_read_back(self, tmp_path: Path) -> None:
        checkpoints = self.make_checkpoints(tmp_path)
        assert checkpoints.get_checkpoint("balances") == 0
        checkpoints.set_checkpoint("balances", 42)
        checkpoints.set_checkpoint("other", 7)
        checkpoints.set_checkpoint("balances", 43)
        assert checkpoints.get_checkpoint("balances") == 43
        assert checkpoints.get_checkpoint("other") == 7


class SnapshotStoreContract:
    def make_snapshots(self, directory: Path) -> SnapshotStore:
        raise NotImplementedError

    def test_snapshot_round_trip_replace_and_delete(self, tmp_path: Path) -> None:
        snaps = self.make_snapshots(tmp_path)
        assert snaps.load_snapshot("w-1") is None
        snaps.save_snapshot(Snapshot("w-1", 3, b"\x00state"))
        snaps.save_snapshot(Snapshot("w-1", 5, b"newer"))
        assert snaps.load_snapshot("w-1") == Snapshot("w-1", 5, b"newer")
        snaps.delete_snapshot("w-1")
        assert snaps.load_snapshot("w-1") is None


class KeyStoreContract:
    """The contract of the privacy KeyStore port: implement :meth:`make_keystore`."""

    def make_keystore(self, directory: Path) -> KeyStore:
        raise NotImplementedError

    @staticmethod
    def _key(subject: str, key_id: str = "k1", wrapped: bytes = b"wrapped-1") -> WrappedKey:
        return WrappedKey(subject, key_id, "m1", wrapped, T0)

    def test_put_new_keeps_the_first_key(self, tmp_path: Path) -> None:
        ks = self.make_keystore(tmp_path)
        assert ks.get("c-1") is None
        first = ks.put_new(self._key("c-1"))
        again = ks.put_new(self._key("c-1", "k2", b"other"))
        assert first == again == ks.get("c-1")
        assert (first.key_id, first.wrapped, first.created_at) == ("k1", b"wrapped-1", T0)

    def test_destroy_leaves_a_tombstone_without_key_bytes(self, tmp_path: Path) -> None:
        ks = self.make_keystore(tmp_path)
        ks.put_new(self._key("c-1"))
        later = T0 + timedelta(days=1)
        assert ks.destroy("c-1", later) is True
        assert ks.destroy("c-1", later) is False
        tomb = ks.get("c-1")
        assert tomb is not None
        assert tomb.destroyed_at == later
        assert tomb.wrapped == b""
        assert ks.put_new(self._key("c-1", "k9")) == tomb  # no silent new key after erasure
        assert ks.destroy("never-had-one", later) is True
        ghost = ks.get("never-had-one")
        assert ghost is not None
        assert ghost.destroyed

    def test_rewrap_is_all_or_nothing_and_only_for_live_keys(self, tmp_path: Path) -> None:
        ks = self.make_keystore(tmp_path)
        ks.put_new(self._key("a"))
        ks.put_new(self._key("b"))
        ks.destroy("b", T0)
        with pytest.raises(ValidationError):
            ks.rewrap(
                [WrappedKey("a", "k1", "m2", b"new-a", T0), WrappedKey("b", "k1", "m2", b"x", T0)]
            )
        assert ks.get("a") == self._key("a")
        ks.rewrap([WrappedKey("a", "k1", "m2", b"new-a", T0)])
        got = ks.get("a")
        assert got is not None
        assert (got.master_key_id, got.wrapped) == ("m2", b"new-a")
        assert sorted(k.subject_id for k in ks.all_keys()) == ["a", "b"]
