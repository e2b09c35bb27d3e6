"""AuditLog, the writer: its choices, its failures, and many writers on one file."""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from run_lifecycle import (
    AuditError,
    AuditSink,
    Lifecycle,
    ManualClock,
    Run,
    RunCreated,
    TransitionEvent,
)
from run_lifecycle.audit import AuditLog, read_records, repair, replay, verify

TIMEOUT = 120  # seconds a child process may take on a loaded machine before the test gives up


def _life(lc: Lifecycle, agent: str) -> Run:
    return lc.complete(lc.first_token(lc.start(lc.create(agent_id=agent))))


def test_an_audit_log_is_an_audit_sink(tmp_path: Path) -> None:
    """AuditLog satisfies the AuditSink protocol Lifecycle and the stores accept."""
    with AuditLog(tmp_path / "a.jsonl") as log:
        assert isinstance(log, AuditSink)


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_every_durability_choice_writes_the_same_valid_log(tmp_path: Path, fsync: str) -> None:
    """Whatever the fsync choice, the log holds every record and replays to the runs."""
    path = tmp_path / f"{fsync}.jsonl"
    with AuditLog(path, fsync=fsync, batch=3) as log:  # type: ignore[arg-type]
        lc = Lifecycle(clock=ManualClock(), audit=log)
        runs = {run.id: run for run in (_life(lc, f"agent-{i}") for i in range(5))}
    report = verify(path)
    assert (report.ok, report.lines, report.events) == (True, 20, 15)
    assert replay(path) == runs


def test_the_default_durability_is_fsync_always(tmp_path: Path) -> None:
    """The safe choice is the default: every record is synced before write returns."""
    with AuditLog(tmp_path / "a.jsonl") as log:
        assert log.fsync == "always"


@pytest.mark.parametrize(("option", "value"), [("fsync", "sometimes"), ("batch", 0)])
def test_an_unknown_durability_choice_is_refused(
    tmp_path: Path, option: str, value: object
) -> None:
    """A misspelt fsync choice or a batch below 1 raises AuditError and creates no file."""
    with pytest.raises(AuditError, match=option):
        AuditLog(tmp_path / "a.jsonl", **{option: value})  # type: ignore[arg-type]
    assert not (tmp_path / "a.jsonl").exists()


def test_reopening_a_log_continues_its_chain(tmp_path: Path) -> None:
    """A second AuditLog on an existing file appends n+1 chained to the last hash."""
    path = tmp_path / "a.jsonl"
    clock = ManualClock()
    runs: dict[str, Run] = {}
    for agent in ("first", "second", "third"):
        with AuditLog(path) as log:
            run = _life(Lifecycle(clock=clock, audit=log), agent)
            runs[run.id] = run
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["n"] for line in lines] == list(range(1, 13))
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(lines))
    assert verify(path).ok
    assert replay(path) == runs


def test_a_missing_directory_is_an_audit_error(tmp_path: Path) -> None:
    """Opening a log in a directory that does not exist raises AuditError naming the path."""
    with pytest.raises(AuditError, match="no-such-dir"):
        AuditLog(tmp_path / "no-such-dir" / "a.jsonl")


def test_a_file_that_is_not_an_audit_log_is_not_continued(tmp_path: Path) -> None:
    """A file whose last line is no audit line is refused: its chain cannot be continued."""
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\n")
    with pytest.raises(AuditError, match="not an audit log line"):
        AuditLog(path)
    assert path.read_text() == "shopping list\n"


def test_writing_to_a_closed_log_drops_the_record_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record written after close is counted, kept as last_error and logged; nothing raises."""
    log = AuditLog(tmp_path / "a.jsonl")
    lc = Lifecycle(audit=log)
    lc.create(agent_id="before")
    log.close()
    log.close()
    with caplog.at_level(logging.ERROR, logger="run_lifecycle.audit"):
        run = lc.create(agent_id="after")
    assert log.closed
    assert log.dropped == 1
    assert log.last_error is not None and run.id in str(log.last_error)
    assert "closed" in caplog.text
    assert verify(tmp_path / "a.jsonl").lines == 1


def test_a_record_that_cannot_be_encoded_is_dropped_and_the_log_goes_on(tmp_path: Path) -> None:
    """A record holding a value JSON cannot carry is dropped; the next record chains as usual."""
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        lc = Lifecycle(audit=log)
        run = lc.create(agent_id="agent-1")
        log.write(
            TransitionEvent(
                run_id=run.id,
                agent_id=run.agent_id,
                seq=1,
                trigger="start",
                from_status="created",
                to_status="running",
                stop_reason=None,
                at=run.created_at,
                changes={"status": float("nan")},
            )
        )
        assert log.dropped == 1
        run = lc.start(run)
    assert verify(path).ok
    assert replay(path) == {run.id: run}


def test_any_string_survives_the_log_even_a_lone_surrogate(tmp_path: Path) -> None:
    """Non-ASCII text, and even a lone surrogate, is escaped: written, verified, replayed exactly."""
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        lc = Lifecycle(audit=log)
        run = lc.fail(
            lc.create(agent_id="agent-é", metadata={"text": "naïve ☃ \ud800 \U0001f600"}),
            error="\udfff",
        )
    assert path.read_bytes().isascii()
    assert verify(path).ok
    assert replay(path) == {run.id: run}


def test_two_writers_in_one_process_follow_each_other(tmp_path: Path) -> None:
    """Two AuditLog objects on one file, writing in turn, re-read the tail and keep one chain."""
    path = tmp_path / "a.jsonl"
    clock = ManualClock()
    with AuditLog(path) as one, AuditLog(path, fsync="never") as two:
        first, second = Lifecycle(clock=clock, audit=one), Lifecycle(clock=clock, audit=two)
        a, b = first.create(agent_id="a"), second.create(agent_id="b")
        a, b = second.start(a), first.start(b)
        a, b = first.complete(a), second.cancel(b)
    report = verify(path)
    assert (report.ok, report.lines) == (True, 6)
    assert replay(path) == {a.id: a, b.id: b}


def test_a_writer_does_not_extend_a_torn_tail_another_writer_left(tmp_path: Path) -> None:
    """A torn line appended behind a writer's back stops its writes until repair cuts it."""
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        lc = Lifecycle(clock=ManualClock(), audit=log)
        run = lc.create(agent_id="agent-1")
        with path.open("ab") as out:
            out.write(b'{"agent_id":"ag')
        lc.create(agent_id="lost")
        assert log.dropped == 1
        assert "incomplete" in str(log.last_error)
        assert repair(path).ok
        run = lc.start(run)
    assert verify(path).lines == 2
    assert replay(path) == {run.id: run}


# -- many writers --------------------------------------------------------------------------------


def _assert_each_event_once(path: Path, runs: int, per_run: int) -> None:
    report = verify(path)
    assert report.ok, report
    assert (report.runs, report.lines) == (runs, runs * per_run)
    keys = Counter(
        (r.run_id, r.seq) for r in read_records(path) if isinstance(r, RunCreated | TransitionEvent)
    )
    assert len(keys) == runs * per_run
    assert set(keys.values()) == {1}


@pytest.mark.parametrize("shared", [True, False], ids=["one-log-object", "a-log-object-each"])
def test_threads_appending_to_one_log_never_break_the_chain(tmp_path: Path, shared: bool) -> None:
    """Eight threads appending at once (one AuditLog, or one each) leave one intact chain."""
    path = tmp_path / "a.jsonl"
    common = AuditLog(path, fsync="never")
    start = threading.Barrier(8)

    def worker(number: int) -> None:
        log = common if shared else AuditLog(path, fsync="never")
        lc = Lifecycle(audit=log)
        start.wait(timeout=TIMEOUT)
        for _ in range(40):
            _life(lc, f"thread-{number}")
        if not shared:
            log.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    common.close()
    assert not any(thread.is_alive() for thread in threads)
    _assert_each_event_once(path, runs=8 * 40, per_run=4)


_WRITER = """
import sys
from run_lifecycle import Lifecycle
from run_lifecycle.audit import AuditLog

path, count, fsync = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with AuditLog(path, fsync=fsync) as log:
    lc = Lifecycle(audit=log)
    print("ready", flush=True)
    sys.stdin.readline()  # wait for the go, so all writers append at the same time
    for _ in range(count):
        lc.complete(lc.first_token(lc.start(lc.create(agent_id="proc"))))
"""


@pytest.mark.parametrize("fsync", ["never", "batch"])
def test_processes_appending_to_one_log_hold_every_event_once(tmp_path: Path, fsync: str) -> None:
    """Four processes appending at once leave a log that verifies, each event exactly once."""
    path = tmp_path / "a.jsonl"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), "150", fsync],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    _assert_each_event_once(path, runs=4 * 150, per_run=4)


def _forked_writer(log: AuditLog, count: int) -> None:
    lc = Lifecycle(audit=log)
    for _ in range(count):
        _life(lc, f"child-{os.getpid()}")
    log.close()


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs os.fork (POSIX)"
)
def test_forked_children_writing_through_an_inherited_log_keep_one_chain(tmp_path: Path) -> None:
    """Children forked with an open AuditLog write through their own descriptor and lock."""
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, fsync="never")
    lc = Lifecycle(audit=log)
    _life(lc, "parent")
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_forked_writer, args=(log, 60)) for _ in range(3)]
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a threaded process; the log's own lock is
        # re-made in the child (os.register_at_fork), which is what this test checks.
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        for child in children:
            child.start()
    for _ in range(60):
        _life(lc, "parent")
    for child in children:
        child.join(timeout=TIMEOUT)
    log.close()
    assert [child.exitcode for child in children] == [0, 0, 0]
    _assert_each_event_once(path, runs=1 + 60 + 3 * 60, per_run=4)


_BURST = """
import sys
from run_lifecycle import Lifecycle
from run_lifecycle.audit import AuditLog

blob = "x" * 262144  # big lines, so a kill can land inside one write
lc = Lifecycle(audit=AuditLog(sys.argv[1], fsync="never"))
count = 0
while True:
    run = lc.create(agent_id="burst", metadata={"blob": blob} if count % 2 else None)
    lc.complete(lc.start(run))
    count += 1
    if count == 20:
        print("ready", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_writer_killed_mid_burst_leaves_at_most_a_torn_last_line(tmp_path: Path) -> None:
    """SIGKILL in a burst: verify finds at most a truncated last line; repair; the chain goes on."""
    path = tmp_path / "a.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _BURST, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    report = verify(path)
    lines = path.read_bytes().count(b"\n")
    assert report.ok or (report.kind == "truncated" and report.line == lines + 1), report
    repaired = repair(path)
    assert repaired.ok, repaired
    assert repaired.lines == lines >= 60
    with AuditLog(path) as log:
        run = Lifecycle(clock=ManualClock(datetime(2026, 1, 1, tzinfo=UTC)), audit=log).create(
            agent_id="after-the-crash"
        )
    after = verify(path)
    assert (after.ok, after.lines) == (True, lines + 1)
    assert replay(path)[run.id] == run
