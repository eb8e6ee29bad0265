"""Process entry points for the contract suite (top level, so 'spawn' can import them)."""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event

from fxcrm_core.events.store import EventStore, NewEvent, StreamAppend
from fxcrm_core.kernel.errors import ConcurrencyError

Opener = Callable[[], EventStore]


def race(opener: Opener, barrier: Barrier, results: Queue[str], name: str) -> None:
    """Append to one stream at expected version 0 at the same moment as a rival process."""
    store = opener()
    event = NewEvent("Raced", name.encode(), b"{}")
    barrier.wait()
    try:
        store.append(StreamAppend("race-1", 0, [event, event]))
        results.put(f"won:{name}")
    except ConcurrencyError:
        results.put(f"conflict:{name}")


def command_loop(opener: Opener, started: Event, payload_size: int) -> None:
    """Append multi-stream commands forever (until killed); each one must land whole or not."""
    store = opener()
    blob = b"x" * payload_size
    i = 0
    while True:
        store.append(
            StreamAppend(f"cmd-a-{i}", 0, [NewEvent("A", blob, b"{}")] * 3),
            StreamAppend(f"cmd-b-{i}", 0, [NewEvent("B", blob, b"{}")] * 2),
        )
        i += 1
        if i == 5:
            started.set()
