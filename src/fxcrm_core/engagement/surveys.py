"""Satisfaction surveys: CSAT (1-5) and NPS (0-10) sent to a client for a reason, answered once,
and scored per calendar month or quarter from a read model rebuilt from the log.

A :class:`Survey` lives on its ``survey-<id>`` stream; a survey an engagement rule sent carries
its outbox key, and its id is derived from that key, so the same message never makes two
surveys. The answer's optional comment is personal data, sealed per client.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, Self
from zoneinfo import ZoneInfo

import attrs

from fxcrm_core.access.control import AccessControl, Actor
from fxcrm_core.engagement._clients import live_client
from fxcrm_core.engagement.complaints import _zone, complaint_text
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock
from fxcrm_core.kernel.errors import (
    ArgumentTypeError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "SURVEY_EVENTS",
    "SURVEY_PERMISSIONS",
    "Survey",
    "SurveyAnswered",
    "SurveyKind",
    "SurveyPeriod",
    "SurveyScore",
    "SurveyScores",
    "SurveySent",
    "Surveys",
    "period_label",
    "score_of",
]

#: The permissions this module checks, and the roles the default policy should grant them to.
SURVEY_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "client": frozenset({"survey.answer"}),
    "support": frozenset({"survey.send", "survey.read"}),
    "compliance": frozenset({"survey.read"}),
    "admin": frozenset({"survey.read"}),
}


class SurveyKind(enum.Enum):
    """CSAT: a score of 1 to 5 (4 and 5 satisfied); NPS: 0 to 10 (9-10 promoters, 0-6
    detractors)."""

    CSAT = "csat"
    NPS = "nps"

    @property
    def scale(self) -> range:
        return range(1, 6) if self is SurveyKind.CSAT else range(11)


class SurveyPeriod(enum.Enum):
    MONTH = "month"
    QUARTER = "quarter"


def period_label(period: SurveyPeriod, day: date) -> str:
    """``2026-03`` for a month, ``2026-Q1`` for a quarter.

    >>> period_label(SurveyPeriod.QUARTER, date(2026, 5, 31))
    '2026-Q2'
    """
    if period is SurveyPeriod.MONTH:
        return f"{day.year:04d}-{day.month:02d}"
    return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"


_PII: Any = {"metadata": {"pii": True}, "repr": False}


@attrs.frozen
class SurveySent(DomainEvent):
    """A ``kind`` survey went to ``client_id`` for ``reason`` (``withdrawal-paid``, say);
    ``outbox_key``: the engagement message that carried it, if a rule sent it."""

    survey_id: str
    client_id: str
    kind: SurveyKind
    reason: str
    sent_at: datetime
    outbox_key: str | None = None


@attrs.frozen
class SurveyAnswered(DomainEvent):
    """The client's ``score`` (and optional ``comment``, personal data) at ``answered_at``."""

    __subject__ = "client_id"
    survey_id: str
    client_id: str
    kind: SurveyKind
    score: int
    answered_at: datetime
    comment: str | None = attrs.field(default=None, **_PII)


SURVEY_EVENTS: tuple[type[DomainEvent], ...] = (SurveySent, SurveyAnswered)


@attrs.frozen(kw_only=True)
class Survey(Aggregate):
    """One survey (id: the survey id): to whom, what kind, why, and its score once answered."""

    category = "survey"
    client_id: str = ""
    kind: SurveyKind = SurveyKind.CSAT
    reason: str = ""
    sent_at: datetime | None = None
    outbox_key: str | None = None
    score: int | None = None
    answered_at: datetime | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, SurveySent):
            return self.evolve(
                client_id=event.client_id,
                kind=event.kind,
                reason=event.reason,
                sent_at=event.sent_at,
                outbox_key=event.outbox_key,
            )
        if isinstance(event, SurveyAnswered):
            return self.evolve(score=event.score, answered_at=event.answered_at)
        raise ValidationError(f"Survey cannot apply {type(event).__name__}")


def _percent(value: Fraction) -> Decimal:
    exact = value * 100
    return (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_EVEN
    )


@attrs.frozen
class SurveyScore:
    """A kind's score in a period: the answers counted by score, and the score itself.

    CSAT: the share of 4-5 answers, in percent; NPS: percent promoters (9-10) minus percent
    detractors (0-6). ``exact`` is the score as a fraction of 100; ``percent`` rounds it to
    0.01 (half even); both None with no answers.
    """

    kind: SurveyKind
    period: str
    answers: int
    counts: tuple[int, ...]  # answers per score, index = score (0 to 10)

    @property
    def satisfied(self) -> int:
        return self.counts[4] + self.counts[5]

    @property
    def promoters(self) -> int:
        return self.counts[9] + self.counts[10]

    @property
    def passives(self) -> int:
        return self.counts[7] + self.counts[8]

    @property
    def detractors(self) -> int:
        return sum(self.counts[0:7])

    @property
    def exact(self) -> Fraction | None:
        if not self.answers:
            return None
        if self.kind is SurveyKind.CSAT:
            return Fraction(self.satisfied, self.answers)
        return Fraction(self.promoters - self.detractors, self.answers)

    @property
    def percent(self) -> Decimal | None:
        exact = self.exact
        return None if exact is None else _percent(exact)


def score_of(kind: SurveyKind, period: str, scores: list[int]) -> SurveyScore:
    """The score of ``scores`` (each within the kind's scale)."""
    counts = [0] * 11
    for s in scores:
        if type(s) is not int or s not in kind.scale:
            raise ValidationError(f"a {kind.value} score is {kind.scale[0]} to {kind.scale[-1]}")
        counts[s] += 1
    return SurveyScore(kind, period, len(scores), tuple(counts))


class SurveyScores:
    """A memory read model: answers counted per kind, calendar month (of the answer, in the
    broker's ``zone``) and score, rebuilt from the log."""

    name = "survey-scores"
    event_types: frozenset[str] | None = frozenset({"SurveyAnswered"})

    def __init__(self, zone: str | ZoneInfo = "UTC") -> None:
        self.zone = _zone(zone)
        self.reset()

    def reset(self) -> None:
        self.months: dict[tuple[SurveyKind, int, int], list[int]] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, SurveyAnswered):
            local = event.answered_at.astimezone(self.zone)
            key = (event.kind, local.year, local.month)
            counts = self.months.setdefault(key, [0] * 11)
            counts[event.score] += 1

    def score(self, kind: SurveyKind, period: SurveyPeriod, day: date) -> SurveyScore:
        """The score of the month or quarter holding ``day``."""
        if period is SurveyPeriod.MONTH:
            months = [day.month]
        else:
            first = (day.month - 1) // 3 * 3 + 1
            months = [first, first + 1, first + 2]
        counts = [0] * 11
        for m in months:
            for s, n in enumerate(self.months.get((kind, day.year, m), ())):
                counts[s] += n
        return SurveyScore(kind, period_label(period, day), sum(counts), tuple(counts))


def _survey_id_for(outbox_key: str) -> str:
    return f"msg:{outbox_key}"


class Surveys:
    """The surveys service: :meth:`send`, :meth:`answer` (once), :meth:`scores`.

    Permissions: ``survey.send`` (support, or a system actor an engagement worker acts as),
    ``survey.answer`` (the client on its own rows), ``survey.read`` (support, compliance,
    admin).
    """

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        clock: Clock,
        *,
        zone: str = "UTC",
        ids: IdGenerator | None = None,
        require_client: bool = False,
    ) -> None:
        if not isinstance(repository, Repository):
            raise ArgumentTypeError("surveys need a repository")
        if not isinstance(require_client, bool):
            raise ArgumentTypeError("require_client is True or False")
        if not isinstance(access, AccessControl):
            raise ArgumentTypeError("surveys need an AccessControl")
        if not callable(getattr(clock, "now", None)):
            raise ArgumentTypeError("surveys need a clock")
        self.repository = repository
        self.access = access
        self.clock = clock
        self.ids = ids or IdGenerator(clock)
        self.require_client = require_client
        self._projections = ProjectionRunner(repository.store, repository.codec)
        self._scores = SurveyScores(zone)
        self._lock = threading.Lock()

    def send(
        self,
        actor: Actor,
        client_id: str,
        kind: SurveyKind,
        reason: str,
        *,
        outbox_key: str | None = None,
    ) -> Survey:
        """Record that a survey went to the client. With ``outbox_key`` (the message of an
        engagement rule that carried it) the survey's id is ``msg:<key>`` and sending it again
        returns the survey already recorded; a key naming another client is refused
        (IllegalTransitionError). With ``require_client`` the client must be
        registered and not erased (NotFoundError, SubjectErasedError)."""
        client = checked_text(client_id, "client id", 100)
        self.access.require(actor, "survey.send", client_id=client)
        if not isinstance(kind, SurveyKind):
            raise ArgumentTypeError("kind is a SurveyKind")
        why = checked_text(reason, "survey reason", 64)
        key = None if outbox_key is None else checked_text(outbox_key, "outbox key", 300)
        if key is not None:
            parts = key.split(":", 2)  # rule:period:client (the client id last, may hold ':')
            if len(parts) != 3 or not all(parts):
                raise ValidationError("an outbox key is rule:period:client")
            if parts[2] != client:  # the survey id is the message's: never another client's
                raise IllegalTransitionError("that message went to another client")
        if self.require_client:
            live_client(self.repository, client)
        survey_id = self.ids() if key is None else _survey_id_for(key)
        now = to_utc(self.clock.now(), "now")
        with UnitOfWork(self.repository, EventMetadata(actor.id)) as uow:
            known = uow.load(Survey, survey_id)
            if known is not None:
                if known.client_id != client or known.kind is not kind:
                    raise IllegalTransitionError("that message sent another survey")
                return known
            state = uow.record(
                Survey.blank(survey_id), SurveySent(survey_id, client, kind, why, now, key)
            )
            uow.commit()
        return state

    def answer(
        self, actor: Actor, survey_id: str, score: int, comment: str | None = None
    ) -> Survey:
        """Record the client's answer; a survey is answered once."""
        key = checked_text(survey_id, "survey id", 400)
        if type(score) is not int:
            raise ArgumentTypeError("a score is a whole number")
        note = None if comment is None else complaint_text(comment, "survey comment")
        with UnitOfWork(self.repository, EventMetadata(actor.id)) as uow:
            state = uow.load(Survey, key)
            if state is None:
                raise NotFoundError("no survey with that id")
            self.access.require(actor, "survey.answer", client_id=state.client_id)
            if state.score is not None:
                raise IllegalTransitionError("the survey is answered already")
            if score not in state.kind.scale:
                scale = state.kind.scale
                raise ValidationError(f"a {state.kind.value} score is {scale[0]} to {scale[-1]}")
            now = to_utc(self.clock.now(), "now")
            state = uow.record(
                state, SurveyAnswered(key, state.client_id, state.kind, score, now, note)
            )
            uow.commit()
        return state

    def get(self, actor: Actor, survey_id: str) -> Survey:
        key = checked_text(survey_id, "survey id", 400)
        state = self.repository.load(Survey, key)
        if state is None:
            raise NotFoundError("no survey with that id")
        if not self.access.allows(actor, "survey.read", client_id=state.client_id):
            self.access.require(actor, "survey.answer", client_id=state.client_id)
        return state

    def scores(
        self, actor: Actor, kind: SurveyKind, period: SurveyPeriod, day: date
    ) -> SurveyScore:
        """The score of ``kind`` in the month or quarter holding ``day`` (months told in the
        broker's zone by the answer's time), read from the log as it stands now."""
        self.access.require(actor, "survey.read")
        if not isinstance(kind, SurveyKind) or not isinstance(period, SurveyPeriod):
            raise ArgumentTypeError("scores take a SurveyKind and a SurveyPeriod")
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ArgumentTypeError("the period is named by a date in it")
        with self._lock:
            self._projections.catch_up(self._scores)
            return self._scores.score(kind, period, day)
