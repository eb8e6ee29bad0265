"""Conversions at the broker's rates, booked in the ledger: every transfer single-currency, the
position kept at the market rate, the markup booked as the broker's FX revenue.

A client sells ``sold`` (currency A) and gets ``bought`` (currency B) at the client rate; at the
market rate ``sold`` is worth ``market_value`` of B. Both are rounded down (the house's
favour), and the client rate is never better than the market's, so ``revenue = market_value -
bought`` is never negative. Three linked transfers::

    source            -> fx_position:A   sold           (the position takes what was sold)
    fx_position:B     -> target          bought         (and pays what the client gets)
    fx_position:B     -> fx_revenue:B    revenue        (the markup, and rounding, earned)

So at the market rate of each conversion the position is worth ``sold`` less ``market_value``:
zero or more (rounding only), and revenue accounts only ever receive.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.fx.pricing import Direction
from fxcrm_core.fx.rates import Quote
from fxcrm_core.kernel.errors import (
    ArgumentTypeError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.kernel.rates import ConversionPolicy, ExchangeRate
from fxcrm_core.ledger import Ledger, Limit, TransferRequest

#: Quotients of an amount by a rate: floored (the house's side) at 60 digits, far below any
#: minor unit, so an exact quotient stays exact and an inexact one rounds down as it must.
_QUOTIENT = decimal.Context(prec=60, rounding=decimal.ROUND_FLOOR, Emax=999_999, Emin=-999_999)

__all__ = [
    "FX_BOOK_EVENTS",
    "FxBook",
    "FxBooking",
    "FxConversion",
    "FxConverted",
    "FxSettlement",
]


@attrs.frozen
class FxSettlement:
    """A conversion as the broker prices it (nothing booked yet)."""

    direction: Direction
    sold: Money
    bought: Money  # what the client gets, rounded down
    bought_exact: UnroundedMoney  # sold at the client rate, before rounding
    market_value: Money  # sold at the market rate, rounded down
    revenue: Money  # market_value - bought: the markup and the rounding, >= 0
    client_rate: ExchangeRate  # one unit sold buys this much (source: the rate id)
    market_rate: ExchangeRate
    rate_id: str


@attrs.frozen
class FxBooking:
    """What :meth:`FxBook.book` did: the conversion's record; ``replayed`` if it was booked
    before (by this call's id) and nothing was written now."""

    record: FxConverted
    replayed: bool = False


@attrs.frozen
class FxConverted(DomainEvent):
    """A conversion booked at the broker's rates: both amounts, the revenue and the rates."""

    conversion_id: str
    direction: Direction
    sold: Money
    bought: Money
    bought_exact: UnroundedMoney
    market_value: Money
    revenue: Money
    rate_id: str
    client_rate: Decimal
    market_rate: Decimal
    market_source: str
    market_as_of: datetime
    rounding: str


FX_BOOK_EVENTS = (FxConverted,)


@attrs.frozen(kw_only=True)
class FxConversion(Aggregate):
    category = "fxconv"
    recorded: FxConverted | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, FxConverted):
            return self.evolve(recorded=event)
        raise ValidationError(f"FxConversion cannot apply {type(event).__name__}")


class FxBook:
    """Prices conversions with a :class:`Quote` and books them (see the module's postings)."""

    def __init__(self, ledger: Ledger, *, policy: ConversionPolicy | None = None) -> None:
        self.ledger = ledger
        self.policy = policy or ledger.conversions

    def position(self, currency: Currency) -> str:
        """The broker's FX position in ``currency`` (long in one currency, short in another)."""
        account_id = f"fx_position:{currency.code}"
        self.ledger.open_account(
            account_id, owner="broker", currency=currency, purpose="fx_position"
        )
        return account_id

    def revenue(self, currency: Currency) -> str:
        """The broker's FX revenue in ``currency``: only ever credited, never below zero."""
        account_id = f"fx_revenue:{currency.code}"
        self.ledger.open_account(
            account_id, owner="broker", currency=currency, purpose="fx_revenue",
            limit=Limit.DEBITS_WITHIN_CREDITS,
        )  # fmt: skip
        return account_id

    def settle(self, sold: Money, buy: str | Currency, quote: Quote) -> FxSettlement:
        """Price selling ``sold`` for ``buy`` at ``quote``, rounded once, down, by the policy
        (too small an amount: :class:`~fxcrm_core.kernel.AmountBelowMinimumError`)."""
        if not isinstance(sold, Money):
            raise ArgumentTypeError("a conversion sells Money")
        if not isinstance(quote, Quote):
            raise ArgumentTypeError("a conversion needs a Quote")
        bought_currency = Currency.of(buy)
        client_rate, market_rate = quote.rates(sold.currency, bought_currency)
        if sold.currency == quote.quote:
            # Selling the quote currency divides by the rates: divided here, not multiplied by
            # a rounded inverse (108.20 USD at 1.0820 buys exactly 100.00 EUR, not 99.99).
            exact = UnroundedMoney(_QUOTIENT.divide(sold.amount, quote.ask), bought_currency)
            market = UnroundedMoney(
                _QUOTIENT.divide(sold.amount, quote.market.rate), bought_currency
            )
        else:
            exact, market = client_rate.convert(sold).result, market_rate.convert(sold).result
        settled = self.policy.settle_exact(sold, exact, client_rate)
        market_value = market.round(self.policy.rounding)
        revenue = market_value - settled.result
        if revenue.is_negative():
            # Only a policy rounding in the client's favour can do this: refuse, book nothing.
            raise ValidationError("the conversion policy must round in the house's favour")
        return FxSettlement(
            quote.direction, sold, settled.result, settled.exact, market_value, revenue,
            client_rate, market_rate, quote.rate_id,
        )  # fmt: skip

    def transfers(
        self, conversion_id: str, settlement: FxSettlement, *, source: str, target: str
    ) -> list[TransferRequest]:
        """The linked transfers that book ``settlement`` from ``source`` to ``target``."""
        sold, bought = settlement.sold, settlement.bought
        moves = [
            TransferRequest(f"{conversion_id}:sold", source, self.position(sold.currency), sold),
            TransferRequest(
                f"{conversion_id}:bought", self.position(bought.currency), target, bought
            ),
        ]
        if settlement.revenue.is_positive():
            moves.append(
                TransferRequest(
                    f"{conversion_id}:revenue",
                    self.position(bought.currency),
                    self.revenue(bought.currency),
                    settlement.revenue,
                )
            )
        return moves

    def record(
        self, conversion_id: str, settlement: FxSettlement
    ) -> tuple[FxConversion, FxConverted]:
        """The conversion's record, to append with its transfers."""
        market = settlement.market_rate
        event = FxConverted(
            conversion_id, settlement.direction, settlement.sold, settlement.bought,
            settlement.bought_exact, settlement.market_value, settlement.revenue,
            settlement.rate_id, settlement.client_rate.rate, market.rate, market.source,
            market.as_of, self.policy.rounding.name,
        )  # fmt: skip
        return FxConversion.blank(conversion_id), event

    def book(
        self,
        conversion_id: str,
        settlement: FxSettlement,
        *,
        source: str,
        target: str,
        actor: str = "system:fx",
        also: Sequence[tuple[Aggregate, DomainEvent]] = (),
    ) -> FxBooking:
        """Book ``settlement`` (transfers and record, with ``also``, in one append). Booked
        before under this id: the record again (``replayed``, nothing written), if it is the
        same conversion; else an IdempotencyConflictError."""
        found = self.find(conversion_id)
        _, event = self.record(conversion_id, settlement)
        if found is not None:
            if found != event:
                raise IdempotencyConflictError("conversion id already used differently")
            return FxBooking(found, replayed=True)
        results = self.ledger.transfer_linked(
            self.transfers(conversion_id, settlement, source=source, target=target),
            actor=actor,
            also=[self.record(conversion_id, settlement), *also],
        )
        return FxBooking(event, replayed=results[0].replayed)

    def find(self, conversion_id: str) -> FxConverted | None:
        """The record of a booked conversion (both amounts, the revenue, the rate id), if any."""
        found = self.ledger.repository.load(FxConversion, conversion_id)
        return None if found is None else found.recorded

    def conversion(self, conversion_id: str) -> FxConverted:
        """The record of a booked conversion, or NotFoundError."""
        found = self.find(conversion_id)
        if found is None:
            raise NotFoundError("no such conversion")
        return found
