"""One run on a time axis: a mermaid gantt from creation through first token to the end.

Two kinds of time are drawn, and kept apart on purpose. The ``lifecycle``
section places each status between the wall times its events recorded
(``at``): it shows *when* things happened. The ``measured`` section draws
``ttft_ns`` and ``total_duration_ns`` as the run recorded them, from the
monotonic clock (DESIGN §2): they are the durations to trust when the wall
clock stepped. Rejected attempts are red milestones where they landed.

The syntax stays within what GitHub's mermaid renders: ``dateFormat x``
(epoch milliseconds), durations in ``ms``, and task names without ``:``,
``;`` or ``#``, which the gantt grammar reserves.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ._run import RunStatus
from ._run_story import RunStory

__all__ = ["format_ns", "mermaid_text", "render_timeline"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,+()/=|\[\] -]")


def mermaid_text(text: str) -> str:
    """``text`` with every character mermaid could read as syntax replaced by ``_``."""
    return _UNSAFE.sub("_", text)


def format_ns(ns: int) -> str:
    """A duration for people: ``850.0 us``, ``412.3 ms``, ``2.10 s``."""
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f} us"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f} ms"
    return f"{ns / 1_000_000_000:.2f} s"


def _epoch_ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def _ms(ns: int) -> str:
    return f"{ns / 1_000_000:.3f}ms"


def _title(story: RunStory) -> str:
    outcome = story.status
    if story.stop_reason is not None and RunStatus(story.status).is_terminal:
        outcome += f" ({story.stop_reason})"
    return mermaid_text(f"run {story.run_id} of {story.agent_id}, {outcome}")


def _after_entry(lines: list[str], seq: int) -> int:
    """The index just after the milestone of the step that entered a status (seq 0: creation)."""
    marker = ":milestone, created," if seq == 0 else f":milestone, s{seq},"
    return next(i for i, line in enumerate(lines) if marker in line) + 1


def render_timeline(story: RunStory) -> str:
    """A mermaid ``gantt`` of the run: its statuses over time, the measured durations, rejections."""
    lines = [
        "gantt",
        f"    title {_title(story)}",
        "    dateFormat x",
        "    axisFormat %H:%M:%S.%L",
        "    todayMarker off",
        "    %% lifecycle bars use the events' wall times, measured bars the monotonic durations",
        "    section lifecycle",
        f"    created :milestone, created, {_epoch_ms(story.created_at)}, 0ms",
    ]
    entered = [(0, story.created_at, RunStatus.CREATED.value)]  # (seq, when, status)
    for step in story.steps:
        name = f"s{step.seq}"
        at = f"+{format_ns(story.offset_ns(step.at))}"
        if step.to_status == step.from_status:  # an internal transition: a moment, not a span
            lines.append(
                f"    {step.trigger} at {at} :milestone, {name}, {_epoch_ms(step.at)}, 0ms"
            )
            continue
        _, since, status = entered[-1]
        span = max(story.offset_ns(step.at) - story.offset_ns(since), 0)
        # The bar of the status just left goes above the steps taken in it: insert it there.
        bar = (
            f"    {status} for {format_ns(span)} :b{len(entered)}, {_epoch_ms(since)}, {_ms(span)}"
        )
        lines.insert(_after_entry(lines, entered[-1][0]), bar)
        entered.append((step.seq, step.at, step.to_status))
        label = f"{step.trigger} at {at}, {step.to_status}"
        if step.stop_reason is not None:
            label += f" ({step.stop_reason})"
        lines.append(f"    {mermaid_text(label)} :milestone, {name}, {_epoch_ms(step.at)}, 0ms")
    measured = [
        (field, value)
        for field in ("ttft_ns", "total_duration_ns")
        if (value := story.measured(field)) is not None
    ]
    if measured:
        lines.append("    section measured")
        for field, value in measured:
            lines.append(
                f"    {field} {format_ns(value)} :active, {field.replace('_', '')},"
                f" {_epoch_ms(story.created_at)}, {_ms(value)}"
            )
    if story.rejected:
        lines.append("    section rejected")
        for index, attempt in enumerate(story.rejected, start=1):
            asked = attempt.trigger
            if attempt.stop_reason is not None:
                asked += f" ({attempt.stop_reason})"
            label = mermaid_text(f"{asked} rejected, run was {attempt.status}")
            lines.append(f"    {label} :crit, milestone, r{index}, {_epoch_ms(attempt.at)}, 0ms")
    return "\n".join(lines) + "\n"
