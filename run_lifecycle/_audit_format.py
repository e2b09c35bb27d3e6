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
from collections.abc import Callable
from typing import Any, Literal

from ._events import AuditRecord, record_from_dict
from .serialization import parse_datetime

FaultKind = Literal["truncated", "not_json", "malformed", "changed", "chain", "sequence", "illegal"]
"""The classes of fault ``verify`` reports (``VerifyReport.kind``)."""

#: ``prev`` of the first line: there is no previous line.
GENESIS = "0" * 64


def _string(value: object) -> bool:
    return isinstance(value, str)


def _string_or_null(value: object) -> bool:
    return value is None or isinstance(value, str)


def _object(value: object) -> bool:
    return isinstance(value, dict)


def _zero(value: object) -> bool:
    return type(value) is int and value == 0


def _from_one(value: object) -> bool:
    return is_count(value, 1)


def _from_zero(value: object) -> bool:
    return is_count(value, 0)


def _status_code(value: object) -> bool:
    return value is None or is_count(value, 0)


_Check = tuple[Callable[[object], bool], str]
_TEXT: _Check = (_string, "a string")
_TEXT_OR_NULL: _Check = (_string_or_null, "a string or null")

#: Each record kind's fields as ``to_dict`` writes them (beside ``kind``), with their JSON types.
RECORD_FIELDS: dict[str, dict[str, _Check]] = {
    "created": {
        "run_id": _TEXT,
        "agent_id": _TEXT,
        "seq": (_zero, "0"),
        "at": _TEXT,
        "run": (_object, "an object"),
    },
    "transition": {
        "run_id": _TEXT,
        "agent_id": _TEXT,
        "seq": (_from_one, "an integer from 1"),
        "trigger": _TEXT,
        "from_status": _TEXT,
        "to_status": _TEXT,
        "stop_reason": _TEXT_OR_NULL,
        "at": _TEXT,
        "changes": (_object, "an object"),
    },
    "rejected": {
        "run_id": _TEXT,
        "agent_id": _TEXT,
        "trigger": _TEXT,
        "status": _TEXT,
        "version": (_from_zero, "an integer from 0"),
        "stop_reason": _TEXT_OR_NULL,
        "error": _TEXT,
        "reason": _TEXT,
        "at": _TEXT,
    },
    "callback": {
        "run_id": _TEXT,
        "agent_id": _TEXT,
        "webhook_id": _TEXT,
        "attempt": (_from_one, "an integer from 1"),
        "at": _TEXT,
        "status_code": (_status_code, "an integer or null"),
        "error": _TEXT_OR_NULL,
    },
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

    def __init__(self, kind: FaultKind, reason: str) -> None:
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
    assert isinstance(n, int)
    assert isinstance(prev, str)
    assert isinstance(stored, str)
    try:
        body = _CANONICAL.encode(data)
    except ValueError as exc:  # NaN or infinity: never written by the log
        raise LineFault("changed", f"holds a value canonical JSON cannot carry ({exc})") from None
    if hashlib.sha256(body.encode("ascii")).hexdigest() != stored:
        raise LineFault(
            "changed",
            "the line was changed after it was written: its content does not match its hash",
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
    fields = RECORD_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        known = ", ".join(RECORD_FIELDS)
        raise ValueError(f"unknown record kind {kind!r}; the kinds are {known}")
    keys = set(content) - {"kind"}
    if keys != fields.keys():
        missing, extra = sorted(fields.keys() - keys), sorted(keys - fields.keys())
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise ValueError(f"a {kind} record with {'; '.join(parts)}")
    for key, (check, expected) in fields.items():
        if not check(content[key]):
            raise ValueError(f"{key} must be {expected}, not {content[key]!r}")
    try:
        parse_datetime(content["at"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"at: {exc}") from None
    return record_from_dict(content)
