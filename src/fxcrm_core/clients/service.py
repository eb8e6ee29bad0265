"""The clients service: registration with deduplication, contact changes, consents, ownership,
stage moves and the appropriateness test; every command checks the actor's permission."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime

import attrs

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.clients.identity import (
    DuplicateClientError,
    IdentityClaim,
    IdentityKeys,
    new_claim_id,
    normalise_email,
)
from fxcrm_core.clients.model import (
    Client,
    ClientKind,
    ClientRegistered,
    Consent,
    ContactDetailsChanged,
    DuplicateSuspected,
    ProfileUpdated,
    RiskProfile,
    Stage,
)
from fxcrm_core.events import DomainEvent, EventMetadata, Repository, UnitOfWork
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ConcurrencyError, ValidationError
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.privacy.masking import DEFAULT_MASKING, MaskingPolicy, PiiKind, Reveal, mask
from fxcrm_core.privacy.pii import (
    Address,
    BirthDate,
    Email,
    PersonName,
    Phone,
    PiiExported,
    PiiRevealed,
    PiiReveals,
    PiiValue,
)
from fxcrm_core.privacy.pii import require_reason as _require_reason

__all__ = [
    "CLIENT_PII",
    "AppropriatenessTest",
    "ClientView",
    "Clients",
    "DedupPolicy",
    "NationalIdCheck",
    "Registration",
]

#: Checks a national identity number for a country (ISO 3166 alpha-2): its compact form if the
#: country has a known standard and the number passes it, None if the country has no known
#: standard; a typed ValidationError naming the reason otherwise. The broker wires
#: ``fxcrm_core.kyc.check_national_id``.
NationalIdCheck = Callable[[str, str], str | None]


class DedupPolicy(enum.Enum):
    REFUSE = "refuse"  # a second registration of the same person is refused
    FLAG = "flag"  # it is created, flagged for a merge review


@attrs.frozen
class Registration:
    kind: ClientKind
    country: str  # ISO 3166 alpha-2
    name: str = attrs.field(repr=False)
    email: str = attrs.field(repr=False)
    phone: str | None = attrs.field(default=None, repr=False)
    # The national identity number where the country has a known standard (validated), else
    # the number of an identity document; used for deduplication only.
    document_number: str | None = attrs.field(default=None, repr=False)
    owner_id: str | None = None
    lead: bool = False  # captured as a lead rather than registered


@attrs.frozen
class AppropriatenessTest:
    """Scores answers (points per question) into a risk profile."""

    experienced_from: int = 4
    sophisticated_from: int = 8

    def assess(self, answers: Mapping[str, int]) -> tuple[int, RiskProfile]:
        if not answers or any(isinstance(v, bool) or v < 0 for v in answers.values()):
            raise ValidationError("answers must be non-negative points per question")
        score = sum(answers.values())
        if score >= self.sophisticated_from:
            return score, RiskProfile.SOPHISTICATED
        if score >= self.experienced_from:
            return score, RiskProfile.EXPERIENCED
        return score, RiskProfile.INEXPERIENCED


#: A client's personal fields and the kind each is masked as; the fields :meth:`Clients.reveal`
#: names. Every other field of a :class:`ClientView` is not personal data.
CLIENT_PII: Mapping[str, PiiKind] = {
    "name": PiiKind.NAME,
    "email": PiiKind.EMAIL,
    "phone": PiiKind.PHONE,
    "birth_date": PiiKind.BIRTH_DATE,
    "address": PiiKind.ADDRESS,
}


@attrs.frozen(kw_only=True)
class ClientView:
    """A client as one actor may see it: personal fields masked for the actor's roles by the
    broker's :class:`~fxcrm_core.privacy.MaskingPolicy` (``None`` where the client has no
    value). What every read and command of :class:`Clients` returns to a host."""

    id: str
    kind: ClientKind
    country: str
    stage: Stage | None
    owner_id: str | None
    introducer_id: str | None
    risk_profile: RiskProfile | None
    owner_history: tuple[tuple[str, datetime], ...] = ()
    consents: tuple[tuple[Consent, datetime], ...] = ()  # in force, with when given
    merge_review: tuple[str, ...] = ()  # client ids flagged as possible duplicates
    name: str | None = attrs.field(default=None, repr=False)
    email: str | None = attrs.field(default=None, repr=False)
    phone: str | None = attrs.field(default=None, repr=False)
    birth_date: str | None = attrs.field(default=None, repr=False)
    address: str | None = attrs.field(default=None, repr=False)

    def has_consent(self, consent: Consent) -> bool:
        return any(c is consent for c, _ in self.consents)


class Clients:
    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        identities: IdentityKeys,
        *,
        policy: DedupPolicy = DedupPolicy.REFUSE,
        clock: Clock | None = None,
        ids: IdGenerator | None = None,
        test: AppropriatenessTest | None = None,
        masking: MaskingPolicy = DEFAULT_MASKING,
        national_ids: NationalIdCheck | None = None,
    ) -> None:
        self.repository = repository
        self.national_ids = national_ids
        self.access = access
        self.masking = masking
        self._maskers_policy = masking
        self._maskers_cache: dict[frozenset[str], tuple[Callable[[str], str], ...]] = {}
        self.identities = identities
        self.policy = policy
        self.clock = clock or SystemClock()
        self.ids = ids or IdGenerator(self.clock)
        self.test = test or AppropriatenessTest()

    def _uow(self, actor: Actor, reason: str) -> UnitOfWork:
        return UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason))

    def get(self, actor: Actor, client_id: str) -> ClientView:
        """The client as ``actor`` may see it: the row scope of ``client.read`` first, then each
        personal field masked for the actor's roles (an IB sees its downline's clients as
        ``A. L.``; a role the masking policy does not know sees ``****``). The clear value of a
        field goes only through :meth:`reveal`, a list in clear only through :meth:`export`."""
        self.access.require(actor, "client.read", client_id=client_id)
        return self._view(actor, self.repository.get(Client, client_id))

    def _maskers(self, roles: frozenset[str]) -> tuple[Callable[[str], str], ...]:
        """How these roles see each kind, under the policy in force (kept per role set: a
        read model of the policy, not of any client's data)."""
        if self._maskers_policy is not self.masking:
            self._maskers_cache.clear()
            self._maskers_policy = self.masking
        found = self._maskers_cache.get(roles)
        if found is None:
            found = tuple(self.masking.masker(roles, kind) for kind in CLIENT_PII.values())
            if len(self._maskers_cache) < 1024:
                self._maskers_cache[roles] = found
        return found

    def _view(self, actor: Actor, client: Client) -> ClientView:
        # Masked for the roles that let the actor read this client only: a second role that
        # may see more, but not this client's rows, lends nothing.
        roles = self.access.roles_allowing(actor, "client.read", client_id=client.id)
        # One masker per personal field, in CLIENT_PII's order (resolved once per role set).
        name, email, phone, birth_date, address = (
            None if value is None else masker(value.value)
            for masker, value in zip(
                self._maskers(roles),
                (client.name, client.email, client.phone, client.birth_date, client.address),
                strict=True,
            )
        )
        return ClientView(
            id=client.id,
            kind=client.kind,
            country=client.country,
            stage=client.stage,
            owner_id=client.owner_id,
            introducer_id=client.introducer_id,
            risk_profile=client.risk_profile,
            owner_history=client.owner_history,
            consents=client.consents,
            merge_review=client.merge_review,
            name=name,
            email=email,
            phone=phone,
            birth_date=birth_date,
            address=address,
        )

    # -- personal data in clear: audited ---------------------------------------------------
    def reveal(self, actor: Actor, client_id: str, field: str, reason: str) -> str:
        """One personal field of the client in clear, for an actor with ``pii.reveal`` on the
        client's rows. A :class:`~fxcrm_core.privacy.PiiRevealed` event (who: the metadata's
        actor; which field; why: the metadata's reason) is recorded before the value is
        returned; a refusal (no permission, out of scope, no reason, unknown or empty field)
        records nothing and reveals nothing."""
        self.access.require(actor, "pii.reveal", client_id=client_id)
        _require_reason(reason)
        kind = CLIENT_PII.get(field) if isinstance(field, str) else None
        if kind is None:
            raise ValidationError(f"a client's personal fields are {', '.join(CLIENT_PII)}")
        client = self.repository.get(Client, client_id)
        value = self._field(client, field)
        _require_reason(reason, _values(client))
        self._reveals().record(
            actor,
            reason,
            [PiiRevealed(client_id, kind.value, mask(kind, value, Reveal.PARTIAL), field)],
        )
        return value

    def export(self, actor: Actor, client_ids: Sequence[str], reason: str) -> list[Client]:
        """The clients' records with personal data in clear, for an actor with
        ``client.export`` on every one of them. One :class:`~fxcrm_core.privacy.PiiExported`
        event per client (actor and reason in its metadata) is recorded, all in one commit,
        before the records are returned; any refusal records and returns nothing."""
        if isinstance(client_ids, str) or not isinstance(client_ids, Sequence):
            raise ValidationError("name the clients to export as a list of ids")
        if not all(isinstance(c, str) and c for c in client_ids):
            raise ValidationError("a client id is non-empty text")
        ids = list(dict.fromkeys(client_ids))
        if not ids:
            raise ValidationError("name the clients to export")
        for client_id in ids:
            self.access.require(actor, "client.export", client_id=client_id)
        _require_reason(reason)
        records = [self.repository.get(Client, client_id) for client_id in ids]
        _require_reason(reason, [v for c in records for v in _values(c)])
        audit = [  # the fields that left in clear: none of an erased client's
            PiiExported(c.id, tuple(f for f in CLIENT_PII if _readable(getattr(c, f))))
            for c in records
        ]
        self._reveals().record(actor, reason, audit)
        return records

    def _reveals(self) -> PiiReveals:
        return PiiReveals(self.repository, self.access)

    @staticmethod
    def _field(client: Client, field: str) -> str:
        value: PiiValue | None = getattr(client, field)
        if value is None or value.erased:
            raise ValidationError(f"the client has no {field} to reveal")
        return value.reveal()

    # -- registration ----------------------------------------------------------------------
    def register(self, actor: Actor, reg: Registration) -> str:
        """Create a client; a person already registered is refused (or flagged, by policy)."""
        self.access.require(actor, "client.register")
        _check_registration(reg)
        email = Email.parse(reg.email)
        phone = Phone.parse(reg.phone, region=reg.country) if reg.phone else None
        name = PersonName.parse(reg.name)
        document = reg.document_number
        if document is not None and self.national_ids is not None:
            checked = self.national_ids(reg.country.upper(), document)
            if checked is not None:  # its compact form, separators ("-", "+") dropped
                document = "".join(ch for ch in checked if ch.isalnum())
        digests = self.identities.of(
            email=email, phone=phone, country=reg.country, document=document
        )
        client_id = self.ids()
        for _ in range(3):  # a racing registration may claim an identity between check and commit
            claims = self._claims(digests)
            taken = {k: c.client_id for k, c in claims.items() if c.client_id is not None}
            if taken and self.policy is DedupPolicy.REFUSE:
                raise self._duplicate(actor, taken)
            stage = Stage.LEAD if reg.lead else Stage.REGISTERED
            with self._uow(actor, "registration") as uow:
                client = uow.record(
                    Client.blank(client_id),
                    ClientRegistered(
                        client_id,
                        reg.kind,
                        reg.country.upper(),
                        stage,
                        reg.owner_id,
                        name,
                        email,
                        phone,
                    ),
                )
                for kind, digest in digests.items():
                    if kind not in taken:
                        claim = claims.get(kind) or IdentityClaim.blank(digest)
                        uow.record(claim, *claim.claim(client_id, kind, self._claim_id()))
                if taken:
                    uow.record(client, DuplicateSuspected(next(iter(taken.values())), tuple(taken)))
                try:
                    uow.commit()
                except ConcurrencyError:
                    continue
            return client_id
        raise ConcurrencyError("registration kept racing with another one; try again")

    def find_by_email(self, actor: Actor, email: str) -> str | None:
        """The id of the client registered with ``email`` (written any way that normalises to
        the same address), found through the deduplication index, for an actor who may read
        that client; None if there is none, or if the actor may not read it (an answer that
        tells no more than a read would: an IB finds its downline's clients, not others)."""
        self.access.require(actor, "client.read")
        if not isinstance(email, str):
            raise ValidationError("an e-mail address is text")
        digest = self.identities.digest("email", normalise_email(email))
        claim = self.repository.load(IdentityClaim, digest)
        if claim is None or claim.client_id is None:
            return None
        if not self.access.allows(actor, "client.read", client_id=claim.client_id):
            return None
        return claim.client_id

    def _claims(self, digests: Mapping[str, str]) -> dict[str, IdentityClaim]:
        """The stored claims of these digests, by kind (released ones included)."""
        claims: dict[str, IdentityClaim] = {}
        for kind, digest in digests.items():
            claim = self.repository.load(IdentityClaim, digest)
            if claim is not None:
                claims[kind] = claim
        return claims

    def _claim_id(self) -> str:
        """A fresh random claim id, drawn from the id generator's random source: seeded in
        demos and the parity harness, so they replay alike; the OS's otherwise."""
        return new_claim_id(self.ids.random_bits)

    def _duplicate(self, actor: Actor, taken: Mapping[str, str]) -> DuplicateClientError:
        """The refusal, naming the existing client only to an actor allowed to read it."""
        first = next(iter(taken.values()))
        shown = first if self.access.allows(actor, "client.read", client_id=first) else None
        return DuplicateClientError(tuple(taken), existing_client_id=shown)

    # -- changes ---------------------------------------------------------------------------
    def _change(
        self, actor: Actor, client: Client, reason: str, events: list[DomainEvent]
    ) -> ClientView:
        if events:
            with self._uow(actor, reason) as uow:
                client = uow.record(client, *events)
                uow.commit()
        return self._view(actor, client)

    def update_contact(
        self, actor: Actor, client_id: str, *, email: str | None = None, phone: str | None = None
    ) -> ClientView:
        """Change e-mail and/or phone; a new identifier another client owns is refused, and the
        new identifiers are claimed for this client in the same atomic append."""
        self.access.require(actor, "client.update", client_id=client_id)
        client = self.repository.get(Client, client_id)
        if email is None and phone is None:
            raise ValidationError("give an e-mail, a phone or both")
        clean_email = Email.parse(email) if email is not None else None
        clean_phone = Phone.parse(phone, region=client.country) if phone is not None else None
        digests: dict[str, str] = {}
        if clean_email is not None:
            digests["email"] = self.identities.digest(
                "email", normalise_email(clean_email.reveal())
            )
        if clean_phone is not None:
            digests["phone"] = self.identities.digest("phone", clean_phone.reveal())
        claims = self._claims(digests)
        taken = {
            k: c.client_id
            for k, c in claims.items()
            if c.client_id is not None and c.client_id != client_id
        }
        if taken:
            raise self._duplicate(actor, taken)
        with self._uow(actor, "contact details changed") as uow:
            client = uow.record(client, ContactDetailsChanged(client_id, clean_email, clean_phone))
            for kind, digest in digests.items():
                claim = claims.get(kind) or IdentityClaim.blank(digest)
                events = claim.claim(client_id, kind, self._claim_id())
                if events:
                    uow.record(claim, *events)
            uow.commit()
        return self._view(actor, client)

    def update_profile(
        self,
        actor: Actor,
        client_id: str,
        *,
        name: str | None = None,
        birth_date: date | None = None,
        address: str | None = None,
    ) -> ClientView:
        """Change the personal profile (stored encrypted); an adult birth date is required."""
        self.access.require(actor, "client.update", client_id=client_id)
        client = self.repository.get(Client, client_id)
        if name is None and birth_date is None and address is None:
            raise ValidationError("give a name, a birth date or an address")
        if birth_date is not None:
            if not isinstance(birth_date, date) or isinstance(birth_date, datetime):
                raise ValidationError("a birth date is a date (datetime.date)")
            today = self.clock.now().date()
            adult = date(today.year - 18, today.month, min(today.day, 28))
            if not date(1900, 1, 1) <= birth_date <= adult:
                raise ValidationError("the birth date must be of an adult, after 1900")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValidationError("an address must not be empty")
        event = ProfileUpdated(
            client_id,
            PersonName.parse(name) if name is not None else None,
            BirthDate.of(birth_date) if birth_date is not None else None,
            Address.parse(address) if address is not None else None,
        )
        return self._change(actor, client, "profile updated", [event])

    def move(self, actor: Actor, client_id: str, stage: Stage) -> ClientView:
        self.access.require(actor, "client.update", client_id=client_id)
        client = self.repository.get(Client, client_id)
        return self._change(actor, client, "stage", client.move_to(stage))

    def give_consent(self, actor: Actor, client_id: str, consent: Consent) -> ClientView:
        self.access.require(actor, "client.update", client_id=client_id)
        client = self.repository.get(Client, client_id)
        events = client.give_consent(consent, self.clock.now())
        return self._change(actor, client, "consent given", events)

    def withdraw_consent(self, actor: Actor, client_id: str, consent: Consent) -> ClientView:
        self.access.require(actor, "client.update", client_id=client_id)
        client = self.repository.get(Client, client_id)
        events = client.withdraw_consent(consent, self.clock.now())
        return self._change(actor, client, "consent withdrawn", events)

    def assign_owner(self, actor: Actor, client_id: str, owner_id: str) -> ClientView:
        self.access.require(actor, "client.assign", client_id=client_id)
        client = self.repository.get(Client, client_id)
        events = client.assign_owner(owner_id, self.clock.now())
        return self._change(actor, client, "owner assigned", events)

    def assess_risk(self, actor: Actor, client_id: str, answers: Mapping[str, int]) -> ClientView:
        self.access.require(actor, "client.update", client_id=client_id)
        score, profile = self.test.assess(answers)
        client = self.repository.get(Client, client_id)
        events = client.assess_risk(score, profile)
        return self._change(actor, client, "appropriateness test", events)


def _readable(value: PiiValue | None) -> bool:
    return value is not None and not value.erased


def _check_registration(reg: object) -> None:
    """A registration's shape, before any value is parsed (each value's own parser then checks
    its content): a typed error for a wrong type, never a builtin one."""
    if not isinstance(reg, Registration):
        raise ValidationError("a registration is a Registration")
    if not isinstance(reg.kind, ClientKind):
        raise ValidationError("a registration's kind is a ClientKind")
    if not isinstance(reg.country, str) or len(reg.country) != 2 or not reg.country.isalpha():
        raise ValidationError("country must be an ISO 3166 alpha-2 code")
    if not reg.country.isascii():
        raise ValidationError("country must be an ISO 3166 alpha-2 code")
    for optional in (reg.phone, reg.document_number, reg.owner_id):
        if optional is not None and not isinstance(optional, str):
            raise ValidationError("a registration's optional fields are text or None")
    if not isinstance(reg.lead, bool):
        raise ValidationError("a registration's lead flag is True or False")


def _values(client: Client) -> list[PiiValue]:
    """The client's personal values (what a reveal's or an export's reason must not quote)."""
    return [v for f in CLIENT_PII if (v := getattr(client, f)) is not None]
