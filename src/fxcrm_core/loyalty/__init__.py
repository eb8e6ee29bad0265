"""Loyalty (issue 15): tier programmes as data, evaluated on client activity, with overrides
through maker-checker and benefits the other contexts read.

Imports ``kernel``, ``events`` and ``access``. Client activity comes through the
:class:`ActivitySource` port (the activity read model answers it), not by importing
``fxcrm_core.activity``. Segmentation (RFM) and churn warnings read the activity read model's
windows (``fxcrm_core.activity``, below loyalty in the layers).
"""

from fxcrm_core.events import EventRegistry
from fxcrm_core.loyalty.churn import (
    CHURN_EVENTS,
    BaselineChurnModel,
    ChurnAssessment,
    ChurnModel,
    ChurnReason,
    ChurnSignal,
    ChurnState,
    ChurnWarningCleared,
    ChurnWarningRaised,
    ChurnWatch,
)
from fxcrm_core.loyalty.events import (
    LOYALTY_EVENTS,
    ClientTier,
    TierChanged,
    TierGraceCleared,
    TierGraceStarted,
    TierOverrideEnded,
    TierOverrideSet,
    TierPeriodClosed,
    TierProgrammeRecorded,
)
from fxcrm_core.loyalty.programme import (
    Benefits,
    CalendarMonth,
    Combination,
    DowngradeRule,
    Measure,
    Period,
    Quarter,
    RollingTradingDays,
    Threshold,
    Tier,
    TierProgramme,
    UpgradeTiming,
    Window,
    programme_from_data,
    programme_to_data,
)
from fxcrm_core.loyalty.segments import (
    DEFAULT_SEGMENTS,
    DEFAULT_VALUE_TIERS,
    ActivityFigures,
    CutPoints,
    Recency,
    RfmModel,
    RfmScore,
    ScoreRule,
    Segment,
    Segmentation,
)
from fxcrm_core.loyalty.tiers import (
    OVERRIDE_ACTION,
    PROGRAMME_PERMISSION,
    ActivitySource,
    Standing,
    Tiers,
)

__all__ = [
    "CHURN_EVENTS",
    "DEFAULT_SEGMENTS",
    "DEFAULT_VALUE_TIERS",
    "ActivityFigures",
    "BaselineChurnModel",
    "ChurnAssessment",
    "ChurnModel",
    "ChurnReason",
    "ChurnSignal",
    "ChurnState",
    "ChurnWarningCleared",
    "ChurnWarningRaised",
    "ChurnWatch",
    "CutPoints",
    "Recency",
    "RfmModel",
    "RfmScore",
    "ScoreRule",
    "Segment",
    "Segmentation",
    "LOYALTY_EVENTS",
    "OVERRIDE_ACTION",
    "PROGRAMME_PERMISSION",
    "ActivitySource",
    "Benefits",
    "CalendarMonth",
    "ClientTier",
    "Combination",
    "DowngradeRule",
    "Measure",
    "Period",
    "Quarter",
    "RollingTradingDays",
    "Standing",
    "Threshold",
    "Tier",
    "TierChanged",
    "TierGraceCleared",
    "TierGraceStarted",
    "TierOverrideEnded",
    "TierOverrideSet",
    "TierPeriodClosed",
    "TierProgramme",
    "TierProgrammeRecorded",
    "Tiers",
    "UpgradeTiming",
    "Window",
    "programme_from_data",
    "programme_to_data",
    "register_events",
]


def register_events(registry: EventRegistry) -> None:
    """Register the loyalty context's events."""
    registry.register_all(LOYALTY_EVENTS)
    registry.register_all(CHURN_EVENTS)
