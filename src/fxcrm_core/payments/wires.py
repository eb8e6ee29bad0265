"""Bank wires: a manual deposit declared with the payer's bank reference and a receipt, matched by
finance against a bank statement line, approved by a second person (maker-checker), credited to
the wallet once. The reference and the statement line are idempotency keys, each held by one wire
at a time through a keyed stream; a rejected wire moves no money and lets both go.

Anyone holding the deduplication key can hash a guessed reference and find its claim, so a claim
names its wire sealed under the claim's own key (a random claim id); the reference's and the
line's hashes in the wire's own stream are sealed under the client's. An erasure destroys both
(``shred_with``): the claims stay held, naming nobody, so the bank's money is never credited twice.
"""

from __future__ import annotations

import enum
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Protocol, Self

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals, ApprovalStatus
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    EventRegistry,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
    pii,
)
from fxcrm_core.events.event import Erased
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    ArgumentTypeError,
    CurrencyMismatchError,
    FxCrmError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.money import Money
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kyc import KycService, Right
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.payments.deposits import retry_on_race
from fxcrm_core.payments.transfers import MoneyAccounts

__all__ = [
    "WIRE_EVENTS",
    "WIRE_EVENTS_VERSION",
    "BankWires",
    "DuplicateBankLineError",
    "DuplicateWireReferenceError",
    "OpenWire",
    "ReferenceKeys",
    "Wire",
    "WireStatus",
    "normalise_bank_reference",
    "register_wire_events",
]

#: The ledger account wires are credited from: what the broker's bank accounts received.
CLEARING = "bank_clearing"
_MAX_REFERENCE = 140  # SEPA's unstructured remittance information
_MAX_ID = 100
_MAX_REASON = 500
#: Who sees a wire: who declares it (the client, finance) or approves it (finance); a host's
#: auditor role may be granted ``wire.read``.
_READERS = ("wire.request", "wire.approve", "wire.read")


class DuplicateWireReferenceError(FxCrmError, ValueError):
    """The bank reference is already held by another declaration. The message never names the
    reference nor the wire or client holding it."""

    default_message = "a wire with this bank reference was already declared"


class DuplicateBankLineError(FxCrmError, ValueError):
    """The bank statement line (its transaction id) already matches another wire."""

    default_message = "this bank statement line already matches another wire"


class ReferenceKeys(Protocol):
    """Keyed hashes of normalised identifiers; ``clients.IdentityKeys`` is one (the broker's
    deduplication secret), so the log holds no reference in clear outside a sealed field."""

    def digest(self, kind: str, normalised: str) -> str: ...


def normalise_bank_reference(text: str) -> str:
    """The reference as banks pass it on: compatibility forms folded (fullwidth as ASCII), upper
    case, letters and digits only; banks drop or swap spaces and punctuation on the way, so
    references that differ only there are one reference.

    >>> normalise_bank_reference(" inv-2026/0042 ")
    'INV20260042'
    >>> normalise_bank_reference("\\uff29\\uff2e\\uff36 2026 0042")  # fullwidth INV
    'INV20260042'
    """
    folded = unicodedata.normalize(
        "NFKC", checked_text(text, "bank reference", _MAX_REFERENCE)
    ).upper()
    compact = "".join(c for c in folded if c.isalnum())
    if not compact:
        raise ValidationError("a bank reference needs letters or digits")
    return compact


def _transaction_id(text: str) -> str:
    """A bank's transaction id: folded and upper case, spaces dropped."""
    folded = unicodedata.normalize(
        "NFKC", checked_text(text, "bank transaction id", _MAX_ID)
    ).upper()
    return "".join(folded.split())


class WireStatus(enum.Enum):
    DECLARED = "declared"  # waiting for the money on a bank statement
    MATCHED = "matched"  # a statement line found: waiting for approval
    CREDITED = "credited"
    REJECTED = "rejected"


@attrs.frozen
class WireDeclared(DomainEvent):
    """The payer's reference is sealed under the client's key (it may name the person), and so
    is ``reference_key``, its keyed hash (the id of the claim on it): once the client is
    erased, a guessed reference's hash finds no wire here. Rows written before the hash was
    sealed hold it in clear (they read the same)."""

    __subject__ = "client_id"
    wire_id: str
    client_id: str
    amount: Money
    receipt_id: str
    reference_key: str = pii()
    bank_reference: str = pii()


@attrs.frozen
class WireMatched(DomainEvent):
    """The bank statement line the wire arrived on, its transaction id and that id's keyed hash
    sealed under the client's key; ``received`` is what will be credited.

    Version 1 had no ``client_id`` and held the line in clear: :func:`upcast_matched_v1` reads
    it with ``client_id`` empty, and its bytes keep the line (an erasure cannot seal it)."""

    __subject__ = "client_id"
    client_id: str
    received: Money
    booked_on: date
    bank_transaction_id: str = pii()
    line_key: str = pii()


@attrs.frozen
class WireSubmitted(DomainEvent):
    approval_id: str


@attrs.frozen
class WireCredited(DomainEvent):
    approval_id: str
    amount: Money
    transfer_id: str


@attrs.frozen
class WireRejected(DomainEvent):
    reason: str


@attrs.frozen
class WireClaimed(DomainEvent):
    """A reference or a statement line (the hash that keys the stream) held by ``wire_id``,
    sealed under the claim's own data key (``claim_id``, random): the client's erasure
    destroys that key, and the claim then reads as ``ERASED``, still held but naming no wire.

    Version 1 held ``wire_id`` in clear and had no claim id: :func:`upcast_claimed_v1` reads it
    with ``claim_id`` empty, so there is no key to shred and its bytes keep the wire's id (and
    the wire's stream its client): an erasure cannot unlink claims written before version 2."""

    __subject__ = "claim_id"
    claim_id: str
    wire_id: str = pii()


@attrs.frozen
class WireClaimReleased(DomainEvent):
    """The claim ``claim_id`` let go (its wire was rejected). Version 1 named the wire in
    clear; :func:`upcast_released_v1` drops it on read."""

    claim_id: str


WIRE_EVENTS = (
    WireDeclared,
    WireMatched,
    WireSubmitted,
    WireCredited,
    WireRejected,
    WireClaimed,
    WireClaimReleased,
)
WIRE_EVENTS_VERSION = 2  # of WireMatched, WireClaimed and WireClaimReleased


def upcast_matched_v1(data: dict[str, Any]) -> dict[str, Any]:
    """WireMatched v1 → v2: no client id (the line and its hash stay as stored, in clear)."""
    return {"client_id": "", **data}


def upcast_claimed_v1(data: dict[str, Any]) -> dict[str, Any]:
    """WireClaimed v1 → v2: no claim id (the wire id stays as stored, in clear)."""
    return {"claim_id": "", **data}


def upcast_released_v1(data: dict[str, Any]) -> dict[str, Any]:
    """WireClaimReleased v1 → v2: the clear wire id is dropped, no claim id."""
    return {"claim_id": ""}


def register_wire_events(registry: EventRegistry) -> None:
    """Register the wire events, three of them at version 2 with their upcasters from 1."""
    registry.register_all(WIRE_EVENTS)
    for cls in (WireMatched, WireClaimed, WireClaimReleased):
        registry.register(cls, version=WIRE_EVENTS_VERSION)
    registry.upcaster("WireMatched", 1)(upcast_matched_v1)
    registry.upcaster("WireClaimed", 1)(upcast_claimed_v1)
    registry.upcaster("WireClaimReleased", 1)(upcast_released_v1)


@attrs.frozen(kw_only=True)
class Wire(Aggregate):
    """A declared wire. It holds no personal data: the payer's reference stays sealed in
    :class:`WireDeclared` (find a wire by it with :meth:`BankWires.find_by_reference`)."""

    category = "wire"
    client_id: str = ""
    amount: Money | None = None  # declared
    receipt_id: str = ""
    reference_key: str = ""
    status: WireStatus | None = None
    bank_transaction_id: str | None = None
    line_key: str | None = None
    received: Money | None = None  # on the bank statement
    booked_on: date | None = None
    approval_id: str | None = None
    credited: Money | None = None
    reason: str | None = None

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case WireDeclared():
                return self.evolve(
                    client_id=event.client_id, amount=event.amount, receipt_id=event.receipt_id,
                    reference_key=event.reference_key, status=WireStatus.DECLARED,
                )  # fmt: skip
            case WireMatched():
                return self.evolve(
                    bank_transaction_id=event.bank_transaction_id, line_key=event.line_key,
                    received=event.received, booked_on=event.booked_on, status=WireStatus.MATCHED,
                )  # fmt: skip
            case WireSubmitted(approval_id=approval_id):
                return self.evolve(approval_id=approval_id)
            case WireCredited(amount=amount):
                return self.evolve(credited=amount, status=WireStatus.CREDITED)
            case WireRejected(reason=reason):
                return self.evolve(reason=reason, status=WireStatus.REJECTED)
        raise ValidationError(f"Wire cannot apply {type(event).__name__}")

    @property
    def difference(self) -> Money | None:
        """Received minus declared (intermediary banks' charges make it negative), once
        matched."""
        if self.received is None or self.amount is None:
            return None
        return self.received - self.amount


@attrs.frozen(kw_only=True)
class WireClaim(Aggregate):
    """One stream per keyed reference (``reference:<hash>``) or statement line
    (``line:<hash>``): whether a wire holds it (until a rejection releases it), which one
    (None once that wire's client was erased: the claim stays held, naming nobody, so the
    same bank money is never declared or matched twice) and the claim that says so."""

    category = "wireclaim"
    held: bool = False
    wire_id: str | None = None
    claim_id: str = ""

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, WireClaimed):
            holder = None if isinstance(event.wire_id, Erased) else event.wire_id
            return self.evolve(held=True, wire_id=holder, claim_id=event.claim_id)
        if isinstance(event, WireClaimReleased):
            return self.evolve(held=False, wire_id=None, claim_id="")
        raise ValidationError(f"WireClaim cannot apply {type(event).__name__}")


@attrs.frozen(kw_only=True)
class OpenWire:
    """A wire waiting for finance: a statement line (declared) or an approval (matched)."""

    wire_id: str
    client_id: str
    amount: Money
    status: WireStatus
    received: Money | None = None
    approval_id: str | None = None


class _OpenWires:
    """Memory read model of the wires not yet credited or rejected, rebuilt from position 0 in
    each process and caught up before each answer."""

    name = "payments-open-wires"
    event_types: frozenset[str] | None = frozenset(
        {"WireDeclared", "WireMatched", "WireSubmitted", "WireCredited", "WireRejected"}
    )

    def __init__(self) -> None:
        self.rows: dict[str, OpenWire] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        wire_id = recorded.stream_id.removeprefix(f"{Wire.category}-")
        match event:
            case WireDeclared():
                self.rows[wire_id] = OpenWire(
                    wire_id=wire_id, client_id=event.client_id, amount=event.amount,
                    status=WireStatus.DECLARED,
                )  # fmt: skip
            case WireMatched(received=received) if wire_id in self.rows:
                row = self.rows[wire_id]
                self.rows[wire_id] = attrs.evolve(row, status=WireStatus.MATCHED, received=received)
            case WireSubmitted(approval_id=approval_id) if wire_id in self.rows:
                self.rows[wire_id] = attrs.evolve(self.rows[wire_id], approval_id=approval_id)
            case WireCredited() | WireRejected():
                self.rows.pop(wire_id, None)

    def reset(self) -> None:
        self.rows.clear()


class BankWires:
    """The wire workflow: :meth:`declare`, :meth:`match`, then the approval ``"wire"`` through
    :class:`~fxcrm_core.access.Approvals` credits it; :meth:`reject` before that."""

    def __init__(
        self,
        repository: Repository,
        ledger: Ledger,
        access: AccessControl,
        kyc: KycService,
        approvals: Approvals,
        projections: ProjectionRunner,
        keys: ReferenceKeys,
        *,
        ids: IdGenerator | None = None,
    ) -> None:
        self.repository = repository
        self.ledger = ledger
        self.access = access
        self.kyc = kyc
        self.approvals = approvals
        self.projections = projections
        self.keys = keys
        self.ids = ids or IdGenerator()
        self.money = MoneyAccounts(ledger)
        self._open = _OpenWires()
        approvals.register("wire", ApprovalRule(execute=self._credit, check=self._check))

    def _uow(self, actor: str, reason: str) -> UnitOfWork:
        return UnitOfWork(self.repository, EventMetadata(actor, reason=reason))

    def _reference_claim(self, bank_reference: str) -> str:
        return "reference:" + self.keys.digest(
            "wire_reference", normalise_bank_reference(bank_reference)
        )

    def _claimed(self, wire_id: str) -> WireClaimed:
        """A claim by ``wire_id`` under a fresh random claim id (a UUID version 4 form) from the
        id generator's random source: never the time-ordered id, whose next value is the wire's
        id plus one within a millisecond; the claim id is the one clear link to its key."""
        value = self.ids.random_bits(128)
        value = (value & ~(0xF << 76) & ~(0b11 << 62)) | (0x4 << 76) | (0b10 << 62)
        return WireClaimed(str(uuid.UUID(int=value)), wire_id)

    # -- declare -----------------------------------------------------------------------------
    def declare(
        self,
        actor: Actor,
        client_id: str,
        amount: Money,
        *,
        bank_reference: str,
        receipt_id: str,
    ) -> str:
        """Declare a wire the client sent; returns its id.

        The same declaration again (same client, amount and receipt, a reference that normalises
        the same) answers the wire already declared, so a form sent twice makes one wire; any
        other declaration with that reference is a :class:`DuplicateWireReferenceError`.
        """
        client_id = checked_text(client_id, "client id", _MAX_ID)
        self.access.require(actor, "wire.request", client_id=client_id)
        _money(amount, "wire amount").require_positive("wire amount")
        receipt = checked_text(receipt_id, "receipt id", _MAX_ID)
        claim_key = self._reference_claim(bank_reference)
        self.kyc.require(client_id, Right.DEPOSIT)
        wire_id = self.ids()
        declared = WireDeclared(
            wire_id, client_id, amount, receipt, claim_key, bank_reference.strip()
        )
        return retry_on_race(lambda: self._declare(actor, declared), "the wire declaration")

    def _declare(self, actor: Actor, declared: WireDeclared) -> str:
        claim_key = declared.reference_key
        claim = self.repository.load(WireClaim, claim_key) or WireClaim.blank(claim_key)
        if claim.held:
            if claim.wire_id is None:  # its wire's client was erased: not this declaration
                raise DuplicateWireReferenceError()
            held = self.repository.get(Wire, claim.wire_id)
            same = (held.client_id, held.amount, held.receipt_id) == (
                declared.client_id, declared.amount, declared.receipt_id,
            )  # fmt: skip
            if same:
                return held.id
            raise DuplicateWireReferenceError()
        with self._uow(actor.id, "wire declared") as uow:
            uow.record(Wire.blank(declared.wire_id), declared)
            uow.record(claim, self._claimed(declared.wire_id))
            uow.commit()  # a rival claiming the reference first: ConcurrencyError, decide again
        return declared.wire_id

    # -- match ---------------------------------------------------------------------------------
    def match(
        self,
        actor: Actor,
        wire_id: str,
        *,
        bank_transaction_id: str,
        received: Money,
        booked_on: date,
    ) -> Wire:
        """Record the bank statement line the wire arrived on and submit it for approval (the
        actor is the approval's maker). What the bank received is what will be credited, even if
        it differs from the declaration (:attr:`Wire.difference` shows the checker). The same
        line again is a repeat; another line on a matched wire, or a line another wire holds,
        is refused."""
        wire = self._wire(wire_id)
        self.access.require(actor, "wire.match", client_id=wire.client_id)
        _money(received, "received amount").require_positive("received amount")
        assert wire.amount is not None
        if received.currency != wire.amount.currency:
            raise CurrencyMismatchError("a wire is matched in the currency it was declared in")
        if isinstance(booked_on, datetime) or not isinstance(booked_on, date):
            raise ArgumentTypeError("booked_on is the statement's booking date (a date)")
        txid = _transaction_id(bank_transaction_id)
        line_id = "line:" + self.keys.digest("wire_bank_line", txid)
        matched = WireMatched(
            client_id=wire.client_id, received=received, booked_on=booked_on,
            bank_transaction_id=txid, line_key=line_id,
        )  # fmt: skip
        retry_on_race(lambda: self._match(actor, wire_id, matched), "the wire match")
        self._submit(actor, wire_id)
        return self._wire(wire_id)

    def _match(self, actor: Actor, wire_id: str, matched: WireMatched) -> None:
        wire = self._wire(wire_id)
        if wire.status is WireStatus.REJECTED:
            raise IllegalTransitionError("the wire was rejected")
        if wire.status is not WireStatus.DECLARED:
            if wire.line_key == matched.line_key and wire.received == matched.received:
                return  # a repeat
            raise IllegalTransitionError("the wire is already matched to another statement line")
        claim = self.repository.load(WireClaim, matched.line_key)
        claim = claim or WireClaim.blank(matched.line_key)
        if claim.held:
            raise DuplicateBankLineError()
        with self._uow(actor.id, "wire matched") as uow:
            uow.record(wire, matched)
            uow.record(claim, self._claimed(wire_id))
            uow.commit()

    def _submit(self, actor: Actor, wire_id: str) -> None:
        """Open the approval of a matched wire that has none (also after a crash between the
        match and this: matching again submits it)."""
        wire = self._wire(wire_id)
        if wire.status is not WireStatus.MATCHED or wire.approval_id is not None:
            return
        approval_id = self.approvals.request(
            actor, "wire", wire_id, {"wire_id": wire_id}, client_id=wire.client_id
        )
        try:
            retry_on_race(
                lambda: self._record_submitted(actor, wire_id, approval_id), "the wire submission"
            )
        except IllegalTransitionError:
            # A rival submitted it first (or it was rejected meanwhile): ours is not needed.
            self.approvals.cancel(actor, approval_id)

    def _record_submitted(self, actor: Actor, wire_id: str, approval_id: str) -> None:
        wire = self._wire(wire_id)
        if wire.status is not WireStatus.MATCHED or wire.approval_id is not None:
            raise IllegalTransitionError("the wire is no longer waiting for an approval request")
        with self._uow(actor.id, "wire submitted") as uow:
            uow.record(wire, WireSubmitted(approval_id))
            uow.commit()

    # -- approval ------------------------------------------------------------------------------
    def _check(self, params: Mapping[str, str]) -> None:
        wire = self._wire(params["wire_id"])
        if wire.status is not WireStatus.MATCHED:
            raise IllegalTransitionError("the wire is no longer waiting for approval")
        # The client's level as of now: a document revoked since the declaration stops it here
        # (a close does not: the bank holds the money, so it is credited, to be withdrawn).
        self.kyc.require(wire.client_id, Right.DEPOSIT, received=True)

    def _credit(self, params: Mapping[str, str], key: str) -> str:
        return retry_on_race(lambda: self._credit_once(params["wire_id"], key), "the wire credit")

    def _credit_once(self, wire_id: str, key: str) -> str:
        wire = self._wire(wire_id)
        approval_id = key.removeprefix("approval:")
        if wire.approval_id != approval_id:
            # A request opened by a match whose submission was lost, or one for another wire.
            raise IllegalTransitionError("this approval is not the wire's current one")
        if wire.status is WireStatus.CREDITED:
            return f"wire {wire.id} credited"  # a retry: nothing more
        if wire.status is not WireStatus.MATCHED:
            raise IllegalTransitionError("the wire is no longer waiting for approval")
        assert wire.received is not None
        currency = wire.received.currency
        wallet = self.money.wallet(wire.client_id, currency)
        clearing = self.money.broker(CLEARING, currency)
        transfer_id = f"wire:{wire.id}"  # one per wire, whatever approval runs it
        self.ledger.transfer(
            TransferRequest(transfer_id, clearing, wallet, wire.received),
            actor="system:approvals",
            also=[(wire, WireCredited(approval_id, wire.received, transfer_id))],
        )
        return f"wire {wire.id} credited"

    # -- reject --------------------------------------------------------------------------------
    def reject(self, actor: Actor, wire_id: str, reason: str) -> Wire:
        """Refuse a wire before it is credited: nothing is posted, its approval (if pending) is
        rejected (cancelled if the actor made it), and its reference and statement line are
        released for a new declaration. Rejecting it again is a repeat; a credited wire is
        corrected by a ledger reversal, not rejected."""
        wire = self._wire(wire_id)
        self.access.require(actor, "wire.approve", client_id=wire.client_id)
        why = checked_text(reason, "reason", _MAX_REASON)
        retry_on_race(lambda: self._reject(actor, wire_id, why), "the wire rejection")
        return self._wire(wire_id)

    def _reject(self, actor: Actor, wire_id: str, reason: str) -> None:
        wire = self._wire(wire_id)
        if wire.status is WireStatus.REJECTED:
            return
        if wire.status is WireStatus.CREDITED:
            raise IllegalTransitionError("a credited wire is corrected by a reversal")
        if wire.approval_id is not None:
            request = self.approvals.get(wire.approval_id)
            if request.status is ApprovalStatus.PENDING:
                if request.maker_id == actor.id:
                    self.approvals.cancel(actor, request.id)
                else:
                    self.approvals.reject(actor, request.id, reason)
        with self._uow(actor.id, "wire rejected") as uow:
            uow.record(wire, WireRejected(reason))
            for claim_key in (wire.reference_key, wire.line_key):
                claim = self.repository.load(WireClaim, claim_key) if claim_key else None
                if claim is not None and claim.held and claim.wire_id == wire_id:
                    uow.record(claim, WireClaimReleased(claim.claim_id))
            uow.commit()  # the credit racing this: one of the two appends wins the wire

    # -- reads -----------------------------------------------------------------------------------
    def _wire(self, wire_id: str) -> Wire:
        wire_id = checked_text(wire_id, "wire id", _MAX_ID)
        wire = self.repository.load(Wire, wire_id)
        if wire is None or wire.status is None:
            raise NotFoundError("no such wire")
        return wire

    def get(self, actor: Actor, wire_id: str) -> Wire:
        """The wire, for who may declare or approve the client's wires (or ``wire.read``)."""
        wire = self._wire(wire_id)
        if not any(self.access.allows(actor, p, client_id=wire.client_id) for p in _READERS):
            raise AccessDeniedError(f"{actor.id} may not see this client's wires")
        return wire

    def find_by_reference(self, actor: Actor, bank_reference: str) -> Wire | None:
        """The wire holding a payer's reference read off a bank statement (None: no declaration
        holds it), for finance matching the statement (``wire.match``)."""
        self.access.require(actor, "wire.match")
        claim = self.repository.load(WireClaim, self._reference_claim(bank_reference))
        if claim is None or claim.wire_id is None:
            return None
        wire = self._wire(claim.wire_id)
        self.access.require(actor, "wire.match", client_id=wire.client_id)
        return wire

    def waiting(self, actor: Actor) -> list[OpenWire]:
        """Wires waiting for a statement line or an approval, oldest first, of the clients the
        actor may match. A memory read model: the first call in a process reads every wire
        event from the start of the log, later calls only what is new."""
        self.access.require(actor, "wire.match")
        self.projections.catch_up(self._open)
        return [
            row
            for row in self._open.rows.values()
            if self.access.allows(actor, "wire.match", client_id=row.client_id)
        ]


def _money(value: object, what: str) -> Money:
    if not isinstance(value, Money):
        raise ArgumentTypeError(f"the {what} is Money")
    return value
