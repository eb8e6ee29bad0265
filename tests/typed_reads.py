"""A law of typed reads, run on every store that has them (tests/test_store_contracts.py for
SQLite, tests/test_postgres_events.py for PostgreSQL)."""

from __future__ import annotations

import threading
from typing import Any

from fxcrm_core.events import NewEvent, StreamAppend


def check_typed_read_race(reader: Any, writer: Any) -> None:
    """A writer in another thread keeps appending while a reader follows the log by typed reads
    from the position each read returns: the reader sees every event of its type, once."""
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(300):
                kind = "A" if i % 3 == 0 else "B"
                writer.append(StreamAppend(f"s{i % 7}", None, [NewEvent(kind, b"{}", b"{}")]))
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen: list[int] = []
    position = 0
    while True:
        finished = done.is_set()
        events, position = reader.read_all_of_types(position, frozenset({"A"}), 7)
        seen += [e.position for e in events]
        if finished and len(events) < 7:
            break
    thread.join()
    expected = [s.position for s in reader.read_all(limit=10_000) if s.event_type == "A"]
    assert seen == expected
    assert len(seen) == 100
