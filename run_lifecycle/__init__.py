"""run-lifecycle: the lifecycle of an AI agent's run, never wrong.

A Letta-compatible ``Run`` record is driven through
``created -> running -> completed | failed | cancelled`` by a state machine
defined once with ``transitions``. Records are frozen values; every
transition returns a new record and an event, or raises a typed error and
changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._audit_check import VerifyReport
from ._audit_log import AuditLog
from ._callbacks_policy import RetryPolicy
from ._clock import Clock, ManualClock, SystemClock
from ._events import (
    AuditRecord,
    AuditSink,
    CallbackAttempt,
    RejectedAttempt,
    RunCreated,
    TransitionEvent,
    record_from_dict,
)
from ._lifecycle import Lifecycle, new_run_id
from ._machine import TRIGGERS, apply_trigger
from ._run import MessageType, RequestConfig, Run, RunFields, RunStatus, StopReason
from .exceptions import (
    AuditError,
    CallbackURLRejected,
    DiagramError,
    IllegalTransition,
    InvalidCallbackConfig,
    InvalidRunDocument,
    InvalidRunInput,
    InvalidStopReason,
    ReplayError,
    RunAlreadyExists,
    RunLifecycleError,
    RunNotFound,
    StoreConflict,
    StoreError,
    TransitionError,
)
from .serialization import dumps, from_json, loads, to_json
from .stores import AsyncRunStore, PendingDelivery, RunStore, open_async_store, open_store

__all__ = [
    "TRIGGERS",
    "AsyncDeliverer",
    "AsyncRunStore",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "AuditSink",
    "CallbackAttempt",
    "CallbackURLRejected",
    "Clock",
    "Deliverer",
    "DiagramError",
    "IllegalTransition",
    "InvalidCallbackConfig",
    "InvalidRunDocument",
    "InvalidRunInput",
    "InvalidStopReason",
    "Lifecycle",
    "ManualClock",
    "MessageType",
    "PendingDelivery",
    "RejectedAttempt",
    "ReplayError",
    "RequestConfig",
    "RetryPolicy",
    "Run",
    "RunAlreadyExists",
    "RunCreated",
    "RunFields",
    "RunLifecycleError",
    "RunNotFound",
    "RunStatus",
    "RunStore",
    "StopReason",
    "StoreConflict",
    "StoreError",
    "SystemClock",
    "TransitionError",
    "TransitionEvent",
    "VerifyReport",
    "apply_trigger",
    "dumps",
    "from_json",
    "loads",
    "new_run_id",
    "open_async_store",
    "open_store",
    "record_from_dict",
    "to_json",
]

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .callbacks import AsyncDeliverer, Deliverer

#: Names whose modules need an extra; imported on first use so the core imports without it.
_LAZY = {"AsyncDeliverer": "callbacks", "Deliverer": "callbacks"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    try:
        value = getattr(import_module(f".{module}", __name__), name)
    except ImportError as exc:
        raise ImportError(
            f"run_lifecycle.{name} needs the {module!r} extra: pip install 'run-lifecycle[{module}]'"
            f" ({exc})"
        ) from exc
    globals()[name] = value
    return value
