"""The tier service: records programme versions, decides each client's tier on events
(:meth:`Tiers.evaluate`) and at period ends (:meth:`Tiers.close_period`), sets overrides through
maker-checker, and answers ``standing`` and ``benefits`` for the other contexts.

The rules, in one place:

- a client qualifies for the highest tier whose thresholds its figures meet; figures are read
  from the host's :class:`ActivitySource` over the programme's window (period to date on an
  event, the whole period at its end), combined with the previous period's by the programme's
  combination rule;
- an upgrade takes effect at once or at the close of the trading day it was decided in;
- a downgrade is decided only at a period's end, effective at that end, or, with a grace of N
  trading days, N closes later unless the client qualifies again meanwhile;
- inside one period the tier moves one way only: the first change between period ends sets the
  direction, and a move the other way waits for the period's end;
- an override (two people, through :class:`~fxcrm_core.access.Approvals`) holds until its
  expiry; reads see it end at that instant, and the next evaluation records its end.

Every decision is an event on the client's stream naming the rule, the period and the figures;
the standing is a fold of those events, so a replay answers exactly what the live service did.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Protocol

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals
from fxcrm_core.events import (
    DomainEvent,
    EventMetadata,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import CodecError, NotFoundError, ValidationError
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.loyalty.events import (
    ClientTier,
    Figures,
    TierChanged,
    TierGraceCleared,
    TierGraceStarted,
    TierOverrideEnded,
    TierOverrideSet,
    TierPeriodClosed,
    TierProgrammeRecorded,
    TierProgrammeStream,
)
from fxcrm_core.loyalty.programme import (
    Benefits,
    Combination,
    Measure,
    Period,
    TierProgramme,
    UpgradeTiming,
    previous_period,
    programme_id,
)

__all__ = [
    "OVERRIDE_ACTION",
    "PROGRAMME_PERMISSION",
    "ActivitySource",
    "DecisionInTheFutureError",
    "Standing",
    "Tiers",
]

#: The permission to record a programme version.
PROGRAMME_PERMISSION = "tier.programme"
#: The maker-checker action of a manual override (``tier_override.request`` / ``.approve``).
OVERRIDE_ACTION = "tier_override"

_TICK = timedelta(microseconds=1)
_SYSTEM = "system:loyalty-tiers"


class DecisionInTheFutureError(ValidationError):
    """A tier decision (an evaluation, a period's close) dated after the service's clock: it
    would judge activity that has not happened yet; nothing was written."""

    default_message = "a tier decision cannot be dated after the clock's now"


class ActivitySource(Protocol):
    """What the tier engine asks of the client activity read model: one measure of one client
    between two instants (``start`` included, ``end`` excluded). EQUITY is the equity at
    ``end``; the other measures are totals over the span. A source may also offer
    ``batch()``, a context manager the engine holds around a scan of many clients (closing a
    period for all of them): answers inside it may come from one catch-up of its read model."""

    def measure(
        self, client_id: str, measure: Measure, start: datetime, end: datetime
    ) -> Decimal: ...  # fmt: skip


@attrs.frozen
class Standing:
    """A client's tier at an instant and what it gives; ``overridden`` when set by hand."""

    client_id: str
    tier: str
    benefits: Benefits
    overridden: bool
    programme_version: int


@attrs.frozen
class _Reading:
    """What one evaluation read: the combined verdict, each period's tier and the figures."""

    verdict: int
    qualified: tuple[tuple[str, str], ...]
    figures: Figures


class Tiers:
    """One tier programme's service (its versions on ``tierprogramme-<id>``, each client's
    decisions on ``clienttier-<id>/<client>``).

    Registers the ``tier_override`` maker-checker rule with ``approvals``.
    """

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        approvals: Approvals,
        activity: ActivitySource,
        *,
        programme: str,
        calendar: TradingCalendar | None = None,
        clock: Clock | None = None,
        max_override: timedelta = timedelta(days=366),
        measures: Iterable[Measure] | None = None,
    ) -> None:
        if not isinstance(repository, Repository):
            raise ValidationError("the tier service needs a repository")
        if not isinstance(access, AccessControl) or not isinstance(approvals, Approvals):
            raise ValidationError("the tier service needs access control and approvals")
        if not callable(getattr(activity, "measure", None)):
            raise ValidationError("the tier service needs an activity source")
        self.repository = repository
        self.access = access
        self.approvals = approvals
        self.activity = activity
        self.programme_id = programme_id(programme)
        self.calendar = calendar or TradingCalendar()
        self.clock = clock or SystemClock()
        self.max_override = max_override
        # The measures the activity source answers (None: all): a programme needing another
        # is refused when recorded, not on every evaluation.
        self.measures = None if measures is None else frozenset(measures)
        self._versions: list[RecordedEvent[TierProgrammeRecorded]] = []
        self._lock = threading.RLock()
        approvals.register(
            OVERRIDE_ACTION, ApprovalRule(execute=self._set_override, check=self._check_override)
        )

    # -- programme versions ---------------------------------------------------------------------
    def record_programme(self, actor: Actor, programme: TierProgramme, *, reason: str) -> None:
        """Record the next version of the programme (version 1 first); it takes effect no
        earlier than it is recorded, and no earlier than the version before it. A programme
        with a number past the SDK's limits (:meth:`TierProgramme.check_limits`) is refused
        (AmountOutOfRangeError, nothing recorded)."""
        if not isinstance(actor, Actor):
            raise ValidationError("a programme version needs an actor")
        why = checked_text(reason, "reason", 500)
        self.access.require(actor, PROGRAMME_PERMISSION)
        if not isinstance(programme, TierProgramme):
            raise ValidationError("a programme version is a TierProgramme")
        programme.check_limits()
        if programme.programme_id != self.programme_id:
            raise ValidationError("that version belongs to another programme")
        if self.measures is not None and not set(programme.measures) <= self.measures:
            raise ValidationError("the activity source cannot answer a measure of that programme")
        with self._lock:
            versions = self.programmes()
            if programme.version != len(versions) + 1:
                raise ValidationError(f"the next version of this programme is {len(versions) + 1}")
            if programme.effective_from < self.clock.now():
                raise ValidationError("a programme version takes effect no earlier than recorded")
            if versions and programme.effective_from < versions[-1].effective_from:
                raise ValidationError("a programme version takes effect after the one before")
            stream = TierProgrammeStream(id=self.programme_id, version=len(versions))
            with UnitOfWork(self.repository, EventMetadata(actor.id, reason=why)) as uow:
                uow.record(stream, TierProgrammeRecorded(programme))
                uow.commit()
            self._catch_up()

    def _catch_up(self) -> None:
        with self._lock:
            stream_id = TierProgrammeStream.stream_id_for(self.programme_id)
            rows = self.repository.store.read_stream(stream_id, after_version=len(self._versions))
            for row in rows:
                recorded = self.repository.codec.decode(row)
                event = recorded.event
                if not isinstance(event, TierProgrammeRecorded) or (
                    event.programme.version != len(self._versions) + 1
                ):
                    raise CodecError("a programme stream holds its versions in order")
                self._versions.append(
                    RecordedEvent(recorded.stream_id, recorded.version, recorded.position,
                                  recorded.recorded_at, event, recorded.metadata)
                )  # fmt: skip

    def programmes(self) -> list[TierProgramme]:
        """Every recorded version, oldest first (read from the log up to its end)."""
        self._catch_up()
        return [r.event.programme for r in self._versions]

    def programme_history(self) -> list[RecordedEvent[TierProgrammeRecorded]]:
        """Every version as recorded, with who recorded it, when and why."""
        self._catch_up()
        return list(self._versions)

    def programme_at(self, at: datetime) -> TierProgramme:
        """The version in force at ``at``; NotFoundError when none was."""
        when = to_utc(at, "at")
        found = None
        for programme in self.programmes():
            if programme.effective_from <= when:
                found = programme
        if found is None:
            raise NotFoundError("no version of the tier programme was in force then")
        return found

    # -- reading a client -----------------------------------------------------------------------
    def _key(self, client_id: str) -> str:
        return f"{self.programme_id}/{checked_text(client_id, 'client id', 100)}"

    def _state(self, client_id: str, uow: UnitOfWork | None = None) -> ClientTier:
        key = self._key(client_id)
        found = (uow or self.repository).load(ClientTier, key)
        return found or ClientTier.blank(key)

    def standing(self, client_id: str, at: datetime) -> Standing:
        """The client's tier at ``at`` (an override while it runs) and its benefits under the
        programme version in force then; a client never evaluated holds the base tier."""
        return self.standing_of(self._state(client_id), to_utc(at, "at"))

    def standing_of(self, state: ClientTier, at: datetime) -> Standing:
        """The standing a given state of a client's decisions gives at ``at`` (a state folded
        from part of the client's stream: the decisions as they stood at a log position)."""
        when = to_utc(at, "at")
        programme = self.programme_at(when)
        override = state.override_at(when)
        name = override.tier if override else state.tier_at(when)
        tier = name if name is not None and programme.rank(name) >= 0 else programme.tiers[0].name
        client_id = state.id.split("/", 1)[-1]
        return Standing(
            client_id, tier, programme.benefits_of(tier), override is not None, programme.version
        )

    def state_as_of(
        self, client_id: str, keep: Callable[[RecordedEvent[DomainEvent]], bool]
    ) -> ClientTier:
        """The client's decisions folded from the events of its stream that ``keep`` accepts
        (in stream order): e.g. those recorded up to a log position, or by one writer."""
        key = self._key(client_id)
        decode = self.repository.codec.decode
        rows = self.repository.store.read_stream(ClientTier.stream_id_for(key))
        return ClientTier.blank(key).fold(r.event for r in (decode(row) for row in rows) if keep(r))

    def tier(self, client_id: str, at: datetime) -> str:
        return self.standing(client_id, at).tier

    def benefits(self, client_id: str, at: datetime) -> Benefits:
        """What the client's tier gives at ``at``: cashback per lot, points multiplier,
        leverage cap, commission discount."""
        return self.standing(client_id, at).benefits

    def history(self, client_id: str) -> list[RecordedEvent[DomainEvent]]:
        """Every decision on the client, oldest first, with who, when and why."""
        stream_id = ClientTier.stream_id_for(self._key(client_id))
        decode = self.repository.codec.decode
        return [decode(row) for row in self.repository.store.read_stream(stream_id)]

    # -- deciding -------------------------------------------------------------------------------
    def _decided_at(self, at: datetime, uow: UnitOfWork | None) -> datetime:
        """``at`` in UTC, refused when after the service's clock: a decision dated ahead of
        the clock would judge activity that has not happened yet and, as decisions only go
        forward, would hold back every real decision until then. A policy (``uow`` given)
        decides at the instant its upstream event names, already in the log: that never
        depends on the clock of the process running it (a worker behind it decides alike)."""
        when = to_utc(at, "at")
        if uow is None and when > self.clock.now():
            raise DecisionInTheFutureError()
        return when

    def _read(
        self, programme: TierProgramme, client_id: str, period: Period, end: datetime
    ) -> _Reading:
        cal, window = self.calendar, programme.window
        spans = [(period, window.measured_from(cal, period), end)]
        if programme.combination is not Combination.CURRENT_PERIOD:
            before = previous_period(window, cal, period)
            spans.insert(0, (before, window.measured_from(cal, before), before.end))
        figures: list[tuple[str, str, str]] = []
        ranks: list[int] = []
        for p, start, stop in spans:
            values: dict[Measure, Decimal] = {}
            for measure in programme.measures:
                value = self.activity.measure(client_id, measure, start, stop)
                if not isinstance(value, Decimal) or not value.is_finite():
                    raise ValidationError("the activity source answers finite Decimals")
                values[measure] = value
                figures.append((p.label, measure.value, str(value)))
            ranks.append(programme.qualified(values))
        verdict = programme.combine(ranks[0], ranks[-1])
        names = tuple(
            (p.label, programme.tiers[r].name) for (p, _, _), r in zip(spans, ranks, strict=True)
        )
        return _Reading(verdict, names, tuple(figures))

    def _settle(self, state: ClientTier, at: datetime) -> list[DomainEvent]:
        """What is due by ``at`` and not yet recorded: an override's end, a grace's downgrade."""
        events: list[DomainEvent] = []
        client_id = state.id.split("/", 1)[1]
        if state.override is not None and state.override.expires_at <= at:
            events.append(TierOverrideEnded(client_id, state.override.request_id, at))
        grace = state.grace
        if grace is not None and grace.until <= at:
            programme = self.programme_at(grace.until)
            events.append(
                TierChanged(
                    client_id, programme.version, state.tier, grace.tier, grace.until, at,
                    "grace_expired", programme.combination.value,
                    programme.window.period(self.calendar, grace.until).label, (), grace.figures,
                )
            )  # fmt: skip
        return events

    def _commit(
        self,
        state: ClientTier,
        events: list[DomainEvent],
        key: str | None,
        uow: UnitOfWork | None = None,
    ) -> None:
        if not events:
            return
        if uow is not None:  # a policy's unit: committed with the policy's position
            uow.record(state, *events)
            return
        with UnitOfWork(self.repository, EventMetadata(_SYSTEM, reason="tier rules")) as uow:
            uow.record(state, *events)
            uow.commit(idempotency_key=key)

    def evaluate(
        self, client_id: str, at: datetime, *, uow: UnitOfWork | None = None
    ) -> list[DomainEvent]:
        """Decide the client's tier after activity at ``at`` (an upgrade, a grace kept or
        cleared, what expired) and record it; returns the events recorded. Decisions go
        forward in time: an evaluation before the client's last decision records nothing (the
        next one, or the period's end, sees its activity).

        ``at`` after the clock's now is refused (:class:`DecisionInTheFutureError`, nothing
        recorded). With ``uow`` (a policy's unit of work) the events are recorded into it, not
        committed.
        """
        when = self._decided_at(at, uow)
        programme = self.programme_at(when)
        state = self._state(client_id, uow)
        if state.last_decided is not None and when < state.last_decided:
            return []
        events = self._settle(state, when)
        now = state.fold(events)
        period = programme.window.period(self.calendar, when)
        reading = self._read(
            programme, client_id, period, when + _TICK
        )  # what happened at `at` counts
        current = programme.rank(now.tier) if now.tier is not None else -1
        if reading.verdict > current and now.moved != (period.label, -1):
            at_once = programme.upgrade is UpgradeTiming.AT_ONCE
            effective = (
                when if at_once else self.calendar.session(self.calendar.trading_day(when))[1]
            )
            events.append(
                TierChanged(
                    client_id, programme.version, now.tier, programme.tiers[reading.verdict].name,
                    effective, when, "upgrade_at_once" if at_once else "upgrade_next_trading_day",
                    programme.combination.value, period.label, reading.qualified, reading.figures,
                )
            )  # fmt: skip
        elif now.grace is not None and reading.verdict >= current:
            events.append(TierGraceCleared(client_id, when, period.label, reading.figures))
        self._commit(state, events, None, uow)
        return events

    def reconsider(
        self, client_id: str, day: date, at: datetime, *, uow: UnitOfWork | None = None
    ) -> list[DomainEvent]:
        """Late activity: a deal of trading ``day`` recorded at ``at`` after the period holding
        that day was closed (a deal made before a month's last rollover and pulled after the
        close). If that period's figures now reach a higher tier than the client holds at
        ``at``, the client is upgraded from ``at`` (rule ``late_activity``; never back-dated:
        what was decided stays as decided). Only the latest period ended by ``at`` is
        reconsidered (a correction of an older period changes nothing now), and never into a
        downgrade (a period's downgrade is decided at its close only). A day whose period has
        not ended records nothing (:meth:`evaluate` sees it). The caller asks only once that
        period's close is recorded (for the clients with activity then: a client it did not
        cover counts as closed too). Returns the events recorded."""
        when = self._decided_at(at, uow)
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValidationError("a trading day is a date")
        day_end = self.calendar.session(day)[1]
        if day_end > when:
            return []
        try:
            then = self.programme_at(day_end - _TICK)
        except NotFoundError:
            return []  # no programme in force that day
        programme = self.programme_at(when)
        period = then.window.period(self.calendar, day_end - _TICK)
        latest = previous_period(
            programme.window, self.calendar, programme.window.period(self.calendar, when)
        )
        if period.end > when or period.end != latest.end:
            return []  # still open, or an older period: what was decided stays
        state = self._state(client_id, uow)
        if state.closed_until is not None and state.closed_until > period.end:
            return []
        if state.last_decided is not None and when < state.last_decided:
            return []
        events = self._settle(state, when)
        now = state.fold(events)
        reading = self._read(then, client_id, period, period.end)
        reached = then.tiers[reading.verdict].name
        current = programme.rank(now.tier) if now.tier is not None else -1
        label = programme.window.period(self.calendar, when).label
        if programme.rank(reached) > current and now.moved != (label, -1):
            events.append(
                TierChanged(
                    client_id, programme.version, now.tier, reached, when, when,
                    "late_activity", then.combination.value, period.label, reading.qualified,
                    reading.figures,
                )
            )  # fmt: skip
        self._commit(state, events, None, uow)
        return events

    def close_period(
        self, at: datetime, client_ids: Iterable[str], *, uow: UnitOfWork | None = None
    ) -> int:
        """Close, for each client, the period that ended last at or before ``at`` under the
        programme in force at ``at``: record the tier its figures reached and decide at its end
        (a downgrade, a grace, an upgrade). Idempotent per client and period; returns how many
        clients it recorded anything for. ``at`` after the clock's now is refused
        (:class:`DecisionInTheFutureError`, nothing recorded): a period is closed once it has
        ended. With ``uow`` (a policy's unit of work) the events are recorded into it, not
        committed."""
        if isinstance(client_ids, str) or not isinstance(client_ids, Iterable):
            raise ValidationError("close_period takes a collection of client ids")
        when = self._decided_at(at, uow)
        programme = self.programme_at(when)
        period = previous_period(
            programme.window, self.calendar, programme.window.period(self.calendar, when)
        )
        if period.end <= programme.effective_from:
            return 0  # the programme was not in force during that period
        following = programme.window.period(self.calendar, period.end).label
        count = 0
        batch = getattr(self.activity, "batch", None)  # optional: one catch-up for the scan
        with batch() if callable(batch) else contextlib.nullcontext():
            for client_id in dict.fromkeys(client_ids):
                count += self._close_one(client_id, programme, period, following, uow)
        return count

    def _close_one(
        self,
        client_id: str,
        programme: TierProgramme,
        period: Period,
        following: str,
        uow: UnitOfWork | None,
    ) -> int:
        state = self._state(client_id, uow)
        if state.closed_until is not None and period.end <= state.closed_until:
            return 0
        events = self._settle(state, period.end)
        now = state.fold(events)
        reading = self._read(programme, client_id, period, period.end)
        verdict = programme.tiers[reading.verdict].name
        events.append(
            TierPeriodClosed(client_id, period.label, period.end,
                             reading.qualified[-1][1], verdict, reading.figures)
        )  # fmt: skip
        held = now.tier_at(period.end - _TICK)
        # Closed late, after an upgrade in the next period: the client has qualified again,
        # so no grace may start (it would pull the tier down after that upgrade).
        requalified = now.moved == (following, 1)
        current = programme.rank(held) if held is not None else -1
        grace_days = programme.downgrade.grace_trading_days
        if reading.verdict > current or (reading.verdict < current and not grace_days):
            events.append(
                TierChanged(
                    client_id, programme.version, held, verdict, period.end, period.end,
                    "period_end", programme.combination.value, period.label,
                    reading.qualified, reading.figures,
                )
            )  # fmt: skip
        elif (
            reading.verdict < current
            and not requalified
            and (now.grace is None or now.grace.tier != verdict)
        ):
            until = now.grace.until if now.grace else (
                programme.downgrade.grace_until(self.calendar, period.end))  # fmt: skip
            events.append(
                TierGraceStarted(client_id, verdict, until, period.label, reading.figures)
            )
        elif reading.verdict >= current and now.grace is not None:
            events.append(TierGraceCleared(client_id, period.end, period.label, reading.figures))
        self._commit(state, events, f"tierclose:{state.id}:{period.label}", uow)
        return 1

    # -- overrides ------------------------------------------------------------------------------
    def request_override(
        self, maker: Actor, client_id: str, tier: str, expires_at: datetime
    ) -> str:
        """Ask for ``tier`` by hand until ``expires_at`` (``tier_override.request``); it holds
        once a second person approves the request (``tier_override.approve``) and ends by itself
        at its expiry. Returns the approval request id."""
        params = {
            "client_id": checked_text(client_id, "client id", 100),
            "tier": checked_text(tier, "tier", 64),
            "expires_at": to_utc(expires_at, "expires_at").isoformat(),
        }
        return self.approvals.request(maker, OVERRIDE_ACTION, params["client_id"], params,
                                 client_id=params["client_id"])  # fmt: skip

    def _check_override(self, params: Mapping[str, str]) -> None:
        now = self.clock.now()
        if self.programme_at(now).rank(params.get("tier")) < 0:
            raise ValidationError("the programme in force has no such tier")
        expires = datetime.fromisoformat(params["expires_at"])
        if not now < expires <= now + self.max_override:
            raise ValidationError("an override expires in the future, within the longest allowed")

    def _set_override(self, params: Mapping[str, str], key: str) -> str:
        client_id = params["client_id"]
        state = self._state(client_id)
        now = self.clock.now()
        event = TierOverrideSet(client_id, params["tier"], now,
                                datetime.fromisoformat(params["expires_at"]),
                                key.removeprefix("approval:"))  # fmt: skip
        self._commit(state, [*self._settle(state, now), event], key)
        return f"tier_override:{client_id}"
