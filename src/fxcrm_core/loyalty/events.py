"""The loyalty context's events and streams: programme versions (``tierprogramme-<id>``) and each
client's tier decisions (``clienttier-<programme>.<client>``), folded into :class:`ClientTier`.

Every decision names the rule that made it, the period, and the figures it read, so "why is
this client Gold" is answered from the log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent, ValueCodec
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.loyalty.programme import TierProgramme, programme_from_data, programme_to_data

__all__ = [
    "LOYALTY_EVENTS",
    "ClientTier",
    "TierChanged",
    "TierGraceCleared",
    "TierGraceStarted",
    "TierOverrideEnded",
    "TierOverrideSet",
    "TierPeriodClosed",
    "TierProgrammeRecorded",
    "TierProgrammeStream",
]

PROGRAMME_FORM = ValueCodec(TierProgramme, programme_to_data, programme_from_data)

#: (period label, measure, value) for each figure a decision read.
Figures = tuple[tuple[str, str, str], ...]


@attrs.frozen
class TierProgrammeRecorded(DomainEvent):
    """A new version of a tier programme (who and why are in the metadata)."""

    programme: TierProgramme

    __value_codecs__ = (PROGRAMME_FORM,)


@attrs.frozen
class TierChanged(DomainEvent):
    """The client holds ``to_tier`` from ``effective_at`` on. ``rule`` names the rule that
    decided it (``first_evaluation``, ``upgrade_at_once``, ``upgrade_next_trading_day``,
    ``period_end``, ``grace_expired``), ``period`` the period it was decided in, ``qualified``
    the tier each period's figures reached, ``figures`` what was read."""

    client_id: str
    programme_version: int
    from_tier: str | None
    to_tier: str
    effective_at: datetime
    decided_at: datetime
    rule: str
    combination: str
    period: str
    qualified: tuple[tuple[str, str], ...]
    figures: Figures


@attrs.frozen
class TierGraceStarted(DomainEvent):
    """At a period's end the client qualified for ``tier`` only, below its own: it keeps its
    tier until ``until`` unless it qualifies again before."""

    client_id: str
    tier: str
    until: datetime
    period: str
    figures: Figures


@attrs.frozen
class TierGraceCleared(DomainEvent):
    """The client qualified again during its grace: it keeps its tier."""

    client_id: str
    at: datetime
    period: str
    figures: Figures


@attrs.frozen
class TierPeriodClosed(DomainEvent):
    """A period ended for this client: the tier its figures reached and the combined verdict."""

    client_id: str
    period: str
    end: datetime
    qualified: str
    verdict: str
    figures: Figures


@attrs.frozen
class TierOverrideSet(DomainEvent):
    """Two people set the client's tier by hand from ``starts_at`` until ``expires_at``."""

    client_id: str
    tier: str
    starts_at: datetime
    expires_at: datetime
    request_id: str


@attrs.frozen
class TierOverrideEnded(DomainEvent):
    """An override reached its expiry (recorded by the first evaluation after it)."""

    client_id: str
    request_id: str
    at: datetime


LOYALTY_EVENTS: tuple[type[DomainEvent], ...] = (
    TierProgrammeRecorded,
    TierChanged,
    TierGraceStarted,
    TierGraceCleared,
    TierPeriodClosed,
    TierOverrideSet,
    TierOverrideEnded,
)


@attrs.frozen(kw_only=True)
class TierProgrammeStream(Aggregate):
    """The stream one programme's versions go to (id: the programme id)."""

    category = "tierprogramme"

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, TierProgrammeRecorded):
            return self
        raise ValidationError(f"TierProgrammeStream cannot apply {type(event).__name__}")


@attrs.frozen
class Override:
    tier: str
    starts_at: datetime
    expires_at: datetime
    request_id: str


@attrs.frozen
class Grace:
    tier: str
    until: datetime
    period: str
    figures: Figures


@attrs.frozen(kw_only=True)
class ClientTier(Aggregate):
    """One client's standing in one programme (id ``<programme>.<client>``).

    ``changes`` holds (effective_at, tier) in effective order: the tier at T is the last one
    effective by T. ``moved`` is the period and direction (+1 / -1) of the last change decided
    between period ends: a move the other way in that period waits for its end.
    """

    category = "clienttier"
    changes: tuple[tuple[datetime, str], ...] = ()
    last_decided: datetime | None = None
    moved: tuple[str, int] | None = None
    closed_until: datetime | None = None  # the end of the last period closed
    grace: Grace | None = None
    override: Override | None = None

    @property
    def tier(self) -> str | None:
        """The tier decided last (perhaps effective only from the next trading day)."""
        return self.changes[-1][1] if self.changes else None

    def tier_at(self, at: datetime) -> str | None:
        """The programme's tier at ``at`` by the changes recorded, grace due or not."""
        found = None
        for effective, tier in self.changes:
            if effective > at:
                break
            found = tier
        grace = self.grace
        return grace.tier if grace is not None and grace.until <= at else found

    def override_at(self, at: datetime) -> Override | None:
        o = self.override
        return o if o is not None and o.starts_at <= at < o.expires_at else None

    def _decided(self, at: datetime) -> datetime:
        return at if self.last_decided is None else max(self.last_decided, at)

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case TierChanged():
                changes = sorted((*self.changes, (event.effective_at, event.to_tier)),
                                 key=lambda c: c[0])  # fmt: skip
                moved = self.moved
                if event.rule.startswith("upgrade") or event.rule == "grace_expired":
                    moved = (event.period, 1 if event.rule.startswith("upgrade") else -1)
                return self.evolve(
                    changes=tuple(changes),
                    grace=None,
                    moved=moved,
                    last_decided=self._decided(event.decided_at),
                )
            case TierGraceStarted():
                return self.evolve(
                    grace=Grace(event.tier, event.until, event.period, event.figures)
                )
            case TierGraceCleared():
                return self.evolve(grace=None, last_decided=self._decided(event.at))
            case TierPeriodClosed():
                return self.evolve(closed_until=event.end, last_decided=self._decided(event.end))
            case TierOverrideSet():
                return self.evolve(
                    override=Override(
                        event.tier, event.starts_at, event.expires_at, event.request_id
                    )
                )
            case TierOverrideEnded():
                return self.evolve(override=None)
        raise ValidationError(f"ClientTier cannot apply {type(event).__name__}")
