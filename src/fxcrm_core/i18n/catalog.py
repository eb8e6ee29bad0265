"""The SDK's user-facing texts in the client's language: message templates (a subject and a
body per template id), tier, segment and document names, statement labels and the errors a
client portal shows, from gettext catalogs shipped in the package (English, the source, and
Simplified Chinese) and a host's own catalogs and overrides."""

from __future__ import annotations

import functools
import os
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, tzinfo
from decimal import Decimal
from pathlib import Path

import attrs
from babel.core import get_global

from fxcrm_core.i18n._po import PoCatalog, placeholders, read_catalog
from fxcrm_core.i18n.formatting import (
    DATE_FORMAT,
    DATETIME_FORMAT,
    format_date,
    format_datetime,
    format_money,
    format_number,
    parse_locale,
)
from fxcrm_core.kernel.errors import (
    ArgumentTypeError,
    FloatNotAllowedError,
    FxCrmError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.money import Money

__all__ = [
    "DATE_PARAMS",
    "INSTANT_PARAMS",
    "MONEY_PARAMS",
    "SHIPPED_LOCALES",
    "SOURCE_LOCALE",
    "Catalog",
    "Param",
    "Rendered",
    "TERM_PARAMS",
    "Term",
    "locale_chain",
]

#: The language every msgid has a text in; the last step of every fallback chain.
SOURCE_LOCALE = "en"
#: The catalogs in the package (src/fxcrm_core/i18n/locale/<locale>/LC_MESSAGES/fxcrm.po).
SHIPPED_LOCALES = ("en", "zh_CN")
_PACKAGE_DIR = Path(__file__).parent / "locale"
_PO_NAME = Path("LC_MESSAGES") / "fxcrm.po"
_MAX_TEXT = 10_000
#: Characters no msgid, text or text parameter holds: controls (but a body's line breaks),
#: format characters (bidi overrides, zero-width joiners) and lone surrogates.
_REFUSED = frozenset({"Cc", "Cf", "Cs"})

#: Message parameters (the outbox's text pairs) that name a catalog term: shown translated
#: when the catalog knows ``prefix + value``, else as given.
TERM_PARAMS = {"tier": "tier.", "segment": "segment.", "document_type": "document."}
#: Message parameters that hold an ISO date (``2027-01-31``) or instant, or canonical money
#: (``"250.00 USD"``): shown in the client's locale (and zone) when they parse, else as given.
DATE_PARAMS = frozenset({"expires_on", "birth_date", "day"})
INSTANT_PARAMS = frozenset({"paid_at", "at", "sent_at"})
MONEY_PARAMS = frozenset({"amount", "fee", "limit", "bonus"})


@attrs.frozen
class Term:
    """A parameter that is itself a catalog text (a tier's name), shown in the message's
    language."""

    msgid: str


@attrs.frozen
class Rendered:
    """A message template rendered for one client: ``locale`` is the locale asked for,
    ``text_locale`` the catalog the body came from (the asked one or a fallback)."""

    template_id: str
    locale: str
    text_locale: str
    subject: str
    body: str


#: What a placeholder can be given: text as is; money, numbers, dates and instants formatted by
#: Babel for the locale (instants in the client's zone); a Term translated.
Param = str | Money | Decimal | int | date | datetime | Term


def _key(locale: str) -> str:
    """The canonical name of a locale (``zh-CN`` and ``zh_CN`` are ``zh_Hans_CN``)."""
    return str(parse_locale(locale))


def locale_chain(locale: str) -> tuple[str, ...]:
    """The catalogs asked, in order, for a text in ``locale`` (canonical names): the locale,
    its language with and without script and territory, the language's default region when
    it is written in the same script, then English.

    >>> locale_chain("zh_CN")
    ('zh_Hans_CN', 'zh_Hans', 'zh', 'en')
    >>> locale_chain("zh")  # the default region of written Chinese: Simplified, China
    ('zh', 'zh_Hans_CN', 'zh_Hans', 'en')
    >>> locale_chain("zh_TW")  # Traditional: not the Simplified catalog
    ('zh_Hant_TW', 'zh_Hant', 'zh', 'en')
    """
    return _chain(_key(locale))


@functools.lru_cache(maxsize=256)
def _chain(key: str) -> tuple[str, ...]:
    loc = parse_locale(key)
    lang, script, territory = loc.language, loc.script, loc.territory
    names = [key]
    if script and territory:
        names.append(f"{lang}_{script}_{territory}")
    if territory:
        names.append(f"{lang}_{territory}")
    if script:
        names.append(f"{lang}_{script}")
    names.append(lang)
    likely = get_global("likely_subtags").get(lang) if lang != SOURCE_LOCALE else None
    if isinstance(likely, str):
        default = parse_locale(likely)
        if script is None or default.script in (None, script):
            if default.territory:
                names.append(f"{lang}_{default.territory}")
            if default.script:
                names.append(f"{lang}_{default.script}")
    names.append(SOURCE_LOCALE)
    out: list[str] = []
    for name in names:
        try:
            canonical = _key(name)
        except ValidationError:
            continue
        if canonical not in out:
            out.append(canonical)
    return tuple(out)


class Catalog:
    """Texts by msgid and locale, with a fallback chain (``zh_CN`` -> ``zh`` -> ``en``, see
    :func:`locale_chain`). At each step of the chain a host override wins over a host catalog,
    which wins over the shipped one.

    ``host_dir`` holds the host's catalogs as ``<dir>/<locale>/LC_MESSAGES/fxcrm.po``: new
    languages, new msgids (English first) or other wordings. Every text of a msgid has the
    placeholders of its English text (a ValidationError otherwise), so a template renders with
    the same parameters in every language; an English text that would change them is refused
    while a translation has the old ones.
    """

    def __init__(
        self,
        host_dir: Path | str | None = None,
        *,
        date_format: str = DATE_FORMAT,
        datetime_format: str = DATETIME_FORMAT,
    ) -> None:
        self.date_format = date_format
        self.datetime_format = datetime_format
        format_date(date(2000, 1, 1), SOURCE_LOCALE, date_format)  # typed errors up front
        format_datetime(datetime.fromisoformat("2000-01-01T00:00Z"), "en", None, datetime_format)
        self._lock = threading.Lock()
        self._shipped: dict[str, PoCatalog] = {
            _key(name): read_catalog(_PACKAGE_DIR / name / _PO_NAME, name)
            for name in SHIPPED_LOCALES
        }
        #: The host's directories in the order first loaded, each with its catalogs by locale
        #: (a reload replaces the directory's catalogs in place); ``_host`` is derived.
        self._dirs: list[tuple[str, dict[str, PoCatalog]]] = []
        self._host: dict[str, list[PoCatalog]] = {}
        self._overrides: dict[str, dict[str, str]] = {}
        if host_dir is not None:
            self.load_directory(host_dir)

    # -- what is known ---------------------------------------------------------------------
    def msgids(self) -> frozenset[str]:
        """Every msgid with an English text (shipped, host catalogs and overrides)."""
        source = _key(SOURCE_LOCALE)
        found = set(self._shipped[source].msgids)
        for po in self._host.get(source, ()):
            found |= po.msgids
        found |= set(self._overrides.get(source, {}))
        return frozenset(found)

    def locales(self) -> tuple[str, ...]:
        """The locales some catalog or override has texts for (canonical names, sorted)."""
        return tuple(sorted({*self._shipped, *self._host, *self._overrides}))

    def placeholders(self, msgid: str) -> frozenset[str]:
        """The placeholders of ``msgid`` (those of its English text)."""
        found = self._lookup(_msgid(msgid), SOURCE_LOCALE)
        if found is None:
            raise NotFoundError(f"no text for msgid {msgid!r}")
        return placeholders(found[0], msgid)

    def lookup(self, msgid: str, locale: str) -> tuple[str, str] | None:
        """(the raw text, the locale of the catalog that gave it), or None when no catalog
        of the chain has ``msgid``."""
        return self._lookup(_msgid(msgid), locale)

    def _lookup(self, msgid: str, locale: str) -> tuple[str, str] | None:
        for step in locale_chain(locale):
            text = self._overrides.get(step, {}).get(msgid)
            if text is not None:
                return text, step
            for po in reversed(self._host.get(step, ())):
                text = po.get(msgid)
                if text is not None:
                    return text, step
            shipped = self._shipped.get(step)
            text = shipped.get(msgid) if shipped is not None else None
            if text is not None:
                return text, step
        return None

    # -- the host's texts ------------------------------------------------------------------
    def override(self, locale: str, msgid: str, text: str) -> None:
        """Use ``text`` for ``msgid`` in ``locale`` (and the locales whose chain reaches it
        before a catalog that has the msgid). A new msgid takes its English text first."""
        key, msgid = _key(locale), _msgid(msgid)
        text = _checked(text, msgid)
        with self._lock:
            overrides = dict(self._overrides)
            overrides[key] = {**overrides.get(key, {}), msgid: text}
            self._check_consistent({msgid}, self._host, overrides)
            self._overrides = overrides

    def load_directory(self, path: Path | str) -> tuple[str, ...]:
        """Load a host's catalogs (``<path>/<locale>/LC_MESSAGES/fxcrm.po``); returns the
        locales loaded, English first. Loading a directory again replaces what it gave before
        (a host reloads its files). Nothing is loaded when one is inconsistent."""
        if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
            raise ArgumentTypeError("a host catalog directory is a path or a str")
        try:
            root = Path(path)
            name = os.path.realpath(root)
            found = self._read_directory(root)
        except FxCrmError:
            raise
        except TypeError:  # an os.PathLike giving bytes
            raise ArgumentTypeError("a host catalog directory is a path or a str") from None
        except (OSError, ValueError):  # never the path: it may be a secret's location
            raise ValidationError("the host catalog directory cannot be read") from None
        source = _key(SOURCE_LOCALE)
        found.sort(key=lambda item: item[0] != source)
        loaded = dict(found)
        with self._lock:
            dirs = list(self._dirs)
            changed = {m for po in loaded.values() for m in po.msgids}
            for index, (known, before) in enumerate(dirs):
                if known == name:
                    changed |= {m for po in before.values() for m in po.msgids}
                    dirs[index] = (name, loaded)
                    break
            else:
                dirs.append((name, loaded))
            host: dict[str, list[PoCatalog]] = {}
            for _, catalogs in dirs:
                for key, catalog in catalogs.items():
                    host.setdefault(key, []).append(catalog)
            self._check_consistent(changed, host, self._overrides)
            self._dirs, self._host = dirs, host
        return tuple(key for key, _ in found)

    @staticmethod
    def _read_directory(root: Path) -> list[tuple[str, PoCatalog]]:
        if not root.is_dir():
            raise ValidationError("the host catalog directory does not exist")
        found: list[tuple[str, PoCatalog]] = []
        for sub in sorted(root.iterdir()):
            po = sub / _PO_NAME
            if sub.is_dir() and po.is_file():
                key = _key(sub.name)
                catalog = read_catalog(po, sub.name)
                for msgid in catalog.msgids:
                    _checked(catalog.get(msgid) or "", _msgid(msgid))
                if any(k == key for k, _ in found):
                    raise ValidationError(f"two catalogs of the host directory are for {key}")
                found.append((key, catalog))
        return found

    def _layers(
        self,
        msgid: str,
        host: Mapping[str, list[PoCatalog]],
        overrides: Mapping[str, Mapping[str, str]],
    ) -> Iterator[tuple[str, str]]:
        """Every (locale, text) of ``msgid``: overrides, host catalogs and shipped ones."""
        for key, texts in overrides.items():
            if msgid in texts:
                yield key, texts[msgid]
        for key, catalogs in host.items():
            for po in catalogs:
                text = po.get(msgid)
                if text is not None:
                    yield key, text
        for key, po in self._shipped.items():
            text = po.get(msgid)
            if text is not None:
                yield key, text

    def _check_consistent(
        self,
        msgids: Iterable[str],
        host: Mapping[str, list[PoCatalog]],
        overrides: Mapping[str, Mapping[str, str]],
    ) -> None:
        """Check the texts of ``msgids`` as they would be with ``host`` and ``overrides``:
        every English text has the placeholders of the shipped English one, every other
        text those of the English text in use."""
        source = _key(SOURCE_LOCALE)
        for msgid in sorted(msgids):
            shipped = self._shipped[source].get(msgid)
            expected = None if shipped is None else placeholders(shipped, msgid)
            english = overrides.get(source, {}).get(msgid)
            for po in reversed(host.get(source, ())):
                english = english if english is not None else po.get(msgid)
            english = english if english is not None else shipped
            in_use = None if english is None else placeholders(english, msgid)
            for key, text in self._layers(msgid, host, overrides):
                mine = placeholders(text, msgid)
                if key == source:
                    if expected is not None and mine != expected:
                        raise ValidationError(
                            f"{msgid}: the placeholders differ from the shipped English text"
                        )
                elif in_use is None:
                    raise ValidationError(f"{msgid}: give the English text first")
                elif mine != in_use:
                    raise ValidationError(f"{msgid}: the placeholders differ from the English text")

    # -- texts -----------------------------------------------------------------------------
    def text(
        self, msgid: str, locale: str, /, *, zone: tzinfo | str | None = None, **params: Param
    ) -> str:
        """The text of ``msgid`` in ``locale`` with its ``{name}`` placeholders filled
        (``zone``: the client's time zone for instants; extra parameters are ignored)."""
        found = self._lookup(_msgid(msgid), locale)
        if found is None:
            raise NotFoundError(f"no text for msgid {msgid!r}")
        return self._fill(found[0], msgid, locale, params, zone)

    def term(self, prefix: str, value: str, locale: str) -> str:
        """A name by kind (``term("tier.", "gold", "zh_CN")``): the catalog's text, or
        ``value`` itself when the catalog has none (a host's own tier)."""
        msgid = _msgid(prefix + value)
        found = self._lookup(msgid, locale)
        return value if found is None else self._fill(found[0], msgid, locale, {}, None)

    def render(
        self,
        template_id: str,
        locale: str,
        params: Mapping[str, object] | Iterable[tuple[str, object]] = (),
        *,
        zone: tzinfo | str | None = None,
    ) -> Rendered:
        """The subject and body of ``template_id`` in ``locale``. ``params`` is a mapping or
        the outbox's (name, value) pairs (a later pair wins); see :meth:`message_params`."""
        tid = _msgid(template_id)
        subject = self._lookup(f"template.{tid}.subject", locale)
        body = self._lookup(f"template.{tid}.body", locale)
        if subject is None or body is None:
            raise NotFoundError(f"no message template {tid!r}")
        given = _params(params)
        return Rendered(
            tid,
            _key(locale),
            body[1],
            self._fill(subject[0], f"template.{tid}.subject", locale, given, zone),
            self._fill(body[0], f"template.{tid}.body", locale, given, zone),
        )

    def message_params(self, pairs: Iterable[tuple[str, str]]) -> dict[str, Param]:
        """The outbox's text pairs as typed parameters: a tier, segment or document type as
        its translated term (:data:`TERM_PARAMS`), ISO dates and instants and canonical money
        under the names of :data:`DATE_PARAMS`, :data:`INSTANT_PARAMS`, :data:`MONEY_PARAMS`
        as values Babel formats; anything else, or what does not parse, as given."""
        known = self.msgids()
        out: dict[str, Param] = {}
        for name, value in _params(pairs).items():
            if not isinstance(value, str):
                raise ArgumentTypeError("the outbox's parameters are (name, text) pairs")
            out[name] = _typed(name, value, known)
        return out

    def error_text(self, error: BaseException, locale: str, /, **params: Param) -> str:
        """What a client portal shows for ``error``: the text of its ``code`` attribute when it
        has one the catalog knows and ``params`` fill (with the error's own ``params``, where
        it carries them, underneath), else of the nearest class in its MRO
        with an ``error.<ClassName>`` text. Never the exception's own message (it is English
        and may hold details)."""
        if not isinstance(error, FxCrmError):
            raise ArgumentTypeError("error_text explains an FxCrmError")
        carried = getattr(error, "params", None)  # the values a refusal's text names
        if isinstance(carried, Mapping):
            params = {**{k: v for k, v in carried.items() if isinstance(k, str)}, **params}
        code = getattr(error, "code", None)
        if isinstance(code, str):
            found = self._lookup(code, locale)
            if found is not None and placeholders(found[0], code) <= params.keys():
                return self._fill(found[0], code, locale, params, None)
        for cls in type(error).__mro__:
            if isinstance(cls, type) and issubclass(cls, FxCrmError):
                msgid = f"error.{cls.__name__}"
                found = self._lookup(msgid, locale)
                if found is not None and not placeholders(found[0], msgid) - params.keys():
                    return self._fill(found[0], msgid, locale, params, None)
        raise NotFoundError("no text for this error")  # the root's text was removed

    def _fill(
        self,
        text: str,
        msgid: str,
        locale: str,
        params: Mapping[str, object],
        zone: tzinfo | str | None,
    ) -> str:
        names = placeholders(text, msgid)
        missing = sorted(names - params.keys())
        if missing:
            raise ValidationError(f"{msgid}: no value for the placeholder {missing[0]!r}")
        values = {name: self._value(name, params[name], locale, zone) for name in names}
        return text.format_map(values)

    def _value(self, name: str, value: object, locale: str, zone: tzinfo | str | None) -> str:
        if isinstance(value, Term):
            msgid = _msgid(value.msgid)
            found = self._lookup(msgid, locale)
            if found is None:
                raise NotFoundError(f"no text for msgid {value.msgid!r}")
            return self._fill(found[0], msgid, locale, {}, None)  # {{ and }} as one brace
        if isinstance(value, str):
            if any(unicodedata.category(ch) in _REFUSED for ch in value):
                raise ValidationError(f"the parameter {name!r} holds a control character")
            return value
        if isinstance(value, Money):
            return format_money(value, locale)
        if isinstance(value, datetime):
            return format_datetime(value, locale, zone, self.datetime_format)
        if isinstance(value, date):
            return format_date(value, locale, self.date_format)
        if isinstance(value, float):
            raise FloatNotAllowedError(f"the parameter {name!r} is a float")
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            return format_number(value, locale)
        raise ArgumentTypeError(f"the parameter {name!r} has a type a message cannot show")


def _msgid(value: object) -> str:
    if not isinstance(value, str):
        raise ArgumentTypeError("a msgid is text")
    if not 1 <= len(value) <= 200 or any(
        ch.isspace() or ch in "{}" or unicodedata.category(ch) in _REFUSED for ch in value
    ):
        raise ValidationError("a msgid is 1-200 characters without spaces, braces or controls")
    return value


def _checked(text: object, msgid: str) -> str:
    """A text for a catalog: a subject is one line; a body may hold line breaks."""
    if not isinstance(text, str):
        raise ArgumentTypeError(f"{msgid}: a text is a string")
    if not text.strip() or len(text) > _MAX_TEXT:
        raise ValidationError(f"{msgid}: a text is 1-{_MAX_TEXT} characters")
    allowed = "" if msgid.endswith(".subject") else "\n"
    if any(unicodedata.category(ch) in _REFUSED and ch not in allowed for ch in text):
        raise ValidationError(f"{msgid}: the text holds a control character")
    placeholders(text, msgid)
    return text


def _params(params: object) -> dict[str, object]:
    items: Iterable[object]
    if isinstance(params, Mapping):
        items = params.items()
    elif isinstance(params, str | bytes) or not isinstance(params, Iterable):
        raise ArgumentTypeError("parameters are a mapping or (name, value) pairs")
    else:
        items = params
    out: dict[str, object] = {}
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str):
            raise ArgumentTypeError("parameters are a mapping or (name, value) pairs")
        out[item[0]] = item[1]
    return out


def _typed(name: str, value: str, known: frozenset[str]) -> Param:
    prefix = TERM_PARAMS.get(name)
    if prefix is not None:
        return Term(prefix + value) if prefix + value in known else value
    try:
        if name in DATE_PARAMS:
            return date.fromisoformat(value)
        if name in INSTANT_PARAMS:
            when = datetime.fromisoformat(value)
            return when if when.tzinfo is not None and when.utcoffset() is not None else value
        if name in MONEY_PARAMS:
            return Money.parse(value)
    except (ValueError, FxCrmError):
        return value
    return value
