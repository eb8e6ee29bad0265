"""What an erasure must know from the rest of the system (the ``ErasureChecks`` port of
``fxcrm_core.privacy``): when a client's relationship ended, from its own record; what still
ties it to the broker (money in the ledger, trading accounts, a wire not yet credited or
rejected); and which claims go with its personal data (its deduplication claims, released, and
its wires' reference and statement-line claims, kept; the keys of both shredded with the
client's). It sits beside the reactions, above the contexts it reads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from fxcrm_core.accounts import TradingAccount
from fxcrm_core.clients import Client, IdentityClaim, IdentityClaimed, Stage, StageChanged
from fxcrm_core.commissions import IbRegistered
from fxcrm_core.commissions.payouts import AccrualView
from fxcrm_core.events import DomainEvent, ProjectionRunner, RecordedEvent, Repository, UnitOfWork
from fxcrm_core.events.event import Erased
from fxcrm_core.ledger import Ledger
from fxcrm_core.ledger.model import AccountOpened
from fxcrm_core.payments.wires import (
    Wire,
    WireClaimed,
    WireCredited,
    WireDeclared,
    WireRejected,
)
from fxcrm_core.trading import AccountState

__all__ = ["AccountStates", "BrokerErasureChecks"]

log = logging.getLogger("fxcrm_core.privacy")


class AccountStates(Protocol):
    """The one question the checks ask a trading server (any ``TradingServer`` answers it)."""

    def account_state(self, login: int) -> AccountState: ...


class _Holdings:
    """A memory read model (rebuilt from the log in each process): the ledger accounts each
    owner holds, the identity claims each client made (digest and claim id; a claim read
    after its key was shredded names nobody and is left out), the client's wires still open
    (declared or matched) and the claim ids of its wires' reference and line claims."""

    name = "erasure-holdings"
    event_types: frozenset[str] | None = frozenset(
        {
            "AccountOpened",
            "IdentityClaimed",
            "IbRegistered",
            "WireDeclared",
            "WireClaimed",
            "WireCredited",
            "WireRejected",
        }
    )

    def __init__(self) -> None:
        self.ledger_accounts: dict[str, list[str]] = {}
        self.claims: dict[str, list[tuple[str, str]]] = {}  # client -> (digest, claim id)
        self.ibs: dict[str, list[str]] = {}  # client -> the IBs that are that same person
        self.wire_clients: dict[str, str] = {}  # wire -> its client
        self.open_wires: dict[str, set[str]] = {}  # client -> wires declared or matched
        self.wire_claims: dict[str, list[str]] = {}  # client -> its wires' claim ids

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, AccountOpened):
            self.ledger_accounts.setdefault(event.owner, []).append(event.account_id)
        elif isinstance(event, IbRegistered) and event.own_client_id is not None:
            self.ibs.setdefault(event.own_client_id, []).append(event.ib_id)
        elif isinstance(event, IdentityClaimed) and not isinstance(event.client_id, Erased):
            digest = recorded.stream_id.removeprefix(f"{IdentityClaim.category}-")
            mine = self.claims.setdefault(event.client_id, [])
            if (digest, event.claim_id) not in mine:
                mine.append((digest, event.claim_id))
        elif isinstance(event, WireDeclared):
            wire_id = recorded.stream_id.removeprefix(f"{Wire.category}-")
            self.wire_clients[wire_id] = event.client_id
            self.open_wires.setdefault(event.client_id, set()).add(wire_id)
        elif isinstance(event, WireCredited | WireRejected):
            wire_id = recorded.stream_id.removeprefix(f"{Wire.category}-")
            client_id = self.wire_clients.get(wire_id)
            if client_id is not None:
                self.open_wires.get(client_id, set()).discard(wire_id)
        elif isinstance(event, WireClaimed) and not isinstance(event.wire_id, Erased):
            # A claim is committed with (after) its wire's declaration or match, so its wire is
            # known here; a version-1 claim has no claim id, and no key of its own to shred.
            client_id = self.wire_clients.get(event.wire_id)
            if client_id is not None and event.claim_id:
                self.wire_claims.setdefault(client_id, []).append(event.claim_id)

    def reset(self) -> None:
        self.ledger_accounts.clear()
        self.claims.clear()
        self.ibs.clear()
        self.wire_clients.clear()
        self.open_wires.clear()
        self.wire_claims.clear()


class BrokerErasureChecks:
    """The broker's answers to an erasure, all from the log (and the trading server, which
    holds the accounts' money): a client's relationship ended when it was CLOSED; a balance or
    a hold on any ledger account it owns, a trading account the server still has enabled or
    funded (or cannot tell about), or a wire declared or matched and not yet credited or
    rejected, blocks the erasure; its identity claims are released, and their keys are
    destroyed with the client's, as are the keys of its wires' claims (kept held)."""

    def __init__(
        self,
        repository: Repository,
        projections: ProjectionRunner,
        ledger: Ledger,
        accounts_of: Callable[[str], list[str]],
        servers: Mapping[str, AccountStates],
    ) -> None:
        self.repository = repository
        self.projections = projections
        self.ledger = ledger
        self.accounts_of = accounts_of
        self.servers = servers
        self._holdings = _Holdings()
        self._accruals = AccrualView(repository)  # (the journal's lines not absorbed yet count)

    def _caught_up(self) -> _Holdings:
        self.projections.catch_up(self._holdings)
        return self._holdings

    def knows(self, subject_id: str) -> bool:
        client = self.repository.load(Client, subject_id)
        return client is not None and client.stage is not None

    def relationship_ended_at(self, subject_id: str) -> datetime | None:
        """When the client was closed (the StageChanged event's recorded time); None if not."""
        stream = Client.stream_id_for(subject_id)
        decode = self.repository.codec.decode_event
        for stored in self.repository.store.read_stream(stream):
            if stored.event_type != "StageChanged":
                continue
            event = decode(stream, stored.event_type, stored.data)
            if isinstance(event, StageChanged) and event.stage is Stage.CLOSED:
                return stored.recorded_at  # CLOSED is final: the first one is the end
        return None

    def open_positions(self, subject_id: str) -> list[str]:
        remaining: list[str] = []
        holdings = self._caught_up()
        # The client's own accounts, and those of an IB that is the same person (its rebate
        # wallet is owned by the IB's id).
        ibs = holdings.ibs.get(subject_id, [])
        owned = [
            account
            for owner in (subject_id, *ibs)
            for account in holdings.ledger_accounts.get(owner, ())
        ]
        balances = self.ledger.balances(owned).values() if owned else ()
        if any(not b.net_credit.is_zero() for b in balances):
            remaining.append("balance")
        if any(not (b.debits_pending.is_zero() and b.credits_pending.is_zero()) for b in balances):
            remaining.append("hold")
        if any(self._open(account_id) for account_id in self.accounts_of(subject_id)):
            remaining.append("open account")
        if any(self._rebates_owed(ib_id) for ib_id in ibs):
            remaining.append("rebates owed")
        if holdings.open_wires.get(subject_id):
            remaining.append("open wire")
        return remaining

    def _rebates_owed(self, ib_id: str) -> bool:
        """Rebates accrued to the IB and not paid yet (pending, carried or held)."""
        account = self._accruals.account(ib_id)
        carried = account.carried is not None and not account.carried.amount.is_zero()
        pending = any(not s[-1].is_zero() for s in account.pending)
        return bool(pending or carried or account.held)

    def _open(self, account_id: str) -> bool:
        """Open unless its server reports it disabled and empty (the SDK records no closing of
        a trading account; a server that cannot tell counts as open)."""
        account = self.repository.load(TradingAccount, account_id)
        if account is None:
            return False
        server = self.servers.get(account.server)
        if server is None:
            return True
        try:
            state = server.account_state(account.login)
        except Exception:  # any adapter failure: we cannot tell, so it stays open
            log.warning("trading server could not report an account", extra={"account": account_id})
            return True
        money = (state.balance, state.credit, state.equity)
        return state.enabled or not all(m.is_zero() for m in money)

    def release(self, subject_id: str, uow: UnitOfWork) -> None:
        for digest, _ in self._caught_up().claims.get(subject_id, ()):
            claim = uow.load(IdentityClaim, digest)
            if claim is not None and claim.client_id == subject_id:
                uow.record(claim, *claim.release())

    def shred_with(self, subject_id: str) -> list[str]:
        """The claim ids of every identity claim the client made and of its wires' reference
        and statement-line claims (their data keys go with the client's): after that, each
        claim reads as ``ERASED``. Version-1 claims have no claim id and no key of their own
        (identity claims name the client in clear and are released, not shredded; wire claims
        name the wire in clear and stay held)."""
        holdings = self._caught_up()
        claims = holdings.claims.get(subject_id, ())
        wires = holdings.wire_claims.get(subject_id, ())
        return list(dict.fromkeys([*(c for _, c in claims if c), *wires]))
