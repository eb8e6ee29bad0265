"""Deduplication on encrypted data: normalised identifiers, hashed with a secret key.

The same person written differently (``Ana.Lima+fx@GMAIL.com`` and ``analima@gmail.com``,
``+44 7911 123456`` and ``07911 123456`` in the UK) gives the same keyed hash; the index holds
only hashes, so it reveals nothing without the key (keep it with the master keys).

Who holds an identity is sealed under the claim's own data key (a random claim id, not the
client's): anyone with the dedup key can find a digest's stream, so an erasure shreds the keys
of the client's claims with the client's own, and the stream no longer names the client.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import unicodedata
import uuid
from collections.abc import Callable
from typing import Any, Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent, EventRegistry, pii
from fxcrm_core.events.event import Erased
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.privacy.pii import DocumentNumber, Email, Phone

__all__ = [
    "DuplicateClientError",
    "IdentityClaim",
    "IDENTITY_EVENTS",
    "IDENTITY_EVENTS_VERSION",
    "IdentityClaimed",
    "IdentityKeys",
    "IdentityReleased",
    "new_claim_id",
    "normalise_email",
    "normalise_phone",
    "register_identity_events",
]

_DOTLESS = {"gmail.com", "googlemail.com"}


class DuplicateClientError(FxCrmError, ValueError):
    """A registration matched an existing client. The message names the matching kinds only;
    ``existing_client_id`` is set only for an actor allowed to read that client (staff), never
    for a portal: a refusal must not tell a stranger which client holds an e-mail address."""

    default_message = "this person is already registered"

    def __init__(
        self, matched_on: tuple[str, ...], *, existing_client_id: str | None = None
    ) -> None:
        super().__init__(f"already registered (same {', '.join(matched_on)})")
        self.existing_client_id = existing_client_id
        self.matched_on = matched_on


def normalise_email(text: str) -> str:
    """Lower case, no ``+tag``; Gmail ignores dots, and googlemail.com is gmail.com.

    >>> normalise_email(" Ana.Lima+fx@GoogleMail.com ")
    'analima@gmail.com'
    """
    address = unicodedata.normalize("NFKC", Email.parse(text).reveal()).lower()
    local, _, domain = address.rpartition("@")
    local = local.split("+", 1)[0]
    # An internationalised domain and its xn-- form are one domain (a name IDNA cannot map is
    # hashed as written).
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    if domain in _DOTLESS:
        local, domain = local.replace(".", ""), "gmail.com"
    if not local:
        raise ValidationError("not a valid e-mail address")
    return f"{local}@{domain}"


def normalise_phone(text: str, country: str) -> str:
    """E.164, reading national formats in the client's country: :meth:`Phone.parse`, the one
    phone normaliser (registration, deduplication and display share it).

    >>> normalise_phone("07911 123456", "GB")
    '+447911123456'
    """
    return Phone.parse(text, region=country).reveal()


def _text(value: str | Email) -> str:
    return value.reveal() if isinstance(value, Email) else value


class IdentityKeys:
    """Keyed hashes of normalised identifiers (HMAC-SHA256 under the host's dedup key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValidationError("the dedup key must be at least 32 bytes")
        self._key = key

    def digest(self, kind: str, normalised: str) -> str:
        return hmac.new(self._key, f"{kind}:{normalised}".encode(), hashlib.sha256).hexdigest()

    def of(
        self,
        *,
        email: str | Email,
        phone: str | Phone | None,
        country: str,
        document: str | None,
    ) -> dict[str, str]:
        """Digest per kind (``email``, ``phone``, ``document``) of what is given (text as typed,
        or the value types: both go through the same normalisers)."""
        out = {"email": self.digest("email", normalise_email(_text(email)))}
        if isinstance(phone, Phone):
            out["phone"] = self.digest("phone", phone.reveal())
        elif phone:
            out["phone"] = self.digest("phone", normalise_phone(phone, country))
        if document:
            number = DocumentNumber.parse(document).reveal()
            out["document"] = self.digest("document", f"{country.upper()}:{number}")
        return out


def new_claim_id(bits: Callable[[int], int] | None = None) -> str:
    """A random claim id (a UUID version 4 form) drawn from ``bits`` (the OS's random source by
    default; a seeded source makes demos reproducible). Never derived from the client's id or
    from the time-ordered id generator, whose next id is the client's id plus one within a
    millisecond: the claim id is the one link left in clear between a digest and its key."""
    value = (bits or secrets.randbits)(128)
    value = (value & ~(0xF << 76) & ~(0b11 << 62)) | (0x4 << 76) | (0b10 << 62)
    return str(uuid.UUID(int=value))


@attrs.frozen
class IdentityClaimed(DomainEvent):
    """An identity (the digest that keys the stream) claimed by ``client_id``, sealed under the
    claim's own data key (``claim_id``, random): an erasure destroys that key with the client's,
    and the claim then reads as ``ERASED``, naming nobody.

    Version 1 held ``client_id`` in clear and had no claim id: :func:`upcast_claimed_v1` reads
    it with ``claim_id`` empty, so there is no key to shred and its bytes keep the id (the
    release stops a read through the SDK telling who holds the identity, not the old row's
    bytes naming the client)."""

    __subject__ = "claim_id"
    claim_id: str
    kind: str
    client_id: str = pii()


@attrs.frozen
class IdentityReleased(DomainEvent):
    """The identity no longer belongs to the client of claim ``claim_id`` (its data was
    erased): it may be claimed again, and a refusal no longer points at that client. Version 1
    named the client in clear; :func:`upcast_released_v1` drops it on read."""

    claim_id: str


IDENTITY_EVENTS = (IdentityClaimed, IdentityReleased)
IDENTITY_EVENTS_VERSION = 2


def upcast_claimed_v1(data: dict[str, Any]) -> dict[str, Any]:
    """IdentityClaimed v1 → v2: no claim id (the client id stays as stored, in clear)."""
    return {"claim_id": "", **data}


def upcast_released_v1(data: dict[str, Any]) -> dict[str, Any]:
    """IdentityReleased v1 → v2: the clear client id is dropped, no claim id."""
    return {"claim_id": ""}


def register_identity_events(registry: EventRegistry) -> None:
    """Register the identity events at version 2 with their upcasters from version 1."""
    for cls in IDENTITY_EVENTS:
        registry.register(cls, version=IDENTITY_EVENTS_VERSION)
    registry.upcaster("IdentityClaimed", 1)(upcast_claimed_v1)
    registry.upcaster("IdentityReleased", 1)(upcast_released_v1)


@attrs.frozen(kw_only=True)
class IdentityClaim(Aggregate):
    """One stream per keyed hash: the client that holds the identity now (None: nobody, never
    claimed, or released or shredded after an erasure) and the claim that says so."""

    category = "identity"
    client_id: str | None = None
    claim_id: str = ""
    kind: str = ""

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, IdentityClaimed):
            # A shredded claim names nobody, even without its release (an erasure records the
            # release first; this keeps a claim made while one ran from blocking the person).
            holder = None if isinstance(event.client_id, Erased) else event.client_id
            return self.evolve(client_id=holder, claim_id=event.claim_id, kind=event.kind)
        if isinstance(event, IdentityReleased):
            return self.evolve(client_id=None, claim_id="")
        raise ValidationError(f"IdentityClaim cannot apply {type(event).__name__}")

    def claim(self, client_id: str, kind: str, claim_id: str) -> list[DomainEvent]:
        """Claim the identity for ``client_id`` under the fresh random ``claim_id`` (nothing to
        do if the client holds it already)."""
        if self.client_id is not None and self.client_id != client_id:
            raise ValidationError("the identity belongs to another client")
        if self.client_id == client_id:
            return []
        return [IdentityClaimed(claim_id=claim_id, kind=kind, client_id=client_id)]

    def release(self) -> list[DomainEvent]:
        """Release the identity from its client (nothing to do if nobody holds it)."""
        return [] if self.client_id is None else [IdentityReleased(self.claim_id)]
