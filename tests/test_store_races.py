"""Races on real databases: threads, processes and async tasks fighting over the same runs.

Each test pits several writers against each run at once (a barrier releases
them together) and then checks the outcome from the database alone: exactly
one terminal event per run, every caller told the truth (the winner's status
or the idempotent no-op), and the stored run agreeing with its events.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from run_lifecycle import (
    IllegalTransition,
    ManualClock,
    Run,
    RunStatus,
)
from run_lifecycle.stores import open_async_store, open_store

from .stores_helpers import (
    StoreFactory,
    assert_agrees,
    drop_schema,
    postgres_url,
    terminal_events,
)

TERMINAL_TRIGGERS = ("cancel", "complete", "fail")
WRITERS = 8
#: Generous: the machine is shared, and a barrier only waits for slow threads, never for time.
TIMEOUT = 120.0


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened = StoreFactory(request.param, "sync", tmp_path)
    yield opened
    opened.close_all()


Outcome = tuple[str, str, Any]  # (run id, trigger, returned Run or the exception raised)


def _check_outcomes(store: Any, outcomes: list[Outcome], runs: list[Run]) -> None:
    by_run: dict[str, list[tuple[str, Any]]] = {run.id: [] for run in runs}
    for run_id, trigger, result in outcomes:
        by_run[run_id].append((trigger, result))
    for run_id, results in by_run.items():
        assert len(results) == WRITERS
        (won,) = terminal_events(store, run_id)  # exactly one terminal transition
        final = assert_agrees(store, run_id)
        assert final.status.value == won.to_status
        for trigger, result in results:
            if isinstance(result, Run):  # the winner, or a repeat of what won (a no-op)
                assert trigger == won.trigger
                assert result == final
            else:
                assert isinstance(result, IllegalTransition), result
                assert trigger != won.trigger
                assert result.status == won.to_status


def _race_in_threads(stores: list[Any], runs: list[Run], seed: int) -> list[Outcome]:
    barrier = threading.Barrier(WRITERS, timeout=TIMEOUT)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        store = stores[index % len(stores)]
        for run in runs:
            trigger = rng.choice(TERMINAL_TRIGGERS)
            barrier.wait()
            try:
                result: Any = store.apply(run.id, trigger)
            except IllegalTransition as exc:
                result = exc
            with lock:
                outcomes.append((run.id, trigger, result))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * len(runs))
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def test_threads_racing_terminal_triggers_leave_exactly_one_winner(
    factory: StoreFactory,
) -> None:
    """8 threads over 3 store instances fire cancel/complete/fail at each of 200 runs at once."""
    stores = [factory.open() for _ in range(3)]
    runs = [stores[0].apply(stores[0].create_run(agent_id="a").id, "start") for _ in range(200)]
    outcomes = _race_in_threads(stores, runs, seed=1)
    _check_outcomes(stores[0], outcomes, runs)


def _process_writer(
    url: str, run_ids: list[str], index: int, barrier: Any, results: Any
) -> None:  # runs in a child process
    rng = random.Random(index)
    outcomes = []
    with open_store(url) as store:
        for run_id in run_ids:
            trigger = rng.choice(TERMINAL_TRIGGERS)
            barrier.wait(TIMEOUT)
            try:
                store.apply(run_id, trigger)
                outcomes.append((run_id, trigger, "ok", None))
            except IllegalTransition as exc:
                outcomes.append((run_id, trigger, "illegal", exc.status))
    results.put(outcomes)


def test_processes_racing_on_one_sqlite_file_leave_exactly_one_winner(tmp_path: Path) -> None:
    """8 processes sharing one SQLite file fire terminal triggers at each of 200 runs at once."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with open_store(url) as store:
        runs = [store.apply(store.create_run(agent_id="a").id, "start") for _ in range(200)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    results = context.Queue()
    ids = [run.id for run in runs]
    processes = [
        context.Process(target=_process_writer, args=(url, ids, i, barrier, results))
        for i in range(WRITERS)
    ]
    for process in processes:
        process.start()
    try:
        gathered = [results.get(timeout=TIMEOUT * 5) for _ in processes]
    finally:
        for process in processes:
            process.join(TIMEOUT)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    with open_store(url) as store:
        outcomes: list[Outcome] = []
        for run_id, trigger, kind, status in (o for batch in gathered for o in batch):
            result: Any = (
                store.get(run_id)
                if kind == "ok"
                else IllegalTransition(run_id, status, trigger, "from a child process")
            )
            outcomes.append((run_id, trigger, result))
        _check_outcomes(store, outcomes, runs)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_async_tasks_racing_terminal_triggers_leave_exactly_one_winner(
    backend: str, tmp_path: Path
) -> None:
    """8 concurrent tasks on an async store fire terminal triggers at each of 60 runs."""
    schema = None
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    if backend == "postgresql":
        url, schema = postgres_url(), f"rl_test_async_race_{random.getrandbits(48):x}"
    rng = random.Random(7)

    async def race() -> tuple[list[Run], list[Outcome]]:
        async with open_async_store(url, schema=schema) as store:
            runs = []
            for _ in range(60):
                run = await store.create_run(agent_id="a")
                runs.append(await store.apply(run.id, "start"))
            outcomes: list[Outcome] = []

            async def one(run_id: str, trigger: str) -> None:
                try:
                    result: Any = await store.apply(run_id, trigger)
                except IllegalTransition as exc:
                    result = exc
                outcomes.append((run_id, trigger, result))

            for run in runs:
                triggers = [rng.choice(TERMINAL_TRIGGERS) for _ in range(WRITERS)]
                await asyncio.gather(*(one(run.id, t) for t in triggers))
            return runs, outcomes

    try:
        runs, outcomes = asyncio.run(race())
        with open_store(url, schema=schema) as store:
            _check_outcomes(store, outcomes, runs)
    finally:
        if schema is not None:
            drop_schema(url, schema)


def test_pagination_never_skips_or_repeats_while_runs_are_created(
    factory: StoreFactory,
) -> None:
    """Paging both ways while another thread adds runs between pages sees each old run exactly once."""
    store = factory.open()
    for _ in range(40):
        store.create_run(agent_id="a")
    before = {run.id for run in store.list(limit=1000)}
    go, made = threading.Semaphore(0), threading.Semaphore(0)
    stop = threading.Event()
    added: list[str] = []

    def creator() -> None:
        while go.acquire(timeout=TIMEOUT) and not stop.is_set():
            added.append(store.create_run(agent_id="a").id)
            made.release()

    thread = threading.Thread(target=creator)
    thread.start()
    try:
        for order, cursor_name in (("desc", "before"), ("asc", "after")):
            seen: list[str] = []
            cursor: str | None = None
            for page_number in range(1000):
                page = store.list(order=order, limit=7, **{cursor_name: cursor})
                if not page:
                    break
                seen.extend(run.id for run in page)
                cursor = page[-1].id
                if page_number < 6:  # a new run lands between each of the first pages
                    go.release()
                    assert made.acquire(timeout=TIMEOUT)
            assert len(seen) == len(set(seen)), "a run was listed twice"
            assert before <= set(seen), "a run that existed all along was skipped"
            assert set(seen) <= before | set(added)
    finally:
        stop.set()
        go.release()
        thread.join(TIMEOUT)
    assert len(added) == 12


def test_reaping_while_runs_complete_never_overwrites_a_completion(
    factory: StoreFactory,
) -> None:
    """A reaper and a completing worker racing on 150 expired runs: each run ends once, and agrees."""
    clock = ManualClock(datetime(2026, 5, 1, tzinfo=UTC))
    store = factory.open(clock=clock, lease=timedelta(seconds=10))
    runs = [store.apply(store.create_run(agent_id="a").id, "start") for _ in range(150)]
    clock.advance(60)
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    completed: list[str] = []

    def worker() -> None:
        barrier.wait()
        for run in runs:
            try:
                store.apply(run.id, "complete")
                completed.append(run.id)
            except IllegalTransition as exc:
                assert exc.status == "failed"

    def reaper() -> None:
        barrier.wait()
        for _ in range(5):
            store.reap()

    threads = [threading.Thread(target=worker), threading.Thread(target=reaper)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 5)
    assert store.reap() == []  # the worker tried every run: none is left unfinished
    for run in runs:
        (ended,) = terminal_events(store, run.id)
        final = assert_agrees(store, run.id)
        if run.id in completed:
            assert final.status is RunStatus.COMPLETED and ended.trigger == "complete"
        else:
            assert final.status is RunStatus.FAILED
            assert final.metadata is not None
            assert final.metadata["error"].startswith("lease expired")


def test_a_heartbeat_racing_the_reaper_either_saves_the_run_or_learns_it_failed(
    factory: StoreFactory,
) -> None:
    """Of a heartbeat and a reap on an expired run, exactly one wins, and each caller knows which."""
    clock = ManualClock(datetime(2026, 5, 1, tzinfo=UTC))
    store = factory.open(clock=clock, lease=timedelta(seconds=10))
    other = factory.open(clock=clock, lease=timedelta(seconds=10))
    runs = [store.apply(store.create_run(agent_id="a").id, "start") for _ in range(100)]
    clock.advance(11)
    now = clock.now()
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    saved: set[str] = set()
    lost: set[str] = set()
    reaped: set[str] = set()

    def beat() -> None:
        for run in runs:
            barrier.wait()
            try:
                store.heartbeat(run.id)
                saved.add(run.id)
            except IllegalTransition as exc:
                assert exc.status == "failed"
                lost.add(run.id)

    def reap() -> None:
        for _ in runs:
            barrier.wait()
            reaped.update(r.id for r in other.reap(now))

    threads = [threading.Thread(target=beat), threading.Thread(target=reap)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 5)
    assert saved | lost == {run.id for run in runs}
    assert lost <= reaped and not saved & reaped
    for run in runs:
        final = assert_agrees(store, run.id)
        expected = RunStatus.FAILED if run.id in reaped else RunStatus.RUNNING
        assert final.status is expected


def test_concurrent_claims_never_hand_out_a_delivery_twice(factory: StoreFactory) -> None:
    """Deliverers claiming at once from several store instances each get different deliveries."""
    stores = [factory.open() for _ in range(3)]
    for _ in range(90):
        run = stores[0].create_run(agent_id="a", callback_url="https://example.com/hook")
        stores[0].apply(run.id, "cancel")
    later = datetime.now(UTC) + timedelta(seconds=5)
    barrier = threading.Barrier(6, timeout=TIMEOUT)
    claims: list[list[str]] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        barrier.wait()
        mine: list[str] = []
        while batch := stores[index % 3].claim_deliveries(later, limit=4):
            mine.extend(d.webhook_id for d in batch)
        with lock:
            claims.append(mine)

    run_threads(claimer, 6)
    everything = [w for mine in claims for w in mine]
    assert len(everything) == len(set(everything)) == 90


def run_threads(target: Callable[[int], None], count: int) -> None:
    """Run ``target(i)`` in ``count`` threads and wait for all of them."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 5)
    assert not any(thread.is_alive() for thread in threads)


@pytest.fixture
def postgres_stores(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    opened = StoreFactory("postgresql", "sync", tmp_path)
    yield opened.open(), opened.open()
    opened.close_all()


def test_a_lost_compare_and_set_is_re_read_and_re_planned(
    postgres_stores: tuple[Any, Any],
) -> None:
    """When another connection commits between the read and the write, the write re-reads and re-plans."""
    store, other = postgres_stores
    run = store.apply(store.create_run(agent_id="a").id, "start")
    seen: list[RunStatus] = []
    plan = store._planner("complete", None, None)

    def interfering(current: Run, lease: Any) -> Any:
        seen.append(current.status)
        if len(seen) == 1:
            other.apply(run.id, "cancel")  # commits while our transaction holds a stale read
        return plan(current, lease)

    outcome = store._call(store._backend.transition, run.id, interfering, store._origin)
    with pytest.raises(IllegalTransition) as caught:
        store._finish(outcome)
    assert seen == [RunStatus.RUNNING, RunStatus.CANCELLED]
    assert caught.value.status == "cancelled"
    assert [e.trigger for e in terminal_events(store, run.id)] == ["cancel"]


def test_a_transition_that_keeps_losing_gives_up_with_store_conflict(
    postgres_stores: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the bounded number of lost races the transition raises StoreConflict and writes nothing."""
    from run_lifecycle import StoreConflict
    from run_lifecycle.stores import _sql

    monkeypatch.setattr(_sql, "MAX_ATTEMPTS", 2)
    store, other = postgres_stores
    run = store.create_run(agent_id="a")
    plan = store._planner("cancel", None, None)
    moves = iter(["start", "first_token"])

    def interfering(current: Run, lease: Any) -> Any:
        other.apply(run.id, next(moves))
        return plan(current, lease)

    with pytest.raises(StoreConflict) as caught:
        store._call(store._backend.transition, run.id, interfering, store._origin)
    assert (caught.value.run_id, caught.value.attempts) == (run.id, 2)
    assert store.get(run.id).status is RunStatus.RUNNING
    assert terminal_events(store, run.id) == []
