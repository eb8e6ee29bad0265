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
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.privacy.erasure import ErasureRecord

__all__ = [
    "Backoff",
    "Courtesy",
    "DueMessage",
    "DueMessages",
    "FrequencyCap",
    "OutboxRelay",
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
    log."""

    key: str
    client_id: str
    channel: Channel
    kind: MessageKind
    priority: int
    next_at: datetime
    position: int


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
            self.messages[event.key] = DueMessage(
                event.key, event.client_id, event.channel, event.kind, event.priority,
                event.not_before, recorded.position,
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
    (counted from ``MessageSent``): what the frequency caps count."""

    name = "outbox-sent-times"
    event_types: frozenset[str] | None = frozenset({"MessageQueued", "MessageSent"})

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._marketing: dict[str, tuple[str, Channel]] = {}
        self.sent: defaultdict[tuple[str, Channel], list[datetime]] = defaultdict(list)

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, MessageQueued):
            if event.kind is MessageKind.MARKETING:
                self._marketing[event.key] = (event.client_id, event.channel)
        elif isinstance(event, MessageSent):
            found = self._marketing.pop(event.key, None)
            if found is not None:
                self.sent[found].append(event.at)

    def times(self, client_id: str, channel: Channel) -> list[datetime]:
        """When the client was sent marketing on ``channel``, in log order."""
        return list(self.sent.get((client_id, channel), ()))


# -- rules as data -------------------------------------------------------------------------------


def _positive_delta(value: object, what: str) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValidationError(f"{what} is a positive timedelta")


@attrs.frozen
class Backoff:
    """Retry delays: ``base * factor ** (attempt - 1)``, at most ``max_delay``, plus a jitter of
    up to ``jitter_percent`` of the delay derived from the message's key and attempt (so a
    replay, or another relay, works out the same instant). After ``max_attempts`` failed
    attempts the message is dead."""

    base: timedelta = timedelta(minutes=1)
    factor: int = 2
    max_delay: timedelta = timedelta(hours=6)
    max_attempts: int = 8
    jitter_percent: int = 10

    def __attrs_post_init__(self) -> None:
        _positive_delta(self.base, "the base delay")
        _positive_delta(self.max_delay, "the longest delay")
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
        return when + self.delay(attempt, key)


@attrs.frozen
class FrequencyCap:
    """At most ``limit`` MARKETING messages to one client on ``channel`` (None: on each
    channel, counted separately) in any rolling ``window``."""

    limit: int
    window: timedelta
    channel: Channel | None = None

    def __attrs_post_init__(self) -> None:
        if type(self.limit) is not int or self.limit < 1:
            raise ValidationError("a frequency cap allows at least one message")
        _positive_delta(self.window, "a cap's window")
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
      of the quiet period. DST is the zone's: a quiet period ends at the first instant the
      client's clock shows ``quiet_end`` (or later, when that time is skipped).
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
        day = local.date()
        for offset in (0, 1):
            candidate = _wall(day + timedelta(days=offset), end, zone)
            if candidate > at:
                return candidate
        raise ValidationError("a quiet period ends within a day")  # pragma: no cover

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
            inside = [t for t in times if at - cap.window < t <= at]
            if len(inside) >= cap.limit:
                frees = inside[-cap.limit] + cap.window  # then fewer than limit are inside
                until = frees if until is None or frees > until else until
        return until


def _wall(day: date, clock_time: time, zone: ZoneInfo) -> datetime:
    """The UTC instant on ``day`` at which the zone's clock shows ``clock_time``: the earlier of
    the two in a fall-back hour. A time skipped by a spring-forward jump reads with the offset
    before the jump (``fold=0``): the instant the clock shows as much later as the jump."""
    return datetime.combine(day, clock_time).replace(tzinfo=zone, fold=0).astimezone(_UTC)


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValidationError("a time zone is an IANA name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError("that is not a known time zone") from exc


# -- the relay -----------------------------------------------------------------------------------


@attrs.frozen
class RelayReport:
    """What one run did: messages sent, failed (to be retried), dead, deferred, cancelled, and
    skipped (no longer queued, not due by its stream, or decided by another relay first)."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    cancelled: int = 0
    skipped: int = 0

    @property
    def handled(self) -> int:
        return self.sent + self.failed + self.dead + self.deferred + self.cancelled


def _metadata(reason: str) -> EventMetadata:
    return EventMetadata(_SYSTEM, reason=reason)


class OutboxRelay:
    """Hands due messages to a notifier and records each outcome.

    ``consent_of(client_id)`` tells whether the client's marketing consent is in force now (by
    default: the Client aggregate, read from the repository at send time); ``zone_of(client_id)``
    names the client's IANA time zone (default: ``courtesy.default_zone``). Only
    :class:`~fxcrm_core.kernel.errors.FxCrmError` subclasses leave the relay: a notifier that
    raises anything but :class:`DeliveryError` is recorded as a retryable ``notifier_error``;
    a consent lookup that fails stops the run with an ``FxCrmError`` (nothing is sent without
    an answer), the message staying queued; a zone lookup that fails uses the default zone.
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
        self.zone_of = zone_of
        self.projections = projections or ProjectionRunner(repository.store, repository.codec)
        self.due_messages = DueMessages()
        self.sent_messages = SentMessages()
        self._lock = threading.RLock()

    # -- reading --------------------------------------------------------------------------------
    def _marketing_consent(self, client_id: str) -> bool:
        client = self.repository.load(Client, client_id)
        return client is not None and client.has_consent(Consent.MARKETING)

    def _not_erased(self, client_id: str) -> bool:
        record = self.repository.load(ErasureRecord, client_id)
        return record is None or not record.erased

    def _catch_up(self) -> None:
        self.projections.catch_up(self.due_messages)
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
        """Handle up to ``limit`` due messages (priority, then time order), one commit each."""
        if type(limit) is not int or limit < 1:
            raise ValidationError("limit is a positive number of messages")
        counts = dict.fromkeys(("sent", "failed", "dead", "deferred", "cancelled", "skipped"), 0)
        with self._lock:
            self._catch_up()
            now = to_utc(self.clock.now(), "now")
            for due in self.due_messages.due(now, limit):
                outcome = self._handle(due.key, now)
                counts[outcome] += 1
                if outcome != "skipped":
                    self._catch_up()  # the caps count what was just sent
        return RelayReport(**counts)

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
                uow.commit()
        except ConcurrencyError:
            repository.forget(state.stream_id)
            return "skipped"  # another relay recorded this message's outcome first
        return outcome

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
            retryable = bool(getattr(exc, "retryable", True))
            reason = "delivery_error" if retryable else "undeliverable"
        except Exception:  # a notifier's own fault: retried, never raised to the host
            retryable, reason = True, "notifier_error"
        else:
            if isinstance(receipt, Receipt) and receipt.key == key:
                reference = receipt.reference if isinstance(receipt.reference, str) else ""
                return MessageSent(key, envelope.attempt, now, reference[:200]), "sent"
            retryable, reason = True, "bad_receipt"
        retry_at = self.backoff.retry_at(envelope.attempt, now, key) if retryable else None
        failed = MessageFailed(key, envelope.attempt, now, reason, retry_at)
        return failed, ("failed" if retry_at is not None else "dead")

    def _consented(self, client_id: str) -> bool:
        try:
            return self.consent_of(client_id) is True
        except FxCrmError:
            raise
        except Exception as exc:
            raise FxCrmError("the consent lookup failed") from exc

    def _reachable(self, client_id: str) -> bool:
        try:
            return self.reachable(client_id) is True
        except FxCrmError:
            raise
        except Exception as exc:
            raise FxCrmError("the reachability lookup failed") from exc

    # -- reacting -------------------------------------------------------------------------------
    def on_consent_withdrawn(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """A policy handler for ``ConsentWithdrawn``: the client's queued MARKETING messages
        (queued before the withdrawal) are cancelled (``consent_withdrawn``) into ``uow``.
        Messages queued later are checked by the relay at send time."""
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
                if due.kind is not MessageKind.MARKETING or due.position > recorded.position:
                    continue
                state = uow.load(OutboxMessage, due.key)
                if state is None or state.status is not MessageStatus.QUEUED:
                    continue
                uow.record(state, MessageCancelled(due.key, event.at, "consent_withdrawn"))
