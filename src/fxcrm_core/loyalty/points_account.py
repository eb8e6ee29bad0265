"""The points account (``points-<client>``): its events and the lots it folds them into. Every
taking names the lots it took from, so the balance is the lots' remainders and never negative."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.kernel.money import Money
from fxcrm_core.loyalty.points_rules import ZERO

__all__ = [
    "POINTS_EVENTS",
    "Figures",
    "NetDepositCounted",
    "PointsAccount",
    "PointsAdjusted",
    "PointsEarned",
    "PointsExpired",
    "PointsLot",
    "PointsRedeemed",
    "PointsRepriced",
    "PointsReversed",
    "Taken",
]

#: (lot source, points) for each lot a taking took from, oldest first.
Taken = tuple[tuple[str, Decimal], ...]
#: (name, value) for each figure an award was worked out from.
Figures = tuple[tuple[str, str], ...]

# -- events -------------------------------------------------------------------------------------


@attrs.frozen
class PointsEarned(DomainEvent):
    """A new lot: ``points`` from ``source``, earned at ``earned_at``, live until ``expires_at``
    (excluded); ``figures`` say how they were worked out (multiplier included)."""

    client_id: str
    source: str
    points: Decimal
    earned_at: datetime
    expires_at: datetime
    figures: Figures


@attrs.frozen
class PointsRepriced(DomainEvent):
    """The source's deal was updated: its lot now counts ``points``; ``added`` went to its
    remainder (nothing if it expired), ``taken`` came out of the lots named (its own first),
    and ``shortfall`` could not be taken."""

    client_id: str
    source: str
    points: Decimal
    added: Decimal
    taken: Taken
    shortfall: Decimal
    figures: Figures


@attrs.frozen
class PointsReversed(DomainEvent):
    """The source's award is taken back (``reason``: ``deal_deleted``, ``chargeback``):
    from its own lot first, then the oldest others; ``shortfall`` could not be taken. ``share``
    is the part of the award reversed so far, this reversal included (1: all of it): a deposit
    charged back in parts is reversed in parts, and never by more than it earned."""

    client_id: str
    source: str
    reason: str
    taken: Taken
    shortfall: Decimal
    share: Decimal = Decimal(1)


@attrs.frozen
class PointsRedeemed(DomainEvent):
    """Points spent oldest first: as ``cashback`` posted by ``transfer_id``, or for the host's
    ``reward_id``."""

    client_id: str
    request_id: str
    points: Decimal
    taken: Taken
    cashback: Money | None
    transfer_id: str | None
    reward_id: str | None


@attrs.frozen
class PointsExpired(DomainEvent):
    """The remainders of lots whose time ran out by ``at``."""

    client_id: str
    at: datetime
    taken: Taken


@attrs.frozen
class PointsAdjusted(DomainEvent):
    """Two people changed the balance by hand: ``points`` added as a lot (``adjust:<request>``)
    until ``expires_at``, or taken (``taken``, ``shortfall``) when negative."""

    client_id: str
    request_id: str
    points: Decimal
    expires_at: datetime | None
    taken: Taken
    shortfall: Decimal
    at: datetime


@attrs.frozen
class NetDepositCounted(DomainEvent):
    """Money in (positive) or out (negative) of the client's wallets by ``transfer_id``, the
    client's net deposits and highest net after it, and the part of the deposit (``basis``)
    that was above the highest net before it and earned points."""

    client_id: str
    transfer_id: str
    amount: Money
    net: Decimal
    high: Decimal
    basis: Decimal
    deposit: str | None = None  # a chargeback: the deposit it takes money back from


POINTS_EVENTS: tuple[type[DomainEvent], ...] = (
    PointsEarned,
    PointsRepriced,
    PointsReversed,
    PointsRedeemed,
    PointsExpired,
    PointsAdjusted,
    NetDepositCounted,
)


# -- the account --------------------------------------------------------------------------------


@attrs.frozen
class PointsLot:
    """One award: ``amount`` earned (as re-priced), ``remaining`` of it, ``expired`` of it;
    ``reversed_share`` of it was reversed so far, taking back ``reversed_points`` (what was
    taken, from any lot, and the shortfall)."""

    source: str
    amount: Decimal
    remaining: Decimal
    earned_at: datetime
    expires_at: datetime
    expired: Decimal = ZERO
    multiplier: Decimal = Decimal(1)  # the tier's, when earned: an update re-prices with it
    reversed_share: Decimal = ZERO
    reversed_points: Decimal = ZERO

    @property
    def reversed(self) -> bool:
        """All of the award was reversed (its deal deleted, its deposit charged back whole)."""
        return self.reversed_share >= 1

    def held(self, at: datetime) -> bool:
        """Points left that have not run out of time at ``at`` (the lot is in the account)."""
        return self.remaining > 0 and at < self.expires_at

    def live(self, at: datetime) -> bool:
        """Points spendable at ``at``: earned by then and not run out of time."""
        return self.held(at) and self.earned_at <= at


def _order(lot: PointsLot) -> tuple[datetime, str]:
    return lot.earned_at, lot.source


@attrs.frozen(kw_only=True)
class PointsAccount(Aggregate):
    """One client's points (id: the client id): its lots oldest first, the requests it answered
    (request id -> what was asked), its net deposits per currency and what it could not take
    back (``shortfall``)."""

    category = "points"
    lots: tuple[PointsLot, ...] = ()
    requests: Mapping[str, str] = attrs.field(factory=dict)
    net: Mapping[str, tuple[Decimal, Decimal]] = attrs.field(factory=dict)  # code -> (net, high)
    deposits: Mapping[str, tuple[Decimal, Decimal]] = attrs.field(factory=dict)  # (amount, basis)
    charged_back: Mapping[str, Decimal] = attrs.field(factory=dict)  # deposit -> money taken back
    first_deposit: str | None = None
    shortfall: Decimal = ZERO

    @property
    def balance(self) -> Decimal:
        """The points recorded as held (lots past their time count until their expiry is
        recorded; see :meth:`live_balance`)."""
        return sum((lot.remaining for lot in self.lots), ZERO)

    def live_balance(self, at: datetime) -> Decimal:
        """The points held that are spendable at ``at``: earned by then (``earned_at <= at``)
        and not past their time (``at < expires_at``). For an instant in the past, fold only
        the events recorded by then first (``Points.balance`` does)."""
        return sum((lot.remaining for lot in self.lots if lot.live(at)), ZERO)

    def held_balance(self, at: datetime) -> Decimal:
        """The points in the account not past their time at ``at`` (the present: every lot
        recorded is held, even one whose deal is stamped a moment ahead of this clock)."""
        return sum((lot.remaining for lot in self.lots if lot.held(at)), ZERO)

    def lot(self, source: str) -> PointsLot | None:
        for lot in self.lots:
            if lot.source == source:
                return lot
        return None

    # -- deciding (pure: the events to record) ----------------------------------------------
    def expiries(self, at: datetime) -> list[DomainEvent]:
        due = tuple(
            (lot.source, lot.remaining)
            for lot in self.lots
            if lot.remaining > 0 and lot.expires_at <= at
        )
        return [PointsExpired(self.id, at, due)] if due else []

    def take(
        self, points: Decimal, at: datetime, first: str | None = None
    ) -> tuple[Taken, Decimal]:
        """Take ``points`` at ``at`` - the present of the decision (the clock's now, or when the
        log learnt of what a policy handles), so every lot in the account was recorded by then -
        from the lots held then (``first``'s own lot first, then oldest first): what was taken
        from which lot, and what could not be taken. A lot past its time is never taken."""
        need = points
        taken: list[tuple[str, Decimal]] = []
        lots = sorted(self.lots, key=lambda lot: (lot.source != first, *_order(lot)))
        for lot in lots:
            if need <= 0:
                break
            if lot.held(at):
                part = min(lot.remaining, need)
                taken.append((lot.source, part))
                need -= part
        return tuple(taken), max(need, ZERO)

    # -- folding --------------------------------------------------------------------------------
    def _taking(self, taken: Taken, *, expire: bool = False) -> tuple[PointsLot, ...]:
        parts = dict(taken)
        if not parts:
            return self.lots
        out = []
        for lot in self.lots:
            part = parts.get(lot.source)
            if part is not None:
                if part > lot.remaining:
                    raise ValidationError("a taking exceeds a lot's remainder")
                lot = attrs.evolve(
                    lot, remaining=lot.remaining - part,
                    expired=lot.expired + part if expire else lot.expired,
                )  # fmt: skip
            out.append(lot)
        return tuple(out)

    @staticmethod
    def _replace(lots: tuple[PointsLot, ...], source: str, **changes: Any) -> tuple[PointsLot, ...]:
        return tuple(attrs.evolve(lot, **changes) if lot.source == source else lot for lot in lots)

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case PointsEarned():
                if self.lot(event.source) is not None:
                    raise ValidationError("a source earns once")
                multiplier = Decimal(dict(event.figures).get("multiplier", "1"))
                lot = PointsLot(event.source, event.points, event.points, event.earned_at,
                                event.expires_at, multiplier=multiplier)  # fmt: skip
                return self.evolve(lots=tuple(sorted((*self.lots, lot), key=_order)))
            case PointsRepriced():
                lots = self._taking(event.taken)
                mine = next(lot for lot in lots if lot.source == event.source)
                # amount - expired is what was granted and did not expire (spent or held): up,
                # what could not be added (the lot had expired) counts as expired at once;
                # down, it is kept at no more than the new figure.
                if event.points >= mine.amount:
                    expired = mine.expired + event.points - mine.amount - event.added
                else:
                    expired = event.points - min(mine.amount - mine.expired, event.points)
                lots = self._replace(lots, event.source, amount=event.points, expired=expired,
                                     remaining=mine.remaining + event.added)  # fmt: skip
                return self.evolve(lots=lots, shortfall=self.shortfall + event.shortfall)
            case PointsReversed():
                lots = self._taking(event.taken)
                held = next((lot for lot in lots if lot.source == event.source), None)
                if held is not None:
                    took = sum((part for _, part in event.taken), event.shortfall)
                    lots = self._replace(
                        lots, event.source, reversed_share=max(held.reversed_share, event.share),
                        reversed_points=held.reversed_points + took,
                    )  # fmt: skip
                return self.evolve(lots=lots, shortfall=self.shortfall + event.shortfall)
            case PointsRedeemed():
                return self.evolve(
                    lots=self._taking(event.taken),
                    requests={**self.requests, event.request_id: _digest(event)},
                )
            case PointsExpired():
                return self.evolve(lots=self._taking(event.taken, expire=True))
            case PointsAdjusted():
                lots = self._taking(event.taken)
                if event.points > 0:
                    assert event.expires_at is not None
                    lot = PointsLot(f"adjust:{event.request_id}", event.points, event.points,
                                    event.at, event.expires_at)  # fmt: skip
                    lots = tuple(sorted((*lots, lot), key=_order))
                return self.evolve(
                    lots=lots,
                    requests={**self.requests, event.request_id: f"adjust {event.points}"},
                    shortfall=self.shortfall + event.shortfall,
                )
            case NetDepositCounted():
                code = event.amount.currency.code
                deposits = self.deposits
                charged = self.charged_back
                first = self.first_deposit
                if event.amount.amount > 0:
                    deposits = {**deposits, event.transfer_id: (event.amount.amount, event.basis)}
                    first = first or event.transfer_id
                elif event.deposit is not None:
                    before = charged.get(event.deposit, ZERO)
                    charged = {**charged, event.deposit: before - event.amount.amount}
                return self.evolve(
                    net={**self.net, code: (event.net, event.high)},
                    deposits=deposits,
                    charged_back=charged,
                    first_deposit=first,
                )
        raise ValidationError(f"PointsAccount cannot apply {type(event).__name__}")


def redemption_digest(points: Decimal, what: str) -> str:
    """What a redemption request asked, by value: ``10`` and ``10.00`` points are one ask."""
    return f"{points.normalize():f} {what}"


def _digest(event: PointsRedeemed) -> str:
    what = f"cashback {event.cashback}" if event.cashback else f"reward {event.reward_id}"
    return redemption_digest(event.points, what)
