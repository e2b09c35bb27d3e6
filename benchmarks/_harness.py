"""Paired A/B timing, medians and ratios: the only arithmetic the benchmarks share.

The machines these run on are shared and noisy, so no absolute time means
much on its own. Every comparison therefore runs the subject and its
baseline in the same process, alternately (A B A B ...), each batch doing the
same number of operations, and reports the median of the per-pair ratios:
a slow patch of the machine slows both halves of a pair alike and cancels
out. Raw medians are kept beside the ratio for context only.

A ratio here is always "times as fast as the baseline" (baseline time over
subject time, or subject throughput over baseline throughput), so every
target reads ``>=``: 0.5x means the subject takes twice the baseline's time.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Figure", "Pair", "Report", "paired", "ratio_figure"]

#: A batch: does ``n`` operations of one kind, and returns nothing worth keeping.
Batch = Callable[[int], object]


@dataclass(frozen=True)
class Pair:
    """The outcome of one paired run: per-operation seconds of each side, and the ratio.

    ``ratio`` is the median over pairs of ``baseline / subject`` time, i.e. how
    many times as fast as the baseline the subject is.
    """

    subject_s: float
    baseline_s: float
    ratio: float
    rounds: int
    ops: int
    ratios: tuple[float, ...] = ()


def _timed(batch: Batch, ops: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    batch(ops)
    return (time.perf_counter_ns() - start) / 1e9 / ops


def paired(
    subject: Batch, baseline: Batch, *, ops: int, rounds: int, warmup_ops: int | None = None
) -> Pair:
    """Time ``subject`` and ``baseline`` alternately, ``rounds`` times each, ``ops`` per batch.

    Both sides are warmed up first (caches, lazily built tables, the
    allocator). The order inside a pair alternates too (A B, B A, ...) so that
    neither side always runs second, after the other has warmed the caches.
    """
    if ops < 1 or rounds < 1:
        raise ValueError("paired() needs at least one operation and one round")
    warm = max(1, ops // 10) if warmup_ops is None else warmup_ops
    subject(warm)
    baseline(warm)
    subject_times: list[float] = []
    baseline_times: list[float] = []
    ratios: list[float] = []
    for index in range(rounds):
        if index % 2 == 0:
            a = _timed(subject, ops)
            b = _timed(baseline, ops)
        else:
            b = _timed(baseline, ops)
            a = _timed(subject, ops)
        subject_times.append(a)
        baseline_times.append(b)
        ratios.append(b / a if a > 0 else float("inf"))
    return Pair(
        subject_s=statistics.median(subject_times),
        baseline_s=statistics.median(baseline_times),
        ratio=statistics.median(ratios),
        rounds=rounds,
        ops=ops,
        ratios=tuple(ratios),
    )


@dataclass(frozen=True)
class Figure:
    """One line of the results table.

    ``value`` is the figure itself, in ``unit`` (``"x"`` for a ratio); ``target``
    is the bound it should keep (``">= 0.5"``, ``"< 1024"``) or None;
    ``context`` is the raw measurement printed beside it, and ``data`` the raw
    numbers for the JSON report.
    """

    group: str
    name: str
    value: float
    unit: str
    target: str | None
    context: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """Whether ``value`` keeps ``target`` (None when there is no target)."""
        if self.target is None:
            return None
        op, bound = self.target.split()
        limit = float(bound)
        checks: dict[str, Callable[[float, float], bool]] = {
            ">=": lambda v, t: v >= t,
            ">": lambda v, t: v > t,
            "<=": lambda v, t: v <= t,
            "<": lambda v, t: v < t,
        }
        return checks[op](self.value, limit)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["met"] = self.met
        return data


def _per_op(seconds: float, unit: str) -> str:
    if unit == "/s":
        return f"{1 / seconds:,.0f}/s" if seconds > 0 else "inf/s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} us"


def ratio_figure(
    group: str,
    name: str,
    pair: Pair,
    *,
    target: float | None,
    subject: str,
    baseline: str,
    rate: bool = False,
) -> Figure:
    """A figure for a paired comparison; ``rate`` prints throughputs instead of times."""
    unit = "/s" if rate else "time"
    context = (
        f"{subject} {_per_op(pair.subject_s, unit)} vs {baseline} {_per_op(pair.baseline_s, unit)}"
        f" (median of {pair.rounds} pairs x {pair.ops} ops)"
    )
    return Figure(
        group=group,
        name=name,
        value=pair.ratio,
        unit="x",
        target=None if target is None else f">= {target:g}",
        context=context,
        data={
            "subject": subject,
            "baseline": baseline,
            "subject_s_per_op": pair.subject_s,
            "baseline_s_per_op": pair.baseline_s,
            "ratio": pair.ratio,
            "ratios": list(pair.ratios),
            "rounds": pair.rounds,
            "ops": pair.ops,
        },
    )


@dataclass
class Report:
    """Everything one run measured, and what it could not measure (``notes``)."""

    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def extend(self, other: Report) -> None:
        self.figures.extend(other.figures)
        self.notes.extend(other.notes)

    def to_dict(self) -> dict[str, Any]:
        return {"figures": [f.to_dict() for f in self.figures], "notes": list(self.notes)}

    def table(self) -> str:
        """The results as a Markdown table, then the notes."""
        lines = [
            "| group | measurement | figure | target | met | raw, for context |",
            "|---|---|---|---|---|---|",
        ]
        for f in self.figures:
            value = f"{f.value:.2f}x" if f.unit == "x" else f"{f.value:,.0f} {f.unit}"
            met = {True: "yes", False: "NO", None: ""}[f.met]
            lines.append(
                f"| {f.group} | {f.name} | {value} | {f.target or ''} | {met} | {f.context} |"
            )
        for text in self.notes:
            lines.append("")
            lines.append(f"- {text}")
        return "\n".join(lines)
