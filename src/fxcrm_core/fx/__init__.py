"""FX: the broker's own exchange rates as managed data (a pricing per pair and direction over a
market RateSource: markup in pips or percent, or fixed; effective-dated, maker-checker above a
threshold) and conversions at those rates booked in the ledger, the markup as FX revenue.

Depends on ``kernel``, ``events``, ``access`` (maker-checker) and ``ledger``.
"""

from fxcrm_core.events import EventRegistry
from fxcrm_core.fx.book import (
    FX_BOOK_EVENTS,
    FxBook,
    FxBooking,
    FxConversion,
    FxConverted,
    FxSettlement,
)
from fxcrm_core.fx.pricing import (
    PRICING_EVENTS,
    Direction,
    MarkupKind,
    Pricing,
    PricingVersion,
    RatePricing,
    RatePricingSet,
    UnusableRateError,
)
from fxcrm_core.fx.rates import (
    RATE_ACTION,
    BrokerRates,
    PricingChange,
    PricingNotSetError,
    Quote,
    StaleRateError,
)

FX_EVENTS = (*PRICING_EVENTS, *FX_BOOK_EVENTS)

__all__ = [
    "register_events",
    "FX_EVENTS",
    "RATE_ACTION",
    "BrokerRates",
    "Direction",
    "FxBook",
    "FxBooking",
    "FxConversion",
    "FxConverted",
    "FxSettlement",
    "MarkupKind",
    "Pricing",
    "PricingChange",
    "PricingNotSetError",
    "PricingVersion",
    "Quote",
    "RatePricing",
    "RatePricingSet",
    "StaleRateError",
    "UnusableRateError",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(FX_EVENTS)
