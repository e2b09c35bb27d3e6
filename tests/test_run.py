"""The record: ``evolve_run``, the hot path's copy, behaves as ``attrs.evolve``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from run_lifecycle import Run, RunStatus, StopReason
from run_lifecycle._run import evolve_run

from .strategies import reachable_runs

_changes = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(RunStatus),
        "stop_reason": st.none() | st.sampled_from(StopReason),
        "ttft_ns": st.none() | st.integers(0, 2**40),
        "version": st.integers(0, 100),
        "metadata": st.none() | st.dictionaries(st.text(max_size=3), st.integers()),
    },
)


@given(run=reachable_runs(), changes=_changes)
def test_evolve_run_equals_attrs_evolve(run: Run, changes: dict[str, Any]) -> None:
    """The hot path's copy gives what attrs.evolve gives, bookkeeping fields included."""
    fast, slow = evolve_run(run, **changes), attrs.evolve(run, **changes)
    assert fast == slow
    assert (fast.version, fast.created_monotonic_ns) == (slow.version, slow.created_monotonic_ns)


def test_evolve_run_refuses_an_unknown_field() -> None:
    """Like attrs.evolve, an unknown field name is a TypeError naming it."""
    run = Run(id="run-0123abcd", agent_id="a", created_at=datetime.now().astimezone())
    with pytest.raises(TypeError, match="nope"):
        evolve_run(run, nope=1)
