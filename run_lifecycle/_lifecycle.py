"""``Lifecycle``: the shell around the pure core that creates runs and moves them.

It reads the clock, calls ``apply_trigger``, and reports what happened to
structlog and to an optional audit sink. It holds no per-run state: one
``Lifecycle`` serves any number of runs and threads, and costs nothing per run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Unpack

import structlog

from . import _capture
from ._clock import Clock, SystemClock
from ._events import AuditRecord, AuditSink, RejectedAttempt, RunCreated, TransitionEvent
from ._machine import apply_trigger
from ._run import RequestConfig, Run, RunFields, StopReason
from ._validate import (
    check_callback_url,
    check_consistency,
    check_id,
    check_metadata,
    check_non_empty,
    json_safe_copy,
)
from .exceptions import InvalidRunDocument, InvalidRunInput, TransitionError
from .serialization import converter, first_problem, to_json

__all__ = ["Lifecycle", "new_run_id"]

_LOGGER_NAME = "run_lifecycle"


def new_run_id() -> str:
    """A fresh Letta run id: ``run-`` and a UUID4.

    The UUID is ``uuid.uuid4()``'s (16 random bytes with the version-4 and
    RFC 4122 variant bits set), formatted directly: building a ``uuid.UUID``
    object only to print it was a tenth of a whole lifecycle's cost.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"run-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _optional_str(field: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRunInput(field, f"must be a string or None, got {type(value).__name__}")
    return value


def _request_config(value: object) -> RequestConfig | None:
    if value is None or isinstance(value, RequestConfig):
        return value
    if not isinstance(value, Mapping):
        raise InvalidRunInput("request_config", "must be a RequestConfig or a mapping")
    try:
        config: RequestConfig = converter.structure(dict(value), RequestConfig)
    except Exception as exc:  # cattrs wraps every failure; reuse the wire parser's messages
        field, reason = first_problem(exc)
        raise InvalidRunInput(f"request_config.{field}", reason) from None
    return config


class Lifecycle:
    """Creates runs and drives them through ``created -> running -> terminal``.

    ``clock`` defaults to the system clock. ``audit`` receives every creation,
    accepted transition and (unless ``record_rejections`` is False) rejected
    attempt. Events go to structlog under the logger name ``run_lifecycle``
    only when the application has configured structlog (or passes ``logger``):
    a library must not print on its own.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        audit: AuditSink | None = None,
        logger: Any = None,
        record_rejections: bool = True,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.audit = audit
        self.record_rejections = record_rejections
        self._logger = logger
        self._explicit_logger = logger is not None

    # -- reporting ---------------------------------------------------------------------------

    def report(self, record: AuditRecord) -> None:
        """Send one record to structlog (when configured) and to the audit sink."""
        if self._explicit_logger or structlog.is_configured():
            self._log(record)
        audit = self.audit
        if audit is not None:
            audit.write(record)
        for sink in _capture.ACTIVE:  # testing.capture_audit(); an empty tuple otherwise
            sink.write(record)

    def _log(self, record: AuditRecord) -> None:
        logger = self._logger
        if logger is None:  # bound on first use, so an application may configure structlog later
            logger = self._logger = structlog.get_logger(_LOGGER_NAME)
        data = record.to_dict()
        kind = data.pop("kind")
        if kind == "rejected":
            logger.warning("run.transition_rejected", **data)
        else:
            logger.info(f"run.{kind}", **data)

    # -- creation ----------------------------------------------------------------------------

    def create(self, **fields: Unpack[RunFields]) -> Run:
        """A new ``created`` run from Letta's creation fields, validated and reported.

        Every field is checked (``InvalidRunInput`` names the one at fault) and
        the creation goes to structlog and the audit sink.
        """
        run = self.build(**fields)
        self.report(
            RunCreated(run_id=run.id, agent_id=run.agent_id, at=run.created_at, run=to_json(run))
        )
        return run

    def build(self, **fields: Unpack[RunFields]) -> Run:
        """Validate and build a new run without reporting it (stores report after commit)."""
        unknown = sorted(set(fields) - set(RunFields.__annotations__))
        if unknown:
            raise InvalidRunInput(unknown[0], "is not a creation field of a Letta run")
        if "agent_id" not in fields:
            raise InvalidRunInput("agent_id", "is required")
        id = fields.get("id")
        background = fields.get("background")
        metadata = fields.get("metadata")
        callback_url = fields.get("callback_url")
        run_id = new_run_id() if id is None else check_id(id, InvalidRunInput)
        agent_id = check_non_empty("agent_id", fields["agent_id"], InvalidRunInput)
        if background is not None and not isinstance(background, bool):
            raise InvalidRunInput(
                "background", f"must be a bool or None, got {type(background).__name__}"
            )
        meta: dict[str, Any] | None = None
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise InvalidRunInput("metadata", "must be a mapping of JSON values")
            meta = dict(metadata)
            check_metadata(meta, InvalidRunInput)
            meta = json_safe_copy(meta)
        if callback_url is not None:
            check_callback_url(callback_url, InvalidRunInput)
        run = Run(
            id=run_id,
            agent_id=agent_id,
            created_at=self.clock.now(),
            conversation_id=_optional_str("conversation_id", fields.get("conversation_id")),
            base_template_id=_optional_str("base_template_id", fields.get("base_template_id")),
            background=background,
            metadata=meta,
            request_config=_request_config(fields.get("request_config")),
            callback_url=callback_url,
            created_monotonic_ns=self.clock.monotonic_ns(),
        )
        check_consistency(run, InvalidRunDocument)
        return run

    # -- transitions -------------------------------------------------------------------------

    def apply(
        self,
        run: Run,
        trigger: str,
        *,
        stop_reason: StopReason | str | None = None,
        error: str | None = None,
    ) -> tuple[Run, TransitionEvent | None]:
        """Apply ``trigger``; return the new run and its event (``None`` for an idempotent no-op)."""
        try:
            new, event = apply_trigger(
                run,
                trigger,
                now=self.clock.now(),
                monotonic_ns=self.clock.monotonic_ns(),
                stop_reason=stop_reason,
                error=error,
            )
        except TransitionError as exc:
            if self.record_rejections:
                self.report(self.rejection(run, exc, stop_reason))
            raise
        if event is not None:
            self.report(event)
        return new, event

    def rejection(self, run: Run, exc: TransitionError, stop_reason: object) -> RejectedAttempt:
        """The record of a refused trigger, as the audit log keeps it."""
        return RejectedAttempt(
            run_id=run.id,
            agent_id=run.agent_id,
            trigger=exc.trigger,
            status=run.status.value,
            version=run.version,
            stop_reason=None if stop_reason is None else str(stop_reason),
            error=type(exc).__name__,
            reason=str(exc),
            at=self.clock.now(),
        )

    def start(self, run: Run) -> Run:
        """created -> running."""
        return self.apply(run, "start")[0]

    def first_token(self, run: Run) -> Run:
        """Record the time to first token (once; later calls change nothing)."""
        return self.apply(run, "first_token")[0]

    def complete(self, run: Run, stop_reason: StopReason | str = StopReason.END_TURN) -> Run:
        """running -> completed with a completion stop reason (default ``end_turn``)."""
        return self.apply(run, "complete", stop_reason=stop_reason)[0]

    def fail(
        self, run: Run, stop_reason: StopReason | str = StopReason.ERROR, error: str | None = None
    ) -> Run:
        """created|running -> failed; ``error`` is kept in ``metadata["error"]``."""
        return self.apply(run, "fail", stop_reason=stop_reason, error=error)[0]

    def cancel(self, run: Run) -> Run:
        """created|running -> cancelled, or completed -> cancelled while awaiting approval."""
        return self.apply(run, "cancel")[0]

    def __repr__(self) -> str:
        return f"Lifecycle(clock={self.clock!r}, audit={self.audit!r})"
