"""One run's story, read back from its audit records: what it went through, and what it refused.

A store's history and an audit log hold the same three kinds of record
(``RunCreated``, ``TransitionEvent``, ``RejectedAttempt``), possibly out of line
order (DESIGN §4: several processes append after their commits). The per-run
diagrams need them as one consistent story: the accepted steps ordered by
``seq`` (1, 2, 3... with no gap or repeat, each one an edge of the live
machine, each starting where the previous one ended), the rejected attempts
where they happened (the version the run was at, then time), and the measured
durations the events recorded. Records that
cannot tell such a story raise ``ReplayError`` naming what is wrong, never a
picture of something that did not happen.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import attrs

from ._events import AuditRecord, RejectedAttempt, RunCreated, TransitionEvent
from ._machine import MACHINE
from ._run import RunStatus
from .exceptions import ReplayError

__all__ = ["RunStory", "is_machine_edge", "story_of"]


def is_machine_edge(source: str, dest: str, trigger: str) -> bool:
    """True when the live machine has a transition ``source --trigger--> dest``."""
    event = MACHINE.events.get(trigger)
    if event is None:
        return False
    return any(
        (transition.dest if transition.dest is not None else source) == dest
        for transition in event.transitions.get(source, ())
    )


@attrs.frozen
class RunStory:
    """A run's accepted steps (by ``seq``) and rejected attempts (by version, then time).

    ``created_at`` is the creation record's time; without one (a history that
    starts later) it is the earliest time any record carries, and
    ``created`` is ``None``.
    """

    run_id: str
    agent_id: str
    created_at: datetime
    created: RunCreated | None
    steps: tuple[TransitionEvent, ...]
    rejected: tuple[RejectedAttempt, ...]

    @property
    def status(self) -> str:
        """The status after the last accepted step."""
        return self.steps[-1].to_status if self.steps else RunStatus.CREATED.value

    @property
    def stop_reason(self) -> str | None:
        """The stop reason of the last step that set one."""
        for step in reversed(self.steps):
            if step.stop_reason is not None:
                return step.stop_reason
        return None

    @property
    def taken(self) -> tuple[tuple[str, str, str], ...]:
        """The edges the run took, as ``(from_status, to_status, trigger)``, in order."""
        return tuple((step.from_status, step.to_status, step.trigger) for step in self.steps)

    def measured(self, field: str) -> int | None:
        """The first value a step recorded for ``field`` (``ttft_ns``, ``total_duration_ns``)."""
        for step in self.steps:
            value = step.changes.get(field)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @property
    def ttft_ns(self) -> int | None:
        return self.measured("ttft_ns")

    @property
    def total_duration_ns(self) -> int | None:
        return self.measured("total_duration_ns")

    def offset_ns(self, at: datetime) -> int:
        """Nanoseconds from the run's creation to ``at`` (wall time; never negative)."""
        delta = at - self.created_at
        ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
        return max(ns, 0)


def _one_run_id(records: list[AuditRecord], run_id: str | None) -> str:
    if run_id is not None:
        return run_id
    ids = sorted({record.run_id for record in records})
    if not ids:
        raise ReplayError("no records to draw: the run's history is empty")
    if len(ids) > 1:
        shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        raise ReplayError(f"records of {len(ids)} runs ({shown}); pick one run id")
    return ids[0]


def _story_order(attempt: RejectedAttempt) -> tuple[int, datetime, str, str, str, str]:
    # Where in the story (the version the run was at), then when; the rest only makes the
    # order total, so records read in any line order draw the same picture.
    return (
        attempt.version,
        attempt.at,
        attempt.trigger,
        attempt.status,
        attempt.stop_reason or "",
        attempt.reason,
    )


def story_of(records: Iterable[AuditRecord], run_id: str | None = None) -> RunStory:
    """The story of ``run_id`` (or of the only run the records hold); ``ReplayError`` if incoherent."""
    every = list(records)
    rid = _one_run_id(every, run_id)
    mine = [record for record in every if record.run_id == rid]
    if not mine:
        raise ReplayError(f"no records of run {rid!r}", run_id=rid)
    created = [r for r in mine if isinstance(r, RunCreated)]
    if len(created) > 1:
        raise ReplayError(f"run {rid} has {len(created)} creation records", run_id=rid)
    steps = sorted((r for r in mine if isinstance(r, TransitionEvent)), key=lambda e: e.seq)
    rejected = sorted((r for r in mine if isinstance(r, RejectedAttempt)), key=_story_order)
    status = RunStatus.CREATED.value
    for expected, step in enumerate(steps, start=1):
        if step.seq != expected:
            problem = "repeated" if step.seq < expected else f"missing (next seen is {step.seq})"
            raise ReplayError(f"run {rid}: event seq {expected} is {problem}", run_id=rid)
        if step.from_status != status:
            raise ReplayError(
                f"run {rid}: event seq {step.seq} ({step.trigger}) starts from"
                f" {step.from_status}, but the run was {status}",
                run_id=rid,
            )
        if not is_machine_edge(step.from_status, step.to_status, step.trigger):
            raise ReplayError(
                f"run {rid}: event seq {step.seq} ({step.from_status} --{step.trigger}-->"
                f" {step.to_status}) is not a transition of the lifecycle",
                run_id=rid,
            )
        status = step.to_status
    known = {status.value for status in RunStatus}
    for attempt in rejected:
        if attempt.status not in known:
            raise ReplayError(
                f"run {rid}: a rejected {attempt.trigger} names an unknown status"
                f" {attempt.status!r}",
                run_id=rid,
            )
    start = created[0].at if created else min(record.at for record in mine)
    return RunStory(
        run_id=rid,
        agent_id=mine[0].agent_id,
        created_at=start,
        created=created[0] if created else None,
        steps=tuple(steps),
        rejected=tuple(rejected),
    )
