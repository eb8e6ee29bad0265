"""A client converts money between its own wallets (USD to EUR, say) at the broker's internal
conversion rate: the market rate plus the broker's markup (:mod:`fxcrm_core.fx`), rounded once
in the house's favour, the markup booked as FX revenue, both amounts and the rate id recorded.
The caller names each conversion: a retry answers the conversion booked, whatever the rate
has done since."""

from __future__ import annotations

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.fx import BrokerRates, Direction, FxBook, FxConverted
from fxcrm_core.kernel.errors import IdempotencyConflictError, ValidationError
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kyc import KycService, Right
from fxcrm_core.ledger import Ledger
from fxcrm_core.payments.deposits import PaymentLimits
from fxcrm_core.payments.transfers import MoneyAccounts

__all__ = ["WalletConversions"]


class WalletConversions:
    def __init__(
        self,
        ledger: Ledger,
        access: AccessControl,
        kyc: KycService,
        rates: BrokerRates,
        fx: FxBook,
        limits: PaymentLimits,
    ) -> None:
        self.access = access
        self.kyc = kyc
        self.rates = rates
        self.fx = fx
        self.limits = limits
        self.money = MoneyAccounts(ledger)

    def convert(
        self, actor: Actor, request_id: str, client_id: str, amount: Money, into: str | Currency
    ) -> FxConverted:
        """Sell ``amount`` from the client's wallet in its currency for the wallet in ``into``
        (``transfer.request`` on the client's rows; a verified client). The record holds both
        amounts, the revenue and the rate id; a retry of the request answers it unchanged."""
        checked_text(request_id, "request id")
        checked_text(client_id, "client id")
        if not isinstance(amount, Money):
            raise ValidationError("a conversion sells Money")
        bought = Currency.of(into)
        if bought == amount.currency:
            raise ValidationError("a conversion needs two different currencies")
        self.access.require(actor, "transfer.request", client_id=client_id)
        conversion_id = f"conv:{client_id}:{request_id}"
        found = self.fx.find(conversion_id)
        if found is not None:
            if found.sold != amount or found.bought.currency != bought:
                raise IdempotencyConflictError("this request id names another conversion")
            return found
        self.limits.check(amount)
        self.kyc.require(client_id, Right.DEPOSIT)
        quote = self.rates.quote_between(amount.currency, bought, Direction.CONVERSION)
        settlement = self.fx.settle(amount, bought, quote)
        booked = self.fx.book(
            conversion_id,
            settlement,
            source=self.money.wallet(client_id, amount.currency),
            target=self.money.wallet(client_id, bought),
            actor=actor.id,
        )
        return booked.record
