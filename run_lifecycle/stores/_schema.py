"""The SQL tables (SQLAlchemy Core) and their statements, rendered once per dialect.

Tables are defined here once and rendered to SQL text for the store's dialect
when the store opens: the hot path then hands finished SQL and a parameter
dict to the DB-API cursor, with no per-call compilation, reflection or ORM.
Parameters are named (``:name`` on SQLite, ``%(name)s`` on psycopg), so the
same dict serves both dialects, sync and async.

Every table name starts with ``run_lifecycle_`` so the tables can live beside
an application's own (Letta's server has a ``runs`` table of its own).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable

from ._codec import NON_TERMINAL, RUN_COLUMNS
from ._outbox import OUTBOX_COLUMNS, PENDING

__all__ = ["SCHEMA_VERSION", "Statements", "Tables", "compile_dialect"]

#: Bumped whenever the tables change shape; recorded in ``run_lifecycle_schema_version``.
SCHEMA_VERSION = 1

_PREFIX = "run_lifecycle_"


def _big_id() -> sa.types.TypeEngine[int]:
    # SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets BIGSERIAL.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Tables:
    """The library's tables in one ``MetaData``, in ``schema`` (PostgreSQL) or the default one."""

    def __init__(self, schema: str | None = None) -> None:
        self.metadata = sa.MetaData(schema=schema)
        self.runs = sa.Table(
            f"{_PREFIX}runs",
            self.metadata,
            sa.Column("id", sa.String(255), primary_key=True),
            sa.Column("agent_id", sa.String(255), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("created_at_us", sa.BigInteger, nullable=False),
            sa.Column("background", sa.Boolean, nullable=True),
            sa.Column("stop_reason", sa.String(64), nullable=True),
            sa.Column("conversation_id", sa.String(255), nullable=True),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("lease_expires_us", sa.BigInteger, nullable=False),
            sa.Column("lease_renewed_us", sa.BigInteger, nullable=False),
            sa.Column("document", sa.Text, nullable=False),
            sa.Column("callback_sent_at_us", sa.BigInteger, nullable=True),
            sa.Column("callback_status_code", sa.Integer, nullable=True),
            sa.Column("callback_error", sa.Text, nullable=True),
            sa.Column("origin", sa.String(32), nullable=True),
            sa.Column("created_monotonic_ns", sa.BigInteger, nullable=True),
            sa.Index(f"{_PREFIX}runs_created", "created_at_us", "id"),
            sa.Index(f"{_PREFIX}runs_agent", "agent_id", "created_at_us", "id"),
            sa.Index(f"{_PREFIX}runs_lease", "status", "lease_expires_us"),
        )
        assert tuple(self.runs.c.keys()) == RUN_COLUMNS
        self.events = sa.Table(
            f"{_PREFIX}events",
            self.metadata,
            sa.Column("run_id", sa.String(255), primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("at_us", sa.BigInteger, nullable=False),
            sa.Column("body", sa.Text, nullable=False),
        )
        self.rejections = sa.Table(
            f"{_PREFIX}rejections",
            self.metadata,
            sa.Column("id", _big_id(), primary_key=True, autoincrement=True),
            sa.Column("run_id", sa.String(255), nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("at_us", sa.BigInteger, nullable=False),
            sa.Column("body", sa.Text, nullable=False),
            sa.Index(f"{_PREFIX}rejections_run", "run_id", "version", "id"),
        )
        self.outbox = sa.Table(
            f"{_PREFIX}outbox",
            self.metadata,
            sa.Column("run_id", sa.String(255), primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("webhook_id", sa.String(300), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("next_attempt_us", sa.BigInteger, nullable=True),
            sa.Column("created_us", sa.BigInteger, nullable=False),
            sa.Index(f"{_PREFIX}outbox_due", "state", "next_attempt_us"),
        )
        assert tuple(self.outbox.c.keys()) == OUTBOX_COLUMNS
        self.schema_version = sa.Table(
            f"{_PREFIX}schema_version",
            self.metadata,
            sa.Column("version", sa.Integer, nullable=False),
        )


def compile_dialect(name: str) -> Dialect:
    """A dialect that renders named parameters the DB-API drivers accept as a dict."""
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.dialect(paramstyle="named")
    from sqlalchemy.dialects.postgresql import psycopg

    return psycopg.dialect()  # type: ignore[no-untyped-call]


def _literal(value: str) -> sa.ColumnElement[Any]:
    # Only for the library's own constants (status names, outbox states): never user input.
    return sa.literal_column("'" + value.replace("'", "''") + "'")


class Statements:
    """Every statement the stores run, as SQL text for one dialect and schema."""

    def __init__(self, tables: Tables, dialect: Dialect) -> None:
        self.tables = tables
        self.dialect = dialect
        runs, events, rejections, outbox = (
            tables.runs,
            tables.events,
            tables.rejections,
            tables.outbox,
        )
        p = sa.bindparam
        unfinished = runs.c.status.in_([_literal(s) for s in NON_TERMINAL])
        pending = outbox.c.state == _literal(PENDING)
        r = self.render

        self.ddl: list[str] = []
        if tables.metadata.schema is not None:
            self.ddl.append(r(CreateSchema(tables.metadata.schema, if_not_exists=True)))
        for table in tables.metadata.sorted_tables:
            self.ddl.append(r(CreateTable(table, if_not_exists=True)))
            self.ddl.extend(r(CreateIndex(index, if_not_exists=True)) for index in table.indexes)
        self.select_schema_version = r(sa.select(tables.schema_version.c.version))
        self.insert_schema_version = r(tables.schema_version.insert())

        self.insert_run = r(runs.insert())
        self.select_run = r(sa.select(*runs.c).where(runs.c.id == p("key_id")))
        self.select_status = r(sa.select(runs.c.status).where(runs.c.id == p("key_id")))
        cas = (
            runs.update()
            .where(runs.c.id == p("key_id"), runs.c.version == p("expected"))
            .values(
                status=p("new_status"),
                stop_reason=p("new_stop_reason"),
                version=p("new_version"),
                document=p("new_document"),
                lease_expires_us=p("new_expires"),
                lease_renewed_us=p("new_renewed"),
            )
        )
        self.cas_update = r(cas)
        self.cas_update_expired = r(cas.where(runs.c.lease_expires_us < p("guard")))
        self.insert_event = r(events.insert())
        self.insert_outbox = r(outbox.insert())
        self.insert_rejection = r(
            rejections.insert().values(
                run_id=p("run_id"), version=p("version"), at_us=p("at_us"), body=p("body")
            )
        )
        self.heartbeat = r(
            runs.update()
            .where(runs.c.id == p("key_id"), unfinished)
            .values(lease_expires_us=p("new_expires"), lease_renewed_us=p("new_renewed"))
        )
        self.expired = r(
            sa.select(runs.c.id)
            .where(unfinished, runs.c.lease_expires_us < p("now"))
            .order_by(runs.c.lease_expires_us, runs.c.id)
        )
        self.select_events = r(
            sa.select(events.c.seq, events.c.body)
            .where(events.c.run_id == p("key_id"))
            .order_by(events.c.seq)
        )
        self.select_rejections = r(
            sa.select(rejections.c.version, rejections.c.id, rejections.c.body)
            .where(rejections.c.run_id == p("key_id"))
            .order_by(rejections.c.version, rejections.c.id)
        )
        self.delete_run = [
            r(table.delete().where(table.c[key] == p("key_id")))
            for table, key in (
                (outbox, "run_id"),
                (rejections, "run_id"),
                (events, "run_id"),
                (runs, "id"),
            )
        ]
        due_order = (outbox.c.next_attempt_us, outbox.c.created_us, outbox.c.run_id, outbox.c.seq)
        self.claim_select = r(
            sa.select(*outbox.c)
            .where(pending, outbox.c.next_attempt_us <= p("now"))
            .order_by(*due_order)
            .limit(p("limit", type_=sa.Integer))
            .offset(p("offset", type_=sa.Integer))
            .with_for_update(skip_locked=True)
        )
        self.claim_update = r(
            outbox.update()
            .where(outbox.c.run_id == p("key_run_id"), outbox.c.seq == p("key_seq"))
            .values(next_attempt_us=p("until"))
        )
        self.pending = r(sa.select(*outbox.c).where(pending).order_by(*due_order))
        self.callback_run = r(
            runs.update()
            .where(runs.c.id == p("key_id"))
            .values(
                callback_sent_at_us=p("sent"),
                callback_status_code=p("code"),
                callback_error=p("error"),
            )
        )
        self.callback_outbox = r(
            outbox.update()
            .where(outbox.c.run_id == p("key_run_id"), outbox.c.seq == p("key_seq"), pending)
            .values(
                attempts=outbox.c.attempts + sa.literal_column("1"),
                next_attempt_us=p("next"),
                state=p("new_state"),
            )
        )

    def render(self, statement: Any) -> str:
        return str(statement.compile(dialect=self.dialect))

    def list_runs(
        self,
        *,
        filters: tuple[str, ...],
        statuses: int,
        cursors: tuple[bool, bool],
        descending: bool,
    ) -> str:
        """The ``list`` statement for one shape of query (memoised by the caller)."""
        runs = self.tables.runs
        p = sa.bindparam
        query = sa.select(*runs.c)
        for name in filters:
            query = query.where(runs.c[name] == p(f"f_{name}"))
        if statuses:
            query = query.where(runs.c.status.in_([p(f"status_{i}") for i in range(statuses)]))
        key = sa.tuple_(runs.c.created_at_us, runs.c.id)
        if cursors[0]:
            query = query.where(key < sa.tuple_(p("before_us"), p("before_id")))
        if cursors[1]:
            query = query.where(key > sa.tuple_(p("after_us"), p("after_id")))
        columns = (runs.c.created_at_us, runs.c.id)
        query = query.order_by(*(c.desc() if descending else c.asc() for c in columns))
        limited = query.limit(p("limit", type_=sa.Integer)).offset(p("offset", type_=sa.Integer))
        return self.render(limited)
