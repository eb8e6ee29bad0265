"""The outbox relay: hands due messages to the ``Notifier`` port and records each outcome (sent,
failed and retried, dead, deferred by the courtesy rules, cancelled for want of consent) on the
message's own ``outbox-<key>`` stream, one commit per outcome.

Delivery is at least once on the wire (a relay killed after a hand-over and before its commit
hands the message over again on its next run) and exactly once per key at a consumer that
dedups by key. Two relays on one store race on each stream's version: one commits the outcome,
the other skips the message.

Depends on ``kernel``, ``events`` and ``clients`` (the marketing consent, by default).
"""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from fxcrm_core.clients.model import Client, Consent, ConsentWithdrawn
from fxcrm_core.engagement.notifier import (
    Channel,
    DeliveryError,
    MessageKind,
    Notifier,
    Receipt,
)
from fxcrm_core.engagement.outbox import (
    MessageCancelled,
    MessageDeferred,
    MessageFailed,
    MessageQueued,
    MessageSent,
    MessageStatus,
    OutboxMessage,
)
from fxcrm_core.events import (
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
    FxCrmError,
    ValidationError,
)
from fxcrm_core.kernel.time import to_utc, zone_info
from fxcrm_core.privacy.erasure import ErasureRecord

__all__ = [
    "Backoff",
    "Courtesy",
    "DueMessage",
    "DueMessages",
    "FrequencyCap",
    "LEAST_AWAKE",
    "LONGEST_CAP_WINDOW",
    "LONGEST_DELAY",
    "OutboxRelay",
    "RelayLookupError",
    "RelayReport",
    "SentMessages",
]

_SYSTEM = "system:outbox-relay"
_UTC = ZoneInfo("UTC")
_OUTBOX_TYPES = frozenset(
    {"MessageQueued", "MessageSent", "MessageFailed", "MessageDeferred", "MessageCancelled"}
)


# -- read models ---------------------------------------------------------------------------------


@attrs.frozen
class DueMessage:
    """A message still QUEUED: due at ``next_at``; ``position`` is where it was queued in the
    log; ``cause``: the event a policy queued it for (``stream/version``, from the metadata's
    causation id), None when a command or the daily job queued it."""

    key: str
    client_id: str
    channel: Channel
    kind: MessageKind
    priority: int
    next_at: datetime
    position: int
    cause: str | None = None


class DueMessages:
    """A memory read model of the messages still QUEUED with their next_at and priority,
    rebuilt from the log in each process. It only chooses what to look at: the relay loads a
    message's stream before deciding (the append checks its version)."""

    name = "outbox-due"
    event_types: frozenset[str] | None = _OUTBOX_TYPES

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages: dict[str, DueMessage] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, MessageQueued):
            meta = recorded.metadata
            cause = meta.causation_id if meta.actor.startswith("policy:") else None
            self.messages[event.key] = DueMessage(
                event.key, event.client_id, event.channel, event.kind, event.priority,
                event.not_before, recorded.position, cause,
            )  # fmt: skip
            return
        if isinstance(event, MessageSent | MessageCancelled):
            self.messages.pop(event.key, None)
            return
        found = self.messages.get(getattr(event, "key", ""))
        if found is None:
            return
        if isinstance(event, MessageFailed):
            if event.retry_at is None:
                del self.messages[event.key]
            else:
                self.messages[event.key] = attrs.evolve(found, next_at=event.retry_at)
        elif isinstance(event, MessageDeferred):
            self.messages[event.key] = attrs.evolve(found, next_at=event.until)

    def due(self, now: datetime, limit: int | None = None) -> list[DueMessage]:
        """The messages due at ``now``: highest priority first, then the earliest due, then by
        key (a stable order, the same in every process)."""
        found = sorted(
            (m for m in self.messages.values() if m.next_at <= now),
            key=lambda m: (-m.priority, m.next_at, m.key),
        )
        return found if limit is None else found[:limit]

    def of_client(self, client_id: str) -> list[DueMessage]:
        """The client's queued messages (due or not), by key."""
        return sorted(
            (m for m in self.messages.values() if m.client_id == client_id), key=lambda m: m.key
        )


class SentMessages:
    """A memory read model of when each client was sent MARKETING messages, per channel
    (counted from ``MessageSent``): what the frequency caps count.

    Memory is bounded: a marketing message's (client, channel) is forgotten once it is sent,
    cancelled or dead, and send times older than ``horizon`` (the longest cap window the relay
    uses) before the newest send in the log are dropped (None: all are kept)."""

    name = "outbox-sent-times"
    event_types: frozenset[str] | None = frozenset(
        {"MessageQueued", "MessageSent", "MessageFailed", "MessageCancelled"}
    )

    def __init__(self, horizon: timedelta | None = None) -> None:
        if horizon is not None and (not isinstance(horizon, timedelta) or horizon < timedelta(0)):
            raise ValidationError("the horizon is a timedelta, zero or more")
        self.horizon = horizon
        self.reset()

    def reset(self) -> None:
        self._marketing: dict[str, tuple[str, Channel]] = {}
        self.sent: defaultdict[tuple[str, Channel], list[datetime]] = defaultdict(list)
        self._newest: datetime | None = None
        self._since_sweep = 0

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, MessageQueued):
            if event.kind is MessageKind.MARKETING:
                self._marketing[event.key] = (event.client_id, event.channel)
        elif isinstance(event, MessageSent):
            found = self._marketing.pop(event.key, None)
            if found is not None:
                self._sent(found, event.at)
        elif isinstance(event, MessageCancelled):
            self._marketing.pop(event.key, None)
        elif isinstance(event, MessageFailed) and event.retry_at is None:
            self._marketing.pop(event.key, None)  # dead: never sent

    def _sent(self, found: tuple[str, Channel], at: datetime) -> None:
        times = self.sent[found]
        times.append(at)
        if self._newest is None or at > self._newest:
            self._newest = at
        cutoff = self._cutoff()
        if cutoff is None:
            return
        times[:] = [t for t in times if t > cutoff]
        if not times:
            del self.sent[found]
        self._since_sweep += 1
        if self._since_sweep > max(1024, len(self.sent)):  # amortised: every key now and then
            self._since_sweep = 0
            for client_channel in list(self.sent):
                kept = [t for t in self.sent[client_channel] if t > cutoff]
                if kept:
                    self.sent[client_channel] = kept
                else:
                    del self.sent[client_channel]

    def _cutoff(self) -> datetime | None:
        if self.horizon is None or self._newest is None:
            return None
        try:
            return self._newest - self.horizon
        except OverflowError:
            return None

    def times(self, client_id: str, channel: Channel) -> list[datetime]:
        """When the client was sent marketing on ``channel``, in log order (within the
        horizon)."""
        return list(self.sent.get((client_id, channel), ()))


# -- rules as data -------------------------------------------------------------------------------


#: The longest retry delay a :class:`Backoff` may name and the longest window of a
#: :class:`FrequencyCap`: a year (bounded so the arithmetic on instants cannot overflow, and
#: so the sent-times read model keeps a bounded history).
LONGEST_DELAY = timedelta(days=366)
LONGEST_CAP_WINDOW = timedelta(days=366)
#: The least awake time quiet hours must leave each day (a relay must find the client awake).
LEAST_AWAKE = timedelta(hours=1)
_DAY = timedelta(days=1)
_LATEST = datetime.max.replace(tzinfo=_UTC)
_EARLIEST = datetime.min.replace(tzinfo=_UTC)


def _positive_delta(value: object, what: str, longest: timedelta) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValidationError(f"{what} is a positive timedelta")
    if value > longest:
        raise ValidationError(f"{what} is at most {longest.days} days")


@attrs.frozen
class Backoff:
    """Retry delays: ``base * factor ** (attempt - 1)``, at most ``max_delay``, plus a jitter of
    up to ``jitter_percent`` of the delay derived from the message's key and attempt (so a
    replay, or another relay, works out the same instant). After ``max_attempts`` failed
    attempts the message is dead. ``base`` and ``max_delay`` are at most
    :data:`LONGEST_DELAY` (a year)."""

    base: timedelta = timedelta(minutes=1)
    factor: int = 2
    max_delay: timedelta = timedelta(hours=6)
    max_attempts: int = 8
    jitter_percent: int = 10

    def __attrs_post_init__(self) -> None:
        _positive_delta(self.base, "the base delay", LONGEST_DELAY)
        _positive_delta(self.max_delay, "the longest delay", LONGEST_DELAY)
        if type(self.factor) is not int or not 1 <= self.factor <= 10:
            raise ValidationError("the backoff factor is a whole number from 1 to 10")
        if type(self.max_attempts) is not int or not 1 <= self.max_attempts <= 100:
            raise ValidationError("max_attempts is a whole number from 1 to 100")
        if type(self.jitter_percent) is not int or not 0 <= self.jitter_percent <= 100:
            raise ValidationError("jitter_percent is a whole number from 0 to 100")

    def delay(self, attempt: int, key: str = "") -> timedelta:
        """The wait after failed attempt ``attempt`` (1 first)."""
        if type(attempt) is not int or attempt < 1:
            raise ValidationError("an attempt is a whole number from 1")
        step = self.base
        for _ in range(attempt - 1):  # grown step by step: a huge power would overflow
            if step >= self.max_delay:
                break
            step *= self.factor
        step = min(step, self.max_delay)
        if not self.jitter_percent:
            return step
        digest = hashlib.sha256(f"{key}\x00{attempt}".encode()).digest()
        share = int.from_bytes(digest[:4], "big") % 10_000  # 0..9999, the same everywhere
        micros = step // timedelta(microseconds=1)
        return step + timedelta(microseconds=micros * self.jitter_percent * share // 1_000_000)

    def retry_at(self, attempt: int, at: datetime, key: str = "") -> datetime | None:
        """When to try again after failed attempt ``attempt`` at ``at``; None: the message is
        dead (that was the last attempt allowed)."""
        when = to_utc(at, "at")
        if type(attempt) is not int or attempt < 1:
            raise ValidationError("an attempt is a whole number from 1")
        if attempt >= self.max_attempts:
            return None
        try:
            return when + self.delay(attempt, key)
        except OverflowError:
            raise ValidationError("the retry would fall after the year 9999") from None


@attrs.frozen
class FrequencyCap:
    """At most ``limit`` MARKETING messages to one client on ``channel`` (None: on each
    channel, counted separately) in any rolling ``window`` (at most :data:`LONGEST_CAP_WINDOW`,
    a year; ``limit`` at most 10 000)."""

    limit: int
    window: timedelta
    channel: Channel | None = None

    def __attrs_post_init__(self) -> None:
        if type(self.limit) is not int or not 1 <= self.limit <= 10_000:
            raise ValidationError("a frequency cap allows from 1 to 10 000 messages")
        _positive_delta(self.window, "a cap's window", LONGEST_CAP_WINDOW)
        if self.channel is not None and not isinstance(self.channel, Channel):
            raise ValidationError("a cap's channel is a Channel or None")


def _local_time(value: object) -> time | None:
    if value is None:
        return None
    if not isinstance(value, time) or value.tzinfo is not None:
        raise ValidationError("quiet hours are given as naive local times")
    return value


@attrs.frozen
class Courtesy:
    """When a client may be messaged.

    - **quiet hours**: from ``quiet_start`` to ``quiet_end`` (local wall-clock times in the
      client's time zone; ``21:00``-``08:00`` spans midnight), a message is deferred to the end
      of the quiet period. DST is the zone's: a quiet period ends at the first instant after
      now at which the client's clock shows ``quiet_end`` (or later, when that time is skipped;
      in a repeated fall-back hour, the next pass: the first or the second). Quiet hours leave
      at least :data:`LEAST_AWAKE` (an hour) of wall-clock time awake each day, else they are
      refused (:class:`ValidationError`): a relay must find the client awake.
    - **frequency caps**: see :class:`FrequencyCap`; a capped message is deferred until the
      oldest counted send leaves the window.

    MARKETING messages respect both. SERVICE messages (a document expiring, a withdrawal paid)
    are owed to the client: they ignore the caps, the quiet hours and the marketing consent,
    unless ``service_quiet_hours`` asks for quiet hours on them too. ``default_zone`` is used
    for a client whose zone is unknown or not a valid IANA name.

    Caps count the sends a relay's read model has seen: two relays sending to one client at
    the same instant may each send one message over a cap (a courtesy, not a guarantee).
    """

    quiet_start: time | None = attrs.field(default=time(21), converter=_local_time)
    quiet_end: time | None = attrs.field(default=time(8), converter=_local_time)
    caps: tuple[FrequencyCap, ...] = (
        FrequencyCap(1, timedelta(hours=24)),
        FrequencyCap(3, timedelta(days=7)),
    )
    service_quiet_hours: bool = False
    default_zone: str = "UTC"

    def __attrs_post_init__(self) -> None:
        if (self.quiet_start is None) != (self.quiet_end is None):
            raise ValidationError("quiet hours have both a start and an end, or neither")
        if self.quiet_start is not None and self.quiet_end is not None:
            quiet = (_clock_span(self.quiet_end) - _clock_span(self.quiet_start)) % _DAY
            if quiet and _DAY - quiet < LEAST_AWAKE:
                raise ValidationError("quiet hours leave at least an hour awake each day")
        if not isinstance(self.caps, tuple) or not all(
            isinstance(c, FrequencyCap) for c in self.caps
        ):
            raise ValidationError("caps are a tuple of FrequencyCap")
        _zone(self.default_zone)

    def quiet_until(self, at: datetime, zone: ZoneInfo) -> datetime | None:
        """The end of the quiet period ``at`` falls in (UTC), or None when it is not quiet."""
        start, end = self.quiet_start, self.quiet_end
        if start is None or end is None or start == end:
            return None
        local = to_utc(at, "at").astimezone(zone)
        now = local.time().replace(tzinfo=None)
        quiet = start <= now < end if start < end else (now >= start or now < end)
        if not quiet:
            return None
        return _next_wall(to_utc(at, "at"), local.date(), end, zone)

    def cap_until(
        self, channel: Channel, sent: Iterable[datetime], at: datetime
    ) -> datetime | None:
        """When a marketing message on ``channel`` is no longer capped (None: not capped now),
        given when that client was sent marketing on that channel."""
        times = sorted(sent)
        until: datetime | None = None
        for cap in self.caps:
            if cap.channel is not None and cap.channel is not channel:
                continue
            try:
                since = at - cap.window
            except OverflowError:
                since = _EARLIEST
            # A send after ``at`` counts too: a clock set back must not free a cap.
            inside = [t for t in times if t > since]
            if len(inside) >= cap.limit:
                try:  # then fewer than limit are inside
                    frees = inside[-cap.limit] + cap.window
                except OverflowError:
                    frees = _LATEST
                until = frees if until is None or frees > until else until
        return until


def _clock_span(value: time) -> timedelta:
    """How far into the day a wall-clock time is."""
    return timedelta(
        hours=value.hour, minutes=value.minute, seconds=value.second,
        microseconds=value.microsecond,
    )  # fmt: skip


def _walls(day: date, clock_time: time, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants on ``day`` at which the zone's clock shows ``clock_time``: one, or two
    in a repeated fall-back hour (``fold`` 0 and 1). A time skipped by a spring-forward jump
    reads with the offset before the jump (``fold=0``): the instant the clock shows as much
    later as the jump."""
    wall = datetime.combine(day, clock_time)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(_UTC)
    if second != first and second.astimezone(zone).replace(tzinfo=None) == wall:
        return [first, second]  # a repeated hour: both are real
    return [first]  # (fold=1 of a skipped time reads a wall time the clock never shows)


def _next_wall(at: datetime, day: date, clock_time: time, zone: ZoneInfo) -> datetime:
    """The first instant after ``at`` (local date ``day``) at which the zone's clock shows
    ``clock_time``, or jumps past it."""
    try:
        candidates = [
            instant
            for offset in (-1, 0, 1, 2)
            for instant in _walls(day + timedelta(days=offset), clock_time, zone)
            if instant > at
        ]
    except OverflowError:
        raise ValidationError("a quiet period ends after the year 9999") from None
    if not candidates:  # pragma: no cover - a zone's clock shows every time within two days
        raise ValidationError("a quiet period ends within a day")
    return min(candidates)


def _zone(name: object) -> ZoneInfo:
    return zone_info(name)


# -- the relay -----------------------------------------------------------------------------------


@attrs.frozen
class RelayReport:
    """What one run did: messages sent, failed (to be retried), dead, deferred, cancelled,
    skipped (no longer queued, not due by its stream, or decided by another relay first), and
    ``errors``: messages left queued, nothing recorded, because a host lookup (consent,
    reachability) failed for their client; they are tried again on the next run."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    cancelled: int = 0
    skipped: int = 0
    errors: int = 0

    @property
    def handled(self) -> int:
        return self.sent + self.failed + self.dead + self.deferred + self.cancelled


class RelayLookupError(FxCrmError):
    """A run handled every message it could, but a host lookup (consent, reachability) failed
    for some: those stay queued (nothing recorded) and are tried again next run. ``report`` is
    the run's :class:`RelayReport` (``errors`` counts them)."""

    default_message = "a consent or reachability lookup failed: those messages stay queued"

    def __init__(self, message: str | None = None, *, report: RelayReport | None = None) -> None:
        super().__init__(message)
        self.report = report if report is not None else RelayReport()


class _LookupError(FxCrmError):
    """A host lookup failed for one message's client (inside a run only)."""


class _HookError(FxCrmError):
    """The on_sent hook failed for one message, recorded failed (inside a run only)."""


#: Characters a receipt's reference may not hold (replaced by ``?``): control and format
#: characters, surrogates, line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _clean_reference(value: object) -> str:
    """A notifier's reference as stored: text, at most 200 characters, no control character."""
    if not isinstance(value, str):
        return ""
    return "".join("?" if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in value[:200])


def _retryable(error: BaseException) -> bool:
    """A DeliveryError's ``retryable``, read defensively: only ``False`` makes it dead."""
    try:
        flag = getattr(error, "retryable", True)
    except Exception:
        return True
    return flag is not False


def _metadata(reason: str) -> EventMetadata:
    return EventMetadata(_SYSTEM, reason=reason)


class OutboxRelay:
    """Hands due messages to a notifier and records each outcome.

    ``consent_of(client_id)`` tells whether the client's marketing consent is in force now (by
    default: the Client aggregate, read from the repository at send time); ``zone_of(client_id)``
    names the client's IANA time zone (default: ``courtesy.default_zone``). Only
    :class:`~fxcrm_core.kernel.errors.FxCrmError` subclasses leave the relay: a notifier that
    raises anything but :class:`DeliveryError` is recorded as a retryable ``notifier_error``
    (and a ``retryable`` flag that is neither ``True`` nor ``False`` reads as ``True``); a
    consent or reachability lookup that fails for one message's client leaves that message
    queued (nothing is recorded, nothing sent without an answer) and the run goes on with the
    others, then raises :class:`RelayLookupError` (an ``FxCrmError`` carrying the run's
    report, ``errors`` counting those messages); a zone lookup that fails uses the default
    zone.
    """

    def __init__(
        self,
        repository: Repository,
        notifier: Notifier,
        *,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        courtesy: Courtesy | None = None,
        consent_of: Callable[[str], bool] | None = None,
        zone_of: Callable[[str], str | None] | None = None,
        projections: ProjectionRunner | None = None,
        reachable: Callable[[str], bool] | None = None,
        on_sent: Callable[[MessageSent, UnitOfWork], None] | None = None,
    ) -> None:
        if not isinstance(repository, Repository):
            raise ArgumentTypeError("the outbox relay needs a repository")
        if not callable(getattr(notifier, "send", None)):
            raise ArgumentTypeError("a notifier has send(envelope, at)")
        if projections is not None and not isinstance(projections, ProjectionRunner):
            raise ArgumentTypeError("projections is the broker's ProjectionRunner")
        for value, what in (
            (consent_of, "consent_of"), (zone_of, "zone_of"), (reachable, "reachable")
        ):  # fmt: skip
            if value is not None and not callable(value):
                raise ArgumentTypeError(f"{what} is a function of a client id")
        self.repository = repository
        self.notifier = notifier
        self.clock = clock or SystemClock()
        self.backoff = backoff or Backoff()
        self.courtesy = courtesy or Courtesy()
        if not isinstance(self.backoff, Backoff) or not isinstance(self.courtesy, Courtesy):
            raise ArgumentTypeError("backoff is a Backoff and courtesy a Courtesy")
        self.consent_of = consent_of or self._marketing_consent
        # Whether the client may be messaged at all (default: not erased): a message of any
        # kind to an erased client is cancelled, never sent.
        self.reachable = reachable or self._not_erased
        # What else a message sent records, in the same commit (a survey the message carried).
        self.on_sent = on_sent
        self.zone_of = zone_of
        self.projections = projections or ProjectionRunner(repository.store, repository.codec)
        self.due_messages = DueMessages()
        self.sent_messages = SentMessages(self._horizon())
        self._lock = threading.RLock()

    # -- reading --------------------------------------------------------------------------------
    def _marketing_consent(self, client_id: str) -> bool:
        client = self.repository.load(Client, client_id)
        return client is not None and client.has_consent(Consent.MARKETING)

    def _not_erased(self, client_id: str) -> bool:
        record = self.repository.load(ErasureRecord, client_id)
        return record is None or not record.erased

    def _horizon(self) -> timedelta:
        """The longest cap window: how far back the sent times are kept."""
        return max((cap.window for cap in self.courtesy.caps), default=timedelta(0))

    def _catch_up(self) -> None:
        self.projections.catch_up(self.due_messages)
        horizon = self._horizon()  # (a host may swap the courtesy rules)
        if self.sent_messages.horizon is not None and horizon > self.sent_messages.horizon:
            self.sent_messages.horizon = None  # older times may be gone: read them again
            self.projections.rebuild(self.sent_messages)
        self.sent_messages.horizon = horizon
        self.projections.catch_up(self.sent_messages)

    def due(self, limit: int | None = None) -> list[DueMessage]:
        """The messages due now, in the order a run takes them."""
        with self._lock:
            self._catch_up()
            return self.due_messages.due(to_utc(self.clock.now(), "now"), limit)

    def _zone_of(self, client_id: str) -> ZoneInfo:
        name: object = None
        if self.zone_of is not None:
            try:
                name = self.zone_of(client_id)
            except Exception:  # a host's lookup failing: the default zone, not a crash
                name = None
        try:
            return _zone(name or self.courtesy.default_zone)
        except ValidationError:
            return _zone(self.courtesy.default_zone)

    # -- deciding -------------------------------------------------------------------------------
    def run_once(self, limit: int = 100) -> RelayReport:
        """Handle up to ``limit`` due messages (priority, then time order), one commit each.
        A message whose client's lookup fails is left queued and not counted in ``limit`` (at
        most ``limit`` of those are tried in one run); the run then raises
        :class:`RelayLookupError` with its report."""
        if type(limit) is not int or limit < 1:
            raise ValidationError("limit is a positive number of messages")
        counts = dict.fromkeys(
            ("sent", "failed", "dead", "deferred", "cancelled", "skipped", "errors"), 0
        )
        hook_failed = 0
        with self._lock:
            self._catch_up()
            now = to_utc(self.clock.now(), "now")
            for due in self.due_messages.due(now):
                if counts["errors"] >= limit or sum(counts.values()) - counts["errors"] >= limit:
                    break
                try:
                    outcome = self._handle(due.key, now)
                except _LookupError:
                    counts["errors"] += 1
                    continue
                except _HookError as failed:
                    hook_failed += 1
                    outcome = str(failed)  # the outcome recorded: failed, dead or skipped
                counts[outcome] += 1
                if outcome != "skipped":
                    self._catch_up()  # the caps count what was just sent
        report = RelayReport(**counts)
        if report.errors:
            raise RelayLookupError(report=report)
        if hook_failed:
            raise RelayLookupError(
                "the on_sent hook failed: those messages are recorded failed and retried",
                report=report,
            )
        return report

    def _handle(self, key: str, now: datetime) -> str:
        repository = self.repository
        state = repository.load(OutboxMessage, key)
        if (
            state is None
            or state.queued is None
            or state.status is not MessageStatus.QUEUED
            or state.next_at is None
            or state.next_at > now
        ):
            return "skipped"
        event, outcome = self._decide(state, state.queued, now)
        try:
            with UnitOfWork(repository, _metadata("outbox relay")) as uow:
                uow.record(state, event)
                if isinstance(event, MessageSent) and self.on_sent is not None:
                    self.on_sent(event, uow)
                uow.commit()
        except ConcurrencyError:
            repository.forget(state.stream_id)
            return "skipped"  # another relay recorded this message's outcome first
        except Exception:
            if not isinstance(event, MessageSent):
                raise
            # The on_sent hook failed: nothing of that commit is written. The message is
            # recorded failed and retried with backoff (handed over again: at least once on
            # the wire), never re-sent on every run, and the run goes on with the others.
            return self._hook_failed(state, event, now)
        return outcome

    def _hook_failed(self, state: OutboxMessage, sent: MessageSent, now: datetime) -> str:
        retry_at = self.backoff.retry_at(sent.attempt, now, sent.key)
        failed = MessageFailed(sent.key, sent.attempt, now, "on_sent_error", retry_at)
        try:
            with UnitOfWork(self.repository, _metadata("outbox relay")) as uow:
                uow.record(state, failed)
                uow.commit()
        except ConcurrencyError:
            self.repository.forget(state.stream_id)
            raise _HookError("skipped") from None  # another relay decided it first
        raise _HookError("failed" if retry_at is not None else "dead")

    def _decide(
        self, state: OutboxMessage, queued: MessageQueued, now: datetime
    ) -> tuple[DomainEvent, str]:
        key, client = queued.key, queued.client_id
        marketing = queued.kind is MessageKind.MARKETING
        if not self._reachable(client):
            return MessageCancelled(key, now, "client_erased"), "cancelled"
        if marketing and not self._consented(client):
            return MessageCancelled(key, now, "no_consent"), "cancelled"
        if marketing or self.courtesy.service_quiet_hours:
            quiet = self.courtesy.quiet_until(now, self._zone_of(client))
            if quiet is not None:
                return MessageDeferred(key, now, quiet, "quiet_hours"), "deferred"
        if marketing:
            sent = self.sent_messages.times(client, queued.channel)
            capped = self.courtesy.cap_until(queued.channel, sent, now)
            if capped is not None:
                return MessageDeferred(key, now, capped, "frequency_cap"), "deferred"
        envelope = state.envelope()
        reason: str
        try:
            receipt = self.notifier.send(envelope, now)
        except DeliveryError as exc:
            retryable = _retryable(exc)
            reason = "delivery_error" if retryable else "undeliverable"
        except Exception:  # a notifier's own fault: retried, never raised to the host
            retryable, reason = True, "notifier_error"
        else:
            if isinstance(receipt, Receipt) and receipt.key == key:
                reference = _clean_reference(receipt.reference)
                return MessageSent(key, envelope.attempt, now, reference), "sent"
            retryable, reason = True, "bad_receipt"
        retry_at = self.backoff.retry_at(envelope.attempt, now, key) if retryable else None
        failed = MessageFailed(key, envelope.attempt, now, reason, retry_at)
        return failed, ("failed" if retry_at is not None else "dead")

    def _consented(self, client_id: str) -> bool:
        try:
            return self.consent_of(client_id) is True
        except Exception as exc:
            raise _LookupError("the consent lookup failed") from exc

    def _reachable(self, client_id: str) -> bool:
        try:
            return self.reachable(client_id) is True
        except Exception as exc:
            raise _LookupError("the reachability lookup failed") from exc

    # -- reacting -------------------------------------------------------------------------------
    def on_consent_withdrawn(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """A policy handler for ``ConsentWithdrawn``: the client's queued MARKETING messages
        decided before the withdrawal are cancelled (``consent_withdrawn``) into ``uow``.
        Messages decided later are checked by the relay at send time.

        "Before" is by the log, the same inline and in a late worker: a message a policy queued
        for an event (the metadata's causation ``stream/version``) was decided at that event's
        position, wherever its own ``MessageQueued`` landed (a late worker writes it after the
        withdrawal); a message a command or the daily job queued, at its own position."""
        event = recorded.event
        if not isinstance(event, ConsentWithdrawn) or event.consent is not Consent.MARKETING:
            return
        prefix = f"{Client.category}-"
        if not recorded.stream_id.startswith(prefix):
            raise ValidationError("a consent is withdrawn on a client's stream")
        client_id = recorded.stream_id[len(prefix) :]
        with self._lock:
            self.projections.catch_up(self.due_messages)
            for due in self.due_messages.of_client(client_id):
                if due.kind is not MessageKind.MARKETING or not self._decided_before(due, recorded):
                    continue
                state = uow.load(OutboxMessage, due.key)
                if state is None or state.status is not MessageStatus.QUEUED:
                    continue
                uow.record(state, MessageCancelled(due.key, event.at, "consent_withdrawn"))

    def _decided_before(self, due: DueMessage, recorded: RecordedEvent[Any]) -> bool:
        """Whether ``due`` was decided before the event ``recorded`` in the log."""
        cause = _cause(due.cause)
        if cause is None:
            return due.position < recorded.position
        stream_id, version = cause
        if stream_id == recorded.stream_id:
            return version < recorded.version
        rows = self.repository.store.read_stream(stream_id, after_version=version - 1)
        if rows and rows[0].version == version and rows[0].position <= due.position:
            return rows[0].position < recorded.position
        return due.position < recorded.position  # a cause not in the log: its own position


def _cause(value: str | None) -> tuple[str, int] | None:
    """A policy's causation id, ``stream/version``, parsed (None when it is not one)."""
    if not value:
        return None
    stream_id, sep, number = value.rpartition("/")
    if not sep or not stream_id or not (number.isascii() and number.isdigit()):
        return None
    version = int(number)
    return (stream_id, version) if version >= 1 else None
