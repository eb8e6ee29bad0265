"""Announcements: a text for an :class:`~fxcrm_core.engagement.rules.Audience` of clients,
shown in a publish window (``starts_at`` inclusive, ``ends_at`` exclusive), in the client's
language (its base language, then English, as a fallback), with one read receipt per client.

An announcement is an event on ``announcement-<id>``; a client's receipts are events on
``announcementreads-<client id>`` (a racing second mark, in another process too, finds the
receipt and records nothing: a receipt is recorded once). A client outside the audience
(asked of the :class:`~fxcrm_core.engagement.rules.AudienceSource` as the client stands now)
or outside the window cannot mark one read. :class:`Announcements` is the memory read model of
the announcements and receipts (rebuilt from the log in each process); ``unread`` filters it
by the window and the audience at the instant asked.

Permissions: ``announcement.publish`` (staff) to publish or withdraw; ``announcement.ack``
on the client's rows to mark read; ``client.read`` on the client's rows to list its unread
announcements.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Self

import attrs

from fxcrm_core.access import AccessControl, AccessPolicy, Actor, Role
from fxcrm_core.clients import Consent
from fxcrm_core.engagement._clients import check_parts
from fxcrm_core.engagement.rules import Audience, AudienceSource, Profile
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import (
    ArgumentTypeError,
    ConcurrencyError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "ACK",
    "ANNOUNCEMENT_EVENTS",
    "ANNOUNCEMENT_GRANTS",
    "PUBLISH",
    "Announcement",
    "AnnouncementPublished",
    "AnnouncementRead",
    "AnnouncementText",
    "AnnouncementWithdrawn",
    "Announcements",
    "AnnouncementsService",
    "ReadReceipts",
    "with_announcement_grants",
]

PUBLISH = "announcement.publish"
ACK = "announcement.ack"
READ = "client.read"

#: What a broker grants by default (the integrator adds it to ``DEFAULT_POLICY``).
ANNOUNCEMENT_GRANTS: Mapping[str, frozenset[str]] = {
    Role.ADMIN: frozenset({PUBLISH}),
    Role.CLIENT: frozenset({ACK}),
}

TITLE_LIMIT = 200
BODY_LIMIT = 4000
_MAX_LANGUAGES = 100
_ATTEMPTS = 3


def with_announcement_grants(policy: AccessPolicy) -> AccessPolicy:
    """``policy`` with :data:`ANNOUNCEMENT_GRANTS` added to its roles."""
    grants = {role: set(perms) for role, perms in policy.grants.items()}
    for role, perms in ANNOUNCEMENT_GRANTS.items():
        grants.setdefault(role, set()).update(perms)
    return AccessPolicy(grants, policy.scopes)


def _title(value: object) -> str:
    return checked_text(value, "title", TITLE_LIMIT)


def _body(value: object) -> str:
    if not isinstance(value, str):
        raise ArgumentTypeError("the body is text")
    checked_text(value.replace("\n", " ").replace("\r", " "), "body", BODY_LIMIT)
    return value.strip()


@attrs.frozen
class AnnouncementText:
    title: str = attrs.field(converter=_title)
    body: str = attrs.field(converter=_body)


def _language_key(value: object) -> str:
    text = checked_text(value, "language", 35)
    return text.replace("-", "_").lower()


@attrs.frozen
class AnnouncementPublished(DomainEvent):
    """An announcement: its audience (as data), window and texts as (language, title, body)."""

    announcement_id: str
    starts_at: datetime
    ends_at: datetime
    texts: tuple[tuple[str, str, str], ...]
    countries: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    consent: Consent | None = None


@attrs.frozen
class AnnouncementWithdrawn(DomainEvent):
    """Ended early: not shown (nor markable) from ``at`` on."""

    announcement_id: str
    at: datetime


@attrs.frozen
class AnnouncementRead(DomainEvent):
    client_id: str
    announcement_id: str
    at: datetime


ANNOUNCEMENT_EVENTS: tuple[type[DomainEvent], ...] = (
    AnnouncementPublished,
    AnnouncementWithdrawn,
    AnnouncementRead,
)


@attrs.frozen(kw_only=True)
class Announcement(Aggregate):
    """One announcement (id: its id)."""

    category = "announcement"
    published: AnnouncementPublished | None = None
    ends_at: datetime | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, AnnouncementPublished):
            return self.evolve(published=event, ends_at=event.ends_at)
        if isinstance(event, AnnouncementWithdrawn):
            return self.evolve(ends_at=event.at)
        raise ValidationError(f"Announcement cannot apply {type(event).__name__}")

    @property
    def audience(self) -> Audience:
        p = self._published()
        return Audience(
            countries=frozenset(p.countries),
            languages=frozenset(p.languages),
            segments=frozenset(p.segments),
            tiers=frozenset(p.tiers),
            consent=p.consent,
        )

    def _published(self) -> AnnouncementPublished:
        if self.published is None:
            raise NotFoundError("no such announcement")
        return self.published

    def live_at(self, at: datetime) -> bool:
        p = self._published()
        return self.ends_at is not None and p.starts_at <= at < self.ends_at

    def text_for(self, language: str | None) -> AnnouncementText:
        """The text in ``language``, else its base language, else English."""
        texts = {lang: (title, body) for lang, title, body in self._published().texts}
        wanted = [] if not language else [language.replace("-", "_").lower()]
        if wanted and "_" in wanted[0]:
            wanted.append(wanted[0].split("_", 1)[0])
        for key in (*wanted, "en"):
            if key in texts:
                return AnnouncementText(*texts[key])
        raise NotFoundError("the announcement has no English text")  # refused at publishing


@attrs.frozen(kw_only=True)
class ReadReceipts(Aggregate):
    """One client's read receipts (id: the client id)."""

    category = "announcementreads"
    read: frozenset[str] = frozenset()

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, AnnouncementRead):
            return self.evolve(read=self.read | {event.announcement_id})
        raise ValidationError(f"ReadReceipts cannot apply {type(event).__name__}")


class Announcements:
    """A memory read model: every announcement and every client's receipts."""

    name = "announcements"
    event_types: frozenset[str] | None = frozenset(
        {"AnnouncementPublished", "AnnouncementWithdrawn", "AnnouncementRead"}
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.items: dict[str, Announcement] = {}
        self.reads: dict[str, set[str]] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, AnnouncementPublished | AnnouncementWithdrawn):
            key = event.announcement_id
            self.items[key] = self.items.get(key, Announcement.blank(key)).apply(event)
        elif isinstance(event, AnnouncementRead):
            self.reads.setdefault(event.client_id, set()).add(event.announcement_id)


def _strings(value: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(value))


class AnnouncementsService:
    """Publishes announcements and records read receipts (see the module's rules)."""

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        projections: ProjectionRunner,
        audience: AudienceSource,
        *,
        clock: Clock | None = None,
        ids: Callable[[], str] | None = None,
    ) -> None:
        check_parts("announcements", repository, access, projections)
        if not callable(getattr(audience, "profile", None)):
            raise ArgumentTypeError("announcements need an AudienceSource (profile(client_id))")
        self.repository = repository
        self.access = access
        self.projections = projections
        self.audience = audience
        self.clock = clock or SystemClock()
        self.ids = ids or IdGenerator(self.clock)
        self.model = Announcements()
        self._lock = threading.Lock()

    # -- publishing ---------------------------------------------------------------------------
    def publish(
        self,
        actor: Actor,
        *,
        audience: Audience,
        starts_at: datetime,
        ends_at: datetime,
        texts: Mapping[str, AnnouncementText],
    ) -> str:
        """Publish an announcement; returns its id. ``texts`` by language (``en`` required: the
        fallback), ``ends_at`` after ``starts_at``."""
        if not isinstance(actor, Actor):
            raise ArgumentTypeError("publishing needs an Actor")
        self.access.require(actor, PUBLISH)
        if not isinstance(audience, Audience):
            raise ArgumentTypeError("the audience is an Audience")
        start, end = to_utc(starts_at, "starts_at"), to_utc(ends_at, "ends_at")
        if end <= start:
            raise ValidationError("an announcement ends after it starts")
        if not isinstance(texts, Mapping) or not all(
            isinstance(t, AnnouncementText) for t in texts.values()
        ):
            raise ArgumentTypeError("texts map a language to an AnnouncementText")
        if len(texts) > _MAX_LANGUAGES:
            raise ValidationError(f"at most {_MAX_LANGUAGES} languages")
        by_language = {_language_key(k): t for k, t in texts.items()}
        if len(by_language) != len(texts):
            raise ValidationError("each language once")
        if "en" not in by_language:
            raise ValidationError("an announcement has an English text (the fallback)")
        announcement_id = self.ids()
        event = AnnouncementPublished(
            announcement_id,
            start,
            end,
            tuple(sorted((k, t.title, t.body) for k, t in by_language.items())),
            _strings(audience.countries),
            _strings(audience.languages),
            _strings(audience.segments),
            _strings(audience.tiers),
            audience.consent,
        )
        with UnitOfWork(self.repository, EventMetadata(actor.id, reason="announcement")) as uow:
            uow.record(Announcement.blank(announcement_id), event)
            uow.commit()
        return announcement_id

    def withdraw(self, actor: Actor, announcement_id: str) -> None:
        """End an announcement now (a no-op once it has ended)."""
        self.access.require(actor, PUBLISH)
        key = checked_text(announcement_id, "announcement id", 100)
        now = self.clock.now()
        for _ in range(_ATTEMPTS):
            state = self.repository.load(Announcement, key)
            if state is None or state.published is None:
                raise NotFoundError("no such announcement")
            if state.ends_at is not None and state.ends_at <= now:
                return
            try:
                with UnitOfWork(self.repository, EventMetadata(actor.id, reason="withdrawn")) as u:
                    at = max(now, state._published().starts_at)
                    u.record(state, AnnouncementWithdrawn(key, at))
                    u.commit()
            except ConcurrencyError:
                continue
            return
        raise ConcurrencyError("the announcement kept changing; try again")

    # -- reading and receipts -------------------------------------------------------------------
    def get(self, announcement_id: str) -> Announcement:
        key = checked_text(announcement_id, "announcement id", 100)
        state = self.repository.load(Announcement, key)
        if state is None or state.published is None:
            raise NotFoundError("no such announcement")
        return state

    def _admits(self, announcement: Announcement, profile: Profile | None, at: datetime) -> bool:
        return (
            profile is not None
            and announcement.live_at(at)
            and announcement.audience.admits(profile)
        )

    def mark_read(self, actor: Actor, client_id: str, announcement_id: str) -> bool:
        """Record that the client read the announcement; True if recorded now, False if it was
        read before. Refused (IllegalTransitionError) for a client outside the audience or
        outside the window."""
        key = checked_text(client_id, "client id", 100)
        self.access.require(actor, ACK, client_id=key)
        announcement = self.get(announcement_id)
        now = self.clock.now()
        if not self._admits(announcement, self.audience.profile(key), now):
            raise IllegalTransitionError("the announcement is not shown to this client now")
        for _ in range(_ATTEMPTS):
            receipts = self.repository.load(ReadReceipts, key) or ReadReceipts.blank(key)
            if announcement.id in receipts.read:
                return False
            try:
                with UnitOfWork(self.repository, EventMetadata(actor.id, reason="read")) as uow:
                    uow.record(receipts, AnnouncementRead(key, announcement.id, now))
                    uow.commit()
            except ConcurrencyError:
                continue
            return True
        raise ConcurrencyError("the client's receipts kept changing; try again")

    def unread(
        self, actor: Actor, client_id: str, *, at: datetime | None = None
    ) -> list[tuple[str, AnnouncementText]]:
        """The client's unread announcements shown at ``at`` (default now), in its language,
        oldest start first, as (announcement id, text)."""
        key = checked_text(client_id, "client id", 100)
        self.access.require(actor, READ, client_id=key)
        when = self.clock.now() if at is None else to_utc(at, "at")
        with self._lock:
            self.projections.catch_up(self.model)
            items = list(self.model.items.values())
            read = set(self.model.reads.get(key, ()))
        profile = self.audience.profile(key)
        if profile is None:
            return []
        shown = [a for a in items if a.id not in read and self._admits(a, profile, when)]
        shown.sort(key=lambda a: (a._published().starts_at, a.id))
        return [(a.id, a.text_for(profile.language)) for a in shown]
