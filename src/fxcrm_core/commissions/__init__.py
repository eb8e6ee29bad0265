"""IB commissions: the effective-dated IB tree and the strategies that share a deal's rebate up
it, the effective-dated schedules that turn a deal into a pool, and the engine that turns the
deal feed into explained rebate entries exactly once, payouts through the ledger, and
statements, with the engine's output kept in the event log (the broker-sized benchmark next).

Depends on ``kernel``, ``access`` (approvals), ``ledger``, ``trading`` and ``privacy`` (masking).
"""

from fxcrm_core.commissions.applications import (
    IB_APPLICATION_EVENTS,
    ApplicationClosedError,
    ApplicationStatus,
    IbApplication,
    IbApplications,
)
from fxcrm_core.commissions.book import REBATE_EVENTS, RebateBook, RebateEntriesRecorded
from fxcrm_core.commissions.distribution import (
    Differential,
    DifferentialRate,
    Distribution,
    FixedShares,
    KeepAndPassUp,
    PassThrough,
    RankSlices,
    Share,
    rates_above_parent,
)
from fxcrm_core.commissions.engine import EngineChanges, EntryKind, RebateEngine, RebateEntry
from fxcrm_core.commissions.network import (
    IB_NETWORK_EVENTS,
    ClientAttributed,
    IbNetwork,
    IbNetworkService,
    IbRankChanged,
    IbRegistered,
    IbReparented,
    IbTreeAt,
    IbTreeView,
)
from fxcrm_core.commissions.payouts import (
    PAYOUT_ACTION,
    PAYOUT_EVENTS,
    PAYOUT_POLICY,
    Cadence,
    HeldPayoutMade,
    IbPayoutAccount,
    PayoutApprovalRejected,
    PayoutCurrencyChangeError,
    PayoutHeld,
    PayoutMade,
    PayoutPolicy,
    PayoutPolicySet,
    PayoutRefused,
    PayoutResult,
    Payouts,
    RebatesAccrued,
    RemainderCarried,
    accrual_policy,
    payout_transfer_id,
)
from fxcrm_core.commissions.plans import (
    CommissionShare,
    Cpa,
    PerLot,
    Pips,
    Plan,
    ProfitShare,
    SpreadShare,
    plan_kinds,
    register_plan,
)
from fxcrm_core.commissions.schedule import (
    CapPeriod,
    Ceiling,
    PeriodCap,
    PlanKind,
    RebateLine,
    Revenue,
    Rule,
    Schedule,
    ScheduleBook,
    Trigger,
    UnfundedPlanError,
    base_symbol,
)
from fxcrm_core.commissions.schedules_log import (
    SCHEDULE_EVENTS,
    RecordedScheduleBook,
    ScheduleConflictError,
    ScheduleService,
    ScheduleVersionRecorded,
)
from fxcrm_core.commissions.statements import Statement, StatementLine, build_statement
from fxcrm_core.commissions.tree import IbTree, TreeError
from fxcrm_core.events import EventRegistry

__all__ = [
    "register_events",
    "IB_APPLICATION_EVENTS",
    "ApplicationClosedError",
    "ApplicationStatus",
    "IbApplication",
    "IbApplications",
    "DifferentialRate",
    "IbRankChanged",
    "PayoutCurrencyChangeError",
    "PayoutPolicySet",
    "CommissionShare",
    "Cpa",
    "PerLot",
    "Pips",
    "Plan",
    "ProfitShare",
    "SpreadShare",
    "plan_kinds",
    "register_plan",
    "Ceiling",
    "Revenue",
    "UnfundedPlanError",
    "SCHEDULE_EVENTS",
    "RecordedScheduleBook",
    "ScheduleConflictError",
    "ScheduleService",
    "ScheduleVersionRecorded",
    "IB_NETWORK_EVENTS",
    "REBATE_EVENTS",
    "RebateBook",
    "RebateEntriesRecorded",
    "PAYOUT_ACTION",
    "PAYOUT_EVENTS",
    "PAYOUT_POLICY",
    "Cadence",
    "HeldPayoutMade",
    "IbPayoutAccount",
    "PayoutApprovalRejected",
    "PayoutHeld",
    "PayoutMade",
    "PayoutRefused",
    "RebatesAccrued",
    "RemainderCarried",
    "accrual_policy",
    "payout_transfer_id",
    "ClientAttributed",
    "CapPeriod",
    "EngineChanges",
    "PeriodCap",
    "PayoutPolicy",
    "PayoutResult",
    "Payouts",
    "Differential",
    "Distribution",
    "EntryKind",
    "FixedShares",
    "IbNetwork",
    "IbNetworkService",
    "IbRegistered",
    "IbReparented",
    "IbTree",
    "IbTreeAt",
    "IbTreeView",
    "KeepAndPassUp",
    "PassThrough",
    "PlanKind",
    "RankSlices",
    "RebateEngine",
    "RebateEntry",
    "RebateLine",
    "Rule",
    "Schedule",
    "ScheduleBook",
    "Share",
    "Statement",
    "StatementLine",
    "TreeError",
    "Trigger",
    "base_symbol",
    "build_statement",
    "rates_above_parent",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(
        (
            *REBATE_EVENTS,
            *IB_NETWORK_EVENTS,
            *IB_APPLICATION_EVENTS,
            *PAYOUT_EVENTS,
            *SCHEDULE_EVENTS,
        )
    )
