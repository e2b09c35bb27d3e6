"""Helpers for your own tests: see what the lifecycle reported, as structlog's ``capture_logs`` does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from . import _capture
from ._events import AuditRecord

__all__ = ["capture_audit"]


class _ListSink:
    __slots__ = ("records",)

    def __init__(self, records: list[AuditRecord]) -> None:
        self.records = records

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def capture_audit() -> Iterator[list[AuditRecord]]:
    """Collect every record (``RunCreated``, ``TransitionEvent``, ``RejectedAttempt``) reported
    while the block runs, by any ``Lifecycle`` or store in this process, from any thread.

    The records arrive in the list as they are reported, in addition to
    whatever audit sink the lifecycle has; captures nest, and each sees
    everything. ``replay(records)`` rebuilds the runs from them::

        with capture_audit() as records:
            lc.complete(lc.start(lc.create(agent_id="a")))
        assert [r.kind for r in records] == ["created", "transition", "transition"]
    """
    records: list[AuditRecord] = []
    sink = _ListSink(records)
    _capture.add(sink)
    try:
        yield records
    finally:
        _capture.remove(sink)
