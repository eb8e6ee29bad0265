"""The unit of work: all that one command records is committed in one atomic append, or nothing."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

import attrs

from fxcrm_core.events.aggregate import Aggregate
from fxcrm_core.events.event import DomainEvent, EventMetadata
from fxcrm_core.events.repository import Repository
from fxcrm_core.events.store import AppendResult, StreamAppend
from fxcrm_core.kernel.errors import ConcurrencyError, FxCrmError, ValidationError

__all__ = ["UnitOfWork"]

A = TypeVar("A", bound=Aggregate)


@attrs.define
class _Pending:
    expected_version: int
    state: Aggregate
    events: list[DomainEvent]


class UnitOfWork:
    """Collects the events of one command across aggregates and commits them together.

    Typical use (see docs/events.md for a runnable version)::

        with UnitOfWork(repository, EventMetadata(actor="staff:7")) as uow:
            wallet = uow.record(wallet, Deposited(...))
            uow.commit(idempotency_key="psp:abc")

    Leaving the ``with`` block without :meth:`commit` (or by an exception) discards everything.
    """

    def __init__(self, repository: Repository, metadata: EventMetadata) -> None:
        self.repository = repository
        self.metadata = metadata
        self._pending: dict[str, _Pending] = {}
        self._done = False

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pending.clear()
        self._done = True

    def load(self, cls: type[A], aggregate_id: str) -> A | None:
        """The aggregate as this unit would commit it: its staged state, else the stored one."""
        staged = self._pending.get(cls.stream_id_for(aggregate_id))
        if staged is not None and isinstance(staged.state, cls):
            return staged.state
        return self.repository.load(cls, aggregate_id)

    def get(self, cls: type[A], aggregate_id: str) -> A:
        staged = self._pending.get(cls.stream_id_for(aggregate_id))
        if staged is not None and isinstance(staged.state, cls):
            return staged.state
        return self.repository.get(cls, aggregate_id)

    def staged_on(self, stream_id: str) -> list[tuple[int, DomainEvent]]:
        """The events this unit has staged on a stream so far, each with the version it will
        have once committed (a policy turning decisions it just recorded into others)."""
        pending = self._pending.get(stream_id)
        if pending is None:
            return []
        first = pending.expected_version + 1
        return [(first + i, event) for i, event in enumerate(pending.events)]

    @property
    def staged(self) -> bool:
        """True once something is recorded and not yet committed."""
        return bool(self._pending)

    def record(self, aggregate: A, *events: DomainEvent) -> A:
        """Apply ``events`` to ``aggregate``, stage them, and return the new state."""
        if self._done:
            raise FxCrmError("this unit of work is closed")
        if not events:
            raise ValidationError("record needs at least one event")
        new_state = aggregate.fold(events)
        stream_id = aggregate.stream_id
        pending = self._pending.get(stream_id)
        if pending is None:
            self._pending[stream_id] = _Pending(aggregate.version, new_state, list(events))
            return new_state
        if pending.state.version != aggregate.version:
            raise ConcurrencyError("record was given a stale state of an aggregate in this unit")
        pending.events.extend(events)
        pending.state = new_state
        return new_state

    def commit(self, *, idempotency_key: str | None = None) -> AppendResult:
        """Append every staged event in one atomic call; the unit is closed afterwards."""
        if self._done:
            raise FxCrmError("this unit of work is closed")
        self._done = True
        if not self._pending:
            raise ValidationError("nothing to commit")
        repository = self.repository
        encode = repository.codec._encode_stream
        metadata = self.metadata
        appends = []
        # The append gives these states their versions, so the repository need not read them
        # back; states built from PII are left out (they are read, and cached, on demand).
        states = []
        for stream_id, p in self._pending.items():
            encoded, pii = encode(stream_id, p.events, metadata)
            appends.append(StreamAppend(stream_id, p.expected_version, encoded))
            if not pii:
                states.append((stream_id, p.state))
        self._pending.clear()
        result = repository.store.append(*appends, idempotency_key=idempotency_key)
        if not result.replayed:
            repository._remember(states)
        repository.committed(result)
        return result
