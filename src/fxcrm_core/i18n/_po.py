"""Reading gettext .po catalogs at runtime with Babel (no compile step): read_po, then the
translated, non-fuzzy messages written as .mo into memory and opened as Babel Translations."""

from __future__ import annotations

import io
import string
from collections.abc import Mapping
from pathlib import Path

import babel
import babel.messages.mofile
import babel.messages.pofile
import babel.support

from fxcrm_core.kernel.errors import ValidationError

__all__ = ["DOMAIN", "PoCatalog", "placeholders", "read_catalog"]

DOMAIN = "fxcrm"
_FORMATTER = string.Formatter()


class PoCatalog:
    """One language's texts: the Babel ``Translations`` and the msgids it translates."""

    __slots__ = ("msgids", "translations")

    def __init__(self, translations: babel.support.Translations, msgids: frozenset[str]) -> None:
        self.translations = translations
        self.msgids = msgids

    def get(self, msgid: str) -> str | None:
        if msgid not in self.msgids:
            return None
        return self.translations.gettext(msgid)


def placeholders(text: str, what: str) -> frozenset[str]:
    """The ``{name}`` placeholders of ``text``; a format spec, a conversion, an attribute or an
    index (``{a:>9}``, ``{a!r}``, ``{a.b}``, ``{a[0]}``) or an unbalanced brace is refused:
    a template names values, it never reaches into them. ``{{`` and ``}}`` are literal braces."""
    names: set[str] = set()
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError:
        raise ValidationError(f"{what}: unbalanced braces in the text") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion is not None:
            raise ValidationError(f"{what}: a placeholder is a plain {{name}}")
        names.add(field)
    return frozenset(names)


def read_catalog(source: Path | bytes, locale: str) -> PoCatalog:
    """The catalog in a .po file (a path, or its bytes); a syntax error is a ValidationError
    naming the locale."""
    data = source.read_bytes() if isinstance(source, Path) else source
    try:
        catalog = babel.messages.pofile.read_po(
            io.BytesIO(data), locale=locale, domain=DOMAIN, abort_invalid=True
        )
    except (babel.messages.pofile.PoFileError, ValueError, UnicodeDecodeError):
        raise ValidationError(f"the {locale} catalog is not a readable .po file") from None
    texts: dict[str, str] = {}
    for message in catalog:
        if not message.id or message.fuzzy or not isinstance(message.id, str):
            continue  # the header; fuzzy texts are drafts; plural forms are not used
        if isinstance(message.string, str) and message.string:
            texts[message.id] = message.string
    return from_texts(texts, locale)


def from_texts(texts: Mapping[str, str], locale: str) -> PoCatalog:
    """A catalog of ``texts`` (msgid to text), through the same .mo path as a file."""
    catalog = babel.messages.Catalog(locale=locale, domain=DOMAIN, charset="utf-8")
    for msgid, text in texts.items():
        catalog.add(msgid, text)
    buffer = io.BytesIO()
    babel.messages.mofile.write_mo(buffer, catalog)
    buffer.seek(0)
    return PoCatalog(babel.support.Translations(buffer, domain=DOMAIN), frozenset(texts))
