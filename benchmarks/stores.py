"""Stores: lifecycles per second through the SQL stores against the raw driver doing the same.

A lifecycle is ``create_run`` then ``apply`` start, first_token, complete:
four transactions. The store runs each as ``BEGIN`` (``BEGIN IMMEDIATE`` on
SQLite), read, compare-and-set ``UPDATE``, event ``INSERT``, ``COMMIT``.

The baseline is what a careful hand-written application would run on the
raw driver (``sqlite3``, ``psycopg``): the very same SQL text (taken from the
store's rendered ``Statements``), the same parameters, the same transaction
boundaries, on the same settings (SQLite: WAL, ``synchronous=NORMAL``, the
same busy timeout; PostgreSQL: the server's defaults), with the documents and
event bodies built by hand (a dict and ``json.dumps``). It keeps one
connection instead of borrowing one from a pool per call. Each side writes
its own file (SQLite) or schema (PostgreSQL), created by the store's own DDL.

``tests/test_benchmarks.py`` traces both sides on SQLite and checks they send
the same statement sequence, so the baseline cannot drift from the store.

PostgreSQL runs when ``RUN_LIFECYCLE_POSTGRES_URL`` is set (skipped with a
note otherwise); its schemas are dropped afterwards. Then the store is driven
by 1, 2, 4 and 8 threads at once, each with its own runs, and the throughput
of each is given as a multiple of one thread's, with raw psycopg (a connection
per thread) measured the same way beside it: how far the server itself scales.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from run_lifecycle.stores import DEFAULT_LEASE, RunStore, open_store
from run_lifecycle.stores._schema import Statements, Tables, compile_dialect

from ._harness import Figure, Report, paired, ratio_figure

__all__ = ["POSTGRES_ENV", "RawLifecycles", "run", "sqlite_connect", "store_batch"]

POSTGRES_ENV = "RUN_LIFECYCLE_POSTGRES_URL"
AGENT_ID = "agent-bench"
#: The busy timeout the store's engines give SQLite (``stores._engines``), in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000
_COMPACT = (",", ":")
_LEASE_US = DEFAULT_LEASE // timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ORIGIN = uuid.uuid4().hex


def store_batch(store: RunStore) -> Callable[[int], object]:
    """``n`` lifecycles through ``store``."""

    def batch(n: int) -> None:
        for _ in range(n):
            run_id = store.create_run(agent_id=AGENT_ID).id
            store.apply(run_id, "start")
            store.apply(run_id, "first_token")
            store.apply(run_id, "complete")

    return batch


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A ``sqlite3`` connection set up as the store sets up its own."""
    conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.isolation_level = None
    conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _us(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


class RawLifecycles:
    """The same lifecycles by hand on a DB-API connection: the store's SQL, no library."""

    def __init__(self, conn: Any, statements: Statements, *, sqlite: bool) -> None:
        self.conn = conn
        self.st = statements
        self.sqlite = sqlite

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        cursor = self.conn.cursor()
        try:
            if self.sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            yield cursor
        except BaseException:
            self.conn.rollback()
            raise
        else:
            self.conn.commit()
        finally:
            cursor.close()

    def _event(
        self,
        cursor: Any,
        run_id: str,
        seq: int,
        kind: str,
        at: datetime,
        body: dict[str, Any],
    ) -> None:
        cursor.execute(
            self.st.insert_event,
            {
                "run_id": run_id,
                "seq": seq,
                "kind": kind,
                "at_us": _us(at),
                "body": json.dumps(body, separators=_COMPACT),
            },
        )

    def create(self) -> tuple[str, int]:
        """Insert a new run and its creation event; its id and monotonic creation reading."""
        now = datetime.now(UTC)
        mono = time.monotonic_ns()
        run_id = f"run-{uuid.uuid4()}"
        created = _iso(now)
        doc = {
            "id": run_id,
            "agent_id": AGENT_ID,
            "created_at": created,
            "status": "created",
            "completed_at": None,
            "conversation_id": None,
            "base_template_id": None,
            "background": None,
            "metadata": None,
            "request_config": None,
            "stop_reason": None,
            "callback_url": None,
            "ttft_ns": None,
            "total_duration_ns": None,
        }
        now_us = _us(now)
        row = {
            "id": run_id,
            "agent_id": AGENT_ID,
            "status": "created",
            "created_at_us": now_us,
            "background": None,
            "stop_reason": None,
            "conversation_id": None,
            "version": 0,
            "lease_expires_us": now_us + _LEASE_US,
            "lease_renewed_us": now_us,
            "document": json.dumps(doc, separators=_COMPACT, ensure_ascii=False),
            "callback_sent_at_us": None,
            "callback_status_code": None,
            "callback_error": None,
            "origin": _ORIGIN,
            "created_monotonic_ns": mono,
        }
        wire = {**doc, "callback_sent_at": None, "callback_status_code": None}
        wire["callback_error"] = None
        body = {
            "kind": "created",
            "run_id": run_id,
            "agent_id": AGENT_ID,
            "seq": 0,
            "at": created,
            "run": wire,
        }
        with self._transaction() as cursor:
            cursor.execute(self.st.insert_run, row)
            self._event(cursor, run_id, 0, "created", now, body)
        return run_id, mono

    def apply(self, run_id: str, trigger: str, source: str, dest: str, created_mono: int) -> None:
        """One transition: read, check the status, update the document, CAS, event, commit."""
        with self._transaction() as cursor:
            cursor.execute(self.st.select_run, {"key_id": run_id})
            found = cursor.fetchone()
            if found is None or found[2] != source:
                raise RuntimeError(f"cannot {trigger} run {run_id}")
            version = found[7]
            doc = json.loads(found[10])
            now = datetime.now(UTC)
            elapsed = max(0, time.monotonic_ns() - created_mono)
            changes: dict[str, Any]
            if trigger == "first_token":
                changes = {"ttft_ns": elapsed}
            elif trigger == "complete":
                total = max(elapsed, doc["ttft_ns"] or 0)
                changes = {
                    "status": dest,
                    "stop_reason": "end_turn",
                    "completed_at": _iso(now),
                    "total_duration_ns": total,
                }
            else:
                changes = {"status": dest}
            doc.update(changes)
            now_us = _us(now)
            cursor.execute(
                self.st.cas_update,
                {
                    "key_id": run_id,
                    "expected": version,
                    "new_status": dest,
                    "new_stop_reason": doc["stop_reason"],
                    "new_version": version + 1,
                    "new_document": json.dumps(doc, separators=_COMPACT, ensure_ascii=False),
                    "new_expires": now_us + _LEASE_US,
                    "new_renewed": now_us,
                },
            )
            if cursor.rowcount != 1:
                raise RuntimeError(f"lost a race on run {run_id}")
            body = {
                "kind": "transition",
                "run_id": run_id,
                "agent_id": AGENT_ID,
                "seq": version + 1,
                "trigger": trigger,
                "from_status": source,
                "to_status": dest,
                "stop_reason": doc["stop_reason"] if trigger == "complete" else None,
                "at": _iso(now),
                "changes": changes,
            }
            self._event(cursor, run_id, version + 1, "transition", now, body)

    def batch(self, n: int) -> None:
        """``n`` lifecycles."""
        for _ in range(n):
            run_id, mono = self.create()
            self.apply(run_id, "start", "created", "running", mono)
            self.apply(run_id, "first_token", "running", "running", mono)
            self.apply(run_id, "complete", "running", "completed", mono)


# -- SQLite ---------------------------------------------------------------------------------


def _sqlite(directory: Path, *, ops: int, rounds: int) -> Figure:
    store = open_store(f"sqlite:///{directory / 'store.db'}")
    raw_path = directory / "raw.db"
    open_store(f"sqlite:///{raw_path}").close()  # the same tables, made by the store's DDL
    conn = sqlite_connect(raw_path)
    try:
        raw = RawLifecycles(conn, Statements(Tables(), compile_dialect("sqlite")), sqlite=True)
        pair = paired(store_batch(store), raw.batch, ops=ops, rounds=rounds)
    finally:
        conn.close()
        store.close()
    return ratio_figure(
        "stores",
        "SQLite store vs raw sqlite3, same transactions",
        pair,
        target=0.7,
        subject="store",
        baseline="sqlite3",
        rate=True,
    )


# -- PostgreSQL -----------------------------------------------------------------------------


def _drop_schemas(url: str, schemas: list[str]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _psycopg_url(url: str) -> str:
    """The URL as libpq takes it (SQLAlchemy's ``+psycopg`` driver suffix removed)."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+")[0] + sep + rest


def _postgres(url: str, *, ops: int, rounds: int) -> Figure:
    import psycopg

    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    store_schema, raw_schema = f"bench_store_{tag}", f"bench_raw_{tag}"
    try:
        store = open_store(url, schema=store_schema)
        open_store(url, schema=raw_schema).close()
        conn = psycopg.connect(_psycopg_url(url))
        try:
            statements = Statements(Tables(raw_schema), compile_dialect("postgresql"))
            raw = RawLifecycles(conn, statements, sqlite=False)
            pair = paired(store_batch(store), raw.batch, ops=ops, rounds=rounds)
        finally:
            conn.close()
            store.close()
    finally:
        _drop_schemas(_psycopg_url(url), [store_schema, raw_schema])
    return ratio_figure(
        "stores",
        "PostgreSQL store vs raw psycopg, same transactions",
        pair,
        target=0.7,
        subject="store",
        baseline="psycopg",
        rate=True,
    )


def _throughput(batches: Sequence[Callable[[int], object]], per_worker: int) -> float:
    """Lifecycles per second with one thread per batch, each doing ``per_worker`` of its own."""
    workers = len(batches)
    start_line = threading.Barrier(workers + 1)
    errors: list[BaseException] = []

    def work(batch: Callable[[int], object]) -> None:
        start_line.wait()
        try:
            batch(per_worker)
        except BaseException as exc:  # reported after join: a benchmark must not hang
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(b,), daemon=True) for b in batches]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return workers * per_worker / elapsed


def _postgres_scaling(url: str, *, per_worker: int, rounds: int) -> list[Figure]:
    """The store with 1, 2, 4, 8 threads (one shared store), and raw psycopg the same way.

    The raw side (a connection per thread) says how far the database itself
    scales on this machine, so a flat store curve can be told from a flat server.
    """
    import psycopg

    counts = (1, 2, 4, 8)
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    schema, raw_schema = f"bench_scale_{tag}", f"bench_scale_raw_{tag}"
    rates: dict[int, list[float]] = {n: [] for n in counts}
    raw_rates: dict[int, list[float]] = {n: [] for n in counts}
    connections: list[Any] = []
    try:
        store = open_store(url, schema=schema)
        open_store(url, schema=raw_schema).close()
        statements = Statements(Tables(raw_schema), compile_dialect("postgresql"))
        try:
            for _ in range(max(counts)):
                connections.append(psycopg.connect(_psycopg_url(url)))
            raws = [RawLifecycles(conn, statements, sqlite=False).batch for conn in connections]
            store_batch(store)(max(1, per_worker // 4))  # warm the pool and the caches
            for _ in range(rounds):  # interleaved, like the pairs: 1 2 4 8 1 2 4 8 ...
                for n in counts:
                    rates[n].append(_throughput([store_batch(store)] * n, per_worker))
                    raw_rates[n].append(_throughput(raws[:n], per_worker))
        finally:
            for conn in connections:
                conn.close()
            store.close()
    finally:
        _drop_schemas(_psycopg_url(url), [schema, raw_schema])
    one = statistics.median(rates[1])
    figures = []
    for n in counts:
        # Each round's rate against the same round's single-thread rate, then the median.
        ratios = [r / base for r, base in zip(rates[n], rates[1], strict=True)]
        raw_ratios = [r / base for r, base in zip(raw_rates[n], raw_rates[1], strict=True)]
        median = statistics.median(rates[n])
        raw_median = statistics.median(raw_rates[n])
        figures.append(
            Figure(
                group="stores",
                name=f"PostgreSQL store, {n} thread{'s' if n > 1 else ''} vs 1",
                value=statistics.median(ratios),
                unit="x",
                target=None if n == 1 else "> 1",
                context=f"{median:,.0f} lifecycles/s vs {one:,.0f}/s with 1; raw psycopg"
                f" {raw_median:,.0f}/s, {statistics.median(raw_ratios):.2f}x its 1-thread rate"
                f" (median of {rounds} rounds x {per_worker} per thread)",
                data={
                    "workers": n,
                    "rates": rates[n],
                    "ratios": ratios,
                    "raw_rates": raw_rates[n],
                    "raw_ratios": raw_ratios,
                    "per_worker": per_worker,
                },
            )
        )
    return figures


def run(*, quick: bool, tiny: bool = False) -> Report:
    """SQLite store vs sqlite3; PostgreSQL store vs psycopg and its scaling (when configured)."""
    report = Report()
    if tiny:
        sizes = {"sqlite": (2, 2), "pg": (2, 2), "scale": (1, 1)}
    elif quick:
        sizes = {"sqlite": (60, 5), "pg": (15, 3), "scale": (6, 1)}
    else:
        sizes = {"sqlite": (200, 11), "pg": (40, 7), "scale": (30, 5)}
    with tempfile.TemporaryDirectory(prefix="run-lifecycle-bench-") as directory:
        ops, rounds = sizes["sqlite"]
        report.add(_sqlite(Path(directory), ops=ops, rounds=rounds))
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        report.note(f"PostgreSQL skipped: set {POSTGRES_ENV} to a database URL to measure it.")
        return report
    ops, rounds = sizes["pg"]
    report.add(_postgres(url, ops=ops, rounds=rounds))
    per_worker, rounds = sizes["scale"]
    for figure in _postgres_scaling(url, per_worker=per_worker, rounds=rounds):
        report.add(figure)
    return report
