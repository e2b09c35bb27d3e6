"""RetryPolicy: the backoff schedule grows by the multiplier, within max_delay and the jitter band."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from run_lifecycle import InvalidCallbackConfig, RetryPolicy


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    initial = draw(st.floats(min_value=0.001, max_value=1000.0))
    return RetryPolicy(
        initial_delay=initial,
        multiplier=draw(st.floats(min_value=1.0, max_value=10.0)),
        max_delay=draw(st.floats(min_value=initial, max_value=100_000.0)),
        jitter=draw(st.floats(min_value=0.0, max_value=0.99)),
        max_attempts=draw(st.integers(min_value=1, max_value=50)),
    )


@given(policy=policies(), attempt=st.integers(min_value=1, max_value=200))
def test_base_delay_grows_by_the_multiplier_until_max_delay(
    policy: RetryPolicy, attempt: int
) -> None:
    """Each base delay is the previous one times the multiplier, capped at max_delay."""
    if attempt == 1:
        assert policy.base_delay(1) == pytest.approx(min(policy.initial_delay, policy.max_delay))
        return
    previous, current = policy.base_delay(attempt - 1), policy.base_delay(attempt)
    assert current == pytest.approx(min(previous * policy.multiplier, policy.max_delay), rel=1e-9)
    assert previous <= current <= policy.max_delay


@given(
    policy=policies(),
    attempt=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jittered_delay_stays_within_the_jitter_band_and_max_delay(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    """A jittered delay lies in (base * (1 - jitter), base], so never above max_delay, never 0."""
    base = policy.base_delay(attempt)
    delay = policy.delay(attempt, random.Random(seed))
    assert base * (1 - policy.jitter) - 1e-12 <= delay <= base
    assert 0 < delay <= policy.max_delay


@given(policy=policies(), attempts=st.integers(min_value=0, max_value=60))
def test_gives_up_exactly_at_max_attempts(policy: RetryPolicy, attempts: int) -> None:
    """The policy allows max_attempts attempts in all, the first one included."""
    assert policy.gives_up_after(attempts) is (attempts >= policy.max_attempts)


def test_no_jitter_gives_the_exact_schedule() -> None:
    """Without jitter the delays are initial, initial*m, initial*m², ... up to max_delay."""
    policy = RetryPolicy(initial_delay=2, multiplier=3, max_delay=100, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [2, 6, 18, 54, 100]


def test_defaults_are_the_documented_ones() -> None:
    """The defaults the README documents: 5 s, x3, 1 h, 20 % jitter, 8 attempts."""
    policy = RetryPolicy()
    assert (policy.initial_delay, policy.multiplier, policy.max_delay) == (5.0, 3.0, 3600.0)
    assert (policy.jitter, policy.max_attempts) == (0.2, 8)


def test_huge_attempt_numbers_do_not_overflow() -> None:
    """Attempt 10 000 of a fast-growing policy is simply max_delay (no float overflow)."""
    assert RetryPolicy(multiplier=10).base_delay(10_000) == 3600.0


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"initial_delay": 0}, "retry.initial_delay"),
        ({"initial_delay": math.nan}, "retry.initial_delay"),
        ({"multiplier": 0.5}, "retry.multiplier"),
        ({"max_delay": 1, "initial_delay": 2}, "retry.max_delay"),
        ({"jitter": 1.0}, "retry.jitter"),
        ({"jitter": -0.1}, "retry.jitter"),
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"max_attempts": 2.5}, "retry.max_attempts"),
        ({"initial_delay": "5"}, "retry.initial_delay"),
    ],
)
def test_invalid_policies_are_refused_naming_the_option(
    options: dict[str, object], option: str
) -> None:
    """A policy that cannot work raises InvalidCallbackConfig naming the option at fault."""
    with pytest.raises(InvalidCallbackConfig) as info:
        RetryPolicy(**options)  # type: ignore[arg-type]
    assert info.value.option == option


def test_policy_works_and_deliverer_names_the_extra_without_httpx() -> None:
    """Without the callbacks extra, RetryPolicy still works and Deliverer says what to install."""
    code = (
        "import sys\n"
        "sys.modules['httpx'] = None\n"
        "sys.modules['standardwebhooks'] = None\n"
        "import run_lifecycle\n"
        "print(run_lifecycle.RetryPolicy().base_delay(2))\n"
        "try:\n"
        "    run_lifecycle.Deliverer\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "15.0"
    assert "pip install 'run-lifecycle[callbacks]'" in second
