"""``run-lifecycle demo``: a simulated agent runtime on a real store, with a summary."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._demo import DemoResult, run_demo
from ..serialization import dumps

__all__ = ["register"]

DEFAULT_DB = "sqlite:///runs.db"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="simulate an agent runtime driving runs on a store, and summarise",
        description=(
            "Drive N runs through realistic lifecycles on a store: K agent workers (first tokens,"
            " every stop reason, failures, approvals, crashes), a canceller racing them on the same"
            " runs, late duplicate triggers, the reaper for crashed workers, and optionally an audit"
            " log and completion callbacks. Ends with a summary."
        ),
    )
    parser.add_argument("--runs", type=_positive, default=200, help="how many runs (default: 200)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: the same seed gives every run the same plan (default: 0)",
    )
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="URL",
        help=f"the store: sqlite:///PATH, postgresql://..., or memory:// (default: {DEFAULT_DB})",
    )
    parser.add_argument(
        "--workers", type=_positive, default=4, help="simulated agent workers (default: 4)"
    )
    parser.add_argument(
        "--audit", type=Path, metavar="PATH", help="append every event to this audit log (JSONL)"
    )
    callbacks = parser.add_mutually_exclusive_group()
    callbacks.add_argument(
        "--callback-url",
        metavar="URL",
        help="give every run this callback_url and deliver the completion callbacks",
    )
    callbacks.add_argument(
        "--callbacks",
        choices=("local",),
        help="local: start a receiver on 127.0.0.1 that fails a share of requests, to show retries",
    )
    parser.add_argument("--secret", help="sign callbacks with this Standard Webhooks secret")
    parser.add_argument(
        "--export",
        type=Path,
        metavar="PATH",
        help="write this demo's final runs, one Letta JSON a line",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..stores import open_store

    with contextlib.ExitStack() as stack:
        audit = None
        if args.audit is not None:
            from ..audit import AuditLog

            audit = stack.enter_context(AuditLog(args.audit))
        store = stack.enter_context(open_store(args.db, audit=audit))
        callback_url = args.callback_url
        receiver = None
        if args.callbacks == "local":
            from .._receiver import FlakyReceiver

            receiver = stack.enter_context(FlakyReceiver(seed=args.seed))
            callback_url = receiver.url
        deliverer = None
        if callback_url is not None:
            deliverer = stack.enter_context(_deliverer(store, args.secret))
            stack.enter_context(deliverer.in_background(poll_interval=0.05))
        with _progress(args.runs, quiet=args.json) as advance:
            result = run_demo(
                store,
                runs=args.runs,
                seed=args.seed,
                workers=args.workers,
                callback_url=callback_url,
                progress=advance,
            )
        if deliverer is not None:
            result.callbacks = _drain(store, deliverer, result)
            if receiver is not None:
                result.callbacks["receiver_duplicates"] = receiver.duplicates
        result.runs = [store.get(run_id) for run_id in result.run_ids]
        if args.export is not None:
            with args.export.open("w", encoding="utf-8") as out:
                for item in result.runs:
                    out.write(dumps(item) + "\n")
    summary = result.summary()
    if args.audit is not None:
        summary["audit"] = str(args.audit)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _render(summary)
    return 0


def _deliverer(store: Any, secret: str | None) -> Any:
    from ..callbacks import Deliverer, RetryPolicy

    # Short delays so a person watching sees the retries happen within the demo.
    retry = RetryPolicy(
        initial_delay=0.05, multiplier=2.0, max_delay=0.5, jitter=0.2, max_attempts=6
    )
    return Deliverer(store, secret=secret, timeout=2.0, retry=retry)


def _drain(store: Any, deliverer: Any, result: DemoResult, timeout: float = 60.0) -> dict[str, int]:
    """Deliver what is still pending, then count deliveries, retries and failures."""
    deadline = time.monotonic() + timeout
    while store.pending_deliveries() and time.monotonic() < deadline:
        deliverer.run_once()
        time.sleep(0.05)
    stats: dict[str, int] = {"delivered": 0, "retried": 0, "failed": 0, "pending": 0}
    counters = getattr(deliverer, "stats", None)
    for run_id in result.run_ids:
        run = store.get(run_id)
        if run.callback_status_code is not None and 200 <= run.callback_status_code < 300:
            stats["delivered"] += 1
        elif run.callback_sent_at is not None:
            stats["failed"] += 1
    stats["pending"] = len(store.pending_deliveries())
    stats["failed"] -= min(stats["failed"], stats["pending"])
    if counters is not None:
        stats["attempts"] = int(counters.attempts)
        stats["retried"] = int(counters.retries)
    return stats


@contextlib.contextmanager
def _progress(total: int, *, quiet: bool) -> Iterator[Any]:
    try:
        from ._summary import progress
    except ImportError:  # rich is in the cli extra; without it, no bar
        yield None
        return
    if quiet:
        yield None
        return
    with progress(total) as advance:
        yield advance


def _render(summary: dict[str, Any]) -> None:
    try:
        from ._summary import render_summary
    except ImportError:
        print(json.dumps(summary, indent=2))
        return
    render_summary(summary)
