"""Deliverer end to end: real stores (memory, SQLite, PostgreSQL) and real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from run_lifecycle import (
    CallbackURLRejected,
    Deliverer,
    InvalidCallbackConfig,
    ManualClock,
    RetryPolicy,
    Run,
    RunStatus,
    to_json,
)
from run_lifecycle.stores import RunStore

from .callback_receiver import HANG, Receiver, Reply, closed_port
from .stores_helpers import BACKENDS, StoreFactory
from .test_callbacks_safety import REFUSED_AT_CREATION

#: Retries without jitter, so every scheduled time is exact.
EXACT = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=60.0, jitter=0.0, max_attempts=5)
SECRET = "whsec_" + base64.b64encode(b"a 32-byte key for signing tests.").decode()

Serve = Callable[..., Receiver]


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened = StoreFactory(request.param, "sync", tmp_path)
    yield opened
    opened.close_all()


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock started at the real time, so receivers accept the signature's timestamp."""
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def store(factory: StoreFactory, clock: ManualClock) -> RunStore:
    opened: RunStore = factory.open(clock=clock)
    return opened


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start receivers on 127.0.0.1; every one is closed (threads joined) when the test ends."""
    made: list[Receiver] = []

    def make(*script: int | Reply | str, default: int = 200) -> Receiver:
        receiver = Receiver(script, default=default)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


def finished(store: Any, url: str | None, **fields: Any) -> Run:
    """A run with ``url`` as callback, started and completed: its delivery is now owed."""
    fields.setdefault("metadata", {"user": "u-42"})
    run = store.create_run(agent_id="agent-1", callback_url=url, **fields)
    store.apply(run.id, "start")
    done: Run = store.apply(run.id, "complete")
    return done


def test_first_attempt_success_is_recorded_and_finishes_the_delivery(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """A 2xx on the first try: one POST of Letta's payload, status 200 recorded, nothing pending."""
    receiver = serve()
    run = finished(store, receiver.url)
    now = clock.now() + timedelta(seconds=3)
    with Deliverer(store) as deliverer:
        assert deliverer.run_once(now=now) == 1
        assert deliverer.run_once(now=now + timedelta(days=1)) == 0
    (request,) = receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.header("Content-Type") == "application/json"
    assert request.header("webhook-id") == f"{run.id}:{run.version}"
    assert request.header("webhook-timestamp") == str(int(clock.now().timestamp()))
    assert request.header("webhook-signature") is None
    payload = json.loads(request.body)
    assert payload == {
        "run_id": run.id,
        "status": "completed",
        "completed_at": to_json(run)["completed_at"],
        "metadata": {"user": "u-42"},
        "run": to_json(run),
    }
    stored = store.get(run.id)
    assert (stored.callback_status_code, stored.callback_error) == (200, None)
    assert stored.callback_sent_at == now
    assert store.pending_deliveries() == []


def test_500_twice_then_200_makes_three_attempts_scheduled_from_now(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """Two 5xx are retried at now + 1 s, then now + 2 s; the third attempt delivers, same id."""
    receiver = serve(500, 500, 200)
    run = finished(store, receiver.url)
    t0 = clock.now()
    with Deliverer(store, retry=EXACT) as deliverer:
        assert deliverer.run_once(now=t0) == 1
        assert store.get(run.id).callback_status_code == 500
        assert store.get(run.id).callback_error == "HTTP 500"
        (pending,) = store.pending_deliveries()
        assert (pending.attempts, pending.next_attempt_at) == (1, t0 + timedelta(seconds=1))
        assert deliverer.run_once(now=t0 + timedelta(milliseconds=999)) == 0  # not due yet
        t1 = t0 + timedelta(seconds=10)
        assert deliverer.run_once(now=t1) == 1
        (pending,) = store.pending_deliveries()
        assert (pending.attempts, pending.next_attempt_at) == (2, t1 + timedelta(seconds=2))
        t2 = t1 + timedelta(seconds=2)
        assert deliverer.run_once(now=t2) == 1
    assert len(receiver.requests) == 3
    assert {r.header("webhook-id") for r in receiver.requests} == {f"{run.id}:{run.version}"}
    stored = store.get(run.id)
    assert (stored.callback_status_code, stored.callback_error, stored.callback_sent_at) == (
        200,
        None,
        t2,
    )
    assert store.pending_deliveries() == []


def test_404_is_final_and_not_retried(store: RunStore, serve: Serve, clock: ManualClock) -> None:
    """A 4xx other than 429 is recorded once and the delivery is finished."""
    receiver = serve(404)
    run = finished(store, receiver.url)
    with Deliverer(store, retry=EXACT) as deliverer:
        assert deliverer.run_once(now=clock.now()) == 1
        assert deliverer.run_once(now=clock.now() + timedelta(days=1)) == 0
    assert len(receiver.requests) == 1
    stored = store.get(run.id)
    assert (stored.callback_status_code, stored.callback_error) == (404, "HTTP 404")
    assert store.pending_deliveries() == []


def test_a_redirect_is_recorded_and_not_followed(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """A 3xx is a final outcome: the Location is never requested."""
    elsewhere = serve()
    receiver = serve(Reply(307, {"location": elsewhere.url}))
    run = finished(store, receiver.url)
    with Deliverer(store, retry=EXACT) as deliverer:
        assert deliverer.run_once(now=clock.now()) == 1
    assert elsewhere.requests == []
    stored = store.get(run.id)
    assert stored.callback_status_code == 307
    assert stored.callback_error == "HTTP 307: redirects are not followed"
    assert store.pending_deliveries() == []


def test_a_receiver_that_never_answers_records_a_timeout_and_is_retried(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """No answer within the timeout: 'timeout after 0.5s' recorded, a retry scheduled."""
    receiver = serve(HANG)
    run = finished(store, receiver.url)
    with Deliverer(store, retry=EXACT, timeout=0.5) as deliverer:
        assert deliverer.run_once(now=clock.now()) == 1
    stored = store.get(run.id)
    assert stored.callback_status_code is None
    assert stored.callback_error is not None
    assert stored.callback_error.startswith("timeout after 0.5s")
    (pending,) = store.pending_deliveries()
    assert pending.attempts == 1


def test_connection_refused_is_recorded_and_retried(store: RunStore, clock: ManualClock) -> None:
    """A closed port: 'connection refused' recorded, a retry scheduled."""
    run = finished(store, f"http://127.0.0.1:{closed_port()}/hook")
    with Deliverer(store, retry=EXACT) as deliverer:
        assert deliverer.run_once(now=clock.now()) == 1
    stored = store.get(run.id)
    assert (stored.callback_status_code, stored.callback_error) == (None, "connection refused")
    (pending,) = store.pending_deliveries()
    assert pending.next_attempt_at == clock.now() + timedelta(seconds=1)


def test_429_then_200_delivers_on_the_second_attempt_honouring_retry_after(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """A 429 is retried, no sooner than its Retry-After; the next attempt delivers."""
    receiver = serve(Reply(429, {"retry-after": "30"}), 200)
    run = finished(store, receiver.url)
    t0 = clock.now()
    with Deliverer(store, retry=EXACT) as deliverer:
        assert deliverer.run_once(now=t0) == 1
        (pending,) = store.pending_deliveries()
        assert pending.next_attempt_at == t0 + timedelta(seconds=30)
        assert store.get(run.id).callback_error == "HTTP 429"
        assert deliverer.run_once(now=t0 + timedelta(seconds=30)) == 1
    assert len(receiver.requests) == 2
    assert store.get(run.id).callback_status_code == 200
    assert store.pending_deliveries() == []


def test_a_delivery_is_given_up_after_max_attempts(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """With max_attempts=2 a failing receiver gets two attempts; the error says it gave up."""
    receiver = serve(default=503)
    run = finished(store, receiver.url)
    policy = RetryPolicy(initial_delay=1, jitter=0, max_attempts=2)
    with Deliverer(store, retry=policy) as deliverer:
        assert deliverer.run_once(now=clock.now()) == 1
        assert deliverer.run_once(now=clock.now() + timedelta(hours=1)) == 1
        assert deliverer.run_once(now=clock.now() + timedelta(days=1)) == 0
    assert len(receiver.requests) == 2
    stored = store.get(run.id)
    assert stored.callback_status_code == 503
    assert stored.callback_error == "HTTP 503; gave up after 2 attempts"
    assert store.pending_deliveries() == []


def test_a_slow_receiver_does_not_hold_up_transitions(store: RunStore, serve: Serve) -> None:
    """While a callback waits on its receiver, other runs start and complete (apply returns)."""
    answer = threading.Event()
    receiver = serve(Reply(200, hold=answer))
    first = finished(store, receiver.url)
    with Deliverer(store) as deliverer, deliverer.in_background(poll_interval=0.01):
        receiver.wait_for_requests(1)  # the deliverer now waits on the held answer
        second = finished(store, receiver.url)
        assert second.status is RunStatus.COMPLETED
        assert not answer.is_set()  # the first callback is still unanswered...
        assert store.get(first.id).callback_sent_at is None  # ...and unrecorded
        answer.set()
        receiver.wait_for_requests(2)
    # Leaving the block stopped the loop after its pass: both attempts are recorded.
    assert store.get(first.id).callback_status_code == 200
    assert store.get(second.id).callback_status_code == 200


def test_a_delivery_claimed_by_a_deliverer_that_died_is_sent_once_by_the_next(
    factory: StoreFactory, serve: Serve, clock: ManualClock
) -> None:
    """A claimed but never sent delivery is sent by a new deliverer (a new store) once the claim lapses."""
    store = factory.open(clock=clock)
    receiver = serve()
    run = finished(store, receiver.url)
    t0 = clock.now()
    claimed = store.claim_deliveries(t0, lease=timedelta(seconds=60))  # then the process died
    assert [delivery.run_id for delivery in claimed] == [run.id]
    restarted = factory.open(clock=clock) if factory.shares_data else store
    with Deliverer(restarted) as deliverer:
        assert deliverer.run_once(now=t0 + timedelta(seconds=59)) == 0  # still claimed
        assert deliverer.run_once(now=t0 + timedelta(seconds=60)) == 1
        assert deliverer.run_once(now=t0 + timedelta(days=1)) == 0
    assert len(receiver.requests) == 1
    assert restarted.get(run.id).callback_status_code == 200


def test_the_receiver_verifies_the_signature_and_a_tampered_body_fails(
    store: RunStore, serve: Serve
) -> None:
    """Webhook(secret).verify accepts what was sent; a changed body or another secret fails."""
    receiver = serve()
    run = finished(store, receiver.url)
    with Deliverer(store, secret=SECRET) as deliverer:
        assert deliverer.run_once() == 1
    (request,) = receiver.requests
    headers = request.header_dict()
    assert request.header("webhook-signature") is not None
    assert Webhook(SECRET).verify(request.body, headers)["run_id"] == run.id
    tampered = request.body.replace(b'"completed"', b'"failed"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another key, another receiver.").decode()).verify(
            request.body, headers
        )


def test_a_hostname_resolving_to_loopback_is_refused_when_private_networks_are_blocked(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """localhost passes creation but is refused at send time with the option on; no retry."""
    receiver = serve()
    run = finished(store, f"http://localhost:{receiver.port}/hook")
    with Deliverer(store, block_private_networks=True, retry=EXACT) as deliverer:
        assert deliverer.run_once(now=clock.now()) == 1
    assert receiver.requests == []
    stored = store.get(run.id)
    assert stored.callback_status_code is None
    assert stored.callback_error is not None
    assert stored.callback_error.startswith("refused: ")
    assert "private networks are blocked" in stored.callback_error
    assert store.pending_deliveries() == []


def test_a_hostname_is_delivered_to_whichever_of_its_addresses_answers(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """By default localhost works, even when it resolves to ::1 first and only 127.0.0.1 listens."""
    receiver = serve()
    run = finished(store, f"http://localhost:{receiver.port}/hook")
    with Deliverer(store) as deliverer:
        assert deliverer.run_once(now=clock.now()) == 1
    (request,) = receiver.requests
    assert request.header("host") == f"localhost:{receiver.port}"
    assert store.get(run.id).callback_status_code == 200


@pytest.mark.parametrize(("url", "reason"), REFUSED_AT_CREATION)
def test_refused_urls_cannot_be_stored(store: RunStore, url: str, reason: str) -> None:
    """create_run refuses the URL before anything is stored; no delivery can ever be owed."""
    with pytest.raises(CallbackURLRejected, match=reason):
        store.create_run(agent_id="agent-1", callback_url=url)
    assert store.list() == []
    assert store.pending_deliveries() == []


def test_a_run_without_callback_url_owes_no_delivery(store: RunStore, clock: ManualClock) -> None:
    """No callback_url, no outbox row: the deliverer has nothing to do."""
    run = finished(store, None)
    with Deliverer(store) as deliverer:
        assert deliverer.run_once(now=clock.now() + timedelta(days=1)) == 0
    assert store.get(run.id).callback_sent_at is None


def test_recording_attempts_leaves_the_lifecycle_fields_and_version_alone(
    store: RunStore, serve: Serve, clock: ManualClock
) -> None:
    """Only the three callback fields change: status, times, durations and version stay put."""
    receiver = serve(500, 200)
    run = finished(store, receiver.url)
    with Deliverer(store, retry=EXACT) as deliverer:
        deliverer.run_once(now=clock.now())
        deliverer.run_once(now=clock.now() + timedelta(hours=1))
    stored = store.get(run.id)
    assert stored.version == run.version
    callback_fields = ("callback_sent_at", "callback_status_code", "callback_error")
    before, after = to_json(run), to_json(stored)
    assert {k: v for k, v in after.items() if k not in callback_fields} == {
        k: v for k, v in before.items() if k not in callback_fields
    }
    assert store.events(run.id)[-1].seq == run.version  # no event for a callback attempt


def test_without_now_the_attempt_is_timed_and_scheduled_by_the_clock(
    store: RunStore, clock: ManualClock
) -> None:
    """run_once() reads the deliverer's clock: sent_at is the attempt's time, retries follow it."""
    run = finished(store, f"http://127.0.0.1:{closed_port()}/hook")
    clock.advance(5)
    with Deliverer(store, retry=EXACT) as deliverer:
        assert deliverer.clock is clock  # the store's clock by default
        assert deliverer.run_once() == 1
    assert store.get(run.id).callback_sent_at == clock.now()
    (pending,) = store.pending_deliveries()
    assert pending.next_attempt_at == clock.now() + timedelta(seconds=1)


def test_run_forever_delivers_until_its_stop_event_is_set(store: RunStore, serve: Serve) -> None:
    """The background loop sends what becomes due and returns once the event is set."""
    receiver = serve()
    stop = threading.Event()
    with Deliverer(store) as deliverer:
        thread = threading.Thread(target=deliverer.run_forever, args=(stop, 0.01))
        thread.start()
        try:
            runs = [finished(store, receiver.url) for _ in range(3)]
            receiver.wait_for_requests(3)
        finally:
            stop.set()
            thread.join()
    assert sorted(r.header("webhook-id") or "" for r in receiver.requests) == sorted(
        f"{run.id}:{run.version}" for run in runs
    )


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"batch_size": 0}, "batch_size"),
        ({"lease": timedelta(0)}, "lease"),
        ({"secret": "not base64!"}, "secret"),
        ({"retry": {"max_attempts": 3}}, "retry"),
    ],
)
def test_unusable_options_are_refused_naming_the_option(
    store: RunStore, options: dict[str, Any], option: str
) -> None:
    """Deliverer refuses options it cannot work with, with InvalidCallbackConfig naming them."""
    with pytest.raises(InvalidCallbackConfig) as info:
        Deliverer(store, **options)
    assert info.value.option == option
