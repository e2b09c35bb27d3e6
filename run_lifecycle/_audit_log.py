"""``AuditLog``: the append-only, hash-chained JSON Lines file every record goes to.

One ``write`` is one ``os.write`` of a whole line on an ``O_APPEND`` descriptor,
under a thread lock (threads share the descriptor) and an exclusive
``fcntl.flock`` (other processes, and other ``AuditLog`` objects on the same
file, have their own). Inside the lock the writer compares the file's size
with the end of the last line it knows; only when another writer has appended
since does it re-read the tail (the last line) to continue the chain. So a
single writer never reads the file after opening it, and several writers
never interleave or fork the chain.

Durability is the ``fsync`` choice: ``"always"`` (the default: a record is on
disk before ``write`` returns), ``"batch"`` (every ``batch`` records, and on
``close``), ``"never"`` (the kernel decides). Every choice survives a crash of
the writing *process*, since the line is in the kernel once ``os.write``
returns; they differ on a crash of the machine. The data sync runs after the
file lock is released, so writers in other processes do not queue behind it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal

from ._audit_format import GENESIS, encode_line, is_count, is_hash
from ._events import AuditRecord
from .exceptions import AuditError

__all__ = ["AuditLog"]

Durability = Literal["always", "batch", "never"]
_DURABILITY = ("always", "batch", "never")
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_sync = getattr(os, "fdatasync", os.fsync)
_logger = logging.getLogger("run_lifecycle.audit")


class _TailError(Exception):
    """The last line cannot be continued (truncated, or not an audit line)."""


@contextlib.contextmanager
def file_lock(fd: int, *, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on ``fd``: exclusive to append or cut, shared to take a stable snapshot."""
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def line_start(fd: int, end: int) -> int:
    """The offset just after the last newline before ``end`` (0 if there is none)."""
    pos = end
    step = 4096
    while pos > 0:
        step = min(pos, step * 2)
        chunk = os.pread(fd, step, pos - step)
        found = chunk.rfind(b"\n")
        if found >= 0:
            return pos - step + found + 1
        pos -= step
    return 0


def read_tail(fd: int, size: int) -> tuple[int, str]:
    """``(n, hash)`` of the last line of a file of ``size`` bytes (``(0, GENESIS)`` when empty)."""
    if size == 0:
        return 0, GENESIS
    if os.pread(fd, 1, size - 1) != b"\n":
        raise _TailError(
            "its last line is incomplete (a write was interrupted);"
            " `run-lifecycle audit repair` cuts it so the log can continue"
        )
    start = line_start(fd, size - 1)  # the final newline is not part of the last line
    line = os.pread(fd, size - 1 - start, start)
    try:
        data = json.loads(line)
        n, digest = data["n"], data["hash"]
    except (ValueError, TypeError, KeyError):
        n = digest = None
    if not is_count(n, 1) or not is_hash(digest):
        raise _TailError(
            "its last line is not an audit log line; `run-lifecycle audit verify` says more"
        )
    assert isinstance(n, int)
    assert isinstance(digest, str)
    return n, digest


_OPEN_LOGS: weakref.WeakSet[AuditLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked child shares its parent's open file description, hence its flock:
    # it must get its own descriptor, and a lock no parent thread can be holding.
    for log in list(_OPEN_LOGS):
        log._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class AuditLog:
    """An append-only audit log file; an ``AuditSink`` for ``Lifecycle(audit=...)`` and stores.

    Opening an existing log continues its chain. ``write`` never raises (the
    transition it records has already happened): a record it cannot write is
    counted in ``dropped``, kept as ``last_error`` and logged at ERROR on the
    ``run_lifecycle.audit`` logger. Safe to share between threads, and to use
    from several processes on one file.

    Raises ``AuditError`` when the file cannot be opened, or when its last line
    is incomplete (run ``repair`` first) or is not an audit line.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: Durability = "always", batch: int = 100
    ) -> None:
        if fsync not in _DURABILITY:
            raise AuditError(f"fsync must be one of {', '.join(_DURABILITY)}, not {fsync!r}")
        if type(batch) is not int or batch < 1:
            raise AuditError(f"batch must be a positive integer, not {batch!r}")
        self.path = Path(path)
        self.fsync: Durability = fsync
        self.batch = batch
        self.dropped = 0
        self.last_error: AuditError | None = None
        self._lock = threading.Lock()
        self._stale = False
        self._unsynced = 0
        self._n = 0
        self._hash = GENESIS
        self._size = 0
        self._fd = -1
        self._open()
        _OPEN_LOGS.add(self)

    # -- the sink ----------------------------------------------------------------------------

    def write(self, record: AuditRecord) -> None:
        """Append ``record`` as the next line of the chain (and sync it, as ``fsync`` says)."""
        try:
            content = record.to_dict()
        except Exception as exc:  # a sink must not raise: report, count, move on
            self._drop(record, f"it has no JSON form ({exc})")
            return
        with self._lock:
            if self._stale:
                self._reopen()
            fd = self._fd
            if fd < 0:
                self._drop(record, "the log is closed")
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # no context manager: this is the hot path
                try:
                    self._append(fd, content)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except (OSError, ValueError, TypeError, _TailError) as exc:
                self._drop(record, str(exc))
                return
            if self.fsync == "never":
                return
            self._unsynced += 1
            if self.fsync == "always" or self._unsynced >= self.batch:
                self._sync_now(fd)

    def _append(self, fd: int, content: dict[str, object]) -> None:
        size = os.fstat(fd).st_size
        if size != self._size:  # another writer appended (or a repair cut): follow its tail
            self._n, self._hash = read_tail(fd, size)
            self._size = size
        data, digest = encode_line(content, self._n + 1, self._hash)
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write: finish the line, or cut it below
                written += os.write(fd, data[written:])
        except OSError:
            os.ftruncate(fd, size)  # never leave half a line behind
            raise
        self._n += 1
        self._hash = digest
        self._size = size + len(data)

    # -- durability and lifetime -------------------------------------------------------------

    def sync(self) -> None:
        """Force what was written so far to disk now (``AuditError`` if that fails)."""
        with self._lock:
            if self._fd < 0:
                return
            try:
                _sync(self._fd)
            except OSError as exc:
                raise AuditError(f"audit log {self.path}: cannot sync to disk: {exc}") from None
            self._unsynced = 0

    def _sync_now(self, fd: int) -> None:
        try:
            _sync(fd)
        except OSError as exc:
            self.last_error = AuditError(f"audit log {self.path}: cannot sync to disk: {exc}")
            _logger.error("%s", self.last_error)
            return
        self._unsynced = 0

    def close(self) -> None:
        """Sync what ``batch`` left pending and close the file; closing twice is harmless."""
        with self._lock:
            if self._fd < 0:
                return
            try:
                if self._unsynced and not self._stale:
                    self._sync_now(self._fd)
            finally:
                self._finalizer()
                self._fd = -1
        _OPEN_LOGS.discard(self)

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._fd < 0

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self.closed else ""
        return f"AuditLog({str(self.path)!r}, fsync={self.fsync!r}{state})"

    # -- internals ---------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise AuditError(f"cannot open audit log {self.path}: {exc.strerror or exc}") from None
        try:
            with file_lock(fd, exclusive=True):
                size = os.fstat(fd).st_size
                self._n, self._hash = read_tail(fd, size)
                self._size = size
            if size == 0 and self.fsync != "never":
                _sync_directory(self.path)
        except (OSError, _TailError) as exc:
            os.close(fd)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise AuditError(f"cannot continue audit log {self.path}: {reason}") from None
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._stale = self._fd >= 0

    def _reopen(self) -> None:
        self._stale = False
        self._finalizer()  # this process's copy of the parent's descriptor
        self._fd = -1
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            self.last_error = AuditError(f"cannot reopen audit log {self.path}: {exc}")
            _logger.error("%s", self.last_error)
            return
        self._fd = fd
        self._unsynced = 0
        self._finalizer = weakref.finalize(self, os.close, fd)

    def _drop(self, record: object, reason: str) -> None:
        self.dropped += 1
        what = getattr(record, "kind", type(record).__name__)
        run_id = getattr(record, "run_id", "?")
        self.last_error = AuditError(
            f"audit log {self.path}: a {what} record of run {run_id} was not written: {reason}"
        )
        _logger.error("%s", self.last_error)


def _sync_directory(path: Path) -> None:
    """Make a new file's directory entry durable too (a synced file nobody can find is lost)."""
    try:
        fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
