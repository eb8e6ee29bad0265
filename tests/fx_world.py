"""A small FX desk for the fx tests: a market rate table, the broker's rates with maker-checker,
the ledger and the FX book, on one memory event store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fxcrm_core.access import APPROVAL_EVENTS, AccessControl, Actor, Approvals, Role
from fxcrm_core.events import EventCodec, EventRegistry, EventStore, Repository
from fxcrm_core.fx import FX_EVENTS, BrokerRates, FxBook
from fxcrm_core.kernel import ExchangeRate, FixedClock, RateTable
from fxcrm_core.ledger import LEDGER_EVENTS, Ledger
from fxcrm_core.stores import MemoryEventStore

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
MAKER = Actor.staff("fin-1", Role.FINANCE)
CHECKER = Actor.staff("fin-2", Role.FINANCE)


def registry() -> EventRegistry:
    found = EventRegistry()
    found.register_all((*LEDGER_EVENTS, *APPROVAL_EVENTS, *FX_EVENTS))
    return found


class Desk:
    def __init__(self, store: EventStore | None = None, *, clock: FixedClock | None = None):
        self.clock = clock or FixedClock(T0)
        self.store = store or MemoryEventStore(self.clock)
        self.market = RateTable()
        self.repository = Repository(self.store, EventCodec(registry()))
        self.access = AccessControl()
        self.approvals = Approvals(self.repository, self.access)
        self.rates = BrokerRates(
            self.repository, self.market, self.access, self.approvals, clock=self.clock
        )
        self.ledger = Ledger(self.repository, clock=self.clock)
        self.book = FxBook(self.ledger)

    def market_rate(self, pair: str, rate: str, at: datetime | None = None) -> None:
        base, quote = pair.split("/")
        self.market.add(ExchangeRate.of(base, quote, rate, "lp", at or self.clock.now()))

    def later(self, delta: timedelta) -> datetime:
        self.clock.advance(delta)
        return self.clock.now()
