"""The demo's simulated agent runtime, on a real store: workers, a canceller, crashes, callbacks.

``K`` agent workers take runs from a queue and drive them through realistic
lifecycles (first tokens, every stop reason, failures, approvals). A separate
canceller thread stands for the web handler serving "cancel" requests: for
some runs it fires ``cancel`` at the very moment the worker fires ``complete``
(both released by one barrier), so the store's compare-and-set decides who
wins, and the loser gets a typed error. A few workers "crash" and leave their
run running; once their (short) lease has run out, the reaper fails those runs.

The plan (which run does what, with which stop reason and delays) comes from
the seed, run by run, so it does not depend on thread scheduling; who wins a
race and the measured durations are real and vary from one execution to the
next.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from ._machine import ENTERED_BY
from ._run import Run, RunStatus, StopReason
from .exceptions import TransitionError

__all__ = ["DEMO_LEASE", "DemoResult", "Scenario", "percentile", "plan_run", "run_demo"]

#: The lease the demo's store gives runs: short, so the crashed workers' runs are reaped while
#: a person watches. Accepted transitions renew it, so the runs being driven never expire.
DEMO_LEASE = timedelta(seconds=2)
#: The longest the demo waits for a lease to run out before reaping.
MAX_DEMO_WAIT = timedelta(seconds=10)

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


@attrs.frozen
class Scenario:
    """What one run will go through, drawn from the seed before any thread starts."""

    kind: str  # complete | approval | approval_denied | fail | fail_early | cancel_early | race | crash
    agent_id: str
    background: bool
    stop_reason: StopReason | None = None
    ttft_s: float = 0.0
    work_s: float = 0.0
    duplicate_first_token: bool = False
    late_duplicate: bool = False


def plan_run(seed: int, index: int, *, time_scale: float = 0.02) -> Scenario:
    """The scenario of run ``index`` for ``seed`` (the same on every execution)."""
    rng = random.Random(f"{seed}:{index}")
    agent = f"agent-{rng.randrange(1, 6)}"
    background = rng.random() < 0.3
    ttft = rng.lognormvariate(-1.0, 0.6) * time_scale
    work = rng.lognormvariate(0.5, 0.8) * time_scale
    extras = {
        "duplicate_first_token": rng.random() < 0.1,
        "late_duplicate": rng.random() < 0.05,
    }
    roll = rng.random()
    if roll < 0.03:
        return Scenario("cancel_early", agent, background)
    if roll < 0.05:
        return Scenario("fail_early", agent, background, StopReason.INSUFFICIENT_CREDITS)
    if roll < 0.07:
        return Scenario("crash", agent, background, None, ttft, work)
    if roll < 0.55:
        return Scenario(
            "complete", agent, background, rng.choice(_COMPLETIONS), ttft, work, **extras
        )
    if roll < 0.63:
        return Scenario(
            "approval", agent, background, StopReason.REQUIRES_APPROVAL, ttft, work, **extras
        )
    if roll < 0.68:
        return Scenario(
            "approval_denied", agent, background, StopReason.REQUIRES_APPROVAL, ttft, work
        )
    if roll < 0.82:
        return Scenario("fail", agent, background, rng.choice(_FAILURES), ttft, work, **extras)
    return Scenario("race", agent, background, StopReason.END_TURN, ttft, work, **extras)


@attrs.define
class DemoResult:
    """What the demo did: its runs, and the counts the summary prints."""

    run_ids: list[str] = attrs.Factory(list)
    runs: list[Run] = attrs.Factory(list)
    rejected: Counter[str] = attrs.Factory(Counter)
    noops: int = 0
    races: int = 0
    races_won_by_cancel: int = 0
    races_won_by_complete: int = 0
    reaped: int = 0
    callbacks: dict[str, int] | None = None
    store: str = ""
    elapsed_s: float = 0.0
    left_running: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def count_rejection(self, exc: TransitionError) -> None:
        with self._lock:
            self.rejected[f"{exc.trigger} on {exc.status}"] += 1

    def summary(self) -> dict[str, Any]:
        """The summary as plain data (the CLI prints it as a table or as JSON)."""
        ttft = sorted(run.ttft_ns for run in self.runs if run.ttft_ns is not None)
        total = sorted(
            run.total_duration_ns for run in self.runs if run.total_duration_ns is not None
        )
        summary: dict[str, Any] = {
            "store": self.store,
            "runs": len(self.runs),
            "elapsed_s": round(self.elapsed_s, 2),
            "by_status": dict(sorted(Counter(run.status.value for run in self.runs).items())),
            "by_stop_reason": dict(
                sorted(
                    Counter(run.stop_reason.value for run in self.runs if run.stop_reason).items()
                )
            ),
            "rejected_triggers": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "idempotent_noops": self.noops,
            "races": {
                "total": self.races,
                "won_by_cancel": self.races_won_by_cancel,
                "won_by_complete": self.races_won_by_complete,
            },
            "reaped": self.reaped,
            "left_running": self.left_running,
            "ttft_ms": _percentiles_ms(ttft),
            "total_duration_ms": _percentiles_ms(total),
        }
        if self.callbacks is not None:
            summary["callbacks"] = dict(self.callbacks)
        return summary


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _percentiles_ms(values: list[int]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q) / 1e6, 1) for q in (50, 95, 99)}


class _Canceller(threading.Thread):
    """The web handler serving cancel requests, racing the workers on the same runs."""

    def __init__(self, store: Any, result: DemoResult) -> None:
        super().__init__(name="demo-canceller", daemon=True)
        self.store = store
        self.result = result
        self.requests: queue.Queue[tuple[str, threading.Barrier] | None] = queue.Queue()
        self.won: set[str] = set()

    def run(self) -> None:
        while (request := self.requests.get()) is not None:
            run_id, barrier = request
            barrier.wait()
            try:
                self.store.apply(run_id, "cancel")
                self.won.add(run_id)
            except TransitionError as exc:
                self.result.count_rejection(exc)


def run_demo(
    store: Any,
    *,
    runs: int,
    seed: int,
    workers: int = 4,
    callback_url: str | None = None,
    time_scale: float = 0.02,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Drive ``runs`` runs through ``store`` with ``workers`` agent workers and a canceller."""
    result = DemoResult(store=getattr(store, "backend", type(store).__name__))
    plans = [plan_run(seed, index, time_scale=time_scale) for index in range(runs)]
    work: queue.Queue[int | None] = queue.Queue()
    for index in range(runs):
        work.put(index)
    canceller = _Canceller(store, result)
    canceller.start()
    started = time.perf_counter()
    ids: list[str | None] = [None] * runs
    crashed: list[str] = []
    lock = threading.Lock()

    def attempt(run_id: str, trigger: str, **kwargs: Any) -> Run | None:
        try:
            run: Run = store.apply(run_id, trigger, **kwargs)
        except TransitionError as exc:
            result.count_rejection(exc)
            return None
        return run

    failures: list[BaseException] = []

    def worker() -> None:
        try:
            work_through()
        except BaseException as exc:  # surfaced in the caller's thread, never a silent traceback
            with lock:
                failures.append(exc)
            while True:  # stop the other workers too
                try:
                    work.get_nowait()
                except queue.Empty:
                    break

    def work_through() -> None:
        while (index := work.get()) is not None:
            plan = plans[index]
            run = store.create_run(
                agent_id=plan.agent_id,
                background=plan.background,
                metadata={"demo": True, "index": index, "scenario": plan.kind},
                callback_url=callback_url,
            )
            ids[index] = run.id
            _drive(store, run.id, plan, attempt, canceller, result, lock, crashed)
            if progress is not None:
                progress(1)

    threads = [
        threading.Thread(target=worker, name=f"demo-worker-{n}", daemon=True)
        for n in range(max(1, workers))
    ]
    for thread in threads:
        work.put(None)
        thread.start()
    for thread in threads:
        thread.join()
    canceller.requests.put(None)
    canceller.join()
    if failures:
        raise failures[0]
    result.races_won_by_cancel = len(canceller.won)
    result.races_won_by_complete = result.races - result.races_won_by_cancel

    # The crashed workers never come back: once their lease has run out (in real time), the
    # reaper fails their runs. Only runs whose own lease expired are touched, so other runtimes
    # sharing the database keep theirs.
    lease: timedelta = getattr(store, "lease", timedelta(minutes=5))
    if crashed and lease <= MAX_DEMO_WAIT:
        time.sleep(lease.total_seconds() + 0.2)
        result.reaped = len(store.reap())
    result.left_running = len(crashed) - result.reaped
    result.run_ids = [run_id for run_id in ids if run_id is not None]
    result.elapsed_s = time.perf_counter() - started
    return result


def _drive(
    store: Any,
    run_id: str,
    plan: Scenario,
    attempt: Callable[..., Run | None],
    canceller: _Canceller,
    result: DemoResult,
    lock: threading.Lock,
    crashed: list[str],
) -> None:
    if plan.kind == "cancel_early":  # the user gives up before a worker picks the run up
        attempt(run_id, "cancel")
        attempt(run_id, "start")  # the worker arrives late: rejected, and learns it was cancelled
        return
    if plan.kind == "fail_early":
        attempt(
            run_id,
            "fail",
            stop_reason=plan.stop_reason,
            error=_ERRORS[StopReason.INSUFFICIENT_CREDITS],
        )
        return
    attempt(run_id, "start")
    time.sleep(plan.ttft_s)
    first = attempt(run_id, "first_token")
    if plan.duplicate_first_token:
        _repeat(store, run_id, "first_token", {}, first, result, lock)  # a streaming retry
    if plan.kind == "crash":
        with lock:
            crashed.append(run_id)  # the worker dies here; the run stays running until reaped
        return
    time.sleep(plan.work_s)
    if plan.kind == "race":
        with lock:
            result.races += 1
        barrier = threading.Barrier(2)
        canceller.requests.put((run_id, barrier))
        barrier.wait()
        final = attempt(run_id, "complete", stop_reason=plan.stop_reason)
    elif plan.kind in ("complete", "approval"):
        final = attempt(run_id, "complete", stop_reason=plan.stop_reason)
    elif plan.kind == "approval_denied":
        attempt(run_id, "complete", stop_reason=plan.stop_reason)
        time.sleep(plan.work_s / 4)
        final = attempt(run_id, "cancel")  # the user denies the approval
        _repeat(store, run_id, "cancel", {}, final, result, lock)  # and clicks again
    else:
        assert plan.stop_reason is not None
        final = attempt(
            run_id, "fail", stop_reason=plan.stop_reason, error=_ERRORS[plan.stop_reason]
        )
    if plan.late_duplicate and final is not None and final.stop_reason is not None:
        # A late duplicate of whatever ended the run (a retried request): an idempotent no-op.
        trigger = next(iter(ENTERED_BY[final.status]))
        _repeat(store, run_id, trigger, {"stop_reason": final.stop_reason}, final, result, lock)


def _repeat(
    store: Any,
    run_id: str,
    trigger: str,
    kwargs: dict[str, Any],
    previous: Run | None,
    result: DemoResult,
    lock: threading.Lock,
) -> None:
    """Send a trigger again; count it as a no-op when the stored run did not move."""
    if previous is None:
        return
    try:
        again: Run = store.apply(run_id, trigger, **kwargs)
    except TransitionError as exc:
        result.count_rejection(exc)
        return
    if again.version == previous.version:
        with lock:
            result.noops += 1
