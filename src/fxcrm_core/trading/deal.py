"""Deals as MetaTrader 5 defines them: what happened on a trading account, priced and timed.

Volumes arrive in the server's integer units (MT5: 1/10,000 lot, or 1/100,000,000 lot for
extended volume) and become exact Decimal lots. Deal times arrive in server time; the server's
UTC offset turns them into UTC, and both are kept.
"""

from __future__ import annotations

import enum
import math
import re
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
    if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= _MAX_DIGITS:
        raise ValidationError(f"digits must be an int from 0 to {_MAX_DIGITS}")
    if not math.isfinite(value) or abs(value) >= _MAX_MONEY_DOUBLE:
        raise ValidationError("an MT5 double must be finite and below 10^15")
    return Decimal(repr(value)).quantize(
        Decimal(1).scaleb(-digits), rounding=Rounding.HALF_UP.value
    )


_UINT64 = 2**64
_MAX_DIGITS = 12  # no MT5 symbol or currency shows more decimals
_MAX_MONEY_DOUBLE = 1e15  # beyond, a double no longer holds cents exactly
_MAX_PRICE = Decimal(10) ** 15
# MT5's datetime runs from 1970.01.01 to 3000.12.31 (server time).
_MAX_SERVER_MS = 32_535_216_000_000  # 3001-01-01 00:00, in ms since 1970
_ASCII_INT = re.compile(r"[0-9]{1,20}")


def _int(record: Mapping[str, object], name: str, default: int | None = None) -> int:
    """A field of a server record that MT5 keeps as a UINT64 (an int or ASCII digits).

    Missing or malformed is a typed error that names the field, never its value.
    """
    if name not in record:
        if default is None:
            raise UnknownServerResponseError(f"deal record lacks {name}")
        return default
    value = record[name]
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _ASCII_INT.fullmatch(value.strip()):
        number = int(value)
    else:
        raise UnknownServerResponseError(f"deal record has a malformed {name}")
    if not 0 <= number < _UINT64:
        raise UnknownServerResponseError(f"deal record has {name} out of range")
    return number


def _code(enum_type: type[DealAction] | type[DealEntry], value: object) -> int:
    if isinstance(value, str) and _ASCII_INT.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnknownServerResponseError(f"unknown {enum_type.__name__} code")
    try:
        return enum_type(value)
    except ValueError:
        raise UnknownServerResponseError(f"unknown {enum_type.__name__} code") from None


def _text(record: Mapping[str, object], name: str) -> str:
    value = record.get(name, "")
    if not isinstance(value, str) or "\x00" in value:
        raise UnknownServerResponseError(f"deal record has a malformed {name}")
    return value


def _price(record: Mapping[str, object]) -> Decimal:
    price = to_decimal(record.get("Price", 0), "Price")  # finite: the exponent is an int
    if abs(price) >= _MAX_PRICE or int(price.as_tuple().exponent) < -_MAX_DIGITS:
        raise UnknownServerResponseError(
            f"deal record has a Price beyond 10^15 or finer than {_MAX_DIGITS} decimals"
        )
    return price


def _spread(record: Mapping[str, object]) -> Decimal | None:
    if "MarketAsk" not in record or "MarketBid" not in record:
        return None
    ask = to_decimal(record["MarketAsk"], "MarketAsk")
    bid = to_decimal(record["MarketBid"], "MarketBid")
    if bid <= 0 or ask <= 0:  # not reported (balance deals, older servers)
        return None
    if not bid <= ask < _MAX_PRICE:
        raise UnknownServerResponseError("deal record has MarketBid and MarketAsk out of order")
    return ask - bid


def check_origin(server: object, currency: object, utc_offset: object) -> None:
    """The arguments every reader of deals takes, of the right kinds (ValidationError, echoing
    nothing): the server's name, the account currency (a code or a Currency; None where the
    file itself names it) and the server clock's offset from UTC."""
    if server is not None and (
        not isinstance(server, str) or not server or not server.isprintable()
    ):
        raise ValidationError("server must be a non-empty printable name")
    if currency is not None and not isinstance(currency, str | Currency):
        raise ValidationError("currency must be a currency code or a Currency")
    if not isinstance(utc_offset, timedelta) or abs(utc_offset) >= timedelta(hours=24):
        raise ValidationError("utc_offset must be a timedelta strictly within 24 hours")


def _check_arguments(
    record: object, server: object, currency: object, utc_offset: object, volume_units: object
) -> None:
    if not isinstance(record, Mapping):
        raise ValidationError("a deal record must be a mapping of MT5 field names")
    if server is None or currency is None:
        raise ValidationError("a deal needs its server and currency")
    check_origin(server, currency, utc_offset)
    if not isinstance(volume_units, VolumeUnits):
        raise ValidationError("volume_units must be a VolumeUnits")


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
    # The market spread when the deal was made (ask - bid, in price units), when known: MT5's
    # MarketAsk - MarketBid. A spread share may pay less when it was above the average.
    spread: Decimal | None = None
    # The broker's spread markup earned on the deal, when a bridge reports it (a revenue a
    # schedule's ceiling may count beside the commission).
    markup: Money | None = None

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
    def from_mt5_package(
        cls,
        record: object,
        *,
        login: int,
        server: str,
        currency: str | Currency,
        utc_offset: timedelta,
    ) -> Deal:
        """A deal from the ``MetaTrader5`` package's ``history_deals_get`` (a named tuple or a
        mapping of its lower-case fields): see :func:`.mt5_package.deal_from_mt5_package`."""
        from fxcrm_core.trading.mt5_package import deal_from_mt5_package  # it imports this module

        return deal_from_mt5_package(
            record, login=login, server=server, currency=currency, utc_offset=utc_offset
        )

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
        _check_arguments(record, server, currency, utc_offset, volume_units)
        cur = Currency.of(currency)
        if "VolumeExt" in record:
            volume = _lots(_int(record, "VolumeExt"), VolumeUnits.MT5_EXTENDED)
            closed = _lots(_int(record, "VolumeClosedExt", 0), VolumeUnits.MT5_EXTENDED)
        else:
            volume = _lots(_int(record, "Volume", 0), volume_units)
            closed = _lots(_int(record, "VolumeClosed", 0), volume_units)
        server_ms = _int(record, "TimeMsc") if "TimeMsc" in record else _int(record, "Time") * 1000
        if server_ms >= _MAX_SERVER_MS:
            raise UnknownServerResponseError("deal time is outside MT5's range (1970 to 3000)")

        def money(name: str) -> Money:
            # Strict: a value finer than the currency's digits is an error, not rounded away.
            return Money.of(to_decimal(record.get(name, 0), name), cur)

        # MT5 server time is the server's wall clock counted as if it were UTC; the bounds on
        # it keep this within datetime's range for any offset under a day.
        utc = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=server_ms) - utc_offset
        return cls(
            server=server,
            ticket=_int(record, "Deal"),
            login=_int(record, "Login"),
            action=DealAction(_code(DealAction, record.get("Action"))),
            entry=DealEntry(_code(DealEntry, record.get("Entry", 0))),
            symbol=_text(record, "Symbol"),
            volume=volume,
            volume_closed=closed,
            price=_price(record),
            position_id=_int(record, "PositionID", 0),
            order=_int(record, "Order", 0),
            commission=money("Commission"),
            fee=money("Fee"),
            swap=money("Storage"),
            profit=money("Profit"),
            time=to_utc(utc),
            server_offset=utc_offset,
            comment=_text(record, "Comment"),
            spread=_spread(record),
        )
