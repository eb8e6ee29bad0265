"""The broker's rates: per pair and direction, a pricing over the market rate of a RateSource,
effective-dated, set with actor and reason, large changes through maker-checker; quotes as of
any time, each with the id of the rate it used."""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals
from fxcrm_core.events import EventMetadata, Repository, UnitOfWork
from fxcrm_core.fx.pricing import (
    Direction,
    Pricing,
    PricingVersion,
    RatePricing,
    RatePricingSet,
    pricing_id,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import (
    ArgumentTypeError,
    RateNotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency
from fxcrm_core.kernel.rates import ExchangeRate, RateSource
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "RATE_ACTION",
    "BrokerRates",
    "PricingChange",
    "PricingNotSetError",
    "Quote",
    "StaleRateError",
]

#: The maker-checker action of pricing changes above the threshold (rate.request / rate.approve).
RATE_ACTION = "rate"
_INVERSE = decimal.Context(prec=20, rounding=decimal.ROUND_FLOOR, Emax=999_999, Emin=-999_999)


class StaleRateError(RateNotFoundError):
    """The market rate is older than the broker accepts: no quote on a stale rate."""

    default_message = "the market rate is too old to quote"


class PricingNotSetError(RateNotFoundError):
    """The broker has set no pricing for this pair and direction (in force at that time)."""

    default_message = "the broker has no rate for this pair and direction"


@attrs.frozen
class Quote:
    """The broker's rates for ``base/quote`` and a direction at ``at``: ``bid`` when the client
    sells the base, ``ask`` when the client buys it, around the ``market`` rate. ``rate_id``
    names the pricing version and the market rate, and is recorded with every conversion."""

    rate_id: str
    base: Currency
    quote: Currency
    direction: Direction
    market: ExchangeRate
    bid: Decimal
    ask: Decimal
    pricing_version: int
    at: datetime

    @property
    def pair(self) -> str:
        return f"{self.base.code}/{self.quote.code}"

    def rates(self, sell: Currency, buy: Currency) -> tuple[ExchangeRate, ExchangeRate]:
        """``(client, market)`` rates for selling ``sell`` to buy ``buy`` (one unit of ``sell``
        buys ``rate`` units of ``buy``). Selling the quote currency divides by the ask; both
        inverses are rounded down alike, so the client's never passes the market's."""
        src = self.market.source
        if (sell, buy) == (self.base, self.quote):
            client, market = self.bid, self.market.rate
        elif (sell, buy) == (self.quote, self.base):
            client = _INVERSE.divide(Decimal(1), self.ask)
            market = _INVERSE.divide(Decimal(1), self.market.rate)
            src = f"inverse({src})"
        else:
            raise ValidationError(f"a {self.pair} quote does not convert {sell.code}/{buy.code}")
        return (
            ExchangeRate(sell, buy, client, self.rate_id, self.at),
            ExchangeRate(sell, buy, market, src, self.market.as_of),
        )


@attrs.frozen
class PricingChange:
    """What :meth:`BrokerRates.set_pricing` did: recorded (``version``), or waiting for a
    second person (``approval_id``). ``move`` is the largest relative change of a client rate."""

    version: int | None
    approval_id: str | None
    move: Decimal
    effective_at: datetime

    @property
    def pending(self) -> bool:
        return self.approval_id is not None and self.version is None


def _currency(value: str | Currency) -> Currency:
    return Currency.of(value)


def _direction(value: object) -> Direction:
    if not isinstance(value, Direction):
        raise ValidationError("a direction is Direction.DEPOSIT, WITHDRAWAL or CONVERSION")
    return value


def _reason(value: object) -> str:
    return checked_text(value, "reason of a pricing change", 500)


class BrokerRates:
    """The broker's rates over a market :class:`~fxcrm_core.kernel.RateSource`.

    ``max_age``: a market rate older than this at the quoted time is refused
    (:class:`StaleRateError`). ``approval_threshold``: a change that moves a client rate by more
    than this fraction of the market rate goes through maker-checker (action ``rate``).
    """

    def __init__(
        self,
        repository: Repository,
        market: RateSource,
        access: AccessControl,
        approvals: Approvals,
        *,
        clock: Clock | None = None,
        max_age: timedelta = timedelta(minutes=5),
        approval_threshold: Decimal = Decimal("0.005"),
    ) -> None:
        if not isinstance(market, RateSource):
            raise ArgumentTypeError("market is a RateSource")
        if not isinstance(max_age, timedelta) or max_age < timedelta(0):
            raise ValidationError("max_age is a timedelta of zero or more")
        if not isinstance(approval_threshold, Decimal) or approval_threshold < 0:
            raise ValidationError("approval_threshold is a Decimal fraction of zero or more")
        self.repository = repository
        self.market = market
        self.access = access
        self.approvals = approvals
        self.clock = clock or SystemClock()
        self.max_age = max_age
        self.approval_threshold = approval_threshold
        approvals.register(RATE_ACTION, ApprovalRule(execute=self._execute, check=self._check))

    # -- reading -------------------------------------------------------------------------------
    def versions(
        self, base: str | Currency, quote: str | Currency, direction: Direction
    ) -> tuple[PricingVersion, ...]:
        """Every pricing version of the pair and direction, in the order recorded."""
        return self._stream(_currency(base), _currency(quote), _direction(direction)).versions

    def pricing(
        self,
        base: str | Currency,
        quote: str | Currency,
        direction: Direction,
        at: datetime | None = None,
    ) -> PricingVersion:
        """The pricing in force at ``at`` (default: now), or :class:`PricingNotSetError`."""
        when = self.clock.now() if at is None else to_utc(at, "at")
        found = self._stream(_currency(base), _currency(quote), _direction(direction)).in_force(
            when
        )
        if found is None:
            raise PricingNotSetError()
        return found

    def quote(
        self,
        base: str | Currency,
        quote: str | Currency,
        direction: Direction,
        at: datetime | None = None,
    ) -> Quote:
        """The broker's rates for ``base/quote`` as of ``at`` (default: now): the pricing in
        force then over the market rate then. A missing, stale or unusable rate is a
        :class:`~fxcrm_core.kernel.RateNotFoundError`."""
        b, q, d = _currency(base), _currency(quote), _direction(direction)
        if b == q:
            raise ValidationError("a quote needs two different currencies")
        when = self.clock.now() if at is None else to_utc(at, "at")
        version = self.pricing(b, q, d, when)
        market = self.market.rate(b, q, when)
        if market.base != b or market.quote != q:
            raise RateNotFoundError(f"the rate source answered another pair than {b.code}/{q.code}")
        if when - market.as_of > self.max_age or market.as_of > when:
            raise StaleRateError(f"the {b.code}/{q.code} market rate is not current")
        bid, ask = version.pricing.prices(b, q, market.rate)
        rate_id = (
            f"{pricing_id(b, q, d)}@{version.version}/{market.source}@{market.as_of.isoformat()}"
        )
        return Quote(rate_id, b, q, d, market, bid, ask, version.version, when)

    def quote_between(
        self,
        sell: str | Currency,
        buy: str | Currency,
        direction: Direction,
        at: datetime | None = None,
    ) -> Quote:
        """The quote of whichever of ``sell/buy`` and ``buy/sell`` the broker prices for
        ``direction`` (``buy/sell`` first: a CNY deposit into USD reads USD/CNY)."""
        s, b, d = _currency(sell), _currency(buy), _direction(direction)
        if self._stream(b, s, d).versions:
            return self.quote(b, s, d, at)
        return self.quote(s, b, d, at)

    def _stream(self, base: Currency, quote: Currency, direction: Direction) -> RatePricing:
        key = pricing_id(base, quote, direction)
        return self.repository.load(RatePricing, key) or RatePricing.blank(key)

    # -- setting -------------------------------------------------------------------------------
    def set_pricing(
        self,
        actor: Actor,
        base: str | Currency,
        quote: str | Currency,
        direction: Direction,
        pricing: Pricing,
        *,
        reason: str,
        effective_at: datetime | None = None,
    ) -> PricingChange:
        """Set the pricing of ``base/quote`` for ``direction`` from ``effective_at`` (default:
        now; never in the past: a quote already given stays answerable as of its time).

        The change is measured against the pricing in force at ``effective_at``, at the current
        market rate (none: :class:`~fxcrm_core.kernel.RateNotFoundError`). Within the threshold
        it is recorded at once (permission ``rate.set``); above it, a maker-checker request is
        opened (``rate.request``; a second person approves with ``rate.approve``) and the
        change is recorded when approved, effective then at the earliest.
        """
        b, q, d = _currency(base), _currency(quote), _direction(direction)
        if b == q:
            raise ValidationError("a pricing needs two different currencies")
        if not isinstance(pricing, Pricing):
            raise ArgumentTypeError("pricing is a Pricing")
        why = _reason(reason)
        self.access.require(actor, "rate.set")
        now = self.clock.now()
        when = now if effective_at is None else to_utc(effective_at, "effective_at")
        if when < now:
            raise ValidationError("a pricing takes effect now or later, never in the past")
        move = self._move(b, q, d, pricing, when, now)
        if move <= self.approval_threshold:
            version = self._record(actor.id, b, q, d, pricing, when, why, None, None)
            return PricingChange(version, None, move, when)
        params = {
            **pricing.params(),
            "base": b.code,
            "quote": q.code,
            "direction": d.value,
            "effective_at": when.isoformat(),
            "reason": why,
            "set_by": actor.id,
        }
        approval_id = self.approvals.request(actor, RATE_ACTION, pricing_id(b, q, d), params)
        return PricingChange(None, approval_id, move, when)

    def _move(
        self,
        base: Currency,
        quote: Currency,
        direction: Direction,
        pricing: Pricing,
        when: datetime,
        now: datetime,
    ) -> Decimal:
        market = self.market.rate(base, quote, now).rate
        stream = self._stream(base, quote, direction)
        new = pricing.prices(base, quote, market)
        # Measured against the version in force and against the last one a second person
        # approved (the market itself before any): small steps that each pass alone cannot
        # walk a rate past the threshold.
        references = [stream.in_force(when), stream.last_approved()]
        moves = [Decimal(0)]
        for reference in references:
            if reference is None:
                old = (market, market)
            else:
                old = reference.pricing.prices(base, quote, market)
            moves.append(max(abs(new[0] - old[0]), abs(new[1] - old[1])) / market)
        return max(moves)

    def _record(
        self,
        actor: str,
        base: Currency,
        quote: Currency,
        direction: Direction,
        pricing: Pricing,
        when: datetime,
        reason: str,
        approval_id: str | None,
        key: str | None,
    ) -> int:
        stream = self._stream(base, quote, direction)
        event = RatePricingSet(base, quote, direction, pricing, when, actor, reason, approval_id)
        with UnitOfWork(self.repository, EventMetadata(actor, reason=reason)) as uow:
            stream = uow.record(stream, event)
            result = uow.commit(idempotency_key=key)
        if result.replayed:
            return self._stream(base, quote, direction).versions[-1].version
        return stream.versions[-1].version

    @staticmethod
    def _parsed(
        params: Mapping[str, str],
    ) -> tuple[Currency, Currency, Direction, Pricing, datetime, str, str]:
        try:
            direction = Direction(params["direction"])
            when = to_utc(datetime.fromisoformat(params["effective_at"]), "effective_at")
            base, quote = Currency.of(params["base"]), Currency.of(params["quote"])
            reason, set_by = params["reason"], params["set_by"]
        except (KeyError, ValueError):
            raise ValidationError("not a pricing change request") from None
        return base, quote, direction, Pricing.from_params(dict(params)), when, reason, set_by

    def _check(self, params: Mapping[str, str]) -> None:
        self._parsed(params)

    def _execute(self, params: Mapping[str, str], key: str) -> str:
        base, quote, direction, pricing, when, reason, set_by = self._parsed(params)
        when = max(when, self.clock.now())  # approved late: in force from the approval on
        approval_id = key.removeprefix("approval:")
        version = self._record(
            set_by, base, quote, direction, pricing, when, reason, approval_id, key
        )
        return f"pricing {pricing_id(base, quote, direction)} version {version}"
