"""Personal-data value types: validated however they are built, masked in ``repr`` and ``str``.

Logs and tracebacks show only the partial mask. :meth:`PiiValue.reveal` gives the clear value to
code that stores or forwards it (sealed in an event, sent to a PSP); a person sees a value in
full only through :class:`PiiReveals`, which checks ``pii.reveal`` and records the reveal as an
event. Errors never echo the input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import attrs
import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.exceptions import ValidationError as StdnumError

from fxcrm_core.access.control import AccessControl, Actor
from fxcrm_core.events import Aggregate, DomainEvent, EventMetadata, Repository, UnitOfWork, pii
from fxcrm_core.kernel.errors import ConcurrencyError, ValidationError
from fxcrm_core.privacy.masking import PiiKind, Reveal, mask

__all__ = [
    "REVEAL_EVENTS",
    "DocumentNumber",
    "Email",
    "Iban",
    "Pan",
    "PersonName",
    "Phone",
    "PiiExported",
    "PiiReveals",
    "PiiRevealed",
    "PiiValue",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ASCII_ALNUM = re.compile(r"[0-9A-Z]+")


def _canonical(instance: PiiValue, attribute: attrs.Attribute[str], value: Any) -> None:
    """The constructor takes the canonical text only: what :meth:`PiiValue.parse` produces."""
    cls = type(instance)
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValidationError(f"{cls.__name__}: a non-empty string without padding is required")
    if cls._normalise(value) != value:
        raise ValidationError(f"{cls.__name__}: not in canonical form (use {cls.__name__}.parse)")


@attrs.frozen(repr=False)
class PiiValue:
    """A piece of personal data of one kind; ``PiiValue(text)`` takes canonical text, ``parse``
    takes what a person typed. Either way an invalid value is a :class:`ValidationError`."""

    kind: ClassVar[PiiKind] = PiiKind.TEXT
    value: str = attrs.field(repr=False, validator=_canonical)

    @classmethod
    def parse(cls, text: str) -> Self:
        """The value from user input: trimmed and normalised, then validated."""
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"{cls.__name__}: a non-empty string is required")
        return cls(cls._normalise(text.strip()))

    @classmethod
    def _normalise(cls, text: str) -> str:
        """The canonical form of ``text`` (already trimmed), or ValidationError."""
        return text

    def reveal(self) -> str:
        """The clear value, for code that stores or forwards it; never to show a person (a
        person's view goes through :meth:`masked` or an audited :class:`PiiReveals`)."""
        return self.value

    def masked(self, reveal: Reveal = Reveal.PARTIAL) -> str:
        return mask(self.kind, self.value, reveal)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.masked()!r})"

    def __str__(self) -> str:
        return self.masked()


class Pan(PiiValue):
    """A payment card number (Luhn-checked, 12 to 19 digits)."""

    kind = PiiKind.PAN

    @classmethod
    def _normalise(cls, text: str) -> str:
        # NFKC: digits typed on a CJK keyboard (fullwidth) are the same digits; other digits
        # that str.isdigit() accepts (superscripts, other scripts) are not card digits.
        digits = re.sub(r"[\s-]", "", unicodedata.normalize("NFKC", text))
        if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
            raise ValidationError("not a valid card number")
        try:
            luhn.validate(digits)
        except StdnumError:
            raise ValidationError("not a valid card number") from None
        return digits


class Iban(PiiValue):
    """An International Bank Account Number, checked by python-stdnum (check digits, the
    country's length and layout, national checks); stored compact and upper case."""

    kind = PiiKind.IBAN

    @classmethod
    def _normalise(cls, text: str) -> str:
        compact = unicodedata.normalize("NFKC", text)
        try:
            number = str(stdnum_iban.validate(compact))
        except StdnumError:
            raise ValidationError("not a valid IBAN") from None
        if not _ASCII_ALNUM.fullmatch(number):  # stdnum upper-cases before it checks
            raise ValidationError("not a valid IBAN")
        return number


class Email(PiiValue):
    """An e-mail address; the domain is stored in lower case, the local part as given."""

    kind = PiiKind.EMAIL

    @classmethod
    def _normalise(cls, text: str) -> str:
        if not _EMAIL.match(text):
            raise ValidationError("not a valid e-mail address")
        local, _, domain = text.rpartition("@")
        return f"{local}@{domain.lower()}"


class Phone(PiiValue):
    """A phone number in E.164 form (``+447911123456``)."""

    kind = PiiKind.PHONE

    @classmethod
    def _normalise(cls, text: str) -> str:
        try:
            number = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            raise ValidationError("not a valid phone number (use +<country code>...)") from None
        if not phonenumbers.is_valid_number(number):
            raise ValidationError("not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class PersonName(PiiValue):
    """A person's name as they write it, single-spaced (masked in its own convention)."""

    kind = PiiKind.NAME

    @classmethod
    def _normalise(cls, text: str) -> str:
        return " ".join(text.split())


class DocumentNumber(PiiValue):
    """An identity document's number: Latin letters and digits, upper case, no spaces."""

    kind = PiiKind.DOCUMENT

    @classmethod
    def _normalise(cls, text: str) -> str:
        compact = "".join(unicodedata.normalize("NFKC", text).split()).upper()
        if not _ASCII_ALNUM.fullmatch(compact):
            raise ValidationError("a document number holds letters and digits only")
        return compact


# -- the audited reveal ------------------------------------------------------------------------


@attrs.frozen
class PiiRevealed(DomainEvent):
    """A person saw one of a client's values in full. ``masked`` names which value (a card's BIN
    and last four), ``field`` which of the client's fields it was (empty for a value that is not
    a client field, such as a card); the actor and the reason are in the event's metadata."""

    __subject__ = "subject_id"
    subject_id: str
    kind: str  # a PiiKind value
    masked: str = pii()
    field: str = ""


@attrs.frozen
class PiiExported(DomainEvent):
    """A client's record left in clear in an export; the actor and the reason are in the
    event's metadata, the fields exported here (names, not values)."""

    __subject__ = "subject_id"
    subject_id: str
    fields: tuple[str, ...]


REVEAL_EVENTS = (PiiRevealed, PiiExported)


@attrs.frozen(kw_only=True)
class RevealLog(Aggregate):
    """The reveals of one client's data, one stream per client: ``pii_reveal-<client id>``."""

    category = "pii_reveal"

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, PiiRevealed | PiiExported):
            return self
        raise ValidationError(f"RevealLog cannot apply {type(event).__name__}")


def require_reason(reason: object) -> str:
    """The reason of a reveal or an export: non-empty text, or ValidationError."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError("a reveal needs a reason")
    return reason


class PiiReveals:
    """The one way a person sees a value in full: checks ``pii.reveal`` on the client's rows,
    records a :class:`PiiRevealed` event (so the audit trail chains it), then returns the value.

    Masked views never show more than a card's BIN and last four, whatever the role.
    """

    attempts = 3  # two reveals of one client at once: the loser appends again

    def __init__(self, repository: Repository, access: AccessControl) -> None:
        self.repository = repository
        self.access = access

    def reveal(self, actor: Actor, value: PiiValue, *, subject_id: str, reason: str) -> str:
        """``value`` in clear for ``actor``, once the reveal is recorded; nothing is recorded
        (and nothing revealed) when the actor may not, or gives no reason."""
        self.access.require(actor, "pii.reveal", client_id=subject_id)
        require_reason(reason)
        event = PiiRevealed(subject_id, value.kind.value, value.masked(Reveal.PARTIAL))
        self.record(actor, reason, [event])
        return value.reveal()

    def record(
        self, actor: Actor, reason: str, events: Sequence[PiiRevealed | PiiExported]
    ) -> None:
        """Append audit events, each to its subject's reveal log, in one atomic commit (all or
        none); the caller has checked the actor's permission. A racing append is retried."""
        require_reason(reason)
        by_subject: dict[str, list[DomainEvent]] = {}
        for event in events:
            by_subject.setdefault(event.subject_id, []).append(event)
        for _ in range(self.attempts):
            try:
                with UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason)) as uow:
                    for subject_id, recorded in by_subject.items():
                        log = self.repository.load(RevealLog, subject_id)
                        uow.record(log or RevealLog.blank(subject_id), *recorded)
                    uow.commit()
            except ConcurrencyError:
                continue
            return
        raise ConcurrencyError("the client's reveal log kept changing; try again")
