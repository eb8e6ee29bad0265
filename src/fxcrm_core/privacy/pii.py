"""Personal-data value types: validated on the way in, masked in ``repr`` and ``str``.

Logs and tracebacks show only the partial mask; :meth:`PiiValue.reveal` gives the clear value to
code that needs it (and that has checked the actor may see it). Errors never echo the input.
"""

from __future__ import annotations

import re
from typing import ClassVar, Self

import attrs
import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.exceptions import ValidationError as StdnumError

from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.privacy.masking import PiiKind, Reveal, mask

__all__ = ["DocumentNumber", "Email", "Iban", "Pan", "PersonName", "Phone", "PiiValue"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@attrs.frozen(repr=False)
class PiiValue:
    kind: ClassVar[PiiKind] = PiiKind.TEXT
    value: str = attrs.field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Self:
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"{cls.__name__}: a non-empty string is required")
        return cls(cls._normalise(text.strip()))

    @classmethod
    def _normalise(cls, text: str) -> str:
        return text

    def reveal(self) -> str:
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
        digits = re.sub(r"[\s-]", "", text)
        if not digits.isdigit() or not 12 <= len(digits) <= 19:
            raise ValidationError("not a valid card number")
        try:
            luhn.validate(digits)
        except StdnumError:
            raise ValidationError("not a valid card number") from None
        return digits


class Iban(PiiValue):
    kind = PiiKind.IBAN

    @classmethod
    def _normalise(cls, text: str) -> str:
        try:
            return str(stdnum_iban.validate(text))
        except StdnumError:
            raise ValidationError("not a valid IBAN") from None


class Email(PiiValue):
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
    kind = PiiKind.NAME

    @classmethod
    def _normalise(cls, text: str) -> str:
        return " ".join(text.split())


class DocumentNumber(PiiValue):
    kind = PiiKind.DOCUMENT

    @classmethod
    def _normalise(cls, text: str) -> str:
        compact = "".join(text.split()).upper()
        if not compact.isalnum():
            raise ValidationError("a document number holds letters and digits only")
        return compact
