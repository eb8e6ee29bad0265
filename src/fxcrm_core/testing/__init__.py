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

__all__ = [
    "CheckpointStoreContract",
    "EventStoreContract",
    "KeyStoreContract",
    "SharedEventStoreContract",
    "SnapshotStoreContract",
]
