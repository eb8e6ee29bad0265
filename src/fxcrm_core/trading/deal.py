"""Deals as MetaTrader 5 defines them: what happened on a trading account, priced and timed.

Volumes arrive in the server's integer units (MT5: 1/10,000 lot, or 1/100,000,000 lot for
extended volume) and become exact Decimal lots. Deal times arrive in server time; the server's
UTC offset turns them into UTC, and both are kept.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import attrs

from fxcrm_core.kernel._decimal import to_decimal
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.kernel.money import Currency, Money, Rounding
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "Deal",
    "DealAction",
    "DealEntry",
    "UnknownServerResponseError",
    "VolumeUnits",
    "mt5_double",
]


class UnknownServerResponseError(FxCrmError, ValueError):
    """The trading server sent a code or value this SDK does not know; nothing was recorded."""

    default_message = "unknown response from the trading server"


class DealAction(enum.IntEnum):
    """MT5 ``IMTDeal::EnDealAction``."""

    BUY = 0
    SELL = 1
    BALANCE = 2
    CREDIT = 3
    CHARGE = 4
    CORRECTION = 5
    BONUS = 6
    COMMISSION = 7
    COMMISSION_DAILY = 8
    COMMISSION_MONTHLY = 9
    AGENT_DAILY = 10
    AGENT_MONTHLY = 11
    INTEREST = 12
    BUY_CANCELED = 13
    SELL_CANCELED = 14
    DIVIDEND = 15
    DIVIDEND_FRANKED = 16
    TAX = 17
    AGENT = 18
    SO_COMPENSATION = 19  # newer server builds
    SO_COMPENSATION_CREDIT = 20

    @property
    def is_trade(self) -> bool:
        """A market deal that opens, closes or reverses a position."""
        return self in _TRADES

    @property
    def is_canceled_trade(self) -> bool:
        return self in (DealAction.BUY_CANCELED, DealAction.SELL_CANCELED)

    @property
    def is_agent_commission(self) -> bool:
        """Commission paid to an agent (IB) by the server itself."""
        return self in (DealAction.AGENT, DealAction.AGENT_DAILY, DealAction.AGENT_MONTHLY)

    @property
    def moves_balance(self) -> bool:
        """A non-trading operation on the balance (or credit) of the account."""
        return not (self.is_trade or self.is_canceled_trade)


class DealEntry(enum.IntEnum):
    """MT5 ``IMTDeal::EnEntryFlags``."""

    IN = 0
    OUT = 1
    INOUT = 2  # reversal: closes the position and opens the opposite one
    OUT_BY = 3  # closed by an opposite (hedged) position

    @property
    def closes(self) -> bool:
        return self is not _IN


# Members bound once: on Python 3.11 every ``DealEntry.IN`` goes through the enum metaclass's
# __getattr__ hook (about 200 ns), and these are read once per deal.
_IN = DealEntry.IN
_TRADES = frozenset((DealAction.BUY, DealAction.SELL))


class VolumeUnits(enum.IntEnum):
    """How many server units make one lot."""

    MT5 = 10_000
    MT5_EXTENDED = 100_000_000
    MT4 = 100


def _lots(units: int, scale: VolumeUnits) -> Decimal:
    if isinstance(units, bool) or not isinstance(units, int) or units < 0:
        raise UnknownServerResponseError("volume must be a non-negative integer of server units")
    return Decimal(units) / Decimal(int(scale))  # exact: the scale is a power of ten


def mt5_double(value: float, digits: int) -> Decimal:
    """The one sanctioned float conversion: an MT5 API double, rounded to ``digits`` decimals.

    The Manager API hands money as doubles already rounded to the currency's digits; this reads
    that intended value (``repr`` is the shortest decimal that round-trips) and rounds it.
    """
    if not isinstance(value, float):
        raise ValidationError("mt5_double converts floats only")
    return Decimal(repr(value)).quantize(
        Decimal(1).scaleb(-digits), rounding=Rounding.HALF_UP.value
    )


def _int(record: Mapping[str, object], name: str, default: int | None = None) -> int:
    """An integer field of a server record; missing or malformed is a typed error."""
    if name not in record:
        if default is None:
            raise UnknownServerResponseError(f"deal record lacks {name}")
        return default
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UnknownServerResponseError(f"deal record has a malformed {name}")
    try:
        return int(value)
    except ValueError:
        raise UnknownServerResponseError(f"deal record has a malformed {name}") from None


def _code(enum_type: type[DealAction] | type[DealEntry], value: object) -> int:
    try:
        return enum_type(int(value))  # type: ignore[call-overload]
    except (ValueError, TypeError):
        raise UnknownServerResponseError(f"unknown {enum_type.__name__} code") from None


@attrs.frozen(slots=True)
class Deal:
    """One deal on one server. ``(server, ticket)`` identifies it for ever."""

    server: str
    ticket: int
    login: int
    action: DealAction
    entry: DealEntry
    symbol: str
    volume: Decimal  # lots
    volume_closed: Decimal  # lots closed by this deal (partial closes)
    price: Decimal
    position_id: int
    order: int
    commission: Money
    fee: Money
    swap: Money
    profit: Money
    time: datetime  # UTC
    server_offset: timedelta  # the server's UTC offset when the deal was made
    comment: str = ""

    @property
    def server_time(self) -> datetime:
        """The deal time as the trading server shows it (its own zone)."""
        return self.time.astimezone(timezone(self.server_offset))

    @property
    def currency(self) -> Currency:
        return self.profit.currency

    @property
    def key(self) -> str:
        return f"{self.server}:{self.ticket}"

    @classmethod
    def from_mt5(
        cls,
        record: Mapping[str, object],
        *,
        server: str,
        currency: str | Currency,
        utc_offset: timedelta,
        volume_units: VolumeUnits = VolumeUnits.MT5,
    ) -> Deal:
        """Map a Manager-API-shaped record (field names as in ``IMTDeal``) to a Deal.

        Money fields are Decimals, ints or decimal strings (use :func:`mt5_double` for API
        doubles); ``Time`` is server time in seconds since 1970, ``TimeMsc`` in milliseconds.
        Unknown action or entry codes raise :class:`UnknownServerResponseError`.
        """
        cur = Currency.of(currency)
        if "VolumeExt" in record:
            volume = _lots(_int(record, "VolumeExt"), VolumeUnits.MT5_EXTENDED)
            closed = _lots(_int(record, "VolumeClosedExt", 0), VolumeUnits.MT5_EXTENDED)
        else:
            volume = _lots(_int(record, "Volume", 0), volume_units)
            closed = _lots(_int(record, "VolumeClosed", 0), volume_units)
        server_ms = _int(record, "TimeMsc") if "TimeMsc" in record else _int(record, "Time") * 1000

        def money(name: str) -> Money:
            # Strict: a value finer than the currency's digits is an error, not rounded away.
            return Money.of(to_decimal(record.get(name, 0), name), cur)

        # MT5 server time is the server's wall clock counted as if it were UTC.
        utc = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=server_ms) - utc_offset
        return cls(
            server=server,
            ticket=_int(record, "Deal"),
            login=_int(record, "Login"),
            action=DealAction(_code(DealAction, record.get("Action"))),
            entry=DealEntry(_code(DealEntry, record.get("Entry", 0))),
            symbol=str(record.get("Symbol", "")),
            volume=volume,
            volume_closed=closed,
            price=to_decimal(record.get("Price", 0), "Price"),
            position_id=_int(record, "PositionID", 0),
            order=_int(record, "Order", 0),
            commission=money("Commission"),
            fee=money("Fee"),
            swap=money("Storage"),
            profit=money("Profit"),
            time=to_utc(utc),
            server_offset=utc_offset,
            comment=str(record.get("Comment", "")),
        )
