"""Our RateSource adapter runs the contract suite a host's market-rate adapter would."""

from __future__ import annotations

from fxcrm_core.kernel import ExchangeRate, RateSource, RateTable
from fxcrm_core.testing.rates_contract import RateSourceContract


class TestRateTable(RateSourceContract):
    def make_source(self, rates: list[ExchangeRate]) -> RateSource:
        return RateTable(rates)
