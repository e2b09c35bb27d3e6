"""A worker process killed with SIGKILL mid-workload leaves a store that is whole and reapable.

The child drives runs as fast as it can (create, start, first token, heartbeat,
end, and some left running as a crashed agent would) and is killed at an
arbitrary point, most likely inside a transaction. Afterwards every run must
agree with its events, and ``reap`` must finish every run the child left behind.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from run_lifecycle import RunStatus, StopReason
from run_lifecycle.stores import open_store

from .stores_helpers import assert_agrees, drop_schema, postgres_url

#: Generous: the child only has to reach its first checkpoint on a loaded machine.
TIMEOUT = 180.0


def _workload(url: str, schema: str | None, ready: Any) -> None:  # runs in the child process
    rng = random.Random(os.getpid())
    done = 0
    with open_store(url, schema=schema) as store:
        while True:
            run = store.create_run(
                agent_id=f"agent-{done % 3}", callback_url="https://example.com/h"
            )
            store.apply(run.id, "start")
            store.apply(run.id, "first_token")
            store.heartbeat(run.id)
            ending = rng.choice(["complete", "fail", "cancel", "leave"])
            if ending != "leave":
                store.apply(run.id, ending)
            done += 1
            if done == 30:
                ready.set()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}", None
        return
    url, schema = postgres_url(), f"rl_test_crash_{uuid.uuid4().hex[:12]}"
    yield url, schema
    drop_schema(url, schema)


def test_a_killed_worker_leaves_every_run_consistent_and_reapable(
    target: tuple[str, str | None], tmp_path: Path
) -> None:
    """After SIGKILL every run agrees with its events and reap finishes the ones left running."""
    url, schema = target
    open_store(url, schema=schema).close()  # the tables exist before the child starts
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_workload, args=(url, schema, ready))
    child.start()
    try:
        assert ready.wait(TIMEOUT), "the worker never got going"
        assert child.is_alive()
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(TIMEOUT)
    finally:
        if child.is_alive():
            child.kill()
            child.join(TIMEOUT)
    assert child.exitcode == -signal.SIGKILL

    if schema is None:
        with sqlite3.connect(tmp_path / "runs.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.close()
    with open_store(url, schema=schema) as store:
        runs = store.list(limit=1000)
        assert len(runs) >= 30
        for run in runs:
            assert_agrees(store, run.id)
        unfinished = {run.id for run in runs if not run.is_terminal}
        assert unfinished, "the workload leaves some runs running; a crash leaves more"
        assert store.reap() == []  # their leases are still fresh
        reaped = store.reap(datetime.now(UTC) + timedelta(days=1))
        assert {run.id for run in reaped} == unfinished
        for run in reaped:
            assert run.status is RunStatus.FAILED and run.stop_reason is StopReason.ERROR
        assert store.list(active=True, limit=1000) == []
        for run in store.list(limit=1000):
            assert_agrees(store, run.id)
