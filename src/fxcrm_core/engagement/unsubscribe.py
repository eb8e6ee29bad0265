"""Unsubscribe links: a marketing message carries a signed token of its outbox key; following it
withdraws the client's marketing consent and records the unsubscribe (who, when, which message
and channel) in the same commit, once per message.

The token is ``<key>.<mac>`` in URL-safe base64: the outbox key (rule id, period and client id:
ids, never contact details) and an HMAC-SHA256 of it under the broker's secret, so a link can
be checked without any stored state and cannot be forged for another message or client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime
from typing import Self

import attrs

from fxcrm_core.access.control import AccessControl, Actor
from fxcrm_core.clients.model import Client, Consent, Stage
from fxcrm_core.engagement.notifier import Channel
from fxcrm_core.engagement.outbox import OutboxMessage
from fxcrm_core.events import Aggregate, DomainEvent, EventMetadata, Repository, UnitOfWork
from fxcrm_core.kernel.clock import Clock
from fxcrm_core.kernel.errors import (
    ArgumentTypeError,
    ConcurrencyError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "UNSUBSCRIBE_EVENTS",
    "Unsubscribe",
    "UnsubscribeLinkError",
    "UnsubscribeLinks",
    "UnsubscribeRecorded",
]

#: Bytes of the HMAC kept in a token (128 bits: a forgery is a 2**-128 guess).
_MAC_BYTES = 16
#: The longest token read (a key of at most 300 characters, 4 UTF-8 bytes each, in base64).
_MAX_TOKEN = 2048
#: Domain separation: the secret may sign other things; this MAC means "unsubscribe this key".
_PURPOSE = b"fxcrm-unsubscribe\x00"
_ATTEMPTS = 3


class UnsubscribeLinkError(ValidationError):
    """The unsubscribe link is malformed or not signed by this broker (the token is never
    quoted)."""

    def __init__(self, message: str = "the unsubscribe link is not valid") -> None:
        super().__init__(message)


@attrs.frozen
class UnsubscribeRecorded(DomainEvent):
    """``client_id`` followed the unsubscribe link of message ``key`` (sent on ``channel``) at
    ``at``; its marketing consent is withdrawn in the same commit."""

    key: str
    client_id: str
    channel: Channel
    at: datetime


UNSUBSCRIBE_EVENTS: tuple[type[DomainEvent], ...] = (UnsubscribeRecorded,)


@attrs.frozen(kw_only=True)
class Unsubscribe(Aggregate):
    """One message's unsubscribe (id: the outbox key), on its ``unsubscribe-<key>`` stream."""

    category = "unsubscribe"
    recorded: UnsubscribeRecorded | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, UnsubscribeRecorded):
            return self.evolve(recorded=event)
        raise ValidationError(f"Unsubscribe cannot apply {type(event).__name__}")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeLinks:
    """:meth:`token` for a message's link, :meth:`unsubscribe` when the client follows it.

    With ``access`` the unsubscribe is checked as the client itself (``client.update`` on its
    own row); the token is what authenticates the click."""

    def __init__(
        self,
        repository: Repository,
        access: AccessControl | None = None,
        *,
        clock: Clock,
        secret: bytes,
    ) -> None:
        if not isinstance(repository, Repository):
            raise ArgumentTypeError("unsubscribe links need a repository")
        if access is not None and not isinstance(access, AccessControl):
            raise ArgumentTypeError("access is an AccessControl or None")
        if not callable(getattr(clock, "now", None)):
            raise ArgumentTypeError("unsubscribe links need a clock")
        if not isinstance(secret, bytes):
            raise ArgumentTypeError("the unsubscribe secret is bytes")
        if len(secret) < 16:
            raise ValidationError("the unsubscribe secret is at least 16 bytes")
        self.repository = repository
        self.access = access
        self.clock = clock
        self._secret = secret

    def _mac(self, key: str) -> bytes:
        digest = hmac.new(self._secret, _PURPOSE + key.encode("utf-8"), hashlib.sha256)
        return digest.digest()[:_MAC_BYTES]

    def token(self, key: str) -> str:
        """The token of message ``key``'s unsubscribe link (URL-safe: ``[A-Za-z0-9_.-]``)."""
        clean = checked_text(key, "outbox key", 300)
        return f"{_b64(clean.encode('utf-8'))}.{_b64(self._mac(clean))}"

    def key_of(self, token: str) -> str:
        """The outbox key a genuine token names (UnsubscribeLinkError otherwise)."""
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN:
            raise UnsubscribeLinkError()
        body, dot, mac_text = token.partition(".")
        if not dot or not token.isascii() or "=" in token:
            raise UnsubscribeLinkError()
        try:
            raw_key, mac = _unb64(body), _unb64(mac_text)
            key = raw_key.decode("utf-8")
        except (binascii.Error, ValueError):
            raise UnsubscribeLinkError() from None
        # A token is only ever compared whole, in constant time, after the shape checks above
        # (which depend on its length and alphabet, not on the secret).
        if not hmac.compare_digest(self._mac(key), mac):
            raise UnsubscribeLinkError()
        if _b64(raw_key) != body:  # one spelling per key (no trailing-bit variants)
            raise UnsubscribeLinkError()
        return key

    def unsubscribe(self, token: str) -> bool:
        """Record the unsubscribe of the token's message and withdraw its client's marketing
        consent, in one commit as the client; True when recorded, False when that message's
        unsubscribe was recorded already (a second click) and the consent is still withdrawn;
        a link followed again after the consent was given again records and withdraws again.
        A forged or malformed token: UnsubscribeLinkError; a genuine token of a message never
        queued or of a client the log does not know: NotFoundError. A closed client's consent
        is left as it is."""
        key = self.key_of(token)
        message = self.repository.load(OutboxMessage, key)
        if message is None or message.queued is None:
            raise NotFoundError("no message for that unsubscribe link")
        queued = message.queued
        actor = Actor.client(queued.client_id)
        if self.access is not None:
            self.access.require(actor, "client.update", client_id=queued.client_id)
        now = to_utc(self.clock.now(), "now")
        for attempt in range(_ATTEMPTS):
            try:
                return self._record(actor, key, queued.client_id, queued.channel, now)
            except ConcurrencyError:
                # Another click or a change to the client committed first: decide again on
                # what is stored now (a recorded unsubscribe then answers False).
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(
        self, actor: Actor, key: str, client_id: str, channel: Channel, now: datetime
    ) -> bool:
        metadata = EventMetadata(actor.id, reason="unsubscribe link")
        with UnitOfWork(self.repository, metadata) as uow:
            known = uow.load(Unsubscribe, key)
            client = uow.load(Client, client_id)
            if client is None or client.stage is None:
                raise NotFoundError("no such client")
            is_open = client.stage is not Stage.CLOSED
            again = known is not None and known.recorded is not None
            # A second click records nothing, unless the consent was given again since: an old
            # link followed then still means "no more marketing".
            if again and not (is_open and client.has_consent(Consent.MARKETING)):
                return False
            state = known if known is not None else Unsubscribe.blank(key)
            uow.record(state, UnsubscribeRecorded(key, client_id, channel, now))
            if is_open:
                withdrawn = client.withdraw_consent(Consent.MARKETING, now)
                if withdrawn:
                    uow.record(client, *withdrawn)
            uow.commit()
        return True

    def recorded(self, key: str) -> UnsubscribeRecorded | None:
        """The unsubscribe recorded for message ``key``, if any."""
        state = self.repository.load(Unsubscribe, checked_text(key, "outbox key", 300))
        return None if state is None else state.recorded
