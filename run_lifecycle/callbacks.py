"""Completion callbacks: delivered after commit, retried, signed, recorded, never blocking.

A store records a pending delivery (an outbox row) in the same transaction as
a run's terminal transition; a deliverer sends it later. So a transition never
waits on, or fails because of, someone else's web server, and a delivery
pending when a process stops is found again by the next deliverer
(at-least-once: receivers dedupe on the ``webhook-id`` header).

``Deliverer`` works with threads and a sync store, ``AsyncDeliverer`` with an
event loop and an async store; both share one core (``_callbacks_base``).
Installing the ``callbacks`` extra brings httpx and standardwebhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import httpx

from ._callbacks_base import (
    DelivererBase,
    IPAddress,
    Outcome,
    Target,
    addresses_from,
    build_payload,
    check_addresses,
    classify_error,
    classify_response,
    encode_body,
    parse_target,
    pinned_request,
    resolve,
    unresolvable,
)
from ._callbacks_policy import RetryPolicy
from ._clock import Clock
from ._run import Run
from .exceptions import InvalidCallbackConfig, RunLifecycleError, RunNotFound

__all__ = [
    "AsyncDeliverer",
    "AsyncDeliveryStore",
    "Deliverer",
    "Delivery",
    "DeliveryStore",
    "RetryPolicy",
    "build_payload",
]

#: The per-attempt timeout, in seconds, unless one is given.
DEFAULT_TIMEOUT = 10.0


class Delivery(Protocol):
    """A pending delivery as a store hands it out (``run_lifecycle.stores.PendingDelivery``)."""

    @property
    def run_id(self) -> str: ...
    @property
    def webhook_id(self) -> str: ...
    @property
    def attempts(self) -> int:
        """Attempts already made (0 for a delivery never tried)."""
        ...


_D = TypeVar("_D", bound=Delivery)


class DeliveryStore(Protocol[_D]):
    """What ``Deliverer`` needs of a store: read a run, claim due deliveries, record attempts."""

    def get(self, run_id: str) -> Run: ...

    def claim_deliveries(
        self, now: datetime | None = None, *, limit: int = ..., lease: timedelta = ...
    ) -> Sequence[_D]: ...

    def record_callback_attempt(
        self,
        delivery: _D,
        *,
        sent_at: datetime,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> Run: ...


class AsyncDeliveryStore(Protocol[_D]):
    """The async twin of ``DeliveryStore`` (``run_lifecycle.stores.open_async_store``)."""

    async def get(self, run_id: str) -> Run: ...

    async def claim_deliveries(
        self, now: datetime | None = None, *, limit: int = ..., lease: timedelta = ...
    ) -> Sequence[_D]: ...

    async def record_callback_attempt(
        self,
        delivery: _D,
        *,
        sent_at: datetime,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> Run: ...


class Deliverer(DelivererBase):
    """Sends the due completion callbacks of a store, one at a time, from the calling thread.

    ``secret`` signs every request (Standard Webhooks; base64 ``str``, optionally
    ``whsec_``-prefixed, or raw ``bytes``). ``timeout`` bounds each network step
    of an attempt (connecting, sending, waiting for the response head), in
    seconds. ``retry`` says when failures are tried again. With
    ``block_private_networks`` only globally routable addresses are called
    (cloud metadata and link-local addresses never are). ``clock`` defaults to
    the store's clock, else the system clock. Each pass claims ``batch_size``
    deliveries at a time for ``lease`` (by default long enough for the whole
    batch to time out); a deliverer that dies leaves them to be claimed again
    once the lease has passed.
    """

    def __init__(
        self,
        store: DeliveryStore[Any],
        *,
        secret: str | bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        block_private_networks: bool = False,
        clock: Clock | None = None,
        batch_size: int = 10,
        lease: timedelta | None = None,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            secret=secret,
            timeout=timeout,
            retry=retry,
            block_private_networks=block_private_networks,
            clock=clock,
            store_clock=_store_clock(store),
            batch_size=batch_size,
            lease=lease,
            rng=rng,
            ssl_context=ssl_context,
        )
        self.store = store
        self._client = httpx.Client(**self.client_options())

    def run_once(self, now: datetime | None = None) -> int:
        """Send every delivery due now (or at ``now``); return the number of attempts made.

        With ``now`` the pass acts as of that time: it claims what is due then,
        records ``callback_sent_at = now`` and schedules retries from it (for
        tests and cron jobs). Without it, the clock is read at each claim and
        attempt. The ``webhook-timestamp`` header is always the clock's time of
        the attempt, since receivers check it against their own clock.
        """
        attempts = 0
        while True:
            claimed_at = now if now is not None else self.clock.now()
            batch = self.store.claim_deliveries(claimed_at, limit=self.batch_size, lease=self.lease)
            if not batch:
                return attempts
            for delivery in batch:
                attempts += self._deliver(delivery, now)

    def run_forever(
        self, stop_event: threading.Event | None = None, poll_interval: float = 1.0
    ) -> None:
        """Deliver until ``stop_event`` is set, looking for due deliveries every ``poll_interval`` s.

        A failed pass (the store unreachable, say) is logged and tried again on
        the next tick. Setting the event stops the loop after the current pass.
        """
        stop = stop_event if stop_event is not None else threading.Event()
        while not stop.is_set():
            try:
                self.run_once()
            except RunLifecycleError as exc:
                self.log_pass_failure(exc)
            stop.wait(poll_interval)

    @contextlib.contextmanager
    def in_background(self, poll_interval: float = 1.0) -> Iterator[threading.Thread]:
        """Run ``run_forever`` in a thread for the ``with`` block; stop and join it on exit."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run_forever,
            args=(stop, poll_interval),
            name="run-lifecycle-callbacks",
            daemon=True,
        )
        thread.start()
        try:
            yield thread
        finally:
            stop.set()
            thread.join()

    def _deliver(self, delivery: Delivery, now: datetime | None) -> int:
        """Make one attempt and record it; 0 when the run was deleted meanwhile (nothing to send)."""
        try:
            run = self.store.get(delivery.run_id)
        except RunNotFound:
            return 0  # deleting a run deletes its deliveries too
        attempted_at = self.clock.now()
        outcome = self._attempt(run, delivery.webhook_id, attempted_at)
        attempts_made = delivery.attempts + 1
        error, next_attempt_at = self.conclude(
            outcome, attempts_made, now if now is not None else self.clock.now()
        )
        with contextlib.suppress(RunNotFound):
            self.store.record_callback_attempt(
                delivery,
                sent_at=now if now is not None else attempted_at,
                status_code=outcome.status_code,
                error=error,
                next_attempt_at=next_attempt_at,
            )
        self.log_attempt(delivery, outcome, error, next_attempt_at)
        return 1

    def _attempt(self, run: Run, webhook_id: str, attempted_at: datetime) -> Outcome:
        target = parse_target(run.callback_url)
        if isinstance(target, Outcome):
            return target
        try:
            addresses = resolve(target)
        except OSError as exc:
            return unresolvable(target.host, exc)
        refusal = check_addresses(addresses, block_private_networks=self.block_private_networks)
        if refusal is not None:
            return refusal
        body = encode_body(run)
        headers = self.headers_for(webhook_id, attempted_at, body)
        return self._post(target, addresses, body.encode(), headers)

    def _post(
        self, target: Target, addresses: list[IPAddress], body: bytes, headers: dict[str, str]
    ) -> Outcome:
        outcome = Outcome(None, "no address to connect to", retryable=True)
        for address in addresses:
            request = pinned_request(self._client, target, address, body, headers)
            try:
                response = self._client.send(request, stream=True, follow_redirects=False)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                outcome = classify_error(exc, self.timeout)
                continue  # the next address of the name may answer
            except httpx.HTTPError as exc:
                return classify_error(exc, self.timeout)
            try:
                return classify_response(response.status_code, response.headers)
            finally:
                response.close()  # the body is never read: a receiver cannot make us download
        return outcome

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Deliverer({self.store!r}, timeout={self.timeout}, retry={self.retry!r},"
            f" block_private_networks={self.block_private_networks})"
        )


class AsyncDeliverer(DelivererBase):
    """The async twin of ``Deliverer``: the same options, for an async store.

    A pass sends up to ``concurrency`` deliveries at once. Each pass uses its
    own HTTP client, so one deliverer can serve under several event loops
    (``asyncio.run`` more than once).
    """

    def __init__(
        self,
        store: AsyncDeliveryStore[Any],
        *,
        secret: str | bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        block_private_networks: bool = False,
        clock: Clock | None = None,
        batch_size: int = 50,
        concurrency: int = 10,
        lease: timedelta | None = None,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidCallbackConfig("concurrency", "must be a positive integer")
        self._concurrency = concurrency
        super().__init__(
            secret=secret,
            timeout=timeout,
            retry=retry,
            block_private_networks=block_private_networks,
            clock=clock,
            store_clock=_store_clock(store),
            batch_size=batch_size,
            lease=lease,
            rng=rng,
            ssl_context=ssl_context,
        )
        self.store = store

    async def run_once(self, now: datetime | None = None) -> int:
        """Send every delivery due now (or at ``now``); return the number of attempts made.

        ``now`` works as in ``Deliverer.run_once``.
        """
        attempts = 0
        limit = asyncio.Semaphore(self._concurrency)
        async with httpx.AsyncClient(**self.client_options()) as client:
            while True:
                claimed_at = now if now is not None else self.clock.now()
                batch = await self.store.claim_deliveries(
                    claimed_at, limit=self.batch_size, lease=self.lease
                )
                if not batch:
                    return attempts
                results = await asyncio.gather(
                    *(self._deliver(client, limit, delivery, now) for delivery in batch),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
                    attempts += result

    async def serve(
        self, stop_event: asyncio.Event | None = None, poll_interval: float = 1.0
    ) -> None:
        """Deliver until ``stop_event`` is set (or the task is cancelled), every ``poll_interval`` s.

        A failed pass is logged and tried again on the next tick. A delivery cut
        short by cancellation stays claimed until its lease passes, then is sent
        again.
        """
        stop = stop_event if stop_event is not None else asyncio.Event()
        while not stop.is_set():
            try:
                await self.run_once()
            except RunLifecycleError as exc:
                self.log_pass_failure(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_interval)

    async def _deliver(
        self,
        client: httpx.AsyncClient,
        limit: asyncio.Semaphore,
        delivery: Delivery,
        now: datetime | None,
    ) -> int:
        async with limit:
            try:
                run = await self.store.get(delivery.run_id)
            except RunNotFound:
                return 0
            attempted_at = self.clock.now()
            outcome = await self._attempt(client, run, delivery.webhook_id, attempted_at)
            attempts_made = delivery.attempts + 1
            error, next_attempt_at = self.conclude(
                outcome, attempts_made, now if now is not None else self.clock.now()
            )
            with contextlib.suppress(RunNotFound):
                await self.store.record_callback_attempt(
                    delivery,
                    sent_at=now if now is not None else attempted_at,
                    status_code=outcome.status_code,
                    error=error,
                    next_attempt_at=next_attempt_at,
                )
            self.log_attempt(delivery, outcome, error, next_attempt_at)
            return 1

    async def _attempt(
        self, client: httpx.AsyncClient, run: Run, webhook_id: str, attempted_at: datetime
    ) -> Outcome:
        target = parse_target(run.callback_url)
        if isinstance(target, Outcome):
            return target
        try:
            addresses = await _resolve_async(target)
        except OSError as exc:
            return unresolvable(target.host, exc)
        refusal = check_addresses(addresses, block_private_networks=self.block_private_networks)
        if refusal is not None:
            return refusal
        body = encode_body(run)
        headers = self.headers_for(webhook_id, attempted_at, body)
        outcome = Outcome(None, "no address to connect to", retryable=True)
        for address in addresses:
            request = pinned_request(client, target, address, body.encode(), headers)
            try:
                response = await client.send(request, stream=True, follow_redirects=False)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                outcome = classify_error(exc, self.timeout)
                continue
            except httpx.HTTPError as exc:
                return classify_error(exc, self.timeout)
            try:
                return classify_response(response.status_code, response.headers)
            finally:
                await response.aclose()
        return outcome

    def __repr__(self) -> str:
        return (
            f"AsyncDeliverer({self.store!r}, timeout={self.timeout}, retry={self.retry!r},"
            f" block_private_networks={self.block_private_networks})"
        )


def _store_clock(store: object) -> object:
    """The clock the store runs on (``store.lifecycle.clock`` for the bundled stores)."""
    lifecycle = getattr(store, "lifecycle", None)
    return getattr(lifecycle, "clock", None) or getattr(store, "clock", None)


async def _resolve_async(target: Target) -> list[IPAddress]:
    if target.literal is not None:
        return [target.literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    return addresses_from(list(infos))
