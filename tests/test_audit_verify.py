"""Verify and repair: any tampering with a valid log is caught at the right line; repair cuts only a torn tail."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from run_lifecycle import AuditError, Lifecycle, ManualClock, ReplayError, RunLifecycleError
from run_lifecycle.audit import AuditLog, read_records, repair, replay, verify
from run_lifecycle.testing import capture_audit

from .strategies import json_values
from .test_audit_replay import History, drive, fresh_path, histories

__all__ = ["fresh_path"]  # the fixture, shared with test_audit_replay


def canonical(value: Any) -> str:
    """Canonical JSON as the README defines it, written independently of the library."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def seal(content: dict[str, Any]) -> bytes:
    """A line as the README defines it: canonical content, then its SHA-256 as the last member."""
    body = canonical(content)
    digest = hashlib.sha256(body.encode("ascii")).hexdigest()
    return f'{body[:-1]},"hash":"{digest}"}}\n'.encode("ascii")


def write_log(path: Path, history: History) -> list[bytes]:
    """Write ``history``'s log at ``path``; return its lines (with their newlines)."""
    with AuditLog(path, fsync="never") as log:
        drive(history, log)
    return path.read_bytes().splitlines(keepends=True)


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a member or item inside a parsed JSON value."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*prefix, key))
            found.extend(paths_in(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((*prefix, index))
            found.extend(paths_in(item, (*prefix, index)))
    return found


def rewrite(obj: dict[str, Any]) -> bytes:
    """Serialise an edited line the way the writer would (hash last), keeping its old hash."""
    rest = {key: value for key, value in obj.items() if key != "hash"}
    if "hash" not in obj:
        return (canonical(rest) + "\n").encode("ascii")
    return f'{canonical(rest)[:-1]},"hash":{canonical(obj["hash"])}}}\n'.encode("ascii")


MUTATIONS = ["edit", "remove", "byte", "delete", "delete_range", "swap", "duplicate", "truncate"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories, mutation=st.sampled_from(MUTATIONS), data=st.data())
def test_one_tampering_of_a_valid_log_is_caught_at_the_right_line(
    history: History, mutation: str, data: st.DataObject, fresh_path: Any
) -> None:
    """An untouched log verifies; one edit, deletion, swap, duplication or truncation is named by line."""
    path = fresh_path()
    lines = write_log(path, history)
    assert verify(path).ok
    count = len(lines)
    if mutation in ("delete", "delete_range", "swap") and count < 2:
        # These need a line after the damage (cutting the *tail* leaves a valid, shorter log).
        mutation = "edit"
    new = list(lines)
    if mutation in ("edit", "remove"):
        index = data.draw(st.integers(0, count - 1), label="line")
        obj = json.loads(lines[index])
        where = data.draw(st.sampled_from(paths_in(obj)), label="member")
        parent = obj
        for step in where[:-1]:
            parent = parent[step]
        if mutation == "remove" and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            old = canonical(parent[where[-1]])
            value = data.draw(json_values.filter(lambda v: canonical(v) != old), label="value")
            parent[where[-1]] = value
        new[index] = rewrite(obj)
        expected = index + 1
    elif mutation == "byte":
        index = data.draw(st.integers(0, count - 1), label="line")
        line = bytearray(lines[index])
        at = data.draw(st.integers(0, len(line) - 2), label="offset")
        line[at] = data.draw(st.integers(0, 255).filter(lambda b: b != line[at]), label="byte")
        new[index] = bytes(line)
        expected = index + 1
    elif mutation == "delete":
        index = data.draw(st.integers(0, count - 2), label="line")
        del new[index]
        expected = index + 1  # the line after the gap now sits here
    elif mutation == "delete_range":
        start = data.draw(st.integers(0, count - 2), label="from")
        stop = data.draw(st.integers(start + 1, count - 1), label="to")
        del new[start:stop]
        expected = start + 1
    elif mutation == "swap":
        first = data.draw(st.integers(0, count - 2), label="first")
        second = data.draw(st.integers(first + 1, count - 1), label="second")
        new[first], new[second] = new[second], new[first]
        expected = first + 1  # the first of the two
    elif mutation == "duplicate":
        index = data.draw(st.integers(0, count - 1), label="line")
        at = data.draw(st.integers(index + 1, count), label="copy at")
        new.insert(at, lines[index])
        expected = at + 1  # the second copy
    else:  # truncate: cut inside a line, dropping its newline at least
        index = data.draw(st.integers(0, count - 1), label="line")
        keep = data.draw(st.integers(1, len(lines[index]) - 1), label="keep")
        new = [*lines[:index], lines[index][:keep]]
        expected = index + 1
    path.write_bytes(b"".join(new))
    report = verify(path)
    assert not report.ok
    assert report.line == expected, (mutation, report)
    if mutation in ("delete", "delete_range", "swap", "duplicate"):
        assert report.kind == "chain"
    if mutation == "truncate":
        assert report.kind == "truncated"
    assert str(report) == f"line {expected}: {report.reason}"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories)
def test_an_untouched_log_always_verifies(history: History, fresh_path: Any) -> None:
    """A log written by AuditLog verifies, counts what it holds, and its head is the last hash."""
    path = fresh_path()
    with capture_audit() as records:
        lines = write_log(path, history)
    report = verify(path)
    assert report.ok, report
    assert report.lines == len(lines) == len(records)
    assert report.runs == len(history.fields)
    assert report.head == json.loads(lines[-1])["hash"]
    assert list(read_records(path)) == records


# -- each kind of fault, by example -------------------------------------------------------------


@pytest.fixture
def log_lines(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A small valid log of two runs (7 lines, one rejected attempt) and its lines."""
    path = tmp_path / "audit.jsonl"
    lc = Lifecycle(clock=ManualClock(), audit=AuditLog(path))
    first = lc.complete(lc.first_token(lc.start(lc.create(agent_id="agent-1"))))
    with pytest.raises(RunLifecycleError):
        lc.start(first)
    lc.cancel(lc.create(agent_id="agent-2"))
    assert isinstance(lc.audit, AuditLog)
    lc.audit.close()
    return path, path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("damage", "line", "kind", "words"),
    [
        ("not_json", 3, "not_json", "not JSON"),
        ("empty", 3, "not_json", "empty line"),
        ("array", 3, "not_json", "not a JSON object"),
        ("no_hash", 3, "malformed", "hash"),
        ("reformatted", 3, "changed", "reformatted"),
        ("edited", 3, "changed", "does not match its hash"),
        ("forged_gap", 3, "sequence", "gap in the log-wide sequence"),
        ("forged_record", 3, "malformed", "not an audit record"),
        ("first_missing", 1, "chain", "n=1"),
    ],
)
def test_each_kind_of_fault_is_named_with_its_line(
    log_lines: tuple[Path, list[bytes]], damage: str, line: int, kind: str, words: str
) -> None:
    """Each way a line can go wrong is reported as its kind, at its line, with a telling reason."""
    path, lines = log_lines
    obj = json.loads(lines[2])
    previous_hash = json.loads(lines[1])["hash"]
    if damage == "not_json":
        lines[2] = lines[2][:40] + b"\n"
    elif damage == "empty":
        lines[2] = b"\n"
    elif damage == "array":
        lines[2] = b"[1, 2]\n"
    elif damage == "no_hash":
        lines[2] = (canonical({k: v for k, v in obj.items() if k != "hash"}) + "\n").encode()
    elif damage == "reformatted":
        lines[2] = (json.dumps(obj) + "\n").encode()
    elif damage == "edited":
        obj["at"] = "2030-01-01T00:00:00+00:00"
        lines[2] = rewrite(obj)
    elif damage == "forged_gap":  # re-hashed by someone who knows the format, n skipping ahead
        content = {k: v for k, v in obj.items() if k != "hash"}
        content.update(n=9, prev=previous_hash)
        lines[2:] = [seal(content)]
    elif damage == "forged_record":
        lines[2:] = [seal({"kind": "note", "n": 3, "prev": previous_hash})]
    elif damage == "first_missing":
        del lines[0]
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert (report.ok, report.line, report.kind) == (False, line, kind)
    assert report.reason is not None and words in report.reason


def test_the_format_is_what_the_readme_says(log_lines: tuple[Path, list[bytes]]) -> None:
    """Each line is canonical JSON with the SHA-256 of its content last, chained by prev and n."""
    _, lines = log_lines
    previous = "0" * 64
    for number, line in enumerate(lines, 1):
        obj = json.loads(line)
        assert list(obj)[-1] == "hash"
        content = {k: v for k, v in obj.items() if k != "hash"}
        assert seal(content) == line
        assert (obj["n"], obj["prev"]) == (number, previous)
        previous = obj["hash"]
    assert [json.loads(line)["kind"] for line in lines] == [
        "created",
        "transition",
        "transition",
        "transition",
        "rejected",
        "created",
        "transition",
    ]


def test_a_line_sealed_by_hand_per_the_format_continues_the_chain(
    log_lines: tuple[Path, list[bytes]],
) -> None:
    """The documented format is complete: a tool that follows it can append lines that verify."""
    path, lines = log_lines
    last = json.loads(lines[-1])
    rejected = json.loads(lines[4])
    content = {k: v for k, v in rejected.items() if k not in ("hash", "n", "prev")}
    content.update(n=last["n"] + 1, prev=last["hash"])
    with path.open("ab") as out:
        out.write(seal(content))
    report = verify(path)
    assert report.ok, report
    assert (report.lines, report.rejected) == (8, 2)


def test_an_empty_log_verifies_and_a_missing_one_is_an_audit_error(tmp_path: Path) -> None:
    """An empty file is an intact empty log; a missing file raises AuditError naming it."""
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    assert (verify(empty).ok, verify(empty).lines, verify(empty).head) == (True, 0, None)
    with pytest.raises(AuditError, match=r"missing\.jsonl"):
        verify(tmp_path / "missing.jsonl")


# -- repair ----------------------------------------------------------------------------------


def test_repair_cuts_a_torn_last_line_and_the_log_continues(
    log_lines: tuple[Path, list[bytes]],
) -> None:
    """A torn last line is cut, nothing else; the log then verifies and appending extends its chain."""
    path, lines = log_lines
    torn = lines[-1][:25]
    path.write_bytes(b"".join(lines[:-1]) + torn)
    assert verify(path).kind == "truncated"
    with pytest.raises(AuditError, match="repair"):
        AuditLog(path)
    report = repair(path)
    assert report.ok, report
    assert report.cut_bytes == len(torn)
    assert path.read_bytes() == b"".join(lines[:-1])
    with AuditLog(path) as log:
        Lifecycle(audit=log).create(agent_id="agent-3")
    after = verify(path)
    assert after.ok, after
    assert after.lines == len(lines)


def test_repair_of_an_intact_log_changes_nothing(log_lines: tuple[Path, list[bytes]]) -> None:
    """Repairing a log that needs nothing cuts nothing and reports it intact."""
    path, lines = log_lines
    report = repair(path)
    assert (report.ok, report.cut_bytes) == (True, 0)
    assert path.read_bytes() == b"".join(lines)


def test_repair_never_cuts_other_faults(log_lines: tuple[Path, list[bytes]]) -> None:
    """With an edited line and a torn tail, repair cuts only the tail and names the edited line."""
    path, lines = log_lines
    obj = json.loads(lines[1])
    obj["trigger"] = "cancel"
    lines[1] = rewrite(obj)
    path.write_bytes(b"".join(lines) + b'{"agent_id":')
    report = repair(path)
    assert (report.ok, report.line, report.kind, report.cut_bytes) == (False, 2, "changed", 12)
    assert path.read_bytes() == b"".join(lines)


# -- reading -----------------------------------------------------------------------------------


def test_read_records_skips_a_torn_tail_and_names_a_bad_line(
    log_lines: tuple[Path, list[bytes]],
) -> None:
    """read_records yields the records, ignores an incomplete last line, and refuses a non-record."""
    path, lines = log_lines
    path.write_bytes(b"".join(lines) + b'{"kind":')
    assert [r.kind for r in read_records(path)][:2] == ["created", "transition"]
    assert len(list(read_records(path))) == len(lines)
    path.write_bytes(b"".join(lines[:2]) + b"oops\n" + b"".join(lines[2:]))
    with pytest.raises(ReplayError) as caught:
        list(read_records(path))
    assert caught.value.line == 3


def test_read_records_of_a_missing_file_fails_at_once(tmp_path: Path) -> None:
    """An unreadable log raises AuditError when read_records is called, before iteration."""
    with pytest.raises(AuditError):
        read_records(tmp_path / "nope.jsonl")


def test_replay_of_a_damaged_file_is_a_replay_error_at_the_fault(
    log_lines: tuple[Path, list[bytes]],
) -> None:
    """replay(path) refuses a log that does not verify, naming the same line verify names."""
    path, lines = log_lines
    del lines[3]
    path.write_bytes(b"".join(lines))
    with pytest.raises(ReplayError) as caught:
        replay(path)
    assert caught.value.line == verify(path).line == 4
