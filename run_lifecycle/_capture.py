"""The audit sinks ``testing.capture_audit()`` has made active, fed by ``Lifecycle.report``.

Internal. A tuple replaced as a whole (never mutated in place), so
``report`` can iterate it without a lock while another thread enters or
leaves a capture; with no capture active, reporting costs one empty loop.
"""

from __future__ import annotations

import threading

from ._events import AuditSink

ACTIVE: tuple[AuditSink, ...] = ()
_lock = threading.Lock()


def add(sink: AuditSink) -> None:
    """Start feeding ``sink`` every record any ``Lifecycle`` reports."""
    global ACTIVE
    with _lock:
        ACTIVE = (*ACTIVE, sink)


def remove(sink: AuditSink) -> None:
    """Stop feeding ``sink`` (the innermost registration of it, if it was added twice)."""
    global ACTIVE
    with _lock:
        items = list(ACTIVE)
        for index in range(len(items) - 1, -1, -1):
            if items[index] is sink:
                del items[index]
                break
        ACTIVE = tuple(items)
