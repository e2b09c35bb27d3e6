"""Helpers for the store tests: open every kind of store, bridge async twins, check runs.

PostgreSQL tests read ``RUN_LIFECYCLE_POSTGRES_URL``; without it they skip,
unless ``CI`` is set, where a missing URL fails the test instead (a skipped
PostgreSQL suite must never pass CI). Each PostgreSQL store lives in its own
schema, dropped when the test ends.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from run_lifecycle import (
    RunCreated,
    RunStatus,
    StopReason,
    TransitionEvent,
    from_json,
    to_json,
)
from run_lifecycle._machine import decide
from run_lifecycle.stores import AsyncRunStore, open_async_store, open_store

POSTGRES_ENV = "RUN_LIFECYCLE_POSTGRES_URL"
BACKENDS = ("memory", "sqlite", "postgresql")
TWINS = ("sync", "async")
KINDS = [(backend, twin) for backend in BACKENDS for twin in TWINS]
KIND_IDS = [f"{backend}-{twin}" for backend, twin in KINDS]
#: The kinds where two stores opened on the same database see the same runs (not memory).
SHARED_KINDS = [kind for kind in KINDS if kind[0] != "memory"]
SHARED_KIND_IDS = [f"{backend}-{twin}" for backend, twin in SHARED_KINDS]


def postgres_url() -> str:
    """The PostgreSQL URL to test against; skip (or fail under CI) when it is not set."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = (
            f"PostgreSQL tests need {POSTGRES_ENV}, e.g."
            f" {POSTGRES_ENV}=postgresql://postgres@127.0.0.1:5432/test"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: a skipped PostgreSQL suite is a failure)")
        pytest.skip(message)
    return url


def drop_schema(url: str, schema: str) -> None:
    """Drop a test's PostgreSQL schema and everything in it."""
    import sqlalchemy as sa

    engine = sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        engine.dispose()


class ListSink:
    """An audit sink that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def write(self, record: Any) -> None:
        self.records.append(record)


class SyncView:
    """An ``AsyncRunStore`` driven through sync calls on a private event loop.

    It lets one conformance suite exercise both twins: every coroutine method
    is run to completion on the view's own loop.
    """

    def __init__(self, store: AsyncRunStore) -> None:
        self._runner = asyncio.Runner()
        self.store = store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.store, name)
        if inspect.iscoroutinefunction(value):
            return lambda *args, **kwargs: self._runner.run(value(*args, **kwargs))
        return value

    def close(self) -> None:
        """``aclose`` the store; the loop stays for calls that must now fail."""
        self._runner.run(self.store.aclose())

    def shutdown(self) -> None:
        """Close the store and end the view's event loop."""
        try:
            self.close()
        finally:
            self._runner.close()

    def __enter__(self) -> SyncView:
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()


class StoreFactory:
    """Opens stores of one kind on one database (a SQLite file or a PostgreSQL schema)."""

    def __init__(self, backend: str, twin: str, tmp_path: Path) -> None:
        self.backend = backend
        self.twin = twin
        self.schema: str | None = None
        self.url = "memory://"
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'runs.db'}"
        elif backend == "postgresql":
            self.url = postgres_url()
            self.schema = f"rl_test_{uuid.uuid4().hex[:16]}"
        self._opened: list[Any] = []

    @property
    def shares_data(self) -> bool:
        """Whether two stores opened by this factory see the same runs (not in memory)."""
        return self.backend != "memory"

    def open(self, **options: Any) -> Any:
        """A store (an async one wrapped in a ``SyncView``), closed by ``close_all``."""
        if self.schema is not None:
            options.setdefault("schema", self.schema)
        store: Any
        if self.twin == "async":
            store = SyncView(open_async_store(self.url, **options))
        else:
            store = open_store(self.url, **options)
        self._opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self._opened:
            getattr(store, "shutdown", store.close)()
        self._opened.clear()
        if self.schema is not None:
            drop_schema(self.url, self.schema)


def expected_from_history(history: list[Any]) -> tuple[dict[str, Any], int]:
    """Rebuild a run's wire form from its creation record and events, checking each step.

    Every event must be legal per the machine, follow the previous status, and
    carry the next ``seq``; the result is the run's fields and its version.
    """
    created = history[0]
    assert isinstance(created, RunCreated), f"history starts with {created!r}"
    fields = dict(created.run)
    seq = 0
    for record in history[1:]:
        if not isinstance(record, TransitionEvent):
            continue
        seq += 1
        assert record.seq == seq, f"event seq {record.seq}, expected {seq}"
        assert record.from_status == fields["status"], (record, fields["status"])
        current = StopReason(fields["stop_reason"]) if fields["stop_reason"] else None
        requested = StopReason(record.stop_reason) if record.stop_reason else None
        decision = decide(record.from_status, current, record.trigger, requested)
        assert decision.outcome == "accept", (record, decision)
        assert decision.dest == record.to_status, (record, decision)
        fields.update(record.changes)
        assert fields["status"] == record.to_status
    return fields, seq


def assert_agrees(store: Any, run_id: str) -> Any:
    """The stored run is exactly what its creation record and events say; the run."""
    run = store.get(run_id)
    fields, version = expected_from_history(store.history(run_id))
    for name in ("callback_sent_at", "callback_status_code", "callback_error"):
        fields[name] = to_json(run)[name]
    assert from_json(fields) == run
    assert run.version == version
    return run


def terminal_events(store: Any, run_id: str) -> list[TransitionEvent]:
    """The run's events that entered a terminal status."""
    terminal = {s.value for s in RunStatus if s.is_terminal}
    return [
        e for e in store.events(run_id) if e.to_status in terminal and e.from_status not in terminal
    ]


Opener = Callable[..., Any]
