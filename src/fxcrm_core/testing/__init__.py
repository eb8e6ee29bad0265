"""Contract test suites for the ports: subclass one in your tests to check your own adapter.

Needs pytest and hypothesis (the ``dev`` extra). See docs/stores.md.
"""

from fxcrm_core.testing.contract import (
    CheckpointStoreContract,
    EventStoreContract,
    KeyStoreContract,
    SharedEventStoreContract,
    SnapshotStoreContract,
)
from fxcrm_core.testing.trading_contract import TradingServerContract

__all__ = [
    "CheckpointStoreContract",
    "EventStoreContract",
    "KeyStoreContract",
    "SharedEventStoreContract",
    "SnapshotStoreContract",
    "TradingServerContract",
]
