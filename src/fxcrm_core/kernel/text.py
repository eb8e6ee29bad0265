"""Short texts a person or a host gives a command: ids, references, reasons.

One check for all of them: text (not bytes, not None), not blank, no control or format
characters (NUL, newlines, terminal escapes, a right-to-left override: they end in deal
comments, logs and screens), no longer than the field allows. The message names the field,
never the value.
"""

from __future__ import annotations

import unicodedata

from fxcrm_core.kernel.errors import ArgumentTypeError, ValidationError

__all__ = ["checked_text"]


def checked_text(value: object, what: str, limit: int = 200) -> str:
    """``value`` stripped, or a typed error naming ``what``.

    >>> checked_text("  chargeback 12 ", "reason")
    'chargeback 12'
    >>> checked_text("a\\x00b", "request id")
    Traceback (most recent call last):
    ...
    fxcrm_core.kernel.errors.ValidationError: the request id holds a control character
    """
    if not isinstance(value, str):
        raise ArgumentTypeError(f"the {what} is text")
    if len(value) > 4 * limit:  # refused before the scan: a megabyte costs nothing
        raise ValidationError(f"the {what} is longer than {limit} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise ValidationError(f"the {what} holds a control character")
    value = value.strip()
    if not value:
        raise ValidationError(f"the {what} is empty")
    if len(value) > limit:
        raise ValidationError(f"the {what} is longer than {limit} characters")
    return value
