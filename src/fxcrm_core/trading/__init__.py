"""Trading: the TradingServer port (MT4/MT5/cTrader-shaped), the Deal model with MT5's exact
semantics, a deterministic simulated server, and an importer of MT5 deal-history exports.

The deal feed is recorded in the log (``DealFeeds``, ``DealsReceived``) for policies to react
to. Depends on ``kernel`` and ``events``.
"""

from fxcrm_core.events import EventRegistry
from fxcrm_core.trading.deal import (
    Deal,
    DealAction,
    DealEntry,
    UnknownServerResponseError,
    VolumeUnits,
    mt5_double,
)
from fxcrm_core.trading.feed import FEED_EVENTS, DealFeed, DealFeeds, DealsReceived, DealsSetAside
from fxcrm_core.trading.mt5_csv import ImportProblem, ImportResult, read_mt5_deals
from fxcrm_core.trading.server import (
    AccountNotFoundError,
    AccountState,
    AccountStatus,
    BalanceOperation,
    DealChange,
    FeedItem,
    NewTradingAccount,
    TradingServer,
    TradingServerError,
)
from fxcrm_core.trading.simulated import SimulatedTradingServer

__all__ = [
    "AccountStatus",
    "register_events",
    "FEED_EVENTS",
    "AccountNotFoundError",
    "AccountState",
    "BalanceOperation",
    "Deal",
    "DealAction",
    "DealChange",
    "DealEntry",
    "DealFeed",
    "DealFeeds",
    "DealsReceived",
    "DealsSetAside",
    "FeedItem",
    "ImportProblem",
    "ImportResult",
    "NewTradingAccount",
    "SimulatedTradingServer",
    "TradingServer",
    "TradingServerError",
    "UnknownServerResponseError",
    "VolumeUnits",
    "mt5_double",
    "read_mt5_deals",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(FEED_EVENTS)
