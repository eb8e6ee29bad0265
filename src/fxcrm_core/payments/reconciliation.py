"""Reconciliation of the CRM's records with the trading servers: every difference is a finding
(a deal the CRM recorded that the server lacks, a server deal the CRM never made, an amount
that differs, a balance that does not add up), never just the first one."""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from fxcrm_core.events import EventStore, iter_all
from fxcrm_core.events.codec import EventCodec
from fxcrm_core.kernel.money import Money
from fxcrm_core.payments.transfers import InternalTransferCompleted
from fxcrm_core.trading import Deal, DealAction, DealChange, TradingServer

__all__ = ["Finding", "FindingKind", "reconcile"]


class FindingKind(enum.Enum):
    MISSING_DEAL = "missing_deal"  # the CRM recorded it; the server has no such deal (now)
    UNKNOWN_DEAL = "unknown_deal"  # a balance deal on the server the CRM did not make
    AMOUNT_MISMATCH = "amount_mismatch"  # same deal, different amount
    BALANCE_MISMATCH = "balance_mismatch"  # the account's CRM-made total differs


@attrs.frozen
class Finding:
    kind: FindingKind
    server: str
    login: int
    ticket: int | None
    crm: Money | None
    on_server: Money | None


def _live_deals(server: TradingServer) -> dict[int, Deal]:
    live: dict[int, Deal] = {}
    cursor = 0
    while page := server.deal_feed(after_cursor=cursor, limit=5000):
        for item in page:
            if item.change is DealChange.DELETED:
                live.pop(item.deal.ticket, None)
            else:
                live[item.deal.ticket] = item.deal
        cursor = page[-1].cursor
    return live


def _crm_records(store: EventStore, codec: EventCodec) -> list[InternalTransferCompleted]:
    records = []
    for stored in iter_all(store):
        if stored.event_type == "InternalTransferCompleted":
            event = codec.decode(stored).event
            assert isinstance(event, InternalTransferCompleted)
            records.append(event)
    return records


def reconcile(
    store: EventStore, codec: EventCodec, server: TradingServer, logins: Iterable[int]
) -> list[Finding]:
    """Compare the CRM's transfers to and from ``logins`` with the server's balance deals."""
    watched = set(logins)
    live = _live_deals(server)
    crm = [r for r in _crm_records(store, codec) if r.server == server.name and r.login in watched]
    findings: list[Finding] = []
    expected: dict[int, Money] = {}
    crm_tickets = set()
    for r in crm:
        signed = r.amount if r.to_trading else -r.amount
        crm_tickets.add(r.deal_ticket)
        expected[r.login] = expected.get(r.login, Money.zero(r.amount.currency)) + signed
        deal = live.get(r.deal_ticket)
        if deal is None:
            findings.append(
                Finding(FindingKind.MISSING_DEAL, server.name, r.login, r.deal_ticket, signed, None)
            )
        elif deal.profit != signed:
            findings.append(
                Finding(
                    FindingKind.AMOUNT_MISMATCH,
                    server.name,
                    r.login,
                    r.deal_ticket,
                    signed,
                    deal.profit,
                )
            )
    actual: dict[int, Money] = {}
    for deal in live.values():
        if deal.login not in watched or deal.action is not DealAction.BALANCE:
            continue
        actual[deal.login] = actual.get(deal.login, Money.zero(deal.currency)) + deal.profit
        if deal.ticket not in crm_tickets:
            findings.append(
                Finding(
                    FindingKind.UNKNOWN_DEAL,
                    server.name,
                    deal.login,
                    deal.ticket,
                    None,
                    deal.profit,
                )
            )
    for login in sorted(watched):
        crm_total, server_total = expected.get(login), actual.get(login)
        if crm_total is None and server_total is None:
            continue
        if crm_total is None or server_total is None or crm_total != server_total:
            findings.append(
                Finding(
                    FindingKind.BALANCE_MISMATCH, server.name, login, None, crm_total, server_total
                )
            )
    return findings
