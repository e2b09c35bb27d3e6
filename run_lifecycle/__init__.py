"""run-lifecycle: the lifecycle of an AI agent's run, never wrong.

A Letta-compatible ``Run`` record is driven through
``created -> running -> completed | failed | cancelled`` by a state machine
defined once with ``transitions``. Records are frozen values; every
transition returns a new record and an event, or raises a typed error and
changes nothing.
"""

from __future__ import annotations

from ._clock import Clock, ManualClock, SystemClock
from ._events import (
    AuditRecord,
    AuditSink,
    RejectedAttempt,
    RunCreated,
    TransitionEvent,
    record_from_dict,
)
from ._lifecycle import Lifecycle, new_run_id
from ._machine import TRIGGERS, apply_trigger
from ._run import MessageType, RequestConfig, Run, RunStatus, StopReason
from .exceptions import (
    AuditError,
    CallbackURLRejected,
    IllegalTransition,
    InvalidRunDocument,
    InvalidRunInput,
    InvalidStopReason,
    ReplayError,
    RunAlreadyExists,
    RunLifecycleError,
    RunNotFound,
    StoreError,
    TransitionError,
)
from .serialization import dumps, from_json, loads, to_json

__all__ = [
    "TRIGGERS",
    "AuditError",
    "AuditRecord",
    "AuditSink",
    "CallbackURLRejected",
    "Clock",
    "IllegalTransition",
    "InvalidRunDocument",
    "InvalidRunInput",
    "InvalidStopReason",
    "Lifecycle",
    "ManualClock",
    "MessageType",
    "RejectedAttempt",
    "ReplayError",
    "RequestConfig",
    "Run",
    "RunAlreadyExists",
    "RunCreated",
    "RunLifecycleError",
    "RunNotFound",
    "RunStatus",
    "StopReason",
    "StoreError",
    "SystemClock",
    "TransitionError",
    "TransitionEvent",
    "apply_trigger",
    "dumps",
    "from_json",
    "loads",
    "new_run_id",
    "record_from_dict",
    "to_json",
]

__version__ = "0.1.0"
