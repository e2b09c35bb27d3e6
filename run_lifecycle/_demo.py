"""The demo's simulated agent runtime: realistic lifecycles, races and late triggers.

Everything is driven by one ``random.Random(seed)`` and a ``ManualClock``, so
a given seed always produces the same runs, the same ids and the same times.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs

from ._clock import ManualClock
from ._lifecycle import Lifecycle
from ._run import Run, RunStatus, StopReason
from .exceptions import TransitionError

__all__ = ["DemoResult", "percentile", "simulate"]

_COMPLETIONS = [StopReason.END_TURN] * 8 + [StopReason.MAX_STEPS, StopReason.TOOL_RULE]
_FAILURES = [r for r in StopReason if r.run_status is RunStatus.FAILED]
_ERRORS = {
    StopReason.ERROR: "tool raised an exception",
    StopReason.LLM_API_ERROR: "LLM provider returned 503",
    StopReason.INVALID_LLM_RESPONSE: "LLM response was not valid JSON",
    StopReason.INVALID_TOOL_CALL: "tool call named an unknown tool",
    StopReason.NO_TOOL_CALL: "LLM answered without calling a tool",
    StopReason.MAX_TOKENS_EXCEEDED: "completion hit max_tokens",
    StopReason.CONTEXT_WINDOW_OVERFLOW_IN_SYSTEM_PROMPT: "system prompt exceeds the context window",
    StopReason.INSUFFICIENT_CREDITS: "account has no credits left",
}


@attrs.define
class DemoResult:
    """What the demo did: final runs, and the counts the summary prints."""

    runs: list[Run] = attrs.Factory(list)
    rejected: Counter[str] = attrs.Factory(Counter)
    noops: int = 0
    races: int = 0
    races_won_by_cancel: int = 0

    def by_status(self) -> Counter[str]:
        return Counter(run.status.value for run in self.runs)

    def by_stop_reason(self) -> Counter[str]:
        return Counter(run.stop_reason.value for run in self.runs if run.stop_reason is not None)

    def summary(self) -> dict[str, Any]:
        """The summary as plain data (the CLI prints it as text or JSON)."""
        ttft = sorted(run.ttft_ns for run in self.runs if run.ttft_ns is not None)
        total = sorted(
            run.total_duration_ns for run in self.runs if run.total_duration_ns is not None
        )
        return {
            "runs": len(self.runs),
            "by_status": dict(sorted(self.by_status().items())),
            "by_stop_reason": dict(sorted(self.by_stop_reason().items())),
            "rejected_triggers": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "idempotent_noops": self.noops,
            "races": {"total": self.races, "won_by_cancel": self.races_won_by_cancel},
            "ttft_ms": _percentiles_ms(ttft),
            "total_duration_ms": _percentiles_ms(total),
        }


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _percentiles_ms(values: list[int]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q) / 1e6, 1) for q in (50, 95, 99)}


def simulate(
    runs: int,
    seed: int,
    *,
    lifecycle: Lifecycle | None = None,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Drive ``runs`` runs through realistic lifecycles; deterministic for a given ``seed``."""
    rng = random.Random(seed)
    clock = ManualClock()
    lc = lifecycle if lifecycle is not None else Lifecycle(clock=clock)
    if lifecycle is not None and isinstance(lifecycle.clock, ManualClock):
        clock = lifecycle.clock
    result = DemoResult()

    def attempt(run: Run, trigger: str, **kwargs: Any) -> Run:
        try:
            new, event = lc.apply(run, trigger, **kwargs)
        except TransitionError as exc:
            result.rejected[f"{exc.trigger} on {exc.status}"] += 1
            return run
        if event is None:
            result.noops += 1
        return new

    for index in range(runs):
        run_id = f"run-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        run = lc.create(
            id=run_id,
            agent_id=f"agent-{rng.randrange(1, 6)}",
            background=rng.random() < 0.3,
            metadata={"demo": True, "index": index},
        )
        clock.advance(rng.uniform(0.001, 0.05))
        scenario = rng.random()
        if scenario < 0.03:  # the user gives up before the agent picks the run up
            run = attempt(run, "cancel")
            run = attempt(run, "start")  # a worker picks it up late: rejected
        elif scenario < 0.05:  # the agent cannot even start (no credits)
            reason = rng.choice(_FAILURES)
            run = attempt(run, "fail", stop_reason=reason, error=_ERRORS[reason])
        else:
            run = attempt(run, "start")
            clock.advance(rng.lognormvariate(-1.0, 0.6))  # time to first token, ~0.4 s
            run = attempt(run, "first_token")
            if rng.random() < 0.1:
                run = attempt(run, "first_token")  # a duplicate from a streaming retry
            clock.advance(rng.lognormvariate(0.5, 0.8))  # the rest of the turn, ~2 s
            run = _finish(rng, run, attempt, result)
        if rng.random() < 0.05:  # a late duplicate of whatever ended the run
            run = _repeat_last(run, attempt)
        result.runs.append(run)
        if progress is not None:
            progress(index + 1)
    return result


def _finish(rng: random.Random, run: Run, attempt: Callable[..., Run], result: DemoResult) -> Run:
    roll = rng.random()
    if roll < 0.60:
        return attempt(run, "complete", stop_reason=rng.choice(_COMPLETIONS))
    if roll < 0.72:  # stops to ask for approval; sometimes the user denies it
        run = attempt(run, "complete", stop_reason=StopReason.REQUIRES_APPROVAL)
        if rng.random() < 0.4:
            run = attempt(run, "cancel")
        return run
    if roll < 0.85:
        reason = rng.choice(_FAILURES)
        return attempt(run, "fail", stop_reason=reason, error=_ERRORS[reason])
    # A cancel request from the user races the agent's completion: whichever comes
    # first wins, the other is rejected and learns what happened.
    result.races += 1
    if rng.random() < 0.5:
        run = attempt(run, "cancel")
        run = attempt(run, "complete")
        result.races_won_by_cancel += int(run.status is RunStatus.CANCELLED)
        return run
    run = attempt(run, "complete")
    return attempt(run, "cancel")


def _repeat_last(run: Run, attempt: Callable[..., Run]) -> Run:
    if run.status is RunStatus.COMPLETED:
        return attempt(run, "complete", stop_reason=run.stop_reason)
    if run.status is RunStatus.FAILED:
        return attempt(run, "fail", stop_reason=run.stop_reason)
    if run.status is RunStatus.CANCELLED:
        return attempt(run, "cancel")
    return run
