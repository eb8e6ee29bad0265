"""The activity read model's compact rows: one bucket per client and trading day (the measures
sum these), and one mark per trade deal (what it added, taken back when it is updated or
deleted). Private: the public answers are :class:`~fxcrm_core.activity.Figure` values."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

__all__ = ["DEPOSIT", "REBATE", "REVENUE", "VOLUME", "WITHDRAWAL", "Day", "Flow", "Mark"]

_ZERO = Decimal(0)

# Money kinds of a day's flows (keys with the currency code).
DEPOSIT, WITHDRAWAL, REVENUE, REBATE, VOLUME = "dep", "wd", "rev", "reb", "vol"


class Flow:
    """Amounts of one kind and currency on one day: all of it, the part priced in USD (and its
    USD value), and the part that had no USD rate."""

    __slots__ = ("amount", "unpriced", "usd")

    def __init__(self) -> None:
        self.amount = _ZERO
        self.usd = _ZERO
        self.unpriced = _ZERO

    def add(self, amount: Decimal, usd: Decimal | None) -> None:
        self.amount += amount
        if usd is None:
            self.unpriced += amount
        else:
            self.usd += usd


class Day:
    """One client's trading day."""

    __slots__ = ("flows", "last", "lots", "trades")

    def __init__(self) -> None:
        self.trades = 0
        self.lots = _ZERO
        self.last: datetime | None = None  # the latest trade deal's time counted on the day
        self.flows: dict[tuple[str, str], Flow] = {}

    def flow(self, kind: str, code: str, amount: Decimal, usd: Decimal | None) -> None:
        key = (kind, code)
        found = self.flows.get(key)
        if found is None:
            found = self.flows[key] = Flow()
        found.add(amount, usd)


class Mark:
    """What one trade deal added to its client's day (signs flip to take it back)."""

    __slots__ = ("client", "day", "lots", "notional", "quote", "revenue", "time", "usd")

    def __init__(
        self,
        client: str,
        day: date,
        time: datetime,
        lots: Decimal,
        quote: str | None,
        notional: Decimal,
        usd: Decimal | None,
        revenue: tuple[tuple[str, Decimal, Decimal | None], ...],  # (currency, amount, USD)
    ) -> None:
        self.client, self.day, self.time, self.lots = client, day, time, lots
        self.quote, self.notional, self.usd = quote, notional, usd
        self.revenue = revenue

    def apply(self, day: Day, sign: int) -> None:
        day.trades += sign
        day.lots += sign * self.lots
        if sign > 0:
            day.last = self.time if day.last is None else max(day.last, self.time)
        elif day.trades == 0:
            day.last = None
        if self.quote is not None:
            day.flow(VOLUME, self.quote, sign * self.notional, _signed(self.usd, sign))
        for code, amount, usd in self.revenue:
            day.flow(REVENUE, code, sign * amount, _signed(usd, sign))


def _signed(value: Decimal | None, sign: int) -> Decimal | None:
    return None if value is None else sign * value
