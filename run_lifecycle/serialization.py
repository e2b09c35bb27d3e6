"""The Letta wire format of a Run, on a strict cattrs converter.

``to_json`` produces exactly the 17 keys of Letta's Run schema (timestamps in
UTC ISO 8601 with ``+00:00``); ``from_json`` accepts what the schema and
DESIGN §1 accept and raises ``InvalidRunDocument`` naming the field at fault
for anything else: an unknown key at any level, a wrong type (``true`` is not
an integer, ``"5"`` is not one either), a naive datetime, an unknown enum
value, a malformed id, or a state that contradicts itself.

``make_converter()`` returns a fresh converter configured this way, for
applications that want to extend it; ``converter`` is the ready one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._run import MessageType, RequestConfig, Run, RunStatus, StopReason
from ._validate import (
    check_callback_url,
    check_consistency,
    check_id,
    check_metadata,
    check_non_empty,
    json_safe_copy,
)
from .exceptions import InvalidRunDocument

__all__ = [
    "converter",
    "dumps",
    "format_datetime",
    "from_json",
    "loads",
    "make_converter",
    "parse_datetime",
    "to_json",
]

_REQUIRED = ("id", "agent_id", "created_at", "status")


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with an explicit ``+00:00`` offset."""
    return value.astimezone(UTC).isoformat()


def parse_datetime(value: object) -> datetime:
    """An ISO 8601 string with an offset (any offset, ``Z`` too), normalised to UTC."""
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{value!r} has no UTC offset; naive times are ambiguous")
    return parsed.astimezone(UTC)


def _strict(kind: type, name: str) -> Any:
    def structure(value: object, _: object) -> object:
        # bool is an int subclass in Python, not in JSON: refuse it where an int is due.
        if type(value) is not kind:
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return value

    return structure


def _structure_metadata(value: object, _: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    check_metadata(value, InvalidRunDocument)
    copied: dict[str, Any] = json_safe_copy(value)
    return copied


def _structure_message_types(value: object, _: object) -> tuple[MessageType, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return tuple(MessageType(item) for item in value)


def _is_metadata_type(kind: object) -> bool:
    return kind == dict[str, Any]


def make_converter() -> cattrs.Converter:
    """A converter for the Letta wire format: strict types, no extra keys, UTC times."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))
    conv.register_structure_hook(datetime, lambda value, _: parse_datetime(value))
    conv.register_unstructure_hook(datetime, format_datetime)
    conv.register_structure_hook_func(_is_metadata_type, _structure_metadata)
    conv.register_unstructure_hook_func(_is_metadata_type, json_safe_copy)
    for enum_type in (RunStatus, StopReason, MessageType):
        conv.register_structure_hook(enum_type, lambda value, cls: cls(value))
        conv.register_unstructure_hook(enum_type, lambda member: member.value)
    conv.register_structure_hook(
        RequestConfig,
        make_dict_structure_fn(
            RequestConfig,
            conv,
            _cattrs_forbid_extra_keys=True,
            include_return_message_types=override(struct_hook=_structure_message_types),
        ),
    )
    conv.register_unstructure_hook(
        RequestConfig,
        make_dict_unstructure_fn(
            RequestConfig,
            conv,
            include_return_message_types=override(
                unstruct_hook=lambda v: None if v is None else [m.value for m in v]
            ),
        ),
    )
    conv.register_structure_hook(
        Run,
        make_dict_structure_fn(
            Run,
            conv,
            _cattrs_forbid_extra_keys=True,
            version=override(omit=True),
            created_monotonic_ns=override(omit=True),
        ),
    )
    conv.register_unstructure_hook(
        Run,
        make_dict_unstructure_fn(
            Run,
            conv,
            version=override(omit=True),
            created_monotonic_ns=override(omit=True),
        ),
    )
    return conv


converter = make_converter()


def to_json(run: Run) -> dict[str, Any]:
    """The run as Letta's wire format: a JSON-ready dict with exactly the schema's 17 keys."""
    data: dict[str, Any] = converter.unstructure(run, Run)
    return data


def from_json(data: object, *, version: int = 0) -> Run:
    """Parse and validate a wire document; raise ``InvalidRunDocument`` naming the field at fault.

    ``version`` sets the bookkeeping transition count (stores pass theirs).
    """
    if not isinstance(data, dict):
        raise InvalidRunDocument("$", f"a Run is a JSON object, got {type(data).__name__}")
    for key in _REQUIRED:
        if key not in data:
            raise InvalidRunDocument(key, "is required")
    unknown = sorted(str(key) for key in data if key not in _WIRE_KEYS)
    if unknown:
        raise InvalidRunDocument(unknown[0], "is not a field of a Letta Run")
    check_id(data["id"], InvalidRunDocument)
    check_non_empty("agent_id", data["agent_id"], InvalidRunDocument)
    if data.get("callback_url") is not None:
        check_callback_url(data["callback_url"], InvalidRunDocument)
    config = data.get("request_config")
    if config is not None and not isinstance(config, dict):
        raise InvalidRunDocument(
            "request_config", f"expected an object or null, got {type(config).__name__}"
        )
    try:
        run: Run = converter.structure(data, Run)
    except InvalidRunDocument:
        raise
    except Exception as exc:  # cattrs wraps every failure in an exception group
        field, reason = first_problem(exc)
        raise InvalidRunDocument(field, reason) from None
    check_consistency(run, InvalidRunDocument)
    if version:
        run = _with_version(run, version)
    return run


def _with_version(run: Run, version: int) -> Run:
    return attrs.evolve(run, version=version)


def dumps(run: Run) -> str:
    """The run as a compact JSON string."""
    return json.dumps(to_json(run), separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes, *, version: int = 0) -> Run:
    """Parse a JSON string or bytes into a Run (``InvalidRunDocument`` when it is not one)."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise InvalidRunDocument("$", f"not valid JSON ({exc})") from None
    return from_json(data, version=version)


_WIRE_KEYS = frozenset(
    field.name
    for field in Run.__attrs_attrs__
    if field.name not in ("version", "created_monotonic_ns")
)


def first_problem(exc: BaseException, path: str = "") -> tuple[str, str]:
    """Walk cattrs' exception groups down to the first leaf: (dotted field, reason)."""
    if isinstance(exc, ForbiddenExtraKeysError):
        extra = sorted(exc.extra_fields)
        field = f"{path}.{extra[0]}" if path else extra[0]
        return field, "is not a field of this object"
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            name = path
            for note in getattr(sub, "__notes__", []):
                attr = getattr(note, "name", None)
                if attr is not None:
                    name = f"{path}.{attr}" if path else str(attr)
                    break
                index = getattr(note, "index", None)
                if index is not None:
                    name = f"{path}[{index}]"
                    break
            return first_problem(sub, name)
    if isinstance(exc, InvalidRunDocument):
        return exc.field, exc.reason
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, ValueError) and "is not a valid" in reason:
        reason = f"unknown value: {reason}"
    return path or "$", reason
