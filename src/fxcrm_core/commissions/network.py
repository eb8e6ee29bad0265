"""The IB tree kept in the event log: registrations, re-parentings and client attributions are
recorded events (who, when, why), so the tree after a restart, or seen from a second process, is
the tree every command was checked against.

How it holds together. The whole tree is one consistency boundary: a cycle, the depth cap and a
change's time order depend on every IB, so every change goes to one stream, ``ibnetwork-main``
(the :class:`IbNetwork` aggregate). That aggregate's state is only its version. The tree itself
is a read model, :class:`IbTreeView`, that puts each recorded event back into a mutable
:class:`~fxcrm_core.commissions.IbTree` (one tree, changed in place: rebuilding an immutable tree
per event would cost a copy per change for nothing). :class:`IbNetworkService` reads the
stream's new events into the view before every command and every answer (one indexed read of
one stream, not of the whole log), checks the command against the view's tree, and appends the
event expecting the stream version the view has seen. A change committed meanwhile by another
process makes that append fail with ConcurrencyError, and nothing is written; the next command
reads that change first. Recorded events are put back without checking the tree's rules again
(they held when the event was recorded), so a depth cap lowered later never makes the log
unreadable.

Ranks are recorded on the same stream (:class:`IbRankChanged`, by hand through
:meth:`IbNetworkService.change_rank`; rules such as the loyalty issue's stage the same event
through :meth:`IbNetworkService.stage` in their own unit of work), so "the rank as of T" is one
more question of the view, and a rank-based distribution reads recorded ranks
(:meth:`IbNetworkService.ranks_at`, or ``IbTree.rank`` on the live tree).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Self

import attrs

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.commissions.tree import IbTree, check_id, check_rank, check_time
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import FxCrmError, NotFoundError, ValidationError

__all__ = [
    "IB_NETWORK_EVENTS",
    "ClientAttributed",
    "IbNetwork",
    "IbNetworkService",
    "IbNetworkEvent",
    "IbRankChanged",
    "IbRegistered",
    "IbReparented",
    "IbTreeAt",
    "IbTreeView",
]

MANAGE = "ib.manage"
RANK = "ib.rank"  # changing an IB's rank by hand


@attrs.frozen
class IbRegistered(DomainEvent):
    """An IB joined the tree under ``parent_id`` (None: a master IB) from ``effective_at`` on;
    ``own_client_id`` is its own client record, which may never be attributed to it."""

    ib_id: str
    parent_id: str | None
    effective_at: datetime
    own_client_id: str | None = None


@attrs.frozen
class IbReparented(DomainEvent):
    """An IB moved under ``parent_id`` (None: to the top) from ``effective_at`` on."""

    ib_id: str
    parent_id: str | None
    effective_at: datetime


@attrs.frozen
class ClientAttributed(DomainEvent):
    """A client comes through ``ib_id`` (None: the client became direct) from ``effective_at``
    on."""

    client_id: str
    ib_id: str | None
    effective_at: datetime


@attrs.frozen
class IbRankChanged(DomainEvent):
    """The IB holds ``rank`` from ``effective_at`` on (0 until its first change)."""

    ib_id: str
    rank: int
    effective_at: datetime


IB_NETWORK_EVENTS: tuple[type[DomainEvent], ...] = (
    IbRegistered,
    IbReparented,
    ClientAttributed,
    IbRankChanged,
)

IbNetworkEvent = IbRegistered | IbReparented | ClientAttributed | IbRankChanged
_CHANGES = (IbRegistered, IbReparented, ClientAttributed, IbRankChanged)


@attrs.frozen(kw_only=True)
class IbNetwork(Aggregate):
    """The stream every change of one IB tree goes to (id ``"main"`` by default): its version
    is what a command expects. The tree the rules are checked on is :class:`IbTreeView`."""

    category = "ibnetwork"

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, _CHANGES):
            return self
        raise ValidationError(f"IbNetwork cannot apply {type(event).__name__}")


def _replayed(tree: IbTree, event: IbNetworkEvent) -> None:
    if isinstance(event, IbRegistered):
        tree.restore_ib(
            event.ib_id, event.parent_id, event.effective_at, own_client_id=event.own_client_id
        )
    elif isinstance(event, IbReparented):
        tree.restore_parent(event.ib_id, event.parent_id, event.effective_at)
    elif isinstance(event, IbRankChanged):
        tree.restore_rank(event.ib_id, event.rank, event.effective_at)
    else:
        tree.restore_attribution(event.client_id, event.ib_id, event.effective_at)


class IbTreeView:
    """A memory read model: the tree folded from one network's stream, and each IB's and each
    client's recorded changes (with who, when and why) for history questions.

    It is a :class:`~fxcrm_core.events.Projection` too; it takes each version of its stream
    once, whoever feeds it, and ignores other streams.
    """

    name = "ib-network"
    event_types: frozenset[str] | None = frozenset(e.__name__ for e in IB_NETWORK_EVENTS)

    def __init__(self, *, max_depth: int = 6, network_id: str = "main") -> None:
        self.max_depth = _depth(max_depth)
        self.network_id = check_id(network_id, "a network id")
        self.stream_id = IbNetwork.stream_id_for(network_id)
        self.reset()

    def reset(self) -> None:
        self.tree = IbTree(max_depth=self.max_depth)
        self.version = 0
        self.changes: list[RecordedEvent[IbNetworkEvent]] = []
        self._of_ib: dict[str, list[RecordedEvent[IbNetworkEvent]]] = {}
        self._of_client: dict[str, list[RecordedEvent[IbNetworkEvent]]] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        if not isinstance(recorded, RecordedEvent):
            raise ValidationError("the IB tree takes recorded events")
        if recorded.stream_id != self.stream_id or recorded.version <= self.version:
            return
        if recorded.version != self.version + 1:
            raise FxCrmError("the IB tree's read model missed a change; rebuild it")
        event = recorded.event
        if not isinstance(event, _CHANGES):
            raise ValidationError(f"the IB tree cannot take {type(event).__name__}")
        _replayed(self.tree, event)
        change: RecordedEvent[IbNetworkEvent] = RecordedEvent(
            recorded.stream_id,
            recorded.version,
            recorded.position,
            recorded.recorded_at,
            event,
            recorded.metadata,
        )
        self.version = recorded.version
        self.changes.append(change)
        if isinstance(event, ClientAttributed):
            self._of_client.setdefault(event.client_id, []).append(change)
        else:
            self._of_ib.setdefault(event.ib_id, []).append(change)

    def history(self, ib_id: str) -> list[RecordedEvent[IbNetworkEvent]]:
        return list(self._of_ib.get(check_id(ib_id, "an IB id"), ()))

    def client_history(self, client_id: str) -> list[RecordedEvent[IbNetworkEvent]]:
        return list(self._of_client.get(check_id(client_id, "a client id"), ()))


@attrs.frozen
class IbTreeAt:
    """The tree as it stood at ``at``: each IB registered by then with its parent, each
    client attributed to an IB then (direct clients are left out), and each IB's rank then."""

    at: datetime
    parents: Mapping[str, str | None]
    clients: Mapping[str, str]
    ranks: Mapping[str, int] = attrs.field(factory=dict)

    def chain(self, ib_id: str) -> list[str]:
        """The IB and its ancestors up to its master."""
        if check_id(ib_id, "an IB id") not in self.parents:
            raise NotFoundError("no such IB at that time")
        out = [ib_id]
        while (up := self.parents[out[-1]]) is not None:
            out.append(up)
        return out

    def downline(self, ib_id: str) -> list[str]:
        """The clients who came through ``ib_id`` or an IB below it."""
        check_id(ib_id, "an IB id")
        return [c for c, ib in self.clients.items() if ib_id in self.chain(ib)]


class IbNetworkService:
    """Registers IBs, moves them and attributes clients, each change an event in the log; and
    answers questions about the tree from the log, read up to its end first (so a change made
    by another process is seen at once).

    Commands need the ``ib.manage`` permission and a reason; both go into the event's metadata
    with the actor. A refused change (TreeError, NotFoundError, ValidationError) writes nothing.

    Every method refuses arguments of the wrong kind with ValidationError before it reads or
    writes anything, and the message never holds the value: ids are non-empty ``str`` of
    printable characters (None where a method says so), times aware datetimes, reasons ``str``
    with more than blanks, the actor an :class:`~fxcrm_core.access.Actor`.
    """

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        *,
        clock: Clock | None = None,
        max_depth: int = 6,
        network_id: str = "main",
    ) -> None:
        self.repository, self.access, self.clock = service_parts(
            repository, access, clock, "the IB network"
        )
        self.view = IbTreeView(max_depth=max_depth, network_id=network_id)
        self._lock = threading.RLock()
        # Asked before a rank is set by hand (change_rank): raises when ranks may not be set
        # that way now (a host's rank rules own them; see fxcrm_core.loyalty.IbRanks).
        self.rank_guard: Callable[[str, datetime], None] | None = None

    # -- commands -------------------------------------------------------------------------------
    def register_ib(
        self,
        actor: Actor,
        ib_id: str,
        parent_id: str | None,
        at: datetime,
        own_client_id: str | None = None,
        *,
        reason: str,
    ) -> None:
        """Add an IB under ``parent_id`` (None: a master IB) from ``at`` on."""
        check_id(ib_id, "an IB id")
        _optional_id(parent_id, "a parent IB id")
        _optional_id(own_client_id, "a client id")
        when = self._allowed(actor, reason, at)

        def check(tree: IbTree) -> None:
            tree.check_add_ib(ib_id, parent_id, when, own_client_id=own_client_id)

        self._record(actor, reason, check, IbRegistered(ib_id, parent_id, when, own_client_id))

    def reparent(
        self, actor: Actor, ib_id: str, parent_id: str | None, at: datetime, *, reason: str
    ) -> None:
        """Move an IB under ``parent_id`` (None: to the top) from ``at`` on; deals made before
        keep the tree they were made under."""
        check_id(ib_id, "an IB id")
        _optional_id(parent_id, "a parent IB id")
        when = self._allowed(actor, reason, at)

        def check(tree: IbTree) -> None:
            tree.check_reparent(ib_id, parent_id, when)

        self._record(actor, reason, check, IbReparented(ib_id, parent_id, when))

    def attribute(
        self, actor: Actor, client_id: str, ib_id: str | None, at: datetime, *, reason: str
    ) -> None:
        """The client comes through ``ib_id`` (None: direct) from ``at`` on."""
        check_id(client_id, "a client id")
        _optional_id(ib_id, "an IB id")
        when = self._allowed(actor, reason, at)

        def check(tree: IbTree) -> None:
            tree.check_attribute(client_id, ib_id, when)

        self._record(actor, reason, check, ClientAttributed(client_id, ib_id, when))

    def change_rank(
        self, actor: Actor, ib_id: str, rank: int, at: datetime, *, reason: str
    ) -> None:
        """The IB holds ``rank`` from ``at`` on, set by hand (permission ``ib.rank``). Each
        IB's rank changes are recorded in time order, none before its registration."""
        check_id(ib_id, "an IB id")
        check_rank(rank)
        when = self._allowed(actor, reason, at, RANK)
        if self.rank_guard is not None:
            self.rank_guard(ib_id, when)

        def check(tree: IbTree) -> None:
            tree.check_rank(ib_id, rank, when)

        self._record(actor, reason, check, IbRankChanged(ib_id, rank, when))

    def stage(self, uow: UnitOfWork, change: IbNetworkEvent) -> None:
        """Check ``change`` against the tree as the log holds it now and stage it on the
        network's stream in ``uow``, expecting the version read: the change is committed with
        whatever else ``uow`` holds, all or nothing, or, if the tree changed meanwhile, not at
        all (ConcurrencyError). The entry point for changes decided elsewhere: an approved IB
        application (:mod:`fxcrm_core.commissions.applications`), rank rules of a policy.
        The actor and reason are ``uow``'s metadata; permissions are the caller's to check.
        One change per unit of work (a second one raises ConcurrencyError)."""
        if not isinstance(uow, UnitOfWork):
            raise ValidationError("a change of the IB tree is staged in a unit of work")
        if not isinstance(change, _CHANGES):
            raise ValidationError("that is not a change of the IB tree")
        # Stored in UTC, whatever zone the caller's time was in (a naive one is refused).
        change = attrs.evolve(change, effective_at=check_time(change.effective_at))
        with self._lock:
            self.catch_up()
            tree = self.view.tree
            if isinstance(change, IbRegistered):
                tree.check_add_ib(
                    change.ib_id,
                    change.parent_id,
                    change.effective_at,
                    own_client_id=change.own_client_id,
                )
            elif isinstance(change, IbReparented):
                tree.check_reparent(change.ib_id, change.parent_id, change.effective_at)
            elif isinstance(change, IbRankChanged):
                tree.check_rank(change.ib_id, change.rank, change.effective_at)
            else:
                tree.check_attribute(change.client_id, change.ib_id, change.effective_at)
            uow.record(IbNetwork(id=self.view.network_id, version=self.view.version), change)

    def stage_ranks(self, uow: UnitOfWork, changes: Sequence[IbRankChanged]) -> None:
        """Check rank changes against the tree as the log holds it now, and each IB's in time
        order among themselves, and stage them together on the network's stream in ``uow``
        (as :meth:`stage`: all or nothing, ConcurrencyError if the tree changed meanwhile)."""
        if not isinstance(uow, UnitOfWork):
            raise ValidationError("a change of the IB tree is staged in a unit of work")
        if not changes:
            return
        if not all(isinstance(c, IbRankChanged) for c in changes):
            raise ValidationError("only rank changes are staged together")
        changes = [attrs.evolve(c, effective_at=check_time(c.effective_at)) for c in changes]
        last: dict[str, datetime] = {}
        with self._lock:
            self.catch_up()
            tree = self.view.tree
            for change in changes:
                tree.check_rank(change.ib_id, change.rank, change.effective_at)
                if change.effective_at < last.get(change.ib_id, change.effective_at):
                    raise ValidationError("changes are recorded in time order")
                last[change.ib_id] = change.effective_at
            uow.record(IbNetwork(id=self.view.network_id, version=self.view.version), *changes)

    def _allowed(
        self, actor: Actor, reason: str, at: datetime, permission: str = MANAGE
    ) -> datetime:
        if not isinstance(actor, Actor):
            raise ValidationError("a change of the IB tree needs an actor")
        when = check_time(at)
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("a change of the IB tree needs a reason")
        self.access.require(actor, permission)
        return when

    def _record(
        self, actor: Actor, reason: str, check: Callable[[IbTree], None], event: DomainEvent
    ) -> None:
        with self._lock:
            self.catch_up()
            check(self.view.tree)
            # Expecting the version the view has seen: a change committed since by anyone
            # fails the append (ConcurrencyError), and nothing is written.
            network = IbNetwork(id=self.view.network_id, version=self.view.version)
            with UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason)) as uow:
                uow.record(network, event)
                uow.commit()
            self.catch_up()

    # -- reading the log ------------------------------------------------------------------------
    def catch_up(self) -> int:
        """Read the network's events recorded since the view last looked; returns how many."""
        with self._lock:
            view = self.view
            stored = self.repository.store.read_stream(view.stream_id, after_version=view.version)
            decode = self.repository.codec.decode
            for row in stored:
                view.handle(decode(row))
            return len(stored)

    @property
    def version(self) -> int:
        """How many changes the log holds (read up to its end first)."""
        with self._lock:
            self.catch_up()
            return self.view.version

    # -- questions ------------------------------------------------------------------------------
    def tree(self) -> IbTree:
        """The whole tree as the log holds it now: a copy, so changing it records nothing
        (ask again for later changes)."""
        with self._lock:
            self.catch_up()
            return self.view.tree.copy()

    def chain(self, ib_id: str, at: datetime) -> list[str]:
        """The IB and its ancestors up to its master, as of ``at``."""
        check_id(ib_id, "an IB id")
        when = check_time(at)
        with self._lock:
            self.catch_up()
            return self.view.tree.chain(ib_id, when)

    def ib_of(self, client_id: str, at: datetime) -> str | None:
        """The IB the client came through at ``at`` (None: direct, or not known then)."""
        check_id(client_id, "a client id")
        when = check_time(at)
        with self._lock:
            self.catch_up()
            return self.view.tree.ib_of(client_id, when)

    def in_downline(self, ib_id: str, client_id: str, at: datetime) -> bool:
        """True if the client came through ``ib_id`` or an IB below it, as of ``at``."""
        check_id(ib_id, "an IB id")
        check_id(client_id, "a client id")
        when = check_time(at)
        with self._lock:
            self.catch_up()
            return self.view.tree.in_downline(ib_id, client_id, when)

    def in_downline_now(self, ib_id: str, client_id: str) -> bool:
        """The IB row scope (``Relationships.in_downline``): :meth:`in_downline` at the clock's
        now, on every change committed so far by any process. Fails closed: False for an IB
        unknown; ids of the wrong kind raise ValidationError as everywhere (no access either)."""
        try:
            return self.in_downline(ib_id, client_id, self.clock.now())
        except NotFoundError:
            return False

    def history(self, ib_id: str) -> list[RecordedEvent[IbNetworkEvent]]:
        """The IB's registration, re-parentings and rank changes, oldest first, each with who
        recorded it, when and why (empty for an IB never registered)."""
        check_id(ib_id, "an IB id")
        with self._lock:
            self.catch_up()
            return self.view.history(ib_id)

    def rank_history(self, ib_id: str) -> list[RecordedEvent[IbRankChanged]]:
        """The IB's rank changes, oldest first, each with who recorded it, when and why."""
        return [
            RecordedEvent(c.stream_id, c.version, c.position, c.recorded_at, c.event, c.metadata)
            for c in self.history(ib_id)
            if isinstance(c.event, IbRankChanged)
        ]

    def rank_of(self, ib_id: str, at: datetime) -> int:
        """The IB's rank at ``at`` (effective time): 0 before its first rank change;
        NotFoundError for an IB not registered by then."""
        check_id(ib_id, "an IB id")
        when = check_time(at)
        with self._lock:
            self.catch_up()
            return self.view.tree.rank(ib_id, when)

    def ranks_at(self, at: datetime) -> Mapping[str, int]:
        """Every IB registered by ``at`` with its rank then: what a rank-based distribution
        (``RankSlices.ranks``) pays a deal made at ``at`` by."""
        when = check_time(at)
        with self._lock:
            self.catch_up()
            return self.view.tree.ranks(when)

    def client_history(self, client_id: str) -> list[RecordedEvent[IbNetworkEvent]]:
        """The client's attributions, oldest first, each with who recorded it, when and why."""
        check_id(client_id, "a client id")
        with self._lock:
            self.catch_up()
            return self.view.client_history(client_id)

    def as_of(self, at: datetime) -> IbTreeAt:
        """The tree as it stood at ``at`` (effective time), by every change recorded so far."""
        when = check_time(at)
        with self._lock:
            self.catch_up()
            tree = self.view.tree
            parents = {}
            for ib in tree.ibs():
                try:
                    parents[ib] = tree.parent(ib, when)
                except NotFoundError:  # registered later
                    continue
            clients = {}
            for client in tree.clients():
                ib_id = tree.ib_of(client, when)
                if ib_id is not None:
                    clients[client] = ib_id
            ranks = tree.ranks(when)
        return IbTreeAt(when, parents, clients, ranks)

    def as_recorded(self, at: datetime) -> IbTree:
        """The tree as the log held it at ``at`` (recording time): the changes recorded by
        then, whatever their effective dates. What an answer given at ``at`` was based on."""
        when = check_time(at)
        with self._lock:
            self.catch_up()
            changes = [c.event for c in self.view.changes if c.recorded_at <= when]
        tree = IbTree(max_depth=self.view.max_depth)
        for event in changes:
            _replayed(tree, event)
        return tree


def service_parts(
    repository: object, access: object, clock: object, what: str
) -> tuple[Repository, AccessControl, Clock]:
    """A service's repository, access control and clock (the system clock by default), each
    checked for its kind (ValidationError naming ``what``, never the value)."""
    if not isinstance(repository, Repository):
        raise ValidationError(f"{what} needs a repository")
    if not isinstance(access, AccessControl):
        raise ValidationError(f"{what} needs access control")
    if clock is not None and not isinstance(clock, Clock):
        raise ValidationError(f"{what}'s clock must tell the time (a Clock)")
    return repository, access, clock or SystemClock()


def _optional_id(value: object, what: str) -> str | None:
    return None if value is None else check_id(value, what)


def _depth(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError("the depth cap is a whole number, at least 1")
    return value
