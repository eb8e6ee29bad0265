"""The ``Notifier`` port: where the outbox relay hands a message for delivery (an e-mail or SMS
gateway, a push service, a message broker a host's sender consumes).

Delivery is **at least once on the wire**: a relay that crashes after handing a message over
and before recording it hands it over again. Every :class:`Envelope` carries its outbox
``key`` (rule, client, period); a consumer that keeps the keys it has acted on delivers each
message **exactly once**. :class:`MemoryNotifier` is the reference implementation of both
sides; ``fxcrm_core.testing.notifier_contract`` is the contract suite every adapter passes.
"""

from __future__ import annotations

import enum
import threading
from datetime import datetime
from typing import Protocol

import attrs

from fxcrm_core.kernel.errors import FxCrmError

__all__ = [
    "Channel",
    "DeliveryError",
    "Envelope",
    "MemoryNotifier",
    "MessageKind",
    "Notifier",
    "Receipt",
]


class Channel(enum.Enum):
    """How a message reaches the client."""

    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    IN_APP = "in_app"


class MessageKind(enum.Enum):
    """Marketing needs the client's marketing consent in force when it is sent; a service
    message (a document expiring, a withdrawal paid) does not."""

    MARKETING = "marketing"
    SERVICE = "service"


@attrs.frozen
class Envelope:
    """One message handed to a notifier: its outbox ``key`` (the consumer's dedup key), the
    client, channel, template and its parameters (text pairs, never free PII the template
    does not need), the language to render in, and the ``attempt`` (1 first)."""

    key: str
    client_id: str
    channel: Channel
    template: str
    params: tuple[tuple[str, str], ...]
    locale: str
    kind: MessageKind
    attempt: int


@attrs.frozen
class Receipt:
    """A notifier's acknowledgement: the message left (``reference``: the gateway's id, or
    the key again), at ``at``."""

    key: str
    reference: str
    at: datetime


class DeliveryError(FxCrmError):
    """A notifier could not hand the message over. ``retryable`` (the default): try again
    later (a timeout, the broker away); not retryable: the message is dead (an address the
    gateway refuses for good). The message never holds the envelope's parameters."""

    default_message = "the notifier could not deliver the message"

    def __init__(self, message: str | None = None, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Notifier(Protocol):
    """The port: ``send`` hands one envelope over and returns its receipt, or raises
    :class:`DeliveryError`. It may be called again with the same key (a retry, a relay
    restarted after a crash): the consumer side dedups by key."""

    def send(self, envelope: Envelope, at: datetime) -> Receipt: ...


class MemoryNotifier:
    """The reference notifier, wire and consumer in one: ``wire`` lists every hand-over (a
    key may appear more than once), ``delivered`` the messages the consumer acted on, once per
    key. ``fail_next(n, retryable=...)`` makes the next ``n`` sends fail (for tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.wire: list[Envelope] = []
        self.delivered: dict[str, Envelope] = {}
        self._failures: list[bool] = []

    def fail_next(self, count: int = 1, *, retryable: bool = True) -> None:
        with self._lock:
            self._failures.extend([retryable] * count)

    def send(self, envelope: Envelope, at: datetime) -> Receipt:
        with self._lock:
            if self._failures:
                retryable = self._failures.pop(0)
                raise DeliveryError("the test gateway refused the message", retryable=retryable)
            self.wire.append(envelope)
            self.delivered.setdefault(envelope.key, envelope)  # the consumer's dedup by key
            # The reference names the key and attempt (a counter would differ from process to
            # process, and it is recorded in the log).
            return Receipt(envelope.key, f"memory:{envelope.key}#{envelope.attempt}", at)
