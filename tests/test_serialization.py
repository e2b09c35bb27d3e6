"""The wire format: schema-valid, round-trips, and refuses every malformed document cleanly."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from run_lifecycle import (
    InvalidRunDocument,
    Run,
    RunLifecycleError,
    dumps,
    from_json,
    loads,
    to_json,
)

from .strategies import offsets, reachable_runs, wire_docs


@pytest.fixture(scope="module")
def run_validator(run_schemas_path: Path) -> jsonschema.protocols.Validator:
    schemas = json.loads(run_schemas_path.read_text())
    document = {"components": {"schemas": schemas}, **schemas["Run"]}
    cls = jsonschema.validators.validator_for(document)
    return cls(document, format_checker=cls.FORMAT_CHECKER)


@given(reachable_runs())
def test_round_trip_returns_an_equal_run(run: Run) -> None:
    """from_json(to_json(run)) == run for runs in every reachable state."""
    assert from_json(to_json(run)) == run
    assert loads(dumps(run)) == run


@given(reachable_runs())
def test_every_serialized_run_validates_against_the_letta_schema(
    run_validator: jsonschema.protocols.Validator, run: Run
) -> None:
    """to_json output satisfies Letta's Run schema (no extra keys, right types and enums)."""
    document = json.loads(dumps(run))
    run_validator.validate(document)
    assert len(document) == 17


@given(reachable_runs(), offsets())
def test_any_offset_is_accepted_and_normalised_to_utc(run: Run, offset: timedelta) -> None:
    """A created_at with any UTC offset reads back as the same instant, in UTC."""
    doc = to_json(run)
    doc["created_at"] = run.created_at.astimezone(timezone(offset)).isoformat()
    parsed = from_json(doc)
    assert parsed.created_at == run.created_at
    assert parsed.created_at.tzinfo is UTC


def test_z_suffix_is_accepted() -> None:
    """Letta's own 'Z' timestamps parse."""
    run = from_json(
        {
            "id": "run-12345678",
            "agent_id": "a",
            "status": "created",
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
    assert run.created_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_absent_nullable_keys_read_as_null_and_version_defaults_to_zero() -> None:
    """Only id, agent_id, created_at and status are needed; the version is 0 unless told."""
    doc = {
        "id": "run-12345678",
        "agent_id": "a",
        "status": "running",
        "created_at": "2026-01-01T00:00:00+02:00",
    }
    run = from_json(doc)
    assert run.metadata is None and run.ttft_ns is None and run.version == 0
    assert from_json(doc, version=7).version == 7


def _mutations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field expected in the error, broken document) pairs."""

    def with_(**changes: Any) -> dict[str, Any]:
        return {**doc, **changes}

    without = {k: v for k, v in doc.items() if k != "id"}
    terminal = doc["status"] in ("completed", "failed", "cancelled")
    cases = [
        ("bogus", with_(bogus=1)),
        ("id", without),
        ("id", with_(id="nope")),
        ("id", with_(id=12345678)),
        ("agent_id", with_(agent_id="")),
        ("agent_id", with_(agent_id=None)),
        ("status", with_(status="paused")),
        ("created_at", with_(created_at="2026-01-01T00:00:00")),
        ("created_at", with_(created_at="yesterday")),
        ("created_at", with_(created_at=1700000000)),
        ("ttft_ns", with_(ttft_ns=True)),
        ("ttft_ns", with_(ttft_ns="5")),
        ("ttft_ns", with_(ttft_ns=1.5)),
        ("background", with_(background=1)),
        ("metadata", with_(metadata=[1, 2])),
        ("request_config", with_(request_config=[])),
        ("request_config.extra", with_(request_config={"extra": 1})),
        (
            "request_config.use_assistant_message",
            with_(request_config={"use_assistant_message": "yes"}),
        ),
        (
            "request_config.include_return_message_types",
            with_(request_config={"include_return_message_types": ["telepathy"]}),
        ),
        ("stop_reason", with_(stop_reason="boredom")),
        ("callback_url", with_(callback_url="ftp://x/y")),
        ("callback_status_code", with_(callback_status_code=42)),
    ]
    if terminal:
        cases.append(("completed_at", with_(completed_at=None)))
        wrong = "end_turn" if doc["status"] != "completed" else "error"
        cases.append(("stop_reason", with_(stop_reason=wrong)))
    else:
        cases.append(("completed_at", with_(completed_at="2026-01-01T00:00:00+00:00")))
        cases.append(("stop_reason", with_(stop_reason="end_turn")))
        cases.append(("total_duration_ns", with_(total_duration_ns=5)))
    return cases


@given(wire_docs(), st.data())
def test_malformed_documents_raise_invalid_run_document_naming_the_field(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    """Each kind of corruption raises InvalidRunDocument (nothing else) naming the field at fault."""
    field, broken = data.draw(st.sampled_from(_mutations(doc)))
    with pytest.raises(InvalidRunDocument) as info:
        from_json(broken)
    assert info.value.field == field, (info.value, field)
    assert field.split(".")[-1] in str(info.value)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_arbitrary_json_never_raises_anything_but_invalid_run_document(value: Any) -> None:
    """Whatever JSON arrives, from_json either returns a Run or raises InvalidRunDocument."""
    with contextlib.suppress(InvalidRunDocument):
        from_json(value)


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_loads_refuses_garbage_with_a_library_error(text: str | bytes) -> None:
    """loads on arbitrary bytes or text raises only RunLifecycleError subclasses."""
    with contextlib.suppress(RunLifecycleError):
        loads(text)


def test_to_json_output_is_a_copy(tmp_path: Path) -> None:
    """Mutating to_json's metadata does not reach the run."""
    run = from_json(
        {
            "id": "run-12345678",
            "agent_id": "a",
            "status": "created",
            "created_at": "2026-01-01T00:00:00Z",
            "metadata": {"a": {"b": 1}},
        }
    )
    doc = to_json(run)
    doc["metadata"]["a"]["b"] = 2
    assert run.metadata == {"a": {"b": 1}}
