"""Rebuilding runs from audit records through the machine itself.

Internal: ``run_lifecycle.audit.replay`` and ``verify`` drive a ``Rebuilder``.

Each run is rebuilt from its ``created`` record. Its transitions are taken in
``seq`` order (1, 2, 3..., no gap, no repeat), not line order: with a store,
several processes append after their commits, so one run's events may land
out of order in the file; an event that arrives early waits for its
predecessor. Every event is re-applied with ``apply_trigger``, so the machine
decides whether the trigger was legal from the rebuilt state and what it
changes; the event must agree (same from/to status, same stop reason, the same
changed fields), and then the values it recorded are taken, because times and
durations cannot be recomputed after the fact. Rejected attempts change
nothing. Callback attempts are not transitions (no ``seq``, no ``version``):
the rebuilt run carries the outcome of the latest one (highest ``attempt``,
then latest line), as the store records the last attempt's outcome.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._events import AuditRecord, CallbackAttempt, RejectedAttempt, RunCreated, TransitionEvent
from ._machine import apply_trigger
from ._run import Run, RunStatus
from ._validate import check_consistency
from .exceptions import InvalidRunDocument, ReplayError, RunLifecycleError
from .serialization import from_json, parse_datetime


@attrs.define
class _RunState:
    """What replay knows of one run so far."""

    run: Run | None = None
    lines: dict[int, int] = attrs.Factory(dict)  # seq -> the line that held it
    pending: dict[int, tuple[int, TransitionEvent]] = attrs.Factory(dict)
    callback: tuple[int, CallbackAttempt] | None = None  # the latest attempt and its line
    broken: bool = False


class Rebuilder:
    """Feeds records one at a time; keeps the runs, the counts and every fault it found.

    ``add`` raises ``ReplayError`` for the first illegality of a run and stops
    following that run; ``finish`` reports what is still waiting for a
    predecessor that never came.
    """

    def __init__(self) -> None:
        self._states: dict[str, _RunState] = {}
        self.events = 0
        self.rejected = 0
        self.callbacks = 0

    @property
    def runs(self) -> dict[str, Run]:
        """The rebuilt runs, in the order of their created records."""
        runs: dict[str, Run] = {}
        created = [(s.lines[0], rid, s.run) for rid, s in self._states.items() if s.run is not None]
        for _, run_id, run in sorted(created, key=lambda item: item[0]):
            state = self._states[run_id]
            if state.callback is not None:
                attempt = state.callback[1]
                run = attrs.evolve(
                    run,
                    callback_sent_at=attempt.at,
                    callback_status_code=attempt.status_code,
                    callback_error=attempt.error,
                )
            runs[run_id] = run
        return runs

    def add(self, record: AuditRecord, line: int) -> None:
        """Take one record found at ``line`` (1-based)."""
        if isinstance(record, RejectedAttempt):
            self.rejected += 1
            return
        state = self._states.get(record.run_id)
        if state is None:
            state = self._states[record.run_id] = _RunState()
        if state.broken:
            return
        if isinstance(record, CallbackAttempt):
            self.callbacks += 1
            if state.callback is None or record.attempt >= state.callback[1].attempt:
                state.callback = (line, record)
            return
        try:
            if isinstance(record, RunCreated):
                self._create(state, record, line)
            else:
                self._queue(state, record, line)
            self._drain(state)
        except ReplayError:
            state.broken = True
            raise

    def finish(self) -> list[ReplayError]:
        """One error per run whose events still wait for a predecessor (a gap, or no creation)."""
        faults: list[ReplayError] = []
        for run_id, state in self._states.items():
            if state.broken:
                continue
            if state.callback is not None and not state.pending:
                problem = _callback_problem(state.run, state.callback[1])
                if problem is not None:
                    faults.append(ReplayError(problem, line=state.callback[0], run_id=run_id))
            if not state.pending:
                continue
            line, event = min(state.pending.values(), key=lambda item: item[0])
            if state.run is None:
                reason = f"run {run_id} has events but no created record (this is seq {event.seq})"
            else:
                missing = state.run.version + 1
                reason = (
                    f"run {run_id}: seq {event.seq} cannot be applied: seq {missing} never"
                    f" appears (the run stops at seq {state.run.version})"
                )
            faults.append(ReplayError(reason, line=line, run_id=run_id))
        return faults

    # -- one run ----------------------------------------------------------------------------

    def _create(self, state: _RunState, record: RunCreated, line: int) -> None:
        if 0 in state.lines:
            raise ReplayError(
                f"run {record.run_id} is created a second time (first at line {state.lines[0]})",
                line=line,
                run_id=record.run_id,
            )
        try:
            run = from_json(record.run)
        except InvalidRunDocument as exc:
            raise ReplayError(
                f"the created record of run {record.run_id} holds no valid run: {exc}",
                line=line,
                run_id=record.run_id,
            ) from None
        if run.id != record.run_id or run.agent_id != record.agent_id:
            raise ReplayError(
                f"the created record names run {record.run_id} of {record.agent_id!r} but holds"
                f" run {run.id} of {run.agent_id!r}",
                line=line,
                run_id=record.run_id,
            )
        if run.status is not RunStatus.CREATED:
            raise ReplayError(
                f"run {run.id} is created in status {run.status.value}; runs start as created",
                line=line,
                run_id=run.id,
            )
        state.lines[0] = line
        state.run = run

    def _queue(self, state: _RunState, event: TransitionEvent, line: int) -> None:
        seq = event.seq
        if seq in state.lines or seq in state.pending:
            first = state.lines[seq] if seq in state.lines else state.pending[seq][0]
            raise ReplayError(
                f"run {event.run_id}: seq {seq} appears a second time (first at line {first})",
                line=line,
                run_id=event.run_id,
            )
        state.pending[seq] = (line, event)

    def _drain(self, state: _RunState) -> None:
        while state.run is not None and state.run.version + 1 in state.pending:
            line, event = state.pending.pop(state.run.version + 1)
            state.run = _apply(state.run, event, line)
            state.lines[event.seq] = line
            self.events += 1


def _callback_problem(run: Run | None, attempt: CallbackAttempt) -> str | None:
    """Why a callback attempt cannot belong to the run as rebuilt (None when it can)."""
    where = f"run {attempt.run_id}: callback attempt {attempt.attempt}"
    if run is None:
        return f"{where} for a run that has no created record"
    if run.callback_url is None:
        return f"{where} for a run without a callback_url"
    if not run.is_terminal:
        return f"{where} while the run is still {run.status.value}"
    if attempt.agent_id != run.agent_id:
        return f"{where} names agent {attempt.agent_id!r}, not the run's {run.agent_id!r}"
    code = attempt.status_code
    if code is not None and not 100 <= code <= 599:
        return f"{where}: {code} is not an HTTP status code"
    return None


def _fault(event: TransitionEvent, line: int, reason: str) -> ReplayError:
    return ReplayError(
        f"run {event.run_id} seq {event.seq} ({event.trigger}): {reason}",
        line=line,
        run_id=event.run_id,
    )


def _apply(run: Run, event: TransitionEvent, line: int) -> Run:
    """``run`` after ``event``, judged by the machine; ``ReplayError`` when the event is illegal."""
    if event.agent_id != run.agent_id:
        raise _fault(event, line, f"agent {event.agent_id!r} is not the run's {run.agent_id!r}")
    if event.from_status != run.status.value:
        raise _fault(
            event, line, f"it leaves {event.from_status} but the run is {run.status.value}"
        )
    # An error message recorded in the metadata is handed back to the machine, so the changes
    # it computes are the ones the original transition made (``fail`` sets metadata["error"]).
    metadata = event.changes.get("metadata")
    error = metadata.get("error") if isinstance(metadata, dict) else None
    try:
        new, computed = apply_trigger(
            run,
            event.trigger,
            now=event.at,
            monotonic_ns=0,
            stop_reason=event.stop_reason,
            error=error,
        )
    except RunLifecycleError as exc:
        raise _fault(event, line, f"the machine refuses it: {exc}") from None
    if computed is None:
        raise _fault(
            event, line, "the machine makes it a no-op, which is never recorded as an event"
        )
    if computed.to_status != event.to_status or computed.stop_reason != event.stop_reason:
        raise _fault(
            event,
            line,
            f"it records {event.to_status} ({event.stop_reason}) but the machine goes to"
            f" {computed.to_status} ({computed.stop_reason})",
        )
    keys, expected = set(event.changes), set(computed.changes)
    if keys != expected:
        raise _fault(
            event,
            line,
            f"it changes {', '.join(sorted(keys)) or 'nothing'}; the machine changes"
            f" {', '.join(sorted(expected))}",
        )
    try:
        fields = _recorded_fields(event.changes, computed.changes)
        new = attrs.evolve(new, **fields)
        check_consistency(new, InvalidRunDocument)
    except (InvalidRunDocument, TypeError, ValueError) as exc:
        raise _fault(event, line, f"its changes are not valid: {exc}") from None
    return new


def _recorded_fields(recorded: dict[str, Any], computed: dict[str, Any]) -> dict[str, Any]:
    """The times and durations the event recorded, typed; the rest must be the machine's."""
    fields: dict[str, Any] = {}
    for key, value in recorded.items():
        if key in ("status", "stop_reason", "metadata"):  # the machine already set these on ``new``
            if value != computed[key]:
                raise ValueError(f"{key} is {value!r}, the machine sets {computed[key]!r}")
        elif key == "completed_at":
            fields[key] = parse_datetime(value)
        elif key in ("ttft_ns", "total_duration_ns"):
            if type(value) is not int or value < 0:
                raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
            fields[key] = value
    return fields
