"""Reading an audit log back: the checks behind ``verify``, ``repair``, ``replay``.

One pass over the file judges every line twice. Line by line, against the
chain: is it complete, JSON, byte for byte what its hash covers, and does it
follow the previous line (its ``prev`` is that line's hash, its ``n`` is one
more)? A line that fails stops the pass: nothing after it can be trusted. Run
by run, against the machine (``_audit_replay``): is each record a legal step?
An illegality does not stop the pass, because a run's events may sit out of
line order and a later line can reveal that an earlier one was illegal; the
report names the *first* line at fault among everything found.

The file's length is taken under a shared ``flock``, so a line a writer is
appending at that moment is either wholly in the snapshot or not in it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import attrs

from ._audit_format import GENESIS, FaultKind, LineFault, open_line, parse_record
from ._audit_log import file_lock, line_start
from ._audit_replay import Rebuilder
from ._run import Run
from .exceptions import AuditError, ReplayError

__all__ = ["VerifyReport"]


@attrs.frozen
class VerifyReport:
    """What ``verify`` (or ``repair``) found.

    ``ok`` is True for an intact log. Otherwise ``line`` is the 1-based line
    at which the log stops being what was written, ``reason`` says why, and
    ``kind`` classifies it:

    - ``truncated``: the last line is incomplete (an interrupted write; ``repair`` cuts it);
    - ``not_json``: a line that is not a JSON object (an empty line too);
    - ``malformed``: JSON, but not an audit line or not an audit record;
    - ``changed``: the line's bytes are not what its hash covers (edited or reformatted);
    - ``chain``: the line does not follow the previous one (lines deleted, duplicated,
      swapped or inserted; ``reason`` tells which, from the sequence numbers);
    - ``sequence``: the chain holds but ``n`` skips (a gap in the log-wide sequence);
    - ``illegal``: an intact line whose record is not a legal step of its run (``run_id``).

    ``lines``, ``runs``, ``events`` (accepted transitions), ``rejected``
    (rejected attempts) and ``callbacks`` (callback delivery attempts) count
    what was read up to where the checks stopped;
    ``head`` is the hash of the last line that chained correctly: keep it
    elsewhere to detect a later cut of the log's tail. ``cut_bytes`` is what
    ``repair`` removed.
    """

    ok: bool
    lines: int = 0
    runs: int = 0
    events: int = 0
    rejected: int = 0
    callbacks: int = 0
    line: int | None = None
    kind: FaultKind | None = None
    reason: str | None = None
    run_id: str | None = None
    head: str | None = None
    cut_bytes: int = 0

    def __str__(self) -> str:
        if not self.ok:
            return f"line {self.line}: {self.reason}"
        text = (
            f"ok: {self.lines} lines, {self.runs} runs, {self.events} transitions,"
            f" {self.rejected} rejected attempts"
        )
        if self.callbacks:
            text += f", {self.callbacks} callback attempts"
        if self.head is not None:
            text += f"; head n={self.lines} hash={self.head}"
        return text


@attrs.frozen
class _Fault:
    line: int
    kind: FaultKind
    reason: str
    run_id: str | None = None


class LogScan:
    """One pass over a log's lines; ``report()`` and ``runs`` once it has seen them all."""

    def __init__(self) -> None:
        self.rebuilder = Rebuilder()
        self.lines = 0
        self._n = 0
        self._hash = GENESIS
        self._stop: _Fault | None = None
        self._faults: list[_Fault] = []

    def feed(self, number: int, raw: bytes, complete: bool) -> bool:
        """Check one line (without its newline); False when the pass must stop here."""
        if not complete:
            return self._halt(
                number,
                "truncated",
                "the last line is incomplete (a write was interrupted);"
                " `run-lifecycle audit repair` cuts it",
            )
        try:
            content, n, prev, digest = open_line(raw)
        except LineFault as fault:
            return self._halt(number, fault.kind, fault.reason)
        if prev != self._hash:
            return self._halt(number, "chain", _chain_reason(self._n, n))
        if n != self._n + 1:
            return self._halt(
                number,
                "sequence",
                f"n is {n} but the line before has n={self._n}: a gap in the log-wide sequence",
            )
        self._n, self._hash = n, digest
        self.lines += 1
        try:
            record = parse_record(content)
        except ValueError as exc:
            self._faults.append(_Fault(number, "malformed", f"not an audit record: {exc}"))
            return True
        try:
            self.rebuilder.add(record, number)
        except ReplayError as exc:
            self._faults.append(_Fault(number, "illegal", exc.reason, exc.run_id))
        return True

    def _halt(self, number: int, kind: FaultKind, reason: str) -> bool:
        self._stop = _Fault(number, kind, reason)
        return False

    @property
    def runs(self) -> dict[str, Run]:
        return self.rebuilder.runs

    def report(self) -> VerifyReport:
        """The verdict: the first line at fault among everything found, or ok."""
        faults = list(self._faults)
        if self._stop is None:
            # Only a complete pass can tell a missing event from one not read yet.
            faults.extend(
                _Fault(e.line or 0, "illegal", e.reason, e.run_id) for e in self.rebuilder.finish()
            )
        else:
            faults.append(self._stop)
        first = min(faults, key=lambda fault: fault.line) if faults else None
        runs = self.rebuilder.runs
        return VerifyReport(
            ok=first is None,
            lines=self.lines,
            runs=len(runs),
            events=self.rebuilder.events,
            rejected=self.rebuilder.rejected,
            callbacks=self.rebuilder.callbacks,
            line=None if first is None else first.line,
            kind=None if first is None else first.kind,
            reason=None if first is None else first.reason,
            run_id=None if first is None else first.run_id,
            head=self._hash if self.lines else None,
        )


def _chain_reason(last_n: int, n: int) -> str:
    """Why a line does not follow the previous one, told from the sequence numbers."""
    if last_n == 0:
        if n != 1:
            return f"the log starts at n={n}, not n=1: its first {n - 1} line(s) are missing"
        return "the first line does not start the chain (its prev is not 64 zeros)"
    if n == last_n + 1:
        return (
            "it does not follow the line before (its prev is not that line's hash):"
            " a line was replaced or inserted"
        )
    if n > last_n + 1:
        return (
            f"n jumps from {last_n} to {n}: {n - last_n - 1} line(s) are missing here"
            " (deleted, or moved further down)"
        )
    return f"n={n} comes after n={last_n}: this line is a duplicate, or was moved here"


@contextlib.contextmanager
def open_log(path: str | os.PathLike[str]) -> Iterator[tuple[BinaryIO, int]]:
    """The log open for reading and its length, snapshotted under a shared lock."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the caller is done
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            with file_lock(handle.fileno(), exclusive=False):
                size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise AuditError(f"cannot read audit log {path}: {exc.strerror or exc}") from None
        yield handle, size


def raw_lines(handle: BinaryIO, size: int) -> Iterator[tuple[int, bytes, bool]]:
    """``(number, bytes without the newline, complete)`` for each line in the first ``size`` bytes."""
    consumed = 0
    for number, raw in enumerate(handle, 1):
        if consumed + len(raw) > size:
            raw = raw[: size - consumed]
        if not raw:
            return
        consumed += len(raw)
        complete = raw.endswith(b"\n")
        yield number, raw[:-1] if complete else raw, complete
        if consumed >= size:
            return


def scan_file(path: str | os.PathLike[str]) -> LogScan:
    """Run the checks over the whole log at ``path``."""
    scan = LogScan()
    with open_log(path) as (handle, size):
        try:
            for number, raw, complete in raw_lines(handle, size):
                if not scan.feed(number, raw, complete):
                    break
        except OSError as exc:
            raise AuditError(f"cannot read audit log {path}: {exc.strerror or exc}") from None
    return scan


def cut_incomplete_tail(path: str | os.PathLike[str]) -> int:
    """Cut an incomplete last line (under the writers' lock); return the bytes removed."""
    try:
        fd = os.open(Path(path), os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AuditError(f"cannot repair audit log {path}: {exc.strerror or exc}") from None
    try:
        with file_lock(fd, exclusive=True):
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                return 0
            keep = line_start(fd, size)
            os.ftruncate(fd, keep)
            os.fsync(fd)
            return size - keep
    except OSError as exc:
        raise AuditError(f"cannot repair audit log {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
