"""The demo scenario behind ``make demo``: a small broker day on the embedded SQLite store.

It grows with the SDK: each bounded context adds its part of the day here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Self

import attrs

from fxcrm_core.broker import Broker
from fxcrm_core.events import Aggregate, DomainEvent, RecordedEvent, iter_all
from fxcrm_core.kernel import (
    ConcurrencyError,
    Currency,
    ExchangeRate,
    FixedClock,
    Money,
    NegativeAmountError,
    RateTable,
    Rounding,
    ValidationError,
)

__all__ = ["run_demo"]


# A cash desk stands in for the ledger until the ledger context lands: an aggregate with a
# balance that commands change only by recording events.
@attrs.frozen
class DeskOpened(DomainEvent):
    currency: Currency


@attrs.frozen
class CashReceived(DomainEvent):
    amount: Money
    psp_reference: str


@attrs.frozen
class CashPaid(DomainEvent):
    amount: Money


@attrs.frozen(kw_only=True)
class CashDesk(Aggregate):
    category = "desk"
    balance: Money | None = None
    received: int = 0

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case DeskOpened(currency=currency):
                return self.evolve(balance=Money.zero(currency))
            case CashReceived(amount=amount):
                return self.evolve(balance=self.cash + amount, received=self.received + 1)
            case CashPaid(amount=amount):
                return self.evolve(balance=self.cash - amount)
        raise ValidationError(f"CashDesk cannot apply {type(event).__name__}")

    @property
    def cash(self) -> Money:
        if self.balance is None:
            raise ValidationError("desk is not open")
        return self.balance

    def receive(self, amount: Money, psp_reference: str) -> list[DomainEvent]:
        return [CashReceived(amount.require_positive(), psp_reference)]

    def pay(self, amount: Money) -> list[DomainEvent]:
        if amount.require_positive() > self.cash:
            raise NegativeAmountError("the desk does not hold that much")
        return [CashPaid(amount)]


DEMO_EVENTS = (DeskOpened, CashReceived, CashPaid)


class _Takings:
    """A read model: cash received per trading day."""

    name = "takings"
    event_types: frozenset[str] | None = frozenset({"CashReceived"})

    def __init__(self, day_of: Callable[[datetime], object]) -> None:
        self.day_of = day_of
        self.by_day: dict[object, Money] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        assert isinstance(event, CashReceived)
        day = self.day_of(recorded.recorded_at)
        self.by_day[day] = self.by_day.get(day, Money.zero(event.amount.currency)) + event.amount

    def reset(self) -> None:
        self.by_day.clear()


def run_demo(db_path: Path, out: Callable[[str], None] = print) -> dict[str, object]:
    """Run the scenario on a fresh SQLite file and print a report; returns the key figures."""
    if db_path.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # Friday 6 March 2026, 20:30 UTC: New York is still on winter time (rolls at 22:00 UTC);
    # daylight time starts on Sunday, so Monday's roll is at 21:00 UTC.
    clock = FixedClock(datetime(2026, 3, 6, 20, 30, tzinfo=UTC))
    broker = Broker.sqlite(db_path, clock=clock, events=DEMO_EVENTS)
    out(f"fxcrm_core demo: a broker day on {db_path}")

    out("\n== Money")
    fee = Money.of("100.00", "USD")
    shares = fee.allocate([Decimal(20), Decimal(5), Decimal(2)])
    total = sum(shares, Money.zero(fee.currency))
    out(f"  {fee} shared 20:5:2 -> {', '.join(map(str, shares))} (sum {total})")
    for locale in ("en_US", "zh_CN"):
        out(
            f"  {locale}: {Money.of('1234567.891', 'KWD').format(locale)}, "
            f"{Money.of('1234567', 'JPY').format(locale)}"
        )
    rates = RateTable([ExchangeRate.of("EUR", "USD", "1.0842", "lp-feed", clock.now())])
    conversion = rates.rate(Currency.of("EUR"), Currency.of("USD"), clock.now()).convert(
        Money.of("250.00", "EUR")
    )
    out(
        f"  250.00 EUR at {conversion.rate.rate} ({conversion.rate.source}, "
        f"{conversion.rate.as_of:%Y-%m-%d %H:%M}Z) = {conversion.result.amount} USD unrounded "
        f"-> {conversion.round(Rounding.HALF_EVEN)}"
    )

    out("\n== Trading days (roll at 17:00 New York)")
    for instant in (
        datetime(2026, 3, 6, 21, 59, tzinfo=UTC),
        datetime(2026, 3, 6, 22, 0, tzinfo=UTC),
        datetime(2026, 3, 8, 21, 0, tzinfo=UTC),
        datetime(2026, 3, 9, 21, 0, tzinfo=UTC),
    ):
        state = "open" if broker.calendar.is_open(instant) else "closed"
        out(
            f"  {instant:%a %Y-%m-%d %H:%M}Z -> trading day "
            f"{broker.calendar.trading_day(instant)} ({state})"
        )

    out("\n== Event log on SQLite")
    with broker.unit_of_work("staff:cashier-1", reason="open the desk") as uow:
        desk = CashDesk.blank("main")
        desk = uow.record(desk, DeskOpened(Currency.of("USD")))
        uow.commit()
    deposits = [("psp-1001", "500.00"), ("psp-1002", "1250.50"), ("psp-1001", "500.00")]
    replayed = 0
    for reference, amount in deposits:  # psp-1001 arrives twice: a PSP retry
        clock.advance(minutes=45)
        current = broker.repository.get(CashDesk, "main")
        with broker.unit_of_work("psp:callback", reason="deposit confirmed") as uow:
            uow.record(current, *current.receive(Money.of(amount, "USD"), reference))
            result = uow.commit(idempotency_key=reference)
        replayed += result.replayed
    out(f"  {len(deposits)} PSP callbacks, {replayed} recognised as a retry and not re-posted")
    stale = broker.repository.get(CashDesk, "main")
    with broker.unit_of_work("staff:cashier-2", reason="payout") as uow:
        uow.record(stale, *stale.pay(Money.of("300", "USD")))
        uow.commit()
    conflict = "none"
    try:
        with broker.unit_of_work("staff:cashier-3", reason="payout") as uow:
            uow.record(stale, *stale.pay(Money.of("1400", "USD")))
            uow.commit()
    except ConcurrencyError:
        conflict = "refused (stale version), nothing written"
    out(f"  a second payout from a stale read: {conflict}")
    clock.set(datetime(2026, 3, 9, 21, 30, tzinfo=UTC))  # Monday after the roll: Tuesday's day
    live = broker.repository.get(CashDesk, "main")
    with broker.unit_of_work("psp:callback", reason="deposit confirmed") as uow:
        live = uow.record(live, *live.receive(Money.of("75.25", "USD"), "psp-1003"))
        uow.commit(idempotency_key="psp-1003")
    broker.repository.snapshot(live)
    broker.close()

    out("\n== Replay from the file in a new process-like session")
    reopened = Broker.sqlite(db_path, clock=clock, events=DEMO_EVENTS)
    replayed_desk = reopened.repository.get(CashDesk, "main")
    out(
        f"  live balance {live.cash}, replayed {replayed_desk.cash}, equal: {replayed_desk == live}"
    )
    types: dict[str, int] = {}
    for stored in iter_all(reopened.store):
        types[stored.event_type] = types.get(stored.event_type, 0) + 1
    out(
        f"  {reopened.store.last_position()} events: "
        + ", ".join(f"{k} x{v}" for k, v in sorted(types.items()))
    )
    takings = _Takings(reopened.calendar.trading_day)
    reopened.projections.rebuild(takings)
    for day, total in sorted(takings.by_day.items(), key=lambda kv: str(kv[0])):
        out(f"  takings for trading day {day}: {total}")
    reopened.close()
    if replayed_desk != live:
        raise RuntimeError("replay disagrees with the live state")
    return {
        "balance": live.cash,
        "events": sum(types.values()),
        "retries_recognised": replayed,
        "takings": dict(takings.by_day),
    }


DEFAULT_DB = Path(".demo") / "broker.sqlite"
