"""Repositories load aggregates by replaying their stream (from a snapshot if one is kept)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TypeVar

from fxcrm_core.events.aggregate import Aggregate
from fxcrm_core.events.codec import EventCodec
from fxcrm_core.events.store import AppendResult, EventStore, Snapshot, SnapshotStore
from fxcrm_core.kernel.errors import NotFoundError

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)


class Repository:
    """Reads aggregates of any type from one event store.

    With a snapshot store, ``load`` starts from the newest snapshot and replays only what came
    after it. Snapshots are a cache: deleting them changes nothing but speed.

    States are immutable, so the repository also keeps the last state it saw of up to
    ``cache_size`` streams and, next time, reads only the events after it: the store stays the
    source of truth (a newer event written by anyone is always read), replay cost stays flat.
    """

    def __init__(
        self,
        store: EventStore,
        codec: EventCodec,
        snapshots: SnapshotStore | None = None,
        *,
        cache_size: int = 10_000,
    ) -> None:
        self.store = store
        self.codec = codec
        self.snapshots = snapshots
        self._cache: OrderedDict[str, Aggregate] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._listeners: list[Callable[[AppendResult], None]] = []

    def on_commit(self, listener: Callable[[AppendResult], None]) -> None:
        """Call ``listener`` after every unit of work committed through this repository (the
        broker runs its policies inline this way)."""
        self._listeners.append(listener)

    def committed(self, result: AppendResult) -> None:
        for listener in self._listeners:
            listener(result)

    def load(self, cls: type[A], aggregate_id: str) -> A | None:
        """The current state, or None if the aggregate has no events."""
        stream_id = cls.stream_id_for(aggregate_id)
        cached = self._cache.get(stream_id) if self._cache_size else None
        if isinstance(cached, cls):
            state: A = cached
        else:
            state = self._from_snapshot(cls, stream_id) or cls.blank(aggregate_id)
        stored = self.store.read_stream(stream_id, after_version=state.version)
        if not stored and state.version == 0:
            return None
        decode = self.codec.decode_event
        state = state.fold(decode(s.stream_id, s.event_type, s.data) for s in stored)
        self._remember(((stream_id, state),))
        return state

    def _cached(self, cls: type[A], aggregate_id: str) -> A | None:
        """The state this repository last loaded or committed, read from nothing: it may be
        behind another writer's events. Only for a caller whose append names that state's
        version (so a newer event makes the append fail) and who then forgets and reloads (the
        policy runner does, on a conflict)."""
        cached = self._cache.get(cls.stream_id_for(aggregate_id)) if self._cache_size else None
        return cached if isinstance(cached, cls) else None

    def remember(self, states: Iterable[Aggregate]) -> None:
        """Keep states known to be current at their version (just loaded, or just committed)."""
        self._remember((state.stream_id, state) for state in states)

    def _remember(self, streams: Iterable[tuple[str, Aggregate]]) -> None:
        """:meth:`remember` for states whose stream ids the caller holds already."""
        if not self._cache_size:
            return
        cache = self._cache
        with self._lock:
            for stream_id, state in streams:
                cache[stream_id] = state
                cache.move_to_end(stream_id)
            # (OrderedDict: a plain dict's first key is found by skipping every key removed
            # before it, so evicting from the front of one grows slower and slower.)
            while len(cache) > self._cache_size:
                cache.popitem(last=False)

    def forget(self, stream_id: str | None = None) -> None:
        """Drop cached states (all, or one stream): after an erasure, for instance."""
        with self._lock:
            if stream_id is None:
                self._cache.clear()
            else:
                self._cache.pop(stream_id, None)

    def get(self, cls: type[A], aggregate_id: str) -> A:
        """Like :meth:`load` but raises NotFoundError when the aggregate does not exist."""
        found = self.load(cls, aggregate_id)
        if found is None:
            raise NotFoundError(f"no {cls.__name__} with that id")
        return found

    def snapshot(self, aggregate: Aggregate) -> None:
        """Store the aggregate's state as a snapshot (needs a snapshot store)."""
        if self.snapshots is None:
            return
        data = self.codec.encode_state(aggregate)
        self.snapshots.save_snapshot(Snapshot(aggregate.stream_id, aggregate.version, data))

    def _from_snapshot(self, cls: type[A], stream_id: str) -> A | None:
        if self.snapshots is None:
            return None
        snap = self.snapshots.load_snapshot(stream_id)
        if snap is None:
            return None
        state = self.codec.decode_state(cls, snap.state)
        return state if state.version == snap.version else None
