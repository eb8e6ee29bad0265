"""The broker's pricing of a currency pair: the market rate plus a markup (pips or percent), or a
fixed rate, per direction, as effective-dated versions folded from ``RatePricingSet`` events.

A pricing turns a market rate into the broker's two client rates: ``bid`` (the client sells the
pair's base) and ``ask`` (the client buys it). Whatever the rule, ``bid <= market <= ask``: the
client never gets a better rate than the market, so the markup is never negative.
"""

from __future__ import annotations

import decimal
import enum
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.kernel._decimal import DecimalLike, to_decimal
from fxcrm_core.kernel.errors import RateNotFoundError, ValidationError
from fxcrm_core.kernel.money import Currency

__all__ = [
    "PRICING_EVENTS",
    "Direction",
    "MarkupKind",
    "Pricing",
    "PricingVersion",
    "RatePricing",
    "RatePricingSet",
    "UnusableRateError",
]

#: Client rates keep this many significant digits, rounded in the house's favour.
RATE_DIGITS = 20
_BID = decimal.Context(prec=RATE_DIGITS, rounding=decimal.ROUND_FLOOR, Emax=999_999, Emin=-999_999)
_ASK = decimal.Context(
    prec=RATE_DIGITS, rounding=decimal.ROUND_CEILING, Emax=999_999, Emin=-999_999
)
_MAX_PIPS = Decimal(1_000_000)


class UnusableRateError(RateNotFoundError):
    """The pricing leaves no positive client rate at this market rate (a markup in pips larger
    than the rate itself): no quote rather than a nonsensical one."""

    default_message = "the broker's pricing gives no usable rate at this market rate"


class Direction(enum.Enum):
    """What the conversion is for: each has its own pricing per pair."""

    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    CONVERSION = "conversion"  # between two of the client's wallets


class MarkupKind(enum.Enum):
    PIPS = "pips"
    PERCENT = "percent"
    FIXED = "fixed"


def default_pip_size(quote: Currency) -> Decimal:
    """0.01 for a pair quoted in yen (or another currency without minor units), else 0.0001."""
    return Decimal("0.01") if quote.minor_units == 0 else Decimal("0.0001")


def _rate_value(value: DecimalLike | None, what: str) -> Decimal | None:
    if value is None:
        return None
    rate = to_decimal(value, what)
    if rate <= 0:
        raise ValidationError(f"{what} must be positive")
    return rate


@attrs.frozen
class Pricing:
    """One pricing rule: build it with :meth:`pips`, :meth:`percent` or :meth:`fixed`.

    >>> Pricing.pips(50).prices(Currency.of("USD"), Currency.of("CNY"), Decimal("7.1000"))
    (Decimal('7.0950'), Decimal('7.1050'))
    >>> Pricing.percent("0.5").prices(Currency.of("USD"), Currency.of("CNY"), Decimal("7.1"))
    (Decimal('7.0645'), Decimal('7.1355'))
    >>> Pricing.fixed("7.05", "7.20").prices(Currency.of("USD"), Currency.of("CNY"), Decimal("7.3"))
    (Decimal('7.05'), Decimal('7.3'))
    """

    kind: MarkupKind
    markup: Decimal = Decimal(0)  # pips or percent
    pip_size: Decimal | None = None  # pips only; None: the pair's usual pip
    bid: Decimal | None = None  # fixed only
    ask: Decimal | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.kind, MarkupKind):
            raise ValidationError("a pricing is pips, percent or fixed")
        markup = to_decimal(self.markup, "markup")
        if markup < 0:
            raise ValidationError("a markup is zero or more: the client never beats the market")
        if self.kind is MarkupKind.PERCENT and markup >= 100:
            raise ValidationError("a markup in percent is under 100")
        if self.kind is MarkupKind.PIPS and markup > _MAX_PIPS:
            raise ValidationError("a markup in pips is at most 1,000,000")
        object.__setattr__(self, "markup", markup)
        object.__setattr__(self, "pip_size", _rate_value(self.pip_size, "pip_size"))
        object.__setattr__(self, "bid", _rate_value(self.bid, "bid"))
        object.__setattr__(self, "ask", _rate_value(self.ask, "ask"))
        if self.kind is MarkupKind.FIXED:
            if self.bid is None or self.ask is None or self.bid > self.ask:
                raise ValidationError("a fixed pricing has a bid and an ask, bid <= ask")
            if markup or self.pip_size is not None:
                raise ValidationError("a fixed pricing has no markup")
        elif self.bid is not None or self.ask is not None:
            raise ValidationError("only a fixed pricing sets a bid and an ask")
        if self.kind is MarkupKind.PERCENT and self.pip_size is not None:
            raise ValidationError("a markup in percent has no pip size")

    @classmethod
    def pips(cls, markup: DecimalLike, *, pip_size: DecimalLike | None = None) -> Pricing:
        """The market rate, ``markup`` pips worse for the client on each side."""
        return cls(
            MarkupKind.PIPS,
            to_decimal(markup, "markup"),
            None if pip_size is None else to_decimal(pip_size, "pip_size"),
        )

    @classmethod
    def percent(cls, markup: DecimalLike) -> Pricing:
        """The market rate, ``markup`` percent worse for the client on each side."""
        return cls(MarkupKind.PERCENT, to_decimal(markup, "markup"))

    @classmethod
    def fixed(cls, bid: DecimalLike, ask: DecimalLike | None = None) -> Pricing:
        """Fixed client rates (``ask`` defaults to ``bid``), never better than the market: when
        the market passes a fixed rate, the market rate applies on that side."""
        b = to_decimal(bid, "bid")
        return cls(MarkupKind.FIXED, bid=b, ask=b if ask is None else to_decimal(ask, "ask"))

    def prices(self, base: Currency, quote: Currency, market: Decimal) -> tuple[Decimal, Decimal]:
        """``(bid, ask)`` for one unit of ``base`` in ``quote`` at the ``market`` rate, rounded
        to 20 significant digits in the house's favour (bid down, ask up)."""
        if self.kind is MarkupKind.FIXED:
            assert self.bid is not None
            assert self.ask is not None
            return min(self.bid, market), max(self.ask, market)
        if self.kind is MarkupKind.PIPS:
            step = self.markup * (self.pip_size or default_pip_size(quote))
            bid, ask = _BID.subtract(market, step), _ASK.add(market, step)
        else:
            share = self.markup / 100
            bid = _BID.multiply(market, 1 - share)
            ask = _ASK.multiply(market, 1 + share)
        if bid <= 0:
            raise UnusableRateError()
        return bid, ask

    def params(self) -> dict[str, str]:
        """The rule as text (approval parameters); :meth:`from_params` reads it back."""
        return {
            "kind": self.kind.value,
            "markup": str(self.markup),
            "pip_size": "" if self.pip_size is None else str(self.pip_size),
            "bid": "" if self.bid is None else str(self.bid),
            "ask": "" if self.ask is None else str(self.ask),
        }

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Pricing:
        def opt(key: str) -> Decimal | None:
            text = params.get(key, "")
            return to_decimal(text, key) if text else None

        try:
            kind = MarkupKind(params["kind"])
        except (KeyError, ValueError):
            raise ValidationError("not a pricing kind") from None
        return cls(kind, opt("markup") or Decimal(0), opt("pip_size"), opt("bid"), opt("ask"))


@attrs.frozen
class RatePricingSet(DomainEvent):
    """The broker's pricing of ``base/quote`` for ``direction``, in force from ``effective_at``.

    ``approval_id`` names the maker-checker request a large change went through (None: within
    the threshold, set directly). Who set it and why are in the event's metadata too.
    """

    base: Currency
    quote: Currency
    direction: Direction
    pricing: Pricing
    effective_at: datetime
    set_by: str
    reason: str
    approval_id: str | None


PRICING_EVENTS = (RatePricingSet,)


@attrs.frozen
class PricingVersion:
    """One recorded pricing: its version in the pair's stream and when it takes effect."""

    version: int
    pricing: Pricing
    effective_at: datetime
    set_by: str
    reason: str
    approval_id: str | None


def pricing_id(base: Currency, quote: Currency, direction: Direction) -> str:
    return f"{base.code}-{quote.code}-{direction.value}"


@attrs.frozen(kw_only=True)
class RatePricing(Aggregate):
    """Every pricing version of one pair and direction, in the order recorded."""

    category = "fxpricing"
    versions: tuple[PricingVersion, ...] = ()

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, RatePricingSet):
            found = PricingVersion(
                len(self.versions) + 1,
                event.pricing,
                event.effective_at,
                event.set_by,
                event.reason,
                event.approval_id,
            )
            return self.evolve(versions=(*self.versions, found))
        raise ValidationError(f"RatePricing cannot apply {type(event).__name__}")

    def in_force(self, at: datetime) -> PricingVersion | None:
        """The version in force at ``at``: the latest effective one, the later recorded on a tie."""
        return _latest(v for v in self.versions if v.effective_at <= at)

    def last_approved(self) -> PricingVersion | None:
        """The latest version a second person approved (None: none was)."""
        return next((v for v in reversed(self.versions) if v.approval_id is not None), None)


def _latest(versions: Iterable[PricingVersion]) -> PricingVersion | None:
    return max(versions, key=lambda v: (v.effective_at, v.version), default=None)
