"""The broker's rates: pricing over the market per pair and direction, effective-dated, set with
actor and reason, large changes through a second person; quotes as of a time, with a rate id."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from fxcrm_core.access import Actor, ApprovalStatus, Role, SelfApprovalError
from fxcrm_core.events import EventMetadata
from fxcrm_core.fx import (
    Direction,
    Pricing,
    PricingNotSetError,
    RatePricingSet,
    StaleRateError,
    UnusableRateError,
)
from fxcrm_core.kernel import (
    AccessDeniedError,
    Currency,
    RateNotFoundError,
    ValidationError,
)
from fxcrm_core.stores import SqliteEventStore
from tests.fx_world import CHECKER, MAKER, T0, Desk

DEP = Direction.DEPOSIT


def desk_with_usdcny(pricing: Pricing | None = None) -> Desk:
    desk = Desk()
    desk.market_rate("USD/CNY", "7.1000")
    change = desk.rates.set_pricing(
        MAKER, "USD", "CNY", DEP, pricing or Pricing.pips(50), reason="launch"
    )
    assert not change.pending
    return desk


def test_a_markup_in_pips_widens_the_market_on_both_sides() -> None:
    desk = desk_with_usdcny()
    q = desk.rates.quote("USD", "CNY", DEP)
    assert (q.bid, q.market.rate, q.ask) == (
        Decimal("7.0950"),
        Decimal("7.1000"),
        Decimal("7.1050"),
    )
    assert q.rate_id == f"USD-CNY-deposit@1/lp@{T0.isoformat()}"
    client, market = q.rates(Currency.of("CNY"), Currency.of("USD"))
    assert client.rate < market.rate  # selling CNY: the client gets fewer dollars per yuan
    assert client.source == q.rate_id


def test_percent_and_fixed_pricings() -> None:
    desk = Desk()
    desk.market_rate("EUR/USD", "1.0850")
    desk.rates.set_pricing(
        MAKER, "EUR", "USD", Direction.CONVERSION, Pricing.percent("0.2"), reason="r"
    )
    q = desk.rates.quote("EUR", "USD", Direction.CONVERSION)
    assert (q.bid, q.ask) == (Decimal("1.082830"), Decimal("1.087170"))
    desk.rates.set_pricing(
        MAKER, "EUR", "USD", Direction.WITHDRAWAL, Pricing.fixed("1.08", "1.09"), reason="r"
    )
    q = desk.rates.quote("EUR", "USD", Direction.WITHDRAWAL)
    assert (q.bid, q.ask) == (Decimal("1.08"), Decimal("1.09"))
    desk.later(timedelta(seconds=1))
    desk.market_rate("EUR/USD", "1.1000")  # the market passed the fixed ask: never better
    q = desk.rates.quote("EUR", "USD", Direction.WITHDRAWAL)
    assert (q.bid, q.ask) == (Decimal("1.08"), Decimal("1.1000"))


def test_missing_stale_and_unpriced_rates_are_refused_with_typed_errors() -> None:
    desk = desk_with_usdcny()
    with pytest.raises(PricingNotSetError):
        desk.rates.quote("USD", "CNY", Direction.WITHDRAWAL)
    with pytest.raises(RateNotFoundError):
        desk.rates.quote("USD", "CNY", DEP, T0 - timedelta(seconds=1))  # no market rate then
    desk.later(timedelta(minutes=5, seconds=1))
    with pytest.raises(StaleRateError):
        desk.rates.quote("USD", "CNY", DEP)
    assert issubclass(StaleRateError, RateNotFoundError)


def test_a_markup_in_pips_larger_than_the_rate_gives_no_quote() -> None:
    desk = Desk()
    desk.market_rate("USD/JPY", "150")
    desk.rates.set_pricing(MAKER, "USD", "JPY", DEP, Pricing.pips(10), reason="r")  # 0.10 JPY
    assert desk.rates.quote("USD", "JPY", DEP).ask == Decimal("150.10")
    desk.later(timedelta(seconds=1))
    desk.market_rate("USD/JPY", "0.05")
    with pytest.raises(UnusableRateError):
        desk.rates.quote("USD", "JPY", DEP)


def test_pricing_is_recorded_with_actor_and_reason_and_survives_a_restart() -> None:
    desk = desk_with_usdcny()
    [stored] = desk.store.read_stream("fxpricing-USD-CNY-deposit")
    recorded = desk.repository.codec.decode(stored)
    assert isinstance(recorded.event, RatePricingSet)
    assert recorded.event.set_by == MAKER.id
    assert recorded.event.reason == "launch"
    assert recorded.event.approval_id is None
    assert recorded.metadata == EventMetadata(MAKER.id, reason="launch")
    again = Desk(desk.store, clock=desk.clock)  # another process on the same log
    again.rates.market = desk.market
    assert again.rates.quote("USD", "CNY", DEP) == desk.rates.quote("USD", "CNY", DEP)


def test_every_pricing_kind_reads_back_from_a_sqlite_log(tmp_path: Path) -> None:
    desk = Desk(SqliteEventStore(tmp_path / "fx.sqlite"))
    desk.market_rate("USD/CNY", "7.1000")
    for pricing in (Pricing.pips(10, pip_size="0.001"), Pricing.percent("0.1")):
        desk.rates.set_pricing(MAKER, "USD", "CNY", DEP, pricing, reason="r")
    change = desk.rates.set_pricing(MAKER, "USD", "CNY", DEP, Pricing.fixed("7", "7.2"), reason="r")
    assert change.approval_id is not None
    desk.approvals.approve(CHECKER, change.approval_id)
    again = Desk(SqliteEventStore(tmp_path / "fx.sqlite"), clock=desk.clock)
    again.rates.market = desk.market
    assert again.rates.versions("USD", "CNY", DEP) == desk.rates.versions("USD", "CNY", DEP)
    assert [v.pricing for v in again.rates.versions("USD", "CNY", DEP)] == [
        Pricing.pips(10, pip_size="0.001"), Pricing.percent("0.1"), Pricing.fixed("7", "7.2"),
    ]  # fmt: skip
    assert again.rates.quote("USD", "CNY", DEP) == desk.rates.quote("USD", "CNY", DEP)


def test_a_change_above_the_threshold_needs_a_second_person() -> None:
    desk = desk_with_usdcny()  # 50 pips on 7.10: 0.07%, within the 0.5% threshold
    change = desk.rates.set_pricing(MAKER, "USD", "CNY", DEP, Pricing.percent(1), reason="wider")
    assert change.pending
    assert change.move > desk.rates.approval_threshold
    assert desk.rates.quote("USD", "CNY", DEP).pricing_version == 1  # nothing changed yet
    assert change.approval_id is not None
    with pytest.raises(SelfApprovalError):
        desk.approvals.approve(MAKER, change.approval_id)
    decision = desk.approvals.approve(CHECKER, change.approval_id)
    assert decision.status is ApprovalStatus.EXECUTED
    q = desk.rates.quote("USD", "CNY", DEP)
    assert (q.pricing_version, q.ask) == (2, Decimal("7.1710"))
    latest = desk.rates.versions("USD", "CNY", DEP)[-1]
    assert (latest.set_by, latest.reason, latest.approval_id) == (
        MAKER.id, "wider", change.approval_id,
    )  # fmt: skip
    assert desk.approvals.retry(CHECKER, change.approval_id).changed is False


def test_a_change_within_the_threshold_is_set_at_once_and_a_rejected_one_never() -> None:
    desk = desk_with_usdcny()
    change = desk.rates.set_pricing(MAKER, "USD", "CNY", DEP, Pricing.pips(60), reason="r")
    assert change.version == 2
    assert not change.pending
    big = desk.rates.set_pricing(MAKER, "USD", "CNY", DEP, Pricing.fixed("6", "8"), reason="r")
    assert big.approval_id is not None
    desk.approvals.reject(CHECKER, big.approval_id, "too wide")
    assert len(desk.rates.versions("USD", "CNY", DEP)) == 2


def test_quotes_as_of_a_time_use_the_pricing_in_force_then() -> None:
    desk = desk_with_usdcny()
    change_at = T0 + timedelta(hours=1)
    desk.rates.set_pricing(
        MAKER, "USD", "CNY", DEP, Pricing.pips(80), reason="evening", effective_at=change_at
    )
    desk.market_rate("USD/CNY", "7.1000", change_at - timedelta(minutes=1))
    desk.market_rate("USD/CNY", "7.1000", change_at)
    before = desk.rates.quote("USD", "CNY", DEP, change_at - timedelta(seconds=1))
    after = desk.rates.quote("USD", "CNY", DEP, change_at)
    assert (before.pricing_version, before.ask) == (1, Decimal("7.1050"))
    assert (after.pricing_version, after.ask) == (2, Decimal("7.1080"))
    desk.clock.set(change_at + timedelta(minutes=1))
    assert desk.rates.quote("USD", "CNY", DEP).rate_id.startswith("USD-CNY-deposit@2/")


def test_bad_changes_are_refused() -> None:
    desk = desk_with_usdcny()
    with pytest.raises(ValidationError):
        desk.rates.set_pricing(
            MAKER, "USD", "CNY", DEP, Pricing.pips(1), reason="r",
            effective_at=T0 - timedelta(seconds=1),
        )  # fmt: skip
    with pytest.raises(ValidationError):
        Pricing.pips(-1)
    with pytest.raises(ValidationError):
        Pricing.fixed("7.2", "7.1")
    with pytest.raises(ValidationError):
        desk.rates.set_pricing(MAKER, "USD", "CNY", DEP, Pricing.pips(1), reason=" ")
    with pytest.raises(AccessDeniedError):
        desk.rates.set_pricing(
            Actor.staff("s", Role.SUPPORT), "USD", "CNY", DEP, Pricing.pips(1), reason="r"
        )
    with pytest.raises(RateNotFoundError):  # the move is measured at the market rate
        desk.rates.set_pricing(MAKER, "EUR", "CNY", DEP, Pricing.pips(1), reason="r")


def test_quote_between_reads_whichever_orientation_is_priced() -> None:
    desk = desk_with_usdcny()
    assert desk.rates.quote_between("CNY", "USD", DEP).pair == "USD/CNY"
    assert desk.rates.quote_between("USD", "CNY", DEP).pair == "USD/CNY"
