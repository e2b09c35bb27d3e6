"""The store conformance suite: memory, SQLite and PostgreSQL, sync and async, one set of tests.

Every test here runs against all six kinds of store (the async twins through a
``SyncView``); what differs between backends is tested at the end of the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from run_lifecycle import (
    IllegalTransition,
    InvalidRunInput,
    InvalidStopReason,
    Lifecycle,
    ManualClock,
    RejectedAttempt,
    Run,
    RunAlreadyExists,
    RunCreated,
    RunLifecycleError,
    RunNotFound,
    RunStatus,
    StopReason,
    StoreError,
    TransitionError,
    TransitionEvent,
)
from run_lifecycle.stores import (
    DEFAULT_LEASE,
    AsyncRunStore,
    PendingDelivery,
    RunStore,
    open_async_store,
    open_store,
)

from .stores_helpers import (
    KIND_IDS,
    KINDS,
    POSTGRES_ENV,
    SHARED_KIND_IDS,
    SHARED_KINDS,
    ListSink,
    StoreFactory,
    assert_agrees,
    drop_schema,
    postgres_url,
    terminal_events,
)
from .strategies import creation_fields, stop_reasons, triggers

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: Creation fields a database can keep in its indexed text columns (no NUL characters).
storable_fields = creation_fields.filter(
    lambda f: "\x00" not in f["agent_id"] + (f.get("conversation_id") or "")
)
HOOK = "https://example.com/hook"
#: Tests that do real I/O per example run a quarter of the profile's examples.
IO_SETTINGS = settings(
    max_examples=max(10, settings().max_examples // 4),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(params=KINDS, ids=KIND_IDS)
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened = StoreFactory(*request.param, tmp_path)
    yield opened
    opened.close_all()


@pytest.fixture(params=SHARED_KINDS, ids=SHARED_KIND_IDS)
def shared_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Stores on one database that several store instances share (SQLite, PostgreSQL)."""
    opened = StoreFactory(*request.param, tmp_path)
    yield opened
    opened.close_all()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def store(factory: StoreFactory, clock: ManualClock, sink: ListSink) -> Any:
    return factory.open(clock=clock, audit=sink)


def started(store: Any, **fields: Any) -> Run:
    run = store.create_run(agent_id=fields.pop("agent_id", "agent-1"), **fields)
    return store.apply(run.id, "start")


# -- creating and reading ------------------------------------------------------------------------


@IO_SETTINGS
@given(fields=storable_fields)
def test_a_created_run_reads_back_equal(store: Any, fields: dict[str, Any]) -> None:
    """Whatever Letta's creation fields hold, get returns a run equal to the one created."""
    run = store.create_run(**fields)
    assert store.get(run.id) == run
    assert store.get(run.id).version == 0


def test_create_refuses_a_taken_id_and_keeps_the_first(store: Any) -> None:
    """A second run with the same id raises RunAlreadyExists; the first stays as it was."""
    first = store.create_run(agent_id="a", metadata={"n": 1})
    with pytest.raises(RunAlreadyExists) as caught:
        store.create_run(agent_id="b", id=first.id)
    assert caught.value.run_id == first.id
    assert store.get(first.id) == first
    assert [type(r) for r in store.history(first.id)] == [RunCreated]


def test_get_of_an_unknown_id_raises_run_not_found(store: Any) -> None:
    """Reading, moving or deleting a run that does not exist raises RunNotFound naming it."""
    missing = "run-00000000-0000-4000-8000-000000000000"
    for call in (
        lambda: store.get(missing),
        lambda: store.apply(missing, "start"),
        lambda: store.events(missing),
        lambda: store.history(missing),
        lambda: store.heartbeat(missing),
        lambda: store.delete(missing),
        lambda: store.get("run-\x00"),
    ):
        with pytest.raises(RunNotFound):
            call()


def test_create_refuses_a_run_that_is_not_new_or_not_consistent(store: Any) -> None:
    """create takes only a fresh, consistent Run; anything else is InvalidRunInput and not stored."""
    lc = Lifecycle()
    moved = lc.start(lc.create(agent_id="a"))
    with pytest.raises(InvalidRunInput, match="version"):
        store.create(moved)
    broken = attrs.evolve(lc.create(agent_id="a"), stop_reason=StopReason.END_TURN)
    with pytest.raises(InvalidRunInput, match="stop_reason"):
        store.create(broken)
    with pytest.raises(InvalidRunInput, match="agent_id"):
        store.create_run(agent_id="nul\x00inside")
    with pytest.raises(InvalidRunInput):
        store.create({"agent_id": "a"})
    assert store.list() == []


def test_create_reports_the_creation_record_after_storing_it(store: Any, sink: ListSink) -> None:
    """The audit sink gets a RunCreated holding the run's wire form, the same one history keeps."""
    run = store.create_run(agent_id="a", callback_url=HOOK)
    assert sink.records == store.history(run.id)
    (created,) = sink.records
    assert isinstance(created, RunCreated)
    assert created.run["id"] == run.id and created.at == run.created_at


# -- transitions ----------------------------------------------------------------------------------


@IO_SETTINGS
@given(
    fields=storable_fields,
    steps=st.lists(
        st.one_of(
            st.tuples(triggers, stop_reasons),
            st.tuples(st.just("advance"), st.floats(0, 100)),
            st.tuples(st.just("step_wall"), st.floats(-100, 100)),
        ),
        max_size=8,
    ),
)
def test_the_store_moves_runs_exactly_as_the_pure_lifecycle_does(
    store: Any, clock: ManualClock, fields: dict[str, Any], steps: list[tuple[Any, Any]]
) -> None:
    """Any sequence of triggers gives the store's runs and errors the pure Lifecycle's, event for event."""
    model_lc = Lifecycle(clock=clock)
    run = store.create_run(**fields)
    model = attrs.evolve(run)
    accepted, refused = 0, 0
    for kind, value in steps:
        if kind == "advance":
            clock.advance(value)
            continue
        if kind == "step_wall":
            clock.step_wall(value)
            continue
        try:
            expected, event = model_lc.apply(model, kind, stop_reason=value)
        except TransitionError as exc:
            with pytest.raises(type(exc)) as caught:
                store.apply(run.id, kind, stop_reason=value)
            assert (caught.value.run_id, caught.value.status, caught.value.trigger) == (
                exc.run_id,
                exc.status,
                exc.trigger,
            )
            assert str(caught.value) == str(exc)
            refused += 1
            continue
        got = store.apply(run.id, kind, stop_reason=value)
        assert got == expected and got.version == expected.version
        accepted += event is not None
        model = expected
    stored = assert_agrees(store, run.id)
    assert stored == model
    history = store.history(run.id)
    assert sum(isinstance(r, TransitionEvent) for r in history) == accepted
    assert sum(isinstance(r, RejectedAttempt) for r in history) == refused


def test_a_late_complete_after_cancel_is_refused_naming_cancelled(store: Any) -> None:
    """The caller of a late complete learns the run was cancelled, and the rejection is recorded."""
    run = started(store)
    store.apply(run.id, "cancel")
    with pytest.raises(IllegalTransition) as caught:
        store.apply(run.id, "complete")
    assert caught.value.status == "cancelled"
    assert store.get(run.id).status is RunStatus.CANCELLED
    rejected = store.history(run.id)[-1]
    assert isinstance(rejected, RejectedAttempt)
    assert (rejected.trigger, rejected.status, rejected.version) == ("complete", "cancelled", 2)


def test_a_repeated_terminal_trigger_writes_nothing(store: Any, sink: ListSink) -> None:
    """Repeating the transition that ended a run returns it unchanged: no event, no version."""
    run = started(store)
    done = store.apply(run.id, "fail", stop_reason="llm_api_error", error="boom")
    count = len(sink.records)
    again = store.apply(run.id, "fail", stop_reason=StopReason.LLM_API_ERROR, error="boom")
    assert again == done and again.version == done.version == 2
    assert len(sink.records) == count
    assert len(store.events(run.id)) == 2


def test_an_invalid_stop_reason_is_refused_and_changes_nothing(store: Any) -> None:
    """complete with a failure reason raises InvalidStopReason; the run is left as it was."""
    run = started(store)
    with pytest.raises(InvalidStopReason):
        store.apply(run.id, "complete", stop_reason="error")
    assert store.get(run.id) == run


def test_rejections_are_not_recorded_when_switched_off(factory: StoreFactory) -> None:
    """With record_rejections=False a refused trigger leaves no trace in history or the sink."""
    sink = ListSink()
    store = factory.open(record_rejections=False, audit=sink)
    run = store.create_run(agent_id="a")
    with pytest.raises(IllegalTransition):
        store.apply(run.id, "complete")
    assert [type(r) for r in store.history(run.id)] == [RunCreated]
    assert not any(isinstance(r, RejectedAttempt) for r in sink.records)


def test_the_sink_receives_what_history_holds_in_the_same_order(store: Any, sink: ListSink) -> None:
    """Records reach the audit sink once each, in the order the store's history keeps them."""
    run = started(store, callback_url=HOOK)
    store.apply(run.id, "first_token")
    with pytest.raises(IllegalTransition):
        store.apply(run.id, "start")
    store.apply(run.id, "complete", stop_reason="requires_approval")
    store.apply(run.id, "cancel")
    assert sink.records == store.history(run.id)
    assert [e.seq for e in store.events(run.id)] == [1, 2, 3, 4]


def test_fail_keeps_its_error_in_metadata(store: Any) -> None:
    """fail's error message lands in metadata["error"], beside the metadata the run had."""
    run = started(store, metadata={"user": "u-1"})
    failed = store.apply(run.id, "fail", error="tool crashed")
    assert failed.metadata == {"user": "u-1", "error": "tool crashed"}
    assert store.get(run.id).metadata == failed.metadata


def test_a_run_finished_by_another_store_instance_gets_wall_time_durations(
    shared_factory: StoreFactory, clock: ManualClock
) -> None:
    """Created by one store and finished by another, a run's durations come from the wall clock."""
    creator = shared_factory.open(clock=clock)
    finisher = shared_factory.open(clock=clock)
    run = creator.create_run(agent_id="a")
    clock.advance(2)
    finisher.apply(run.id, "start")
    clock.advance(3)
    clock.step_wall(-1)  # the wall clock says 4 s have passed; the monotonic one says 5 s
    done = finisher.apply(run.id, "complete")
    assert done.total_duration_ns == 4_000_000_000
    assert done.completed_at >= done.created_at


def test_a_run_finished_by_its_own_store_keeps_monotonic_durations(
    store: Any, clock: ManualClock
) -> None:
    """The store instance that created a run measures it on the monotonic clock, whatever the wall does."""
    run = store.create_run(agent_id="a")
    store.apply(run.id, "start")
    clock.advance(5)
    clock.step_wall(-3600)
    done = store.apply(run.id, "complete")
    assert done.total_duration_ns == 5_000_000_000
    assert done.completed_at == done.created_at  # clamped: never before creation


def test_durations_across_instances_are_never_negative_when_the_wall_steps_back(
    shared_factory: StoreFactory, clock: ManualClock
) -> None:
    """A wall clock stepped back between creation and completion yields zero, not a negative duration."""
    run = shared_factory.open(clock=clock).create_run(agent_id="a")
    other = shared_factory.open(clock=clock)
    other.apply(run.id, "start")
    clock.step_wall(-60)
    other.apply(run.id, "first_token")
    done = other.apply(run.id, "complete")
    assert done.ttft_ns == 0 and done.total_duration_ns == 0
    assert done.completed_at == done.created_at


# -- list ------------------------------------------------------------------------------------------


def _population(store: Any, clock: ManualClock) -> list[Run]:
    runs: list[Run] = []
    for i in range(14):
        if i % 3:  # some runs share a creation time: ties are broken by id
            clock.advance(1)
        run = store.create_run(
            agent_id=f"agent-{i % 2}",
            conversation_id=f"conv-{i % 3}",
            background=[None, True, False][i % 3],
        )
        if i % 4 == 1:
            store.apply(run.id, "start")
        elif i % 4 == 2:
            store.apply(run.id, "cancel")
        elif i % 4 == 3:
            store.apply(run.id, "start")
            store.apply(run.id, "complete", stop_reason="max_steps")
        runs.append(store.get(run.id))
    return runs


def _key(run: Run) -> tuple[datetime, str]:
    return run.created_at, run.id


def test_list_filters_like_letta(store: Any, clock: ManualClock) -> None:
    """Each filter keeps exactly the runs that match it; active means created or running."""
    runs = _population(store, clock)
    newest_first = sorted(runs, key=_key, reverse=True)

    def expect(keep: Any) -> list[str]:
        return [r.id for r in newest_first if keep(r)]

    def ids(**query: Any) -> list[str]:
        return [r.id for r in store.list(**query)]

    assert ids() == expect(lambda r: True)
    assert ids(agent_id="agent-1") == expect(lambda r: r.agent_id == "agent-1")
    assert ids(conversation_id="conv-2") == expect(lambda r: r.conversation_id == "conv-2")
    assert ids(background=True) == expect(lambda r: r.background is True)
    assert ids(background=False) == expect(lambda r: r.background is False)
    assert ids(stop_reason="max_steps") == expect(lambda r: r.stop_reason is StopReason.MAX_STEPS)
    assert ids(statuses=["cancelled", RunStatus.RUNNING]) == expect(
        lambda r: r.status in (RunStatus.CANCELLED, RunStatus.RUNNING)
    )
    live = (RunStatus.CREATED, RunStatus.RUNNING)
    assert ids(active=True) == expect(lambda r: r.status in live)
    assert ids(active=True, statuses=["running", "completed"]) == expect(
        lambda r: r.status is RunStatus.RUNNING
    )
    assert ids(agent_id="agent-0", active=True, order="asc") == list(
        reversed(expect(lambda r: r.agent_id == "agent-0" and r.status in live))
    )
    assert store.list(agent_id="nobody") == []


def test_list_cursors_are_time_cursors_in_either_order(store: Any, clock: ManualClock) -> None:
    """before= gives older runs and after= newer ones, each in the requested order, ties by id."""
    runs = sorted(_population(store, clock), key=_key)
    for pivot in (0, 5, 6, len(runs) - 1):
        cursor = runs[pivot].id
        older, newer = runs[:pivot], runs[pivot + 1 :]
        assert store.list(before=cursor, order="asc") == older
        assert store.list(before=cursor, order="desc") == older[::-1]
        assert store.list(after=cursor, order="asc") == newer
        assert store.list(after=cursor, order="desc") == newer[::-1]
        assert store.list(before=cursor, limit=2) == older[::-1][:2]
    assert store.list(after=runs[2].id, before=runs[7].id, order="asc") == runs[3:7]


def test_list_pages_through_every_run_exactly_once(store: Any, clock: ManualClock) -> None:
    """Following before= (newest first) or after= (oldest first) visits each run once."""
    runs = sorted(_population(store, clock), key=_key)
    for order, cursor_name, expected in (("desc", "before", runs[::-1]), ("asc", "after", runs)):
        seen: list[Run] = []
        cursor: str | None = None
        while True:
            page = store.list(order=order, limit=3, **{cursor_name: cursor})
            if not page:
                break
            seen.extend(page)
            cursor = page[-1].id
        assert seen == expected


def test_list_refuses_bad_arguments(store: Any) -> None:
    """limit outside 1..1000, an unknown order, status or stop reason raise InvalidRunInput."""
    for bad in (
        {"limit": 0},
        {"limit": 1001},
        {"limit": True},
        {"order": "newest"},
        {"statuses": ["finished"]},
        {"stop_reason": "tired"},
        {"background": "yes"},
    ):
        with pytest.raises(InvalidRunInput):
            store.list(**bad)
    assert store.list(limit=1000) == []
    with pytest.raises(RunNotFound):
        store.list(before="run-00000000-0000-4000-8000-000000000000")


# -- leases, heartbeats and the reaper -----------------------------------------------------------


def test_heartbeat_extends_the_lease_and_refuses_an_ended_run(
    store: Any, clock: ManualClock
) -> None:
    """heartbeat returns now + lease while the run lives, then IllegalTransition naming its status."""
    run = started(store)
    clock.advance(30)
    assert store.heartbeat(run.id) == clock.now() + DEFAULT_LEASE
    store.apply(run.id, "cancel")
    with pytest.raises(IllegalTransition) as caught:
        store.heartbeat(run.id)
    assert (caught.value.status, caught.value.trigger) == ("cancelled", "heartbeat")
    assert store.get(run.id).version == 2  # a heartbeat is not a transition


def test_reap_fails_runs_whose_lease_ran_out_and_only_them(
    factory: StoreFactory, clock: ManualClock, sink: ListSink
) -> None:
    """Silent runs (never heartbeated too) are failed with stop reason error; fresh ones are not."""
    store = factory.open(clock=clock, audit=sink, lease=timedelta(seconds=60))
    silent_created = store.create_run(agent_id="a")
    silent_running = started(store)
    clock.advance(30)
    beating = started(store)
    finished = started(store)
    store.apply(finished.id, "complete")
    clock.advance(40)  # 70 s after the first two; 40 s after the others
    store.heartbeat(beating.id)
    clock.advance(45)  # beating heartbeated 45 s ago; the first two have been silent 115 s
    reaped = store.reap()
    assert sorted(r.id for r in reaped) == sorted([silent_created.id, silent_running.id])
    for run in reaped:
        assert run.status is RunStatus.FAILED and run.stop_reason is StopReason.ERROR
        assert run.metadata is not None
        assert run.metadata["error"].startswith("lease expired: no heartbeat for 115s")
        assert run.completed_at == clock.now()
        assert store.get(run.id) == run
        assert_agrees(store, run.id)
    assert store.get(beating.id).status is RunStatus.RUNNING
    assert store.get(finished.id).status is RunStatus.COMPLETED
    assert store.reap() == []


def test_a_fresh_run_is_never_reaped(store: Any, clock: ManualClock) -> None:
    """Up to the end of its lease, a run that has not heartbeated is left alone."""
    run = store.create_run(agent_id="a")
    assert store.reap(clock.now() + DEFAULT_LEASE) == []
    assert store.get(run.id).status is RunStatus.CREATED


def test_reap_acts_as_of_the_time_it_is_given(store: Any, clock: ManualClock) -> None:
    """reap(now) uses now for completed_at and the duration, not the store's clock."""
    run = started(store)
    later = clock.now() + timedelta(hours=1)
    (reaped,) = store.reap(later)
    assert reaped.id == run.id and reaped.completed_at == later
    assert reaped.total_duration_ns == 3600 * 1_000_000_000
    with pytest.raises(InvalidRunInput):
        store.reap(datetime(2030, 1, 1))


def test_reap_never_overwrites_a_run_that_finished(store: Any, clock: ManualClock) -> None:
    """A run that completed after its lease ran out keeps its completion when the reaper comes."""
    run = started(store, callback_url=HOOK)
    clock.advance(DEFAULT_LEASE.total_seconds() + 1)
    done = store.apply(run.id, "complete")
    assert store.reap() == []
    assert store.get(run.id) == done
    assert len(terminal_events(store, run.id)) == 1


# -- delete and close ------------------------------------------------------------------------------


def test_delete_removes_the_run_and_everything_about_it(store: Any) -> None:
    """After delete the run, its history and its deliveries are gone; a second delete is RunNotFound."""
    run = started(store, callback_url=HOOK)
    store.apply(run.id, "complete")
    keep = store.create_run(agent_id="other")
    store.delete(run.id)
    with pytest.raises(RunNotFound):
        store.get(run.id)
    with pytest.raises(RunNotFound):
        store.history(run.id)
    with pytest.raises(RunNotFound):
        store.delete(run.id)
    assert store.pending_deliveries() == []
    assert store.list() == [keep]
    assert store.create(attrs.evolve(Lifecycle().create(agent_id="a"), id=run.id)).id == run.id


def test_a_closed_store_refuses_work(factory: StoreFactory) -> None:
    """Every call on a closed store raises StoreError; closing twice is harmless."""
    store = factory.open()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.create_run(agent_id="a")


# -- the callback outbox --------------------------------------------------------------------------


@IO_SETTINGS
@given(
    with_url=st.booleans(),
    steps=st.lists(st.tuples(triggers, stop_reasons), max_size=6),
)
def test_deliveries_are_owed_exactly_for_terminal_transitions_with_a_callback_url(
    store: Any, with_url: bool, steps: list[tuple[str, Any]]
) -> None:
    """The outbox holds one delivery per terminal transition of a run with a callback URL, no more."""
    run = store.create_run(agent_id="a", callback_url=HOOK if with_url else None)
    for trigger, reason in steps:
        with contextlib.suppress(RunLifecycleError):
            store.apply(run.id, trigger, stop_reason=reason)
    terminal = {s.value for s in RunStatus if s.is_terminal}
    entered = [e for e in store.events(run.id) if e.to_status in terminal]
    owed = [d for d in store.pending_deliveries() if d.run_id == run.id]
    assert [(d.seq, d.webhook_id, d.attempts) for d in owed] == [
        (e.seq, f"{run.id}:{e.seq}", 0) for e in entered if with_url
    ]
    assert all(d.created_at == d.next_attempt_at for d in owed)


def test_claiming_takes_due_deliveries_once_until_the_claim_lapses(
    store: Any, clock: ManualClock
) -> None:
    """A claimed delivery is withheld from other claims for the claim lease, then offered again."""
    runs = [started(store, callback_url=HOOK) for _ in range(3)]
    for run in runs:
        clock.advance(1)
        store.apply(run.id, "complete")
    assert store.claim_deliveries(START) == []  # none due yet at that time
    first = store.claim_deliveries(limit=2, lease=timedelta(seconds=30))
    assert [d.run_id for d in first] == [r.id for r in runs[:2]]
    assert all(d.next_attempt_at == clock.now() + timedelta(seconds=30) for d in first)
    second = store.claim_deliveries()
    assert [d.run_id for d in second] == [runs[2].id]
    assert store.claim_deliveries() == []
    clock.advance(31)
    again = store.claim_deliveries()
    assert [d.run_id for d in again] == [r.id for r in runs[:2]]
    assert [d.attempts for d in again] == [0, 0]
    with pytest.raises(InvalidRunInput):
        store.claim_deliveries(limit=0)


def test_recording_an_attempt_never_touches_lifecycle_fields(
    store: Any, clock: ManualClock
) -> None:
    """record_callback_attempt writes only the callback fields: status, times and version stay."""
    run = started(store, callback_url=HOOK)
    done = store.apply(run.id, "complete", stop_reason="requires_approval")
    (delivery,) = store.claim_deliveries()
    sent = clock.now() + timedelta(seconds=1)
    after = store.record_callback_attempt(
        delivery,
        sent_at=sent,
        status_code=503,
        error="Service Unavailable",
        next_attempt_at=sent + timedelta(seconds=10),
    )
    assert after == attrs.evolve(
        done, callback_sent_at=sent, callback_status_code=503, callback_error="Service Unavailable"
    )
    assert after.version == done.version
    assert store.get(run.id) == after
    (retry,) = store.pending_deliveries()
    assert (retry.attempts, retry.next_attempt_at) == (1, sent + timedelta(seconds=10))
    # A transition after the attempt keeps the callback outcome.
    cancelled = store.apply(run.id, "cancel")
    assert (cancelled.callback_status_code, cancelled.callback_error) == (
        503,
        "Service Unavailable",
    )
    assert_agrees(store, run.id)


def test_finishing_a_delivery_removes_it_from_the_pending_ones(
    store: Any, clock: ManualClock
) -> None:
    """next_attempt_at=None finishes a delivery: it is neither pending nor claimable afterwards."""
    run = started(store, callback_url=HOOK)
    store.apply(run.id, "fail")
    (delivery,) = store.claim_deliveries()
    assert isinstance(delivery, PendingDelivery)
    done = store.record_callback_attempt(
        delivery, sent_at=clock.now(), status_code=200, error=None, next_attempt_at=None
    )
    assert done.callback_status_code == 200 and done.callback_error is None
    assert store.pending_deliveries() == []
    clock.advance(3600)
    assert store.claim_deliveries() == []
    # A late second record of the same delivery changes the outcome fields only.
    late = store.record_callback_attempt(
        delivery, sent_at=clock.now(), status_code=410, error=None, next_attempt_at=clock.now()
    )
    assert late.callback_status_code == 410
    assert store.pending_deliveries() == []


def test_recording_an_attempt_checks_its_arguments(store: Any, clock: ManualClock) -> None:
    """A non-HTTP status code or a naive time is InvalidRunInput; an unknown run is RunNotFound."""
    run = started(store, callback_url=HOOK)
    store.apply(run.id, "cancel")
    (delivery,) = store.pending_deliveries()
    now = clock.now()
    for kwargs in (
        {"status_code": 99, "sent_at": now},
        {"status_code": True, "sent_at": now},
        {"status_code": 200, "sent_at": datetime(2026, 1, 1)},
    ):
        with pytest.raises(InvalidRunInput):
            store.record_callback_attempt(delivery, error=None, next_attempt_at=None, **kwargs)
    ghost = attrs.evolve(delivery, run_id="run-00000000-0000-4000-8000-000000000000")
    with pytest.raises(RunNotFound):
        store.record_callback_attempt(
            ghost, sent_at=now, status_code=200, error=None, next_attempt_at=None
        )
    odd = store.record_callback_attempt(
        delivery, sent_at=now, status_code=None, error="nul\x00byte", next_attempt_at=None
    )
    assert odd.callback_error is not None and "\x00" not in odd.callback_error


# -- opening stores ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://localhost/db", "unknown store URL scheme"),
        ("not a url", "not a store URL"),
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///:memory:", "in-memory SQLite"),
        ("postgresql+psycopg2://localhost/db", "psycopg 3"),
    ],
)
def test_open_store_explains_an_unusable_url(url: str, says: str) -> None:
    """A URL no store can use raises StoreError saying what is wrong."""
    with pytest.raises(StoreError, match=says):
        open_store(url)
    with pytest.raises(StoreError, match=says):
        open_async_store(url)


def test_schema_is_only_for_postgresql(tmp_path: Path) -> None:
    """schema= on a memory or SQLite store raises StoreError."""
    for url in ("memory://", f"sqlite:///{tmp_path / 'x.db'}"):
        with pytest.raises(StoreError, match="PostgreSQL schema"):
            open_store(url, schema="s")


def test_open_store_takes_only_urls_and_engines() -> None:
    """Anything but a URL string or a SQLAlchemy engine of the right twin is refused."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    with pytest.raises(StoreError, match="URL string"):
        open_store(42)
    async_engine = create_async_engine("sqlite+aiosqlite:///unused.db")
    sync_engine = sa.create_engine("sqlite:///unused.db")
    try:
        with pytest.raises(StoreError):
            open_store(async_engine)
        with pytest.raises(StoreError):
            open_async_store(sync_engine)
    finally:
        sync_engine.dispose()
        async_engine.sync_engine.dispose()


def test_an_unreachable_server_is_a_store_error() -> None:
    """Nothing listening at the URL: StoreError, at open (sync) or on first use (async)."""
    url = "postgresql://postgres@127.0.0.1:1/test"
    with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
        open_store(url)
    import asyncio

    async def first_use() -> None:
        async with open_async_store(url) as store:
            await store.list()

    with pytest.raises(StoreError):
        asyncio.run(first_use())


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg installed, opening a PostgreSQL store says which extra to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"run-lifecycle\[postgres\]"):
        open_store("postgresql://postgres@127.0.0.1:5432/test")


def test_memory_stores_work_without_sqlalchemy() -> None:
    """The stores package imports and serves memory:// with SQLAlchemy absent, and says what to install."""
    code = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "from run_lifecycle.stores import open_store\n"
        "from run_lifecycle import StoreError\n"
        "store = open_store('memory://')\n"
        "run = store.create_run(agent_id='a')\n"
        "assert store.apply(run.id, 'start').status == 'running'\n"
        "try:\n"
        "    open_store('sqlite:///never.db')\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "run-lifecycle[sqlite]" in result.stdout


def test_a_url_opened_sqlite_store_uses_wal_and_records_its_schema(tmp_path: Path) -> None:
    """The SQLite file is in WAL mode with schema version 1, and reopening it changes nothing."""
    path = tmp_path / "runs.db"
    with open_store(f"sqlite:///{path}") as store:
        run = store.create_run(agent_id="a")
    with open_store(f"sqlite:///{path}") as store:
        assert store.get(run.id) == run
        assert store.backend == "sqlite"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT version FROM run_lifecycle_schema_version").fetchall() == [(1,)]
    db.close()


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    """Tables written by a newer library version are not touched: StoreError says to upgrade."""
    path = tmp_path / "runs.db"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE run_lifecycle_schema_version SET version = 99")
    db.close()
    with pytest.raises(StoreError, match="upgrade"):
        open_store(f"sqlite:///{path}")


def test_a_damaged_row_is_reported_naming_the_run(tmp_path: Path) -> None:
    """A document edited into nonsense outside the library raises StoreError naming its run."""
    path = tmp_path / "runs.db"
    with open_store(f"sqlite:///{path}") as store:
        run = store.create_run(agent_id="a")
        with sqlite3.connect(path) as db:
            db.execute("UPDATE run_lifecycle_runs SET document = '{\"id\": 1}'")
        db.close()
        with pytest.raises(StoreError, match=run.id):
            store.get(run.id)


def test_a_handed_in_sqlite_engine_is_used_and_left_open(tmp_path: Path) -> None:
    """open_store(engine) stores runs through the application's engine and never disposes it."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        with open_store(engine) as store:
            run = store.create_run(agent_id="a")
            store.apply(run.id, "start")
            assert store.apply(run.id, "complete").status is RunStatus.COMPLETED
            assert_agrees(store, run.id)
        with engine.connect() as connection:
            count = connection.exec_driver_sql("SELECT count(*) FROM run_lifecycle_runs").scalar()
        assert count == 1
    finally:
        engine.dispose()


def test_handed_in_postgresql_engines_are_used_and_left_open() -> None:
    """A psycopg Engine and AsyncEngine both serve stores, in a schema, and stay usable after."""
    import asyncio

    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    url = sa.engine.make_url(postgres_url()).set(drivername="postgresql+psycopg")
    schema = "rl_test_engine_handed_in"
    engine = sa.create_engine(url)
    async_engine = create_async_engine(url)
    try:
        with open_store(engine, schema=schema) as store:
            run = store.create_run(agent_id="a")

        async def read_back() -> Run:
            async with open_async_store(async_engine, schema=schema) as astore:
                return await astore.apply(run.id, "cancel")

        assert asyncio.run(read_back()).status is RunStatus.CANCELLED
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()
        asyncio.run(async_engine.dispose())
        drop_schema(str(postgres_url()), schema)


def test_the_public_names_are_exported() -> None:
    """The stores package and the top-level package export the store API."""
    import run_lifecycle
    import run_lifecycle.stores as stores

    for name in ("open_store", "open_async_store", "RunStore", "AsyncRunStore", "PendingDelivery"):
        assert name in stores.__all__
        assert getattr(run_lifecycle, name) is getattr(stores, name)
    assert stores.__all__ == sorted(stores.__all__, key=lambda n: (not n.isupper(), n))
    assert isinstance(open_store("memory://"), RunStore)
    assert isinstance(open_async_store("memory://"), AsyncRunStore)


def test_a_missing_postgres_url_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the URL the PostgreSQL tests skip, naming the variable; with CI set they fail."""
    monkeypatch.delenv(POSTGRES_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=POSTGRES_ENV):
        postgres_url()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=POSTGRES_ENV):
        postgres_url()


def test_a_handed_in_engine_keeps_its_pool_for_the_application(tmp_path: Path) -> None:
    """A store on the application's engine returns every connection to its pool after a call."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        f"sqlite:///{tmp_path / 'app.db'}", pool_size=1, max_overflow=0, pool_timeout=5
    )
    try:
        with open_store(engine) as store:
            run = store.create_run(agent_id="agent-1")
            store.apply(run.id, "start")
            with engine.connect() as connection:  # would time out if the store held it
                assert connection.exec_driver_sql("select 1").scalar() == 1
    finally:
        engine.dispose()
