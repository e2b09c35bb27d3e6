"""The demo and the ``runs`` commands through ``main(argv)``: outputs, files, and error paths."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from run_lifecycle import loads
from run_lifecycle.audit import replay, verify
from run_lifecycle.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out
    data: dict[str, object] = json.loads(out)
    return data


def _validator(run_schemas_path: Path) -> jsonschema.protocols.Validator:
    schemas = json.loads(run_schemas_path.read_text())
    document = {"components": {"schemas": schemas}, **schemas["Run"]}
    cls = jsonschema.validators.validator_for(document)
    return cls(document, format_checker=cls.FORMAT_CHECKER)


def test_demo_with_no_db_option_creates_runs_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default store is a SQLite file runs.db in the current directory."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--runs", "12", "--workers", "2", "--json"]) == EXIT_OK
    summary = _json(capsys)
    assert (tmp_path / "runs.db").is_file()
    assert summary["runs"] == 12
    assert summary["store"] == "sqlite:///runs.db"


def test_demo_on_memory_counts_every_run_and_its_races(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On memory:// the summary counts every run, by status, and each race has one loser."""
    assert main(["demo", "--db", "memory://", "--runs", "60", "--workers", "3", "--json"]) == 0
    summary = _json(capsys)
    by_status = summary["by_status"]
    assert isinstance(by_status, dict)
    assert sum(by_status.values()) == 60
    races = summary["races"]
    assert isinstance(races, dict)
    assert races["won_by_cancel"] + races["won_by_complete"] == races["total"]


def test_demo_exports_schema_valid_runs_whose_audit_log_verifies_and_replays_to_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], run_schemas_path: Path
) -> None:
    """--export writes schema-valid runs; --audit writes a log that verifies and replays to them."""
    db, log, export = tmp_path / "runs.db", tmp_path / "audit.jsonl", tmp_path / "runs.jsonl"
    argv = ["demo", "--db", f"sqlite:///{db}", "--runs", "40", "--workers", "3"]
    argv += ["--audit", str(log), "--export", str(export), "--callbacks", "local", "--json"]
    assert main(argv) == EXIT_OK
    summary = _json(capsys)
    lines = export.read_text().splitlines()
    assert len(lines) == 40
    validator = _validator(run_schemas_path)
    for line in lines:
        validator.validate(json.loads(line))
    exported = {run.id: run for run in map(loads, lines)}
    assert verify(log).ok
    assert replay(log) == exported
    callbacks = summary["callbacks"]
    assert isinstance(callbacks, dict)
    assert callbacks["pending"] == 0
    assert callbacks["delivered"] + callbacks["failed"] >= 40


def test_runs_list_and_show_read_what_the_demo_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """runs list --json prints the stored runs; runs show prints one run and its history."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["demo", "--db", url, "--runs", "15", "--workers", "2", "--json"]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--db", url, "--json"]) == EXIT_OK
    runs = [loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(runs) == 15
    assert [r.created_at for r in runs] == sorted((r.created_at for r in runs), reverse=True)
    assert main(["runs", "list", "--db", url, "--status", "cancelled", "--json"]) == 0
    cancelled = [loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(run.status == "cancelled" for run in cancelled)
    assert main(["runs", "show", runs[0].id, "--db", url, "--json"]) == EXIT_OK
    shown = _json(capsys)
    assert isinstance(shown["run"], dict)
    assert shown["run"]["id"] == runs[0].id
    assert isinstance(shown["events"], list)
    assert shown["events"][0]["kind"] == "created"
    assert main(["runs", "show", runs[0].id, "--db", url]) == EXIT_OK
    assert runs[0].id in capsys.readouterr().out
    assert main(["runs", "list", "--db", url]) == EXIT_OK
    assert runs[0].id in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["runs", "list", "--db", "sqlite:///{tmp}/missing.db"], EXIT_ERROR),
        (
            ["runs", "show", "run-00000000-0000-4000-8000-000000000000", "--db", "memory://"],
            EXIT_ERROR,
        ),
        (["demo", "--db", "bogus://nowhere", "--runs", "1"], EXIT_ERROR),
        (
            ["demo", "--db", "memory://", "--runs", "2", "--callback-url", "ftp://example.com/x"],
            EXIT_ERROR,
        ),
        (["runs", "list", "--db", "memory://", "--limit", "0"], EXIT_USAGE),
        (["demo", "--runs", "0"], EXIT_USAGE),
        (["demo", "--callbacks", "local", "--callback-url", "http://example.com/"], EXIT_USAGE),
    ],
)
def test_demo_and_runs_errors_print_one_line_and_exit_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int
) -> None:
    """Each error path exits with its documented code and one line on stderr, no traceback."""
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == EXIT_ERROR:
        assert err.count("\n") == 1 and err.startswith("run-lifecycle: error:")
    assert not (tmp_path / "missing.db").exists()
