"""``AsyncRunStore`` and ``open_async_store``: the asyncio twin.

The same backend operations as ``RunStore``, run inside
``AsyncConnection.run_sync`` on aiosqlite or psycopg's async driver: the
statements, retry loops and planner are literally the sync ones, only the
connection is awaited. The tables are created on first use (opening is a
plain call, so a store can be built where no event loop runs yet).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Iterable
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

__all__ = ["AsyncRunStore", "open_async_store"]

_T = TypeVar("_T")


def _on_dbapi(connection: Any, operation: Callable[..., _T], args: tuple[Any, ...]) -> _T:
    return operation(connection.connection.dbapi_connection, *args)


class AsyncRunStore(StoreCore):
    """The async twin of ``RunStore``: the same methods, awaitable; open with ``open_async_store``."""

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
        self._ready = self._engine is None
        self._setup_lock: asyncio.Lock | None = None

    # -- execution -----------------------------------------------------------------------------

    async def _raw_call(self, operation: Callable[..., _T], *args: Any) -> _T:
        try:
            async with self._engine.connect() as connection:
                return await connection.run_sync(_on_dbapi, operation, args)  # type: ignore[no-any-return]
        except RunLifecycleError:
            raise
        except self._errors as exc:
            raise StoreError(f"the store {self._description} failed: {reason(exc)}") from exc
        except OSError as exc:
            raise StoreError(f"cannot reach {self._description}: {exc}") from exc

    async def _call(self, operation: Callable[..., _T], *args: Any) -> _T:
        self._check_open()
        if self._engine is None:
            return operation(None, *args)
        if not self._ready:
            if self._setup_lock is None:
                self._setup_lock = asyncio.Lock()
            async with self._setup_lock:
                if not self._ready:
                    await self._raw_call(self._backend.setup)
                    self._ready = True
        return await self._raw_call(operation, *args)

    # -- runs ----------------------------------------------------------------------------------

    async def create(self, run: Run) -> Run:
        """Store a new run (and its creation record); ``RunAlreadyExists`` if the id is taken."""
        return await self._insert(run, built=False)

    async def _insert(self, run: Run, *, built: bool) -> Run:
        row, created = self._new_row(run, built=built)
        await self._call(self._backend.insert, row, created)
        self._lifecycle.report(created)
        return run

    async def create_run(self, **fields: Unpack[RunFields]) -> Run:
        """Build a run from Letta's creation fields (validated) and store it."""
        return await self._insert(
            self._lifecycle.build(**fields),
            built=True,
        )

    async def get(self, run_id: str) -> Run:
        """The stored run; ``RunNotFound``."""
        return self._decode(await self._call(self._backend.fetch, check_run_id(run_id)))

    async def apply(
        self,
        run_id: str,
        trigger: str,
        *,
        stop_reason: StopReason | str | None = None,
        error: str | None = None,
    ) -> Run:
        """Apply ``trigger`` atomically; the run after it (the stored one for an idempotent no-op)."""
        planner = self._planner(trigger, stop_reason, error)
        plan = await self._call(
            self._backend.transition, check_run_id(run_id), planner, self._origin
        )
        return self._finish(plan)

    async def list(
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
        return [self._decode(row) for row in await self._call(self._backend.list_rows, query)]

    async def events(self, run_id: str) -> builtins.list[TransitionEvent]:
        """The run's accepted transitions, by ``seq`` (1, 2, ...)."""
        return self._events(await self._call(self._backend.records, check_run_id(run_id), False))

    async def history(self, run_id: str) -> builtins.list[AuditRecord]:
        """The run's creation record, transitions and rejected attempts, in the order they happened."""
        return self._history(await self._call(self._backend.records, check_run_id(run_id), True))

    async def heartbeat(self, run_id: str) -> datetime:
        """Renew the run's lease; the new expiry. ``IllegalTransition`` once the run has ended."""
        lease = self._heartbeat_lease()
        status = await self._call(self._backend.heartbeat, check_run_id(run_id), lease)
        if status is not None:
            raise self._heartbeat_refused(run_id, status)
        return from_us(lease.expires_us)

    async def reap(self, now: datetime | None = None) -> builtins.list[Run]:
        """Fail every unfinished run whose lease ran out before ``now``; the runs failed."""
        at = self._now() if now is None else check_aware("now", now)
        plans = await self._call(
            self._backend.reap, to_us(at), self._reap_planner(at), self._origin
        )
        for plan in plans:
            assert plan.event is not None
            self._lifecycle.report(plan.event)
        return [plan.run for plan in plans]

    async def delete(self, run_id: str) -> None:
        """Remove the run, its events and its deliveries; ``RunNotFound``."""
        await self._call(self._backend.delete, check_run_id(run_id))

    # -- the callback outbox -------------------------------------------------------------------

    async def claim_deliveries(
        self,
        now: datetime | None = None,
        *,
        limit: int = 100,
        lease: timedelta = DEFAULT_CLAIM_LEASE,
    ) -> builtins.list[PendingDelivery]:
        """Take the due deliveries (oldest first), withheld from other deliverers for ``lease``."""
        now_us, until_us, limit = self._claim_window(now, limit, lease)
        rows = await self._call(self._backend.claim, now_us, until_us, limit)
        return self._deliveries(rows, until_us)

    async def record_callback_attempt(
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
        row = await self._call(
            self._backend.record_attempt, delivery.run_id, delivery.seq, callback, next_us
        )
        return self._attempt_recorded(delivery, self._decode(row))

    async def pending_deliveries(self) -> builtins.list[PendingDelivery]:
        """Every unfinished delivery, due first."""
        return self._deliveries(await self._call(self._backend.pending))

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the store's connections (an engine handed in is left to its owner)."""
        if self._closed:
            return
        self._closed = True
        self._backend.close()
        if self._target.owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> AsyncRunStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def open_async_store(
    target: Any,
    *,
    clock: Clock | None = None,
    lease: timedelta = DEFAULT_LEASE,
    audit: AuditSink | None = None,
    record_rejections: bool = True,
    schema: str | None = None,
) -> AsyncRunStore:
    """Open an async store: ``memory://``, ``sqlite:///PATH`` (aiosqlite), ``postgresql://...``
    (psycopg async) or a SQLAlchemy ``AsyncEngine``. Same options as ``open_store``.

    Opening does no I/O: the tables are created by the first operation, which
    also reports an unreachable server as ``StoreError``.
    """
    opened = open_target(target, is_async=True, schema=schema)
    return AsyncRunStore(
        opened, clock=clock, lease=lease, audit=audit, record_rejections=record_rejections
    )
