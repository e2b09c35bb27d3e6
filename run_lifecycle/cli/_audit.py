"""``run-lifecycle audit verify|replay|show|repair``: check, rebuild and read an audit log."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from .._events import AuditRecord, CallbackAttempt, RejectedAttempt, RunCreated, TransitionEvent
from ..audit import read_records, repair, replay, verify
from ..exceptions import RunNotFound
from ..serialization import dumps, format_datetime

__all__ = ["format_timeline", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "audit",
        help="verify, replay, show or repair an audit log",
        description=(
            "Work with an audit log (JSON Lines, hash-chained): check that it is what was written,"
            " rebuild the runs from it, show one run's timeline, or cut the incomplete last line a"
            " crash left."
        ),
        epilog="Exit codes: 0 ok, 1 the log has a fault, 2 usage error, 3 unreadable file or unknown run.",
    )
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    check = actions.add_parser(
        "verify",
        help="check the log; print `line N: <reason>` for the first fault (exit 1)",
        description=(
            "Check every line's hash, the chain between lines, the log-wide sequence, and that each"
            " run's events are legal steps of the machine. Prints a one-line summary (exit 0) or the"
            " first line at fault (exit 1)."
        ),
    )
    check.add_argument("path", type=Path, metavar="PATH")
    check.set_defaults(func=run_verify)

    rebuild = actions.add_parser(
        "replay",
        help="rebuild every run from the log (one Letta JSON run a line)",
        description=(
            "Rebuild every run through the machine from its events and print one Letta JSON run a"
            " line, or write them to --export. A log that fails verification is refused (exit 3)."
        ),
    )
    rebuild.add_argument("path", type=Path, metavar="PATH")
    rebuild.add_argument(
        "--export", type=Path, metavar="PATH", help="write the runs to this file instead of stdout"
    )
    rebuild.set_defaults(func=run_replay)

    show = actions.add_parser(
        "show",
        help="one run's timeline: each transition, its time and the time since the previous one",
        description=(
            "Print one run's history from the log: its creation, each transition with its time and"
            " the time since the previous entry, rejected attempts and callback attempts marked."
        ),
    )
    show.add_argument("path", type=Path, metavar="PATH")
    show.add_argument("run_id", metavar="RUN_ID")
    show.set_defaults(func=run_show)

    fix = actions.add_parser(
        "repair",
        help="cut an incomplete last line (a crash mid-write), then verify",
        description=(
            "Cut an incomplete last line, the only damage a crash can do, so the log can continue."
            " Nothing else is ever cut: exit 0 when the log is then intact, 1 when other faults"
            " remain (the first is printed)."
        ),
    )
    fix.add_argument("path", type=Path, metavar="PATH")
    fix.set_defaults(func=run_repair)


def run_verify(args: argparse.Namespace) -> int:
    report = verify(args.path)
    print(report)
    return 0 if report.ok else 1


def run_repair(args: argparse.Namespace) -> int:
    report = repair(args.path)
    if report.cut_bytes:
        print(f"cut an incomplete last line ({report.cut_bytes} bytes)")
    elif report.ok:
        print("nothing to repair")
    print(report)
    return 0 if report.ok else 1


def run_replay(args: argparse.Namespace) -> int:
    runs = replay(args.path)
    lines = "".join(dumps(run) + "\n" for run in runs.values())
    if args.export is None:
        print(lines, end="")
    else:
        args.export.write_text(lines, encoding="utf-8")
        print(f"replayed {len(runs)} runs from {args.path} into {args.export}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    records = [record for record in read_records(args.path) if record.run_id == args.run_id]
    if not records:
        raise RunNotFound(args.run_id)
    print(format_timeline(records))
    return 0


def _order(item: tuple[int, AuditRecord], last_seq: int) -> tuple[int, int, int]:
    """Causal order: creation, each transition by seq, refusals after the step they saw."""
    index, record = item
    if isinstance(record, RunCreated):
        return (0, 0, index)
    if isinstance(record, TransitionEvent):
        return (record.seq, 0, index)
    if isinstance(record, RejectedAttempt):
        return (record.version, 1, index)
    return (last_seq, 1, index)  # callbacks follow the terminal transition


def _describe(record: AuditRecord) -> str:
    if isinstance(record, RunCreated):
        return f"created (agent {record.agent_id})"
    if isinstance(record, TransitionEvent):
        text = f"{record.trigger}: {record.from_status} -> {record.to_status}"
        details = [record.stop_reason] if record.stop_reason else []
        for key in ("ttft_ns", "total_duration_ns"):
            if isinstance(record.changes.get(key), int):
                details.append(f"{key.removesuffix('_ns')} {record.changes[key] / 1e9:.3f}s")
        metadata = record.changes.get("metadata")
        error = metadata.get("error") if isinstance(metadata, dict) else None
        if error is not None:
            details.append(f"error {error!r}")
        return text + (f" ({', '.join(details)})" if details else "")
    if isinstance(record, RejectedAttempt):
        return f"REJECTED {record.trigger} on {record.status}: {record.error}: {record.reason}"
    assert isinstance(record, CallbackAttempt)
    outcome = f"HTTP {record.status_code}" if record.status_code is not None else "no response"
    if record.error:
        outcome += f", {record.error}"
    return f"callback attempt {record.attempt}: {outcome}"


def _since(previous: datetime | None, at: datetime) -> str:
    if previous is None:
        return ""
    return f"{(at - previous).total_seconds():+.3f}s"


def format_timeline(records: list[AuditRecord]) -> str:
    """One run's records as readable lines, in causal order, with the time between entries."""
    last_seq = max((r.seq for r in records if isinstance(r, TransitionEvent)), default=0)
    ordered = [r for _, r in sorted(enumerate(records), key=lambda item: _order(item, last_seq))]
    first = ordered[0]
    lines = [f"run {first.run_id} (agent {first.agent_id}): {len(ordered)} records"]
    previous: datetime | None = None
    for record in ordered:
        lines.append(
            f"  {format_datetime(record.at):32}  {_since(previous, record.at):>10}  {_describe(record)}"
        )
        previous = record.at
    transitions = [r for r in ordered if isinstance(r, TransitionEvent)]
    if transitions:
        last = transitions[-1]
        reason = f" ({last.stop_reason})" if last.stop_reason else ""
        lines.append(f"now {last.to_status}{reason} after {len(transitions)} transitions")
    else:
        lines.append("now created, no transitions")
    return "\n".join(lines)
