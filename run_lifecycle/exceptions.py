"""Every error the library raises, under one base class.

Catch ``RunLifecycleError`` to handle anything this library refuses; catch a
subclass to handle one situation. The tree::

    RunLifecycleError
    ├── InvalidRunInput            a creation argument is not acceptable (field, reason)
    │   ├── InvalidRunDocument     a wire document is not a valid Run (field, reason)
    │   └── CallbackURLRejected    a callback URL that will never be called (url, reason)
    ├── TransitionError            a trigger was refused (run_id, status, trigger)
    │   ├── IllegalTransition      the trigger is not allowed from the run's status
    │   └── InvalidStopReason      the stop reason does not fit the trigger
    ├── RunNotFound                a store holds no run with that id (run_id)
    ├── RunAlreadyExists           a store already holds a run with that id (run_id)
    ├── StoreError                 a store cannot be opened or used (bad URL, missing driver)
    │   └── StoreConflict          a transition kept losing races and gave up (run_id, attempts)
    ├── InvalidCallbackConfig      a deliverer option is not acceptable (option, reason)
    ├── AuditError                 the audit log cannot be read, replayed or written
    │   └── ReplayError            events that cannot rebuild a run (line, reason)
    ├── DiagramError               a diagram cannot be drawn (no Graphviz ``dot``, dot failed)

Transition errors always carry the run id, the status the run was in and the
trigger that was refused, so a caller (a web handler answering "cancel") can
tell its user exactly what happened: "run-… is already cancelled".
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "CallbackURLRejected",
    "DiagramError",
    "IllegalTransition",
    "InvalidCallbackConfig",
    "InvalidRunDocument",
    "InvalidRunInput",
    "InvalidStopReason",
    "ReplayError",
    "RunAlreadyExists",
    "RunLifecycleError",
    "RunNotFound",
    "StoreConflict",
    "StoreError",
    "TransitionError",
]


class RunLifecycleError(Exception):
    """Base class of every error raised by run_lifecycle."""


class InvalidRunInput(RunLifecycleError, ValueError):
    """A value given to build a run is not acceptable; nothing was created.

    ``field`` names the offending field (dotted for nested values, e.g.
    ``request_config.use_assistant_message``); ``reason`` says what is wrong.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class InvalidRunDocument(InvalidRunInput):
    """A JSON document is not a valid Letta Run (unknown key, wrong type, inconsistent state...)."""


class TransitionError(RunLifecycleError):
    """A trigger was refused; the run is left exactly as it was."""

    def __init__(self, run_id: str, status: str, trigger: str, message: str) -> None:
        self.run_id = run_id
        self.status = status
        self.trigger = trigger
        super().__init__(message)


class IllegalTransition(TransitionError):
    """The trigger is not allowed from the run's current status.

    A late ``complete`` after a ``cancel`` lands here: ``status`` tells the caller
    the run was cancelled, and the stored run was not touched.
    """


class InvalidStopReason(TransitionError):
    """The stop reason does not fit the trigger (``complete`` with ``error``, say).

    It is rejected rather than silently mapped to another status.
    """

    def __init__(
        self, run_id: str, status: str, trigger: str, stop_reason: str, message: str
    ) -> None:
        self.stop_reason = stop_reason
        super().__init__(run_id, status, trigger, message)


class RunNotFound(RunLifecycleError, LookupError):
    """No run with this id exists in the store."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")


class RunAlreadyExists(RunLifecycleError):
    """A run with this id is already stored; the existing one was kept."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"a run with id {run_id!r} already exists")


class StoreError(RunLifecycleError):
    """A store cannot be opened or used: an unknown URL scheme, a missing driver, a bad schema."""


class StoreConflict(StoreError):
    """A transition lost the compare-and-set race ``attempts`` times in a row and gave up.

    Nothing was written. It takes an extraordinary number of concurrent writers
    on one run; retrying later is safe.
    """

    def __init__(self, run_id: str, attempts: int) -> None:
        self.run_id = run_id
        self.attempts = attempts
        super().__init__(
            f"run {run_id!r} kept changing under this update ({attempts} attempts lost the race);"
            " nothing was written, retry later"
        )


class AuditError(RunLifecycleError):
    """The audit log cannot be read, written or replayed."""


class ReplayError(AuditError):
    """A sequence of events cannot rebuild a run: it is illegal, out of order, or corrupt.

    ``line`` is the 1-based line of the log at fault when the events came from a file.
    """

    def __init__(self, reason: str, *, line: int | None = None, run_id: str | None = None) -> None:
        self.reason = reason
        self.line = line
        self.run_id = run_id
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{reason}")


class CallbackURLRejected(InvalidRunInput):
    """A callback URL that will never be called (not http/https, no host, credentials, metadata)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__("callback_url", reason)


class InvalidCallbackConfig(RunLifecycleError, ValueError):
    """A callback deliverer option (retry policy, timeout, secret, batch size) is not acceptable.

    ``option`` names it and ``reason`` says what to change; nothing was started.
    """

    def __init__(self, option: str, reason: str) -> None:
        self.option = option
        self.reason = reason
        super().__init__(f"{option}: {reason}")


class DiagramError(RunLifecycleError):
    """A diagram cannot be drawn: Graphviz's ``dot`` is missing or failed.

    The message says how to get Graphviz, or what ``dot`` complained about;
    mermaid and DOT text never need it.
    """
