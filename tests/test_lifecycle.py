"""The Lifecycle: random trigger sequences keep every invariant of DESIGN §1-§3."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from run_lifecycle import (
    IllegalTransition,
    InvalidRunInput,
    InvalidStopReason,
    Lifecycle,
    ManualClock,
    RejectedAttempt,
    Run,
    RunCreated,
    RunStatus,
    StopReason,
    TransitionError,
    TransitionEvent,
)
from run_lifecycle._machine import decide

from .strategies import creation_fields, stop_reasons, triggers

TERMINAL = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}

#: DESIGN §3's edges between distinct statuses, written out from the spec (first_token stays put).
DESIGN_EDGES = {
    ("created", "running"),
    ("running", "running"),
    ("running", "completed"),
    ("created", "failed"),
    ("running", "failed"),
    ("created", "cancelled"),
    ("running", "cancelled"),
    ("completed", "cancelled"),
}


class ListSink:
    """An audit sink that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def write(self, record: Any) -> None:
        self.records.append(record)


class LifecycleMachine(RuleBasedStateMachine):
    """Fires random triggers (legal and illegal) with random stop reasons and clock moves."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(datetime(2026, 5, 1, tzinfo=UTC))
        self.sink = ListSink()
        self.lc = Lifecycle(clock=self.clock, audit=self.sink)
        self.run: Run
        self.history: list[RunStatus] = []

    @initialize(fields=creation_fields)
    def create(self, fields: dict[str, Any]) -> None:
        self.run = self.lc.create(**fields)
        self.history = [self.run.status]

    @rule(trigger=triggers, stop_reason=stop_reasons, error=st.none() | st.text(max_size=10))
    def fire(self, trigger: str, stop_reason: StopReason | None, error: str | None) -> None:
        before = self.run
        snapshot = attrs.asdict(before)
        if error is not None and trigger != "fail":
            error = None
        try:
            after, event = self.lc.apply(before, trigger, stop_reason=stop_reason, error=error)
        except TransitionError as exc:
            assert attrs.asdict(before) == snapshot  # the record handed in was not touched
            assert (exc.run_id, exc.status, exc.trigger) == (
                before.id,
                before.status.value,
                trigger,
            )
            assert isinstance(self.sink.records[-1], RejectedAttempt)
            return
        if event is None:
            assert after is before
            return
        assert event.from_status == before.status.value
        assert event.to_status == after.status.value
        assert (
            decide(
                before.status.value,
                before.stop_reason,
                trigger,
                after.stop_reason if trigger in {"complete", "fail", "cancel"} else None,
            ).outcome
            == "accept"
        )
        self.run = after
        self.history.append(after.status)

    @rule(seconds=st.floats(min_value=0, max_value=10_000))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(seconds=st.floats(min_value=-10_000, max_value=10_000))
    def step_wall(self, seconds: float) -> None:
        self.clock.step_wall(seconds)

    @invariant()
    def status_moves_only_along_the_graph(self) -> None:
        for earlier, later in zip(self.history, self.history[1:], strict=False):
            assert (earlier.value, later.value) in DESIGN_EDGES, (earlier, later)

    @invariant()
    def terminal_fields_fit_the_status(self) -> None:
        run = self.run
        if run.status in TERMINAL:
            assert run.completed_at is not None
            assert run.stop_reason is not None and run.stop_reason.run_status is run.status
            assert run.total_duration_ns is not None and run.total_duration_ns >= 0
            assert run.completed_at >= run.created_at
        else:
            assert run.completed_at is None
            assert run.stop_reason is None
            assert run.total_duration_ns is None

    @invariant()
    def durations_are_ordered(self) -> None:
        run = self.run
        if run.ttft_ns is not None:
            assert run.ttft_ns >= 0
            if run.total_duration_ns is not None:
                assert run.ttft_ns <= run.total_duration_ns

    @invariant()
    def events_are_numbered_one_two_three(self) -> None:
        events = [r for r in self.sink.records if isinstance(r, TransitionEvent)]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert self.run.version == len(events)
        assert isinstance(self.sink.records[0], RunCreated)


TestLifecycleStateful = LifecycleMachine.TestCase


@pytest.fixture
def lc() -> Lifecycle:
    return Lifecycle(clock=ManualClock())


def test_calls_return_new_records_and_never_mutate_their_input(lc: Lifecycle) -> None:
    """Each call returns a new record; the one passed in is untouched."""
    created = lc.create(agent_id="agent-1", metadata={"k": "v"})
    snapshot = attrs.asdict(created)
    running = lc.start(created)
    assert running is not created
    assert attrs.asdict(created) == snapshot
    assert (created.status, running.status) == (RunStatus.CREATED, RunStatus.RUNNING)


def test_late_complete_after_cancel_is_illegal_and_names_cancelled(lc: Lifecycle) -> None:
    """A completion arriving after a cancel is refused, and the caller learns the run was cancelled."""
    run = lc.cancel(lc.start(lc.create(agent_id="a")))
    with pytest.raises(IllegalTransition) as info:
        lc.complete(run)
    assert info.value.status == "cancelled"
    assert info.value.trigger == "complete"
    assert info.value.run_id == run.id
    assert "cancelled" in str(info.value)


def test_complete_with_a_failure_reason_raises_invalid_stop_reason(lc: Lifecycle) -> None:
    """complete(error) is rejected as InvalidStopReason, not mapped, and is no IllegalTransition."""
    run = lc.start(lc.create(agent_id="a"))
    with pytest.raises(InvalidStopReason) as info:
        lc.complete(run, stop_reason=StopReason.ERROR)
    assert not isinstance(info.value, IllegalTransition)
    assert info.value.stop_reason == "error"


def test_fail_with_a_completion_reason_raises_invalid_stop_reason(lc: Lifecycle) -> None:
    """fail(end_turn) is rejected as InvalidStopReason."""
    run = lc.start(lc.create(agent_id="a"))
    with pytest.raises(InvalidStopReason):
        lc.fail(run, stop_reason=StopReason.END_TURN)


def test_repeating_the_terminal_transition_is_a_no_op_without_event(lc: Lifecycle) -> None:
    """complete twice with the same reason returns the run unchanged and emits no event."""
    done = lc.complete(lc.start(lc.create(agent_id="a")), stop_reason="max_steps")
    again, event = lc.apply(done, "complete", stop_reason=StopReason.MAX_STEPS)
    assert again is done and event is None


def test_repeating_with_another_reason_is_illegal(lc: Lifecycle) -> None:
    """complete(end_turn) after complete(max_steps) is not a retry: it is illegal."""
    done = lc.complete(lc.start(lc.create(agent_id="a")), stop_reason="max_steps")
    with pytest.raises(IllegalTransition):
        lc.complete(done)


def test_second_first_token_changes_nothing(lc: Lifecycle) -> None:
    """ttft_ns is set once; a second first_token is a no-op with no event."""
    clock = lc.clock
    assert isinstance(clock, ManualClock)
    run = lc.start(lc.create(agent_id="a"))
    clock.advance(0.25)
    first = lc.first_token(run)
    clock.advance(1)
    second, event = lc.apply(first, "first_token")
    assert first.ttft_ns == 250_000_000
    assert second is first and event is None


def test_approval_denied_cancel_keeps_the_first_terminal_times(lc: Lifecycle) -> None:
    """completed(requires_approval) -> cancelled changes status and stop reason only."""
    clock = lc.clock
    assert isinstance(clock, ManualClock)
    waiting = lc.complete(lc.start(lc.create(agent_id="a")), stop_reason="requires_approval")
    clock.advance(30)
    denied, event = lc.apply(waiting, "cancel")
    assert event is not None and set(event.changes) == {"status", "stop_reason"}
    assert denied.status is RunStatus.CANCELLED and denied.stop_reason is StopReason.CANCELLED
    assert (denied.completed_at, denied.total_duration_ns) == (
        waiting.completed_at,
        waiting.total_duration_ns,
    )


def test_cancel_of_an_ordinary_completed_run_is_illegal(lc: Lifecycle) -> None:
    """Only a run waiting for approval can be cancelled after completing."""
    done = lc.complete(lc.start(lc.create(agent_id="a")))
    with pytest.raises(IllegalTransition, match="requires_approval"):
        lc.cancel(done)


def test_fail_keeps_metadata_and_records_the_error(lc: Lifecycle) -> None:
    """fail(error=...) sets metadata["error"] and keeps the other keys."""
    run = lc.fail(lc.create(agent_id="a", metadata={"user": "u1"}), error="boom")
    assert run.metadata == {"user": "u1", "error": "boom"}
    assert run.stop_reason is StopReason.ERROR


def test_wall_clock_stepping_back_never_yields_negative_or_early_times() -> None:
    """A wall clock stepped back an hour cannot put completed_at before created_at."""
    clock = ManualClock()
    lc = Lifecycle(clock=clock)
    run = lc.start(lc.create(agent_id="a"))
    clock.advance(2)
    clock.step_wall(-3600)
    done = lc.complete(run)
    assert done.completed_at is not None and done.completed_at >= done.created_at
    assert done.total_duration_ns == 2_000_000_000


@given(st.floats(min_value=-7200, max_value=7200))
def test_runs_from_another_process_use_wall_time_clamped_at_zero(step: float) -> None:
    """A run without a monotonic reading measures by wall time and never goes negative."""
    from run_lifecycle import from_json, to_json

    clock = ManualClock()
    lc = Lifecycle(clock=clock)
    run = from_json(to_json(lc.start(lc.create(agent_id="a"))), version=1)
    clock.step_wall(step)
    done = lc.complete(run)
    assert done.total_duration_ns == max(0, round(step * 1e6) * 1000)
    assert done.completed_at is not None and done.completed_at >= done.created_at


def test_unknown_trigger_is_illegal_with_a_list_of_triggers(lc: Lifecycle) -> None:
    """A trigger the machine does not know is refused and the message lists the real ones."""
    with pytest.raises(IllegalTransition, match="start, first_token"):
        lc.apply(lc.create(agent_id="a"), "finish")


def test_error_message_only_goes_with_fail(lc: Lifecycle) -> None:
    """complete(error=...) is a caller mistake reported on the error field."""
    run = lc.start(lc.create(agent_id="a"))
    with pytest.raises(InvalidRunInput) as info:
        lc.apply(run, "complete", error="x")
    assert info.value.field == "error"


def test_rejections_can_be_left_out_of_the_audit() -> None:
    """With record_rejections=False a refused trigger reaches no sink."""
    sink = ListSink()
    lc = Lifecycle(clock=ManualClock(), audit=sink, record_rejections=False)
    run = lc.create(agent_id="a")
    with pytest.raises(IllegalTransition):
        lc.complete(run)
    assert [type(r) for r in sink.records] == [RunCreated]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agent_id", ""),
        ("agent_id", 3),
        ("id", "run-xyz"),
        ("id", "agent-12345678"),
        ("background", "yes"),
        ("metadata", {"x": float("nan")}),
        ("metadata", {1: "x"}),
        ("metadata", {"x": object()}),
        ("conversation_id", 5),
        ("request_config", {"use_assistant_message": "no"}),
        ("request_config", {"unknown": True}),
        ("callback_url", "ftp://example.com/x"),
        ("callback_url", "https://user:pw@example.com/x"),
        ("callback_url", "http://169.254.169.254/latest/meta-data"),
        ("callback_url", "file:///etc/passwd"),
        ("callback_url", "https:///no-host"),
    ],
)
def test_create_rejects_bad_input_naming_the_field(lc: Lifecycle, field: str, value: Any) -> None:
    """Each bad creation argument raises InvalidRunInput naming that field."""
    kwargs: dict[str, Any] = {"agent_id": "agent-1", field: value}
    with pytest.raises(InvalidRunInput) as info:
        lc.create(**kwargs)
    assert info.value.field.split(".")[0].split("[")[0] == field


def test_create_copies_metadata_so_later_mutation_cannot_reach_the_run(lc: Lifecycle) -> None:
    """Mutating the dict given to create() leaves the run's metadata as it was."""
    given_meta: dict[str, Any] = {"nested": {"a": 1}}
    run = lc.create(agent_id="a", metadata=given_meta)
    given_meta["nested"]["a"] = 2
    assert run.metadata == {"nested": {"a": 1}}


def test_ids_are_run_uuid4_unless_given(lc: Lifecycle) -> None:
    """Generated ids are run- plus a UUID4; a valid caller id is kept."""
    import uuid

    run = lc.create(agent_id="a")
    assert run.id.startswith("run-") and uuid.UUID(run.id[4:]).version == 4
    mine = "run-0123abcd-0000-4000-8000-000000000000"
    assert lc.create(agent_id="a", id=mine).id == mine


def test_created_at_is_aware_utc() -> None:
    """created_at from the system clock is timezone-aware UTC."""
    run = Lifecycle().create(agent_id="a")
    assert run.created_at.utcoffset() is not None
    assert run.created_at.tzinfo is UTC


def test_stop_reason_run_status_follows_letta() -> None:
    """StopReason.run_status maps every reason as Letta's StopReasonType.run_status does."""
    completed = {"end_turn", "max_steps", "tool_rule", "requires_approval"}
    for reason in StopReason:
        expected = (
            "completed"
            if reason.value in completed
            else "cancelled"
            if reason is StopReason.CANCELLED
            else "failed"
        )
        assert reason.run_status.value == expected
    assert len(StopReason) == 13 and len(RunStatus) == 5
