"""What the event-store benchmarks (SQLite and PostgreSQL) share: the desk's events and codec,
the runs both time the same way (the full stack's batched append, the log's replay, the desk's
aggregate replay), the eventsourcing library's desk, and their command line, rounds and report
(throughput medians, then each ratio as the median of the rounds' own ratios, with its target)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventsourcing.domain import Aggregate as EsAggregate
from eventsourcing.domain import event as es_event

from _desk import DESK_EVENTS, CashDesk, CashReceived, DeskOpened
from fxcrm_core.broker import Broker
from fxcrm_core.events import EventCodec, EventMetadata, EventRegistry, NewEvent, Repository
from fxcrm_core.kernel import Currency, Money

Ratio = tuple[str, str, str, float | None]  # (label, ours, baseline, target or None)


def run_rounds(
    doc: str | None,
    argv: list[str] | None,
    one_round: Callable[[int, int, int], dict[str, float]],
    ratios: Sequence[Ratio],
    settings: str,
) -> int:
    """Parse ``--quick/--rounds/--json``, run the rounds, print the report; returns 0."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    n, batch, commands, rounds = (
        (600, 100, 30, 1) if args.quick else (20_000, 1_000, 300, args.rounds or 5)
    )
    print(
        f"events per round {n}, batch {batch}, commands {commands}, rounds {rounds}, "
        f"{settings}, python {sys.version.split()[0]}, cpus {os.cpu_count()}"
    )
    results = [one_round(n, batch, commands) for _ in range(rounds)]
    print(f"\n{'throughput (median, events/s)':<40}{'':>14}")
    for key in results[0]:
        print(f"  {key:<38}{statistics.median(r[key] for r in results):>14,.0f}")
    print(f"\n{'ratio (median of paired rounds)':<48}{'ratio':>8}{'target':>9}")
    report: dict[str, Any] = {"throughput": {}, "ratios": {}}
    missed = 0
    for label, ours, base, target in ratios:
        ratio = statistics.median(r[ours] / r[base] for r in results)
        mark = "" if target is None else ("  met" if ratio >= target else "  MISSED")
        missed += target is not None and ratio < target
        shown = "-" if target is None else f">= {target:g}"
        print(f"  {label:<46}{ratio:>8.2f}{shown:>9}{mark}")
        report["ratios"][label] = {"ratio": ratio, "target": target}
    for key in results[0]:
        report["throughput"][key] = statistics.median(r[key] for r in results)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(f"\n{missed} ratio(s) MISSED" if missed else "\nall ratios meet their targets")
    return 0


T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)


BENCH_IDENTITY_KEY = b"benchmark-only deduplication key, 32+ bytes"


META = EventMetadata("psp:callback", "corr-0123456789", reason="deposit confirmed")


def _codec() -> EventCodec:
    reg = EventRegistry()
    reg.register_all(DESK_EVENTS)
    return EventCodec(reg)


def _events(n: int) -> list[CashReceived]:
    return [CashReceived(Money.from_minor(10_000 + i, "USD"), f"psp-{i:09d}") for i in range(n)]


def _rows(codec: EventCodec, n: int) -> list[NewEvent]:
    return [codec.encode("desk-bench", e, META) for e in _events(n)]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def full_stack_batched(broker: Broker, n: int, batch: int) -> float:
    """Commands in, events recorded: like the eventsourcing runs below, the timed part turns each
    (amount, reference) into its event through the aggregate's command."""
    inputs = [(e.amount, e.psp_reference) for e in _events(n)]

    def run() -> None:
        desk = CashDesk.blank("bench")
        for i in range(0, n, batch):
            with broker.unit_of_work("psp:callback", correlation_id="c") as uow:
                if i == 0:
                    desk = uow.record(desk, DeskOpened(Currency.of("USD")))
                events = [e for a, ref in inputs[i : i + batch] for e in desk.receive(a, ref)]
                desk = uow.record(desk, *events)
                uow.commit()

    return _timed(run)


def store_replay(store: Any, codec: EventCodec) -> float:
    def run() -> None:
        decode = codec.decode
        position = 0
        while True:
            chunk = store.read_all(after_position=position, limit=5000)
            if not chunk:
                return
            for stored in chunk:
                decode(stored)
            position = chunk[-1].position

    return _timed(run)


def aggregate_replay(broker: Broker) -> float:
    """Seconds to rebuild the desk from its events: a new repository on the broker's store and
    codec, with no state cache and no snapshots (the broker's own repository keeps the state it
    committed, and would answer without replaying anything)."""
    cold = Repository(broker.store, broker.codec, cache_size=0)

    def run() -> None:
        desk = cold.get(CashDesk, "bench")
        assert desk.version == desk.received + 1  # every event was folded

    return _timed(run)


class EsDesk(EsAggregate):
    def __init__(self) -> None:
        self.balance = Decimal(0)

    @es_event("Received")
    def receive(self, amount: Decimal, psp_reference: str) -> None:
        self.balance += amount
