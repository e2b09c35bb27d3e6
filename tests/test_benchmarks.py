"""The benchmarks run, compare like with like, and report well-formed figures (never speed)."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import Figure, Report, paired, ratio_figure
from benchmarks.__main__ import BEGIN, END, main, write_markdown
from benchmarks.engine import IMPLEMENTATIONS, Collect
from run_lifecycle import ManualClock, Run, RunCreated, RunStatus, TransitionEvent


class TickingClock(ManualClock):
    """A manual clock that moves on by a millisecond at every wall-time reading."""

    def now(self) -> datetime:
        self.advance(0.001)
        return super().now()


def _well_formed(report: Report, group: str) -> None:
    assert report.figures
    for figure in report.figures:
        assert figure.group == group
        assert figure.name and figure.context
        assert math.isfinite(figure.value)
        assert figure.met in (True, False, None)
        assert (figure.met is None) == (figure.target is None)
    json.dumps(report.to_dict())  # the JSON report can hold it
    table = report.table()
    for figure in report.figures:
        assert figure.name in table


# -- the harness -------------------------------------------------------------------------------


def test_paired_runs_both_sides_alternately_with_the_same_operation_count() -> None:
    """paired() warms both sides, then alternates them (A B, B A, ...) with equal batch sizes."""
    calls: list[tuple[str, int]] = []

    def side(name: str) -> Callable[[int], None]:
        return lambda n: calls.append((name, n))

    pair = paired(side("a"), side("b"), ops=5, rounds=4, warmup_ops=1)
    assert calls == [
        ("a", 1),
        ("b", 1),
        ("a", 5),
        ("b", 5),
        ("b", 5),
        ("a", 5),
        ("a", 5),
        ("b", 5),
        ("b", 5),
        ("a", 5),
    ]
    assert (pair.rounds, pair.ops, len(pair.ratios)) == (4, 5, 4)
    assert pair.subject_s >= 0 and pair.baseline_s >= 0 and pair.ratio > 0


def test_paired_refuses_empty_runs() -> None:
    """Zero operations or zero rounds is a usage error, not a division by zero."""
    with pytest.raises(ValueError, match="at least one"):
        paired(lambda n: None, lambda n: None, ops=0, rounds=3)


@given(value=st.floats(0, 10, allow_nan=False), bound=st.floats(0, 10, allow_nan=False))
def test_figure_met_reads_its_target(value: float, bound: float) -> None:
    """A figure's ``met`` is its value compared with the bound its target names."""
    for op, expected in ((">=", value >= bound), ("<", value < bound), (">", value > bound)):
        figure = Figure("g", "n", value, "x", f"{op} {bound!r}", "c")
        assert figure.met is expected


def test_ratio_figure_keeps_the_raw_times_beside_the_ratio() -> None:
    """A ratio figure carries both medians and the per-pair ratios for the JSON report."""
    pair = paired(lambda n: None, lambda n: None, ops=2, rounds=3)
    figure = ratio_figure("g", "n", pair, target=0.5, subject="s", baseline="b", rate=True)
    assert figure.target == ">= 0.5" and figure.unit == "x"
    assert figure.data["ratios"] == list(pair.ratios) and figure.data["rounds"] == 3
    assert "/s" in figure.context


def test_write_markdown_replaces_only_the_results_section(tmp_path: Path) -> None:
    """Regenerating BENCHMARKS.md keeps the prose around the results markers."""
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    write_markdown(path, "new table")
    text = path.read_text()
    assert "old table" not in text
    assert text == f"# Title\n\nbefore\n\n{BEGIN}\nnew table\n{END}\n\nafter\n"


# -- engine ------------------------------------------------------------------------------------


def test_every_engine_implementation_ends_with_the_same_run_and_records() -> None:
    """The baselines do the Lifecycle's work exactly: equal final runs, equal audit records."""
    results: dict[str, tuple[Run, list[Any]]] = {}
    for name, factory in IMPLEMENTATIONS.items():
        sink = Collect()
        run = factory(TickingClock(), sink)("run-0123abcd-0000-4000-8000-000000000000")
        results[name] = (run, sink.records)
    reference_run, reference_records = results["lifecycle"]
    assert reference_run.status is RunStatus.COMPLETED and reference_run.ttft_ns
    assert [type(r) for r in reference_records] == [RunCreated] + [TransitionEvent] * 3
    for name, (run, records) in results.items():
        assert run == reference_run, name
        assert run.version == reference_run.version == 3, name
        assert records == reference_records, name


def test_engine_benchmark_reports_three_ratios() -> None:
    """Tiny sizes: the engine group compares Lifecycle with its three baselines."""
    from benchmarks import engine

    report = engine.run(quick=True, tiny=True)
    _well_formed(report, "engine")
    assert len(report.figures) == 3
    assert all(f.unit == "x" and f.target is not None for f in report.figures)


# -- memory ------------------------------------------------------------------------------------


def test_memory_benchmark_reports_bytes_per_run_and_growth() -> None:
    """Tiny sizes: bytes per live run (created, completed), RSS and tracemalloc growth."""
    from benchmarks import memory

    report = memory.run(quick=True, tiny=True)
    _well_formed(report, "memory")
    assert len(report.figures) == 4
    per_run = [f for f in report.figures if f.name.startswith("bytes per live Run")]
    assert len(per_run) == 2 and all(f.value > 0 for f in per_run)


# -- stores ------------------------------------------------------------------------------------


def _normalised(statements: list[str]) -> list[str]:
    """SQL with every literal replaced by ``?``: the statement shapes, without the values."""
    out = []
    for sql in statements:
        sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
        sql = re.sub(r"\b\d+\b", "?", sql)
        out.append(re.sub(r"\bNULL\b", "?", sql))
    return out


def test_raw_sqlite_baseline_sends_the_stores_statements(tmp_path: Path) -> None:
    """On SQLite the hand-written baseline runs the store's very statement sequence."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from benchmarks.stores import RawLifecycles, sqlite_connect, store_batch
    from run_lifecycle.stores import open_store
    from run_lifecycle.stores._schema import Statements, Tables, compile_dialect

    store_trace: list[str] = []
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'store.db'}")

    def on_connect(dbapi: sqlite3.Connection, _: object) -> None:
        dbapi.isolation_level = None  # as the store's own engines are set up
        dbapi.execute("PRAGMA journal_mode = WAL")
        dbapi.set_trace_callback(store_trace.append)

    sqlalchemy.event.listen(engine, "connect", on_connect)
    store = open_store(engine)
    try:
        store_trace.clear()
        store_batch(store)(1)
    finally:
        store.close()
        engine.dispose()

    raw_trace: list[str] = []
    conn = sqlite_connect(tmp_path / "store.db")
    try:
        conn.set_trace_callback(raw_trace.append)
        statements = Statements(Tables(), compile_dialect("sqlite"))
        RawLifecycles(conn, statements, sqlite=True).batch(1)
    finally:
        conn.close()
    assert len(store_trace) == 19  # 4 transactions: BEGIN ... COMMIT
    assert _normalised(raw_trace) == _normalised(store_trace)


def test_stores_benchmark_reports_the_sqlite_ratio() -> None:
    """Tiny sizes: the SQLite ratio always; PostgreSQL figures or a note saying why not."""
    pytest.importorskip("sqlalchemy")
    from benchmarks import stores

    report = stores.run(quick=True, tiny=True)
    _well_formed(report, "stores")
    names = [f.name for f in report.figures]
    assert "SQLite store vs raw sqlite3, same transactions" in names
    postgres = [n for n in names if n.startswith("PostgreSQL")]
    assert len(postgres) == 5 or any("PostgreSQL skipped" in n for n in report.notes)


# -- audit -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_hand_written_chain_writes_the_audit_logs_bytes(tmp_path: Path, fsync: Any) -> None:
    """The audit baseline writes, byte for byte, the file AuditLog writes from the same records."""
    from benchmarks.audit import ChainWriter, make_records
    from run_lifecycle.audit import AuditLog

    records = make_records(3)
    with AuditLog(tmp_path / "log.jsonl", fsync=fsync) as log:
        for record in records:
            log.write(record)
    chain = ChainWriter(tmp_path / "chain.jsonl", fsync)
    for record in records:
        chain.write(record)
    chain.close()
    assert (tmp_path / "chain.jsonl").read_bytes() == (tmp_path / "log.jsonl").read_bytes()


def test_audit_benchmark_reports_three_baselines_at_every_durability_setting() -> None:
    """Tiny sizes: AuditLog against its three baselines at always, batch and never."""
    from benchmarks import audit

    report = audit.run(quick=True, tiny=True)
    _well_formed(report, "audit")
    assert len(report.figures) == 9
    for fsync in ("always", "batch", "never"):
        assert sum(f.name.endswith(f"fsync={fsync}") for f in report.figures) == 3


# -- the command -------------------------------------------------------------------------------


def test_command_writes_the_json_and_markdown_reports_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """python -m benchmarks prints the table, writes JSON and Markdown, and exits 0."""
    out_json, out_md = tmp_path / "bench.json", tmp_path / "BENCHMARKS.md"
    argv = ["--tiny", "--only", "engine", "--json", str(out_json), "--markdown", str(out_md)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| engine |" in printed
    document = json.loads(out_json.read_text())
    assert document["machine"]["nproc"] >= 1 and document["machine"]["python"]
    assert len(document["figures"]) == 3 and document["command"].startswith("python -m benchmarks")
    markdown = out_md.read_text()
    assert BEGIN in markdown and END in markdown and "Machine:" in markdown
