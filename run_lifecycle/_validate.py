"""The rules a run must keep, shared by ``Lifecycle.create`` and ``from_json``.

Each check raises the error class it is given (``InvalidRunInput`` for creation
arguments, ``InvalidRunDocument`` for wire documents) naming the field at
fault, so a caller learns what to fix and nothing half-built escapes.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any
from urllib.parse import urlsplit

from ._run import Run, RunStatus
from .exceptions import CallbackURLRejected, InvalidRunInput

__all__ = [
    "address_problem",
    "callback_url_problem",
    "check_callback_url",
    "check_consistency",
    "check_id",
    "check_metadata",
    "check_non_empty",
    "is_metadata_address",
]

#: Letta's id pattern (a prefix match, as JSON Schema's ``pattern`` is).
ID_PATTERN = re.compile(r"^(job|run)-[a-fA-F0-9]{8}")

#: Cloud instance-metadata endpoints: a callback must never reach them.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.azure.com"})
_METADATA_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local: AWS, GCP, Azure, OpenStack metadata
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS over IPv6
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
)


def check_id(value: object, error: type[InvalidRunInput]) -> str:
    if not isinstance(value, str):
        raise error("id", f"must be a string, got {type(value).__name__}")
    if not ID_PATTERN.match(value):
        raise error("id", f"{value!r} does not look like 'run-' followed by a UUID")
    return value


def check_non_empty(field: str, value: object, error: type[InvalidRunInput]) -> str:
    if not isinstance(value, str):
        raise error(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise error(field, "must not be empty")
    return value


def check_metadata(value: object, error: type[InvalidRunInput], field: str = "metadata") -> None:
    """Metadata must survive a JSON round trip unchanged: str keys, JSON values, finite numbers."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise error(field, f"keys must be strings, got {key!r}")
            check_metadata(item, error, f"{field}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_metadata(item, error, f"{field}[{index}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise error(field, f"{value!r} cannot be represented in JSON")
    elif value is not None and not isinstance(value, str | int | bool):
        raise error(field, f"{type(value).__name__} is not a JSON value")


def is_metadata_address(host: str) -> bool:
    """True when ``host`` names a cloud metadata endpoint (never a callback target)."""
    host = host.strip("[]").lower().rstrip(".")
    if host in _METADATA_HOSTS:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _METADATA_NETWORKS)


def check_callback_url(value: object, error: type[InvalidRunInput]) -> str:
    """Accept only http(s) URLs with a host, without credentials, never a metadata address."""
    if not isinstance(value, str):
        raise error("callback_url", f"must be a string, got {type(value).__name__}")
    reason = _callback_url_problem(value)
    if reason is not None:
        if error is InvalidRunInput:
            raise CallbackURLRejected(value, reason)
        raise error("callback_url", reason)
    return value


def callback_url_problem(url: str) -> str | None:
    """Why ``url`` will never be called, or None when it may be (the check creation makes).

    The deliverer asks again at send time: a run read from an older store or
    written by another program must not slip past the rules.
    """
    return _callback_url_problem(url)


def address_problem(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, block_private_networks: bool
) -> str | None:
    """Why a callback must not connect to ``address``, or None when it may.

    Cloud metadata and link-local addresses are always refused: a callback URL
    is user input, and those addresses hand out credentials. With
    ``block_private_networks`` everything that is not globally routable is
    refused too (loopback, private, link-local, shared, reserved, unspecified,
    multicast), for deployments that take callback URLs from untrusted users.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if is_metadata_address(str(address)):
        return f"{address} is a cloud metadata or link-local address and is never called"
    if not block_private_networks:
        return None
    for kind in ("loopback", "private", "reserved", "unspecified", "multicast"):
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind} address (private networks are blocked)"
    if not address.is_global:
        return f"{address} is not a globally routable address (private networks are blocked)"
    return None


def _callback_url_problem(url: str) -> str | None:
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"only http and https URLs are called, not {parts.scheme or 'a relative URL'!r}"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials; use a signing secret instead"
    if port == 0:
        return "port 0 cannot be called"
    if is_metadata_address(parts.hostname):
        return f"{parts.hostname} is a cloud metadata address and is never called"
    return None


def check_consistency(run: Run, error: type[InvalidRunInput]) -> None:
    """The state invariants of DESIGN §1/§3 that a stored or received run must keep."""
    if run.created_at.tzinfo is None:
        raise error("created_at", "must be timezone-aware")
    if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
        if run.completed_at is None:
            raise error("completed_at", f"a {run.status.value} run must have completed_at")
        if run.stop_reason is None:
            raise error("stop_reason", f"a {run.status.value} run must have a stop_reason")
        if run.stop_reason.run_status is not run.status:
            raise error(
                "stop_reason",
                f"{run.stop_reason.value!r} belongs to a {run.stop_reason.run_status.value} run,"
                f" not a {run.status.value} one",
            )
        if run.completed_at < run.created_at:
            raise error("completed_at", "is before created_at")
    else:
        for field in ("completed_at", "stop_reason", "total_duration_ns"):
            if getattr(run, field) is not None:
                raise error(field, f"must be null while the run is {run.status.value}")
        if run.status is RunStatus.CREATED and run.ttft_ns is not None:
            raise error("ttft_ns", "a run that has not started has no first token")
    for field in ("ttft_ns", "total_duration_ns"):
        value = getattr(run, field)
        if value is not None and value < 0:
            raise error(field, "must not be negative")
    if (
        run.ttft_ns is not None
        and run.total_duration_ns is not None
        and run.ttft_ns > run.total_duration_ns
    ):
        raise error("ttft_ns", "is larger than total_duration_ns")
    code = run.callback_status_code
    if code is not None and not 100 <= code <= 599:
        raise error("callback_status_code", f"{code} is not an HTTP status code")


def json_safe_copy(value: Any) -> Any:
    """A deep copy of a JSON value, so a caller's later mutation cannot reach a stored run."""
    if isinstance(value, dict):
        return {key: json_safe_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe_copy(item) for item in value]
    return value
