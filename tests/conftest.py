"""Shared fixtures and the hypothesis profiles.

Profiles: ``default`` (100 examples, for a quick local run) and ``ci``
(several hundred examples per property; ``.ci/run`` selects it with
``--hypothesis-profile=ci``). Neither has a deadline: the machines are shared
and timing is the benchmarks' business, not the tests'.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: Where Letta's Run schema lives: beside the checkout (``../shared``) or named by the environment.
_SCHEMA_CANDIDATES = [
    Path(os.environ["RUN_LIFECYCLE_SCHEMA"]) if "RUN_LIFECYCLE_SCHEMA" in os.environ else None,
    Path(__file__).resolve().parent / "data" / "run-schemas.json",
]


@pytest.fixture(scope="session")
def run_schemas_path() -> Path:
    for candidate in _SCHEMA_CANDIDATES:
        if candidate is not None and candidate.is_file():
            return candidate
    pytest.fail("Letta's run-schemas.json is missing from tests/data/")
