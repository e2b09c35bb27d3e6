"""AsyncDeliverer end to end: async stores (memory, SQLite, PostgreSQL), real HTTP on 127.0.0.1.

Each test drives its event loop with ``asyncio.run`` inside a plain test
function: no pytest plugin is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from run_lifecycle import AsyncDeliverer, ManualClock, RetryPolicy, Run, to_json
from run_lifecycle.stores import AsyncRunStore, open_async_store

from .callback_receiver import HANG, PATIENCE, Receiver, Reply, closed_port
from .stores_helpers import BACKENDS, StoreFactory

EXACT = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=60.0, jitter=0.0, max_attempts=5)
SECRET = "whsec_" + base64.b64encode(b"a 32-byte key for signing tests.").decode()

T = TypeVar("T")
Serve = Callable[..., Receiver]


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Where the async stores live (a SQLite file, a PostgreSQL schema); dropped at the end."""
    opened = StoreFactory(request.param, "async", tmp_path)
    yield opened
    opened.close_all()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def serve() -> Iterator[Serve]:
    made: list[Receiver] = []

    def make(*script: int | Reply | str, default: int = 200) -> Receiver:
        receiver = Receiver(script, default=default)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


def with_store(
    factory: StoreFactory, clock: ManualClock, body: Callable[[AsyncRunStore], Awaitable[T]]
) -> T:
    """Open an async store of the factory's kind, run ``body`` on it in a fresh loop, close it."""

    async def main() -> T:
        options: dict[str, Any] = {"clock": clock}
        if factory.schema is not None:
            options["schema"] = factory.schema
        async with open_async_store(factory.url, **options) as store:
            return await body(store)

    return asyncio.run(main())


async def finished(store: AsyncRunStore, url: str) -> Run:
    run = await store.create_run(agent_id="agent-1", callback_url=url, metadata={"n": 1})
    await store.apply(run.id, "start")
    return await store.apply(run.id, "complete")


def test_async_first_attempt_success_is_recorded(
    factory: StoreFactory, clock: ManualClock, serve: Serve
) -> None:
    """One POST of the payload; 200 recorded; nothing pending."""
    receiver = serve()

    async def body(store: AsyncRunStore) -> None:
        run = await finished(store, receiver.url)
        deliverer = AsyncDeliverer(store)
        assert await deliverer.run_once(now=clock.now()) == 1
        assert await deliverer.run_once(now=clock.now() + timedelta(days=1)) == 0
        stored = await store.get(run.id)
        assert (stored.callback_status_code, stored.callback_error) == (200, None)
        assert stored.callback_sent_at == clock.now()
        assert await store.pending_deliveries() == []
        (request,) = receiver.requests
        assert json.loads(request.body)["run"] == to_json(run)
        assert request.header("webhook-id") == f"{run.id}:{run.version}"

    with_store(factory, clock, body)


def test_async_500_twice_then_200_makes_three_attempts(
    factory: StoreFactory, clock: ManualClock, serve: Serve
) -> None:
    """Retries are scheduled from ``now``; the third attempt delivers; one webhook-id throughout."""
    receiver = serve(500, 500, 200)

    async def body(store: AsyncRunStore) -> None:
        run = await finished(store, receiver.url)
        deliverer = AsyncDeliverer(store, retry=EXACT)
        t0 = clock.now()
        assert await deliverer.run_once(now=t0) == 1
        (pending,) = await store.pending_deliveries()
        assert pending.next_attempt_at == t0 + timedelta(seconds=1)
        assert await deliverer.run_once(now=t0 + timedelta(seconds=1)) == 1
        (pending,) = await store.pending_deliveries()
        assert pending.next_attempt_at == t0 + timedelta(seconds=3)
        assert await deliverer.run_once(now=t0 + timedelta(seconds=3)) == 1
        stored = await store.get(run.id)
        assert (stored.callback_status_code, stored.callback_error) == (200, None)
        assert await store.pending_deliveries() == []

    with_store(factory, clock, body)
    assert len(receiver.requests) == 3
    assert len({r.header("webhook-id") for r in receiver.requests}) == 1


def test_async_404_is_final(factory: StoreFactory, clock: ManualClock, serve: Serve) -> None:
    """A 404 is recorded once and never retried."""
    receiver = serve(404)

    async def body(store: AsyncRunStore) -> None:
        run = await finished(store, receiver.url)
        deliverer = AsyncDeliverer(store, retry=EXACT)
        assert await deliverer.run_once(now=clock.now()) == 1
        assert await deliverer.run_once(now=clock.now() + timedelta(days=1)) == 0
        assert (await store.get(run.id)).callback_error == "HTTP 404"

    with_store(factory, clock, body)
    assert len(receiver.requests) == 1


def test_async_timeout_and_connection_refused_are_recorded_and_retried(
    factory: StoreFactory, clock: ManualClock, serve: Serve
) -> None:
    """A silent receiver times out and a closed port refuses; both are rescheduled."""
    receiver = serve(HANG)

    async def body(store: AsyncRunStore) -> None:
        silent = await finished(store, receiver.url)
        closed = await finished(store, f"http://127.0.0.1:{closed_port()}/hook")
        deliverer = AsyncDeliverer(store, retry=EXACT, timeout=0.5)
        assert await deliverer.run_once(now=clock.now()) == 2
        silent_error = (await store.get(silent.id)).callback_error
        assert silent_error is not None
        assert silent_error.startswith("timeout after 0.5s")
        assert (await store.get(closed.id)).callback_error == "connection refused"
        pending = await store.pending_deliveries()
        assert {d.run_id for d in pending} == {silent.id, closed.id}
        assert {d.attempts for d in pending} == {1}

    with_store(factory, clock, body)


def test_async_signature_verifies_and_a_tampered_body_fails(
    factory: StoreFactory, clock: ManualClock, serve: Serve
) -> None:
    """The receiver verifies with standardwebhooks; a changed body fails."""
    receiver = serve()

    async def body(store: AsyncRunStore) -> Run:
        run = await finished(store, receiver.url)
        assert await AsyncDeliverer(store, secret=SECRET).run_once() == 1
        return run

    run = with_store(factory, clock, body)
    (request,) = receiver.requests
    assert Webhook(SECRET).verify(request.body, request.header_dict())["run_id"] == run.id
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b'"n":1', b'"n":2'), request.header_dict())


def test_async_loopback_is_refused_when_private_networks_are_blocked(
    factory: StoreFactory, clock: ManualClock, serve: Serve
) -> None:
    """localhost is refused at send time with the option on, and not retried."""
    receiver = serve()

    async def body(store: AsyncRunStore) -> None:
        run = await finished(store, f"http://localhost:{receiver.port}/hook")
        deliverer = AsyncDeliverer(store, block_private_networks=True)
        assert await deliverer.run_once(now=clock.now()) == 1
        error = (await store.get(run.id)).callback_error
        assert error is not None
        assert "private networks are blocked" in error
        assert await store.pending_deliveries() == []

    with_store(factory, clock, body)
    assert receiver.requests == []


def test_async_pass_sends_deliveries_concurrently(
    factory: StoreFactory, clock: ManualClock, serve: Serve
) -> None:
    """Two receivers that each answer only once both requests arrived are both served."""
    first_held, second_held = threading.Event(), threading.Event()
    first, second = serve(Reply(200, hold=first_held)), serve(Reply(200, hold=second_held))
    both_arrived: list[bool] = []

    def release_when_both_arrive() -> None:
        try:
            first.wait_for_requests(1, timeout=PATIENCE / 2)
            second.wait_for_requests(1, timeout=PATIENCE / 2)
            both_arrived.append(True)
        except AssertionError:
            both_arrived.append(False)
        first_held.set()
        second_held.set()

    releaser = threading.Thread(target=release_when_both_arrive)
    releaser.start()

    async def body(store: AsyncRunStore) -> None:
        await finished(store, first.url)
        await finished(store, second.url)
        assert await AsyncDeliverer(store, concurrency=2).run_once(now=clock.now()) == 2

    try:
        with_store(factory, clock, body)
    finally:
        releaser.join()
    assert both_arrived == [True]


def test_async_serve_delivers_until_stopped(
    factory: StoreFactory, clock: ManualClock, serve: Serve
) -> None:
    """serve() sends deliveries as they become due and returns once its event is set."""
    receiver = serve()

    async def body(store: AsyncRunStore) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(AsyncDeliverer(store).serve(stop, poll_interval=0.01))
        runs = [await finished(store, receiver.url) for _ in range(2)]
        await asyncio.to_thread(receiver.wait_for_requests, 2)
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
        assert {r.header("webhook-id") for r in receiver.requests} == {
            f"{run.id}:{run.version}" for run in runs
        }

    with_store(factory, clock, body)


def test_async_a_delivery_claimed_by_a_dead_deliverer_is_sent_once_later(
    factory: StoreFactory, clock: ManualClock, serve: Serve
) -> None:
    """A claimed, never sent delivery goes out once its claim lapses, and only once."""
    receiver = serve()

    async def body(store: AsyncRunStore) -> None:
        await finished(store, receiver.url)
        t0 = clock.now()
        assert len(await store.claim_deliveries(t0, lease=timedelta(seconds=60))) == 1
        deliverer = AsyncDeliverer(store)
        assert await deliverer.run_once(now=t0 + timedelta(seconds=59)) == 0
        assert await deliverer.run_once(now=t0 + timedelta(seconds=60)) == 1
        assert await deliverer.run_once(now=t0 + timedelta(days=1)) == 0

    with_store(factory, clock, body)
    assert len(receiver.requests) == 1
