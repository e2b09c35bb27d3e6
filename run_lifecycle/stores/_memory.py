"""The memory backend: the same rows as the SQL stores, in dicts, under one lock.

For tests and single-process tools. Holding one lock for each whole
operation makes every operation atomic, so compare-and-set never fails here;
the rows, filters and ordering are the SQL stores' own (``RunRow``), so a
program tested against ``memory://`` behaves the same on SQLite or PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import attrs

from .._events import RunCreated
from ..exceptions import RunAlreadyExists, RunNotFound
from ._base import BackendBase, ListQuery, Plan, Planner
from ._codec import NON_TERMINAL, Lease, RunRow, decode_run, new_row, to_us
from ._outbox import DONE, PENDING, OutboxRow, webhook_id

__all__ = ["MemoryBackend"]


class MemoryBackend(BackendBase):
    """Rows in memory; every operation holds ``_lock`` from its first read to its last write."""

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, RunRow] = {}
        self._events: dict[str, list[tuple[int, str]]] = {}
        self._rejections: dict[str, list[tuple[int, int, str]]] = {}
        self._outbox: dict[tuple[str, int], OutboxRow] = {}
        self._next_rejection = 1

    def setup(self, conn: Any) -> None:
        return None

    def close(self) -> None:
        return None

    def _row(self, run_id: str) -> RunRow:
        row = self._runs.get(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    def insert(self, conn: Any, row: RunRow, created: RunCreated) -> None:
        body = json.dumps(created.to_dict(), separators=(",", ":"))
        with self._lock:
            if row.id in self._runs:
                raise RunAlreadyExists(row.id)
            self._runs[row.id] = row
            self._events[row.id] = [(0, body)]
            self._rejections[row.id] = []

    def fetch(self, conn: Any, run_id: str) -> RunRow:
        with self._lock:
            return self._row(run_id)

    def transition(self, conn: Any, run_id: str, planner: Planner, origin: str) -> Plan:
        with self._lock:
            row = self._row(run_id)
            plan = planner(decode_run(row, origin=origin, check=False), row.lease)
            if plan.rejection is not None:
                body = json.dumps(plan.rejection.to_dict(), separators=(",", ":"))
                self._rejections[run_id].append((row.version, self._next_rejection, body))
                self._next_rejection += 1
            event = plan.event
            if event is None:
                return plan
            assert plan.lease is not None
            fresh = new_row(plan.run, origin=row.origin or origin, lease=plan.lease)
            self._runs[run_id] = attrs.evolve(
                fresh,
                created_monotonic_ns=row.created_monotonic_ns,
                callback_sent_at_us=row.callback_sent_at_us,
                callback_status_code=row.callback_status_code,
                callback_error=row.callback_error,
            )
            body = json.dumps(event.to_dict(), separators=(",", ":"))
            self._events[run_id].append((event.seq, body))
            if plan.outbox:
                at = to_us(event.at)
                self._outbox[(run_id, event.seq)] = OutboxRow(
                    run_id, event.seq, webhook_id(run_id, event.seq), 0, PENDING, at, at
                )
            return plan

    def expired(self, conn: Any, now_us: int) -> list[str]:
        with self._lock:
            rows = [
                row
                for row in self._runs.values()
                if row.status in NON_TERMINAL and row.lease_expires_us < now_us
            ]
        return [row.id for row in sorted(rows, key=lambda r: (r.lease_expires_us, r.id))]

    def list_rows(self, conn: Any, query: ListQuery) -> list[RunRow]:
        with self._lock:
            rows = list(self._runs.values())
            bounds = [
                (self._row(cursor).created_at_us, cursor) if cursor is not None else None
                for cursor in (query.before, query.after)
            ]
        before, after = bounds
        selected = [
            row
            for row in rows
            if (query.agent_id is None or row.agent_id == query.agent_id)
            and (query.statuses is None or row.status in query.statuses)
            and (query.background is None or row.background == query.background)
            and (query.stop_reason is None or row.stop_reason == query.stop_reason)
            and (query.conversation_id is None or row.conversation_id == query.conversation_id)
            and (before is None or (row.created_at_us, row.id) < before)
            and (after is None or (row.created_at_us, row.id) > after)
        ]
        selected.sort(key=lambda row: (row.created_at_us, row.id), reverse=query.descending)
        return selected[: query.limit]

    def records(
        self, conn: Any, run_id: str, rejections: bool
    ) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        with self._lock:
            self._row(run_id)
            return list(self._events[run_id]), list(self._rejections[run_id]) if rejections else []

    def heartbeat(self, conn: Any, run_id: str, lease: Lease) -> str | None:
        with self._lock:
            row = self._row(run_id)
            if row.status not in NON_TERMINAL:
                return row.status
            self._runs[run_id] = attrs.evolve(
                row, lease_expires_us=lease.expires_us, lease_renewed_us=lease.renewed_us
            )
            return None

    def delete(self, conn: Any, run_id: str) -> None:
        with self._lock:
            self._row(run_id)
            del self._runs[run_id], self._events[run_id], self._rejections[run_id]
            for key in [key for key in self._outbox if key[0] == run_id]:
                del self._outbox[key]

    def _due(self, now_us: int | None) -> list[OutboxRow]:
        rows = [
            row
            for row in self._outbox.values()
            if row.state == PENDING
            and row.next_attempt_us is not None
            and (now_us is None or row.next_attempt_us <= now_us)
        ]
        rows.sort(key=lambda r: (r.next_attempt_us, r.created_us, r.run_id, r.seq))
        return rows

    def claim(self, conn: Any, now_us: int, until_us: int, limit: int) -> list[OutboxRow]:
        with self._lock:
            taken = self._due(now_us)[:limit]
            for row in taken:
                self._outbox[(row.run_id, row.seq)] = attrs.evolve(row, next_attempt_us=until_us)
            return taken

    def record_attempt(
        self,
        conn: Any,
        run_id: str,
        seq: int,
        callback: tuple[int, int | None, str | None],
        next_us: int | None,
    ) -> RunRow:
        with self._lock:
            row = attrs.evolve(
                self._row(run_id),
                callback_sent_at_us=callback[0],
                callback_status_code=callback[1],
                callback_error=callback[2],
            )
            self._runs[run_id] = row
            delivery = self._outbox.get((run_id, seq))
            if delivery is not None and delivery.state == PENDING:
                self._outbox[(run_id, seq)] = attrs.evolve(
                    delivery,
                    attempts=delivery.attempts + 1,
                    next_attempt_us=next_us,
                    state=PENDING if next_us is not None else DONE,
                )
            return row

    def pending(self, conn: Any) -> list[OutboxRow]:
        with self._lock:
            return self._due(None)
