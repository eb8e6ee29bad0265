"""The transactional outbox: a message is recorded in the same commit as the decision to send
it, as the first event of its own stream ``outbox-<key>``, where the key is (rule, period,
client). Recording a key twice records nothing the second time, and two processes deciding the
same key at once cannot both commit (the stream's expected version is 0): a rule fires at most
once per client and period however often it is evaluated.

What happens after (sent, failed and retried, dead, cancelled) is recorded on the same stream by
the relay (``fxcrm_core.engagement.relay``)."""

from __future__ import annotations

import enum
import unicodedata
from datetime import datetime
from typing import Self

import attrs

from fxcrm_core.engagement.notifier import Channel, Envelope, MessageKind
from fxcrm_core.events import Aggregate, DomainEvent, UnitOfWork
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "OUTBOX_EVENTS",
    "MAX_PARAMS",
    "MessageCancelled",
    "MessageDeferred",
    "MessageFailed",
    "MessageQueued",
    "MessageSent",
    "MessageStatus",
    "Outbox",
    "OutboxMessage",
    "message_key",
]

#: The most template parameters a message carries (each a short text pair).
MAX_PARAMS = 32


def message_key(rule_id: str, period: str, client_id: str) -> str:
    """The outbox key of a rule's message to a client in a period: ``rule:period:client``.
    Rule ids and periods hold no ``:`` (so two keys never collide); the client id comes last.
    Each part is checked text, stripped (``" c-1 "`` is client ``c-1``).

    >>> message_key("welcome", "once", "c-1")
    'welcome:once:c-1'
    """
    return ":".join(_key_parts(rule_id, period, client_id))


def _key_parts(rule_id: str, period: str, client_id: str) -> tuple[str, str, str]:
    """The normalised (stripped, checked) rule id, period and client id of a key."""
    rule = checked_text(rule_id, "rule id", 64)
    label = checked_text(period, "period", 32)
    if ":" in rule or ":" in label:
        raise ValidationError("a rule id or a period holds no ':'")
    return rule, label, checked_text(client_id, "client id", 100)


#: Unicode categories a parameter value may not hold: control and format characters (NUL, a
#: newline, a terminal escape, a right-to-left override), surrogates, line and paragraph
#: separators. A template renders them into an e-mail, an SMS or a log line.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _param_value(value: object) -> str:
    """A parameter's value: text of at most 1000 characters without control or format
    characters; kept as given (not stripped; it may be empty)."""
    if not isinstance(value, str) or len(value) > 1000:
        raise ValidationError("a message parameter's value is text of at most 1000 characters")
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value):
        raise ValidationError("a message parameter's value holds a control character")
    return value


def _params(value: object) -> tuple[tuple[str, str], ...]:
    pairs = tuple(value) if isinstance(value, tuple | list) else None
    if pairs is None or len(pairs) > MAX_PARAMS:
        raise ValidationError(f"a message's parameters are at most {MAX_PARAMS} (name, text) pairs")
    out = []
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ValidationError("a message parameter is a (name, text) pair")
        out.append((checked_text(pair[0], "parameter name", 64), _param_value(pair[1])))
    return tuple(out)


class MessageStatus(enum.Enum):
    QUEUED = "queued"  # waiting to be sent (again, after a failure or a deferral) at next_at
    SENT = "sent"  # handed to the notifier and acknowledged
    DEAD = "dead"  # failed for good or too often
    CANCELLED = "cancelled"  # no longer to be sent (consent withdrawn, the client erased)


@attrs.frozen
class MessageQueued(DomainEvent):
    """The decision to send: rule ``rule_id`` sends ``template`` to ``client_id`` for
    ``period``, on ``channel``, not before ``not_before``."""

    key: str
    rule_id: str
    client_id: str
    period: str
    channel: Channel
    template: str
    params: tuple[tuple[str, str], ...]
    locale: str
    kind: MessageKind
    priority: int
    queued_at: datetime
    not_before: datetime


@attrs.frozen
class MessageSent(DomainEvent):
    key: str
    attempt: int
    at: datetime
    reference: str


@attrs.frozen
class MessageFailed(DomainEvent):
    """Attempt ``attempt`` failed (``reason``: a code, never the envelope); retried at
    ``retry_at``, or dead when that is None."""

    key: str
    attempt: int
    at: datetime
    reason: str
    retry_at: datetime | None


@attrs.frozen
class MessageDeferred(DomainEvent):
    """Not sent now for ``reason`` (quiet hours, a frequency cap): due again at ``until``."""

    key: str
    at: datetime
    until: datetime
    reason: str


@attrs.frozen
class MessageCancelled(DomainEvent):
    """Not to be sent (``reason``: consent_withdrawn, client_erased, ...)."""

    key: str
    at: datetime
    reason: str


OUTBOX_EVENTS: tuple[type[DomainEvent], ...] = (
    MessageQueued,
    MessageSent,
    MessageFailed,
    MessageDeferred,
    MessageCancelled,
)


@attrs.frozen(kw_only=True)
class OutboxMessage(Aggregate):
    """One message's life (id: its key)."""

    category = "outbox"
    queued: MessageQueued | None = None
    status: MessageStatus = MessageStatus.QUEUED
    attempts: int = 0
    next_at: datetime | None = None
    sent_at: datetime | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, MessageQueued):
            return self.evolve(queued=event, next_at=event.not_before)
        if isinstance(event, MessageSent):
            return self.evolve(
                status=MessageStatus.SENT, attempts=event.attempt, next_at=None, sent_at=event.at
            )
        if isinstance(event, MessageFailed):
            if event.retry_at is None:
                return self.evolve(status=MessageStatus.DEAD, attempts=event.attempt, next_at=None)
            return self.evolve(attempts=event.attempt, next_at=event.retry_at)
        if isinstance(event, MessageDeferred):
            return self.evolve(next_at=event.until)
        if isinstance(event, MessageCancelled):
            return self.evolve(status=MessageStatus.CANCELLED, next_at=None)
        raise ValidationError(f"OutboxMessage cannot apply {type(event).__name__}")

    def envelope(self) -> Envelope:
        """What the notifier is handed for the next attempt."""
        q = self.queued
        if q is None:
            raise ValidationError("no message was queued under that key")
        return Envelope(
            q.key, q.client_id, q.channel, q.template, q.params, q.locale, q.kind,
            self.attempts + 1,
        )  # fmt: skip


class Outbox:
    """Queues messages into a caller's unit of work (the decision's own commit)."""

    def queue(
        self,
        uow: UnitOfWork,
        *,
        rule_id: str,
        client_id: str,
        period: str,
        channel: Channel,
        template: str,
        params: tuple[tuple[str, str], ...] = (),
        locale: str = "en",
        kind: MessageKind = MessageKind.MARKETING,
        priority: int = 0,
        at: datetime,
        not_before: datetime | None = None,
    ) -> bool:
        """Record the message into ``uow`` unless its key is already recorded (or staged in
        this unit); True when recorded. Committing is the caller's.

        The rule id, period and client id are stored as in the key (checked and stripped), so
        the relay's lookups ask about the client the key names. Parameter values hold no
        control or format characters (:class:`ValidationError`)."""
        rule_id, period, client_id = _key_parts(rule_id, period, client_id)
        key = f"{rule_id}:{period}:{client_id}"
        if not isinstance(channel, Channel) or not isinstance(kind, MessageKind):
            raise ValidationError("a message has a Channel and a MessageKind")
        if type(priority) is not int or not -100 <= priority <= 100:
            raise ValidationError("a priority is a whole number from -100 to 100")
        when = to_utc(at, "at")
        event = MessageQueued(
            key, rule_id, client_id, period, channel, checked_text(template, "template", 100),
            _params(params), checked_text(locale, "locale", 35), kind, priority, when,
            when if not_before is None else to_utc(not_before, "not_before"),
        )  # fmt: skip
        state = uow.load(OutboxMessage, key)
        if state is not None and state.version > 0:
            return False
        if uow.staged_on(OutboxMessage.stream_id_for(key)):
            return False
        uow.record(OutboxMessage.blank(key), event)
        return True
