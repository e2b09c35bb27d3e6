"""How a run is kept: one row of indexed columns plus its wire document, the same in every store.

The memory store and the SQL stores keep the very same ``RunRow``, so they
filter, order, lease and decode runs identically; only where the row lives
differs. The document is the run's wire form without the three callback
fields: those live in their own columns, written only by the callback outbox,
so a transition rewriting the document can never erase a delivery outcome
(and a delivery can never undo a transition).

Rows are decoded without the full ``from_json`` validation (a stored document
was validated when it was written, and decoding sits on every read), but the
state invariants are still checked, so a row edited by hand into nonsense is
reported as a ``StoreError`` naming the run rather than returned.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from .._run import RequestConfig, Run, RunStatus, StopReason
from .._validate import check_consistency
from ..exceptions import InvalidRunDocument, StoreError
from ..serialization import converter, parse_datetime, to_json

__all__ = [
    "CALLBACK_FIELDS",
    "NON_TERMINAL",
    "RUN_COLUMNS",
    "Lease",
    "RunRow",
    "decode_run",
    "encode_document",
    "from_us",
    "new_row",
    "to_us",
]

#: The statuses a lease applies to (the run has not ended), derived from ``RunStatus``.
NON_TERMINAL: tuple[str, ...] = tuple(
    status.value for status in RunStatus if not status.is_terminal
)

#: Wire fields kept in their own columns rather than in the document.
CALLBACK_FIELDS = ("callback_sent_at", "callback_status_code", "callback_error")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(value: datetime) -> int:
    """Microseconds since the epoch: an exact, sortable, dialect-neutral timestamp."""
    return (value - _EPOCH) // _ONE_US


def from_us(value: int) -> datetime:
    """The aware UTC datetime of ``to_us``."""
    return _EPOCH + timedelta(microseconds=value)


@attrs.frozen
class Lease:
    """When a run's lease runs out, and when it was last renewed (both in epoch microseconds)."""

    expires_us: int
    renewed_us: int


@attrs.frozen
class RunRow:
    """One stored run: the columns of the runs table, in order.

    ``origin`` and ``created_monotonic_ns`` let the store instance that created
    a run restore its monotonic creation reading (same process, same clock).
    """

    id: str
    agent_id: str
    status: str
    created_at_us: int
    background: bool | None
    stop_reason: str | None
    conversation_id: str | None
    version: int
    lease_expires_us: int
    lease_renewed_us: int
    document: str
    callback_sent_at_us: int | None
    callback_status_code: int | None
    callback_error: str | None
    origin: str | None
    created_monotonic_ns: int | None

    @property
    def lease(self) -> Lease:
        return Lease(self.lease_expires_us, self.lease_renewed_us)


#: The runs table's column names, in ``RunRow`` order (a ``SELECT`` of them builds a ``RunRow``).
RUN_COLUMNS: tuple[str, ...] = tuple(field.name for field in attrs.fields(RunRow))


def encode_document(run: Run, wire: dict[str, Any] | None = None) -> str:
    """The run's wire form (``wire`` when already made) without the callback fields, as JSON."""
    data = to_json(run) if wire is None else dict(wire)
    for name in CALLBACK_FIELDS:
        del data[name]
    # ASCII escapes keep any string a caller managed to put in metadata storable as text.
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def new_row(run: Run, *, origin: str, lease: Lease, wire: dict[str, Any] | None = None) -> RunRow:
    """The row that stores ``run`` as it is now (``wire``: its ``to_json``, when at hand)."""
    sent = run.callback_sent_at
    return RunRow(
        id=run.id,
        agent_id=run.agent_id,
        status=run.status.value,
        created_at_us=to_us(run.created_at),
        background=run.background,
        stop_reason=None if run.stop_reason is None else run.stop_reason.value,
        conversation_id=run.conversation_id,
        version=run.version,
        lease_expires_us=lease.expires_us,
        lease_renewed_us=lease.renewed_us,
        document=encode_document(run, wire),
        callback_sent_at_us=None if sent is None else to_us(sent),
        callback_status_code=run.callback_status_code,
        callback_error=run.callback_error,
        origin=origin,
        created_monotonic_ns=run.created_monotonic_ns,
    )


def _optional_datetime(value: Any) -> datetime | None:
    return None if value is None else parse_datetime(value)


def decode_run(row: RunRow, *, origin: str | None = None, check: bool = True) -> Run:
    """The ``Run`` a row holds; its monotonic reading only when ``origin`` wrote it.

    ``check=False`` skips the state invariants, for a row read inside the store's
    own transition (the pure core is about to judge that run anyway).
    """
    try:
        doc = json.loads(row.document)
        config = doc.get("request_config")
        reason = doc.get("stop_reason")
        run = Run(
            id=doc["id"],
            agent_id=doc["agent_id"],
            created_at=parse_datetime(doc["created_at"]),
            status=RunStatus(doc["status"]),
            completed_at=_optional_datetime(doc.get("completed_at")),
            conversation_id=doc.get("conversation_id"),
            base_template_id=doc.get("base_template_id"),
            background=doc.get("background"),
            metadata=doc.get("metadata"),
            request_config=None if config is None else converter.structure(config, RequestConfig),
            stop_reason=None if reason is None else StopReason(reason),
            callback_url=doc.get("callback_url"),
            callback_sent_at=None
            if row.callback_sent_at_us is None
            else from_us(row.callback_sent_at_us),
            callback_status_code=row.callback_status_code,
            callback_error=row.callback_error,
            ttft_ns=doc.get("ttft_ns"),
            total_duration_ns=doc.get("total_duration_ns"),
            version=row.version,
            created_monotonic_ns=row.created_monotonic_ns
            if origin is not None and row.origin == origin
            else None,
        )
        if check:
            check_consistency(run, InvalidRunDocument)
    except Exception as exc:  # any decoding failure means the row was damaged outside the library
        raise StoreError(
            f"the stored record of run {row.id!r} is damaged and cannot be read ({exc})"
        ) from None
    if run.id != row.id or run.status.value != row.status:
        raise StoreError(
            f"the stored record of run {row.id!r} is damaged: its document disagrees with its columns"
        )
    return run
