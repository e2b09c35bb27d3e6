"""Engine overhead: one full in-memory lifecycle through ``Lifecycle`` against the alternatives.

A lifecycle is create -> start -> first_token -> complete(end_turn), with its
four records (``RunCreated`` and three ``TransitionEvent``) handed to an audit
sink. Every implementation reads the same clock (``SystemClock``) the same
number of times, mints the same kind of id (``run-`` + UUID4), ends with an
equal ``Run`` and writes equal records to its sink (``tests/test_benchmarks.py``
checks that on a ``ManualClock``), so the times compare like with like:

- ``table``: a hand-written dict-table state machine doing the record updates
  with ``attrs.evolve`` on the same ``Run`` class: the limit;
- ``machine_per_run``: ``transitions`` the naive way, a ``Machine`` built per
  run around a mutable model (the same definition, guards as conditions);
- ``statemachine``: ``python-statemachine``, one machine instance per run.

The three baselines share ``_advance`` (the record update and event), so the
only thing that differs between them is how they decide.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
from statemachine import State, StateMachine
from transitions import Machine

from run_lifecycle import (
    AuditRecord,
    AuditSink,
    Clock,
    Lifecycle,
    Run,
    RunCreated,
    RunStatus,
    StopReason,
    SystemClock,
    TransitionEvent,
)
from run_lifecycle._machine import DEFINITION

from ._harness import Report, paired, ratio_figure

__all__ = ["IMPLEMENTATIONS", "OneLifecycle", "run"]

AGENT_ID = "agent-bench"

#: One lifecycle from creation to completion; returns the final run. ``run_id`` None mints one.
OneLifecycle = Callable[[str | None], Run]
#: Builds a ``OneLifecycle`` around a clock and a sink (built once, used for many runs).
Factory = Callable[[Clock, AuditSink], OneLifecycle]


class Discard:
    """An audit sink that keeps nothing: the cost of building records stays, storage goes."""

    __slots__ = ()

    def write(self, record: AuditRecord) -> None:
        pass


class Collect:
    """An audit sink that keeps every record, for checking the implementations agree."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)


# -- the subject --------------------------------------------------------------------------------


def lifecycle_factory(clock: Clock, sink: AuditSink) -> OneLifecycle:
    """The library: one ``Lifecycle`` for every run."""
    lc = Lifecycle(clock, audit=sink)

    def one(run_id: str | None = None) -> Run:
        run = lc.create(agent_id=AGENT_ID, id=run_id)
        run = lc.start(run)
        run = lc.first_token(run)
        return lc.complete(run)

    return one


# -- what the baselines share -----------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _wire(run: Run) -> dict[str, Any]:
    """The 17 wire fields of a freshly created run, by hand (what ``to_json`` gives)."""
    return {
        "id": run.id,
        "agent_id": run.agent_id,
        "created_at": _iso(run.created_at),
        "status": run.status.value,
        "completed_at": None,
        "conversation_id": run.conversation_id,
        "base_template_id": run.base_template_id,
        "background": run.background,
        "metadata": None,
        "request_config": None,
        "stop_reason": None,
        "callback_url": run.callback_url,
        "callback_sent_at": None,
        "callback_status_code": None,
        "callback_error": None,
        "ttft_ns": None,
        "total_duration_ns": None,
    }


def _create(clock: Clock, sink: AuditSink, run_id: str | None) -> Run:
    run = Run(
        id=f"run-{uuid.uuid4()}" if run_id is None else run_id,
        agent_id=AGENT_ID,
        created_at=clock.now(),
        created_monotonic_ns=clock.monotonic_ns(),
    )
    sink.write(RunCreated(run_id=run.id, agent_id=run.agent_id, at=run.created_at, run=_wire(run)))
    return run


def _advance(
    run: Run,
    trigger: str,
    dest: RunStatus,
    reason: StopReason | None,
    now: datetime,
    mono: int,
    sink: AuditSink,
) -> Run:
    """The record update and its event, once a machine has said ``trigger`` leads to ``dest``."""
    at = now if now >= run.created_at else run.created_at
    assert run.created_monotonic_ns is not None
    elapsed = max(0, mono - run.created_monotonic_ns)
    changes: dict[str, Any]
    if dest is run.status:
        changes = {"ttft_ns": elapsed}
        new = attrs.evolve(run, ttft_ns=elapsed, version=run.version + 1)
    elif reason is None:
        changes = {"status": dest.value}
        new = attrs.evolve(run, status=dest, version=run.version + 1)
    else:
        total = max(elapsed, run.ttft_ns or 0)
        changes = {
            "status": dest.value,
            "stop_reason": reason.value,
            "completed_at": _iso(at),
            "total_duration_ns": total,
        }
        new = attrs.evolve(
            run,
            status=dest,
            stop_reason=reason,
            completed_at=at,
            total_duration_ns=total,
            version=run.version + 1,
        )
    sink.write(
        TransitionEvent(
            run_id=run.id,
            agent_id=run.agent_id,
            seq=new.version,
            trigger=trigger,
            from_status=run.status.value,
            to_status=dest.value,
            stop_reason=None if reason is None else reason.value,
            at=at,
            changes=changes,
        )
    )
    return new


# -- (a) the hand-written dict table: the limit -------------------------------------------------

_C, _R = RunStatus.CREATED, RunStatus.RUNNING
_DONE, _FAILED, _CANCELLED = RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED
_TABLE: dict[tuple[RunStatus, str], RunStatus] = {
    (_C, "start"): _R,
    (_R, "first_token"): _R,
    (_R, "complete"): _DONE,
    (_C, "fail"): _FAILED,
    (_R, "fail"): _FAILED,
    (_C, "cancel"): _CANCELLED,
    (_R, "cancel"): _CANCELLED,
    (_DONE, "cancel"): _CANCELLED,
}


def table_factory(clock: Clock, sink: AuditSink) -> OneLifecycle:
    """A dict lookup decides; the stop reason must belong to the status entered."""

    def step(run: Run, trigger: str, reason: StopReason | None = None) -> Run:
        dest = _TABLE.get((run.status, trigger))
        if dest is None or (reason is not None and reason.run_status is not dest):
            raise ValueError(f"cannot {trigger} a {run.status.value} run")
        return _advance(run, trigger, dest, reason, clock.now(), clock.monotonic_ns(), sink)

    def one(run_id: str | None = None) -> Run:
        run = _create(clock, sink, run_id)
        run = step(run, "start")
        run = step(run, "first_token")
        return step(run, "complete", StopReason.END_TURN)

    return one


# -- (b) transitions, a Machine per run -------------------------------------------------------


class _Model:
    """The mutable object a per-run ``Machine`` moves (a frozen ``Run`` cannot be one)."""

    def __init__(self) -> None:
        self.state = "created"
        self.stop_reason: StopReason | None = None

    def stop_reason_fits(self, event: Any) -> bool:
        requested = event.kwargs.get("stop_reason")
        return isinstance(requested, StopReason) and requested.run_status.value == (
            event.transition.dest
        )

    def approval_pending(self, event: Any) -> bool:
        return self.stop_reason is StopReason.REQUIRES_APPROVAL


def machine_per_run_factory(clock: Clock, sink: AuditSink) -> OneLifecycle:
    """``transitions`` the naive way: build a ``Machine`` for each run, fire its model's methods."""

    def step(run: Run, model: Any, trigger: str, reason: StopReason | None = None) -> Run:
        fired = getattr(model, trigger)(stop_reason=reason) if reason else getattr(model, trigger)()
        if not fired:
            raise ValueError(f"cannot {trigger} a {run.status.value} run")
        return _advance(
            run,
            trigger,
            RunStatus(model.state),
            reason,
            clock.now(),
            clock.monotonic_ns(),
            sink,
        )

    def one(run_id: str | None = None) -> Run:
        run = _create(clock, sink, run_id)
        model = _Model()
        Machine(model=model, **DEFINITION)
        run = step(run, model, "start")
        run = step(run, model, "first_token")
        return step(run, model, "complete", StopReason.END_TURN)

    return one


# -- (c) python-statemachine, a machine per run -----------------------------------------------


class _RunMachine(StateMachine):
    """The same graph in python-statemachine's terms."""

    created = State(initial=True)
    running = State()
    completed = State()
    failed = State(final=True)
    cancelled = State(final=True)

    start = created.to(running)
    first_token = running.to.itself(internal=True)  # type: ignore[no-untyped-call]
    complete = running.to(completed, cond="stop_reason_fits")
    fail = created.to(failed, cond="stop_reason_fits") | running.to(failed, cond="stop_reason_fits")
    cancel = (
        created.to(cancelled, cond="stop_reason_fits")
        | running.to(cancelled, cond="stop_reason_fits")
        | completed.to(cancelled, cond=["stop_reason_fits", "approval_pending"])
    )

    def __init__(self) -> None:
        self.stop_reason: StopReason | None = None
        super().__init__()

    def stop_reason_fits(self, target: State, stop_reason: StopReason | None = None) -> bool:
        return stop_reason is not None and stop_reason.run_status.value == target.id

    def approval_pending(self) -> bool:
        return self.stop_reason is StopReason.REQUIRES_APPROVAL


def statemachine_factory(clock: Clock, sink: AuditSink) -> OneLifecycle:
    """python-statemachine: a ``StateMachine`` instance per run, events sent by name."""

    def step(run: Run, sm: _RunMachine, trigger: str, reason: StopReason | None = None) -> Run:
        sm.send(trigger, stop_reason=reason)
        return _advance(
            run,
            trigger,
            RunStatus(sm.current_state_value),
            reason,
            clock.now(),
            clock.monotonic_ns(),
            sink,
        )

    def one(run_id: str | None = None) -> Run:
        run = _create(clock, sink, run_id)
        sm = _RunMachine()
        run = step(run, sm, "start")
        run = step(run, sm, "first_token")
        return step(run, sm, "complete", StopReason.END_TURN)

    return one


#: Every implementation by name; ``lifecycle`` is the subject, the others its baselines.
IMPLEMENTATIONS: dict[str, Factory] = {
    "lifecycle": lifecycle_factory,
    "table": table_factory,
    "machine_per_run": machine_per_run_factory,
    "statemachine": statemachine_factory,
}

#: (baseline, what the row says, the target: Lifecycle's speed as a multiple of the baseline's).
_COMPARISONS: tuple[tuple[str, str, float], ...] = (
    ("table", "Lifecycle vs hand-written dict table (the limit)", 0.5),
    ("machine_per_run", "Lifecycle vs transitions, a Machine per run", 5.0),
    ("statemachine", "Lifecycle vs python-statemachine, a machine per run", 5.0),
)


def _batch(one: OneLifecycle) -> Callable[[int], object]:
    def batch(n: int) -> None:
        for _ in range(n):
            one(None)

    return batch


def run(*, quick: bool, tiny: bool = False) -> Report:
    """Pair ``Lifecycle`` with each baseline; ``tiny`` shrinks every size to a few (the smoke test)."""
    clock = SystemClock()
    sink = Discard()
    subject = _batch(lifecycle_factory(clock, sink))
    rounds = 7 if quick else 15
    base_ops = 1_000 if quick else 4_000
    report = Report()
    for name, title, target in _COMPARISONS:
        baseline = _batch(IMPLEMENTATIONS[name](clock, sink))
        # The per-run machines are 10-100x slower: fewer operations keep their batches short.
        ops = base_ops if name == "table" else base_ops // 5
        if tiny:
            ops, rounds = 3, 2
        pair = paired(subject, baseline, ops=ops, rounds=rounds)
        report.add(
            ratio_figure(
                "engine",
                title,
                pair,
                target=target,
                subject="Lifecycle",
                baseline=name,
            )
        )
    return report
