"""The activity read model as the tier engine's activity source, and as it stood at a position
of the log.

* :class:`ClientActivitySource` answers ``measure(client_id, measure, start, end)`` (the
  loyalty ``ActivitySource`` port) from a :class:`~fxcrm_core.activity.ClientActivity`.
* :class:`PinnedActivity` is a :class:`~fxcrm_core.activity.ClientActivity` of its own whose
  reads never go past the log position it was last pinned to: a policy that reads activity pins
  it to the upstream event's position, so a broker running its policies inline and a worker
  catching up late read the same figures and record the same decisions.
"""

from __future__ import annotations

import enum
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import cast

from fxcrm_core.activity.measures import InstrumentSpec, Measure, fx_instrument
from fxcrm_core.activity.model import ClientActivity, _client
from fxcrm_core.events import EventCodec, EventStore, Projection, ProjectionRunner
from fxcrm_core.kernel import ArgumentTypeError, RateSource, TradingCalendar, ValidationError
from fxcrm_core.kernel.time import to_utc

__all__ = ["SOURCE_MEASURES", "ClientActivitySource", "PinnedActivity", "UnsupportedMeasureError"]

_TICK = timedelta(microseconds=1)
_MISS: object = object()
_LONGEST = timedelta(days=40 * 366)

#: The measures :class:`ClientActivitySource` answers, by their values (``"lots"``...): the
#: loyalty ``Measure`` shares them. ``"equity"`` is not among them (see the class).
SOURCE_MEASURES = frozenset(
    {"lots", "volume_usd", "net_deposits", "active_days", "trades"}
)  # fmt: skip


class UnsupportedMeasureError(ValidationError):
    """The activity read model cannot answer that measure from the log (equity)."""

    default_message = "the client activity cannot answer that measure"


class ClientActivitySource:
    """``measure(client_id, measure, start, end)`` over a :class:`ClientActivity`.

    ``measure`` is any enum whose value names one of :data:`SOURCE_MEASURES` (the loyalty
    ``Measure``: ``LOTS``, ``VOLUME_USD`` (USD, rounded to the cent), ``NET_DEPOSITS`` (USD),
    ``ACTIVE_DAYS``, ``TRADES``); the answer is the figure's ``value`` (what had no USD rate is
    left out, as in the read model).

    **Whole trading days.** The read model keeps one bucket per client and trading day (it
    rolls at 17:00 New York), so the span ``[start, end)`` is read as the trading days from the
    one ``start`` falls in to the one the instant just before ``end`` falls in, each whole. On
    rollovers (the tier engine's period starts and ends are) that is exactly ``[start, end)``.
    Off a rollover the span widens to the rollovers around it: a ``start`` at noon counts its
    whole trading day from the rollover before it, and an ``end`` at noon counts its whole day
    up to the rollover after it, so activity later that day counts too (a read model pinned to a
    position holds nothing recorded after it). ``end <= start`` answers 0.

    **EQUITY is refused** (:class:`UnsupportedMeasureError`): equity is the trading account's
    balance plus floating profit, a level the trading server holds; the log holds deposits and
    deals but no account balances or open-position prices, so no figure derived from the read
    model's public answers would be the client's equity. A programme that needs it takes an
    activity source of the host's (the broker refuses to record such a programme).
    """

    def __init__(self, activity: ClientActivity) -> None:
        if not isinstance(activity, ClientActivity):
            raise ArgumentTypeError("the activity source reads a ClientActivity")
        self.activity = activity
        self.calendar = activity.calendar
        self._measures: dict[tuple[type, str], Measure] = {}
        self._asked: dict[tuple[datetime, int, datetime, int], tuple[int, datetime] | None] = {}

    def measure(
        self, client_id: str, measure: enum.Enum, start: datetime, end: datetime
    ) -> Decimal:
        """``measure`` of the client over the whole trading days of ``[start, end)``."""
        known = None
        if isinstance(measure, enum.Enum):
            # Keyed by the member's class and name: members of two host enums may compare and
            # hash alike (str mixins), and a host enum may be unhashable.
            cache_key = (type(measure), measure.name)
            known = self._measures.get(cache_key)
        if known is None:
            known = self._measure(measure)
        # The span as asked, kept with each instant's fold (two instants of one wall time in a
        # DST fold are equal as zoned datetimes): a scan asks the same few spans per client.
        asked = None
        found: object = _MISS
        if isinstance(start, datetime) and isinstance(end, datetime):
            asked = (start, start.fold, end, end.fold)
            found = self._asked.get(asked, _MISS)
        if found is _MISS:
            span = self._span(to_utc(start, "start"), to_utc(end, "end"))
            if asked is not None:
                if len(self._asked) >= 4096:
                    self._asked.clear()
                self._asked[asked] = span
        else:
            span = cast(tuple[int, datetime] | None, found)
        if span is None:
            return Decimal(0)
        days, anchor = span
        # The read model's fast path: window(...).value, the same sums.
        return self.activity._value(_client(client_id), known, days, anchor)

    def _measure(self, measure: object) -> Measure:
        """The read model's measure of the same name (kept per enum member)."""
        value = getattr(measure, "value", None)
        if not isinstance(measure, enum.Enum) or not isinstance(value, str):
            raise UnsupportedMeasureError()
        if value not in SOURCE_MEASURES:
            if value == "equity":
                raise UnsupportedMeasureError(
                    "the client activity holds no equity (a level the trading server holds)"
                )
            raise UnsupportedMeasureError()
        found = Measure(value)
        if len(self._measures) >= 256:  # a host building its enum per request: bounded
            self._measures.clear()
        self._measures[(type(measure), measure.name)] = found
        return found

    def batch(self) -> AbstractContextManager[None]:
        """Many questions from one catch-up of the read model (a period closed for every
        client): what the tier engine holds around a scan."""
        return self.activity._batch()

    def _span(self, first_at: datetime, end_at: datetime) -> tuple[int, datetime] | None:
        """The trading days of ``[start, end)`` and an instant inside the last of them
        (:meth:`measure` keeps the answer per span asked)."""
        if end_at - first_at > _LONGEST:
            raise ValidationError("an activity span is at most forty years")
        found: tuple[int, datetime] | None = None
        if end_at > first_at:
            cal = self.calendar
            first, last = cal.trading_day(first_at), cal.trading_day(end_at - _TICK)
            days = _count(cal, first, last)
            if days >= 1:
                found = (days, cal.session(last)[1] - _TICK)  # inside the last trading day
        return found


def _count(cal: TradingCalendar, first: date, last: date) -> int:
    """Trading days from ``first`` to ``last``, both included."""
    count, day = 0, first
    while day <= last:
        count += cal.is_trading_day(day)
        day += timedelta(days=1)
    return count


class _PinnedRunner(ProjectionRunner):
    """A projection runner whose catch-up stops at a position the owner sets."""

    pin: int | None = None

    def catch_up(self, projection: Projection, *, upto: int | None = None) -> int:
        bound = self.pin if upto is None else upto if self.pin is None else min(upto, self.pin)
        return super().catch_up(projection, upto=bound)


class PinnedActivity:
    """A :class:`ClientActivity` of its own that reads the log only up to the position last
    given to :meth:`at`: ``at(position)`` returns the read model as the log stood just after
    that position (every event at or before it, none after). Asked for an earlier position
    than it holds, it is rebuilt from the start up to it (correct, and slow: a policy asks in
    log order, so it never needs to)."""

    def __init__(
        self,
        store: EventStore,
        codec: EventCodec,
        calendar: TradingCalendar,
        *,
        rates: RateSource | None = None,
        instruments: InstrumentSpec = fx_instrument,
        horizon: timedelta | None = None,
    ) -> None:
        self._runner = _PinnedRunner(store, codec)
        self._runner.pin = 0
        self.activity = ClientActivity(
            self._runner, calendar, rates=rates, instruments=instruments, horizon=horizon
        )
        self.source = ClientActivitySource(self.activity)

    @property
    def position(self) -> int:
        """The log position the read model has read up to."""
        return self._runner.position(self.activity)

    def at(self, position: int) -> ClientActivity:
        """The read model caught up exactly to ``position`` (and pinned there)."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValidationError("a log position is a whole number from 0")
        self._runner.pin = position
        if self._runner.position(self.activity) > position:
            self._runner.rebuild(self.activity)
        else:
            self._runner.catch_up(self.activity)
        return self.activity
