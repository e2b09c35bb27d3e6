"""The command line: every subcommand explains itself, usage errors exit 2, and ``diagram`` works.

Everything goes through ``main(argv)`` (the same function the ``run-lifecycle``
script and ``python -m run_lifecycle`` call), except the tests that prove
those two entry points exist.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from run_lifecycle import IllegalTransition, Lifecycle, ManualClock, StopReason
from run_lifecycle.audit import AuditLog, read_records
from run_lifecycle.cli import build_parser, main
from run_lifecycle.diagrams import (
    FILE_NAMES,
    dot_program,
    render_dot,
    render_mermaid,
    render_run,
)

RUN_ID = "run-3f2a0c1e-1111-4222-8333-444455556666"
needs_dot = pytest.mark.skipif(
    dot_program() is None and not os.environ.get("CI"),
    reason="Graphviz's dot is not installed here (apt-get install graphviz)",
)


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command reachable from ``parser``, with its argv prefix."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from subcommands(child, (*path, name))


def one_error_line(stderr: str) -> str:
    """The single line a failing command printed (and proof that there was no traceback)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("run-lifecycle: error: ")
    return lines[0]


# -- the command line as a whole --------------------------------------------------------------

ALL_COMMANDS = [path for path, _ in subcommands(build_parser())]


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_subcommand_has_help_that_explains_each_option(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--help` exits 0 and lists every option of the subcommand, each with an explanation."""
    parser = dict(subcommands(build_parser()))[path]
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: run-lifecycle " + " ".join(path))
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue  # positionals are named by their metavar in the usage line
        assert action.help, f"{' '.join(path)} {action.option_strings[0]} has no help"
        for option in action.option_strings:
            assert option in out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`run-lifecycle --help` names each command and the exit codes."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for path in ALL_COMMANDS:
        if len(path) == 1:
            assert path[0] in out
    assert "Exit codes" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["diagram", "--no-such-option"],
        ["diagram", "--format", "png"],
        ["demo", "--runs", "0"],
    ],
    ids=["no command", "unknown command", "unknown option", "bad choice", "bad value"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing or unknown command, an unknown option or a bad value is a usage error: exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: run-lifecycle" in err
    assert "Traceback" not in err


def test_python_dash_m_run_lifecycle_is_the_same_command_line() -> None:
    """`python -m run_lifecycle` runs main: its help lists the commands and it draws a diagram."""
    helped = subprocess.run(
        [sys.executable, "-m", "run_lifecycle", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "diagram" in helped.stdout and "demo" in helped.stdout
    drawn = subprocess.run(
        [sys.executable, "-m", "run_lifecycle", "diagram"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout == render_mermaid()


def test_run_lifecycle_script_is_installed() -> None:
    """The `run-lifecycle` console script sits beside the interpreter and answers --help."""
    script = Path(sys.executable).with_name("run-lifecycle")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable} (project not installed here)")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: run-lifecycle" in result.stdout


# -- diagram: the lifecycle -------------------------------------------------------------------


def test_diagram_prints_the_mermaid_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """`diagram` alone writes the lifecycle mermaid to stdout."""
    assert main(["diagram"]) == 0
    assert capsys.readouterr().out == render_mermaid()


def test_diagram_writes_dot_to_the_output_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--format dot --output PATH` writes the DOT there and nothing to stdout."""
    target = tmp_path / "lifecycle.dot"
    assert main(["diagram", "--format", "dot", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_dot()
    assert capsys.readouterr().out == ""


@needs_dot
def test_diagram_draws_svg_through_graphviz(capsys: pytest.CaptureFixture[str]) -> None:
    """`--format svg` prints an SVG document naming every state."""
    assert main(["diagram", "--format", "svg"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<?xml") and "<title>cancelled</title>" in out


def test_diagram_svg_without_graphviz_fails_saying_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An explicit `--format svg` with no dot on PATH exits 3 with one line naming the package."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["diagram", "--format", "svg"]) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "apt-get install graphviz" in line


@needs_dot
def test_write_all_regenerates_the_three_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--write-all DIR` writes lifecycle.mmd, .dot and .svg and says so."""
    assert main(["diagram", "--write-all", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILE_NAMES.values())
    assert capsys.readouterr().out.count("wrote ") == 3


def test_write_all_without_graphviz_writes_mermaid_and_dot_and_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without dot, --write-all still writes the text diagrams, notes how to get SVG, exits 0."""
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    out_dir = tmp_path / "diagrams"
    assert main(["diagram", "--write-all", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["lifecycle.dot", "lifecycle.mmd"]
    err = capsys.readouterr().err
    assert "lifecycle.svg not written" in err and "apt-get install graphviz" in err


def test_diagram_output_into_a_missing_directory_is_a_runtime_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output path whose directory does not exist exits 3 with one line."""
    target = tmp_path / "missing" / "x.mmd"
    assert main(["diagram", "--output", str(target)]) == 3
    assert str(target) in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--write-all", "d", "--format", "dot"], "--write-all writes every format"),
        (["--format", "timeline"], "--format timeline draws one run"),
        (["--run", RUN_ID], "with --db URL or --audit PATH"),
        (["--db", "sqlite:///runs.db"], "name the run with --run"),
        (["--run", RUN_ID, "--db", "sqlite:///x.db", "--audit", "a.jsonl"], "not allowed with"),
    ],
    ids=["write-all with format", "timeline alone", "run alone", "db alone", "db and audit"],
)
def test_diagram_option_clashes_are_usage_errors(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options that do not go together exit 2 with a message saying what to do."""
    assert main(["diagram", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and "usage:" in err


# -- diagram: one run, from the audit log -----------------------------------------------------


@pytest.fixture
def audit_log(tmp_path: Path) -> Path:
    """An audit log holding one approval-denied run (with a late complete) and a second run."""
    path = tmp_path / "audit.jsonl"
    clock = ManualClock()
    with AuditLog(path) as log:
        lc = Lifecycle(clock=clock, audit=log)
        run = lc.create(agent_id="agent-1", id=RUN_ID)
        clock.advance(0.01)
        run = lc.first_token(lc.start(run))
        clock.advance(1.0)
        run = lc.cancel(lc.complete(run, StopReason.REQUIRES_APPROVAL))
        clock.advance(0.1)
        with pytest.raises(IllegalTransition):
            lc.complete(run)
        lc.start(lc.create(agent_id="agent-2"))
    return path


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "timeline"])
def test_run_diagram_from_the_audit_log_draws_that_runs_story(
    fmt: str, audit_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--run ID --audit PATH` prints exactly render_run of that run's records."""
    assert main(["diagram", "--run", RUN_ID, "--audit", str(audit_log), "--format", fmt]) == 0
    expected = render_run(list(read_records(audit_log)), fmt, run_id=RUN_ID)
    assert capsys.readouterr().out == expected


def test_run_dot_from_the_audit_log_highlights_the_runs_edges(
    audit_log: Path, tmp_path: Path
) -> None:
    """The DOT written for a run has its four edges in bold and its rejected complete dashed."""
    target = tmp_path / "run.dot"
    argv = ["diagram", "--run", RUN_ID, "--audit", str(audit_log), "-f", "dot", "-o", str(target)]
    assert main(argv) == 0
    dot = target.read_text(encoding="utf-8")
    bold = set(re.findall(r'id="edge_(\w+?)_(\w+?)_(\w+)"[^\n]*penwidth=3', dot))
    assert bold == {
        ("created", "running", "start"),
        ("running", "running", "first_token"),
        ("running", "completed", "complete"),
        ("completed", "cancelled", "cancel"),
    }
    assert re.search(r"cancelled -> __rejected_1 \[[^\n]*style=dashed", dot)


@needs_dot
def test_run_svg_from_the_audit_log(audit_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--format svg` draws the run through Graphviz."""
    assert main(["diagram", "--run", RUN_ID, "--audit", str(audit_log), "--format", "svg"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<?xml") and "complete (end_turn) rejected" in out


def test_unknown_run_in_the_audit_log_is_a_runtime_error(
    audit_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run id the log does not hold exits 3 naming it."""
    missing = "run-00000000-0000-4000-8000-000000000000"
    assert main(["diagram", "--run", missing, "--audit", str(audit_log)]) == 3
    assert missing in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("kind", ["missing", "directory", "not a log"])
def test_unreadable_audit_log_is_a_runtime_error(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file, a directory or a file that is no audit log exits 3 with one line."""
    path = {"missing": tmp_path / "nope.jsonl", "directory": tmp_path}.get(kind)
    if path is None:
        path = tmp_path / "notes.txt"
        path.write_text("hello\n", encoding="utf-8")
    assert main(["diagram", "--run", RUN_ID, "--audit", str(path)]) == 3
    one_error_line(capsys.readouterr().err)


# -- diagram: one run, from a store -----------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store holding one run that was cancelled while running, then completed too late."""
    from run_lifecycle.stores import open_store

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    clock = ManualClock()
    with open_store(url, clock=clock) as store:
        store.create_run(agent_id="agent-1", id=RUN_ID)
        clock.advance(0.1)
        store.apply(RUN_ID, "start")
        clock.advance(0.3)
        store.apply(RUN_ID, "first_token")
        clock.advance(1.0)
        store.apply(RUN_ID, "cancel")
        with pytest.raises(IllegalTransition):
            store.apply(RUN_ID, "complete")
    return url


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "timeline"])
def test_run_diagram_from_a_store_draws_that_runs_history(
    fmt: str, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--run ID --db URL` prints render_run of the store's history of that run."""
    from run_lifecycle.stores import open_store

    with open_store(sqlite_url) as store:
        expected = render_run(store.history(RUN_ID), fmt)
    assert main(["diagram", "--run", RUN_ID, "--db", sqlite_url, "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert out == expected
    assert "rejected" in out


def test_run_dot_from_a_store_highlights_the_runs_edges(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's DOT has start, first_token and cancel in bold, nothing else."""
    assert main(["diagram", "--run", RUN_ID, "--db", sqlite_url, "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    bold = set(re.findall(r'id="edge_(\w+?)_(\w+?)_(\w+)"[^\n]*penwidth=3', dot))
    assert bold == {
        ("created", "running", "start"),
        ("running", "running", "first_token"),
        ("running", "cancelled", "cancel"),
    }


def test_unknown_run_in_the_store_is_a_runtime_error(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run id the store does not hold exits 3 naming it."""
    missing = "run-00000000-0000-4000-8000-000000000000"
    assert main(["diagram", "--run", missing, "--db", sqlite_url]) == 3
    assert missing in one_error_line(capsys.readouterr().err)


def test_missing_database_is_a_runtime_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SQLite path with no database exits 3 with one line, and no empty database appears."""
    path = tmp_path / "nope.db"
    assert main(["diagram", "--run", RUN_ID, "--db", f"sqlite:///{path}"]) == 3
    assert "no database" in one_error_line(capsys.readouterr().err)
    assert not path.exists()


@pytest.mark.parametrize("url", ["nosuch://x", "sqlite//missing-colon", "not a url"])
def test_bad_store_url_is_a_runtime_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A URL no store understands exits 3 with one line."""
    assert main(["diagram", "--run", RUN_ID, "--db", url]) == 3
    one_error_line(capsys.readouterr().err)


def test_readme_documents_every_command_and_option() -> None:
    """README's command-line section names every command and every long option."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- section:cli -->")[1].split("<!-- /section:cli -->")[0]
    for path, parser in subcommands(build_parser()):
        assert path[-1] in section, f"`{' '.join(path)}` is not in the README"
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in section, f"{' '.join(path)} {option} is not in the README"
    for code in ("`0`", "`1`", "`2`", "`3`"):
        assert code in section


# -- the demo's summary table and progress bar ------------------------------------------------

FULL_SUMMARY: dict[str, object] = {
    "store": "sqlite:///runs.db",
    "runs": 200,
    "elapsed_s": 1.25,
    "by_status": {"cancelled": 29, "completed": 142, "failed": 29},
    "by_stop_reason": {
        "cancelled": 29,
        "end_turn": 115,
        "llm_api_error": 29,
        "max_steps": 9,
        "requires_approval": 18,
    },
    "rejected_triggers": {"cancel on completed": 15, "complete on cancelled": 14},
    "rejected_total": 29,
    "idempotent_noops": 37,
    "races": {"total": 31, "won_by_cancel": 14, "won_by_complete": 17},
    "reaped": 3,
    "ttft_ms": {"p50": 395.5, "p95": 1180.4, "p99": 1739.1},
    "total_duration_ms": {"p50": 2330.1, "p95": 6995.9, "p99": 9855.2},
    "callbacks": {"delivered": 120, "retried": 7, "failed": 2},
}


def rendered(summary: dict[str, object]) -> str:
    """What render_summary prints for ``summary`` on a wide, plain console."""
    from rich.console import Console

    from run_lifecycle.cli._summary import render_summary

    console = Console(record=True, width=200, file=io.StringIO(), color_system=None)
    render_summary(summary, console=console)
    return console.export_text()


def test_summary_table_shows_every_figure_of_the_demo() -> None:
    """Each count, stop reason, percentile, race, callback figure and the store appear."""
    text = rendered(FULL_SUMMARY)
    for needle in [
        "200 runs",
        "completed",
        "142",
        "requires_approval",
        "18",
        "llm_api_error",
        "395.5",
        "1,739.1",
        "9,855.2",
        "complete on cancelled",
        "idempotent repeats",
        "won by cancel",
        "won by complete",
        "reaped",
        "delivered",
        "120",
        "retried",
        "sqlite:///runs.db",
    ]:
        assert needle in text, needle


def test_summary_puts_each_stop_reason_under_its_status() -> None:
    """llm_api_error is listed in the failed group, end_turn in the completed group."""
    runs_only = {k: FULL_SUMMARY[k] for k in ("runs", "by_status", "by_stop_reason")}
    lines = rendered(runs_only).splitlines()

    def row(word: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(rf"\b{word}\b", line))

    assert row("completed") < row("end_turn") < row("failed") < row("llm_api_error")
    assert row("llm_api_error") < row("cancelled")


@given(st.sets(st.sampled_from(sorted(FULL_SUMMARY))))
def test_summary_with_any_keys_missing_still_renders(keys: set[str]) -> None:
    """Any subset of the summary's keys renders without error (the dict grows over time)."""
    text = rendered({key: FULL_SUMMARY[key] for key in keys})
    assert text.strip()


def test_summary_shows_keys_it_does_not_know() -> None:
    """A key added to the demo later is listed under Other, not dropped."""
    text = rendered({"runs": 1, "lease_renewals": 12})
    assert "Other" in text and "lease renewals" in text and "12" in text


def test_progress_is_silent_when_not_a_terminal() -> None:
    """Piped output gets no progress bar at all."""
    from rich.console import Console

    from run_lifecycle.cli._summary import progress

    out = io.StringIO()
    with progress(5, console=Console(file=out)) as advance:
        for _ in range(5):
            advance(1)
    assert out.getvalue() == ""


def test_progress_on_a_terminal_counts_advances_from_many_threads() -> None:
    """On a terminal the bar reaches total when four threads each advance it ten times."""
    from rich.console import Console

    from run_lifecycle.cli._summary import progress

    out = io.StringIO()
    with progress(40, console=Console(file=out, force_terminal=True, width=80)) as advance:
        workers = [
            threading.Thread(target=lambda: [advance(1) for _ in range(10)]) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
    assert "40/40" in out.getvalue()
