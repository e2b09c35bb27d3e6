"""Run stores: memory, SQLite (the embedded default) and PostgreSQL, sync and async twins.

``open_store(url_or_engine)`` returns a ``RunStore``; ``open_async_store``
returns an ``AsyncRunStore`` with the same methods, awaitable. Transitions are
atomic under races (compare-and-set on ``version``, event in the same
transaction); runs that stop heartbeating past their lease are failed by
``reap``; terminal transitions of runs with a ``callback_url`` leave a
``PendingDelivery`` in the outbox for a deliverer to claim.

Only ``memory://`` works without extras; SQL stores need SQLAlchemy and a
driver (``run-lifecycle[sqlite]``, ``[postgres]``, ``[async]``), imported when a
SQL store is opened.
"""

from __future__ import annotations

from ._async import AsyncRunStore, open_async_store
from ._base import DEFAULT_LEASE
from ._outbox import PendingDelivery
from ._sync import RunStore, open_store

__all__ = [
    "DEFAULT_LEASE",
    "AsyncRunStore",
    "PendingDelivery",
    "RunStore",
    "open_async_store",
    "open_store",
]
