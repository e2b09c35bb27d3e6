"""The audit log: an append-only, tamper-evident, replayable history of every run.

Write it with ``AuditLog`` (an ``AuditSink``: ``Lifecycle(audit=AuditLog(path))``);
check it with ``verify``; cut the incomplete last line a crash left with
``repair``; rebuild the runs with ``replay``; read the records with
``read_records``.

The format, one JSON object per line (JSON Lines, ``\\n``-terminated)::

    {"agent_id":"agent-1","at":"2026-01-01T00:00:00.012000+00:00",
     "changes":{"status":"running"},"from_status":"created","kind":"transition",
     "n":2,"prev":"<hash of line 1>","run_id":"run-...","seq":1,"stop_reason":null,
     "to_status":"running","trigger":"start","hash":"<64 hex digits>"}

(one line in the file). A line's *content* is the record's ``to_dict()`` (kind
``created``, ``transition``, ``rejected`` or ``callback``) plus ``n``, the log-wide sequence
number (1, 2, 3...), and ``prev``, the previous line's ``hash`` (64 zeros on
line 1). ``hash`` is the hex SHA-256 of the content's canonical JSON: keys
sorted by code point, separators ``,`` and ``:`` without whitespace, every
non-ASCII character escaped as ``\\uXXXX`` (so the bytes are ASCII, hence
UTF-8), numbers as Python's ``json`` writes them. The line is exactly that
canonical text with ``"hash"`` appended as its last member. Changing any byte
of a line breaks its hash; deleting, duplicating, swapping or inserting lines
breaks the chain of ``prev``; the per-run ``seq`` numbers and the machine
judge whether each run's history is legal.

What it cannot see on its own: a cut of the log's *last* lines (the shorter
log is a valid log; keep ``VerifyReport.head`` elsewhere to detect it), and a
forger who rewrites every hash from the edit onwards (anchor the head hash
elsewhere for that too).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

import attrs

from ._audit_check import VerifyReport, cut_incomplete_tail, open_log, raw_lines, scan_file
from ._audit_format import FaultKind, parse_record
from ._audit_log import AuditLog, Durability
from ._audit_replay import Rebuilder
from ._events import AuditRecord, CallbackAttempt, RejectedAttempt, RunCreated, TransitionEvent
from ._run import Run
from .exceptions import ReplayError

__all__ = [
    "AuditLog",
    "AuditRecord",
    "Durability",
    "FaultKind",
    "VerifyReport",
    "read_records",
    "repair",
    "replay",
    "verify",
]


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check the whole log: ok, or the first line at which it stops being what was written.

    Raises ``AuditError`` only when the file cannot be read; every fault in
    its content is reported, never raised.
    """
    return scan_file(path).report()


def repair(path: str | os.PathLike[str]) -> VerifyReport:
    """Cut an incomplete last line (the mark of a crash mid-write), then verify.

    Nothing else is ever cut: when other faults remain, the report names the
    first of them (``ok`` is False) and the log keeps them for inspection.
    ``cut_bytes`` says how much was removed.
    """
    cut = cut_incomplete_tail(path)
    return attrs.evolve(verify(path), cut_bytes=cut)


def replay(source: str | os.PathLike[str] | Iterable[AuditRecord]) -> dict[str, Run]:
    """Rebuild every run, by id in order of creation, from a log file or from records.

    Each run starts from its ``created`` record and takes its transitions in
    ``seq`` order through the machine; the values the events recorded (times,
    durations) are then taken as written. A file must also pass ``verify``.
    Raises ``ReplayError`` (``line``: the file line or 1-based position of the
    first record at fault, ``run_id``) on any corruption or illegality.
    """
    if isinstance(source, str | os.PathLike):
        scan = scan_file(source)
        report = scan.report()
        if not report.ok:
            raise ReplayError(report.reason or "", line=report.line, run_id=report.run_id)
        return scan.runs
    rebuilder = Rebuilder()
    faults: list[ReplayError] = []
    for position, record in enumerate(source, 1):
        if not isinstance(record, RunCreated | TransitionEvent | RejectedAttempt | CallbackAttempt):
            raise ReplayError(f"not an audit record: {type(record).__name__}", line=position)
        try:
            rebuilder.add(record, position)
        except ReplayError as exc:
            faults.append(exc)
    faults.extend(rebuilder.finish())
    if faults:
        raise min(faults, key=lambda fault: fault.line or 0)
    return rebuilder.runs


def read_records(path: str | os.PathLike[str]) -> Iterator[AuditRecord]:
    """The records of the log, in line order, without checking the chain (``verify`` does).

    An incomplete last line is skipped (a write in flight, or a crash); any
    other line that holds no record raises ``ReplayError`` naming it. An
    unreadable file raises ``AuditError`` at once, not at the first ``next``.
    """
    with open_log(path):
        pass
    return _records(path)


def _records(path: str | os.PathLike[str]) -> Iterator[AuditRecord]:
    with open_log(path) as (handle, size):
        for number, raw, complete in raw_lines(handle, size):
            if not complete:
                return
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                for key in ("n", "prev", "hash"):
                    if data.pop(key, None) is None:
                        raise ValueError(f"no {key}")
                record = parse_record(data)
            except ValueError as exc:
                raise ReplayError(f"not an audit record: {exc}", line=number) from None
            yield record
