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
from ._run import TERMINAL_STATUSES, Run, RunStatus, StopReason, evolve_run
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
def _decide_known(
    status: str, current_stop_reason: StopReason | None, trigger: str, requested: StopReason | None
) -> Decision:
    return live_decide(MACHINE, status, current_stop_reason, trigger, requested)


_UNKNOWN_TRIGGER = Decision("illegal")


def decide(
    status: str, current_stop_reason: StopReason | None, trigger: str, requested: StopReason | None
) -> Decision:
    """``live_decide`` on the module machine, memoised (the key space is finite).

    Only the machine's own triggers and statuses are memoised: a caller's
    arbitrary string must not grow the cache of a long-running process.
    """
    if trigger not in MACHINE.events or status not in MACHINE.states:
        return _UNKNOWN_TRIGGER
    return _decide_known(status, current_stop_reason, trigger, requested)


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


@attrs.frozen
class _Plan:
    """What ``apply_trigger`` does for one (status, stop reason, trigger, requested reason).

    ``kind`` is ``"no_stop_reason"`` (the trigger takes none), ``"noop"`` (a
    retry of the terminal transition), ``"reject"`` (``decision`` says why),
    or, for an accepted trigger, ``"internal"`` (first_token), ``"move"`` (to a
    non-terminal status), ``"terminal"`` (first terminal entry) or
    ``"approval"`` (completed -> cancelled). ``requested`` is the stop reason
    after the trigger's default is applied; the ``*_value`` fields are the
    event's wire strings, computed once.
    """

    kind: str
    requested: StopReason | None
    decision: Decision | None = None
    dest: RunStatus | None = None
    from_value: str = ""
    dest_value: str = ""
    reason_value: str | None = None


def _make_plan(
    status: RunStatus, current: StopReason | None, trigger: str, requested: StopReason | None
) -> _Plan:
    if requested is not None and trigger not in STOP_REASON_TRIGGERS:
        return _Plan("no_stop_reason", requested)
    if requested is None and trigger in DEFAULT_STOP_REASON:
        requested = DEFAULT_STOP_REASON[trigger]
    if status in TERMINAL_STATUSES and trigger in ENTERED_BY[status] and requested is current:
        return _Plan("noop", requested)  # a retry of the transition that ended the run
    decision = decide(status.value, current, trigger, requested)
    if decision.outcome != "accept":
        return _Plan("reject", requested, decision)
    dest = RunStatus(decision.dest or status.value)
    if dest is status:
        kind = "internal"
    elif dest not in TERMINAL_STATUSES:
        kind = "move"
    elif status in TERMINAL_STATUSES:
        kind = "approval"
    else:
        kind = "terminal"
    terminal = dest in TERMINAL_STATUSES
    return _Plan(
        kind,
        requested,
        decision,
        dest,
        status.value,
        dest.value,
        requested.value if terminal and requested is not None else None,
    )


#: The order ``apply_trigger`` passes ``TransitionEvent``'s fields in; checked once, here.
_EVENT_ARGS = (
    "run_id",
    "agent_id",
    "seq",
    "trigger",
    "from_status",
    "to_status",
    "stop_reason",
    "at",
    "changes",
)
if tuple(f.name for f in attrs.fields(TransitionEvent) if f.init) != _EVENT_ARGS:
    raise TypeError(
        f"TransitionEvent's init arguments are no longer {_EVENT_ARGS}: update apply_trigger"
    )


_PlanKey = tuple[RunStatus, StopReason | None, str, StopReason | None]
#: Plans by key, for the machine's own triggers only: at most 5 x 14 x 5 x 14 entries, ever.
_PLANS: dict[_PlanKey, _Plan] = {}


def _plan_for(key: _PlanKey) -> _Plan:
    plan = _PLANS.get(key)
    if plan is None:
        plan = _make_plan(*key)
        if key[2] in MACHINE.events:  # an unknown trigger (any string) must not grow the table
            _PLANS[key] = plan
    return plan


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

    What to do is decided once per (status, stop reason, trigger, requested
    reason) from ``decide`` and memoised (``_plan_for``); what remains per call
    is the record update and its event.
    """
    if stop_reason is None or isinstance(stop_reason, StopReason):
        requested: StopReason | None = stop_reason
    else:
        requested = _coerce_stop_reason(run, trigger, stop_reason)
    key = (run.status, run.stop_reason, trigger, requested)
    plan = _PLANS.get(key) or _plan_for(key)
    kind = plan.kind
    if kind == "no_stop_reason":
        assert requested is not None
        raise InvalidStopReason(
            run.id, run.status.value, trigger, requested.value, f"{trigger} takes no stop reason"
        )
    if error is not None and (trigger != "fail" or not isinstance(error, str)):
        raise InvalidRunInput(
            "error", f"only fail takes an error message, a string; {trigger} got {error!r}"
        )
    if kind == "noop":
        return run, None
    if kind == "reject":
        assert plan.decision is not None
        raise _reject(run, trigger, plan.requested, plan.decision)
    dest = plan.dest
    requested = plan.requested
    created_at = run.created_at
    at = now if now >= created_at else created_at
    version = run.version + 1
    changes: dict[str, Any]
    if kind == "internal":  # first_token
        if run.ttft_ns is not None:
            return run, None
        ttft = elapsed_ns(run, now, monotonic_ns)
        changes = {"ttft_ns": ttft}
        new = evolve_run(run, ttft_ns=ttft, version=version)
    elif kind == "move":
        changes = {"status": plan.dest_value}
        new = evolve_run(run, status=dest, version=version)
    elif kind == "approval":  # approval denied: the first terminal entry keeps its times
        changes = {"status": plan.dest_value, "stop_reason": plan.reason_value}
        new = evolve_run(run, status=dest, stop_reason=requested, version=version)
    else:
        total = elapsed_ns(run, now, monotonic_ns)
        ttft_ns = run.ttft_ns
        if ttft_ns is not None and total < ttft_ns:
            total = ttft_ns
        changes = {
            "status": plan.dest_value,
            "stop_reason": plan.reason_value,
            "completed_at": format_datetime(at),
            "total_duration_ns": total,
        }
        if error is None:
            new = evolve_run(
                run,
                status=dest,
                stop_reason=requested,
                completed_at=at,
                total_duration_ns=total,
                version=version,
            )
        else:
            metadata = dict(run.metadata or {})
            metadata["error"] = error
            changes["metadata"] = json_safe_copy(metadata)
            new = evolve_run(
                run,
                status=dest,
                stop_reason=requested,
                completed_at=at,
                total_duration_ns=total,
                version=version,
                metadata=metadata,
            )
    # Positional (a third cheaper than by keyword): _EVENT_ARGS pins the order at import.
    event = TransitionEvent(
        run.id,
        run.agent_id,
        version,
        trigger,
        plan.from_value,
        plan.dest_value,
        plan.reason_value,
        at,
        changes,
    )
    return new, event
