"""The SDK's own policies: how one context reacts to another's events.

Each handler takes an upstream event and a unit of work and records what follows from it; the
broker's ``EVENT_HANDLERS`` table says which event feeds which handler, and the
``PolicyRunner`` commits each handler's output with its position (exactly once). Handlers decide
from the stored state and the upstream event alone (its recording time, never the wall clock).
"""

from __future__ import annotations

import bisect
import threading
from datetime import date, timedelta
from typing import Any, Self

import attrs

from fxcrm_core.accounts import AccountGroupChanged, TradingAccountOpened
from fxcrm_core.clients import Client, Stage, StageChanged
from fxcrm_core.commissions import ClientAttributed
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    EventRegistry,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel import ConcurrencyError, TradingCalendar, ValidationError
from fxcrm_core.kernel.clock import Clock
from fxcrm_core.payments import Deposit, DepositCredited, DepositInitiated
from fxcrm_core.trading import DealChange, DealsReceived

__all__ = [
    "REACTION_EVENTS",
    "LoginActivity",
    "Lifecycle",
    "TradingDayClosed",
    "TradingDays",
    "TradingLogins",
    "register_events",
]


@attrs.frozen
class TradingDayClosed(DomainEvent):
    """A trading day has ended (17:00 New York); ``previous`` is the day closed before it."""

    trading_day: date
    previous: date | None


REACTION_EVENTS = (TradingDayClosed,)


def register_events(registry: EventRegistry) -> None:
    """Register the events these policies record themselves (the broker's closed days)."""
    registry.register_all(REACTION_EVENTS)


@attrs.frozen(kw_only=True)
class TradingDays(Aggregate):
    """The broker's closed trading days: the clock's ticks, recorded so policies can replay."""

    category = "tradingdays"
    last_closed: date | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, TradingDayClosed):
            return self.evolve(last_closed=event.trading_day)
        raise ValidationError(f"TradingDays cannot apply {type(event).__name__}")

    def close_until(self, current: date, calendar: TradingCalendar) -> list[DomainEvent]:
        """Events closing every trading day before ``current`` not closed yet (the first call
        closes only the day before ``current``: the log has no earlier activity to judge)."""
        day = self.last_closed + timedelta(days=1) if self.last_closed else None
        if day is None:
            day = current - timedelta(days=1)
            while not calendar.is_trading_day(day):
                day -= timedelta(days=1)
        events: list[DomainEvent] = []
        previous = self.last_closed
        while day < current:
            if calendar.is_trading_day(day):
                events.append(TradingDayClosed(day, previous))
                previous = day
            day += timedelta(days=1)
        return events


class LoginActivity:
    """A memory read model: each client's last trading day with a credited deposit or a trade,
    and who holds which trading login (rebuilt from the log in each process)."""

    name = "client-activity"
    event_types: frozenset[str] | None = frozenset(
        {"DepositInitiated", "DepositCredited", "TradingAccountOpened", "DealsReceived"}
    )

    def __init__(self, calendar: TradingCalendar) -> None:
        self.calendar = calendar
        self.deposit_clients: dict[str, str] = {}
        self.logins: dict[tuple[str, int], str] = {}
        self.groups: dict[tuple[str, int], str] = {}
        self.accounts: dict[str, list[str]] = {}  # client -> trading account ids, in order
        self.funded: set[str] = set()  # clients with a credited deposit
        # Per client: the positions of its activity in the log and the trading day of each
        # (the latest day so far), so a policy judges activity as of the event it handles.
        self.activity: dict[str, tuple[list[int], list[date]]] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, DepositInitiated):
            self.deposit_clients[event.deposit_id] = event.client_id
        elif isinstance(event, DepositCredited):
            client = self.deposit_clients.get(recorded.stream_id.removeprefix("deposit-"))
            if client is not None:
                self.funded.add(client)
                self._active(
                    client, recorded.position, self.calendar.trading_day(recorded.recorded_at)
                )
        elif isinstance(event, TradingAccountOpened):
            self.logins[(event.server, event.login)] = event.client_id
            self.groups[(event.server, event.login)] = event.group
            self.accounts.setdefault(event.client_id, []).append(event.account_id)
        elif isinstance(event, DealsReceived):
            for item in event.items:
                client = self.trader(event.server, item)
                if client is not None:
                    self._active(
                        client, recorded.position, self.calendar.trading_day(item.deal.time)
                    )

    def trader(self, server: str, item: Any) -> str | None:
        """The client behind a newly added trade deal of the feed (None: not a client's trade)."""
        deal = item.deal
        if item.change is not DealChange.ADDED or not deal.action.is_trade:
            return None
        return self.logins.get((server, deal.login))

    def _active(self, client_id: str, position: int, day: date) -> None:
        positions, days = self.activity.setdefault(client_id, ([], []))
        latest = max(day, days[-1]) if days else day
        if positions and positions[-1] == position:
            days[-1] = latest
        else:
            positions.append(position)
            days.append(latest)

    def last_active(self, before: int) -> dict[str, date]:
        """Each client's last day of activity recorded before the log position ``before``."""
        out = {}
        for client_id, (positions, days) in self.activity.items():
            i = bisect.bisect_left(positions, before)
            if i:
                out[client_id] = days[i - 1]
        return out

    def reset(self) -> None:
        self.deposit_clients.clear()
        self.logins.clear()
        self.groups.clear()
        self.accounts.clear()
        self.funded.clear()
        self.activity.clear()


class TradingLogins:
    """A memory read model of who holds which live trading login and in which group
    (``TradingAccountOpened``, ``AccountGroupChanged``; a demo account's login is no client's
    here: its play money earns no loyalty): small enough for a policy to keep one of its own
    caught up to the event it handles."""

    name = "trading-logins"
    event_types: frozenset[str] | None = frozenset({"TradingAccountOpened", "AccountGroupChanged"})

    def __init__(self) -> None:
        self.logins: dict[tuple[str, int], str] = {}
        self.groups: dict[tuple[str, int], str] = {}
        self._accounts: dict[str, tuple[str, int]] = {}  # account id -> (server, login)

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, TradingAccountOpened):
            key = (event.server, event.login)
            if event.live:  # a demo account's play money earns no loyalty
                self.logins[key] = event.client_id
            self.groups[key] = event.group
            self._accounts[event.account_id] = key
        elif isinstance(event, AccountGroupChanged):
            found = self._accounts.get(recorded.stream_id.removeprefix("tradingaccount-"))
            if found is not None:
                self.groups[found] = event.group

    def reset(self) -> None:
        self.logins.clear()
        self.groups.clear()
        self._accounts.clear()

    def client_of(self, server: str, login: int) -> str | None:
        """The client holding the live login (None: no client's, or a demo account)."""
        return self.logins.get((server, login))

    def group_of(self, server: str, login: int) -> str | None:
        """The login's trading group as last recorded (None: not a client's login)."""
        return self.groups.get((server, login))


class Lifecycle:
    """Moves clients along their lifecycle from what they do: a credited deposit makes a
    verified client FUNDED, a first trade makes a funded (or dormant) client ACTIVE, and no
    trade and no deposit for ``dormant_after`` makes a funded or active client DORMANT, judged
    when a trading day closes (the broker's clock, recorded as an event)."""

    def __init__(
        self,
        repository: Repository,
        projections: ProjectionRunner,
        calendar: TradingCalendar,
        *,
        dormant_after: timedelta = timedelta(days=90),
    ) -> None:
        if not isinstance(dormant_after, timedelta) or dormant_after <= timedelta(0):
            raise ValidationError("dormant_after must be a positive timedelta")
        self.repository = repository
        self.projections = projections
        self.calendar = calendar
        self.dormant_after = dormant_after
        self.activity = LoginActivity(calendar)
        self._lock = threading.Lock()

    def _activity(self) -> LoginActivity:
        self.projections.catch_up(self.activity)
        return self.activity

    def client_of(self, server: str, login: int) -> str | None:
        """The client holding a trading login (None: no client's), from every process's
        events."""
        return self._activity().logins.get((server, login))

    def accounts_of(self, client_id: str) -> list[str]:
        """The client's trading account ids, in opening order (from every process's events)."""
        return list(self._activity().accounts.get(client_id, ()))

    @staticmethod
    def _move(uow: UnitOfWork, client_id: str, stage: Stage, *, allowed: set[Stage]) -> None:
        client = uow.load(Client, client_id)
        if client is not None and client.stage in allowed:
            uow.record(client, *client.move_to(stage))

    # -- handlers -------------------------------------------------------------------------------
    def funded(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """A verified client with a credited deposit is FUNDED, whichever came first: on
        DepositCredited (the client is verified) and on StageChanged to VERIFIED (the client
        has a credited deposit), so the outcome never depends on when the policy runs."""
        event = recorded.event
        if isinstance(event, DepositCredited):
            deposit = uow.get(Deposit, recorded.stream_id.removeprefix("deposit-"))
            self._move(uow, deposit.client_id, Stage.FUNDED, allowed={Stage.VERIFIED})
        elif isinstance(event, StageChanged) and event.stage is Stage.VERIFIED:
            client_id = recorded.stream_id.removeprefix("client-")
            if client_id in self._activity().funded:
                self._move(uow, client_id, Stage.FUNDED, allowed={Stage.VERIFIED})

    def active(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """DealsReceived -> ACTIVE for each client with a new trade (from FUNDED or DORMANT)."""
        event = recorded.event
        assert isinstance(event, DealsReceived)
        activity = self._activity()
        traders = {activity.trader(event.server, item) for item in event.items}
        for client_id in sorted(c for c in traders if c is not None):
            self._move(uow, client_id, Stage.ACTIVE, allowed={Stage.FUNDED, Stage.DORMANT})

    def dormant(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """TradingDayClosed -> DORMANT for each client whose last activity fell out of the
        window on that day (from FUNDED or ACTIVE)."""
        event = recorded.event
        assert isinstance(event, TradingDayClosed)
        until = event.trading_day - self.dormant_after
        since = event.previous - self.dormant_after if event.previous else date.min
        # Activity recorded before this day closed: a late worker decides as an inline one.
        for client_id, last in sorted(self._activity().last_active(recorded.position).items()):
            if since < last <= until:
                self._move(uow, client_id, Stage.DORMANT, allowed={Stage.FUNDED, Stage.ACTIVE})

    def introduced(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """ClientAttributed -> the client's introducing IB, on its own record (a client id the
        CRM does not know is left alone: an IB's own client may be registered later)."""
        event = recorded.event
        assert isinstance(event, ClientAttributed)
        client = uow.load(Client, event.client_id)
        if client is not None and client.stage is not None:
            events = client.assign_introducer(event.ib_id, event.effective_at)
            if events:
                uow.record(client, *events)

    # -- the clock's ticks ----------------------------------------------------------------------
    def close_trading_days(self, clock: Clock, *, actor: str = "system:calendar") -> list[date]:
        """Record every trading day that has ended by the clock's now; returns the days closed.
        Call it from the host's scheduler (any process; a concurrent call records nothing)."""
        current = self.calendar.trading_day(clock.now())
        with self._lock:
            days = self.repository.load(TradingDays, "main") or TradingDays.blank("main")
            events = days.close_until(current, self.calendar)
            if not events:
                return []
            with UnitOfWork(
                self.repository, EventMetadata(actor, reason="trading day closed")
            ) as u:
                u.record(days, *events)
                try:
                    u.commit()
                except ConcurrencyError:
                    return []  # another process closed them first: each day closes once
        return [e.trading_day for e in events if isinstance(e, TradingDayClosed)]
