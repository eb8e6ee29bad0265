"""fxcrm_core: the domain core of a forex broker CRM and back office.

Start with :mod:`fxcrm_core.kernel` (money, time) and :mod:`fxcrm_core.events` (the event log);
storage adapters live in :mod:`fxcrm_core.stores`.
"""

__version__ = "0.1.0"
