"""The callback outbox: a delivery owed for each terminal transition of a run with a callback URL.

The outbox row is written in the transition's own transaction, so a committed
terminal transition always has its delivery waiting and a rolled-back one
never has: no delivery is lost in a crash and none is invented. Deliverers
*claim* due rows by pushing ``next_attempt_at`` forward by a claim lease, so
two deliverers do not take the same row while one is working on it, and the
rows of a deliverer that crashed are offered again once the claim lapses
(at-least-once; receivers deduplicate on ``webhook_id``).
"""

from __future__ import annotations

from datetime import datetime

import attrs

__all__ = ["DONE", "PENDING", "OutboxRow", "PendingDelivery", "webhook_id"]

PENDING = "pending"
DONE = "done"


def webhook_id(run_id: str, seq: int) -> str:
    """The delivery's stable id, the same on every retry (Standard Webhooks' ``webhook-id``)."""
    return f"{run_id}:{seq}"


@attrs.frozen
class PendingDelivery:
    """A callback delivery that is not finished yet.

    ``seq`` is the terminal transition's sequence number; ``attempts`` counts
    the attempts recorded so far (before the one about to be made);
    ``next_attempt_at`` is when the row is (or, once claimed, will again be)
    offered to a deliverer; ``created_at`` is the terminal transition's time.
    """

    run_id: str
    seq: int
    webhook_id: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime


@attrs.frozen
class OutboxRow:
    """One row of the outbox table (times in epoch microseconds)."""

    run_id: str
    seq: int
    webhook_id: str
    attempts: int
    state: str
    next_attempt_us: int | None
    created_us: int


#: The outbox table's column names, in ``OutboxRow`` order.
OUTBOX_COLUMNS: tuple[str, ...] = tuple(field.name for field in attrs.fields(OutboxRow))
