"""The deliverers' shared core: what to send, where it may go, and what an attempt means.

``Deliverer`` (threads) and ``AsyncDeliverer`` (an event loop) differ only in
how they wait on the network and the store; every decision (the payload, the
signature, the address check, success or retry, the next attempt's time) is
made here, once, so the twins cannot drift apart.

Nothing here is public API: ``run_lifecycle.callbacks`` is the public face.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import math
import random
import re
import socket
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import certifi
import httpx
import structlog
from standardwebhooks.webhooks import Webhook

from . import __version__
from ._callbacks_policy import RetryPolicy
from ._clock import Clock, SystemClock
from ._run import Run
from ._validate import address_problem, callback_url_problem
from .exceptions import InvalidCallbackConfig
from .serialization import to_json

__all__: list[str] = []  # internal: see the module docstring

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = f"run-lifecycle/{__version__}"

_LOGGER_NAME = "run_lifecycle.callbacks"
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


# -- what is sent ------------------------------------------------------------------------------


def build_payload(run: Run) -> dict[str, Any]:
    """Letta's callback payload (``run_id``, ``status``, ``completed_at``, ``metadata``) plus ``run``."""
    wire = to_json(run)
    return {
        "run_id": run.id,
        "status": wire["status"],
        "completed_at": wire["completed_at"],
        "metadata": wire["metadata"],
        "run": wire,
    }


def encode_body(run: Run) -> str:
    """The request body: compact JSON, UTF-8 (the exact text the signature covers)."""
    return json.dumps(build_payload(run), separators=(",", ":"), ensure_ascii=False)


def make_signer(secret: str | bytes | None) -> Webhook | None:
    """A Standard Webhooks signer for ``secret``, or None when callbacks go unsigned.

    A ``str`` secret is base64, optionally prefixed ``whsec_``, as Standard
    Webhooks defines it (receivers pass the same string to ``Webhook``);
    ``bytes`` are the raw key. A string that is not base64 is refused rather
    than silently decoded into some other key the receiver will never match.
    """
    if secret is None:
        return None
    if isinstance(secret, str):
        encoded = secret.removeprefix("whsec_")
        if not _BASE64.match(encoded):
            raise InvalidCallbackConfig(
                "secret",
                "a str secret must be base64 (optionally prefixed 'whsec_'), as Standard Webhooks"
                " defines it; pass bytes for a raw key",
            )
        try:
            key = base64.b64decode(encoded + "==")
        except binascii.Error as exc:
            raise InvalidCallbackConfig("secret", f"is not valid base64 ({exc})") from None
    elif isinstance(secret, bytes):
        key = secret
    else:
        raise InvalidCallbackConfig(
            "secret", f"must be str, bytes or None, not {type(secret).__name__}"
        )
    if len(key) < 16:
        raise InvalidCallbackConfig(
            "secret", "must hold at least 16 bytes of key (24 base64 characters)"
        )
    return Webhook(key)


def webhook_headers(
    webhook_id: str, timestamp: datetime, body: str, signer: Webhook | None
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (lower-case; HTTP names are case-insensitive)."""
    seconds = math.floor(timestamp.timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(seconds),
    }
    if signer is not None:
        headers["webhook-signature"] = signer.sign(
            webhook_id, datetime.fromtimestamp(seconds, UTC), body
        )
    return headers


# -- what an attempt meant ---------------------------------------------------------------------


@attrs.frozen
class Outcome:
    """The result of one attempt: what is recorded on the run, and whether to try again."""

    status_code: int | None
    error: str | None
    retryable: bool
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.error is None


def refused(reason: str) -> Outcome:
    """A URL or address that will never be called: recorded, and never retried."""
    return Outcome(None, f"refused: {reason}", retryable=False)


def classify_response(status_code: int, headers: Mapping[str, str]) -> Outcome:
    """2xx delivers; 429 and 5xx are retried; 3xx and other 4xx are final."""
    if 200 <= status_code < 300:
        return Outcome(status_code, None, retryable=False)
    if 300 <= status_code < 400:
        return Outcome(
            status_code, f"HTTP {status_code}: redirects are not followed", retryable=False
        )
    if status_code == 429 or status_code >= 500:
        return Outcome(
            status_code,
            f"HTTP {status_code}",
            retryable=True,
            retry_after=_retry_after(headers.get("retry-after")),
        )
    return Outcome(status_code, f"HTTP {status_code}", retryable=False)


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is ignored: the policy's delay applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


_TIMEOUT_PHASES: tuple[tuple[type[httpx.TimeoutException], str], ...] = (
    (httpx.ConnectTimeout, "connecting"),
    (httpx.WriteTimeout, "sending the request"),
    (httpx.ReadTimeout, "waiting for the response"),
    (httpx.PoolTimeout, "waiting for a connection"),
)


def classify_error(exc: httpx.HTTPError, timeout: float) -> Outcome:
    """Timeouts and network failures are retried; an unsupported URL is not."""
    if isinstance(exc, httpx.TimeoutException):
        phase = next((name for kind, name in _TIMEOUT_PHASES if isinstance(exc, kind)), None)
        suffix = f" ({phase})" if phase else ""
        return Outcome(None, f"timeout after {timeout}s{suffix}", retryable=True)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return refused(str(exc))
    if isinstance(exc, httpx.ConnectError):
        if _caused_by(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
            return Outcome(None, "connection refused", retryable=True)
        return Outcome(None, f"connection failed: {_describe(exc)}", retryable=True)
    return Outcome(None, f"request failed: {_describe(exc)}", retryable=True)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


#: Exception texts can be long (TLS errors, chained causes); the record keeps the gist.
_MAX_DETAIL = 300


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unresolvable(host: str, exc: OSError) -> Outcome:
    """A name that did not resolve: often a passing DNS failure, so it is retried."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return Outcome(None, f"cannot resolve {host}: {reason}", retryable=True)


# -- where it may go ---------------------------------------------------------------------------


@attrs.frozen
class Target:
    """A callback URL taken apart: the ASCII host to resolve and verify TLS against, the port."""

    url: str
    host: str
    port: int
    literal: IPAddress | None


def parse_target(url: str | None) -> Target | Outcome:
    """The URL checked again at send time (creation checked it too); an ``Outcome`` if refused."""
    if url is None:
        return refused("the run has no callback_url")
    problem = callback_url_problem(url)
    if problem is not None:
        return refused(problem)
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        return refused(f"is not a valid URL ({exc})")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    return Target(url=url, host=host, port=port, literal=literal)


def addresses_from(infos: list[tuple[Any, ...]]) -> list[IPAddress]:
    """The distinct addresses of a ``getaddrinfo`` answer, in its order."""
    found: list[IPAddress] = []
    for info in infos:
        sockaddr = info[4]
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def resolve(target: Target) -> list[IPAddress]:
    """Every address the host resolves to now (raises ``OSError`` when it does not)."""
    if target.literal is not None:
        return [target.literal]
    return addresses_from(socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))


def check_addresses(addresses: list[IPAddress], *, block_private_networks: bool) -> Outcome | None:
    """Refuse the whole URL when ANY address is forbidden: DNS may answer with any of them."""
    if not addresses:
        return Outcome(None, "cannot resolve host: no address", retryable=True)
    for address in addresses:
        problem = address_problem(address, block_private_networks=block_private_networks)
        if problem is not None:
            return refused(problem)
    return None


def pinned_request(
    client: httpx.Client | httpx.AsyncClient,
    target: Target,
    address: IPAddress,
    body: bytes,
    headers: dict[str, str],
) -> httpx.Request:
    """A POST that connects to ``address``, the one checked, not to whatever DNS says next.

    The URL's host is swapped for the address while the ``Host`` header and the
    TLS server name (SNI and certificate check) keep the original name, so a
    DNS answer that changes between the check and the connection (rebinding)
    cannot steer the request elsewhere.
    """
    request = client.build_request("POST", target.url, content=body, headers=headers)
    if target.literal is None:
        request.url = request.url.copy_with(host=str(address))
        request.extensions["sni_hostname"] = target.host
    return request


# -- the configuration both twins share --------------------------------------------------------


class DelivererBase:
    """Options, checks and bookkeeping shared by ``Deliverer`` and ``AsyncDeliverer``."""

    _concurrency: int = 1

    def __init__(
        self,
        *,
        secret: str | bytes | None,
        timeout: float,
        retry: RetryPolicy | None,
        block_private_networks: bool,
        clock: Clock | None,
        store_clock: object,
        batch_size: int,
        lease: timedelta | None,
        rng: random.Random | None,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidCallbackConfig("timeout", f"must be a number of seconds, got {timeout!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise InvalidCallbackConfig("timeout", "must be a positive number of seconds")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidCallbackConfig("batch_size", "must be a positive integer")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidCallbackConfig("retry", "must be a RetryPolicy")
        if lease is not None and (not isinstance(lease, timedelta) or lease <= timedelta(0)):
            raise InvalidCallbackConfig("lease", "must be a positive timedelta")
        self.timeout = float(timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        self.block_private_networks = bool(block_private_networks)
        self.batch_size = batch_size
        if clock is None:
            clock = store_clock if isinstance(store_clock, Clock) else SystemClock()
        self.clock: Clock = clock
        self.lease = lease if lease is not None else self.default_lease()
        self._signer = make_signer(secret)
        self._rng = rng if rng is not None else random.Random()
        self._ssl_context = ssl_context
        self._logger: Any = None

    def default_lease(self) -> timedelta:
        """Long enough for a whole claimed batch to time out before anyone else may take it."""
        rounds = math.ceil(self.batch_size / self._concurrency)
        return timedelta(seconds=max(60.0, 30.0 + 3 * self.timeout * rounds))

    def client_options(self) -> dict[str, Any]:
        """httpx options: one timeout, no redirects, no proxies from the environment, no reuse."""
        verify: ssl.SSLContext = self._ssl_context or ssl.create_default_context(
            cafile=certifi.where()
        )
        self._ssl_context = verify
        return {
            "timeout": httpx.Timeout(self.timeout),
            "follow_redirects": False,
            "trust_env": False,
            "verify": verify,
            "limits": httpx.Limits(max_keepalive_connections=0),
        }

    def headers_for(self, webhook_id: str, timestamp: datetime, body: str) -> dict[str, str]:
        return webhook_headers(webhook_id, timestamp, body, self._signer)

    def conclude(
        self, outcome: Outcome, attempts_made: int, scheduled_from: datetime
    ) -> tuple[str | None, datetime | None]:
        """The error text to record and the next attempt's time (None: the delivery is done)."""
        if outcome.delivered or not outcome.retryable:
            return outcome.error, None
        if self.retry.gives_up_after(attempts_made):
            return f"{outcome.error}; gave up after {attempts_made} attempts", None
        delay = self.retry.delay(attempts_made, self._rng)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, self.retry.max_delay))
        return outcome.error, scheduled_from + timedelta(seconds=delay)

    def log_attempt(
        self,
        delivery: Any,
        outcome: Outcome,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> None:
        fields = {
            "run_id": delivery.run_id,
            "webhook_id": delivery.webhook_id,
            "attempt": delivery.attempts + 1,
            "status_code": outcome.status_code,
            "error": error,
            "next_attempt_at": None if next_attempt_at is None else next_attempt_at.isoformat(),
        }
        if structlog.is_configured():
            if self._logger is None:
                self._logger = structlog.get_logger(_LOGGER_NAME)
            event = "callback.delivered" if outcome.delivered else "callback.failed"
            self._logger.info(event, **fields)
        else:
            logging.getLogger(_LOGGER_NAME).debug("callback attempt %s", fields)

    def log_pass_failure(self, exc: Exception) -> None:
        """A background pass failed (a store down, say): say so, and let the loop try again."""
        if structlog.is_configured():
            structlog.get_logger(_LOGGER_NAME).warning(
                "callback.pass_failed", error=str(exc), error_type=type(exc).__name__
            )
        else:
            logging.getLogger(_LOGGER_NAME).warning(
                "callback delivery pass failed: %s: %s", type(exc).__name__, exc
            )
