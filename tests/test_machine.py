"""The machine: its graph matches DESIGN §3, and the memoised decisions are the live machine's."""

from __future__ import annotations

import pytest

from run_lifecycle import RunStatus, StopReason
from run_lifecycle._machine import (
    DEFINITION,
    MACHINE,
    STOP_REASON_TRIGGERS,
    TRIGGERS,
    build_machine,
    decide,
    decision_space,
    live_decide,
)

TERMINAL = {"completed", "failed", "cancelled"}


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
