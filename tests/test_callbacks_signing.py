"""What a callback carries: Letta's payload plus the run, and Standard Webhooks headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from run_lifecycle import Lifecycle, ManualClock, Run, to_json
from run_lifecycle._callbacks_base import build_payload, encode_body, make_signer, webhook_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _finished_run() -> Run:
    lc = Lifecycle(ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC)))
    run = lc.create(agent_id="agent-1", metadata={"user": "ü-42"}, callback_url="http://x.test/h")
    return lc.fail(lc.start(run), error="tool crashed")


def test_payload_has_lettas_keys_and_the_full_run() -> None:
    """run_id, status, completed_at (the run's own), metadata, and the wire run under 'run'."""
    run = _finished_run()
    payload = build_payload(run)
    wire = to_json(run)
    assert set(payload) == {"run_id", "status", "completed_at", "metadata", "run"}
    assert payload["run_id"] == wire["id"]
    assert payload["status"] == "failed"
    assert payload["completed_at"] == wire["completed_at"]
    assert payload["metadata"] == {"user": "ü-42", "error": "tool crashed"}
    assert payload["run"] == wire
    assert json.loads(encode_body(run)) == payload


def test_headers_without_a_secret_carry_id_and_timestamp_only() -> None:
    """Unsigned callbacks still name the delivery and the attempt's time, as JSON."""
    at = datetime(2026, 3, 1, 12, 0, 5, 900_000, tzinfo=UTC)
    headers = webhook_headers("run-1:3", at, "{}", None)
    assert headers["webhook-id"] == "run-1:3"
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert headers["content-type"] == "application/json"
    assert "webhook-signature" not in headers


def test_receiver_verifies_the_signature_with_standardwebhooks() -> None:
    """Webhook(secret).verify accepts the body and headers, whatever the header names' case."""
    run = _finished_run()
    body = encode_body(run)
    headers = webhook_headers("run-1:3", datetime.now(UTC), body, make_signer(SECRET))
    assert Webhook(SECRET).verify(body.encode(), headers) == json.loads(body)
    shouted = {name.upper(): value for name, value in headers.items()}
    assert Webhook(SECRET).verify(body, shouted) == json.loads(body)


@pytest.mark.parametrize("part", ["body", "id", "timestamp", "secret"])
def test_tampering_with_any_signed_part_fails_verification(part: str) -> None:
    """A changed body, id or timestamp, or the wrong secret, fails verification."""
    run = _finished_run()
    body = encode_body(run)
    now = datetime.now(UTC)
    headers = webhook_headers("run-1:3", now, body, make_signer(SECRET))
    secret = SECRET
    if part == "body":
        body = body.replace("failed", "completed")
    elif part == "id":
        headers["webhook-id"] = "run-1:4"
    elif part == "timestamp":
        headers["webhook-timestamp"] = str(int(now.timestamp()) - 1)
    else:
        secret = "whsec_" + "B" * 32
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)
