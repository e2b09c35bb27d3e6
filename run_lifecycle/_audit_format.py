"""The audit log's line format: canonical JSON, the hash chain, and strict record parsing.

Internal: ``run_lifecycle.audit`` documents the format; the writer
(``_audit_log``) and the checker (``_audit_check``) share these helpers so a
line is built and judged by one definition.

A line is the canonical JSON of its *content* (the record's ``to_dict()`` plus
``n``, the log-wide sequence number from 1, and ``prev``, the previous line's
hash, 64 zeros for the first line), with ``"hash"`` appended as its last
member, then ``\\n``. ``hash`` is the hex SHA-256 of the canonical content.

Canonical JSON: keys sorted by code point, separators ``,`` and ``:`` with no
whitespace, every non-ASCII character escaped as ``\\uXXXX`` (so the bytes are
ASCII, hence UTF-8, and any Python string, even one holding a lone surrogate,
round-trips), numbers as Python's ``json`` writes them, no NaN or infinity.
Escaping is chosen over raw UTF-8 because a record that cannot be encoded must
never be the reason an event is lost.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ._events import AuditRecord, record_from_dict
from .serialization import parse_datetime

#: ``prev`` of the first line: there is no previous line.
GENESIS = "0" * 64

#: The keys of each record kind, as ``to_dict`` writes them (the log adds n, prev, hash).
RECORD_KEYS: dict[str, frozenset[str]] = {
    "created": frozenset({"kind", "run_id", "agent_id", "seq", "at", "run"}),
    "transition": frozenset(
        {
            "kind",
            "run_id",
            "agent_id",
            "seq",
            "trigger",
            "from_status",
            "to_status",
            "stop_reason",
            "at",
            "changes",
        }
    ),
    "rejected": frozenset(
        {
            "kind",
            "run_id",
            "agent_id",
            "trigger",
            "status",
            "version",
            "stop_reason",
            "error",
            "reason",
            "at",
        }
    ),
}

_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)
_HEX = frozenset("0123456789abcdef")


def canonical(value: Any) -> str:
    """The canonical JSON text of ``value`` (sorted keys, compact, ASCII; see the module doc)."""
    return _CANONICAL.encode(value)


def encode_line(content: dict[str, Any], n: int, prev: str) -> tuple[bytes, str]:
    """The bytes of one line (with its newline) and its hash; ``content`` gains ``n``/``prev``."""
    content["n"] = n
    content["prev"] = prev
    body = _CANONICAL.encode(content)
    digest = hashlib.sha256(body.encode("ascii")).hexdigest()
    return f'{body[:-1]},"hash":"{digest}"}}\n'.encode("ascii"), digest


def is_hash(value: object) -> bool:
    """True for a 64-character lowercase hex string."""
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def is_count(value: object, minimum: int) -> bool:
    """True for a JSON integer (not a boolean) of at least ``minimum``."""
    return type(value) is int and value >= minimum


class LineFault(Exception):
    """Why one line is not what the writer wrote; ``kind`` names the class of fault."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


def open_line(raw: bytes) -> tuple[dict[str, Any], int, str, str]:
    """Parse and authenticate one line (without its newline) on its own.

    Returns ``(content, n, prev, hash)``, where ``content`` is the record's
    fields alone. Raises ``LineFault`` when the line is not JSON, lacks the log
    fields, or is not byte for byte what its hash covers. Whether it follows
    the previous line is the caller's business.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both
        what = "an empty line" if not raw.strip() else f"not JSON ({exc})"
        raise LineFault("not_json", what) from None
    if not isinstance(data, dict):
        raise LineFault("not_json", f"not a JSON object but {type(data).__name__}")
    stored = data.pop("hash", None)
    n = data.get("n")
    prev = data.get("prev")
    if not is_hash(stored):
        raise LineFault("malformed", "its hash member is missing or not 64 lowercase hex digits")
    if not is_count(n, 1) or not is_hash(prev):
        raise LineFault("malformed", "its n (an integer from 1) or prev (a hash) is missing")
    assert isinstance(n, int) and isinstance(prev, str) and isinstance(stored, str)
    try:
        body = _CANONICAL.encode(data)
    except ValueError as exc:  # NaN or infinity: never written by the log
        raise LineFault("changed", f"holds a value canonical JSON cannot carry ({exc})") from None
    if hashlib.sha256(body.encode("ascii")).hexdigest() != stored:
        raise LineFault(
            "changed", "the line was changed after it was written: its content does not match its hash"
        )
    if raw != f'{body[:-1]},"hash":"{stored}"}}'.encode("ascii"):
        raise LineFault(
            "changed",
            "the line was reformatted after it was written: its bytes are not the canonical form",
        )
    del data["n"], data["prev"]
    return data, n, prev, stored


def parse_record(content: dict[str, Any]) -> AuditRecord:
    """The record a line holds, checked strictly; ``ValueError`` says what is wrong."""
    kind = content.get("kind")
    expected = RECORD_KEYS.get(kind) if isinstance(kind, str) else None
    if expected is None:
        raise ValueError(f"unknown record kind {kind!r}; expected created, transition or rejected")
    keys = set(content)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise ValueError(f"a {kind} record with {'; '.join(parts)}")
    for key in ("run_id", "agent_id", "trigger", "from_status", "to_status", "status"):
        if key in content and not isinstance(content[key], str):
            raise ValueError(f"{key} must be a string")
    for key in ("error", "reason"):
        if key in content and not isinstance(content[key], str):
            raise ValueError(f"{key} must be a string")
    if "stop_reason" in content and not isinstance(content["stop_reason"], str | None):
        raise ValueError("stop_reason must be a string or null")
    if kind == "created" and (content["seq"] != 0 or type(content["seq"]) is not int):
        raise ValueError("a created record has seq 0")
    if kind == "transition" and not is_count(content["seq"], 1):
        raise ValueError("a transition's seq is an integer from 1")
    if kind == "rejected" and not is_count(content["version"], 0):
        raise ValueError("a rejected attempt's version is an integer from 0")
    for key in ("run", "changes"):
        if key in content and not isinstance(content[key], dict):
            raise ValueError(f"{key} must be an object")
    try:
        parse_datetime(content["at"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"at: {exc}") from None
    return record_from_dict(content)
