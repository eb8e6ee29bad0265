"""Client activity (issue 15): what each client did, read from the log. Trades, lots and
notional per trading day, deposits and withdrawals, the broker's revenue and the rebates paid
away (:class:`ClientActivity`), and each client's fund-flow statement (:class:`FundFlows`).

Depends on ``kernel``, ``events``, ``access``, ``ledger``, ``trading``, ``accounts``,
``commissions`` (rebate entries) and ``fx`` (conversion records).
"""

from fxcrm_core.activity.measures import (
    Figure,
    Instrument,
    InstrumentSpec,
    Measure,
    Period,
    fx_instrument,
)
from fxcrm_core.activity.model import ClientActivity
from fxcrm_core.activity.source import (
    SOURCE_MEASURES,
    ClientActivitySource,
    PinnedActivity,
    UnsupportedMeasureError,
)
from fxcrm_core.activity.statement import (
    FlowKind,
    FundFlows,
    FundFlowStatement,
    StatementLine,
    flow_kind,
)

__all__ = [
    "SOURCE_MEASURES",
    "ClientActivity",
    "ClientActivitySource",
    "PinnedActivity",
    "UnsupportedMeasureError",
    "Figure",
    "FlowKind",
    "FundFlowStatement",
    "FundFlows",
    "StatementLine",
    "flow_kind",
    "Instrument",
    "InstrumentSpec",
    "Measure",
    "Period",
    "fx_instrument",
]
