"""What the lifecycle says happened: creations, accepted transitions, rejected attempts.

Events are plain frozen values with a JSON form (``to_dict``/``from_dict``)
shared by structlog, the audit log and the stores' events tables, so every
sink sees the same facts in the same shape. ``changes`` holds the fields a
transition set, already in wire form (ISO strings, enum values), so an event
is JSON-ready and compares equal after a round trip.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from .serialization import format_datetime, parse_datetime

__all__ = [
    "AuditRecord",
    "AuditSink",
    "CallbackAttempt",
    "RejectedAttempt",
    "RunCreated",
    "TransitionEvent",
    "record_from_dict",
]


@attrs.frozen
class TransitionEvent:
    """One accepted transition of one run.

    ``seq`` is the run's ``version`` after the transition (1, 2, 3...);
    ``changes`` maps each field the transition set to its new wire value.
    """

    run_id: str
    agent_id: str
    seq: int
    trigger: str
    from_status: str
    to_status: str
    stop_reason: str | None
    at: datetime
    changes: dict[str, Any]

    kind: Literal["transition"] = attrs.field(default="transition", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_id": self.run_id,
            "agent_id": self.agent_id,
            "seq": self.seq,
            "trigger": self.trigger,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "stop_reason": self.stop_reason,
            "at": format_datetime(self.at),
            "changes": self.changes,
        }


@attrs.frozen
class RunCreated:
    """A run came into being; ``run`` is its initial record in wire form (seq 0)."""

    run_id: str
    agent_id: str
    at: datetime
    run: dict[str, Any]

    kind: Literal["created"] = attrs.field(default="created", init=False)
    seq: int = attrs.field(default=0, init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_id": self.run_id,
            "agent_id": self.agent_id,
            "seq": self.seq,
            "at": format_datetime(self.at),
            "run": self.run,
        }


@attrs.frozen
class RejectedAttempt:
    """A trigger that was refused; the run did not change.

    ``status`` and ``version`` are the run's at the time, ``reason`` is the
    error message the caller got and ``error`` its class name.
    """

    run_id: str
    agent_id: str
    trigger: str
    status: str
    version: int
    stop_reason: str | None
    error: str
    reason: str
    at: datetime

    kind: Literal["rejected"] = attrs.field(default="rejected", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_id": self.run_id,
            "agent_id": self.agent_id,
            "trigger": self.trigger,
            "status": self.status,
            "version": self.version,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "reason": self.reason,
            "at": format_datetime(self.at),
        }


@attrs.frozen
class CallbackAttempt:
    """One attempt to deliver a run's completion callback, as recorded on the run.

    It changes only the run's ``callback_sent_at``, ``callback_status_code`` and
    ``callback_error`` (never a lifecycle field, never ``version``); replay applies
    it so the rebuilt run carries the same callback outcome as the stored one.
    """

    run_id: str
    agent_id: str
    webhook_id: str
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None

    kind: Literal["callback"] = attrs.field(default="callback", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_id": self.run_id,
            "agent_id": self.agent_id,
            "webhook_id": self.webhook_id,
            "attempt": self.attempt,
            "at": format_datetime(self.at),
            "status_code": self.status_code,
            "error": self.error,
        }


AuditRecord = RunCreated | TransitionEvent | RejectedAttempt | CallbackAttempt
"""Anything the lifecycle reports to an audit sink."""


@runtime_checkable
class AuditSink(Protocol):
    """Receives every record a ``Lifecycle`` (or a store) produces, in order, per run."""

    def write(self, record: AuditRecord) -> None:
        """Take one record. It must not raise for a record it cannot keep; it may block."""
        ...


def record_from_dict(data: dict[str, Any]) -> AuditRecord:
    """Rebuild a record from its ``to_dict`` form (``KeyError``/``ValueError`` if malformed)."""
    kind = data["kind"]
    at = parse_datetime(data["at"])
    if kind == "transition":
        return TransitionEvent(
            run_id=data["run_id"],
            agent_id=data["agent_id"],
            seq=data["seq"],
            trigger=data["trigger"],
            from_status=data["from_status"],
            to_status=data["to_status"],
            stop_reason=data["stop_reason"],
            at=at,
            changes=data["changes"],
        )
    if kind == "created":
        return RunCreated(run_id=data["run_id"], agent_id=data["agent_id"], at=at, run=data["run"])
    if kind == "rejected":
        return RejectedAttempt(
            run_id=data["run_id"],
            agent_id=data["agent_id"],
            trigger=data["trigger"],
            status=data["status"],
            version=data["version"],
            stop_reason=data["stop_reason"],
            error=data["error"],
            reason=data["reason"],
            at=at,
        )
    if kind == "callback":
        return CallbackAttempt(
            run_id=data["run_id"],
            agent_id=data["agent_id"],
            webhook_id=data["webhook_id"],
            attempt=data["attempt"],
            at=at,
            status_code=data["status_code"],
            error=data["error"],
        )
    raise ValueError(f"unknown record kind {kind!r}")
