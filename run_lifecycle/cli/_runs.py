"""``run-lifecycle runs list|show``: look at the runs a store holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._run import RunStatus
from ..serialization import format_datetime, to_json

__all__ = ["register"]


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000, got {value}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "runs", help="list and show the runs in a store", description="Inspect the runs in a store."
    )
    commands = parser.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)

    listing = commands.add_parser(
        "list",
        help="list runs, newest first (Letta's list semantics)",
        description="List runs, newest first, with Letta's filters.",
    )
    listing.add_argument(
        "--db",
        required=True,
        metavar="URL",
        help="the store URL (sqlite:///PATH, postgresql://...)",
    )
    listing.add_argument(
        "--status",
        action="append",
        choices=[status.value for status in RunStatus],
        help="only runs in this status (repeat for several)",
    )
    listing.add_argument("--agent-id", help="only this agent's runs")
    listing.add_argument("--active", action="store_true", help="only created and running runs")
    listing.add_argument(
        "--limit", type=_limit, default=50, help="at most this many runs, 1-1000 (default: 50)"
    )
    listing.add_argument("--before", metavar="RUN_ID", help="runs created before this run (older)")
    listing.add_argument("--after", metavar="RUN_ID", help="runs created after this run (newer)")
    listing.add_argument(
        "--order", choices=("asc", "desc"), default="desc", help="by created_at (default: desc)"
    )
    listing.add_argument("--json", action="store_true", help="one Letta JSON run per line")
    listing.set_defaults(func=run_list)

    show = commands.add_parser(
        "show", help="show one run and its events", description="Show one run and its history."
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--db", required=True, metavar="URL", help="the store URL")
    show.add_argument("--json", action="store_true", help="the run and its events as JSON")
    show.set_defaults(func=run_show)


def open_existing(url: str) -> Any:
    """Open a store that must already exist: inspecting never creates an empty database."""
    from ..exceptions import StoreError
    from ..stores import open_store

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        if not path.is_file():
            raise StoreError(f"no database at {path} (run `run-lifecycle demo --db {url}` first)")
    return open_store(url)


def run_list(args: argparse.Namespace) -> int:
    with open_existing(args.db) as store:
        runs = store.list(
            agent_id=args.agent_id,
            statuses=args.status,
            active=args.active,
            before=args.before,
            after=args.after,
            limit=args.limit,
            order=args.order,
        )
    if args.json:
        for run in runs:
            print(json.dumps(to_json(run), separators=(",", ":")))
        return 0
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for run in runs:
            print(
                run.id,
                run.status.value,
                run.stop_reason or "",
                format_datetime(run.created_at),
                run.agent_id,
            )
        return 0
    table = Table(title=f"{len(runs)} runs", title_justify="left")
    table.add_column("id", no_wrap=True)  # whole, so it can be copied into `runs show`
    for column in ("agent", "status", "stop reason", "created", "ttft ms", "total ms"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            run.id,
            run.agent_id,
            run.status.value,
            run.stop_reason.value if run.stop_reason else "",
            run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            _ms(run.ttft_ns),
            _ms(run.total_duration_ns),
        )
    Console().print(table)
    return 0


def _ms(ns: int | None) -> str:
    return "" if ns is None else f"{ns / 1e6:.1f}"


def run_show(args: argparse.Namespace) -> int:
    with open_existing(args.db) as store:
        run = store.get(args.run_id)
        history = store.history(args.run_id)
    if args.json:
        print(json.dumps({"run": to_json(run), "events": [r.to_dict() for r in history]}, indent=2))
        return 0
    print(json.dumps(to_json(run), indent=2))
    print()
    previous = None
    for record in history:
        at = record.at
        since = "" if previous is None else f" (+{(at - previous).total_seconds() * 1000:.1f} ms)"
        previous = at
        data = record.to_dict()
        if data["kind"] == "created":
            line = "created"
        elif data["kind"] == "transition":
            line = f"#{data['seq']} {data['trigger']}: {data['from_status']} -> {data['to_status']}"
            if data["stop_reason"]:
                line += f" ({data['stop_reason']})"
        else:
            line = f"rejected {data['trigger']} while {data['status']}: {data['reason']}"
        print(f"{format_datetime(at)}{since}  {line}")
    return 0
