"""The Client aggregate: registration, contact details (PII), consents, ownership by a sales
rep, lifecycle stage and risk profile. Pure: commands check the state and return events."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Self, TypeVar

import attrs

from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.kernel.errors import IllegalTransitionError, ValidationError
from fxcrm_core.privacy.pii import Address, BirthDate, Email, PersonName, Phone, PiiValue

__all__ = [
    "CLIENT_EVENTS",
    "Client",
    "ClientKind",
    "ClientRegistered",
    "Consent",
    "ConsentGiven",
    "ConsentWithdrawn",
    "ContactDetailsChanged",
    "DuplicateSuspected",
    "IllegalTransitionError",
    "IntroducerAssigned",
    "OwnerAssigned",
    "ProfileUpdated",
    "RiskProfile",
    "RiskProfileAssessed",
    "Stage",
    "StageChanged",
]


V = TypeVar("V", bound=PiiValue)


class ClientKind(enum.Enum):
    INDIVIDUAL = "individual"
    CORPORATE = "corporate"


class Stage(enum.Enum):
    LEAD = "lead"
    REGISTERED = "registered"
    VERIFIED = "verified"
    FUNDED = "funded"
    ACTIVE = "active"
    DORMANT = "dormant"
    CLOSED = "closed"


_NEXT: dict[Stage, frozenset[Stage]] = {
    Stage.LEAD: frozenset({Stage.REGISTERED, Stage.CLOSED}),
    Stage.REGISTERED: frozenset({Stage.VERIFIED, Stage.CLOSED}),
    Stage.VERIFIED: frozenset({Stage.FUNDED, Stage.CLOSED}),
    Stage.FUNDED: frozenset({Stage.ACTIVE, Stage.DORMANT, Stage.CLOSED}),
    Stage.ACTIVE: frozenset({Stage.DORMANT, Stage.CLOSED}),
    Stage.DORMANT: frozenset({Stage.ACTIVE, Stage.CLOSED}),
    Stage.CLOSED: frozenset(),
}


class Consent(enum.Enum):
    MARKETING = "marketing"
    DATA_PROCESSING = "data_processing"


class RiskProfile(enum.Enum):
    """Outcome of the appropriateness test (MiFID II style)."""

    INEXPERIENCED = "inexperienced"
    EXPERIENCED = "experienced"
    SOPHISTICATED = "sophisticated"


def _value(cls: type[V], value: str | V) -> V:
    """A value type from text as an event would read it back (:meth:`PiiValue.from_stored`):
    events built by a host (or by older code) with text hold the same value as after a read."""
    if isinstance(value, str):
        return cls.from_stored(value)
    if not isinstance(value, cls):
        raise ValidationError(f"a {cls.__name__} is required here")
    return value


def _name(value: str | PersonName) -> PersonName:
    return _value(PersonName, value)


def _email(value: str | Email) -> Email:
    return _value(Email, value)


def _maybe_name(value: str | PersonName | None) -> PersonName | None:
    return None if value is None else _value(PersonName, value)


def _maybe_email(value: str | Email | None) -> Email | None:
    return None if value is None else _value(Email, value)


def _maybe_phone(value: str | Phone | None) -> Phone | None:
    return None if value is None else _value(Phone, value)


def _maybe_birth_date(value: str | BirthDate | None) -> BirthDate | None:
    return None if value is None else _value(BirthDate, value)


def _maybe_address(value: str | Address | None) -> Address | None:
    return None if value is None else _value(Address, value)


# What ``pii()`` makes, spelled as attrs.field so that type checkers see the converters (an
# event may be built from text, as a host's code and the code before value types did).
_PII: Any = {"metadata": {"pii": True}, "repr": False}


@attrs.frozen
class ClientRegistered(DomainEvent):
    """A client's registration; the personal fields hold value types (each declares its kind),
    sealed under the client's key and stored as their text."""

    __subject__ = "client_id"
    client_id: str
    kind: ClientKind
    country: str
    stage: Stage
    owner_id: str | None
    name: PersonName = attrs.field(converter=_name, **_PII)
    email: Email = attrs.field(converter=_email, **_PII)
    phone: Phone | None = attrs.field(default=None, converter=_maybe_phone, **_PII)


@attrs.frozen
class ContactDetailsChanged(DomainEvent):
    __subject__ = "client_id"
    client_id: str
    email: Email | None = attrs.field(default=None, converter=_maybe_email, **_PII)
    phone: Phone | None = attrs.field(default=None, converter=_maybe_phone, **_PII)


@attrs.frozen
class ProfileUpdated(DomainEvent):
    """Personal profile: value types, stored as their text (a birth date as ISO
    ``YYYY-MM-DD``, as events of every version stored it)."""

    __subject__ = "client_id"
    client_id: str
    name: PersonName | None = attrs.field(default=None, converter=_maybe_name, **_PII)
    birth_date: BirthDate | None = attrs.field(default=None, converter=_maybe_birth_date, **_PII)
    address: Address | None = attrs.field(default=None, converter=_maybe_address, **_PII)


@attrs.frozen
class ConsentGiven(DomainEvent):
    consent: Consent
    at: datetime


@attrs.frozen
class ConsentWithdrawn(DomainEvent):
    consent: Consent
    at: datetime


@attrs.frozen
class OwnerAssigned(DomainEvent):
    owner_id: str
    previous_owner_id: str | None
    at: datetime


@attrs.frozen
class IntroducerAssigned(DomainEvent):
    """The client came through an introducing broker (None: the client is now direct)."""

    ib_id: str | None
    previous_ib_id: str | None
    at: datetime


@attrs.frozen
class StageChanged(DomainEvent):
    previous: Stage
    stage: Stage


@attrs.frozen
class RiskProfileAssessed(DomainEvent):
    score: int
    profile: RiskProfile


@attrs.frozen
class DuplicateSuspected(DomainEvent):
    """Registered although an identifier matched another client: flagged for a merge review."""

    other_client_id: str
    matched_on: tuple[str, ...]


CLIENT_EVENTS = (
    ClientRegistered,
    ContactDetailsChanged,
    ProfileUpdated,
    ConsentGiven,
    ConsentWithdrawn,
    OwnerAssigned,
    StageChanged,
    RiskProfileAssessed,
    DuplicateSuspected,
    IntroducerAssigned,
)


@attrs.frozen(kw_only=True)
class Client(Aggregate):
    category = "client"
    kind: ClientKind = ClientKind.INDIVIDUAL
    country: str = ""
    stage: Stage | None = None
    name: PersonName | None = attrs.field(default=None, repr=False)
    email: Email | None = attrs.field(default=None, repr=False)
    phone: Phone | None = attrs.field(default=None, repr=False)
    birth_date: BirthDate | None = attrs.field(default=None, repr=False)
    address: Address | None = attrs.field(default=None, repr=False)
    owner_id: str | None = None
    owner_history: tuple[tuple[str, datetime], ...] = ()
    introducer_id: str | None = None  # the IB the client came through, as last attributed
    consents: tuple[tuple[Consent, datetime], ...] = ()  # those in force, with when given
    risk_profile: RiskProfile | None = None
    merge_review: tuple[str, ...] = ()

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case ClientRegistered():
                return self.evolve(
                    kind=event.kind,
                    country=event.country,
                    stage=event.stage,
                    name=event.name,
                    email=event.email,
                    phone=event.phone,
                    owner_id=event.owner_id,
                )
            case ContactDetailsChanged(email=email, phone=phone):
                return self.evolve(email=email or self.email, phone=phone or self.phone)
            case ProfileUpdated(name=name, birth_date=born, address=address):
                return self.evolve(
                    name=name or self.name,
                    birth_date=born or self.birth_date,
                    address=address or self.address,
                )
            case ConsentGiven(consent=consent, at=at):
                return self.evolve(consents=(*self._without(consent), (consent, at)))
            case ConsentWithdrawn(consent=consent):
                return self.evolve(consents=self._without(consent))
            case OwnerAssigned(owner_id=owner, at=at):
                return self.evolve(owner_id=owner, owner_history=(*self.owner_history, (owner, at)))
            case StageChanged(stage=stage):
                return self.evolve(stage=stage)
            case RiskProfileAssessed(profile=profile):
                return self.evolve(risk_profile=profile)
            case IntroducerAssigned(ib_id=ib_id):
                return self.evolve(introducer_id=ib_id)
            case DuplicateSuspected(other_client_id=other):
                return self.evolve(merge_review=(*self.merge_review, other))
        raise ValidationError(f"Client cannot apply {type(event).__name__}")

    def _without(self, consent: Consent) -> tuple[tuple[Consent, datetime], ...]:
        return tuple(c for c in self.consents if c[0] is not consent)

    def has_consent(self, consent: Consent) -> bool:
        return any(c is consent for c, _ in self.consents)

    # -- commands --------------------------------------------------------------------------
    def _live(self) -> Stage:
        if self.stage is None:
            raise ValidationError("no such client")
        if self.stage is Stage.CLOSED:
            raise IllegalTransitionError("the client is closed")
        return self.stage

    def move_to(self, stage: Stage) -> list[DomainEvent]:
        current = self.stage
        if current is None:
            raise ValidationError("no such client")
        if stage not in _NEXT[current]:
            raise IllegalTransitionError(
                f"a client cannot go from {current.value} to {stage.value}"
            )
        return [StageChanged(current, stage)]

    def give_consent(self, consent: Consent, at: datetime) -> list[DomainEvent]:
        self._live()
        return [] if self.has_consent(consent) else [ConsentGiven(consent, at)]

    def withdraw_consent(self, consent: Consent, at: datetime) -> list[DomainEvent]:
        self._live()
        return [ConsentWithdrawn(consent, at)] if self.has_consent(consent) else []

    def assign_owner(self, owner_id: str, at: datetime) -> list[DomainEvent]:
        self._live()
        if not owner_id:
            raise ValidationError("an owner id is required")
        if owner_id == self.owner_id:
            return []
        return [OwnerAssigned(owner_id, self.owner_id, at)]

    def assign_introducer(self, ib_id: str | None, at: datetime) -> list[DomainEvent]:
        if self.stage is None:
            raise ValidationError("no such client")
        if ib_id == self.introducer_id:
            return []
        return [IntroducerAssigned(ib_id, self.introducer_id, at)]

    def assess_risk(self, score: int, profile: RiskProfile) -> list[DomainEvent]:
        self._live()
        return [RiskProfileAssessed(score, profile)]
