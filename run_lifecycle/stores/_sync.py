"""``RunStore`` and ``open_store``: the synchronous twin.

Each call takes a pooled connection, runs one backend operation on its DB-API
connection (the retry loop included), gives the connection back, and only
then reports what was committed. A ``RunStore`` is safe to share between
threads: all state lives in the database (or behind the memory backend's lock).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar, Unpack

from .._clock import Clock
from .._events import AuditRecord, AuditSink, TransitionEvent
from .._run import Run, RunFields, RunStatus, StopReason
from ..exceptions import RunLifecycleError, StoreError
from ._base import DEFAULT_CLAIM_LEASE, DEFAULT_LEASE, StoreCore, check_aware, check_run_id
from ._codec import from_us, to_us
from ._engines import Target, open_target, reason
from ._outbox import PendingDelivery

__all__ = ["RunStore", "open_store"]

_T = TypeVar("_T")

#: Connections a store keeps between calls (more run at once are borrowed from the pool).
_IDLE_CONNECTIONS = 4


class RunStore(StoreCore):
    """Runs kept in memory, SQLite or PostgreSQL; open one with ``open_store``.

    Every transition is atomic: read, apply (the pure core), compare-and-set
    write with its event in one transaction, re-read and re-applied after a lost
    race. Of concurrent terminal triggers on one run exactly one wins; the
    others raise ``IllegalTransition`` naming the status the winner left.
    """

    def __init__(
        self,
        target: Target,
        *,
        clock: Clock | None = None,
        lease: timedelta = DEFAULT_LEASE,
        audit: AuditSink | None = None,
        record_rejections: bool = True,
    ) -> None:
        super().__init__(
            target.backend,
            clock=clock,
            lease=lease,
            audit=audit,
            record_rejections=record_rejections,
            description=target.description,
        )
        self._target = target
        self._engine: Any = target.engine
        self._errors = target.errors
        self._idle: list[Any] = []
        self._pid = os.getpid()
        if self._engine is not None:
            self._call(self._backend.setup)

    # -- execution -----------------------------------------------------------------------------

    def _call(self, operation: Callable[..., _T], *args: Any) -> _T:
        self._check_open()
        if self._engine is None:
            return operation(None, *args)
        raw = self._checkout()
        try:
            result = operation(raw.dbapi_connection, *args)
        except RunLifecycleError:
            self._checkin(raw)  # refused by the library: the transaction was rolled back
            raise
        except BaseException as exc:
            self._discard(raw, exc)
            if isinstance(exc, self._errors):
                raise StoreError(f"the store {self._description} failed: {reason(exc)}") from exc
            raise
        self._checkin(raw)
        return result

    def _checkout(self) -> Any:
        # Connections are kept checked out between calls, in a LIFO list (``pop`` and
        # ``append`` are atomic), so a call costs no pool checkout: the pool is only asked
        # when more calls run at once than ever before. A forked child never reuses them.
        if self._pid == os.getpid():
            try:
                return self._idle.pop()
            except IndexError:
                pass
        else:
            self._idle, self._pid = [], os.getpid()
        try:
            return self._engine.raw_connection()
        except RunLifecycleError:
            raise
        except self._errors as exc:
            raise StoreError(f"cannot connect to {self._description}: {reason(exc)}") from exc

    def _checkin(self, raw: Any) -> None:
        # Only a store that owns its engine keeps connections between calls: an engine handed
        # in is the application's, and its pool (size, pre-ping, recycle) must stay its own.
        if self._target.owns_engine and len(self._idle) < _IDLE_CONNECTIONS and not self._closed:
            self._idle.append(raw)
        else:
            raw.close()

    def _discard(self, raw: Any, exc: BaseException) -> None:
        # After an unexpected error the connection goes back to the pool, which resets it,
        # or is dropped altogether when the error says it is broken.
        with suppress(Exception):
            if isinstance(exc, Exception) and self._engine.dialect.is_disconnect(
                exc, raw.dbapi_connection, None
            ):
                raw.invalidate()
            raw.close()

    # -- runs ----------------------------------------------------------------------------------

    def create(self, run: Run) -> Run:
        """Store a new run (and its creation record); ``RunAlreadyExists`` if the id is taken."""
        return self._insert(run, built=False)

    def _insert(self, run: Run, *, built: bool) -> Run:
        row, created = self._new_row(run, built=built)
        self._call(self._backend.insert, row, created)
        self._lifecycle.report(created)
        return run

    def create_run(self, **fields: Unpack[RunFields]) -> Run:
        """Build a run from Letta's creation fields (validated) and store it."""
        return self._insert(
            self._lifecycle.build(**fields),
            built=True,
        )

    def get(self, run_id: str) -> Run:
        """The stored run; ``RunNotFound``."""
        return self._decode(self._call(self._backend.fetch, check_run_id(run_id)))

    def apply(
        self,
        run_id: str,
        trigger: str,
        *,
        stop_reason: StopReason | str | None = None,
        error: str | None = None,
    ) -> Run:
        """Apply ``trigger`` atomically; the run after it (the stored one for an idempotent no-op)."""
        planner = self._planner(trigger, stop_reason, error)
        plan = self._call(self._backend.transition, check_run_id(run_id), planner, self._origin)
        return self._finish(plan)

    def list(
        self,
        *,
        agent_id: str | None = None,
        statuses: Iterable[RunStatus | str] | None = None,
        background: bool | None = None,
        stop_reason: StopReason | str | None = None,
        conversation_id: str | None = None,
        active: bool = False,
        before: str | None = None,
        after: str | None = None,
        limit: int = 100,
        order: Literal["asc", "desc"] = "desc",
    ) -> builtins.list[Run]:
        """Runs by creation time, Letta's way: ``before``/``after`` are run ids (older/newer)."""
        query = self._list_query(
            agent_id=agent_id,
            statuses=statuses,
            background=background,
            stop_reason=stop_reason,
            conversation_id=conversation_id,
            active=active,
            before=before,
            after=after,
            limit=limit,
            order=order,
        )
        return [self._decode(row) for row in self._call(self._backend.list_rows, query)]

    def events(self, run_id: str) -> builtins.list[TransitionEvent]:
        """The run's accepted transitions, by ``seq`` (1, 2, ...)."""
        return self._events(self._call(self._backend.records, check_run_id(run_id), False))

    def history(self, run_id: str) -> builtins.list[AuditRecord]:
        """The run's creation record, transitions and rejected attempts, in the order they happened."""
        return self._history(self._call(self._backend.records, check_run_id(run_id), True))

    def heartbeat(self, run_id: str) -> datetime:
        """Renew the run's lease; the new expiry. ``IllegalTransition`` once the run has ended."""
        lease = self._heartbeat_lease()
        status = self._call(self._backend.heartbeat, check_run_id(run_id), lease)
        if status is not None:
            raise self._heartbeat_refused(run_id, status)
        return from_us(lease.expires_us)

    def reap(self, now: datetime | None = None) -> builtins.list[Run]:
        """Fail every unfinished run whose lease ran out before ``now``; the runs failed."""
        at = self._now() if now is None else check_aware("now", now)
        plans = self._call(self._backend.reap, to_us(at), self._reap_planner(at), self._origin)
        for plan in plans:
            assert plan.event is not None
            self._lifecycle.report(plan.event)
        return [plan.run for plan in plans]

    def delete(self, run_id: str) -> None:
        """Remove the run, its events and its deliveries; ``RunNotFound``."""
        self._call(self._backend.delete, check_run_id(run_id))

    # -- the callback outbox -------------------------------------------------------------------

    def claim_deliveries(
        self,
        now: datetime | None = None,
        *,
        limit: int = 100,
        lease: timedelta = DEFAULT_CLAIM_LEASE,
    ) -> builtins.list[PendingDelivery]:
        """Take the due deliveries (oldest first), withheld from other deliverers for ``lease``."""
        now_us, until_us, limit = self._claim_window(now, limit, lease)
        rows = self._call(self._backend.claim, now_us, until_us, limit)
        return self._deliveries(rows, until_us)

    def record_callback_attempt(
        self,
        delivery: PendingDelivery,
        *,
        sent_at: datetime,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> Run:
        """Record an attempt's outcome on the run; ``next_attempt_at=None`` finishes the delivery."""
        callback, next_us = self._attempt_args(
            delivery, sent_at, status_code, error, next_attempt_at
        )
        row = self._call(
            self._backend.record_attempt, delivery.run_id, delivery.seq, callback, next_us
        )
        return self._attempt_recorded(delivery, self._decode(row))

    def pending_deliveries(self) -> builtins.list[PendingDelivery]:
        """Every unfinished delivery, due first."""
        return self._deliveries(self._call(self._backend.pending))

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the store's connections (an engine handed in is left to its owner)."""
        if self._closed:
            return
        self._closed = True
        self._backend.close()
        while self._idle:
            with suppress(Exception):
                self._idle.pop().close()
        if self._target.owns_engine:
            self._engine.dispose()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_store(
    target: Any,
    *,
    clock: Clock | None = None,
    lease: timedelta = DEFAULT_LEASE,
    audit: AuditSink | None = None,
    record_rejections: bool = True,
    schema: str | None = None,
) -> RunStore:
    """Open a store: ``memory://``, ``sqlite:///PATH``, ``postgresql://...`` or a SQLAlchemy Engine.

    Tables are created if missing (idempotently, also by several processes at
    once). ``lease`` is how long a run may go without a heartbeat or a
    transition before ``reap`` fails it; ``schema`` picks a PostgreSQL schema
    (created if missing). Raises ``StoreError`` with what to do when the URL,
    the driver or the server is not usable.
    """
    opened = open_target(target, is_async=False, schema=schema)
    try:
        return RunStore(
            opened, clock=clock, lease=lease, audit=audit, record_rejections=record_rejections
        )
    except BaseException:
        if opened.owns_engine:
            opened.engine.dispose()
        raise
