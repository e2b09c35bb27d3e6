"""The machine: its graph matches DESIGN §3, and the memoised hot path answers as the live machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from run_lifecycle import IllegalTransition, InvalidStopReason, Run, RunStatus, StopReason
from run_lifecycle._machine import (
    _PLANS,
    DEFAULT_STOP_REASON,
    DEFINITION,
    ENTERED_BY,
    MACHINE,
    STOP_REASON_TRIGGERS,
    TRIGGERS,
    _decide_known,
    apply_trigger,
    build_machine,
    decide,
    decision_space,
    live_decide,
)

TERMINAL = {"completed", "failed", "cancelled"}
START = datetime(2026, 1, 1, tzinfo=UTC)


def design_oracle(
    status: str, current: StopReason | None, trigger: str, requested: StopReason | None
) -> str:
    """DESIGN §3 written out independently of the code, as the spec's reader would."""
    target = {"complete": "completed", "fail": "failed", "cancel": "cancelled"}
    if trigger == "start":
        return "accept" if status == "created" else "illegal"
    if trigger == "first_token":
        return "accept" if status == "running" else "illegal"
    sources = {
        "complete": {"running"},
        "fail": {"created", "running"},
        "cancel": {"created", "running", "completed"},
    }[trigger]
    if status not in sources:
        return "illegal"
    if requested is None or requested.run_status.value != target[trigger]:
        return "invalid_stop_reason"
    if status == "completed" and current is not StopReason.REQUIRES_APPROVAL:
        return "illegal"
    return "accept"


def test_machine_has_no_auto_transitions_and_no_models() -> None:
    """The definition turns auto transitions off, and the shared machine holds no model."""
    assert DEFINITION["auto_transitions"] is False
    assert not any(name.startswith("to_") for name in MACHINE.events)
    assert MACHINE.models == []


def test_triggers_are_the_five_of_the_contract() -> None:
    """The machine's triggers are exactly start, first_token, complete, fail, cancel."""
    assert set(TRIGGERS) == {"start", "first_token", "complete", "fail", "cancel"}
    assert {"complete", "fail", "cancel"} == STOP_REASON_TRIGGERS


def test_memoised_decisions_agree_with_a_fresh_machine_everywhere() -> None:
    """For every state, trigger and stop reason the fast path answers as a new live machine does."""
    fresh = build_machine()
    checked = 0
    for status, current, trigger, requested in decision_space():
        assert decide(status, current, trigger, requested) == live_decide(
            fresh, status, current, trigger, requested
        ), (status, current, trigger, requested)
        checked += 1
    assert checked > 1500


@pytest.mark.parametrize("status", [s.value for s in RunStatus])
def test_machine_decisions_match_the_design_contract(status: str) -> None:
    """The live machine accepts exactly the edges DESIGN §3 lists, with its guards."""
    for st, current, trigger, requested in decision_space():
        if st != status:
            continue
        if trigger not in STOP_REASON_TRIGGERS and requested is not None:
            continue  # apply_trigger refuses those before asking the machine
        if trigger in STOP_REASON_TRIGGERS and requested is None:
            continue  # apply_trigger fills the default first
        got = decide(status, current, trigger, requested).outcome
        assert got == design_oracle(status, current, trigger, requested), (
            status,
            current,
            trigger,
            requested,
        )


def test_terminal_states_have_no_way_out_but_the_approval_cancel() -> None:
    """Only completed has an outgoing edge (cancel, guarded); failed and cancelled have none."""
    for trigger, event in MACHINE.events.items():
        for source in event.transitions:
            if source in TERMINAL:
                assert (source, trigger) == ("completed", "cancel")


def _run_in(status: str, current: StopReason | None) -> Run:
    """A consistent record in ``status`` with stop reason ``current``."""
    base = Run(id="run-0123abcd-0000-4000-8000-000000000000", agent_id="a", created_at=START)
    if status in TERMINAL:
        return attrs.evolve(
            base,
            status=RunStatus(status),
            stop_reason=current,
            completed_at=START,
            total_duration_ns=0,
            version=2,
        )
    return attrs.evolve(base, status=RunStatus(status), version=int(status == "running"))


def test_apply_trigger_agrees_with_a_fresh_machine_on_every_combination() -> None:
    """The hot path (memoised plans) moves, refuses or no-ops exactly as a new live machine says."""
    fresh = build_machine()
    checked = 0
    for status, current, trigger, requested in decision_space():
        if status in TERMINAL and (current is None or current.run_status.value != status):
            continue  # no consistent record has this status with this stop reason
        run = _run_in(status, current)
        effective = requested if requested is not None else DEFAULT_STOP_REASON.get(trigger)
        if requested is not None and trigger not in STOP_REASON_TRIGGERS:
            expected = "invalid_stop_reason"
        elif (
            status in TERMINAL and trigger in ENTERED_BY[RunStatus(status)] and effective is current
        ):
            expected = "noop"
        else:
            decision = live_decide(fresh, status, current, trigger, effective)
            expected = decision.outcome
        try:
            new, event = apply_trigger(
                run, trigger, now=START, monotonic_ns=0, stop_reason=requested
            )
        except InvalidStopReason:
            outcome = "invalid_stop_reason"
        except IllegalTransition:
            outcome = "illegal"
        else:
            outcome = "noop" if event is None else "accept"
            if event is None:
                assert new is run
            else:
                assert new.status.value == event.to_status == decision.dest
                assert new.version == event.seq == run.version + 1
        assert outcome == expected, (status, current, trigger, requested)
        checked += 1
    assert checked > 300


def test_unknown_triggers_do_not_grow_the_decision_tables() -> None:
    """A caller's arbitrary trigger names are refused without being memoised."""
    run = Run(id="run-0123abcd", agent_id="a", created_at=datetime.now().astimezone())
    now = run.created_at + timedelta(seconds=1)
    sizes = len(_PLANS), _decide_known.cache_info().currsize
    for index in range(200):
        with pytest.raises(IllegalTransition):
            apply_trigger(run, f"trigger-{index}", now=now, monotonic_ns=0)
    assert (len(_PLANS), _decide_known.cache_info().currsize) == sizes
