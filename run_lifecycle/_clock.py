"""Time, injected: wall time for timestamps, a monotonic counter for durations.

Timestamps a user reads (``created_at``, ``completed_at``) come from the wall
clock; durations (``ttft_ns``, ``total_duration_ns``) come from the monotonic
counter, because wall clocks step (NTP, a VM resumed, an operator) and a
duration must never be negative. Tests inject a ``ManualClock`` to drive both.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Where the library reads time from."""

    def now(self) -> datetime:
        """The wall time, timezone-aware, in UTC."""
        ...

    def monotonic_ns(self) -> int:
        """A counter in nanoseconds that never goes backwards within one process."""
        ...


class SystemClock:
    """The real clocks: ``datetime.now(UTC)`` and ``time.monotonic_ns()``."""

    __slots__ = ()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to; safe to share between threads.

    ``advance`` moves both clocks forward together, as real time does;
    ``step_wall`` moves the wall clock alone (backwards too), as an NTP
    correction does, leaving the monotonic counter where it was.
    """

    def __init__(self, start: datetime | None = None, *, monotonic_ns: int = 1_000_000_000) -> None:
        if start is None:
            start = datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._wall = start.astimezone(UTC)
        self._mono = monotonic_ns
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def monotonic_ns(self) -> int:
        with self._lock:
            return self._mono

    def advance(self, seconds: float = 0.0, *, ns: int = 0) -> None:
        """Move both clocks forward by ``seconds`` plus ``ns`` nanoseconds."""
        total_ns = round(seconds * 1_000_000_000) + ns
        if total_ns < 0:
            raise ValueError("advance() moves forward only; use step_wall() to step back")
        with self._lock:
            self._mono += total_ns
            self._wall += timedelta(microseconds=total_ns / 1000)

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock alone by ``seconds`` (negative steps it back)."""
        with self._lock:
            self._wall += timedelta(seconds=seconds)

    def __repr__(self) -> str:
        return f"ManualClock({self._wall.isoformat()}, monotonic_ns={self._mono})"
