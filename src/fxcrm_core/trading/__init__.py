"""Trading: the TradingServer port (MT4/MT5/cTrader-shaped), the Deal model with MT5's exact
semantics, a deterministic simulated server, and importers of the trading data brokers hold: MT5
deal-history exports (``read_mt5_deals``), the MetaTrader5 package's deals and their CSV dumps
(``deal_from_mt5_package``, ``read_mt5_package_csv``) and the terminal's History report in HTML
or Excel (``read_mt5_report``) and MT4 account statements (``read_mt4_statement``; both the
``reports`` extra); see docs/mt5-history.md.

The deal feed is recorded in the log (``DealFeeds``, ``DealsReceived``) for policies to react
to. Depends on ``kernel`` and ``events``.
"""

from fxcrm_core.events import EventRegistry
from fxcrm_core.trading._encoding import UndecodableTextError
from fxcrm_core.trading.deal import (
    Deal,
    DealAction,
    DealEntry,
    UnknownServerResponseError,
    VolumeUnits,
    mt5_double,
)
from fxcrm_core.trading.feed import FEED_EVENTS, DealFeed, DealFeeds, DealsReceived, DealsSetAside
from fxcrm_core.trading.mt4_statement import Mt4StatementResult, read_mt4_statement
from fxcrm_core.trading.mt5_csv import ImportProblem, ImportResult, read_mt5_deals
from fxcrm_core.trading.mt5_package import (
    PACKAGE_DEAL_ENTRIES,
    PACKAGE_DEAL_TYPES,
    PACKAGE_FIELDS,
    deal_from_mt5_package,
    read_mt5_package_csv,
)
from fxcrm_core.trading.mt5_report import (
    ReportImportResult,
    ReportsExtraMissingError,
    read_mt5_report,
)
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
    "Mt4StatementResult",
    "read_mt4_statement",
    "PACKAGE_DEAL_ENTRIES",
    "PACKAGE_DEAL_TYPES",
    "PACKAGE_FIELDS",
    "ReportImportResult",
    "ReportsExtraMissingError",
    "UndecodableTextError",
    "deal_from_mt5_package",
    "read_mt5_package_csv",
    "read_mt5_report",
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
