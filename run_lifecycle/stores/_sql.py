"""The SQL backend: SQLite and PostgreSQL through plain DB-API calls on pooled connections.

Every operation is a synchronous function of a DB-API connection. The sync
store calls it on a connection from its engine's pool; the async store calls
the same function inside ``AsyncConnection.run_sync``, where SQLAlchemy's
adapters give aiosqlite and psycopg's async connection the same synchronous
face. Statements are rendered once (``Statements``), so a transition costs its
round trips and nothing more: ``BEGIN``, read, compare-and-set ``UPDATE``,
event ``INSERT`` (plus the outbox row of a terminal transition), ``COMMIT``.

SQLite write transactions start with ``BEGIN IMMEDIATE``: the write lock is
taken before the read, so concurrent writers (threads or processes) queue on
the busy timeout instead of failing when a read transaction tries to upgrade.
PostgreSQL runs at the server's isolation level (READ COMMITTED by default):
there the compare-and-set can lose, and the transition is re-read and
re-planned, up to ``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Literal, TypeVar

import attrs

from .._events import RunCreated
from ..exceptions import RunAlreadyExists, RunNotFound, StoreConflict, StoreError
from ._base import MAX_ATTEMPTS, BackendBase, ListQuery, Plan, Planner
from ._codec import Lease, RunRow, decode_run, encode_document, to_us
from ._outbox import DONE, PENDING, OutboxRow, webhook_id
from ._schema import SCHEMA_VERSION, Statements, Tables, compile_dialect

__all__ = ["SQLBackend"]

_T = TypeVar("_T")
Mode = Literal["write", "read", "single"]

#: How many times an operation is retried after a lock timeout or a serialization failure.
_BUSY_ATTEMPTS = 3
#: Any constant will do: it only has to be the same for every process creating the tables.
_SETUP_LOCK = 0x72756E6C  # "runl"
_COMPACT = (",", ":")


class _LostRace(Exception):
    """The compare-and-set found another version: read again and re-plan."""


class SQLBackend(BackendBase):
    """Runs, events, rejections and the outbox in SQL tables (``run_lifecycle_*``)."""

    def __init__(self, name: str, dbapi: Any, schema: str | None = None) -> None:
        self.name = name
        self.statements = Statements(Tables(schema), compile_dialect(name))
        self._sqlite = name == "sqlite"
        self.driver_error: type[Exception] = dbapi.Error
        self._integrity: type[Exception] = dbapi.IntegrityError
        self._operational: type[Exception] = dbapi.OperationalError
        self._list_sql: dict[tuple[Any, ...], str] = {}

    def close(self) -> None:
        return None

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, conn: Any, mode: Mode) -> Iterator[Any]:
        cursor = conn.cursor()
        try:
            if self._sqlite and mode != "single":
                if getattr(conn, "in_transaction", False):
                    conn.rollback()  # a driver that keeps a transaction open between statements
                if not getattr(conn, "in_transaction", False):
                    cursor.execute("BEGIN IMMEDIATE" if mode == "write" else "BEGIN")
            yield cursor
        except BaseException:
            with suppress(Exception):  # the connection is gone; the original error says why
                conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cursor.close()

    def _busy(self, exc: BaseException) -> bool:
        if getattr(exc, "sqlstate", None) in ("40001", "40P01"):  # serialization, deadlock
            return True
        if self._sqlite and isinstance(exc, self._operational):
            text = str(exc).lower()
            return "locked" in text or "busy" in text
        return False

    def _run(self, conn: Any, mode: Mode, body: Callable[[Any], _T], run_id: str = "") -> _T:
        busy = 0
        for _ in range(MAX_ATTEMPTS):
            try:
                with self._transaction(conn, mode) as cursor:
                    return body(cursor)
            except _LostRace:
                continue
            except self.driver_error as exc:
                busy += 1
                if busy < _BUSY_ATTEMPTS and self._busy(exc):
                    continue
                raise
        raise StoreConflict(run_id, MAX_ATTEMPTS)

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, conn: Any) -> None:
        st = self.statements

        def body(cursor: Any) -> None:
            if (
                not self._sqlite
            ):  # serialise concurrent first opens (CREATE ... IF NOT EXISTS races)
                cursor.execute(f"SELECT pg_advisory_xact_lock({_SETUP_LOCK})")
            for ddl in st.ddl:
                cursor.execute(ddl)
            cursor.execute(st.select_schema_version)
            versions = [row[0] for row in cursor.fetchall()]
            if not versions:
                cursor.execute(st.insert_schema_version, {"version": SCHEMA_VERSION})
            elif max(versions) > SCHEMA_VERSION:
                raise StoreError(
                    f"the database holds run-lifecycle tables of schema version {max(versions)},"
                    f" newer than this library's {SCHEMA_VERSION}; upgrade run-lifecycle"
                )

        self._run(conn, "write", body)

    # -- runs ----------------------------------------------------------------------------------

    def insert(self, conn: Any, row: RunRow, created: RunCreated) -> None:
        st = self.statements
        event = {
            "run_id": row.id,
            "seq": 0,
            "kind": "created",
            "at_us": row.created_at_us,
            "body": json.dumps(created.to_dict(), separators=_COMPACT),
        }

        def body(cursor: Any) -> None:
            try:
                cursor.execute(st.insert_run, attrs.asdict(row, recurse=False))
            except self._integrity:
                raise RunAlreadyExists(row.id) from None
            cursor.execute(st.insert_event, event)

        self._run(conn, "write", body, row.id)

    def _select(self, cursor: Any, run_id: str) -> RunRow:
        cursor.execute(self.statements.select_run, {"key_id": run_id})
        found = cursor.fetchone()
        if found is None:
            raise RunNotFound(run_id)
        return RunRow(*found)

    def fetch(self, conn: Any, run_id: str) -> RunRow:
        return self._run(conn, "single", lambda cursor: self._select(cursor, run_id), run_id)

    def transition(self, conn: Any, run_id: str, planner: Planner, origin: str) -> Plan:
        st = self.statements

        def body(cursor: Any) -> Plan:
            row = self._select(cursor, run_id)
            plan = planner(decode_run(row, origin=origin, check=False), row.lease)
            if plan.rejection is not None:
                rejection = plan.rejection
                cursor.execute(
                    st.insert_rejection,
                    {
                        "run_id": run_id,
                        "version": row.version,
                        "at_us": to_us(rejection.at),
                        "body": json.dumps(rejection.to_dict(), separators=_COMPACT),
                    },
                )
            event = plan.event
            if event is None:
                return plan
            new, lease = plan.run, plan.lease
            assert lease is not None
            params = {
                "key_id": run_id,
                "expected": row.version,
                "new_status": new.status.value,
                "new_stop_reason": None if new.stop_reason is None else new.stop_reason.value,
                "new_version": new.version,
                "new_document": encode_document(new),
                "new_expires": lease.expires_us,
                "new_renewed": lease.renewed_us,
            }
            if plan.lease_guard_us is None:
                cursor.execute(st.cas_update, params)
            else:
                params["guard"] = plan.lease_guard_us
                cursor.execute(st.cas_update_expired, params)
            if cursor.rowcount != 1:
                raise _LostRace
            at_us = to_us(event.at)
            cursor.execute(
                st.insert_event,
                {
                    "run_id": run_id,
                    "seq": event.seq,
                    "kind": event.kind,
                    "at_us": at_us,
                    "body": json.dumps(event.to_dict(), separators=_COMPACT),
                },
            )
            if plan.outbox:
                cursor.execute(
                    st.insert_outbox,
                    attrs.asdict(
                        OutboxRow(
                            run_id,
                            event.seq,
                            webhook_id(run_id, event.seq),
                            0,
                            PENDING,
                            at_us,
                            at_us,
                        ),
                        recurse=False,
                    ),
                )
            return plan

        return self._run(conn, "write", body, run_id)

    def expired(self, conn: Any, now_us: int) -> list[str]:
        def body(cursor: Any) -> list[str]:
            cursor.execute(self.statements.expired, {"now": now_us})
            return [row[0] for row in cursor.fetchall()]

        return self._run(conn, "single", body)

    def list_rows(self, conn: Any, query: ListQuery) -> list[RunRow]:
        filters = tuple(
            name
            for name in ("agent_id", "background", "stop_reason", "conversation_id")
            if getattr(query, name) is not None
        )
        statuses = query.statuses
        if statuses is not None and not statuses:
            return []
        shape = (
            filters,
            len(statuses or ()),
            (query.before is not None, query.after is not None),
            query.descending,
        )
        sql = self._list_sql.get(shape)
        if sql is None:
            sql = self.statements.list_runs(
                filters=filters, statuses=shape[1], cursors=shape[2], descending=query.descending
            )
            self._list_sql[shape] = sql
        params: dict[str, Any] = {f"f_{name}": getattr(query, name) for name in filters}
        params.update({f"status_{i}": value for i, value in enumerate(statuses or ())})
        params["limit"] = query.limit
        params["offset"] = 0

        def body(cursor: Any) -> list[RunRow]:
            for name, cursor_id in (("before", query.before), ("after", query.after)):
                if cursor_id is not None:
                    anchor = self._select(cursor, cursor_id)
                    params[f"{name}_us"] = anchor.created_at_us
                    params[f"{name}_id"] = anchor.id
            cursor.execute(sql, params)
            return [RunRow(*row) for row in cursor.fetchall()]

        return self._run(conn, "read", body)

    def records(
        self, conn: Any, run_id: str, rejections: bool
    ) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        st = self.statements

        def body(cursor: Any) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
            cursor.execute(st.select_status, {"key_id": run_id})
            if cursor.fetchone() is None:
                raise RunNotFound(run_id)
            cursor.execute(st.select_events, {"key_id": run_id})
            events = [(row[0], row[1]) for row in cursor.fetchall()]
            refused: list[tuple[int, int, str]] = []
            if rejections:
                cursor.execute(st.select_rejections, {"key_id": run_id})
                refused = [(row[0], row[1], row[2]) for row in cursor.fetchall()]
            return events, refused

        return self._run(conn, "read", body, run_id)

    def heartbeat(self, conn: Any, run_id: str, lease: Lease) -> str | None:
        st = self.statements
        params = {
            "key_id": run_id,
            "new_expires": lease.expires_us,
            "new_renewed": lease.renewed_us,
        }

        def body(cursor: Any) -> str | None:
            cursor.execute(st.heartbeat, params)
            if cursor.rowcount == 1:
                return None
            cursor.execute(st.select_status, {"key_id": run_id})
            found = cursor.fetchone()
            if found is None:
                raise RunNotFound(run_id)
            return str(found[0])

        return self._run(conn, "write", body, run_id)

    def delete(self, conn: Any, run_id: str) -> None:
        st = self.statements

        def body(cursor: Any) -> None:
            cursor.execute(st.select_status, {"key_id": run_id})
            if cursor.fetchone() is None:
                raise RunNotFound(run_id)
            for statement in st.delete_run:
                cursor.execute(statement, {"key_id": run_id})

        self._run(conn, "write", body, run_id)

    # -- the outbox ----------------------------------------------------------------------------

    def claim(self, conn: Any, now_us: int, until_us: int, limit: int) -> list[OutboxRow]:
        st = self.statements

        def body(cursor: Any) -> list[OutboxRow]:
            cursor.execute(st.claim_select, {"now": now_us, "limit": limit, "offset": 0})
            rows = [OutboxRow(*row) for row in cursor.fetchall()]
            if rows:
                cursor.executemany(
                    st.claim_update,
                    [{"key_run_id": r.run_id, "key_seq": r.seq, "until": until_us} for r in rows],
                )
            return rows

        return self._run(conn, "write", body)

    def record_attempt(
        self,
        conn: Any,
        run_id: str,
        seq: int,
        callback: tuple[int, int | None, str | None],
        next_us: int | None,
    ) -> RunRow:
        st = self.statements
        sent, code, error = callback

        def body(cursor: Any) -> RunRow:
            cursor.execute(
                st.callback_run, {"key_id": run_id, "sent": sent, "code": code, "error": error}
            )
            if cursor.rowcount != 1:
                raise RunNotFound(run_id)
            cursor.execute(
                st.callback_outbox,
                {
                    "key_run_id": run_id,
                    "key_seq": seq,
                    "next": next_us,
                    "new_state": PENDING if next_us is not None else DONE,
                },
            )
            return self._select(cursor, run_id)

        return self._run(conn, "write", body, run_id)

    def pending(self, conn: Any) -> list[OutboxRow]:
        def body(cursor: Any) -> list[OutboxRow]:
            cursor.execute(self.statements.pending)
            return [OutboxRow(*row) for row in cursor.fetchall()]

        return self._run(conn, "single", body)
