"""The contract suite of the RateSource port: a market-rate adapter is done when it passes it.

Subclass :class:`RateSourceContract` and implement :meth:`~RateSourceContract.make_source`
(build your adapter holding exactly the given rates); every ``test_*`` then runs on it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.kernel.errors import FxCrmError, RateNotFoundError
from fxcrm_core.kernel.money import Currency
from fxcrm_core.kernel.rates import ExchangeRate, RateSource

__all__ = ["RateSourceContract"]

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
USD, EUR, CNY, JPY = (Currency.of(c) for c in ("USD", "EUR", "CNY", "JPY"))


def _rate(base: Currency, quote: Currency, rate: str, minutes: int) -> ExchangeRate:
    return ExchangeRate(base, quote, Decimal(rate), "feed", T0 + timedelta(minutes=minutes))


class RateSourceContract:
    """What every RateSource adapter must do (ours, :class:`~fxcrm_core.kernel.RateTable`,
    and a host's): answer the latest rate of the direct pair at or before the asked time, never
    a later one, never an inverted or crossed one, and refuse with a typed
    :class:`~fxcrm_core.kernel.RateNotFoundError` when it has none."""

    def make_source(self, rates: list[ExchangeRate]) -> RateSource:
        """An adapter holding exactly ``rates`` (in any order)."""
        raise NotImplementedError

    def test_it_is_a_rate_source(self) -> None:
        assert isinstance(self.make_source([]), RateSource)

    def test_the_latest_rate_at_or_before_the_time_is_answered(self) -> None:
        rates = [_rate(USD, CNY, "7.10", 0), _rate(USD, CNY, "7.12", 10)]
        source = self.make_source(list(reversed(rates)))
        assert source.rate(USD, CNY, T0) == rates[0]
        assert source.rate(USD, CNY, T0 + timedelta(minutes=9, seconds=59)) == rates[0]
        assert source.rate(USD, CNY, T0 + timedelta(minutes=10)) == rates[1]
        assert source.rate(USD, CNY, T0 + timedelta(days=1)).rate == Decimal("7.12")

    def test_the_answer_is_exact_and_names_its_source_and_time(self) -> None:
        source = self.make_source([_rate(EUR, USD, "1.08501234567890123456789", 0)])
        found = source.rate(EUR, USD, T0 + timedelta(seconds=1))
        assert (found.base, found.quote) == (EUR, USD)
        assert found.rate == Decimal("1.08501234567890123456789")
        assert found.source
        assert found.as_of <= T0 + timedelta(seconds=1)
        assert found.as_of.utcoffset() == timedelta(0)

    def test_no_rate_before_the_first_one(self) -> None:
        source = self.make_source([_rate(USD, CNY, "7.10", 0)])
        with pytest.raises(RateNotFoundError):
            source.rate(USD, CNY, T0 - timedelta(microseconds=1))

    def test_an_unknown_pair_is_a_rate_not_found(self) -> None:
        source = self.make_source([_rate(USD, CNY, "7.10", 0)])
        with pytest.raises(RateNotFoundError):
            source.rate(USD, JPY, T0)

    def test_no_silent_inverse_or_cross(self) -> None:
        source = self.make_source([_rate(USD, CNY, "7.10", 0), _rate(EUR, USD, "1.08", 0)])
        with pytest.raises(RateNotFoundError):
            source.rate(CNY, USD, T0)
        with pytest.raises(RateNotFoundError):
            source.rate(EUR, CNY, T0)

    def test_a_naive_time_is_a_typed_error(self) -> None:
        source = self.make_source([_rate(USD, CNY, "7.10", 0)])
        with pytest.raises(FxCrmError):
            source.rate(USD, CNY, datetime(2026, 3, 9, 13))  # noqa: DTZ001 - naive on purpose

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 600), st.integers(1, 10**6)), min_size=1, max_size=20,
            unique_by=lambda t: t[0],
        ),
        st.integers(-10, 700),
    )  # fmt: skip
    def test_it_agrees_with_a_trivial_model(
        self, series: list[tuple[int, int]], asked: int
    ) -> None:
        rates = [_rate(USD, EUR, str(Decimal(n).scaleb(-4)), m) for m, n in series]
        source = self.make_source(rates)
        when = T0 + timedelta(minutes=asked)
        expected = max((r for r in rates if r.as_of <= when), key=lambda r: r.as_of, default=None)
        if expected is None:
            with pytest.raises(RateNotFoundError):
                source.rate(USD, EUR, when)
        else:
            assert source.rate(USD, EUR, when) == expected
