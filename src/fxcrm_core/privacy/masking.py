"""Masking of personal data by role and kind of field. Unknown roles, kinds and fields are
masked completely (fail closed); a card number never shows more than its BIN and last four."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import attrs
import phonenumbers
from stdnum import luhn

from fxcrm_core.events.event import Erased
from fxcrm_core.kernel.errors import ValidationError

__all__ = ["DEFAULT_MASKING", "HIDDEN", "MaskingPolicy", "PiiKind", "Reveal", "mask"]

HIDDEN = "****"  # one fixed width: a mask must not leak the length


class PiiKind(enum.Enum):
    PAN = "pan"
    IBAN = "iban"
    EMAIL = "email"
    PHONE = "phone"
    NAME = "name"
    DOCUMENT = "document"
    ADDRESS = "address"
    BIRTH_DATE = "birth_date"
    TEXT = "text"


class Reveal(enum.IntEnum):
    HIDDEN = 0
    PARTIAL = 1
    FULL = 2


def mask(kind: PiiKind, value: str, reveal: Reveal) -> str:
    """``value`` as a viewer with ``reveal`` may see it.

    >>> mask(PiiKind.PAN, "4111 1111 1111 1111", Reveal.FULL)
    '411111******1111'
    >>> mask(PiiKind.IBAN, "DE89 3704 0044 0532 0130 00", Reveal.PARTIAL)
    'DE****************3000'
    >>> mask(PiiKind.EMAIL, "ana.lima@example.com", Reveal.PARTIAL)
    'a***@e***.com'
    >>> mask(PiiKind.NAME, "Ana Maria Lima", Reveal.PARTIAL)
    'A. M. L.'
    >>> mask(PiiKind.NAME, "欧阳小明", Reveal.PARTIAL)
    '欧阳**'
    """
    if isinstance(value, Erased):
        return value
    if reveal is Reveal.FULL and kind is not PiiKind.PAN:
        return value
    if reveal is Reveal.HIDDEN:
        return HIDDEN
    return _PARTIAL.get(kind, _hide)(value)


def _hide(value: str) -> str:
    return HIDDEN


def _masker(kind: PiiKind, reveal: Reveal) -> Callable[[str], str]:
    """``mask`` with its kind and reveal resolved (an erased value still passes as it is)."""
    if reveal is Reveal.FULL and kind is not PiiKind.PAN:
        return _keep
    partial = _hide if reveal is Reveal.HIDDEN else _PARTIAL.get(kind, _hide)

    def masked(value: str) -> str:
        return value if isinstance(value, Erased) else partial(value)

    return masked


def _keep(value: str) -> str:
    return value


# A card number as people write it: one run of digits, or groups of 3 to 6 digits joined by
# one kind of separator (4-4-4-4, 4-6-5, ...).
_CARD = re.compile(r"[0-9]{12,19}|[0-9]{3,6}(?P<sep>[ -])[0-9]{3,6}(?:(?P=sep)[0-9]{3,6})+")


def _pan(value: str) -> str:
    # Only a value that is a card number gets a partial view: free text is hidden, or the
    # digits of an expiry date, a CVV or an amount beside the number would pass for its last 4.
    text = value.strip()
    if not _CARD.fullmatch(text):
        return HIDDEN
    digits = text.replace(" ", "").replace("-", "")
    if not 12 <= len(digits) <= 19 or not luhn.is_valid(digits):
        return HIDDEN
    if len(digits) < 15:
        # A short number (12 to 14 digits) would leave only two to four digits hidden beside
        # its BIN: its last four only (a 15-digit card, such as Amex, hides five).
        return "*" * (len(digits) - 4) + digits[-4:]
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def _iban(value: str) -> str:
    compact = "".join(value.split()).upper()
    if len(compact) < 10:
        return HIDDEN
    return compact[:2] + "*" * (len(compact) - 6) + compact[-4:]


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain:
        return HIDDEN
    host, _, tld = domain.rpartition(".")
    return f"{local[0]}***@{host[:1]}***.{tld}"


# E.164 (+ and 7 to 15 digits) as the SDK stores phones; country calling codes are prefix-free
# (ITU-T E.164), so the code is the one prefix of 1 to 3 digits that is a known code.
_CALLING_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_NATIONAL_PREFIXES: dict[str, re.Pattern[str] | None] = {}  # per calling code: no PII here


def _national_prefix(code: str) -> re.Pattern[str] | None:
    """The national prefix the parser strips after this calling code (as a pattern), if any."""
    if code not in _NATIONAL_PREFIXES:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            int(code), phonenumbers.region_code_for_country_code(int(code))
        )
        pattern = metadata.national_prefix_for_parsing if metadata is not None else None
        _NATIONAL_PREFIXES[code] = re.compile(pattern) if pattern else None
    return _NATIONAL_PREFIXES[code]


def _phone(value: str) -> str:
    digits = value[1:]
    if value[:1] == "+" and 7 <= len(digits) <= 15 and digits.isascii() and digits.isdigit():
        # The speed path (a masked read of a stored phone was dominated by parsing it): where
        # the parser would keep the number after the calling code as written, so is the mask.
        for size in (1, 2, 3):
            code = value[1 : 1 + size]
            if code in _CALLING_CODES:
                national = value[1 + size :]
                prefix = _national_prefix(code)
                if national[0] != "0" and (prefix is None or not prefix.match(national)):
                    return _phone_mask(code, national)
                break
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return HIDDEN
    return _phone_mask(str(number.country_code), str(number.national_number))


def _phone_mask(code: str, national: str) -> str:
    return f"+{code} {'*' * max(len(national) - 2, 1)}{national[-2:]}"


# Chinese compound (two-character) family names, simplified and traditional; any other family
# name is the first character.
_COMPOUND_SURNAME_TEXT = (
    "欧阳 歐陽 司马 司馬 上官 诸葛 諸葛 东方 東方 皇甫 尉迟 尉遲 公孙 公孫 慕容 长孙 長孫 宇文 "
    "司徒 令狐 端木 夏侯 轩辕 軒轅 澹台 澹臺 南宫 南宮 闻人 聞人 赫连 赫連 独孤 獨孤 西门 西門 "
    "呼延 百里 东郭 東郭 申屠 太史 万俟 萬俟 司空 钟离 鍾離 鐘離 拓跋 公冶 濮阳 濮陽 淳于 单于 "
    "單于 仲孙 仲孫 宗政 公羊 谷梁 穀梁 羊舌 微生 左丘 梁丘 第五 鲜于 鮮于 闾丘 閭丘 亓官 司寇 "
    "子车 子車 颛孙 顓孫 壤驷 壤駟 公良 漆雕 乐正 樂正 巫马 巫馬 公西 段干 东门 東門 公门 公門 "
    "拓拔"
)
_COMPOUND_SURNAMES = frozenset(_COMPOUND_SURNAME_TEXT.split())
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")


def _name(value: str) -> str:
    parts = value.split()
    if not parts:
        return HIDDEN
    han = "".join(parts)
    if _HAN.fullmatch(han):
        # Chinese order and convention: the family name stays, the given name is masked (at
        # one width, so the mask does not tell its length).
        if len(han) < 2:
            return HIDDEN
        family = han[:2] if len(han) > 2 and han[:2] in _COMPOUND_SURNAMES else han[0]
        return family + "**"
    return " ".join(f"{p[0]}." for p in parts)


def _document(value: str) -> str:
    compact = "".join(value.split())
    return "*" * max(len(compact) - 2, 4) + compact[-2:] if len(compact) > 4 else HIDDEN


def _birth_date(value: str) -> str:
    return value[:4] + "-**-**" if len(value) >= 10 and value[:4].isdigit() else HIDDEN


_PARTIAL = {
    PiiKind.PAN: _pan,
    PiiKind.IBAN: _iban,
    PiiKind.EMAIL: _email,
    PiiKind.PHONE: _phone,
    PiiKind.NAME: _name,
    PiiKind.DOCUMENT: _document,
    PiiKind.BIRTH_DATE: _birth_date,
}


def _rules(
    value: Mapping[str, Mapping[PiiKind, Reveal]],
) -> Mapping[str, Mapping[PiiKind, Reveal]]:
    """The rules checked and frozen: a role is non-empty text, each kind a :class:`PiiKind`
    and each level a :class:`Reveal` (``0`` or ``"full"`` are refused, not guessed); read-only
    copies, so a policy shared by several services cannot be changed under them."""
    if not isinstance(value, Mapping):
        raise ValidationError("masking rules map each role to what it sees of each kind")
    frozen: dict[str, Mapping[PiiKind, Reveal]] = {}
    for role, kinds in value.items():
        if not isinstance(role, str) or not role.strip():
            raise ValidationError("a masking rule's role is non-empty text")
        if not isinstance(kinds, Mapping):
            raise ValidationError("a masking rule maps kinds of personal data to Reveal levels")
        for kind, reveal in kinds.items():
            if not isinstance(kind, PiiKind) or not isinstance(reveal, Reveal):
                raise ValidationError(
                    "a masking rule maps a PiiKind to a Reveal (FULL, PARTIAL or HIDDEN)"
                )
        frozen[role] = MappingProxyType(dict(kinds))
    return MappingProxyType(frozen)


@attrs.frozen
class MaskingPolicy:
    """What each role may see of each kind of PII; an actor gets the most its roles allow."""

    rules: Mapping[str, Mapping[PiiKind, Reveal]] = attrs.field(converter=_rules)

    def with_role(self, role: str, kinds: Mapping[PiiKind, Reveal]) -> MaskingPolicy:
        """A copy with a host-defined role (or a role redefined); kinds not named are hidden."""
        return MaskingPolicy({**self.rules, role: kinds})

    def reveal_for(self, roles: Iterable[str], kind: PiiKind) -> Reveal:
        return max(
            (self.rules.get(role, {}).get(kind, Reveal.HIDDEN) for role in roles),
            default=Reveal.HIDDEN,
        )

    def show(self, roles: Iterable[str], kind: PiiKind, value: str) -> str:
        return mask(kind, value, self.reveal_for(roles, kind))

    def masker(self, roles: Iterable[str], kind: PiiKind) -> Callable[[str], str]:
        """What :meth:`show` does for these roles and this kind, resolved once into a function
        (for masking many values alike).

        >>> DEFAULT_MASKING.masker({"ib"}, PiiKind.NAME)("Ana Lima")
        'A. L.'
        """
        return _masker(kind, self.reveal_for(roles, kind))

    def show_record(
        self,
        roles: Iterable[str],
        record: Mapping[str, str],
        kinds: Mapping[str, PiiKind],
        *,
        public: Iterable[str] = (),
    ) -> dict[str, str]:
        """Mask a record field by field. Fields in ``public`` (ids, amounts) pass through;
        a field that is neither public nor of a known kind is hidden."""
        role_set = frozenset(roles)
        open_fields = frozenset(public)
        return {
            name: value
            if name in open_fields
            else (self.show(role_set, kinds[name], value) if name in kinds else HIDDEN)
            for name, value in record.items()
        }

    def table(self) -> str:
        """What each role sees of each kind, as a Markdown table (the one in
        ``docs/personal-data.md``): ``full``, ``partial`` or ``-`` (hidden); the last row is
        any role the policy does not name.

        >>> print(MaskingPolicy({"desk": {PiiKind.EMAIL: Reveal.PARTIAL}}).table())
        ... # doctest: +NORMALIZE_WHITESPACE
        | role | pan | iban | email | phone | name | document | address | birth_date | text |
        |---|---|---|---|---|---|---|---|---|---|
        | desk | - | - | partial | - | - | - | - | - | - |
        | any other | - | - | - | - | - | - | - | - | - |
        """
        word = {Reveal.FULL: "full", Reveal.PARTIAL: "partial", Reveal.HIDDEN: "-"}
        lines = [
            "| role | " + " | ".join(kind.value for kind in PiiKind) + " |",
            "|---" * (len(PiiKind) + 1) + "|",
        ]
        for role in [*self.rules, None]:
            roles = () if role is None else (role,)
            cells = " | ".join(word[self.reveal_for(roles, kind)] for kind in PiiKind)
            lines.append(f"| {role or 'any other'} | {cells} |")
        return "\n".join(lines)


_ALL = dict.fromkeys(PiiKind, Reveal.FULL)
DEFAULT_MASKING = MaskingPolicy(
    {
        "client": _ALL,  # their own data: the row scope of access control keeps it their own
        "compliance": _ALL,
        "support": {
            PiiKind.NAME: Reveal.FULL,
            PiiKind.EMAIL: Reveal.PARTIAL,
            PiiKind.PHONE: Reveal.PARTIAL,
            PiiKind.PAN: Reveal.PARTIAL,
            PiiKind.IBAN: Reveal.PARTIAL,
            PiiKind.DOCUMENT: Reveal.PARTIAL,
            PiiKind.BIRTH_DATE: Reveal.PARTIAL,
        },
        "sales": {
            PiiKind.NAME: Reveal.FULL,
            PiiKind.EMAIL: Reveal.FULL,
            PiiKind.PHONE: Reveal.FULL,
        },
        "finance": {
            PiiKind.NAME: Reveal.FULL,
            PiiKind.PAN: Reveal.PARTIAL,
            PiiKind.IBAN: Reveal.PARTIAL,
            PiiKind.EMAIL: Reveal.PARTIAL,
        },
        "ib": {PiiKind.NAME: Reveal.PARTIAL},
        "admin": {PiiKind.NAME: Reveal.PARTIAL, PiiKind.EMAIL: Reveal.PARTIAL},
    }
)
