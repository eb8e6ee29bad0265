"""Each refusal of the withdrawal service carries the catalog msgid a client portal shows."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fxcrm_core.access import Actor
from fxcrm_core.i18n.catalog import Catalog
from fxcrm_core.kernel import AccessDeniedError, FxCrmError, IllegalTransitionError, Money
from fxcrm_core.payments import InstrumentKind, LimitExceededError, WithdrawalStatus
from tests.test_withdrawals import FINANCE, World, usd

CATALOG = Catalog()


def refused(action: Callable[[], object]) -> FxCrmError:
    with pytest.raises(FxCrmError) as caught:
        action()
    return caught.value


def assert_shown(error: FxCrmError, code: str, limit: Money | None = None) -> None:
    """The error carries ``code`` and the portal shows the catalog's text of it, in Chinese
    and in English (``limit``: the daily limit's placeholder)."""
    assert getattr(error, "code", None) == code
    shown = {}
    for locale in ("zh_CN", "en"):
        if limit is None:
            expected, got = CATALOG.text(code, locale), CATALOG.error_text(error, locale)
        else:
            expected = CATALOG.text(code, locale, limit=limit)
            got = CATALOG.error_text(error, locale, limit=limit)
        assert got == expected
        shown[locale] = got
    assert shown["zh_CN"] != shown["en"]


def test_not_the_clients_own_instrument() -> None:
    w = World()
    other = w.register("bo@example.com")
    theirs = w.broker.withdrawals.add_instrument(
        Actor.client(other), other, InstrumentKind.EWALLET, "bo@wallet.example"
    )
    w.broker.withdrawals.verify_instrument(FINANCE, theirs)
    error = refused(lambda: w.broker.withdrawals.request(w.me, w.cid, theirs, usd(10)))
    assert isinstance(error, AccessDeniedError)
    assert_shown(error, "refusal.withdrawal.own_instrument")


def test_an_unverified_instrument() -> None:
    w = World()
    card = w.broker.withdrawals.add_instrument(
        w.me, w.cid, InstrumentKind.CARD, "4111 1111 1111 1111"
    )
    error = refused(lambda: w.broker.withdrawals.request(w.me, w.cid, card, usd(10)))
    assert isinstance(error, IllegalTransitionError)
    assert_shown(error, "refusal.withdrawal.instrument_not_verified")


def test_a_removed_instrument_at_approval() -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100))
    w.broker.withdrawals.remove_instrument(w.me, w.iban)
    error = refused(lambda: w.approve(wd))
    assert isinstance(error, IllegalTransitionError)
    assert_shown(error, "refusal.withdrawal.instrument_not_verified")


def test_the_daily_limit() -> None:
    w = World()
    w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(300))
    error = refused(lambda: w.broker.withdrawals.request(w.me, w.cid, w.iban, usd("200.01")))
    assert isinstance(error, LimitExceededError)
    assert_shown(error, "refusal.withdrawal.daily_limit", limit=usd(500))
    assert "500" in CATALOG.error_text(error, "zh_CN", limit=usd(500))
    # The refusal carries its limit: a portal shows the text without knowing the cap.
    for locale in ("zh_CN", "en"):
        expected = CATALOG.text("refusal.withdrawal.daily_limit", locale, limit=usd(500))
        assert CATALOG.error_text(error, locale) == expected


def test_no_longer_pending() -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100))
    w.approve(wd)
    # A second approval request for the same withdrawal runs the service's check again.
    error = refused(
        lambda: w.broker.approvals.request(
            w.me, "withdrawal", wd, {"withdrawal_id": wd}, client_id=w.cid
        )
    )
    assert isinstance(error, IllegalTransitionError)
    assert_shown(error, "refusal.withdrawal.not_pending")


def test_the_instrument_changed_since_the_request() -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100))
    w.broker.withdrawals.verify_instrument(FINANCE, w.iban)  # a new version of the instrument
    error = refused(lambda: w.approve(wd))
    assert isinstance(error, IllegalTransitionError)
    assert_shown(error, "refusal.withdrawal.instrument_changed")
    assert w.broker.withdrawals.get(wd).status is WithdrawalStatus.REQUESTED


def test_a_paid_withdrawal_can_no_longer_change() -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100))
    w.approve(wd)
    w.broker.withdrawals.paid(wd, "payout-1")
    error = refused(lambda: w.broker.withdrawals.change_instrument(w.me, wd, w.iban))
    assert isinstance(error, IllegalTransitionError)
    assert_shown(error, "refusal.withdrawal.final")


def test_other_refusals_keep_their_class_text() -> None:
    w = World()
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100))
    error = refused(lambda: w.broker.withdrawals.paid(wd, "p"))  # not approved: no code
    assert getattr(error, "code", None) is None
    assert CATALOG.error_text(error, "en") == CATALOG.text("error.IllegalTransitionError", "en")
