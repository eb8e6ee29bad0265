"""Issue 20's back office attacked as a broker's engineer and as an attacker would: FX rates,
deposits in another currency, bank wires, client-to-client and account-to-account transfers,
trading-account services. Each test names what someone does and what goes wrong (and where);
the ones on holes found closed assert that they stay closed.

Several of these tests fail on purpose: each failure is a problem for the code's owner.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fxcrm_core.access import Actor, ApprovalStatus, Role
from fxcrm_core.accounts import TradingAccount
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration, Stage
from fxcrm_core.fx import Direction, Pricing
from fxcrm_core.kernel import (
    AccessDeniedError,
    Currency,
    ExchangeRate,
    FixedClock,
    IdempotencyConflictError,
    Money,
    RateTable,
    ValidationError,
)
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.ledger import TransferRequest
from fxcrm_core.payments import ClientTransferStatus, MoneyAccounts
from fxcrm_core.payments.wires import WireClaim, WireStatus
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.trading import AccountStatus, BalanceOperation, TradingServerError
from tests.fx_world import Desk
from tests.test_account_transfers import World as A2AWorld
from tests.test_client_transfers import World as C2CWorld

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)
MAKER = Actor.staff("fin-1", Role.FINANCE)
CHECKER = Actor.staff("fin-2", Role.FINANCE)
OFFICER = Actor.staff("dpo", Role.COMPLIANCE)
DESK = Actor.staff("desk-1", Role.SUPPORT)
PORTAL = Actor.system("portal", Role.PORTAL)
REFERENCE = "FX-ANA LIMA 0042"
USD = Currency.of("USD")
KEYRING = MasterKeyring({"m1": bytes(range(32))}, "m1")


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def new_events(broker: Broker, after: int) -> list[str]:
    return [r.event_type for r in broker.store.read_all(after_position=after)]


# -- money: insiders and idempotency --------------------------------------------------------


def test_one_finance_clerk_cannot_move_a_clients_money_to_another_client_alone() -> None:
    """A finance clerk (role FINANCE: ``transfer.*`` on every client's rows) calls
    ``client_transfers.request(FINANCE, id, ana, bo, 900)``: below the approval threshold (none is
    configured by default) the transfer completes at once. One insider empties any client's
    wallet into an accomplice's, with neither the sender's consent nor a second person.
    payments/client_transfers.py ``request`` (access on ``transfer.request`` only) and the
    default policy (access/control.py: FINANCE ``transfer.*``, scope ALL). A transfer the sender
    did not ask for should be refused, or at least wait for a second person."""
    w = C2CWorld(daily_client_transfer_limits={"USD": usd(5000)})
    try:
        done = w.b.client_transfers.request(MAKER, "insider-1", w.ana, w.bo, usd(900))
    except AccessDeniedError:
        done = None
    assert done is None or done.status is not ClientTransferStatus.COMPLETED
    assert w.wallet(w.bo) == usd(0)
    assert w.wallet(w.ana) == usd(1000)


def test_an_account_transfer_retried_with_another_amount_is_a_conflict() -> None:
    """A client's app sends ``transfers.between(me, "a-1", first, second, 120)``, then, by a bug
    or on purpose, ``"a-1"`` again for 50. The second call answers the first transfer's legs
    (120) as if it had done what was asked: the same key with other content is silently taken
    as a retry. payments/transfers.py ``between``: ``_legs(request_id)`` is answered before the
    request's content is compared (the rule: the same key with different content is an
    error)."""
    w = A2AWorld()
    w.send("a-1", 120)
    with pytest.raises(IdempotencyConflictError):
        w.send("a-1", 50)
    assert (w.on_server(w.first), w.on_server(w.second)) == (usd(180), usd(120))


def test_another_clients_request_id_does_not_answer_their_account_transfer() -> None:
    """Ana moves 120 between her accounts under request id ``a-1``. Bo (another client) calls
    ``between`` on his own two accounts under ``a-1``: he is answered Ana's legs (her account
    ids, logins and deal tickets) and his own transfer is never made, yet reported done.
    payments/transfers.py ``between`` / ``_legs``: request ids (``a2a:<id>``) are global, not
    per client, and the legs found are not checked against the caller's accounts."""
    w = A2AWorld()
    w.send("a-1", 120)
    bo_id = w.b.repository.get(TradingAccount, w.bos).client_id
    bo_second = w.b.accounts.open(Actor.client(bo_id), bo_id, "demo\\usd", 30)
    try:
        legs = w.b.transfers.between(Actor.client(bo_id), "a-1", w.bos, bo_second, usd(5))
    except FxCrmError:
        return  # refused (Bo has no money there, or the id is taken): nothing of Ana's shown
    assert {leg.account_id for leg in legs} <= {w.bos, bo_second}


def test_an_account_transfer_request_id_holds_no_control_characters() -> None:
    """A client names an account-to-account transfer ``"a\\x00-1\\n"``: the id is accepted and
    passed to the trading server inside the deal comment (``crm a\\x00-1\\n out``) and its
    idempotency key. payments/transfers.py ``_pair`` checks type and length only (wallet
    transfers and client transfers refuse control characters)."""
    w = A2AWorld()
    before = w.b.store.last_position()
    with pytest.raises(ValidationError):
        w.send("a\x00-1\n", 5)
    assert new_events(w.b, before) == []
    assert (w.on_server(w.first), w.on_server(w.second)) == (usd(300), usd(0))


# -- rates: maker-checker -------------------------------------------------------------------


def test_a_maker_cannot_walk_a_rate_past_the_threshold_in_small_steps() -> None:
    """A finance clerk widens the USD/CNY deposit markup from 0 to 3,000 pips (4.2% of a 7.1
    rate) in ten steps of 300 pips (0.42% each, under the 0.5% threshold): every step is
    recorded at once, no second person ever sees the rate. fx/rates.py ``set_pricing`` /
    ``_move`` measures a change only against the version in force, so maker-checker is bypassed
    by salami steps (measure against the last approved pricing, or the day's cumulative
    move)."""
    desk = Desk()
    desk.market_rate("USD/CNY", "7.1000")
    changes = [
        desk.rates.set_pricing(
            MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(300 * step), reason=f"step {step}"
        )
        for step in range(1, 11)
    ]
    quote = desk.rates.quote("USD", "CNY", Direction.DEPOSIT)
    moved = (Decimal("7.1000") - quote.bid) / Decimal("7.1000")
    assert moved < Decimal("0.005") or any(change.pending for change in changes)


def test_a_pricing_reason_holds_no_control_characters() -> None:
    """A clerk sets a rate with reason ``"launch\\x00\\x1b[2J"``: it is recorded in the event and
    the audit metadata as given (NUL and terminal escapes reach logs and back-office screens).
    fx/rates.py ``_reason`` checks type and length only (wires refuse control characters)."""
    desk = Desk()
    desk.market_rate("USD/CNY", "7.1000")
    with pytest.raises(ValidationError):
        desk.rates.set_pricing(
            MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(10), reason="launch\x00\x1b[2J"
        )
    assert desk.rates.versions("USD", "CNY", Direction.DEPOSIT) == ()


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.rates.set_pricing(
            MAKER, None, "CNY", Direction.DEPOSIT, Pricing.pips(1), reason="r"),
        lambda d: d.rates.set_pricing(
            MAKER, "USD", "CNY", "deposit", Pricing.pips(1), reason="r"),
        lambda d: d.rates.set_pricing(
            MAKER, "USD", "CNY", Direction.DEPOSIT, None, reason="r"),
        lambda d: d.rates.set_pricing(
            MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(1), reason="r",
            effective_at="tomorrow"),
        lambda d: d.rates.set_pricing(
            MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(1), reason="r",
            effective_at=datetime(2027, 1, 1)),  # noqa: DTZ001 - naive on purpose
        lambda d: d.rates.quote("USD", "CNY", Direction.DEPOSIT, at=datetime(2026, 3, 9, 12)),  # noqa: DTZ001
        lambda d: d.rates.quote("USD", "USD", Direction.DEPOSIT),
        lambda d: Pricing.pips(1.5),  # type: ignore[arg-type]
        lambda d: Pricing.percent("NaN"),
        lambda d: Pricing.percent("-1"),
        lambda d: Pricing.fixed("Infinity"),
        lambda d: Pricing.pips("1e999999"),
    ],
)  # fmt: skip
def test_hostile_rate_input_is_a_typed_error_and_writes_nothing(call: Any) -> None:
    """Closed: wrong types, naive times, NaN, infinity, floats and negative markups at the rate
    API are FxCrmErrors and nothing is recorded."""
    desk = Desk()
    desk.market_rate("USD/CNY", "7.1000")
    before = desk.store.last_position()
    with pytest.raises(FxCrmError):
        call(desk)
    assert list(desk.store.read_all(after_position=before)) == []


def test_a_client_cannot_set_or_approve_a_rate() -> None:
    """Closed: a client setting the broker's rate is refused; the maker cannot approve their own
    change above the threshold."""
    desk = Desk()
    desk.market_rate("USD/CNY", "7.1000")
    with pytest.raises(AccessDeniedError):
        desk.rates.set_pricing(
            Actor.client("c-1"), "USD", "CNY", Direction.DEPOSIT, Pricing.pips(0), reason="me"
        )
    change = desk.rates.set_pricing(
        MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(1000), reason="wide"
    )
    assert change.approval_id is not None
    with pytest.raises(FxCrmError):
        desk.approvals.approve(MAKER, change.approval_id)
    assert desk.rates.versions("USD", "CNY", Direction.DEPOSIT) == ()


# -- client transfers: hostile input ---------------------------------------------------------


@pytest.mark.parametrize("reason", ["changed\x00mind", "x\x1b[2J", "r" * 100_000])
def test_closing_a_client_transfer_refuses_control_characters_and_huge_reasons(
    reason: str,
) -> None:
    """The sender cancels a waiting transfer with a reason holding NUL, a terminal escape, or
    100,000 characters: it is stored as given in ``ClientTransferClosed`` and the metadata.
    payments/client_transfers.py ``_close`` checks only that the reason is non-blank text
    (wires refuse control characters and cap reasons at 500)."""
    w = C2CWorld(client_transfer_consent=True)
    w.send("t-1", 50)
    before = w.b.store.last_position()
    with pytest.raises(ValidationError):
        w.b.client_transfers.cancel(Actor.client(w.ana), "t-1", reason)
    assert new_events(w.b, before) == []
    assert w.available(w.ana) == usd(950)


@pytest.mark.parametrize("amount", [usd(0), usd(-5), Money.of("0.001", "BHD")])
def test_a_client_transfer_of_nothing_or_less_writes_nothing(amount: Money) -> None:
    """Closed: a zero, negative or other-currency amount is refused with a typed error and
    nothing written."""
    w = C2CWorld()
    before = w.b.store.last_position()
    with pytest.raises(FxCrmError):
        w.b.client_transfers.request(Actor.client(w.ana), "t-x", w.ana, w.bo, amount)
    assert new_events(w.b, before) == []
    assert w.wallet(w.ana) == usd(1000)


def test_a_client_cannot_approve_or_reject_a_transfer_and_a_stranger_cannot_read_it() -> None:
    """Closed: above the threshold, neither the sender nor the receiver approves or rejects the
    transfer; a third client cannot read it."""
    w = C2CWorld(client_transfer_approval_above={"USD": usd(100)})
    waiting = w.send("t-1", 300)
    assert waiting.approval_id is not None
    for client_id in (w.ana, w.bo):
        with pytest.raises(AccessDeniedError):
            w.b.approvals.approve(Actor.client(client_id), waiting.approval_id)
        with pytest.raises(AccessDeniedError):
            w.b.client_transfers.reject(Actor.client(client_id), "t-1", "no")
    carl = w.register("Carl Diaz", "carl@example.com")
    with pytest.raises(AccessDeniedError):
        w.b.client_transfers.get(Actor.client(carl), "t-1")
    assert w.b.approvals.get(waiting.approval_id).status is ApprovalStatus.PENDING


# -- deposits in another currency: hostile input ---------------------------------------------


@pytest.mark.parametrize("into", [5, b"USD", "US\x00", "XXXX", ""])
def test_a_deposit_into_a_nonsense_currency_is_a_typed_error(into: Any) -> None:
    """A host passes ``into=5`` (or bytes, a NUL, an unknown code): only an FxCrmError may reach
    it, and nothing is written. payments/deposits.py ``initiate`` (``Currency.of(into)``)."""
    w = C2CWorld()
    before = w.b.store.last_position()
    with pytest.raises(FxCrmError):
        w.b.deposits.initiate(
            Actor.client(w.ana), w.ana, usd(10), psp="acq", method="card", into=into
        )
    assert new_events(w.b, before) == []


# -- trading-account services ----------------------------------------------------------------


def test_account_services_refuse_a_nonsense_account_id_with_a_typed_error() -> None:
    """A host passes ``None`` or ``42`` as the account id of a password reset or status change:
    only an FxCrmError may reach it. accounts/changes.py loads the account before any check."""
    w = A2AWorld()
    for bad in (None, 42, "", "x\x00"):
        with pytest.raises(FxCrmError):
            w.b.account_changes.reset_password(w.me, bad, request_id="r-1")  # type: ignore[arg-type]
        with pytest.raises(FxCrmError):
            w.b.account_changes.set_status(
                MAKER,
                bad,  # type: ignore[arg-type]
                AccountStatus.DISABLED,
                request_id="r-1",
                reason="r",
            )


def test_a_client_cannot_reset_another_clients_password() -> None:
    """Closed: Ana resetting the password of Bo's account is refused, nothing is written and
    Bo's account is untouched."""
    w = A2AWorld()
    before = w.b.store.last_position()
    with pytest.raises(AccessDeniedError):
        w.b.account_changes.reset_password(w.me, w.bos, request_id="r-1", password="Aa1!aaaa")
    assert new_events(w.b, before) == []


def test_a_chosen_password_never_appears_in_errors_events_or_reprs() -> None:
    """Closed: a too-weak password is refused without echoing it; an accepted one is in no
    event nor the answer's repr."""
    w = A2AWorld()
    secret = "Zq9!kLmPw"
    with pytest.raises(FxCrmError) as weak:
        w.b.account_changes.reset_password(w.me, w.first, request_id="r-0", password="abc")
    assert "abc" not in str(weak.value)
    done = w.b.account_changes.reset_password(w.me, w.first, request_id="r-1", password=secret)
    assert secret not in repr(done)
    for recorded in w.b.store.read_all():
        assert secret.encode() not in bytes(recorded.data)


def test_a_support_agent_cannot_choose_a_clients_trading_password() -> None:
    """A support agent (SUPPORT: ``account.password`` on every client, no maker-checker: a
    password reset may not be put under it) resets Ana's trading password to one of their own
    choosing and logs in to her account: an account takeover by one insider.
    accounts/changes.py ``reset_password`` accepts ``password=`` from any actor with the
    permission; staff should only trigger a generated password delivered to the client."""
    w = A2AWorld()
    before = w.b.store.last_position()
    with pytest.raises(AccessDeniedError):
        w.b.account_changes.reset_password(DESK, w.first, request_id="r-1", password="Desk!2026x")
    assert new_events(w.b, before) == []


# -- bank wires and erasure ------------------------------------------------------------------


def wire_broker() -> tuple[Broker, FixedClock, str]:
    clock = FixedClock(T0)
    broker = Broker.in_memory(clock=clock, keyring=MasterKeyring.generate(), identity_key=b"w" * 32)
    cid = broker.clients.register(
        PORTAL,
        Registration(
            ClientKind.INDIVIDUAL, "SC", "Ana Lima", "ana@example.com", owner_id="staff:rep-1"
        ),
    )
    me = Actor.client(cid)
    for kind, kwargs in (("passport", {"expires_on": date(2045, 1, 1)}), ("proof_of_address", {})):
        doc = broker.kyc.submit(me, cid, kind, "f", **kwargs)  # type: ignore[arg-type]
        broker.kyc.approve(Actor.staff("kyc-1", Role.COMPLIANCE), doc)
    return broker, clock, cid


def erase(broker: Broker, clock: FixedClock, cid: str) -> None:
    broker.clients.move(Actor.staff("rep-1", Role.SALES), cid, Stage.CLOSED)
    clock.set(T0 + timedelta(days=5 * 366 + 1))
    broker.erasure.erase(OFFICER, cid, reason="GDPR art. 17 request")


def test_an_erased_clients_open_wire_cannot_be_credited() -> None:
    """Ana declares a wire, closes her account and asks to be erased while the wire is open.
    Were the erasure allowed, finance could later match and approve the wire and credit the
    wallet of a person who no longer exists. Closed: the open wire blocks the erasure
    (erasure_checks.py), or, if erased, the wire is not credited (payments/wires.py)."""
    broker, clock, cid = wire_broker()
    wire_id = broker.wires.declare(
        Actor.client(cid), cid, usd(500), bank_reference=REFERENCE, receipt_id="file-1"
    )
    erased = True
    try:
        erase(broker, clock, cid)
    except FxCrmError:
        erased = False  # an open wire blocking the erasure is also an answer
    if not erased:
        return
    try:
        wire = broker.wires.match(
            MAKER, wire_id, bank_transaction_id="FT1", received=usd(500), booked_on=date(2031, 3, 1)
        )
        if wire.approval_id is not None:
            broker.approvals.approve(CHECKER, wire.approval_id)
    except FxCrmError:
        pass
    wallet = MoneyAccounts(broker.ledger).wallet(cid, USD)
    assert broker.ledger.balance(wallet).net_credit == usd(0)
    assert broker.wires._wire(wire_id).status is not WireStatus.CREDITED


def test_an_erased_clients_bank_reference_links_to_nothing() -> None:
    """Ana's wire is credited, the money later paid out, she is closed and erased. Does her bank
    reference (which may name her: "FX-ANA LIMA 0042") still lead to her wire, through the keyed
    hash in ``Wire.reference_key`` or the ``WireClaim`` stream named by it? (payments/wires.py;
    the hash is sealed with the client's key and the claim reads as erased.)"""
    broker, clock, cid = wire_broker()
    wire_id = broker.wires.declare(
        Actor.client(cid), cid, usd(500), bank_reference=REFERENCE, receipt_id="file-1"
    )
    wire = broker.wires.match(
        MAKER, wire_id, bank_transaction_id="FT1", received=usd(500), booked_on=date(2026, 3, 9)
    )
    assert wire.approval_id is not None
    broker.approvals.approve(CHECKER, wire.approval_id)
    money = MoneyAccounts(broker.ledger)
    wallet = money.wallet(cid, USD)
    # Paid back out (a withdrawal's effect on the ledger), so nothing blocks the erasure.
    broker.ledger.transfer(
        TransferRequest("payout-1", wallet, money.broker("psp_clearing", USD), usd(500))
    )
    digest = broker.wires._wire(wire_id).reference_key
    erase(broker, clock, cid)
    found = broker.wires.find_by_reference(MAKER, "fx ana lima 0042")
    assert found is None or found.client_id != cid
    assert broker.wires._wire(wire_id).reference_key != digest
    claim = broker.repository.load(WireClaim, digest)
    assert claim is None or claim.wire_id != wire_id


def test_wires_of_one_client_are_not_readable_by_another() -> None:
    """Closed: Bo cannot read Ana's wire, nor declare one for her; a wire's reference with a NUL
    is refused with a message that does not echo it."""
    broker, _clock, cid = wire_broker()
    bo = broker.clients.register(
        PORTAL, Registration(ClientKind.INDIVIDUAL, "SC", "Bo Chen", "bo@example.com")
    )
    wire_id = broker.wires.declare(
        Actor.client(cid), cid, usd(500), bank_reference=REFERENCE, receipt_id="file-1"
    )
    with pytest.raises(AccessDeniedError):
        broker.wires.get(Actor.client(bo), wire_id)
    with pytest.raises(AccessDeniedError):
        broker.wires.declare(Actor.client(bo), cid, usd(5), bank_reference="BO-1", receipt_id="f")
    with pytest.raises(ValidationError) as bad:
        broker.wires.declare(
            Actor.client(cid), cid, usd(5), bank_reference="ANA LIMA\x00", receipt_id="f"
        )
    assert "ANA" not in str(bad.value).upper()


def test_the_audit_chain_verifies_and_names_who_after_a_back_office_day() -> None:
    """Closed: after a client transfer, a cancelled one and an account status change, the audit
    chain verifies and every new event names a person or system as its actor."""
    w = A2AWorld()
    before = w.b.store.last_position()
    w.send("a-1", 10)
    w.b.account_changes.set_status(
        OFFICER, w.second, AccountStatus.READ_ONLY, request_id="s-1", reason="margin review"
    )
    assert w.b.audit.verify(w.b.store) is None
    assert new_events(w.b, before)


def test_unwinding_a_transfer_whose_deposit_the_server_took_creates_no_money(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ana moves 100 between her accounts; the second server takes the deposit but the
    connection drops before it answers (the CRM sees a TradingServerError: in flight). Finance
    unwinds it: the first account gets its 100 back while the second keeps the 100 it took, so
    400 sits on the server against 300 in the ledger, and the request can never be finished.
    payments/transfers.py ``unwind`` trusts the operator to have checked reconciliation; it
    could make sure of the ``in`` leg itself (the same keyed call) before giving money back."""
    w = A2AWorld()
    real = w.server.balance_operation

    def answer_lost(login: int, op: BalanceOperation, amount: Money, **kw: Any) -> int:
        ticket = real(login, op, amount, **kw)
        key = str(kw.get("idempotency_key", ""))
        if op is BalanceOperation.DEPOSIT and key.endswith(":a-1:in"):
            raise TradingServerError("connection reset")
        return ticket

    monkeypatch.setattr(w.server, "balance_operation", answer_lost)
    with pytest.raises(TradingServerError):
        w.send("a-1", 100)
    monkeypatch.setattr(w.server, "balance_operation", real)
    with contextlib.suppress(FxCrmError):
        w.b.transfers.unwind(MAKER, "a-1", w.first, w.second, usd(100), reason="stuck")
    on_server = w.on_server(w.first) + w.on_server(w.second)
    assert on_server == usd(300)


def test_a_rate_set_in_one_process_quotes_the_same_in_another(tmp_path: Path) -> None:
    """Closed: a pricing set through one broker on a SQLite file, and a quote from a second
    broker opened on the same file (and after a restart), give the same rate id and rates."""
    market = RateTable()
    market.add(ExchangeRate.of("USD", "CNY", "7.1000", "lp", T0))

    def open_broker() -> Broker:
        return Broker.sqlite(
            tmp_path / "fx.db", clock=FixedClock(T0), keyring=KEYRING, rates=market,
            identity_key=b"i" * 32,
            synchronous="NORMAL",
        )  # fmt: skip

    first, second = open_broker(), open_broker()
    try:
        first.fx_rates.set_pricing(
            MAKER, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(20), reason="launch"
        )
        mine = first.fx_rates.quote("USD", "CNY", Direction.DEPOSIT)
        theirs = second.fx_rates.quote("USD", "CNY", Direction.DEPOSIT)
        assert (theirs.rate_id, theirs.bid, theirs.ask) == (mine.rate_id, mine.bid, mine.ask)
    finally:
        first.close()
        second.close()
    again = open_broker()
    try:
        assert again.fx_rates.quote("USD", "CNY", Direction.DEPOSIT).rate_id == mine.rate_id
    finally:
        again.close()


def test_a_client_transfer_retried_after_a_crash_before_posting_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ana sends Bo 250 (no approval, no consent); the process dies after the hold is appended
    and before it is posted. Her app retries the same request id: it is answered the transfer
    as it stands, WAITING, and nothing ever posts it (Bo never gets the money; Ana's 250 stays
    held). payments/client_transfers.py ``request``: a known request returns ``_same(known)``
    before ``_complete_if_ready`` (and before opening a missing approval request)."""
    w = C2CWorld()
    real = w.b.ledger.post_pending

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise OSError("process killed")

    monkeypatch.setattr(w.b.ledger, "post_pending", crash)
    with pytest.raises(OSError, match="process killed"):
        w.send("t-1", 250)
    monkeypatch.setattr(w.b.ledger, "post_pending", real)
    again = w.send("t-1", 250)
    assert again.status is ClientTransferStatus.COMPLETED
    assert (w.wallet(w.ana), w.wallet(w.bo)) == (usd(750), usd(250))


def test_a_client_transfer_retried_after_a_crash_before_its_approval_request_is_submitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above the approval threshold, the process dies after the hold and before the approval
    request is opened. The retry answers the transfer WAITING with no approval id: no checker
    can ever approve it, the 300 stay held. payments/client_transfers.py ``request`` (as
    above)."""
    w = C2CWorld(client_transfer_approval_above={"USD": usd(100)})
    real = w.b.approvals.request

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise OSError("process killed")

    monkeypatch.setattr(w.b.approvals, "request", crash)
    with pytest.raises(OSError, match="process killed"):
        w.send("t-1", 300)
    monkeypatch.setattr(w.b.approvals, "request", real)
    again = w.send("t-1", 300)
    assert again.approval_id is not None
    assert w.b.approvals.get(again.approval_id).status is ApprovalStatus.PENDING
