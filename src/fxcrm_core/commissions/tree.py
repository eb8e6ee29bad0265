"""The IB tree, effective-dated: who was whose parent, and which IB a client came through, at
any moment. A deal is paid up the tree as it stood when the deal was made."""

from __future__ import annotations

import bisect
from datetime import datetime

import attrs

from fxcrm_core.kernel.errors import FxCrmError, NotFoundError, ValidationError
from fxcrm_core.kernel.time import to_utc

__all__ = ["IbTree", "TreeError"]


class TreeError(FxCrmError, ValueError):
    """A change that would break the tree: a cycle, too deep a chain, a self-referral."""

    default_message = "the IB tree cannot take that change"


@attrs.define
class _Timeline:
    """Values of one key over time: (since, value) pairs in time order."""

    since: list[datetime] = attrs.field(factory=list)
    values: list[str | None] = attrs.field(factory=list)

    def at(self, when: datetime) -> str | None:
        return self.span(when)[0]

    def span(self, when: datetime) -> tuple[str | None, datetime, datetime | None]:
        """The value at ``when`` and the span it holds over: from, until (None: still holds)."""
        i = bisect.bisect_right(self.since, when)
        if i == 0:
            raise NotFoundError("not yet known at that time")
        return self.values[i - 1], self.since[i - 1], self.since[i] if i < len(self.since) else None

    def set(self, when: datetime, value: str | None) -> None:
        if self.since and when < self.since[-1]:
            raise ValidationError("changes are recorded in time order")
        self.since.append(when)
        self.values.append(value)


class IbTree:
    """IBs with parents over time, and clients attributed to IBs over time.

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
        self._parents: dict[str, _Timeline] = {}
        self._attribution: dict[str, _Timeline] = {}
        self._own_client: dict[str, str] = {}
        # Each IB's chain as last worked out, with the span of time it holds over (a deal
        # stream asks for the same chains millions of times); cleared by any change of parent.
        self._chains: dict[str, tuple[datetime, datetime | None, tuple[str, ...]]] = {}

    def add_ib(
        self, ib_id: str, parent_id: str | None, at: datetime, *, own_client_id: str | None = None
    ) -> None:
        """A new IB under ``parent_id`` (None: a master IB) from ``at`` on."""
        when = to_utc(at, "at")
        if not ib_id or not ib_id.isprintable():
            raise ValidationError("an IB needs an id of printable characters")
        if ib_id in self._parents:
            raise TreeError("that IB already exists")
        self._parents[ib_id] = _Timeline()
        try:
            self._set_parent(ib_id, parent_id, when)
        except FxCrmError:
            del self._parents[ib_id]
            raise
        if own_client_id is not None:
            self._own_client[ib_id] = own_client_id

    def reparent(self, ib_id: str, parent_id: str | None, at: datetime) -> None:
        """Move an IB under another parent from ``at`` on; earlier deals keep the old tree."""
        if ib_id not in self._parents:
            raise NotFoundError("no such IB")
        self._set_parent(ib_id, parent_id, to_utc(at, "at"))

    def _set_parent(self, ib_id: str, parent_id: str | None, when: datetime) -> None:
        timeline = self._parents[ib_id]
        if timeline.since and when < timeline.since[-1]:
            raise ValidationError("changes are recorded in time order")
        if parent_id is not None:
            if parent_id not in self._parents:
                raise NotFoundError("no such parent IB")
            up = self.chain(parent_id, when)
            if ib_id in up:
                raise TreeError("that would make the IB its own ancestor")
            # The IB lands at depth len(up) + 1; its deepest descendant, height levels lower.
            if len(up) + 1 + self._height(ib_id, when) > self.max_depth:
                raise TreeError(f"IB chains are at most {self.max_depth} deep")
        self._parents[ib_id].set(when, parent_id)
        self._chains.clear()

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
        assert start is not None
        self._chains[ib_id] = (start, until, tuple(out))
        return out

    def attribute(self, client_id: str, ib_id: str | None, at: datetime) -> None:
        """The client comes through ``ib_id`` (None: direct) from ``at`` on."""
        when = to_utc(at, "at")
        if ib_id is not None:
            if ib_id not in self._parents:
                raise NotFoundError("no such IB")
            if self._own_client.get(ib_id) == client_id:
                raise TreeError("an IB cannot refer itself")
        self._attribution.setdefault(client_id, _Timeline()).set(when, ib_id)

    def ib_of(self, client_id: str, at: datetime) -> str | None:
        timeline = self._attribution.get(client_id)
        if timeline is None:
            return None
        try:
            return timeline.at(to_utc(at, "at"))
        except NotFoundError:
            return None

    def in_downline(self, ib_id: str, client_id: str, at: datetime) -> bool:
        """True if the client came through ``ib_id`` or an IB below it, as of ``at``."""
        direct = self.ib_of(client_id, at)
        return direct is not None and ib_id in self.chain(direct, at)
