"""What every store shares: the transition planner, argument checks, and reporting after commit.

A store is a ``Backend`` (where rows live: memory, SQLite, PostgreSQL) driven
by a ``StoreCore`` (what the rows mean). Backends expose plain synchronous
operations that take a connection first (the memory backend ignores it); the
sync ``RunStore`` runs them on a pooled connection, the ``AsyncRunStore`` runs
the very same functions inside SQLAlchemy's ``run_sync``. So statement text,
row conversion, retry loops and the planner exist once; only how a connection
is obtained differs between the twins.

A transition is *planned* by the pure core (``apply_trigger``) on the run as
read inside the backend's transaction, and the backend writes the plan with
compare-and-set on ``version``; when the write loses a race, the backend reads
again and asks the planner again. Records are reported (structlog, audit sink)
only after the backend returned, that is after the commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import attrs

from .._clock import Clock
from .._events import (
    AuditRecord,
    AuditSink,
    CallbackAttempt,
    RejectedAttempt,
    RunCreated,
    TransitionEvent,
    record_from_dict,
)
from .._lifecycle import Lifecycle
from .._machine import apply_trigger
from .._run import TERMINAL_STATUSES, Run, RunStatus, StopReason
from .._validate import (
    check_callback_url,
    check_consistency,
    check_id,
    check_metadata,
    check_non_empty,
)
from ..exceptions import (
    IllegalTransition,
    InvalidRunInput,
    RunLifecycleError,
    RunNotFound,
    StoreError,
    TransitionError,
)
from ..serialization import format_datetime, to_json
from ._codec import Lease, RunRow, decode_run, from_us, new_row, to_us
from ._outbox import OutboxRow, PendingDelivery

__all__ = [
    "DEFAULT_LEASE",
    "MAX_ATTEMPTS",
    "Backend",
    "BackendBase",
    "ListQuery",
    "Plan",
    "Planner",
    "StoreCore",
    "check_aware",
    "check_run_id",
]

#: How long a run may go without a heartbeat or a transition before ``reap`` fails it.
DEFAULT_LEASE = timedelta(minutes=5)

#: How many times a transition re-reads and re-applies after losing a race before giving up.
MAX_ATTEMPTS = 100

#: How long a claimed delivery is withheld from other deliverers (``claim_deliveries``).
DEFAULT_CLAIM_LEASE = timedelta(seconds=60)


@attrs.frozen
class Plan:
    """What to do with a run just read inside a transaction, as the pure core decided.

    ``event`` set: write ``run`` (the new record) with compare-and-set, insert
    the event (and an outbox row when ``outbox``) and renew the lease to
    ``lease``. ``error`` set: the trigger was refused; insert ``rejection``
    when there is one. Neither: nothing to write (an idempotent no-op, or a
    ``skip`` when the planner's precondition no longer held, as for a reap
    finding the run finished or heartbeating).
    """

    run: Run
    event: TransitionEvent | None = None
    lease: Lease | None = None
    outbox: bool = False
    lease_guard_us: int | None = None
    error: TransitionError | None = None
    rejection: RejectedAttempt | None = None
    skip: bool = False


#: Decides a transition from the run as stored and its lease; called again after a lost race.
Planner = Callable[[Run, Lease], Plan]


@attrs.frozen
class ListQuery:
    """``list`` arguments, checked and normalised (statuses as values, cursors as ids)."""

    agent_id: str | None = None
    statuses: tuple[str, ...] | None = None
    background: bool | None = None
    stop_reason: str | None = None
    conversation_id: str | None = None
    before: str | None = None
    after: str | None = None
    limit: int = 100
    descending: bool = True


class Backend(Protocol):
    """Where rows live. Every operation takes a connection first (ignored in memory)."""

    name: str

    def setup(self, conn: Any) -> None:
        """Create the tables (idempotently) and check the schema version."""

    def insert(self, conn: Any, row: RunRow, created: RunCreated) -> None:
        """Store a new run and its creation record; ``RunAlreadyExists`` on a taken id."""

    def fetch(self, conn: Any, run_id: str) -> RunRow:
        """The run's row; ``RunNotFound``."""

    def transition(self, conn: Any, run_id: str, planner: Planner, origin: str) -> Plan:
        """Read, plan, write with compare-and-set (retrying lost races); the plan carried out."""

    def reap(self, conn: Any, now_us: int, planner: Planner, origin: str) -> list[Plan]:
        """Carry out ``planner`` on every unfinished run whose lease ran out before ``now_us``."""

    def list_rows(self, conn: Any, query: ListQuery) -> list[RunRow]:
        """The rows ``query`` selects, in its order; ``RunNotFound`` for an unknown cursor."""

    def records(
        self, conn: Any, run_id: str, rejections: bool
    ) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        """(seq, body) of the run's events from seq 0, and (version, id, body) of its rejections."""

    def heartbeat(self, conn: Any, run_id: str, lease: Lease) -> str | None:
        """Renew an unfinished run's lease: ``None`` when renewed, else the run's (terminal) status."""

    def delete(self, conn: Any, run_id: str) -> None:
        """Remove the run with its events, rejections and deliveries; ``RunNotFound``."""

    def claim(self, conn: Any, now_us: int, until_us: int, limit: int) -> list[OutboxRow]:
        """Take due pending deliveries, pushing them to ``until_us``; rows as before the claim."""

    def record_attempt(
        self,
        conn: Any,
        run_id: str,
        seq: int,
        callback: tuple[int, int | None, str | None],
        next_us: int | None,
    ) -> RunRow:
        """Write the callback outcome columns and advance the delivery; the updated row."""

    def pending(self, conn: Any) -> list[OutboxRow]:
        """Every unfinished delivery, oldest due first."""

    def close(self) -> None:
        """Release what the backend holds (not a handed-in engine)."""


class BackendBase:
    """The part of a backend that is the same everywhere: reaping is candidates, then transitions."""

    def expired(self, conn: Any, now_us: int) -> list[str]:
        raise NotImplementedError

    def transition(self, conn: Any, run_id: str, planner: Planner, origin: str) -> Plan:
        raise NotImplementedError

    def reap(self, conn: Any, now_us: int, planner: Planner, origin: str) -> list[Plan]:
        done: list[Plan] = []
        for run_id in self.expired(conn, now_us):
            try:
                plan = self.transition(conn, run_id, planner, origin)
            except RunNotFound:  # deleted since the candidates were read
                continue
            if plan.event is not None:
                done.append(plan)
        return done


def _check_limit(value: object, field: str = "limit", maximum: int = 1000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidRunInput(field, f"must be an integer from 1 to {maximum}, got {value!r}")
    return value


def check_aware(field: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRunInput(field, f"must be a timezone-aware datetime, got {value!r}")
    return value


def check_run_id(run_id: object) -> str:
    """A run id argument must be a string (an unknown one is ``RunNotFound`` later)."""
    if not isinstance(run_id, str):
        raise InvalidRunInput("run_id", f"must be a string, got {type(run_id).__name__}")
    if not storable(run_id):
        raise RunNotFound(run_id)  # no stored run can have such an id
    return run_id


def storable(value: str) -> bool:
    """Whether every database can keep ``value`` in a text column (no NUL, valid UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_storable(field: str, value: str | None) -> None:
    if value is not None and not storable(value):
        raise InvalidRunInput(
            field, "must not contain NUL characters or unpaired surrogates (no database keeps them)"
        )


def scrub(text: str | None) -> str | None:
    """``text`` with what a database cannot keep replaced (for messages we only record)."""
    if text is None or storable(text):
        return text
    return text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def _check_optional_str(field: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRunInput(field, f"must be a string or None, got {type(value).__name__}")
    _check_storable(field, value)
    return value


def _status_value(value: object) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return RunStatus(value).value
    except ValueError:
        raise InvalidRunInput(
            "statuses", f"{value!r} is not a run status; use {', '.join(RunStatus)}"
        ) from None


class StoreCore:
    """The store logic shared by ``RunStore`` and ``AsyncRunStore``."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None,
        lease: timedelta,
        audit: AuditSink | None,
        record_rejections: bool,
        description: str,
    ) -> None:
        if not isinstance(lease, timedelta) or lease <= timedelta(0):
            raise InvalidRunInput("lease", f"must be a positive timedelta, got {lease!r}")
        self._backend = backend
        self._lifecycle = Lifecycle(clock, audit=audit, record_rejections=record_rejections)
        self._lease = lease
        self._lease_us = lease // timedelta(microseconds=1)
        self._description = description
        #: Identifies this store instance: it alone may trust the monotonic readings it stored.
        self._origin = uuid.uuid4().hex
        self._closed = False

    # -- public, shared by both twins ---------------------------------------------------------

    @property
    def lifecycle(self) -> Lifecycle:
        """The store's ``Lifecycle``: its clock, its audit sink, its structlog reporting."""
        return self._lifecycle

    @property
    def lease(self) -> timedelta:
        """How long a run may go without a heartbeat or a transition before ``reap`` fails it."""
        return self._lease

    @property
    def backend(self) -> str:
        """Which backend holds the runs: ``memory``, ``sqlite`` or ``postgresql``."""
        return self._backend.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._description})"

    # -- shared steps --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self._description} is closed")

    def _now(self) -> datetime:
        return self._lifecycle.clock.now()

    def _lease_from(self, now: datetime) -> Lease:
        now_us = to_us(now)
        return Lease(now_us + self._lease_us, now_us)

    def _new_row(self, run: Run, *, built: bool = False) -> tuple[RunRow, RunCreated]:
        """The row and creation record of a new run; ``built``: it comes from ``Lifecycle.build``."""
        if not built:
            self._check_new(run)
        for field in ("id", "agent_id", "conversation_id"):
            _check_storable(field, getattr(run, field))
        wire = to_json(run)
        row = new_row(run, origin=self._origin, lease=self._lease_from(self._now()), wire=wire)
        created = RunCreated(run_id=run.id, agent_id=run.agent_id, at=run.created_at, run=wire)
        return row, created

    @staticmethod
    def _check_new(run: Run) -> None:
        if not isinstance(run, Run):
            raise InvalidRunInput(
                "run", f"create takes a Run (see create_run), got {type(run).__name__}"
            )
        check_id(run.id, InvalidRunInput)
        check_non_empty("agent_id", run.agent_id, InvalidRunInput)
        if run.version != 0:
            raise InvalidRunInput(
                "version",
                f"create stores a new run, but run {run.id} has had {run.version} transitions;"
                " create it first, then apply its triggers through the store",
            )
        if run.metadata is not None:
            check_metadata(run.metadata, InvalidRunInput)
        if run.callback_url is not None:
            check_callback_url(run.callback_url, InvalidRunInput)
        check_consistency(run, InvalidRunInput)

    def _decode(self, row: RunRow) -> Run:
        return decode_run(row, origin=self._origin)

    def _planner(
        self, trigger: str, stop_reason: StopReason | str | None, error: str | None
    ) -> Planner:
        if not isinstance(trigger, str):
            raise InvalidRunInput("trigger", f"must be a string, got {type(trigger).__name__}")
        lifecycle = self._lifecycle

        def plan(run: Run, _: Lease) -> Plan:
            clock = lifecycle.clock
            now = clock.now()
            try:
                new, event = apply_trigger(
                    run,
                    trigger,
                    now=now,
                    monotonic_ns=clock.monotonic_ns(),
                    stop_reason=stop_reason,
                    error=error,
                )
            except TransitionError as exc:
                rejection = (
                    lifecycle.rejection(run, exc, stop_reason)
                    if lifecycle.record_rejections
                    else None
                )
                return Plan(run=run, error=exc, rejection=rejection)
            if event is None:
                return Plan(run=run)
            return Plan(
                run=new,
                event=event,
                lease=self._lease_from(now),
                outbox=new.callback_url is not None and new.status in TERMINAL_STATUSES,
            )

        return plan

    def _reap_planner(self, now: datetime) -> Planner:
        now_us = to_us(now)

        def plan(run: Run, lease: Lease) -> Plan:
            if run.status in TERMINAL_STATUSES or lease.expires_us >= now_us:
                return Plan(run=run, skip=True)  # finished or renewed since it was picked
            silent_s = max(0, now_us - lease.renewed_us) // 1_000_000
            message = (
                f"lease expired: no heartbeat for {silent_s}s"
                f" (the lease ran out at {format_datetime(from_us(lease.expires_us))})"
            )
            # A reap acts as of ``now``: the duration is measured on the wall clock up to it.
            try:
                new, event = apply_trigger(
                    attrs.evolve(run, created_monotonic_ns=None),
                    "fail",
                    now=now,
                    monotonic_ns=0,
                    stop_reason=StopReason.ERROR,
                    error=message,
                )
            except RunLifecycleError:
                return Plan(run=run, skip=True)
            return Plan(
                run=new,
                event=event,
                lease=Lease(now_us + self._lease_us, now_us),
                outbox=new.callback_url is not None,
                lease_guard_us=now_us,
            )

        return plan

    def _attempt_recorded(self, delivery: PendingDelivery, run: Run) -> Run:
        """Report a recorded callback attempt (after its commit), so replay sees it too."""
        assert run.callback_sent_at is not None
        self._lifecycle.report(
            CallbackAttempt(
                run_id=run.id,
                agent_id=run.agent_id,
                webhook_id=delivery.webhook_id,
                attempt=delivery.attempts + 1,
                at=run.callback_sent_at,
                status_code=run.callback_status_code,
                error=run.callback_error,
            )
        )
        return run

    def _finish(self, plan: Plan) -> Run:
        if plan.event is not None:
            self._lifecycle.report(plan.event)
        if plan.error is not None:
            if plan.rejection is not None:
                self._lifecycle.report(plan.rejection)
            raise plan.error
        return plan.run

    def _heartbeat_lease(self) -> Lease:
        return self._lease_from(self._now())

    @staticmethod
    def _heartbeat_refused(run_id: str, status: str) -> IllegalTransition:
        return IllegalTransition(
            run_id,
            status,
            "heartbeat",
            f"cannot heartbeat run {run_id}: it is {status} and has ended; stop working on it",
        )

    @staticmethod
    def _list_query(
        *,
        agent_id: str | None,
        statuses: Iterable[RunStatus | str] | None,
        background: bool | None,
        stop_reason: StopReason | str | None,
        conversation_id: str | None,
        active: bool,
        before: str | None,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"] | str,
    ) -> ListQuery:
        values: tuple[str, ...] | None = None
        if statuses is not None:
            if isinstance(statuses, str | RunStatus):
                statuses = [statuses]
            values = tuple(dict.fromkeys(_status_value(s) for s in statuses))
        if active:
            live = tuple(s.value for s in RunStatus if s not in TERMINAL_STATUSES)
            values = live if values is None else tuple(v for v in values if v in live)
        if background is not None and not isinstance(background, bool):
            raise InvalidRunInput("background", f"must be a bool or None, got {background!r}")
        reason: str | None = None
        if stop_reason is not None:
            try:
                reason = StopReason(stop_reason).value
            except ValueError:
                raise InvalidRunInput(
                    "stop_reason", f"{stop_reason!r} is not a stop reason"
                ) from None
        if order not in ("asc", "desc"):
            raise InvalidRunInput("order", f"must be 'asc' or 'desc', got {order!r}")
        return ListQuery(
            agent_id=_check_optional_str("agent_id", agent_id),
            statuses=values,
            background=background,
            stop_reason=reason,
            conversation_id=_check_optional_str("conversation_id", conversation_id),
            before=_check_optional_str("before", before),
            after=_check_optional_str("after", after),
            limit=_check_limit(limit),
            descending=order == "desc",
        )

    @staticmethod
    def _events(records: tuple[list[tuple[int, str]], Any]) -> list[TransitionEvent]:
        events: list[TransitionEvent] = []
        for seq, body in records[0]:
            if seq > 0:
                record = record_from_dict(json.loads(body))
                assert isinstance(record, TransitionEvent)
                events.append(record)
        return events

    @staticmethod
    def _history(
        records: tuple[list[tuple[int, str]], list[tuple[int, int, str]]],
    ) -> list[AuditRecord]:
        # A rejection seen at version v came after event v and before event v + 1.
        keyed: list[tuple[int, int, int, str]] = [(seq, 0, 0, body) for seq, body in records[0]]
        keyed.extend((version, 1, rid, body) for version, rid, body in records[1])
        keyed.sort(key=lambda item: item[:3])
        return [record_from_dict(json.loads(body)) for *_, body in keyed]

    def _claim_window(
        self, now: datetime | None, limit: int, lease: timedelta
    ) -> tuple[int, int, int]:
        at = self._now() if now is None else check_aware("now", now)
        if not isinstance(lease, timedelta) or lease <= timedelta(0):
            raise InvalidRunInput("lease", f"must be a positive timedelta, got {lease!r}")
        now_us = to_us(at)
        return now_us, now_us + lease // timedelta(microseconds=1), _check_limit(limit)

    @staticmethod
    def _deliveries(
        rows: Iterable[OutboxRow], until_us: int | None = None
    ) -> list[PendingDelivery]:
        return [
            PendingDelivery(
                run_id=row.run_id,
                seq=row.seq,
                webhook_id=row.webhook_id,
                attempts=row.attempts,
                next_attempt_at=from_us(
                    until_us if until_us is not None else row.next_attempt_us or 0
                ),
                created_at=from_us(row.created_us),
            )
            for row in rows
        ]

    @staticmethod
    def _attempt_args(
        delivery: PendingDelivery,
        sent_at: datetime,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> tuple[tuple[int, int | None, str | None], int | None]:
        if not isinstance(delivery, PendingDelivery):
            raise InvalidRunInput(
                "delivery", f"must be a PendingDelivery, got {type(delivery).__name__}"
            )
        sent = check_aware("sent_at", sent_at)
        if status_code is not None and (
            isinstance(status_code, bool)
            or not isinstance(status_code, int)
            or not 100 <= status_code <= 599
        ):
            raise InvalidRunInput(
                "callback_status_code", f"{status_code!r} is not an HTTP status code"
            )
        if error is not None and not isinstance(error, str):
            raise InvalidRunInput(
                "callback_error", f"must be a string or None, got {type(error).__name__}"
            )
        error = scrub(error)
        next_us = (
            None
            if next_attempt_at is None
            else to_us(check_aware("next_attempt_at", next_attempt_at))
        )
        return (to_us(sent), status_code, error), next_us
