"""``run_lifecycle.testing.capture_audit``: what users' own tests see of the lifecycle."""

from __future__ import annotations

import threading

import pytest

from run_lifecycle import (
    Lifecycle,
    ManualClock,
    RejectedAttempt,
    RunCreated,
    RunLifecycleError,
    TransitionEvent,
)
from run_lifecycle.audit import replay
from run_lifecycle.testing import capture_audit


def test_every_kind_of_record_is_captured_in_order() -> None:
    """Creation, transitions and a rejected attempt arrive in the order they were reported."""
    lc = Lifecycle(clock=ManualClock())
    with capture_audit() as records:
        run = lc.cancel(lc.start(lc.create(agent_id="agent-1")))
        with pytest.raises(RunLifecycleError):
            lc.complete(run)
    assert [type(r) for r in records] == [
        RunCreated,
        TransitionEvent,
        TransitionEvent,
        RejectedAttempt,
    ]
    assert [getattr(r, "trigger", None) for r in records] == [None, "start", "cancel", "complete"]
    assert replay(records) == {run.id: run}


def test_records_before_and_after_the_block_are_not_captured() -> None:
    """Only what is reported while the block runs lands in its list."""
    lc = Lifecycle(clock=ManualClock())
    run = lc.create(agent_id="agent-1")
    with capture_audit() as records:
        run = lc.start(run)
    lc.complete(run)
    assert [r.kind for r in records] == ["transition"]


def test_captures_nest_and_each_sees_everything_inside_it() -> None:
    """An inner capture sees its block; the outer one sees its own block, inner included."""
    lc = Lifecycle(clock=ManualClock())
    with capture_audit() as outer:
        run = lc.create(agent_id="agent-1")
        with capture_audit() as inner:
            run = lc.start(run)
        lc.complete(run)
    assert [r.kind for r in inner] == ["transition"]
    assert [r.kind for r in outer] == ["created", "transition", "transition"]


def test_records_from_other_threads_and_lifecycles_are_captured_beside_the_audit_sink() -> None:
    """A capture is process-wide: any Lifecycle, in any thread, and its own sink still gets them."""

    class Sink:
        def __init__(self) -> None:
            self.records: list[object] = []

        def write(self, record: object) -> None:
            self.records.append(record)

    sink = Sink()
    other = Lifecycle(clock=ManualClock(), audit=sink)
    with capture_audit() as records:
        thread = threading.Thread(target=lambda: other.start(other.create(agent_id="agent-2")))
        thread.start()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert records == sink.records
    assert [r.agent_id for r in records] == ["agent-2", "agent-2"]


def test_the_capture_ends_even_when_the_block_raises() -> None:
    """An exception in the block still removes the capture."""
    lc = Lifecycle(clock=ManualClock())
    with pytest.raises(ZeroDivisionError), capture_audit() as records:
        1 / 0  # noqa: B018
    lc.create(agent_id="agent-1")
    assert records == []
