"""The Clock port: where "now" comes from, so tests and replays control time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from fxcrm_core.kernel.time import to_utc

__all__ = ["Clock", "FixedClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Tells the current time, aware and in UTC."""

    def now(self) -> datetime: ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until it is set or advanced (tests, simulations, replays).

    >>> clock = FixedClock(datetime(2026, 1, 5, 12, tzinfo=UTC))
    >>> clock.advance(hours=2).isoformat()
    '2026-01-05T14:00:00+00:00'
    """

    def __init__(self, start: datetime) -> None:
        self._now = to_utc(start, "clock start")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = to_utc(when, "clock time")

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**parts)``; returns the new time."""
        step = delta if delta is not None else timedelta(**parts)
        with self._lock:
            self._now = self._now + step
            return self._now
