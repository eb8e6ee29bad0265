"""IB commissions: the effective-dated IB tree and the strategies that share a deal's rebate up
it. (Schedules, deal processing, payouts and statements are built on these next.)

Depends on ``kernel`` only so far.
"""

from fxcrm_core.commissions.distribution import (
    Differential,
    Distribution,
    FixedShares,
    KeepAndPassUp,
    PassThrough,
    RankSlices,
    Share,
    rates_above_parent,
)
from fxcrm_core.commissions.tree import IbTree, TreeError

__all__ = [
    "Differential",
    "Distribution",
    "FixedShares",
    "IbTree",
    "KeepAndPassUp",
    "PassThrough",
    "RankSlices",
    "Share",
    "TreeError",
    "rates_above_parent",
]
