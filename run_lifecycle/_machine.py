"""The lifecycle graph, defined once with ``transitions``, and the pure ``apply_trigger``.

``DEFINITION`` is the single source of truth: states, transitions and guard
conditions. Everything else derives from it: legality, the idempotent-repeat
rule, the diagrams, the docs, and audit replay.

How the engine uses ``transitions``: one module-level ``Machine(model=None)``
is built from ``DEFINITION`` (no per-run machine, no registered models, no
auto transitions). A decision "may a run in status S (stop reason R) take
trigger T with stop reason R'?" is answered by firing T through that machine
on a throwaway subject, so its own dispatch and condition evaluation decide.
The key space is finite (5 statuses x 14 stop reasons x 5 triggers x 14 stop
reasons), so each answer is memoised the first time it is asked: the hot path
is a dictionary lookup, the answers are the machine's, and the cache can never
grow past a few thousand entries. ``tests/test_machine.py`` checks the
memoised answers against a freshly built machine for every combination.

``apply_trigger`` is the functional core: a record and the time in, a new
record and its event out, or a typed error with nothing changed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import attrs
from transitions import Machine
from transitions.core import EventData

from ._events import TransitionEvent
from ._run import TERMINAL_STATUSES, Run, RunStatus, StopReason
from ._validate import json_safe_copy
from .exceptions import IllegalTransition, InvalidRunInput, InvalidStopReason, TransitionError
from .serialization import format_datetime

__all__ = [
    "DEFAULT_STOP_REASON",
    "DEFINITION",
    "GUARD_DESCRIPTIONS",
    "MACHINE",
    "TRIGGERS",
    "Decision",
    "apply_trigger",
    "build_machine",
    "decide",
    "live_decide",
]

#: The guard that ties a stop reason to the status a transition enters.
STOP_REASON_GUARD = "stop_reason_fits"
#: The guard of the approval-denied cancel (completed -> cancelled).
APPROVAL_GUARD = "approval_pending"

DEFINITION: dict[str, Any] = {
    "states": [status.value for status in RunStatus],
    "initial": RunStatus.CREATED.value,
    "transitions": [
        {"trigger": "start", "source": "created", "dest": "running"},
        # An internal transition: the run stays running; the effect sets ttft_ns once.
        {"trigger": "first_token", "source": "running", "dest": None},
        {
            "trigger": "complete",
            "source": "running",
            "dest": "completed",
            "conditions": [STOP_REASON_GUARD],
        },
        {
            "trigger": "fail",
            "source": ["created", "running"],
            "dest": "failed",
            "conditions": [STOP_REASON_GUARD],
        },
        {
            "trigger": "cancel",
            "source": ["created", "running"],
            "dest": "cancelled",
            "conditions": [STOP_REASON_GUARD],
        },
        # Approval denied: a run that stopped to ask for approval is cancelled after all.
        {
            "trigger": "cancel",
            "source": "completed",
            "dest": "cancelled",
            "conditions": [STOP_REASON_GUARD, APPROVAL_GUARD],
        },
    ],
    "auto_transitions": False,
    "send_event": True,
    "ignore_invalid_triggers": False,
}

#: What each guard means, in words for error messages and diagrams.
GUARD_DESCRIPTIONS: dict[str, str] = {
    STOP_REASON_GUARD: "the stop reason must belong to the status entered",
    APPROVAL_GUARD: "only while the stop reason is requires_approval (approval denied)",
}

#: The stop reason a terminal trigger uses when the caller gives none (Letta's defaults).
DEFAULT_STOP_REASON: dict[str, StopReason] = {
    "complete": StopReason.END_TURN,
    "fail": StopReason.ERROR,
    "cancel": StopReason.CANCELLED,
}


class _Subject:
    """The object the machine moves while deciding; never a ``Run`` (records are frozen)."""

    __slots__ = ("state", "stop_reason")

    def __init__(self, state: str, stop_reason: StopReason | None) -> None:
        self.state = state
        self.stop_reason = stop_reason

    def stop_reason_fits(self, event: EventData) -> bool:
        requested = event.kwargs.get("stop_reason")
        dest = event.transition.dest if event.transition is not None else None
        return isinstance(requested, StopReason) and requested.run_status.value == dest

    def approval_pending(self, event: EventData) -> bool:
        return self.stop_reason is StopReason.REQUIRES_APPROVAL


def build_machine() -> Machine:
    """A fresh machine from ``DEFINITION`` with no model attached (fire with ``events[t].trigger``)."""
    return Machine(model=None, **DEFINITION)


def _quiet_transitions() -> None:
    # transitions logs every trigger at INFO; a library must not be that chatty by default.
    for name in ("transitions", "transitions.core"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


_quiet_transitions()
MACHINE: Machine = build_machine()

#: Every trigger the machine knows, in definition order.
TRIGGERS: tuple[str, ...] = tuple(MACHINE.events)


def _guards_of(machine: Machine, trigger: str) -> set[str]:
    names: set[str] = set()
    for transitions in machine.events[trigger].transitions.values():
        for transition in transitions:
            names.update(str(condition.func) for condition in transition.conditions)
    return names


#: Triggers whose transitions are guarded by the stop reason: they take one.
STOP_REASON_TRIGGERS: frozenset[str] = frozenset(
    trigger for trigger in TRIGGERS if STOP_REASON_GUARD in _guards_of(MACHINE, trigger)
)

#: For each terminal status, the triggers whose transitions enter it.
ENTERED_BY: dict[RunStatus, frozenset[str]] = {
    status: frozenset(
        trigger
        for trigger, event in MACHINE.events.items()
        for transitions in event.transitions.values()
        for transition in transitions
        if transition.dest == status.value
    )
    for status in TERMINAL_STATUSES
}


@attrs.frozen
class Decision:
    """The machine's answer for one (status, stop reason, trigger, requested reason).

    ``outcome`` is ``"accept"`` (``dest`` is the status after), ``"illegal"``
    (no transition from this status, or a state guard failed: ``failed_guards``)
    or ``"invalid_stop_reason"``.
    """

    outcome: str
    dest: str | None = None
    failed_guards: tuple[str, ...] = ()


def live_decide(
    machine: Machine,
    status: str,
    current_stop_reason: StopReason | None,
    trigger: str,
    requested: StopReason | None,
) -> Decision:
    """Ask ``machine`` itself, by firing ``trigger`` on a throwaway subject."""
    event = machine.events.get(trigger)
    if event is None or status not in event.transitions:
        return Decision("illegal")
    subject = _Subject(status, current_stop_reason)
    if event.trigger(subject, stop_reason=requested):
        return Decision("accept", dest=subject.state)
    failed: list[str] = []
    for transition in event.transitions[status]:
        data = EventData(
            machine.get_state(status), event, machine, subject, (), {"stop_reason": requested}
        )
        data.transition = transition
        failed.extend(str(c.func) for c in transition.conditions if not c.check(data))
    if STOP_REASON_GUARD in failed:
        return Decision("invalid_stop_reason", failed_guards=tuple(dict.fromkeys(failed)))
    return Decision("illegal", failed_guards=tuple(dict.fromkeys(failed)))


@functools.cache
def decide(
    status: str, current_stop_reason: StopReason | None, trigger: str, requested: StopReason | None
) -> Decision:
    """``live_decide`` on the module machine, memoised (the key space is finite)."""
    return live_decide(MACHINE, status, current_stop_reason, trigger, requested)


def decision_space() -> Iterator[tuple[str, StopReason | None, str, StopReason | None]]:
    """Every (status, current stop reason, trigger, requested stop reason) worth asking about."""
    reasons: list[StopReason | None] = [None, *StopReason]
    for status in RunStatus:
        currents = reasons if status in TERMINAL_STATUSES else [None]
        for current in currents:
            for trigger in TRIGGERS:
                for requested in reasons:
                    yield status.value, current, trigger, requested


def _ns_between(start: datetime, end: datetime) -> int:
    delta: timedelta = end - start
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def elapsed_ns(run: Run, now: datetime, monotonic_ns: int) -> int:
    """Time since the run's creation: monotonic when this process saw it, else wall; never < 0."""
    if run.created_monotonic_ns is not None:
        elapsed = monotonic_ns - run.created_monotonic_ns
    else:
        elapsed = _ns_between(run.created_at, now)
    return elapsed if elapsed > 0 else 0


def _coerce_stop_reason(run: Run, trigger: str, value: object) -> StopReason | None:
    if value is None or isinstance(value, StopReason):
        return value
    if isinstance(value, str):
        try:
            return StopReason(value)
        except ValueError:
            pass
    raise InvalidStopReason(
        run.id,
        run.status.value,
        trigger,
        str(value),
        f"{value!r} is not a stop reason; use one of: {', '.join(r.value for r in StopReason)}",
    )


def _reject(
    run: Run, trigger: str, requested: StopReason | None, decision: Decision
) -> TransitionError:
    status = run.status.value
    if trigger not in MACHINE.events:
        return IllegalTransition(
            run.id,
            status,
            trigger,
            f"unknown trigger {trigger!r}; the triggers are: {', '.join(TRIGGERS)}",
        )
    if decision.outcome == "invalid_stop_reason":
        assert requested is not None
        fitting = [
            r.value
            for r in StopReason
            if decide(status, run.stop_reason, trigger, r).outcome == "accept"
        ]
        return InvalidStopReason(
            run.id,
            status,
            trigger,
            requested.value,
            f"cannot {trigger} run {run.id} with stop reason {requested.value!r}: it belongs to a"
            f" {requested.run_status.value} run; {trigger} takes {', '.join(fitting) or 'none here'}",
        )
    where = f"it is {status}"
    if run.stop_reason is not None:
        where += f" (stop reason {run.stop_reason.value})"
    if decision.failed_guards:
        hint = "; ".join(GUARD_DESCRIPTIONS.get(g, g) for g in decision.failed_guards)
        return IllegalTransition(
            run.id, status, trigger, f"cannot {trigger} run {run.id}: {where}; {hint}"
        )
    allowed = [t for t in TRIGGERS if status in MACHINE.events[t].transitions]
    if run.status in TERMINAL_STATUSES:
        hint = "it has already ended and keeps its outcome"
        if allowed:
            hint += f" (only {', '.join(allowed)} may still apply, under its guard)"
    else:
        hint = f"from {status} only {', '.join(allowed)} may apply"
    return IllegalTransition(
        run.id, status, trigger, f"cannot {trigger} run {run.id}: {where}; {hint}"
    )


def apply_trigger(
    run: Run,
    trigger: str,
    *,
    now: datetime,
    monotonic_ns: int,
    stop_reason: StopReason | str | None = None,
    error: str | None = None,
) -> tuple[Run, TransitionEvent | None]:
    """Apply ``trigger`` to ``run`` as of ``now``: pure, nothing is mutated.

    Returns the new record and its event, or ``(run, None)`` for an idempotent
    no-op (a repeated terminal transition, a second ``first_token``). Raises
    ``IllegalTransition`` or ``InvalidStopReason`` and changes nothing otherwise.
    """
    requested = _coerce_stop_reason(run, trigger, stop_reason)
    if requested is not None and trigger not in STOP_REASON_TRIGGERS:
        raise InvalidStopReason(
            run.id, run.status.value, trigger, requested.value, f"{trigger} takes no stop reason"
        )
    if error is not None and (trigger != "fail" or not isinstance(error, str)):
        raise InvalidRunInput(
            "error", f"only fail takes an error message, a string; {trigger} got {error!r}"
        )
    if requested is None and trigger in DEFAULT_STOP_REASON:
        requested = DEFAULT_STOP_REASON[trigger]
    status = run.status
    if (
        status in TERMINAL_STATUSES
        and trigger in ENTERED_BY[status]
        and requested is run.stop_reason
    ):
        return run, None  # a retry of the transition that ended the run
    decision = decide(status.value, run.stop_reason, trigger, requested)
    if decision.outcome != "accept":
        raise _reject(run, trigger, requested, decision)
    dest = RunStatus(decision.dest or status.value)
    at = now if now >= run.created_at else run.created_at
    changes: dict[str, Any]
    if dest is status:  # an internal transition: first_token
        if run.ttft_ns is not None:
            return run, None
        ttft = elapsed_ns(run, now, monotonic_ns)
        changes = {"ttft_ns": ttft}
        new = attrs.evolve(run, ttft_ns=ttft, version=run.version + 1)
    elif dest not in TERMINAL_STATUSES:
        changes = {"status": dest.value}
        new = attrs.evolve(run, status=dest, version=run.version + 1)
    elif status in TERMINAL_STATUSES:  # approval denied: the first terminal entry keeps its times
        assert requested is not None
        changes = {"status": dest.value, "stop_reason": requested.value}
        new = attrs.evolve(run, status=dest, stop_reason=requested, version=run.version + 1)
    else:
        assert requested is not None
        total = elapsed_ns(run, now, monotonic_ns)
        if run.ttft_ns is not None and total < run.ttft_ns:
            total = run.ttft_ns
        changes = {
            "status": dest.value,
            "stop_reason": requested.value,
            "completed_at": format_datetime(at),
            "total_duration_ns": total,
        }
        fields: dict[str, Any] = {}
        if error is not None:
            metadata = dict(run.metadata or {})
            metadata["error"] = error
            fields["metadata"] = metadata
            changes["metadata"] = json_safe_copy(metadata)
        new = attrs.evolve(
            run,
            status=dest,
            stop_reason=requested,
            completed_at=at,
            total_duration_ns=total,
            version=run.version + 1,
            **fields,
        )
    event = TransitionEvent(
        run_id=run.id,
        agent_id=run.agent_id,
        seq=new.version,
        trigger=trigger,
        from_status=status.value,
        to_status=dest.value,
        stop_reason=new.stop_reason.value
        if dest in TERMINAL_STATUSES and new.stop_reason
        else None,
        at=at,
        changes=changes,
    )
    return new, event
