"""Clocks: the system clock is aware UTC; the manual clock moves only when told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from run_lifecycle import Clock, ManualClock, SystemClock


def test_system_clock_is_aware_utc_and_monotonic() -> None:
    """SystemClock.now() is aware UTC and its counter never goes back."""
    clock = SystemClock()
    assert isinstance(clock, Clock)
    assert clock.now().tzinfo is UTC
    first = clock.monotonic_ns()
    assert clock.monotonic_ns() >= first


def test_manual_clock_advance_moves_both_clocks() -> None:
    """advance() moves wall and monotonic time together."""
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC), monotonic_ns=0)
    clock.advance(1.5)
    assert clock.now() == datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
    assert clock.monotonic_ns() == 1_500_000_000


def test_manual_clock_step_wall_leaves_monotonic_alone() -> None:
    """step_wall() moves only the wall clock, backwards too."""
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC), monotonic_ns=5)
    clock.step_wall(-60)
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC) - timedelta(minutes=1)
    assert clock.monotonic_ns() == 5


def test_manual_clock_refuses_naive_start_and_backward_advance() -> None:
    """A naive start time or a negative advance is a programming error."""
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="forward"):
        ManualClock().advance(-1)
