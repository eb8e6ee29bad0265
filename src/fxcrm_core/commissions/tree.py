"""The IB tree, effective-dated: who was whose parent, and which IB a client came through, at
any moment. A deal is paid up the tree as it stood when the deal was made."""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Generic, TypeVar

import attrs

from fxcrm_core.kernel.errors import FxCrmError, NotFoundError, ValidationError
from fxcrm_core.kernel.time import to_utc

__all__ = ["MAX_RANK", "IbTree", "TreeError", "check_id", "check_rank", "check_time"]

MAX_RANK = 1000  # ranks are small whole numbers: 0 (none) up to this


class TreeError(FxCrmError, ValueError):
    """A change that would break the tree: a cycle, too deep a chain, a self-referral."""

    default_message = "the IB tree cannot take that change"


def check_id(value: object, what: str = "an id") -> str:
    """``value`` if it is a ``str`` of printable characters, not only blanks, at most
    ``MAX_ID_LENGTH`` long, else ValidationError (the message names ``what``, never the value:
    ids may be e-mails)."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text")
    if not value.strip() or not value.isprintable():
        raise ValidationError(f"{what} must be made of printable characters, not only blanks")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"{what} is at most {MAX_ID_LENGTH} characters")
    return value


MAX_ID_LENGTH = 200


def check_time(value: object, what: str = "at") -> datetime:
    """``value`` as an aware UTC datetime; ValidationError (NaiveDatetimeError) if it is not a
    datetime, naive, or has no UTC equivalent (a year-1 or year-9999 edge moved out of range)."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{what}: expected a datetime")
    try:
        return to_utc(value, what)
    except OverflowError:
        raise ValidationError(f"{what}: out of the range of UTC datetimes") from None


V = TypeVar("V")


def check_rank(value: object) -> int:
    """``value`` if it is a whole number from 0 to :data:`MAX_RANK`, else ValidationError."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RANK:
        raise ValidationError(f"a rank is a whole number from 0 to {MAX_RANK}")
    return value


@attrs.define
class _Timeline(Generic[V]):
    """Values of one key over time: (since, value) pairs in time order."""

    since: list[datetime] = attrs.field(factory=list)
    values: list[V] = attrs.field(factory=list)

    def at(self, when: datetime) -> V:
        return self.span(when)[0]

    def span(self, when: datetime) -> tuple[V, datetime, datetime | None]:
        """The value at ``when`` and the span it holds over: from, until (None: still holds)."""
        i = bisect.bisect_right(self.since, when)
        if i == 0:
            raise NotFoundError("not yet known at that time")
        return self.values[i - 1], self.since[i - 1], self.since[i] if i < len(self.since) else None

    def set(self, when: datetime, value: V) -> None:
        if self.since and when < self.since[-1]:
            raise ValidationError("changes are recorded in time order")
        self.since.append(when)
        self.values.append(value)


class IbTree:
    """IBs with parents over time, and clients attributed to IBs over time.

    ``add_ib``, ``reparent`` and ``attribute`` keep the tree's rules (no cycle, a depth cap, no
    self-referral, each key's changes in time order) at the change's time and every time
    after; ``check_*`` only check them; ``restore_*`` put back facts recorded earlier (a read
    model folding the log, see :mod:`fxcrm_core.commissions.network`).

    >>> from datetime import UTC, datetime
    >>> t = IbTree()
    >>> jan, jun = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    >>> t.add_ib("master", None, jan); t.add_ib("sub", "master", jan); t.add_ib("other", None, jan)
    >>> t.reparent("sub", "other", jun)
    >>> t.chain("sub", datetime(2026, 3, 1, tzinfo=UTC)), t.chain("sub", jun)
    (['sub', 'master'], ['sub', 'other'])
    """

    def __init__(self, *, max_depth: int = 6) -> None:
        if max_depth < 1:
            raise ValidationError("the depth cap is at least 1")
        self.max_depth = max_depth
        self._parents: dict[str, _Timeline[str | None]] = {}
        self._attribution: dict[str, _Timeline[str | None]] = {}
        self._ranks: dict[str, _Timeline[int]] = {}
        self._own_client: dict[str, str] = {}
        self._last_move: datetime | None = None  # the latest effective time of any parent
        # Each IB's chain as last worked out, with the span of time it holds over (a deal
        # stream asks for the same chains millions of times); cleared by any change of parent.
        self._chains: dict[str, tuple[datetime, datetime | None, tuple[str, ...]]] = {}
        # Likewise each client's chain (from its IB up), with the span over which both its
        # attribution and that chain hold; cleared by any change of parent, per client by
        # any change of its attribution.
        self._client_chains: dict[str, tuple[datetime, datetime | None, tuple[str, ...]]] = {}

    # -- changes, checked ---------------------------------------------------------------------
    def add_ib(
        self, ib_id: str, parent_id: str | None, at: datetime, *, own_client_id: str | None = None
    ) -> None:
        """A new IB under ``parent_id`` (None: a master IB) from ``at`` on."""
        when = check_time(at)
        self.check_add_ib(ib_id, parent_id, when, own_client_id=own_client_id)
        self.restore_ib(ib_id, parent_id, when, own_client_id=own_client_id)

    def reparent(self, ib_id: str, parent_id: str | None, at: datetime) -> None:
        """Move an IB under another parent from ``at`` on; earlier deals keep the old tree."""
        when = check_time(at)
        self.check_reparent(ib_id, parent_id, when)
        self.restore_parent(ib_id, parent_id, when)

    def attribute(self, client_id: str, ib_id: str | None, at: datetime) -> None:
        """The client comes through ``ib_id`` (None: direct) from ``at`` on."""
        when = check_time(at)
        self.check_attribute(client_id, ib_id, when)
        self.restore_attribution(client_id, ib_id, when)

    # -- the rules, without changing anything ---------------------------------------------------
    def check_add_ib(
        self, ib_id: str, parent_id: str | None, at: datetime, *, own_client_id: str | None = None
    ) -> None:
        """Raise what :meth:`add_ib` would raise; change nothing."""
        when = check_time(at)
        check_id(ib_id, "an IB id")
        if own_client_id is not None:
            check_id(own_client_id, "a client id")
        if ib_id in self._parents:
            raise TreeError("that IB already exists")
        self._check_parent(ib_id, parent_id, when)

    def check_reparent(self, ib_id: str, parent_id: str | None, at: datetime) -> None:
        """Raise what :meth:`reparent` would raise; change nothing."""
        when = check_time(at)
        if check_id(ib_id, "an IB id") not in self._parents:
            raise NotFoundError("no such IB")
        self._check_parent(ib_id, parent_id, when)

    def check_attribute(self, client_id: str, ib_id: str | None, at: datetime) -> None:
        """Raise what :meth:`attribute` would raise; change nothing."""
        when = check_time(at)
        check_id(client_id, "a client id")
        timeline = self._attribution.get(client_id)
        if timeline is not None and timeline.since and when < timeline.since[-1]:
            raise ValidationError("changes are recorded in time order")
        if ib_id is not None:
            ib = self._parents.get(check_id(ib_id, "an IB id"))
            if ib is None:
                raise NotFoundError("no such IB")
            if when < ib.since[0]:
                # Else the client's chain at that time could not be told.
                raise NotFoundError("that IB is not registered yet at that time")
            if self._own_client.get(ib_id) == client_id:
                raise TreeError("an IB cannot refer itself")

    def _check_parent(self, ib_id: str, parent_id: str | None, when: datetime) -> None:
        timeline = self._parents.get(ib_id)
        if timeline is not None and timeline.since and when < timeline.since[-1]:
            raise ValidationError("changes are recorded in time order")
        if parent_id is None:
            return
        if check_id(parent_id, "a parent IB id") not in self._parents:
            raise NotFoundError("no such parent IB")
        # The new link holds from ``when`` on, while other IBs may move later (a change may be
        # dated before changes of other keys): the tree must keep its rules at ``when`` and at
        # every later change, or a chain asked for later could loop or run too deep.
        later: list[datetime] = []
        if self._last_move is not None and self._last_move > when:
            later = sorted({s for t in self._parents.values() for s in t.since if s > when})
        for instant in (when, *later):
            up = self.chain(parent_id, instant)
            if ib_id in up:
                raise TreeError("that would make the IB its own ancestor")
            # The IB lands at depth len(up) + 1; its deepest descendant, height levels lower.
            if len(up) + 1 + self._height(ib_id, instant) > self.max_depth:
                raise TreeError(f"IB chains are at most {self.max_depth} deep")

    # -- recorded facts put back (read models folding the log) ----------------------------------
    def restore_ib(
        self, ib_id: str, parent_id: str | None, at: datetime, *, own_client_id: str | None = None
    ) -> None:
        """Put back an IB's registration recorded earlier. The tree's rules (cycle, depth cap,
        self-referral) were checked when it was recorded and are not checked again: a depth
        cap lowered since must not make the log unreadable. Use :meth:`add_ib` for new facts."""
        if ib_id in self._parents:
            raise TreeError("that IB already exists")
        when = to_utc(at, "at")
        timeline: _Timeline[str | None] = _Timeline()
        timeline.set(when, parent_id)
        self._parents[ib_id] = timeline
        if own_client_id is not None:
            self._own_client[ib_id] = own_client_id
        self._moved(when)

    def restore_parent(self, ib_id: str, parent_id: str | None, at: datetime) -> None:
        """Put back a re-parenting recorded earlier (see :meth:`restore_ib`)."""
        timeline = self._parents.get(ib_id)
        if timeline is None:
            raise NotFoundError("no such IB")
        when = to_utc(at, "at")
        timeline.set(when, parent_id)
        self._moved(when)

    def _moved(self, when: datetime) -> None:
        self._chains.clear()
        self._client_chains.clear()
        if self._last_move is None or when > self._last_move:
            self._last_move = when

    def restore_attribution(self, client_id: str, ib_id: str | None, at: datetime) -> None:
        """Put back a client's attribution recorded earlier (see :meth:`restore_ib`)."""
        self._attribution.setdefault(client_id, _Timeline()).set(to_utc(at, "at"), ib_id)
        self._client_chains.pop(client_id, None)

    # -- ranks ----------------------------------------------------------------------------------
    def set_rank(self, ib_id: str, rank: int, at: datetime) -> None:
        """The IB holds ``rank`` from ``at`` on (an IB's rank is 0 until a change says else)."""
        when = check_time(at)
        self.check_rank(ib_id, rank, when)
        self.restore_rank(ib_id, rank, when)

    def check_rank(self, ib_id: str, rank: int, at: datetime) -> None:
        """Raise what :meth:`set_rank` would raise; change nothing."""
        when = check_time(at)
        check_rank(rank)
        registered = self._parents.get(check_id(ib_id, "an IB id"))
        if registered is None:
            raise NotFoundError("no such IB")
        if when < registered.since[0]:
            raise NotFoundError("that IB is not registered yet at that time")
        timeline = self._ranks.get(ib_id)
        if timeline is not None and when < timeline.since[-1]:
            raise ValidationError("changes are recorded in time order")

    def restore_rank(self, ib_id: str, rank: int, at: datetime) -> None:
        """Put back a rank change recorded earlier (see :meth:`restore_ib`)."""
        if ib_id not in self._parents:
            raise NotFoundError("no such IB")
        self._ranks.setdefault(ib_id, _Timeline()).set(to_utc(at, "at"), rank)

    def rank(self, ib_id: str, at: datetime) -> int:
        """The IB's rank at ``at``: 0 before its first rank change; NotFoundError for an IB
        unknown or not registered yet then."""
        when = to_utc(at, "at")
        registered = self._parents.get(ib_id)
        if registered is None or when < registered.since[0]:
            raise NotFoundError("no such IB at that time")
        timeline = self._ranks.get(ib_id)
        if timeline is None or when < timeline.since[0]:
            return 0
        return timeline.at(when)

    def ranks(self, at: datetime) -> dict[str, int]:
        """Every IB registered by ``at`` with its rank then (0 where none was set)."""
        when = to_utc(at, "at")
        return {ib: self.rank(ib, when) for ib, t in self._parents.items() if t.since[0] <= when}

    def copy(self) -> IbTree:
        """An independent tree with the same history (changing one leaves the other as is)."""
        other = IbTree(max_depth=self.max_depth)
        other._parents = {k: _Timeline(t.since[:], t.values[:]) for k, t in self._parents.items()}
        other._attribution = {
            k: _Timeline(t.since[:], t.values[:]) for k, t in self._attribution.items()
        }
        other._ranks = {k: _Timeline(t.since[:], t.values[:]) for k, t in self._ranks.items()}
        other._own_client = dict(self._own_client)
        other._last_move = self._last_move
        other._chains = dict(self._chains)
        other._client_chains = dict(self._client_chains)
        return other

    # -- questions ------------------------------------------------------------------------------
    def ibs(self) -> list[str]:
        """Every IB ever registered, in the order they were registered."""
        return list(self._parents)

    def clients(self) -> list[str]:
        """Every client ever attributed (to an IB or made direct), in the order first seen."""
        return list(self._attribution)

    def own_client(self, ib_id: str) -> str | None:
        """The IB's own client record (the one it may not be attributed to), if any."""
        return self._own_client.get(ib_id)

    def _height(self, ib_id: str, when: datetime) -> int:
        children = [c for c, t in self._parents.items() if t.since and t.since[0] <= when
                    and self._safe_parent(c, when) == ib_id]  # fmt: skip
        return 0 if not children else 1 + max(self._height(c, when) for c in children)

    def _safe_parent(self, ib_id: str, when: datetime) -> str | None:
        try:
            return self._parents[ib_id].at(when)
        except NotFoundError:
            return None

    def parent(self, ib_id: str, at: datetime) -> str | None:
        timeline = self._parents.get(ib_id)
        if timeline is None:
            raise NotFoundError("no such IB")
        return timeline.at(to_utc(at, "at"))

    def chain(self, ib_id: str, at: datetime) -> list[str]:
        """The IB and its ancestors up to the master, as of ``at``."""
        when = to_utc(at, "at")
        cached = self._chains.get(ib_id)
        if cached is not None and cached[0] <= when and (cached[1] is None or when < cached[1]):
            return list(cached[2])
        if ib_id not in self._parents:
            raise NotFoundError("no such IB")
        out = [ib_id]
        # The span every link of the chain holds over: from the latest change before ``when``
        # to the earliest after it.
        start: datetime | None = None
        until: datetime | None = None
        current: str | None = ib_id
        while current is not None:
            current, since, ends = self._parents[current].span(when)
            if start is None or since > start:
                start = since
            if ends is not None and (until is None or ends < until):
                until = ends
            if current is not None:
                out.append(current)
                if len(out) > len(self._parents):  # only a log written against the rules
                    raise TreeError("the recorded tree holds a cycle")
        assert start is not None
        self._chains[ib_id] = (start, until, tuple(out))
        return out

    def ib_of(self, client_id: str, at: datetime) -> str | None:
        timeline = self._attribution.get(client_id)
        if timeline is None:
            return None
        try:
            return timeline.at(to_utc(at, "at"))
        except NotFoundError:
            return None

    def client_chain(self, client_id: str, at: datetime) -> tuple[str, ...] | None:
        """The client's IB and its ancestors up to the master, as of ``at`` (None: the client
        came through no IB then): :meth:`ib_of` then :meth:`chain`, in one step."""
        when = to_utc(at, "at")
        cached = self._client_chains.get(client_id)
        if cached is not None and cached[0] <= when and (cached[1] is None or when < cached[1]):
            return cached[2]
        timeline = self._attribution.get(client_id)
        if timeline is None:
            return None
        try:
            ib, since, until = timeline.span(when)
        except NotFoundError:
            return None
        if ib is None:
            return None
        chain = tuple(self.chain(ib, when))
        start, ends, _ = self._chains[ib]
        if since > start:
            start = since
        if until is not None and (ends is None or until < ends):
            ends = until
        if len(self._client_chains) >= 1_000_000:
            self._client_chains.clear()
        self._client_chains[client_id] = (start, ends, chain)
        return chain

    def in_downline(self, ib_id: str, client_id: str, at: datetime) -> bool:
        """True if the client came through ``ib_id`` or an IB below it, as of ``at``."""
        direct = self.ib_of(client_id, at)
        return direct is not None and ib_id in self.chain(direct, at)
