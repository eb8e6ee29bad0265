"""Deduplication on encrypted data: normalised identifiers, hashed with a secret key.

The same person written differently (``Ana.Lima+fx@GMAIL.com`` and ``analima@gmail.com``,
``+44 7911 123456`` and ``07911 123456`` in the UK) gives the same keyed hash; the index holds
only hashes, so it reveals nothing without the key (keep it with the master keys).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.privacy.pii import DocumentNumber, Email, Phone

__all__ = [
    "DuplicateClientError",
    "IdentityClaim",
    "IDENTITY_EVENTS",
    "IdentityClaimed",
    "IdentityKeys",
    "IdentityReleased",
    "normalise_email",
    "normalise_phone",
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
    local, _, domain = Email.parse(text).reveal().lower().rpartition("@")
    local = local.split("+", 1)[0]
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


@attrs.frozen
class IdentityClaimed(DomainEvent):
    client_id: str
    kind: str


@attrs.frozen
class IdentityReleased(DomainEvent):
    """The identity no longer belongs to ``client_id`` (its data was erased): it may be
    claimed again, and a refusal no longer points at that client."""

    client_id: str


IDENTITY_EVENTS = (IdentityClaimed, IdentityReleased)


@attrs.frozen(kw_only=True)
class IdentityClaim(Aggregate):
    """One stream per keyed hash: the client that holds the identity now (None: nobody, never
    claimed or released after an erasure)."""

    category = "identity"
    client_id: str | None = None
    kind: str = ""

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, IdentityClaimed):
            return self.evolve(client_id=event.client_id, kind=event.kind)
        if isinstance(event, IdentityReleased):
            return self.evolve(client_id=None)
        raise ValidationError(f"IdentityClaim cannot apply {type(event).__name__}")

    def claim(self, client_id: str, kind: str) -> list[DomainEvent]:
        if self.client_id is not None and self.client_id != client_id:
            raise ValidationError("the identity belongs to another client")
        return [] if self.client_id == client_id else [IdentityClaimed(client_id, kind)]

    def release(self) -> list[DomainEvent]:
        """Release the identity from its client (nothing to do if nobody holds it)."""
        return [] if self.client_id is None else [IdentityReleased(self.client_id)]
