"""``python -m benchmarks [--quick] [--json PATH] [--markdown PATH] [--only GROUP ...]``.

Runs the groups in order, prints the machine and a Markdown table of ratios,
and optionally writes the JSON report and the results section of a Markdown
file (``BENCHMARKS.md``: the text between its results markers is replaced,
everything else is kept). Exit status 0 whenever the benchmarks ran, whatever
the figures: speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._harness import Report

GROUPS = ("engine", "memory", "stores", "audit")
#: Groups that need a module another part of the library provides; missing means skipped.
_OPTIONAL = {"stores": "run_lifecycle.stores", "audit": "run_lifecycle.audit"}
BEGIN, END = "<!-- results -->", "<!-- /results -->"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "nproc": len(affinity(0)) if affinity else os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _run_group(name: str, *, quick: bool, tiny: bool = False) -> Report:
    optional = _OPTIONAL.get(name)
    if optional is not None:
        try:
            importlib.import_module(optional)
        except ImportError as exc:
            report = Report()
            report.note(f"{name} skipped: {optional} cannot be imported ({exc})")
            return report
    module = importlib.import_module(f"benchmarks.{name}")
    result: Report = module.run(quick=quick, tiny=tiny)
    return result


def markdown(report: Report, info: dict[str, Any], command: str, seconds: float) -> str:
    """The results section: the command, the machine, the table and the notes."""
    load = info["load_average"]
    return "\n".join(
        [
            f"Command: `{command}` ({seconds:.0f} s, {info['started']})",
            "",
            f"Machine: {info['nproc']} CPUs available (`nproc`), {info['cpu']};"
            f" {info['implementation']} {info['python']} on {info['platform']}"
            + (f"; load average at start {load[0]:.2f}" if load else ""),
            "",
            report.table(),
        ]
    )


def write_markdown(path: Path, section: str) -> None:
    """Replace the results section of ``path`` (between the markers), or create the file."""
    block = f"{BEGIN}\n{section}\n{END}"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = f"{text}\n{block}\n" if text else f"# Benchmarks\n\n{block}\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Ratio benchmarks of run-lifecycle against its baselines (nothing asserted).",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the report as JSON")
    parser.add_argument(
        "--markdown", type=Path, metavar="PATH", help="write the results section of PATH"
    )
    parser.add_argument(
        "--only", nargs="+", choices=GROUPS, metavar="GROUP", help=f"run only: {', '.join(GROUPS)}"
    )
    # A few operations per figure: for the smoke test, which checks shape, never speed.
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    groups = [g for g in GROUPS if args.only is None or g in args.only]
    info = machine()
    info["started"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"machine: {json.dumps(info)}", flush=True)
    began = time.perf_counter()
    report = Report()
    for group in groups:
        started = time.perf_counter()
        part = _run_group(group, quick=args.quick, tiny=args.tiny)
        print(f"{group}: done in {time.perf_counter() - started:.1f} s", flush=True)
        report.extend(part)
    seconds = time.perf_counter() - began
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    if args.tiny:
        command += " --tiny"
    if args.only:
        command += " --only " + " ".join(args.only)
    print()
    print(report.table())
    print(f"\n{len(report.figures)} figures in {seconds:.0f} s")
    if args.json is not None:
        document = {
            "command": command,
            "quick": args.quick,
            "machine": info,
            "seconds": seconds,
            **report.to_dict(),
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    if args.markdown is not None:
        write_markdown(args.markdown, markdown(report, info, command, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
