"""Leases: which worker owns a named job (a policy) right now, so that with several worker
processes each job runs in one of them at a time and a dead worker's jobs pass to a live one.

A lease is an optimisation and a tidiness, not the guard of correctness: a policy's output and
its position are still committed together under an optimistic version check, so even two owners
at once (a lease lost and taken over while its old holder was committing) never apply one
upstream event twice. ``LocalLeases`` is the in-process adapter (one process, tests); the
PostgreSQL one holds session advisory locks (``stores.postgres.PostgresLeases``).
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from fxcrm_core.kernel.errors import ValidationError

__all__ = ["Leases", "LocalLeases"]


@runtime_checkable
class Leases(Protocol):
    """The worker's hold on named jobs. ``acquire`` tries once and never waits; holding a name
    already, it answers True again; once closed, False (it may raise StoreError when its store
    cannot be reached). ``owned`` says which names are still held: after a lost connection (or
    ``close``) none are, even if nobody released them explicitly."""

    def acquire(self, name: str) -> bool: ...

    def release(self, name: str) -> None: ...

    def owned(self) -> frozenset[str]: ...

    def close(self) -> None: ...


def check_name(name: object) -> str:
    """A lease name: a non-empty string of up to 200 characters."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValidationError("a lease is named by a non-empty string of up to 200 characters")
    return name


class _Table:
    """The leases of one process: a lock per name, created on first use."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.locks: dict[str, threading.Lock] = {}

    def lock(self, name: str) -> threading.Lock:
        with self.guard:
            lock = self.locks.get(name)
            if lock is None:
                lock = self.locks[name] = threading.Lock()
            return lock


class LocalLeases:
    """Leases within one process. ``LocalLeases()`` starts a table of its own; :meth:`peer`
    gives another holder on the same table (a second worker competing for the same jobs).
    ``close`` lets go of everything held, as a worker's death would."""

    def __init__(self, _table: _Table | None = None) -> None:
        self._table = _table if _table is not None else _Table()
        self._held: set[str] = set()
        self._mine = threading.Lock()
        self._closed = False

    def peer(self) -> LocalLeases:
        """Another holder competing for the same names."""
        return LocalLeases(self._table)

    def acquire(self, name: str) -> bool:
        check_name(name)
        with self._mine:
            if self._closed:
                return False
            if name in self._held:
                return True
            if not self._table.lock(name).acquire(blocking=False):
                return False
            self._held.add(name)
            return True

    def release(self, name: str) -> None:
        check_name(name)
        with self._mine:
            if name in self._held:
                self._held.discard(name)
                self._table.lock(name).release()

    def owned(self) -> frozenset[str]:
        with self._mine:
            return frozenset(self._held)

    def close(self) -> None:
        with self._mine:
            self._closed = True
            for name in self._held:
                self._table.lock(name).release()
            self._held.clear()
