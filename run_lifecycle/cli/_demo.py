"""``run-lifecycle demo``: a simulated agent runtime driving runs, with a summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._demo import simulate
from ..serialization import dumps

__all__ = ["register"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="simulate an agent runtime driving runs and print a summary",
        description=(
            "Drive N runs through realistic lifecycles (first tokens, every stop reason, failures,"
            " cancels racing completions, late duplicate triggers) and summarise what happened."
        ),
    )
    parser.add_argument("--runs", type=_positive, default=200, help="how many runs (default: 200)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same runs (default: 0)"
    )
    parser.add_argument(
        "--export", type=Path, help="write every final run as one Letta JSON object per line"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of text"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = simulate(args.runs, args.seed)
    if args.export is not None:
        with args.export.open("w", encoding="utf-8") as out:
            for item in result.runs:
                out.write(dumps(item) + "\n")
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['runs']} runs"]
    lines.append(
        "  by status:      " + ", ".join(f"{k} {v}" for k, v in summary["by_status"].items())
    )
    lines.append(
        "  by stop reason: " + ", ".join(f"{k} {v}" for k, v in summary["by_stop_reason"].items())
    )
    lines.append(
        f"  rejected triggers: {summary['rejected_total']}"
        + "".join(f"\n    {k}: {v}" for k, v in summary["rejected_triggers"].items())
    )
    lines.append(f"  idempotent no-ops: {summary['idempotent_noops']}")
    races = summary["races"]
    lines.append(f"  cancel/complete races: {races['total']} (cancel won {races['won_by_cancel']})")
    for name in ("ttft_ms", "total_duration_ms"):
        values = summary[name]
        lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    return "\n".join(lines)
