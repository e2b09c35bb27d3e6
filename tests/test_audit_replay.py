"""Replay: random lifecycles written to a log rebuild the very same runs; illegal histories fail."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from run_lifecycle import (
    AuditRecord,
    CallbackAttempt,
    Lifecycle,
    ManualClock,
    RejectedAttempt,
    ReplayError,
    Run,
    RunCreated,
    RunLifecycleError,
    StopReason,
    TransitionEvent,
)
from run_lifecycle._demo import run_demo
from run_lifecycle.audit import AuditLog, replay, verify
from run_lifecycle.testing import capture_audit

from .strategies import creation_fields, start_times, stop_reasons, triggers

#: One step of a history: (run index, action, value, stop reason, error message).
history_steps = st.tuples(
    st.integers(0, 7),
    st.sampled_from(["trigger", "trigger", "trigger", "advance", "step_wall"]),
    triggers,
    stop_reasons,
    st.none() | st.text(max_size=12),
    st.floats(min_value=0, max_value=600),
)


@attrs.frozen
class History:
    """A random multi-run life: creation fields, then steps over those runs."""

    start: datetime
    fields: list[dict[str, Any]]
    steps: list[tuple[int, str, str, StopReason | None, str | None, float]]


histories = st.builds(
    History,
    start=start_times,
    fields=st.lists(creation_fields, min_size=1, max_size=6),
    steps=st.lists(history_steps, max_size=40),
)


def drive(history: History, audit: Any = None) -> dict[str, Run]:
    """Play ``history`` on a Lifecycle (illegal triggers included); return the final runs by id."""
    clock = ManualClock(history.start)
    lc = Lifecycle(clock=clock, audit=audit)
    runs: list[Run] = []
    for fields in history.fields:
        runs.append(lc.create(**fields))
        clock.advance(0.01)
    for index, action, trigger, reason, error, seconds in history.steps:
        index %= len(runs)
        if action == "advance":
            clock.advance(seconds)
        elif action == "step_wall":
            clock.step_wall(-seconds)
        else:
            with contextlib.suppress(RunLifecycleError):
                runs[index] = lc.apply(
                    runs[index],
                    trigger,
                    stop_reason=reason,
                    error=error if trigger == "fail" else None,
                )[0]
    return {run.id: run for run in runs}


_names = itertools.count()


@pytest.fixture
def fresh_path(tmp_path: Path) -> Iterator[Any]:
    """A factory of new log paths under tmp_path, removed after each use (for hypothesis tests)."""
    made: list[Path] = []

    def make() -> Path:
        path = tmp_path / f"audit-{next(_names)}.jsonl"
        made.append(path)
        return path

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def assert_same_runs(rebuilt: dict[str, Run], final: dict[str, Run]) -> None:
    assert sorted(rebuilt) == sorted(final)
    for run_id, run in final.items():
        assert rebuilt[run_id] == run
        assert rebuilt[run_id].version == run.version


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories)
def test_replaying_the_log_of_random_lifecycles_gives_the_final_runs(
    history: History, fresh_path: Any
) -> None:
    """Random lifecycles across several runs, illegal triggers included: replay equals the final runs."""
    path = fresh_path()
    with AuditLog(path, fsync="never") as log, capture_audit() as records:
        final = drive(history, log)
    rebuilt = replay(path)
    assert list(rebuilt) == list(final)  # in the order the runs were created
    assert_same_runs(rebuilt, final)
    assert_same_runs(replay(records), final)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories, data=st.data())
def test_any_line_order_of_the_records_replays_to_the_same_runs(
    history: History, data: st.DataObject, fresh_path: Any
) -> None:
    """Records appended in any order (as several store processes may) still replay by seq."""
    with capture_audit() as records:
        final = drive(history)
    shuffled = data.draw(st.permutations(records))
    path = fresh_path()
    with AuditLog(path, fsync="never") as log:
        for record in shuffled:
            log.write(record)
    assert verify(path).ok
    assert_same_runs(replay(path), final)
    assert_same_runs(replay(shuffled), final)


def test_the_demo_log_replays_to_the_runs_its_store_holds(tmp_path: Path) -> None:
    """The demo's threaded runtime on a SQLite store, logged, replays to exactly the stored runs."""
    pytest.importorskip("sqlalchemy")
    from run_lifecycle.stores import open_store

    path = tmp_path / "demo.jsonl"
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with AuditLog(path, fsync="batch") as log, open_store(url, audit=log) as store:
        result = run_demo(store, runs=60, seed=7, time_scale=0.0)
        stored = {run_id: store.get(run_id) for run_id in result.run_ids}
    report = verify(path)
    assert report.ok, report
    rebuilt = replay(path)
    assert rebuilt == stored
    assert all(rebuilt[run_id].version == run.version for run_id, run in stored.items())


def test_rejected_attempts_are_kept_but_change_nothing() -> None:
    """A history with rejected attempts replays like the same history without them."""
    lc = Lifecycle(clock=ManualClock())
    with capture_audit() as records:
        run = lc.cancel(lc.start(lc.create(agent_id="agent-1")))
        with pytest.raises(RunLifecycleError):
            lc.complete(run)
    assert any(isinstance(r, RejectedAttempt) for r in records)
    without = [r for r in records if not isinstance(r, RejectedAttempt)]
    assert replay(records) == replay(without) == {run.id: run}


# -- illegal histories -----------------------------------------------------------------------


def _life() -> tuple[Run, list[AuditRecord]]:
    """One run created, started, given a first token and completed, with its records."""
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    lc = Lifecycle(clock=clock)
    with capture_audit() as records:
        run = lc.start(lc.create(agent_id="agent-1", metadata={"k": 1}))
        clock.advance(0.5)
        run = lc.first_token(run)
        clock.advance(1.5)
        run = lc.complete(run)
    return run, list(records)


def _event(records: list[AuditRecord], seq: int) -> TransitionEvent:
    event = next(r for r in records if isinstance(r, TransitionEvent) and r.seq == seq)
    return event


def _forge(event: TransitionEvent, **changes: Any) -> TransitionEvent:
    return attrs.evolve(event, **changes)


def _illegal_histories() -> Iterator[tuple[str, list[AuditRecord], int]]:
    """(what is wrong, the records, the 1-based position at fault)."""
    _, r = _life()  # created, start(1), first_token(2), complete(3)
    created = r[0]
    assert isinstance(created, RunCreated)
    yield "a seq is missing", [r[0], r[1], r[3]], 3
    yield "a seq repeats", [r[0], r[1], r[1], r[2], r[3]], 3
    yield "no created record", [r[1], r[2], r[3]], 1
    yield "created twice", [r[0], r[1], r[0], r[2], r[3]], 3
    yield (
        "a trigger the machine refuses",
        [r[0], r[1], _forge(_event(r, 2), trigger="start", changes={"status": "running"})],
        3,
    )
    yield "from_status disagrees", [r[0], r[1], _forge(_event(r, 2), from_status="created")], 3
    yield "to_status disagrees", [r[0], r[1], r[2], _forge(_event(r, 3), to_status="failed")], 4
    yield (
        "the stop reason disagrees",
        [r[0], r[1], r[2], _forge(_event(r, 3), stop_reason="max_steps")],
        4,
    )
    yield (
        "a repeated first token is a no-op, never an event",
        [r[0], r[1], r[2], _forge(_event(r, 2), seq=3)],
        4,
    )
    yield (
        "changes a field the machine does not",
        [r[0], r[1], _forge(_event(r, 2), changes={"ttft_ns": 5, "status": "running"})],
        3,
    )
    yield (
        "the recorded status is not the machine's",
        [r[0], _forge(_event(r, 1), changes={"status": "completed"})],
        2,
    )
    yield (
        "a negative duration",
        [r[0], r[1], _forge(_event(r, 2), changes={"ttft_ns": -1})],
        3,
    )
    bad_complete = dict(_event(r, 3).changes, completed_at="2020-01-01T00:00:00+00:00")
    yield (
        "completed before it was created",
        [r[0], r[1], r[2], _forge(_event(r, 3), changes=bad_complete)],
        4,
    )
    yield (
        "created in a terminal status",
        [attrs.evolve(created, run={**created.run, "status": "running"})],
        1,
    )
    yield (
        "created with an invalid run",
        [attrs.evolve(created, run={**created.run, "ttft_ns": "fast"})],
        1,
    )
    callback = CallbackAttempt(
        run_id=created.run_id,
        agent_id=created.agent_id,
        webhook_id="msg_1",
        attempt=1,
        at=created.at + timedelta(seconds=9),
        status_code=200,
        error=None,
    )
    yield "a callback attempt for a run without a callback_url", [*r, callback], 5
    fail = TransitionEvent(
        run_id=created.run_id,
        agent_id=created.agent_id,
        seq=3,
        trigger="fail",
        from_status="running",
        to_status="failed",
        stop_reason="error",
        at=created.at + timedelta(seconds=3),
        changes={
            "status": "failed",
            "stop_reason": "error",
            "completed_at": "2026-03-01T00:00:03+00:00",
            "total_duration_ns": 3_000_000_000,
            "metadata": {"k": 2, "error": "boom"},
        },
    )
    yield "fail changes more of the metadata than its error", [r[0], r[1], r[2], fail], 4


@pytest.mark.parametrize(
    ("what", "records", "position"), list(_illegal_histories()), ids=lambda v: str(v)[:40]
)
def test_an_illegal_history_is_a_replay_error_naming_its_position(
    what: str, records: list[AuditRecord], position: int
) -> None:
    """Replay refuses an illegal history and names the record at fault and its run."""
    with pytest.raises(ReplayError) as caught:
        replay(records)
    assert caught.value.line == position, (what, caught.value)
    assert caught.value.run_id == records[0].run_id


@pytest.mark.parametrize(
    ("what", "records", "position"), list(_illegal_histories()), ids=lambda v: str(v)[:40]
)
def test_an_illegal_history_in_an_intact_log_is_reported_by_verify_at_its_line(
    what: str, records: list[AuditRecord], position: int, tmp_path: Path
) -> None:
    """Written through AuditLog (so the chain holds), the same history fails verify as illegal."""
    path = tmp_path / "log.jsonl"
    with AuditLog(path) as log:
        for record in records:
            log.write(record)
    report = verify(path)
    assert (report.ok, report.kind, report.line) == (False, "illegal", position), what
    with pytest.raises(ReplayError) as caught:
        replay(path)
    assert caught.value.line == position


def test_a_legal_history_written_out_of_order_is_accepted() -> None:
    """Events of one run that arrive before their predecessor wait for it instead of failing."""
    run, r = _life()
    assert replay([r[3], r[1], r[0], r[2]]) == {run.id: run}


def test_the_latest_callback_attempt_sets_the_callback_fields() -> None:
    """Callback attempts put the latest attempt's outcome on the rebuilt run."""
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    lc = Lifecycle(clock=clock)
    with capture_audit() as records:
        run = lc.complete(lc.start(lc.create(agent_id="a", callback_url="https://example.com/h")))
    attempts = [
        CallbackAttempt(
            run_id=run.id,
            agent_id="a",
            webhook_id="msg_1",
            attempt=number,
            at=run.created_at + timedelta(seconds=number),
            status_code=code,
            error=error,
        )
        for number, code, error in [(1, 503, "server error"), (2, 200, None)]
    ]
    rebuilt = replay([*records, attempts[1], attempts[0]])[run.id]
    expected = attrs.evolve(
        run, callback_sent_at=attempts[1].at, callback_status_code=200, callback_error=None
    )
    assert rebuilt == expected


def test_something_that_is_not_a_record_is_refused() -> None:
    """replay() given an object that is not an audit record raises ReplayError naming it."""
    with pytest.raises(ReplayError, match="not an audit record") as caught:
        replay([{"kind": "created"}])  # type: ignore[list-item]
    assert caught.value.line == 1
