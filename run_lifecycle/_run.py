"""The record: a frozen ``Run`` with exactly the fields of Letta's Run schema.

A ``Run`` is a value. Every lifecycle call returns a new one (``attrs.evolve``)
and never mutates its input, so a caller holding an old record cannot be
surprised, and the state machine drives a separate throwaway object rather
than the record itself (see ``_machine``).
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Required, TypedDict

import attrs

__all__ = [
    "TERMINAL_STATUSES",
    "MessageType",
    "RequestConfig",
    "Run",
    "RunFields",
    "RunStatus",
    "StopReason",
]


class RunStatus(enum.StrEnum):
    """Letta's ``RunStatus``: where a run is in its lifecycle."""

    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled: the run has ended."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class StopReason(enum.StrEnum):
    """Letta's ``StopReasonType``: why a run ended."""

    END_TURN = "end_turn"
    ERROR = "error"
    LLM_API_ERROR = "llm_api_error"
    INVALID_LLM_RESPONSE = "invalid_llm_response"
    INVALID_TOOL_CALL = "invalid_tool_call"
    MAX_STEPS = "max_steps"
    MAX_TOKENS_EXCEEDED = "max_tokens_exceeded"
    NO_TOOL_CALL = "no_tool_call"
    TOOL_RULE = "tool_rule"
    CANCELLED = "cancelled"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    REQUIRES_APPROVAL = "requires_approval"
    CONTEXT_WINDOW_OVERFLOW_IN_SYSTEM_PROMPT = "context_window_overflow_in_system_prompt"

    @property
    def run_status(self) -> RunStatus:
        """The terminal status this reason belongs to (Letta's ``StopReasonType.run_status``)."""
        return _RUN_STATUS_OF[self]


_RUN_STATUS_OF: dict[StopReason, RunStatus] = {
    StopReason.END_TURN: RunStatus.COMPLETED,
    StopReason.MAX_STEPS: RunStatus.COMPLETED,
    StopReason.TOOL_RULE: RunStatus.COMPLETED,
    StopReason.REQUIRES_APPROVAL: RunStatus.COMPLETED,
    StopReason.ERROR: RunStatus.FAILED,
    StopReason.LLM_API_ERROR: RunStatus.FAILED,
    StopReason.INVALID_LLM_RESPONSE: RunStatus.FAILED,
    StopReason.INVALID_TOOL_CALL: RunStatus.FAILED,
    StopReason.NO_TOOL_CALL: RunStatus.FAILED,
    StopReason.MAX_TOKENS_EXCEEDED: RunStatus.FAILED,
    StopReason.CONTEXT_WINDOW_OVERFLOW_IN_SYSTEM_PROMPT: RunStatus.FAILED,
    StopReason.INSUFFICIENT_CREDITS: RunStatus.FAILED,
    StopReason.CANCELLED: RunStatus.CANCELLED,
}


class MessageType(enum.StrEnum):
    """Letta's ``MessageType``, used by ``RequestConfig.include_return_message_types``."""

    SYSTEM_MESSAGE = "system_message"
    USER_MESSAGE = "user_message"
    ASSISTANT_MESSAGE = "assistant_message"
    REASONING_MESSAGE = "reasoning_message"
    HIDDEN_REASONING_MESSAGE = "hidden_reasoning_message"
    TOOL_CALL_MESSAGE = "tool_call_message"
    TOOL_RETURN_MESSAGE = "tool_return_message"
    APPROVAL_REQUEST_MESSAGE = "approval_request_message"
    APPROVAL_RESPONSE_MESSAGE = "approval_response_message"
    SUMMARY_MESSAGE = "summary_message"
    EVENT_MESSAGE = "event_message"


@attrs.frozen
class RequestConfig:
    """Letta's ``LettaRequestConfig``: how the run's messages are returned."""

    use_assistant_message: bool = True
    assistant_message_tool_name: str = "send_message"
    assistant_message_tool_kwarg: str = "message"
    include_return_message_types: tuple[MessageType, ...] | None = None


@attrs.frozen
class Run:
    """One run of an agent: the 17 fields of Letta's ``Run``, plus bookkeeping.

    Build runs with ``Lifecycle.create`` (or ``from_json``), which validate
    every field; move them with the ``Lifecycle`` methods, which keep the
    invariants (a terminal run has ``completed_at``, a fitting ``stop_reason``
    and a non-negative ``total_duration_ns``).

    ``version`` counts accepted transitions (0 at creation) and
    ``created_monotonic_ns`` is the monotonic reading taken at creation in this
    process (``None`` for a run read from JSON or a store). Neither is on the
    wire nor part of equality.
    """

    id: str
    agent_id: str
    created_at: datetime
    status: RunStatus = RunStatus.CREATED
    completed_at: datetime | None = None
    conversation_id: str | None = None
    base_template_id: str | None = None
    background: bool | None = None
    metadata: dict[str, Any] | None = None
    request_config: RequestConfig | None = None
    stop_reason: StopReason | None = None
    callback_url: str | None = None
    callback_sent_at: datetime | None = None
    callback_status_code: int | None = None
    callback_error: str | None = None
    ttft_ns: int | None = None
    total_duration_ns: int | None = None
    version: int = attrs.field(default=0, eq=False)
    created_monotonic_ns: int | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        """True once the run has completed, failed or been cancelled."""
        return self.status in TERMINAL_STATUSES


_FIELDS: tuple[attrs.Attribute[Any], ...] = tuple(attrs.fields(Run))
if not all(f.init and f.alias == f.name and not f.kw_only for f in _FIELDS):
    raise TypeError(
        "evolve_run builds a Run positionally: every field must be a plain init argument"
    )
_read_fields = operator.attrgetter(*(f.name for f in _FIELDS))
_FIELD_INDEX: dict[str, int] = {f.name: index for index, f in enumerate(_FIELDS)}


def evolve_run(run: Run, **changes: Any) -> Run:
    """``attrs.evolve(run, **changes)`` for ``Run``, at about half the cost.

    Every transition makes a new record, so this copy is the hot path's largest
    cost. ``attrs.evolve`` walks the fields in Python on every call; here one C
    ``attrgetter`` reads all of them, the changes are set by position, and the
    record is built through the same ``__init__``, so the result is the same.
    """
    values = list(_read_fields(run))
    index = _FIELD_INDEX
    try:
        for name, value in changes.items():
            values[index[name]] = value
    except KeyError as exc:
        raise TypeError(f"Run has no field {exc.args[0]!r}") from None
    return Run(*values)


class RunFields(TypedDict, total=False):
    """Letta's creation fields, as ``Lifecycle.create`` and ``store.create_run`` take them."""

    agent_id: Required[str]
    id: str | None
    conversation_id: str | None
    base_template_id: str | None
    background: bool | None
    metadata: Mapping[str, Any] | None
    request_config: RequestConfig | Mapping[str, Any] | None
    callback_url: str | None
