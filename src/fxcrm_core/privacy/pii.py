"""Personal-data value types: validated however they are built, masked in ``repr`` and ``str``.

Logs and tracebacks show only the partial mask. :meth:`PiiValue.reveal` gives the clear value to
code that stores or forwards it (sealed in an event, sent to a PSP); a person sees a value in
full only through :class:`PiiReveals`, which checks ``pii.reveal`` and records the reveal as an
event. Errors never echo the input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any, ClassVar, Self

import attrs
import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.exceptions import ValidationError as StdnumError

from fxcrm_core.access.control import AccessControl, Actor
from fxcrm_core.events import (
    ERASED,
    Aggregate,
    DomainEvent,
    Erased,
    EventMetadata,
    Repository,
    UnitOfWork,
    pii,
)
from fxcrm_core.kernel.errors import ConcurrencyError, ValidationError
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.privacy.masking import PiiKind, Reveal, mask

__all__ = [
    "PII_VALUE_TYPES",
    "REVEAL_EVENTS",
    "Address",
    "BirthDate",
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

_ASCII_ALNUM = re.compile(r"[0-9A-Z]+")


#: Invisible joiners some scripts need inside a name (Persian, Indic): not hostile.
_JOINERS = frozenset("\u200c\u200d")


def _check_text(cls: type[PiiValue], text: str) -> None:
    """What no personal value may be, whatever its kind: longer than its kind allows (a
    megabyte from a form, or a pattern made slow by length), holding control or format
    characters (terminal escapes, a right-to-left override, zero-width text) or the erased
    marker itself. Checked before any normaliser runs."""
    if len(text) > cls.max_length:
        raise ValidationError(f"{cls.__name__}: at most {cls.max_length} characters")
    visible = False
    for ch in text:
        if ch.isspace() or (ch in _JOINERS and cls.joiners):
            continue
        if unicodedata.category(ch)[0] == "C":
            raise ValidationError(f"{cls.__name__}: control or invisible characters are refused")
        visible = True
    if not visible:
        raise ValidationError(f"{cls.__name__}: a value with nothing visible is refused")
    if text == ERASED:
        raise ValidationError(f"{cls.__name__}: not a value")


def _canonical(instance: PiiValue, attribute: attrs.Attribute[str], value: Any) -> None:
    """The constructor takes the canonical text only: what :meth:`PiiValue.parse` produces."""
    cls = type(instance)
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValidationError(f"{cls.__name__}: a non-empty string without padding is required")
    _check_text(cls, value)
    if cls._normalise(value) != value:
        raise ValidationError(f"{cls.__name__}: not in canonical form (use {cls.__name__}.parse)")


@attrs.frozen(repr=False)
class PiiValue:
    """A piece of personal data of one kind; ``PiiValue(text)`` takes canonical text, ``parse``
    takes what a person typed. Either way an invalid value is a :class:`ValidationError`.

    The one representation of personal data from sign-up to screen: an event field typed with
    a value type (``email: Email = pii()``) declares its kind; the codec seals its canonical
    text and reads it back through :meth:`from_stored`; aggregates hold the value; a view
    masks it (:meth:`masked`) and only an audited reveal shows it in clear.
    """

    kind: ClassVar[PiiKind] = PiiKind.TEXT
    #: The longest text a value of this kind may be (as typed, before normalising).
    max_length: ClassVar[int] = 256
    #: Whether the invisible joiners some scripts need inside words (ZWJ, ZWNJ) are allowed.
    joiners: ClassVar[bool] = False
    #: Marks a value type the event codec stores as its text (the codec sits below privacy).
    __pii_value__: ClassVar[bool] = True
    value: str = attrs.field(repr=False, validator=_canonical)

    @classmethod
    def from_stored(cls, text: str) -> Self:
        """The value as read back from the log: ``ERASED`` stays the erased value of this kind
        (:attr:`erased`); text not in canonical form (written by older code, or by a host
        through the codec) is normalised where it can be, else kept as stored, unvalidated:
        whatever was stored reads, and is masked as its kind."""
        if isinstance(text, Erased):
            return cls._unchecked(ERASED)
        if not isinstance(text, str):
            raise ValidationError(f"{cls.__name__}: a stored value is text")
        try:
            return cls.parse(text)
        except ValidationError:
            return cls._unchecked(text)

    @classmethod
    def _unchecked(cls, text: str) -> Self:
        value = object.__new__(cls)
        object.__setattr__(value, "value", text)
        return value

    @property
    def erased(self) -> bool:
        """Whether the subject was erased: the value reads as ``[erased]``, masked or not."""
        return isinstance(self.value, Erased)

    @classmethod
    def parse(cls, text: str) -> Self:
        """The value from user input: trimmed and normalised, then validated."""
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"{cls.__name__}: a non-empty string is required")
        _check_text(cls, text.strip())
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
    max_length = 254  # RFC 5321's limit on a path

    @classmethod
    def _normalise(cls, text: str) -> str:
        # local@domain.tld: one "@", no whitespace, a dot inside the domain (checked in one
        # pass each: a pattern that backtracks would take seconds on a hostile address).
        # The domain in its compatibility form (a fullwidth or decomposed spelling is the same
        # domain), lower case, every label non-empty.
        local, _, domain = text.rpartition("@")
        domain = unicodedata.normalize("NFKC", domain).lower()
        labels = domain.split(".")
        if (
            not local
            or "@" in local
            or len(labels) < 2
            or not all(labels)
            or any(ch.isspace() for ch in text)
        ):
            raise ValidationError("not a valid e-mail address")
        return f"{local}@{domain}"


class Phone(PiiValue):
    """A phone number in E.164 form (``+447911123456``): the one phone normaliser, used by
    registration, deduplication and display alike. ``region`` (ISO 3166 alpha-2) reads a
    national format of that country.

    >>> Phone.parse("07911 123456", region="GB").reveal()
    '+447911123456'
    """

    kind = PiiKind.PHONE

    @classmethod
    def parse(cls, text: str, region: str | None = None) -> Self:
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"{cls.__name__}: a non-empty string is required")
        if region is not None and not (
            isinstance(region, str) and len(region) == 2 and region.isascii() and region.isalpha()
        ):
            raise ValidationError("a phone's region is an ISO 3166 alpha-2 code")
        _check_text(cls, text.strip())
        return cls(cls._e164(text.strip(), region.upper() if region else None))

    @classmethod
    def _normalise(cls, text: str) -> str:
        return cls._e164(text, None)

    @staticmethod
    def _e164(text: str, region: str | None) -> str:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            raise ValidationError("not a valid phone number (use +<country code>...)") from None
        if not phonenumbers.is_valid_number(number):
            raise ValidationError("not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class PersonName(PiiValue):
    """A person's name as they write it, single-spaced (masked in its own convention)."""

    kind = PiiKind.NAME
    joiners = True  # Persian, Indic scripts
    max_length = 200

    @classmethod
    def _normalise(cls, text: str) -> str:
        return " ".join(text.split())


class BirthDate(PiiValue):
    """A date of birth as ISO ``YYYY-MM-DD`` (the service checks it is an adult's)."""

    kind = PiiKind.BIRTH_DATE

    @classmethod
    def _normalise(cls, text: str) -> str:
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValidationError("not a date (YYYY-MM-DD)") from None

    @classmethod
    def of(cls, day: date) -> BirthDate:
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValidationError("a birth date is a date")
        return cls(day.isoformat())


class Address(PiiValue):
    """A postal address as one line, single-spaced."""

    kind = PiiKind.ADDRESS
    joiners = True  # Persian, Indic scripts
    max_length = 500

    @classmethod
    def _normalise(cls, text: str) -> str:
        return " ".join(text.split())


class DocumentNumber(PiiValue):
    """An identity document's number: Latin letters and digits, upper case, no spaces."""

    kind = PiiKind.DOCUMENT
    max_length = 64

    @classmethod
    def _normalise(cls, text: str) -> str:
        compact = "".join(unicodedata.normalize("NFKC", text).split()).upper()
        if not _ASCII_ALNUM.fullmatch(compact):
            raise ValidationError("a document number holds letters and digits only")
        return compact


#: The value type of each kind (TEXT has none: free text is hidden whole).
PII_VALUE_TYPES: dict[PiiKind, type[PiiValue]] = {
    cls.kind: cls
    for cls in (Pan, Iban, Email, Phone, PersonName, DocumentNumber, Address, BirthDate)
}


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


def require_reason(reason: object, quoting: Iterable[PiiValue] = ()) -> str:
    """The reason of a reveal or an export: non-empty text that quotes none of ``quoting``
    (the values it reveals), or ValidationError. A reason is kept in clear in the event's
    metadata, for the audit, after an erasure too: it must carry no personal data, and the
    value revealed is the likeliest to slip in ("caller confirmed ana@example.com")."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError("a reveal needs a reason")
    # Kept in clear for ever: no control characters (terminal escapes, NUL), a sane length.
    reason = checked_text(reason, "reason", 500)
    for value in quoting:
        if not value.erased and _quotes(reason, value):
            raise ValidationError("a reason must not quote the personal data it reveals")
    return reason


def _quotes(reason: str, value: PiiValue) -> bool:
    """Whether ``reason`` holds ``value`` written another way: a name's or an address's words
    in a row (whole words: "Li An" is not in "compliance check"), an e-mail's local part or the
    whole address squeezed ("ana.lima at example dot com"), a number's digits and letters."""
    text = value.reveal()
    if value.kind in (PiiKind.NAME, PiiKind.ADDRESS):
        words, said = _words(text), _words(reason)
        return bool(words) and any(
            said[i : i + len(words)] == words for i in range(len(said) - len(words) + 1)
        )
    squeezed_reason = _squeezed(reason)
    if value.kind is PiiKind.EMAIL:
        local = _squeezed(text.rpartition("@")[0])
        return (len(local) >= 4 and local in squeezed_reason) or _squeezed(text) in squeezed_reason
    squeezed = _squeezed(text)
    return len(squeezed) >= 5 and squeezed in squeezed_reason


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _squeezed(text: str) -> str:
    """Lower case letters and digits only: the same value written another way."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


class PiiReveals:
    """The one way a person sees a value in full: checks ``pii.reveal`` on the client's rows,
    records a :class:`PiiRevealed` event (so the audit trail chains it), then returns the value.

    Masked views never show more than a card's BIN and last four, whatever the role.
    """

    attempts = 3  # two reveals of one client at once: the loser appends again

    def __init__(self, repository: Repository, access: AccessControl) -> None:
        self.repository = repository
        self.access = access

    def reveal(
        self, actor: Actor, value: PiiValue, *, subject_id: str, reason: str, field: str = ""
    ) -> str:
        """``value`` in clear for ``actor``, once the reveal is recorded; nothing is recorded
        (and nothing revealed) when the actor may not, or gives no reason. ``field`` names
        what was revealed (a payout instrument's id, say), for the audit."""
        self.access.require(actor, "pii.reveal", client_id=subject_id)
        if not isinstance(value, PiiValue):
            raise ValidationError("reveal a value type (Pan, Iban, Email, ...), not bare text")
        require_reason(reason, (value,))
        if value.erased:
            raise ValidationError("the subject was erased: nothing to reveal")
        if not isinstance(field, str) or len(field) > 200:
            raise ValidationError("a revealed field is named by text of at most 200 characters")
        event = PiiRevealed(subject_id, value.kind.value, value.masked(Reveal.PARTIAL), field)
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
