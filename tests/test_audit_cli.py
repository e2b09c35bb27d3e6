"""``run-lifecycle audit ...`` through ``cli.main``: output and exit codes, errors included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from run_lifecycle import Lifecycle, ManualClock, Run, RunLifecycleError, loads
from run_lifecycle.audit import AuditLog, replay
from run_lifecycle.cli import main


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Path, dict[str, Run]]:
    """A log of three runs (one failed with an error, one cancel refused after completion)."""
    path = tmp_path / "audit.jsonl"
    clock = ManualClock()
    with AuditLog(path) as log:
        lc = Lifecycle(clock=clock, audit=log)
        one = lc.start(lc.create(agent_id="agent-1"))
        clock.advance(0.25)
        one = lc.first_token(one)
        clock.advance(2)
        one = lc.complete(one)
        clock.advance(0.5)
        with pytest.raises(RunLifecycleError):
            lc.cancel(one)
        two = lc.fail(lc.start(lc.create(agent_id="agent-2")), error="tool raised")
        three = lc.create(agent_id="agent-3")
    return path, {run.id: run for run in (one, two, three)}


def test_verify_prints_a_summary_and_exits_0_for_an_intact_log(
    logged: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    """An intact log: one summary line, exit 0."""
    path, _ = logged
    assert main(["audit", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 9 lines, 3 runs, 5 transitions, 1 rejected attempts")
    assert out.count("\n") == 1


def test_verify_prints_the_line_at_fault_and_exits_1(
    logged: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A deleted line: `line N: <reason>` for the line after the gap, exit 1."""
    path, _ = logged
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:4] + lines[5:]))
    assert main(["audit", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("line 5: n jumps from 4 to 6")


def test_verify_of_a_missing_file_is_one_error_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing log: one line on stderr naming it, exit 3, no traceback."""
    assert main(["audit", "verify", str(tmp_path / "nope.jsonl")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("run-lifecycle: error: cannot read audit log")
    assert "nope.jsonl" in err and err.count("\n") == 1


def test_replay_prints_one_letta_run_a_line(
    logged: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --export, replay prints the rebuilt runs as Letta JSON, one a line."""
    path, runs = logged
    assert main(["audit", "replay", str(path)]) == 0
    printed = [loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {run.id: run for run in printed} == runs


def test_replay_exports_the_runs_to_a_file(
    logged: tuple[Path, dict[str, Run]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --export, the file holds one Letta JSON run a line, equal to the final runs."""
    path, runs = logged
    export = tmp_path / "runs.jsonl"
    assert main(["audit", "replay", str(path), "--export", str(export)]) == 0
    assert "3 runs" in capsys.readouterr().out
    exported = [loads(line) for line in export.read_text().splitlines()]
    assert {run.id: run for run in exported} == runs == replay(path)
    assert all(set(json.loads(line)) for line in export.read_text().splitlines())


def test_replay_of_a_tampered_log_is_an_error_naming_the_line(
    logged: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A log that fails verification is not replayed: one error line, exit 3."""
    path, _ = logged
    text = path.read_text().replace('"agent-2"', '"agent-9"', 1)
    path.write_text(text)
    assert main(["audit", "replay", str(path)]) == 3
    assert "line " in capsys.readouterr().err


def test_show_prints_the_timeline_of_one_run(
    logged: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    """show: creation, each transition with its time and the gap since the last, refusals marked."""
    path, runs = logged
    run_id = next(iter(runs))
    assert main(["audit", "show", str(path), run_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run {run_id} (agent agent-1): 5 records"
    assert "created" in lines[1]
    assert "start: created -> running" in lines[2]
    assert "+0.250s" in lines[3] and "first_token: running -> running (ttft 0.250s)" in lines[3]
    assert "+2.000s" in lines[4] and "complete: running -> completed (end_turn" in lines[4]
    assert "+0.500s" in lines[5] and "REJECTED cancel on completed" in lines[5]
    assert lines[6] == "now completed (end_turn) after 3 transitions"


def test_show_of_an_unknown_run_is_exit_3(
    logged: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    """An id the log never mentions: one error line naming it, exit 3."""
    path, _ = logged
    assert main(["audit", "show", str(path), "run-00000000-0000"]) == 3
    assert "run-00000000-0000" in capsys.readouterr().err


def test_repair_cuts_a_torn_tail_and_exits_0(
    logged: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    """repair of a crash-torn log: says what it cut, prints the summary, exit 0."""
    path, _ = logged
    with path.open("ab") as tail:
        tail.write(b'{"agent_id":"agent-3","at":')
    assert main(["audit", "verify", str(path)]) == 1
    assert "line 10: the last line is incomplete" in capsys.readouterr().out
    assert main(["audit", "repair", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "cut an incomplete last line (27 bytes)"
    assert out[1].startswith("ok: 9 lines")
    assert main(["audit", "repair", str(path)]) == 0
    assert capsys.readouterr().out.startswith("nothing to repair\nok: 9 lines")


def test_repair_leaves_other_faults_and_exits_1(
    logged: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    """repair never cuts an edited line: it names it and exits 1, the file unchanged."""
    path, _ = logged
    path.write_text(path.read_text().replace('"trigger":"start"', '"trigger":"cancel"', 1))
    before = path.read_bytes()
    assert main(["audit", "repair", str(path)]) == 1
    assert capsys.readouterr().out.startswith("line 2: the line was changed")
    assert path.read_bytes() == before


def test_repair_of_a_missing_file_is_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Repairing a file that does not exist: one error line, exit 3."""
    assert main(["audit", "repair", str(tmp_path / "nope.jsonl")]) == 3
    assert "cannot repair audit log" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["audit"], ["audit", "verify"], ["audit", "show", "x.jsonl"], ["audit", "fix"]]
)
def test_audit_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing action or argument, or an unknown action, is a usage error (exit 2)."""
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err
