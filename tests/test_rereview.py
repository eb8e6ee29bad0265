"""A second, short attack on the fixes made after the two reviews of issues 19 and 20: identity
claims and deduplication, personal values, reveal reasons, transfers keyed per client, closed
clients. Each test names what someone does and what goes wrong (and where).

Several of these tests fail on purpose: each failure is a problem for the code's owner. The ones
that pass assert what must stay true (money already on its way to a client who then closed).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from fxcrm_core.access import Actor, ApprovalStatus, Role
from fxcrm_core.accounts import TradingAccount
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, DuplicateClientError, Registration, Stage
from fxcrm_core.kernel import FixedClock, Money, StoreError, ValidationError
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.privacy.pii import Address, PersonName, PiiValue, require_reason
from fxcrm_core.privacy.pii import Email as EmailValue
from tests.system_world import OFFICER, open_broker
from tests.test_account_transfers import World as A2AWorld
from tests.test_client_transfers import World as C2CWorld

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
PORTAL = Actor.system("portal", Role.PORTAL)
REP = Actor.staff("rep-1", Role.SALES)
MAKER = Actor.staff("fin-1", Role.FINANCE)
CHECKER = Actor.staff("fin-2", Role.FINANCE)
EMAIL = "ana.lima@example.com"
LATER = datetime(2032, 1, 1, tzinfo=UTC)  # past the AML retention of a client closed at T0


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def memory_broker() -> Broker:
    return Broker.in_memory(
        clock=FixedClock(T0), keyring=MasterKeyring.generate(), identity_key=b"i" * 32
    )


def sign_up(b: Broker, email: str, name: str = "Ana Lima") -> str:
    return b.clients.register(PORTAL, Registration(ClientKind.INDIVIDUAL, "GB", name, email))


def wallet(b: Broker, cid: str) -> Money:
    return b.ledger.balance(f"wallet:{cid}:USD").net_credit


# -- deduplication ----------------------------------------------------------------------------


def test_a_zero_width_joiner_in_an_email_registers_a_second_client() -> None:
    """Ana is registered as ``ana.lima@example.com``; someone registers
    ``ana.lima\\u200d@example.com`` (a zero-width joiner: it looks the same on every screen).
    A second live client is made with, to the eye, the same e-mail. privacy/pii.py
    ``_check_text`` lets the joiners U+200C/U+200D through for every kind (meant for names), so
    ``Email`` accepts them and clients/identity.py ``normalise_email`` keeps them in the hashed
    identity. An e-mail (and a phone, a document number) should refuse them, or the normaliser
    should drop them."""
    b = memory_broker()
    first = sign_up(b, EMAIL)
    with pytest.raises((DuplicateClientError, ValidationError)):
        sign_up(b, "ana.lima\u200d@example.com", "Ana Lima")
    assert b.clients.find_by_email(OFFICER, EMAIL) == first


@pytest.mark.parametrize(
    ("registered", "again"),
    [
        ("ana@example.com", "ana@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"),  # fullwidth
        ("ana@b\u00fccher.de", "ana@xn--bcher-kva.de"),  # the same domain as IDNA writes it
        ("ana@b\u00fccher.de", "ana@bu\u0308cher.de"),  # the same domain, decomposed (NFD)
    ],
)
def test_one_mailbox_written_another_way_registers_a_second_client(
    registered: str, again: str
) -> None:
    """One mailbox, written another way in its domain (fullwidth letters a CJK keyboard types,
    the IDNA ``xn--`` form of an internationalised domain, or the same accented letter
    decomposed): each is accepted and hashes differently, so the same person registers twice.
    clients/identity.py ``normalise_email`` only lower-cases the domain: no NFKC, no IDNA
    mapping, so deduplication misses what every mail server delivers to one mailbox."""
    b = memory_broker()
    first = sign_up(b, registered)
    with pytest.raises((DuplicateClientError, ValidationError)):
        sign_up(b, again, "Ana Lima")
    assert b.clients.find_by_email(OFFICER, registered) == first


# -- personal values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (PersonName, "\u200d"),
        (PersonName, "\u200c\u200d\u200c"),
        (PersonName, " \u200d "),
        (Address, "\u200d"),
        (EmailValue, "\u200d@\u200d.\u200d"),
    ],
)
def test_a_value_of_joiners_only_is_refused(kind: type[PiiValue], text: str) -> None:
    """A name, an address or an e-mail made only of zero-width joiners is accepted: an
    invisible, in effect empty value (the zero-width space ``\\u200b`` is refused; its
    neighbours are let through). privacy/pii.py ``_check_text`` skips the joiners for every
    kind and ``parse`` checks ``text.strip()``, which does not strip them. A joiner belongs
    between two letters of a name, never alone, and never in an e-mail."""
    with pytest.raises(ValidationError):
        kind.parse(text)


@pytest.mark.parametrize("text", ["ana@.example.com", "ana@example..com"])
def test_an_email_domain_with_an_empty_label_is_refused(text: str) -> None:
    """``ana@.example.com`` and ``ana@example..com`` are taken as e-mail addresses (no mail
    server delivers to them; a typo kept for ever in a sealed field). privacy/pii.py
    ``Email._normalise`` checks only that the domain has a dot with text either side of the
    last one. Low: every empty label could be refused in the same single pass."""
    with pytest.raises(ValidationError):
        EmailValue.parse(text)


@pytest.mark.parametrize(
    "name",
    [
        "O'Brien-Smith",
        "Jean-Luc D\u2019Amico",
        "\u0645\u06cc\u200c\u0631\u0648\u0645",  # Persian, with a ZWNJ inside
        "\u0915\u094d\u200d\u0937",  # Devanagari with a ZWJ
        "\u674e\u5c0f\u9f99",
        "\u0645\u062d\u0645\u062f \u0639\u0628\u062f \u0627\u0644\u0644\u0647",
    ],
)
def test_legitimate_names_are_taken_as_written(name: str) -> None:
    """Names with apostrophes and hyphens, Persian and Indic names with joiners inside, CJK
    and Arabic names: taken as written (passes: the joiners' exception works)."""
    assert PersonName.parse(name).reveal() == name


def test_a_legitimate_quoted_local_part_or_idn_domain_is_an_email() -> None:
    """IDN domains pass; the one quoted form RFC 5322 allows with a space in it does not.
    Kept as a record (passes): a quoted local part with a space is rare enough for a broker to
    refuse, but ``"ana smith"@example.com`` is refused as 'not a valid e-mail address'."""
    assert (
        EmailValue.parse("ana@\u4f8b\u3048.\u30c6\u30b9\u30c8")
        .reveal()
        .endswith("\u30c6\u30b9\u30c8")
    )
    with pytest.raises(ValidationError):
        EmailValue.parse('"ana smith"@example.com')


# -- reveal reasons ----------------------------------------------------------------------------


def test_a_reason_spelling_the_email_out_is_refused() -> None:
    """A support agent reveals Ana's e-mail with the reason "caller confirmed ana.lima at
    example dot com": accepted, and the address stays in clear in the reveal's metadata after
    her erasure. privacy/pii.py ``require_reason`` only looks for the squeezed value itself;
    the usual way to say an address aloud (" at ", " dot ") walks past it."""
    value = EmailValue.parse(EMAIL)
    with pytest.raises(ValidationError):
        require_reason("caller confirmed ana.lima at example dot com", (value,))


def test_a_normal_reason_is_not_refused_for_a_short_name_inside_a_word() -> None:
    """The name of a client called "Li An" is revealed for "compliance check": refused, since
    the squeezed name ``lian`` is inside ``compliancecheck``. privacy/pii.py ``require_reason``
    matches 4 characters anywhere, not on word boundaries: the most ordinary reason in a
    back office is refused for every client whose name squeezes into it."""
    assert require_reason("compliance check", (PersonName.parse("Li An"),)) == "compliance check"


# -- transfers keyed per client ---------------------------------------------------------------


def test_another_clients_wallet_transfer_id_does_not_answer_their_transfer() -> None:
    """Ana moves 300 from her wallet to her trading account under request id ``fund-1``. Bo
    moves 5 into his own account under ``fund-1``: he is answered Ana's record (her account
    id, login and deal ticket) and his own transfer is never made, yet reported done.
    payments/transfers.py ``move``: request ids are global (``InternalTransfer`` by the
    caller's id, hold ``internal:<id>``), the fix keyed ``between`` per client, not ``move``."""
    w = A2AWorld()
    bo = w.b.repository.get(TradingAccount, w.bos).client_id
    try:
        done = w.b.transfers.move(Actor.client(bo), "fund-1", w.bos, usd(5), to_trading=True)
    except FxCrmError:
        return  # refused (Bo has no money): nothing of Ana's shown
    assert done.account_id == w.bos


def test_a_wallet_transfer_retried_with_another_amount_is_a_conflict() -> None:
    """Ana's app sends ``move(me, "fund-1", first, 300)`` (done by the world), then ``fund-1``
    again for 50 to another account: answered the first record as if done. payments/
    transfers.py ``move`` returns ``done.completed`` before comparing the request's content
    (the same key with other content should be an IdempotencyConflictError)."""
    w = A2AWorld()
    try:
        done = w.b.transfers.move(w.me, "fund-1", w.second, usd(50), to_trading=True)
    except FxCrmError:
        return
    assert (done.account_id, done.amount) == (w.second, usd(50))


# -- closed clients ----------------------------------------------------------------------------


def test_a_deposit_on_its_way_when_the_client_closed_is_still_credited() -> None:
    """Bo starts a card deposit, then closes his relationship; the PSP confirms afterwards.
    The PSP holds his money: it must land in his wallet (to be withdrawn), not be refused and
    left unbooked (passes: payments/deposits.py checks the level at initiate only)."""
    w = C2CWorld()
    dep = w.b.deposits.initiate(Actor.client(w.bo), w.bo, usd(40), psp="acq", method="card")
    w.b.clients.move(Actor.client(w.bo), w.bo, Stage.CLOSED)
    w.b.deposits.psp_confirmed(dep, "ref-bo", usd(40))
    assert w.wallet(w.bo) == usd(40)


def test_a_wire_the_bank_received_before_the_client_closed_can_still_be_credited() -> None:
    """Bo declares a wire, the bank receives it and finance matches it; Bo closes; the checker
    approves. The approval fails (payments/wires.py ``_check``: ``kyc.require(DEPOSIT)``
    refuses a closed client) and the wire stays matched: money the broker's bank already holds
    for Bo is in no wallet, and the only way out is to reject it (a manual bank return) when
    crediting it and paying it out to Bo's own instrument is what a closed account is for.
    Money already received should be credited (a closed client may withdraw it)."""
    w = C2CWorld()
    me = Actor.client(w.bo)
    wire_id = w.b.wires.declare(me, w.bo, usd(70), bank_reference="BO-0001", receipt_id="r-1")
    wire = w.b.wires.match(
        MAKER, wire_id, bank_transaction_id="FT1", received=usd(70), booked_on=date(2026, 3, 9)
    )
    assert wire.approval_id is not None
    w.b.clients.move(me, w.bo, Stage.CLOSED)
    why = ""
    try:
        decision = w.b.approvals.approve(CHECKER, wire.approval_id)
    except FxCrmError as refused:
        decision, why = None, f"{type(refused).__name__}: {refused}"
    assert decision is not None, why
    assert decision.status is ApprovalStatus.EXECUTED
    assert w.wallet(w.bo) == usd(70)


def test_a_closed_client_moves_no_wallet_money_into_a_trading_account() -> None:
    """Ana closes her relationship with 700 left in her wallet, then moves it to her trading
    account and keeps trading: payments/transfers.py ``move`` asks no KYC question (closed or
    not), the one way money still goes *in* somewhere for a closed client (deposits, wires,
    transfers in and conversions are refused). A closed client should only take money out."""
    w = A2AWorld()
    w.b.clients.move(w.me, w.ana, Stage.CLOSED)
    with pytest.raises(FxCrmError):
        w.b.transfers.move(w.me, "late-1", w.first, usd(100), to_trading=True)
    assert w.on_server(w.first) == usd(300)


# -- client transfers: retries -----------------------------------------------------------------


def test_two_retries_at_once_open_one_approval_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clerk's transfer of Ana's money to Bo is held, then the process dies before its
    approval is asked for. Two workers retry it at once (each has loaded the transfer before
    the other's submission): each opens an approval request; the loser's ``Submitted`` append
    fails on the stream's version, and its request stays pending for ever, a second request
    for one transfer that a checker may approve. payments/client_transfers.py ``_go_on`` asks
    ``approvals.request`` before it records the submission and never cancels a request that
    lost the race (payments/wires.py ``_submit`` does: ``approvals.cancel`` on a rival)."""
    w = C2CWorld(daily_client_transfer_limits={"USD": usd(5000)})
    approvals = w.b.client_transfers.approvals
    real = approvals.request
    made: list[str] = []
    crashes = [True]

    def request(*args: object, **kwargs: object) -> str:
        if crashes.pop() if crashes else False:
            raise StoreError("the process died")
        approval_id = real(*args, **kwargs)  # type: ignore[arg-type]
        made.append(approval_id)
        return approval_id

    monkeypatch.setattr(approvals, "request", request)
    with pytest.raises(StoreError):
        w.send("x-1", 100, actor=MAKER)
    transfers = w.b.client_transfers
    stale = transfers._load("x-1")  # the second worker's read, before the first one's retry
    w.send("x-1", 100, actor=MAKER)
    with contextlib.suppress(FxCrmError):
        transfers._go_on(MAKER, stale)
    pending = [a for a in made if approvals.get(a).status is ApprovalStatus.PENDING]
    assert len(pending) == 1


# -- erasure and re-registration across processes ----------------------------------------------


def test_after_an_erasure_two_processes_let_one_person_register_once(tmp_path: Path) -> None:
    """Ana is erased in process A (process B had read her claims); she registers again through
    B; then the same e-mail is registered through A. Exactly one live client may hold it
    (passes: the erasure watch drops B's cached claim keys, the new claim is read afresh)."""
    path = tmp_path / "fx.db"
    a, b = open_broker(path), open_broker(path)
    cid = a.clients.register(PORTAL, Registration(ClientKind.INDIVIDUAL, "GB", "Ana Lima", EMAIL))
    assert b.clients.find_by_email(OFFICER, EMAIL) == cid
    a.clients.move(Actor.client(cid), cid, Stage.CLOSED)
    assert isinstance(a.clock, FixedClock)
    a.clock.set(LATER)
    assert a.erasure is not None
    a.erasure.erase(OFFICER, cid, reason="the client asked")
    again = b.clients.register(PORTAL, Registration(ClientKind.INDIVIDUAL, "GB", "Ana L", EMAIL))
    assert again != cid
    with pytest.raises(DuplicateClientError):
        a.clients.register(PORTAL, Registration(ClientKind.INDIVIDUAL, "GB", "Ana", EMAIL))
    assert a.clients.find_by_email(OFFICER, EMAIL) == again
