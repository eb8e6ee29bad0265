"""Trading passwords: the rules a server keeps (MT5's by default), a generator that keeps them
(``secrets``), and a value that never shows its text in a repr, a log line or an error."""

from __future__ import annotations

import secrets
import string

import attrs

from fxcrm_core.kernel.errors import ValidationError

__all__ = ["MT5_PASSWORD_RULES", "PasswordRules", "TradingPassword", "WeakPasswordError"]

# Punctuation every MT4/MT5 terminal and manager accepts and nobody misreads in an e-mail.
_SPECIALS = "!#$%&*+-=?@^_"


class WeakPasswordError(ValidationError):
    """A password that breaks the trading server's rules (the message names the rule only)."""

    default_message = "the password does not meet the trading server's rules"


@attrs.frozen(repr=False, eq=False)
class TradingPassword:
    """A trading password. ``reveal()`` gives its text; repr and str never do.

    >>> TradingPassword("Sample-pw-42!")
    TradingPassword('***')
    >>> f"{TradingPassword('Sample-pw-42!')}"
    '***'
    """

    _text: str = attrs.field(alias="text")

    def reveal(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return "TradingPassword('***')"

    def __str__(self) -> str:
        return "***"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a trading password is not pickled")


@attrs.frozen
class PasswordRules:
    """What a trading server accepts: a length range and the character classes it needs.

    >>> MT5_PASSWORD_RULES.check("Sample-pw-42!")
    >>> MT5_PASSWORD_RULES.check("sample-pw-42")
    Traceback (most recent call last):
    ...
    fxcrm_core.accounts.passwords.WeakPasswordError: a trading password needs an upper-case letter
    """

    min_length: int = 8
    max_length: int = 16
    lower: bool = True
    upper: bool = True
    digit: bool = True
    special: bool = True
    generated_length: int = 12

    def __attrs_post_init__(self) -> None:
        needed = self.lower + self.upper + self.digit + self.special
        if not needed <= self.min_length <= self.generated_length <= self.max_length:
            raise ValidationError("password rules need min <= generated length <= max")

    def check(self, text: str) -> None:
        """Raise WeakPasswordError naming the first rule ``text`` breaks (never the text)."""
        if not isinstance(text, str):
            raise WeakPasswordError("a trading password is text")
        if not self.min_length <= len(text) <= self.max_length:
            raise WeakPasswordError(
                f"a trading password has {self.min_length} to {self.max_length} characters"
            )
        if not all(c.isascii() and c.isprintable() and not c.isspace() for c in text):
            raise WeakPasswordError("a trading password is printable ASCII without spaces")
        for needed, test, name in (
            (self.lower, str.islower, "a lower-case letter"),
            (self.upper, str.isupper, "an upper-case letter"),
            (self.digit, str.isdigit, "a digit"),
            (self.special, string.punctuation.__contains__, "a special character"),
        ):
            if needed and not any(test(c) for c in text):
                raise WeakPasswordError(f"a trading password needs {name}")

    def generate(self) -> TradingPassword:
        """A new password from the operating system's randomness that keeps these rules."""
        pools = [
            pool
            for needed, pool in (
                (self.lower, string.ascii_lowercase),
                (self.upper, string.ascii_uppercase),
                (self.digit, string.digits),
                (self.special, _SPECIALS),
            )
            if needed
        ]
        alphabet = "".join(pools) or string.ascii_letters + string.digits
        chars = [secrets.choice(pool) for pool in pools]
        chars += [secrets.choice(alphabet) for _ in range(self.generated_length - len(chars))]
        secrets.SystemRandom().shuffle(chars)
        text = "".join(chars)
        self.check(text)
        return TradingPassword(text)


MT5_PASSWORD_RULES = PasswordRules()
