"""Contract test suites for the ports: subclass one in your tests to check your own adapter.
The parity harness: run a scenario on one broker, a fresh process per step and two processes
in turn, and compare everything (docs/parity.md).

Needs pytest and hypothesis (the ``dev`` extra). See docs/stores.md.
"""

from fxcrm_core.testing.contract import (
    CheckpointStoreContract,
    EventStoreContract,
    KeyStoreContract,
    SharedEventStoreContract,
    SnapshotStoreContract,
)
from fxcrm_core.testing.notifier_contract import NotifierContract
from fxcrm_core.testing.parity import (
    Mode,
    ParityReport,
    Probe,
    Ref,
    Scenario,
    ScenarioError,
    Step,
    assert_parity,
    canonical,
    run_parity,
)
from fxcrm_core.testing.rates_contract import RateSourceContract
from fxcrm_core.testing.trading_contract import TradingServerContract

__all__ = [
    "NotifierContract",
    "RateSourceContract",
    "CheckpointStoreContract",
    "EventStoreContract",
    "KeyStoreContract",
    "Mode",
    "ParityReport",
    "Probe",
    "Ref",
    "Scenario",
    "ScenarioError",
    "SharedEventStoreContract",
    "SnapshotStoreContract",
    "Step",
    "TradingServerContract",
    "assert_parity",
    "canonical",
    "run_parity",
]
