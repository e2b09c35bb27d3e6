"""``run-lifecycle diagram``: draw the lifecycle from the machine definition."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..diagrams import render_dot, render_mermaid

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "diagram",
        help="draw the lifecycle graph (mermaid or Graphviz DOT)",
        description="Render the lifecycle graph from the live transitions definition.",
    )
    parser.add_argument(
        "--format",
        choices=("mermaid", "dot"),
        default="mermaid",
        help="mermaid stateDiagram-v2 (renders on GitHub) or Graphviz DOT (default: mermaid)",
    )
    parser.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = render_mermaid() if args.format == "mermaid" else render_dot()
    if args.output is None:
        print(text, end="")
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0
