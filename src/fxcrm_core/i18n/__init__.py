"""Texts and formats in the client's language (docs/i18n.md): gettext catalogs shipped in the
package (English, Simplified Chinese), a host's languages and overrides, message templates, and
money, numbers and dates formatted by Babel for the client's locale and zone.

It imports only the kernel: every context, the engagement relay and a host may use it.
"""

from __future__ import annotations

from fxcrm_core.i18n.catalog import (
    DATE_PARAMS,
    INSTANT_PARAMS,
    MONEY_PARAMS,
    SHIPPED_LOCALES,
    SOURCE_LOCALE,
    TERM_PARAMS,
    Catalog,
    Param,
    Rendered,
    Term,
    locale_chain,
)
from fxcrm_core.i18n.formatting import (
    DATE_FORMAT,
    DATETIME_FORMAT,
    format_date,
    format_datetime,
    format_money,
    format_number,
)

__all__ = [
    "DATETIME_FORMAT",
    "DATE_FORMAT",
    "DATE_PARAMS",
    "INSTANT_PARAMS",
    "MONEY_PARAMS",
    "SHIPPED_LOCALES",
    "SOURCE_LOCALE",
    "TERM_PARAMS",
    "Catalog",
    "Param",
    "Rendered",
    "Term",
    "format_date",
    "format_datetime",
    "format_money",
    "format_number",
    "locale_chain",
]
