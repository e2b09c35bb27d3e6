"""Memory: what a live ``Run`` costs, and whether a long-running ``Lifecycle`` stays flat.

Memory does not depend on how busy the machine is, so these figures are
absolute (bytes), measured with ``tracemalloc`` (Python allocations) and the
process's resident set size (``/proc/self/statm`` where it exists).

- Bytes per live run: N runs made by ``Lifecycle.create`` (no metadata) held
  in a list, and the same runs once completed; the list's own slots count.
- Growth: lifecycles pushed through one ``Lifecycle`` with an audit sink that
  keeps nothing, after a warm-up that fills the (bounded) decision tables;
  what is still allocated afterwards is what the engine leaks per run.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from run_lifecycle import Lifecycle, Run, SystemClock

from ._harness import Figure, Report
from .engine import AGENT_ID, Discard

__all__ = ["bytes_per_run", "growth", "rss_bytes", "run"]


def rss_bytes() -> int:
    """The resident set size now (Linux), or the peak (elsewhere, where "now" is unavailable)."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _traced(build: Callable[[], object]) -> tuple[object, int]:
    """Run ``build`` under tracemalloc; return its result and the bytes it left allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return kept, after - before


def bytes_per_run(count: int, *, completed: bool) -> float:
    """Bytes per ``Run`` held live, averaged over ``count`` runs (no metadata)."""
    lc = Lifecycle(SystemClock(), audit=Discard())

    def build() -> list[Run]:
        runs = [lc.create(agent_id=AGENT_ID) for _ in range(count)]
        if completed:
            runs = [lc.complete(lc.first_token(lc.start(run))) for run in runs]
        return runs

    kept, allocated = _traced(build)
    assert isinstance(kept, list) and len(kept) == count
    return allocated / count


def growth(count: int, *, traced: bool, warmup: int = 10_000) -> tuple[int, int, int]:
    """(tracemalloc bytes, RSS bytes, pymalloc blocks) still held after ``count`` lifecycles.

    All go through one ``Lifecycle``. With ``traced`` False, tracemalloc is not
    running (its figure is 0) and the loop runs at full speed: tracing every
    allocation makes it several times slower.
    """
    lc = Lifecycle(SystemClock(), audit=Discard())

    def one() -> None:
        lc.complete(lc.first_token(lc.start(lc.create(agent_id=AGENT_ID))))

    for _ in range(warmup):
        one()
    gc.collect()
    if traced:
        tracemalloc.start()
    try:
        traced_before = tracemalloc.get_traced_memory()[0]
        rss_before = rss_bytes()
        blocks_before = sys.getallocatedblocks()
        for _ in range(count):
            one()
        gc.collect()
        traced_after = tracemalloc.get_traced_memory()[0]
        rss_after = rss_bytes()
        blocks_after = sys.getallocatedblocks()
    finally:
        if traced:
            tracemalloc.stop()
    return traced_after - traced_before, rss_after - rss_before, blocks_after - blocks_before


def run(*, quick: bool, tiny: bool = False) -> Report:
    """Bytes per live run (created and completed) and growth over many lifecycles."""
    live = 100 if tiny else (10_000 if quick else 100_000)
    # The RSS pass runs untraced at full speed; the tracemalloc pass is ~7x slower, so shorter.
    cycles = 50 if tiny else (100_000 if quick else 1_000_000)
    traced_cycles = 50 if tiny else (10_000 if quick else 200_000)
    warmup = 10 if tiny else (2_000 if quick else 10_000)
    quick_note = " (quick mode: fewer than a full run's)" if quick else ""
    report = Report()
    for completed in (False, True):
        per_run = bytes_per_run(live, completed=completed)
        state = "completed" if completed else "created"
        report.add(
            Figure(
                group="memory",
                name=f"bytes per live Run ({state}, no metadata)",
                value=per_run,
                unit="B",
                target="< 1024",
                context=f"tracemalloc over {live:,} runs held in a list",
                data={"runs": live, "bytes_per_run": per_run, "state": state},
            )
        )
    _, rss, blocks = growth(cycles, traced=False, warmup=warmup)
    report.add(
        Figure(
            group="memory",
            name=f"RSS growth over {cycles:,} lifecycles",
            value=rss,
            unit="B",
            target=f"< {1 << 20}",
            context=f"one Lifecycle, untraced; live pymalloc blocks {blocks:+,}{quick_note}",
            data={"lifecycles": cycles, "rss_bytes": rss, "pymalloc_blocks": blocks},
        )
    )
    traced, _, blocks = growth(traced_cycles, traced=True, warmup=warmup)
    report.add(
        Figure(
            group="memory",
            name=f"tracemalloc growth over {traced_cycles:,} lifecycles",
            value=traced,
            unit="B",
            target=f"< {1 << 20}",
            context=f"one Lifecycle; Python allocations still held, blocks {blocks:+,}{quick_note}",
            data={"lifecycles": traced_cycles, "traced_bytes": traced, "pymalloc_blocks": blocks},
        )
    )
    return report
