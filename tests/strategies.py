"""Hypothesis strategies shared by the test modules: creation fields, triggers, reachable runs."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from hypothesis import strategies as st

from run_lifecycle import (
    TRIGGERS,
    Lifecycle,
    ManualClock,
    MessageType,
    RequestConfig,
    Run,
    RunLifecycleError,
    StopReason,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
metadata = st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=4)

request_configs = st.none() | st.builds(
    RequestConfig,
    use_assistant_message=st.booleans(),
    assistant_message_tool_name=st.text(max_size=12),
    assistant_message_tool_kwarg=st.text(max_size=12),
    include_return_message_types=st.none()
    | st.lists(st.sampled_from(MessageType), max_size=4).map(tuple),
)

creation_fields = st.fixed_dictionaries(
    {"agent_id": st.text(min_size=1, max_size=20).filter(str.strip)},
    optional={
        "conversation_id": st.none() | st.text(max_size=20),
        "base_template_id": st.none() | st.text(max_size=20),
        "background": st.none() | st.booleans(),
        "metadata": metadata,
        "request_config": request_configs,
        "callback_url": st.none()
        | st.sampled_from(["https://example.com/hook", "http://127.0.0.1:8080/cb?x=1"]),
    },
)

stop_reasons = st.none() | st.sampled_from(StopReason)
triggers = st.sampled_from(TRIGGERS)

start_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)

#: One step of a random life: a trigger with a stop reason, or a clock move (seconds, wall step).
steps = st.one_of(
    st.tuples(st.just("trigger"), triggers, stop_reasons),
    st.tuples(st.just("advance"), st.floats(min_value=0, max_value=3600), st.just(None)),
    st.tuples(st.just("step_wall"), st.floats(min_value=-7200, max_value=7200), st.just(None)),
)


@st.composite
def reachable_runs(draw: st.DrawFn, *, fresh_process: bool | None = None) -> Run:
    """A run in any reachable state, made by driving a real Lifecycle with random steps.

    With ``fresh_process`` the run is first read back from its wire form, so its
    later durations come from wall time (as for a run created in another process).
    """
    clock = ManualClock(draw(start_times), monotonic_ns=draw(st.integers(0, 2**62)))
    lc = Lifecycle(clock=clock)
    run = lc.create(**draw(creation_fields))
    if fresh_process if fresh_process is not None else draw(st.booleans()):
        from run_lifecycle import from_json, to_json

        run = from_json(to_json(run))
    for kind, value, reason in draw(st.lists(steps, max_size=8)):
        if kind == "advance":
            clock.advance(value)
        elif kind == "step_wall":
            clock.step_wall(value)
        else:
            with contextlib.suppress(RunLifecycleError):
                run = lc.apply(run, value, stop_reason=reason)[0]
    if run.is_terminal and run.callback_url is not None and draw(st.booleans()):
        # A deliverer recorded an attempt, as a store does after the terminal transition.
        assert run.completed_at is not None
        run = attrs.evolve(
            run,
            callback_sent_at=run.completed_at + timedelta(seconds=draw(st.integers(0, 10**6))),
            callback_status_code=draw(st.none() | st.integers(100, 599)),
            callback_error=draw(st.none() | st.text(max_size=30)),
        )
    return run


def wire_docs() -> st.SearchStrategy[dict[str, Any]]:
    """Valid wire documents of reachable runs."""
    from run_lifecycle import to_json

    return reachable_runs().map(to_json)


def offsets() -> st.SearchStrategy[timedelta]:
    return st.integers(-14 * 60, 14 * 60).map(lambda minutes: timedelta(minutes=minutes))
